//! Hostile tenants: resources attacks (see tests/hostile.rs).
