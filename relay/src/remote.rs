//! The control API over TCP, for a control plane that runs in another process or on another
//! machine: newline-delimited JSON, one request per line, exactly one reply per request (matched
//! by `id`), and relay events pushed to every connection as they happen.
//!
//! ```text
//! → {"id":1,"op":"create_session","sid":"room-1"}
//! ← {"id":1,"ok":{"core":0,"address":"127.0.0.1:40000"}}
//! → {"id":2,"op":"subscribe","sid":"room-1","uid":"bob","feed_id":"nope"}
//! ← {"id":2,"error":{"code":"no_such_feed","sid":"room-1","feed_id":"nope","message":"no feed nope in session room-1"}}
//! ← {"event":"participant_connected","sid":"room-1","uid":"alice",…}
//! ```
//!
//! When the relay has a control token, the first line of a connection must be
//! `{"id":0,"op":"hello","token":"…"}`; anything else is refused and the connection closed.
//! A line that is not a valid request gets an `invalid_request` error with the reason and the
//! connection carries on; a line longer than [`MAX_LINE`] closes it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::control::Event;
use crate::error::ControlError;
use crate::request::Control;
pub use crate::request::{Reply, Request};
use crate::RelayHandle;

/// Longest request line accepted, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// A request with its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Echoed in the reply.
    pub id: u64,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

/// Decode one request line. The error is the reason, for the `invalid_request` reply.
pub fn decode(line: &[u8]) -> Result<Envelope, String> {
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

fn error_value(code: &str, message: String) -> Value {
    json!({ "code": code, "message": message })
}

fn control_error_value(e: &ControlError) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or_else(|_| json!({ "code": "internal" }));
    if let Value::Object(m) = &mut v {
        m.insert("message".into(), Value::String(e.to_string()));
    }
    v
}

async fn execute(handle: &RelayHandle, request: Request) -> Result<Value, Value> {
    match handle.execute(request).await {
        Ok(reply) => Ok(reply.to_value()),
        Err(e) => Err(control_error_value(&e)),
    }
}

/// Serve the control API on `listener` until the task is dropped. Events from `events` are
/// fanned out to every connection (a connection that falls far behind misses events and is
/// told so with a `lagged` line).
pub async fn serve(
    listener: TcpListener,
    handle: RelayHandle,
    mut events: mpsc::Receiver<Event>,
    token: Option<String>,
) {
    let (fanout, _) = broadcast::channel::<Event>(4096);
    let fanout_tx = fanout.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let _ = fanout_tx.send(e);
        }
    });
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        let events = fanout.subscribe();
        let token = token.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, handle, events, token).await {
                tracing::debug!("control connection {peer}: {e}");
            }
        });
    }
}

