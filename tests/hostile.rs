//! Invariant 8: tenants are hostile. Each attack class has its own test, written as the attacker
//! would try it, against real processes (the daemon binary, real stdio children, real sockets).
//! RELIABILITY.md's threat model lists every attack with its test and the kernel features it
//! relies on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod support;

#[path = "hostile/stdio.rs"]
mod stdio;

#[path = "hostile/socket.rs"]
mod socket;

#[path = "hostile/store.rs"]
mod store;

#[path = "hostile/egress.rs"]
mod egress;

#[path = "hostile/consent.rs"]
mod consent;

#[path = "hostile/resources.rs"]
mod resources;
