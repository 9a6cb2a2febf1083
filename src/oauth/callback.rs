//! The OAuth callback listener: a small HTTP server on a loopback address that receives the
//! browser after the user authorizes, finishes the flow, and answers with a page saying the tab
//! can be closed (or what went wrong, without any secret).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use crate::Secret;
use crate::warden::{AuthorizationCallback, WardenHandle};

/// A bound callback listener.
pub struct CallbackListener {
    listener: TcpListener,
    path: String,
}

impl CallbackListener {
    /// Binds `addr` (e.g. `127.0.0.1:8765`, or port 0 for any) for callbacks at `path`.
    pub async fn bind(addr: &str, path: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, path: path.to_owned() })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The redirect URI this listener serves.
    pub fn redirect_uri(&self) -> std::io::Result<String> {
        Ok(format!("http://{}{}", self.local_addr()?, self.path))
    }

    /// Serves callbacks until `shutdown` resolves.
    pub async fn serve(self, handle: WardenHandle, shutdown: impl Future<Output = ()> + Send + 'static) {
        let app = axum::Router::new().route(&self.path, axum::routing::get(callback)).with_state(Arc::new(handle));
        if let Err(e) = axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "the OAuth callback listener failed");
        }
    }
}

async fn callback(State(handle): State<Arc<WardenHandle>>, uri: axum::http::Uri) -> Response {
    // Only the query matters; the scheme and host are ours.
    let url = Secret::new(format!("http://callback{uri}"));
    match handle.complete_authorization(AuthorizationCallback::Url(url)).await {
        Ok((user, server)) => page(
            StatusCode::OK,
            "Authorization complete",
            &format!(
                "warden stored the authorization of user {} for server {}. You can close this tab.",
                escape(&user),
                escape(&server)
            ),
        ),
        Err(e) => page(StatusCode::BAD_REQUEST, "Authorization failed", &escape(e.message())),
    }
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family: sans-serif; margin: 3em\"><h1>{title}</h1><p>{body}</p></body></html>"
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], html)
        .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
