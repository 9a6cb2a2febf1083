//! `SharedRef`: the current `ActorRef` of a supervised actor, swapped by its supervisor when it
//! restarts, so holders (the embedding handle, the refresher) always reach the live one.

use std::sync::{Arc, RwLock};

use ractor::ActorRef;

/// A swappable reference to the live instance of an actor.
pub struct SharedRef<M: ractor::Message>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M: ractor::Message> Clone for SharedRef<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: ractor::Message> Default for SharedRef<M> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<M: ractor::Message> std::fmt::Debug for SharedRef<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedRef").field(&self.get().map(|r| r.get_id())).finish()
    }
}

impl<M: ractor::Message> SharedRef<M> {
    /// The live instance, if one is running.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Points at a new instance (or none).
    pub fn set(&self, actor: Option<ActorRef<M>>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = actor;
    }

    /// Sends `msg` to the live instance. Returns false (dropping the message, and so any
    /// reply port inside it) if there is none or it died.
    pub fn send(&self, msg: M) -> bool {
        self.get().is_some_and(|actor| actor.send_message(msg).is_ok())
    }
}