async fn connection(
    stream: TcpStream,
    handle: RelayHandle,
    mut events: broadcast::Receiver<Event>,
    token: Option<String>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut authenticated = token.is_none();
    let mut line = Vec::new();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
    loop {
        tokio::select! {
            n = read_line(&mut lines, &mut line) => {
                match n? {
                    LineRead::Eof => return Ok(()),
                    LineRead::TooLong => {
                        write_value(&mut write, &json!({"id": null, "error": error_value("line_too_long", format!("request lines are limited to {MAX_LINE} bytes"))})).await?;
                        return close_gracefully(lines, write).await;
                    }
                    LineRead::Line => {}
                }
                let decoded = decode(&line);
                let raw = std::mem::take(&mut line);
                let envelope = match decoded {
                    Ok(e) => e,
                    Err(reason) => {
                        // Echo the id when the line is JSON with one, so the caller can match.
                        let id = serde_json::from_slice::<Value>(&raw)
                            .ok()
                            .and_then(|v| v.get("id").cloned())
                            .unwrap_or(Value::Null);
                        write_value(&mut write, &json!({"id": id, "error": error_value("invalid_request", reason)})).await?;
                        if !authenticated {
                            return close_gracefully(lines, write).await;
                        }
                        continue;
                    }
                };
                if !authenticated {
                    match (&envelope.request, &token) {
                        (Request::Hello { token: given }, Some(expected)) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
                            authenticated = true;
                        }
                        _ => {
                            write_value(&mut write, &json!({"id": envelope.id, "error": error_value("unauthorized", "the first request must be hello with the relay's control token".into())})).await?;
                            return close_gracefully(lines, write).await;
                        }
                    }
                }
                // Requests run concurrently; replies may come out of order (matched by id).
                let handle = handle.clone();
                let out = out_tx.clone();
                tokio::spawn(async move {
                    let reply = match execute(&handle, envelope.request).await {
                        Ok(v) => json!({"id": envelope.id, "ok": v}),
                        Err(e) => json!({"id": envelope.id, "error": e}),
                    };
                    let _ = out.send(reply);
                });
            }
            Some(reply) = out_rx.recv() => write_value(&mut write, &reply).await?,
            e = events.recv(), if authenticated => match e {
                Ok(event) => {
                    let v = serde_json::to_value(&event).unwrap_or(Value::Null);
                    write_value(&mut write, &v).await?;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    write_value(&mut write, &json!({"event": "lagged", "missed": n})).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// Close after a final error reply so that it is not lost to a reset: shut down our side, then
/// discard what the peer still sends for a moment.
async fn close_gracefully(
    mut lines: BufReader<tokio::net::tcp::OwnedReadHalf>,
    mut write: tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<()> {
    write.shutdown().await?;
    let drain = async {
        let mut sink = [0u8; 4096];
        while matches!(tokio::io::AsyncReadExt::read(&mut lines, &mut sink).await, Ok(n) if n > 0) {
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

enum LineRead {
    Line,
    Eof,
    TooLong,
}

/// Reads the rest of one line into `line`, which the caller clears once it has used a line.
///
/// Cancel-safe, because it runs inside `select!`: every byte consumed from the reader is
/// appended to `line` in the same step, so a future dropped while waiting for more input loses
/// nothing and the next call carries on where this one stopped.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<LineRead> {
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(LineRead::Eof);
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                r.consume(i + 1);
                return Ok(if line.len() > MAX_LINE {
                    LineRead::TooLong
                } else {
                    LineRead::Line
                });
            }
            None => {
                let n = buf.len();
                line.extend_from_slice(buf);
                r.consume(n);
                if line.len() > MAX_LINE {
                    return Ok(LineRead::TooLong);
                }
            }
        }
    }
}

async fn write_value<W: AsyncWriteExt + Unpin>(w: &mut W, v: &Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    w.write_all(&bytes).await
}

/// Errors of the remote control client.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The connection failed or closed.
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    /// The relay refused the request.
    #[error("refused: {0}")]
    Refused(#[from] ControlError),
    /// The relay refused the request for a protocol reason (unauthorized, invalid request).
    #[error("{code}: {message}")]
    Protocol {
        /// Stable code.
        code: String,
        /// Reason.
        message: String,
    },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, Value>>>>>;

/// A control-plane client for a relay in another process.
pub struct Client {
    write: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    pending: Pending,
    next_id: std::sync::atomic::AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connect (and authenticate, if a token is given). Events go to the returned receiver.
    pub async fn connect(
        addr: SocketAddr,
        token: Option<String>,
    ) -> Result<(Client, mpsc::UnboundedReceiver<Event>), RemoteError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let pending: Pending = Arc::default();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let reader_pending = pending.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v.get("event").is_some() {
                    if let Ok(e) = serde_json::from_value::<Event>(v) {
                        let _ = events_tx.send(e);
                    }
                    continue;
                }
                let Some(id) = v.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let reply = match (v.get("ok"), v.get("error")) {
                    (Some(ok), _) => Ok(ok.clone()),
                    (_, Some(err)) => Err(err.clone()),
                    _ => continue,
                };
                let waiter = reader_pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(reply);
                }
            }
            // Connection gone: fail every waiter.
            reader_pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        });
        let client = Client {
            write: tokio::sync::Mutex::new(write),
            pending,
            next_id: std::sync::atomic::AtomicU64::new(1),
            reader,
        };
        if let Some(token) = token {
            client.send(Request::Hello { token }).await?;
        }
        Ok((client, events_rx))
    }

    /// Whether the connection has closed (the relay went, or refused this client): requests
    /// on it fail, and a new one is needed.
    pub fn is_closed(&self) -> bool {
        self.reader.is_finished()
    }

    /// Send a request and wait for its reply as the control API carries it (the `ok` value);
    /// [`Control::call`] reads it into a [`Reply`].
    pub async fn send(&self, request: Request) -> Result<Value, RemoteError> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let mut bytes =
            serde_json::to_vec(&Envelope { id, request }).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        self.write.lock().await.write_all(&bytes).await?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(match serde_json::from_value::<ControlError>(e.clone()) {
                Ok(c) => RemoteError::Refused(c),
                Err(_) => RemoteError::Protocol {
                    code: e
                        .get("code")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_owned(),
                    message: e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                },
            }),
            Err(_) => Err(RemoteError::Io(
                std::io::ErrorKind::ConnectionAborted.into(),
            )),
        }
    }
}

