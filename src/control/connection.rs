//! One control connection: reads frames (bounded), decodes them, runs each request as a task
//! (up to the in-flight limit), and writes each response as one line, in completion order.
//!
//! Every request with an id gets exactly one response: a task answers when it finishes; on
//! shutdown, requests still running after the grace period are answered with an error; a frame
//! that is too large is answered and the connection closed without reading the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::debug;

use super::Context;
use super::dispatch::{Binding, dispatch};
use crate::ErrorKind;
use crate::protocol::{self, RpcError, codes};

/// What one read produced.
enum Frame {
    Line(Vec<u8>),
    TooLarge,
    Eof,
    /// End of input in the middle of a line.
    Partial,
}

/// Reads one `\n`-terminated line into `buf`, never holding more than `max` bytes of it.
/// Cancel-safe: bytes are moved from the reader into `buf` without an await in between.
async fn read_frame<R: AsyncBufRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Frame> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() { Frame::Eof } else { Frame::Partial });
        }
        if let Some(pos) = available.iter().position(|b| *b == b'\n') {
            if buf.len() + pos > max {
                return Ok(Frame::TooLarge);
            }
            buf.extend_from_slice(&available[..pos]);
            reader.consume(pos + 1);
            return Ok(Frame::Line(std::mem::take(buf)));
        }
        let n = available.len();
        if buf.len() + n > max {
            return Ok(Frame::TooLarge);
        }
        buf.extend_from_slice(available);
        reader.consume(n);
    }
}

/// Answers a connection that is not allowed in with one error line, then closes it.
pub(super) async fn refuse<S: AsyncWrite + Unpin>(mut stream: S, kind: ErrorKind, message: &str) {
    let error = RpcError::new(codes::SERVER_ERROR, kind, message);
    let mut line = protocol::encode_error(&Value::Null, &error);
    line.push(b'\n');
    let _ = stream.write_all(&line).await;
    let _ = stream.shutdown().await;
}

/// Requests running on a connection, by sequence number, with their ids. A response is sent
/// only by whoever removes the entry, under the lock, without awaiting: exactly one response.
type Pending = Arc<Mutex<HashMap<u64, Value>>>;

fn respond(pending: &Pending, seq: u64, tx: &mpsc::UnboundedSender<Vec<u8>>, line: impl FnOnce(&Value) -> Vec<u8>) {
    let mut pending = pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(id) = pending.remove(&seq) {
        // The writer may be gone if the peer vanished; then nobody is waiting.
        let _ = tx.send(line(&id));
    }
}

/// A connection's request-side state.
struct Requests {
    context: Arc<Context>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    tasks: JoinSet<()>,
    binding: Option<Binding>,
    seen: u64,
}

impl Requests {
    fn send_error(&self, id: &Value, error: &RpcError) {
        // The writer is gone only if the peer vanished; then nobody is waiting.
        let _ = self.tx.send(protocol::encode_error(id, error));
    }

    /// Handles one complete line: answers it at once, or starts a task that will.
    fn on_line(&mut self, bytes: &[u8]) {
        let line = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let request = match protocol::decode(line) {
            Ok(request) => request,
            Err((id, error)) => return self.send_error(&id, &error),
        };
        self.seen += 1;
        let Some(id) = request.id.clone() else {
            debug!(method = %request.method, "ignoring a notification (a request without id gets no answer)");
            return;
        };
        if request.method == "auth" {
            let result = if self.seen == 1 {
                super::dispatch::authenticate(&self.context, &request).map(|(binding, reply)| {
                    self.binding = Some(binding);
                    reply
                })
            } else {
                Err(RpcError::new(
                    codes::INVALID_REQUEST,
                    ErrorKind::InvalidRequest,
                    "auth must be the first request on a connection",
                ))
            };
            let _ = self.tx.send(match result {
                Ok(value) => protocol::encode_result(&id, &value),
                Err(error) => protocol::encode_error(&id, &error),
            });
            return;
        }
        let limit = self.context.limits.max_in_flight;
        if self.tasks.len() >= limit {
            let message = format!("more than {limit} requests in flight on this connection");
            return self.send_error(&id, &RpcError::new(codes::SERVER_ERROR, ErrorKind::Overloaded, message));
        }
        let seq = self.seen;
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(seq, id);
        let (context, pending, tx, binding) =
            (self.context.clone(), self.pending.clone(), self.tx.clone(), self.binding.clone());
        self.tasks.spawn(async move {
            let result = dispatch(&context, binding.as_ref(), &request).await;
            respond(&pending, seq, &tx, |id| match &result {
                Ok(value) => protocol::encode_result(id, value),
                Err(error) => protocol::encode_error(id, error),
            });
        });
    }

    /// Waits for in-flight requests (for at most the grace period once shutdown starts), then
    /// answers whatever is left so no request goes without a response.
    async fn finish(mut self, mut shutdown: watch::Receiver<bool>) {
        let grace = self.context.limits.shutdown_grace;
        let shutdown_then_grace = async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            () = async { while self.tasks.join_next().await.is_some() {} } => {}
            () = shutdown_then_grace => {}
        }
        self.tasks.abort_all();
        let leftover: Vec<u64> =
            self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).keys().copied().collect();
        for seq in leftover {
            respond(&self.pending, seq, &self.tx, |id| {
                let error = RpcError::new(
                    codes::SERVER_ERROR,
                    ErrorKind::Internal,
                    "warden shut down before the request finished",
                );
                protocol::encode_error(id, &error)
            });
        }
    }
}

/// Serves one connection until the peer closes it, it idles out, or shutdown completes.
pub async fn serve_connection<S>(stream: S, context: Arc<Context>, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(write_lines(write_half, rx));
    let limits = context.limits.clone();
    let mut requests = Requests {
        context,
        tx,
        pending: Arc::new(Mutex::new(HashMap::new())),
        tasks: JoinSet::new(),
        binding: None,
        seen: 0,
    };
    let mut buf = Vec::new();
    loop {
        while requests.tasks.try_join_next().is_some() {}
        let frame = tokio::select! {
            frame = tokio::time::timeout(limits.idle_timeout, read_frame(&mut reader, &mut buf, limits.max_frame_bytes)) => frame,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() { break }
                continue;
            }
        };
        match frame {
            Ok(Ok(Frame::Line(bytes))) => requests.on_line(&bytes),
            Err(_idle) if requests.tasks.is_empty() => {
                debug!("closing an idle control connection");
                break;
            }
            Err(_idle) => {}
            Ok(Err(_) | Ok(Frame::Eof)) => break,
            Ok(Ok(Frame::Partial)) => {
                let why = "the connection closed in the middle of a frame";
                requests.send_error(&Value::Null, &RpcError::new(codes::PARSE_ERROR, ErrorKind::InvalidRequest, why));
                break;
            }
            Ok(Ok(Frame::TooLarge)) => {
                let why = format!("frame larger than {} bytes; closing the connection", limits.max_frame_bytes);
                requests
                    .send_error(&Value::Null, &RpcError::new(codes::INVALID_REQUEST, ErrorKind::InvalidRequest, why));
                break;
            }
        }
    }
    requests.finish(shutdown).await;
    let _ = writer.await;
}

async fn write_lines<W: AsyncWrite + Unpin>(write_half: W, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut out = BufWriter::new(write_half);
    while let Some(mut line) = rx.recv().await {
        line.push(b'\n');
        if out.write_all(&line).await.is_err() {
            return;
        }
        // Flush once the queue is empty, so a burst of responses goes out in few writes.
        if rx.is_empty() && out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.flush().await;
    let _ = out.shutdown().await;
}
