//! Hostile tenants: consent attacks (see tests/hostile.rs).