impl Control for Client {
    type Error = RemoteError;

    async fn call(&self, request: Request) -> Result<Reply, RemoteError> {
        let kind = request.reply_kind();
        let v = self.send(request).await?;
        Reply::from_value(kind, v).map_err(|e| RemoteError::Protocol {
            code: "bad_reply".into(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::SubscribeOptions;

    #[test]
    fn requests_roundtrip_and_bad_lines_have_reasons() {
        let e = Envelope {
            id: 7,
            request: Request::Subscribe {
                sid: "s".into(),
                uid: "u".into(),
                feed_id: "f".into(),
                options: SubscribeOptions {
                    mid: Some("2".into()),
                    rtx: true,
                    playout_delay_extension: None,
                    transport_cc_extension: None,
                },
            },
        };
        let line = serde_json::to_vec(&e).unwrap();
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            r#"{"id":7,"op":"subscribe","sid":"s","uid":"u","feed_id":"f","mid":"2","rtx":true}"#
        );
        assert_eq!(decode(&line).unwrap(), e);
        assert!(decode(b"{").unwrap_err().contains("EOF"));
        assert!(decode(br#"{"id":1,"op":"fly"}"#)
            .unwrap_err()
            .contains("unknown variant"));
        assert!(decode(br#"{"id":1,"op":"remove_session"}"#)
            .unwrap_err()
            .contains("sid"));
        assert!(decode(br#"{"op":"info"}"#).unwrap_err().contains("id"));
    }

    #[test]
    fn control_errors_carry_code_and_message() {
        let v = control_error_value(&ControlError::NoSuchSession { sid: "x".into() });
        assert_eq!(v["code"], "no_such_session");
        assert_eq!(v["message"], "no session x");
        let back: ControlError = serde_json::from_value(v).unwrap();
        assert_eq!(back, ControlError::NoSuchSession { sid: "x".into() });
    }

    #[test]
    fn a_line_read_interrupted_by_select_is_not_lost() {
        use tokio::io::AsyncWriteExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut tx, rx) = tokio::io::duplex(64);
            let mut reader = tokio::io::BufReader::new(rx);
            let mut line = Vec::new();
            tx.write_all(br#"{"id":1,"#).await.unwrap();
            // The first half arrives, then another select! branch wins and drops the read.
            let r = tokio::time::timeout(
                std::time::Duration::from_millis(20),
                read_line(&mut reader, &mut line),
            )
            .await;
            assert!(r.is_err());
            tx.write_all(b"\"op\":\"info\"}\n").await.unwrap();
            assert!(matches!(
                read_line(&mut reader, &mut line).await.unwrap(),
                LineRead::Line
            ));
            assert_eq!(line, br#"{"id":1,"op":"info"}"#);
        });
    }
}
