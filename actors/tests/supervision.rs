//! The registry's supervision policy, driven with a fault-injecting loader (a test double: a
//! real store never panics on purpose, so the panics here are injected to exercise the policy).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::needless_pass_by_value
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ractor::{Actor, ActorRef};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use warden_actors::{
    CallRequest, Connection, Error, ErrorKind, Registry, RegistryArgs, RegistryMsg, ServerHandle, SessionMsg,
    SessionPolicy, UserLoader,
};

/// Loads one server per user whose `whoami` answers the user; panics while `panicking` is set.
struct FaultyLoader {
    panicking: AtomicBool,
    loads: AtomicUsize,
}

#[async_trait]
impl UserLoader for FaultyLoader {
    async fn load(&self, user: &str) -> Result<Vec<Arc<dyn ServerHandle>>, Error> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        assert!(!self.panicking.load(Ordering::SeqCst), "injected panic while loading");
        Ok(vec![Arc::new(Echo(user.to_owned()))])
    }
}

struct Echo(String);

#[async_trait]
impl ServerHandle for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    async fn connect(&self) -> Result<Arc<dyn Connection>, Error> {
        Ok(Arc::new(EchoConn(self.0.clone())))
    }
}

struct EchoConn(String);

#[async_trait]
impl Connection for EchoConn {
    async fn list_tools(&self) -> Result<Vec<Tool>, Error> {
        Ok(vec![])
    }
    async fn call_tool(
        &self,
        _tool: &str,
        _arguments: Option<JsonObject>,
        _timeout: Duration,
    ) -> Result<CallToolResult, Error> {
        Ok(CallToolResult::success(vec![ContentBlock::text(self.0.clone())]))
    }
    fn is_closed(&self) -> bool {
        false
    }
}

async fn call(registry: &ActorRef<RegistryMsg>, user: &str) -> Result<String, Error> {
    let (tx, rx) = ractor::concurrency::oneshot();
    let request =
        CallRequest { server: "echo".into(), tool: "whoami".into(), arguments: None, timeout: Duration::from_secs(5) };
    registry.send_message(RegistryMsg::Route { user: user.into(), msg: SessionMsg::Call(request, tx.into()) }).unwrap();
    match tokio::time::timeout(Duration::from_secs(5), rx).await.expect("the call hung") {
        Ok(result) => result.map(|r| r.content[0].as_text().unwrap().text.clone()),
        Err(_) => Err(Error::internal("session died")),
    }
}

async fn start(max_restarts: u32) -> (ActorRef<RegistryMsg>, Arc<FaultyLoader>) {
    let loader = Arc::new(FaultyLoader { panicking: AtomicBool::new(false), loads: AtomicUsize::new(0) });
    let policy = SessionPolicy {
        max_restarts,
        restart_window: Duration::from_secs(60),
        idle_timeout: None,
        ..SessionPolicy::default()
    };
    let (registry, _) = Actor::spawn(None, Registry, RegistryArgs { loader: loader.clone(), policy }).await.unwrap();
    (registry, loader)
}

#[tokio::test]
async fn repeated_failures_mark_a_session_failed_until_its_config_changes() {
    let (registry, loader) = start(2).await;
    assert_eq!(call(&registry, "alice").await.unwrap(), "alice");
    loader.panicking.store(true, Ordering::SeqCst);
    // Invalidate so the next call loads again (and panics).
    registry.send_message(RegistryMsg::Invalidate { user: "alice".into() }).unwrap();
    for attempt in 1..=3 {
        let err = call(&registry, "alice").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal, "attempt {attempt}");
    }
    // Three failures > max_restarts (2): marked failed, answered without starting a session.
    let loads = loader.loads.load(Ordering::SeqCst);
    let err = call(&registry, "alice").await.unwrap_err();
    assert!(err.message().contains("failed repeatedly"), "{err}");
    assert_eq!(loader.loads.load(Ordering::SeqCst), loads, "no new session was started");
    let status = ractor::call_t!(registry, RegistryMsg::Status, 1000).unwrap();
    assert_eq!((status.failed, status.sessions), (1, 0));
    // Other users are unaffected.
    loader.panicking.store(false, Ordering::SeqCst);
    assert_eq!(call(&registry, "bob").await.unwrap(), "bob");
    // A config change clears the mark.
    registry.send_message(RegistryMsg::Invalidate { user: "alice".into() }).unwrap();
    assert_eq!(call(&registry, "alice").await.unwrap(), "alice");
    registry.stop(None);
}

#[tokio::test]
async fn kills_are_not_failures() {
    let (registry, _loader) = start(0).await;
    for round in 0..5 {
        assert_eq!(call(&registry, "alice").await.unwrap(), "alice", "round {round}");
        let session = ractor::call_t!(registry, |reply| RegistryMsg::Lookup { user: "alice".into(), reply }, 1000)
            .unwrap()
            .unwrap();
        session.kill_and_wait(Some(Duration::from_secs(2))).await.unwrap();
    }
    assert_eq!(call(&registry, "alice").await.unwrap(), "alice");
    let status = ractor::call_t!(registry, RegistryMsg::Status, 1000).unwrap();
    assert_eq!(status.failed, 0);
    // An explicit stop ends the session; the next call starts a new one.
    assert!(ractor::call_t!(registry, |reply| RegistryMsg::Stop { user: "alice".into(), reply }, 1000).unwrap());
    assert!(!ractor::call_t!(registry, |reply| RegistryMsg::Stop { user: "nobody".into(), reply }, 1000).unwrap());
    assert_eq!(call(&registry, "alice").await.unwrap(), "alice");
    registry.stop(None);
}
