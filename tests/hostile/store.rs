//! Hostile tenants: store attacks (see tests/hostile.rs).
