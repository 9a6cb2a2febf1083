//! A minimal client of the control socket, used by the CLI and the tests: connect, send a
//! request, read its response. One request at a time per `call`; `send_line`/`read_response`
//! give raw access for pipelining.

use std::path::Path;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered with an error.
    #[error("{kind}: {message}")]
    Rpc {
        /// The JSON-RPC code.
        code: i64,
        /// The stable kind (`data.kind`).
        kind: String,
        /// The message.
        message: String,
        /// The authorization URL, for the authorization kinds.
        authorization_url: Option<String>,
    },
    /// The daemon's answer did not make sense.
    #[error("unexpected response: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The error's kind, if the daemon sent one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            ClientError::Rpc { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// A connection to the control socket.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

impl Client {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> std::io::Result<Self> {
        let (read, writer) = UnixStream::connect(path).await?.into_split();
        Ok(Self { reader: BufReader::new(read), writer, next_id: 1 })
    }

    /// Calls `method` with `params` and waits for its response.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut line = serde_json::to_vec(&request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        if let Err(e) = self.send_line(&line).await {
            // The daemon may have refused the connection and closed it; its reason is waiting.
            return match self.read_response().await {
                Ok(Some(response)) => into_result(response),
                _ => Err(e.into()),
            };
        }
        loop {
            let response = self
                .read_response()
                .await?
                .ok_or_else(|| ClientError::Protocol("the daemon closed the connection".into()))?;
            if response.get("id") == Some(&json!(id)) {
                return into_result(response);
            }
            if response.get("id") == Some(&Value::Null) {
                // A connection-level error (refused connection, oversized frame).
                return into_result(response);
            }
        }
    }

    /// Sends raw bytes (a line must end with `\n`).
    pub async fn send_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(line).await?;
        self.writer.flush().await
    }

    /// Closes the writing half (the daemon sees end of input).
    pub async fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.writer.shutdown().await
    }

    /// Reads one response line; `None` at end of input.
    pub async fn read_response(&mut self) -> Result<Option<Value>, ClientError> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&line).map(Some).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

/// Turns a response object into its result or its error.
pub fn into_result(mut response: Value) -> Result<Value, ClientError> {
    if let Some(result) = response.get_mut("result") {
        return Ok(result.take());
    }
    let Some(error) = response.get("error") else {
        return Err(ClientError::Protocol("neither result nor error".into()));
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    Err(ClientError::Rpc {
        code: error.get("code").and_then(Value::as_i64).unwrap_or_default(),
        kind: text(error.pointer("/data/kind")),
        message: text(error.get("message")),
        authorization_url: error.pointer("/data/authorization_url").and_then(Value::as_str).map(str::to_owned),
    })
}
