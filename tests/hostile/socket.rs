//! Hostile tenants: socket attacks (see tests/hostile.rs).
