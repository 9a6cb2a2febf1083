//! Hostile tenants: egress attacks (see tests/hostile.rs).
