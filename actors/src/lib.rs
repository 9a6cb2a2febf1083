//! warden's supervision tree: the registry that routes by user id, one session actor per
//! user, and the token refresher.
//!
//! This crate knows nothing of SQL, ciphers or wire formats: it reaches storage, MCP
//! connections and token endpoints through small traits that `warden` implements, so the tree
//! can be tested (and chaos-tested) on its own.
