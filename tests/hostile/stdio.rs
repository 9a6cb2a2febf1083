//! Hostile tenants: stdio attacks (see tests/hostile.rs).
