//! One task per websocket connection: frames in → [`Input::Message`], hub output → frames out,
//! and the connection's liveness.
//!
//! Nothing a client does can make the server hold unbounded memory for it or keep a dead
//! connection forever: the queue of messages to a connection is bounded (a reader too slow to
//! drain it, or that leaves one message unread for [`SILENCE_LIMIT`], is closed with a
//! reason), the server pings every [`PING_INTERVAL`] and a connection it heard nothing from
//! for [`SILENCE_LIMIT`] (not even a pong) is dropped, and a frame over the size limit is
//! answered with a close frame that says so. The hub closes
//! connections that do not join in time or that exceed the per-address cap, through the same
//! close channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::hub::{ConnId, ConnMeta, Input};
use crate::protocol::ErrorCode;

/// Frames above this are refused by the websocket layer itself (the connection is closed with
/// code 1009); messages between [`crate::protocol::MAX_MESSAGE`] and this get an error reply.
pub const MAX_FRAME: usize = 1 << 20;

/// Messages queued to one connection before its reader counts as too slow: far more than a
/// busy session produces while a healthy client reads (a join's snapshot, offers, events).
pub const OUTGOING_QUEUE: usize = 256;

/// How often the server pings. Browsers answer pings by themselves; the SDK also sends its
/// own `ping` requests, since a page cannot see the server's.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);

/// A connection that sent nothing for this long is taken for dead (its network went away
/// without a reset): it leaves the session's resume window running, as after a drop.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(5);

/// Close codes (RFC 6455 §7.4.1).
pub mod code {
    /// The peer broke a rule: too slow to read, too many connections, no join in time.
    pub const POLICY: u16 = 1008;
    /// A frame or message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// Any other protocol error.
    pub const PROTOCOL: u16 = 1002;
}

/// Why the server closes a connection: the close frame's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// RFC 6455 close code.
    pub code: u16,
    /// For people; at most 123 bytes go into the frame.
    pub reason: String,
}

/// The hub's side of a connection.
#[derive(Debug)]
pub struct Handle {
    /// Messages to send, bounded by [`OUTGOING_QUEUE`].
    pub tx: mpsc::Sender<String>,
    /// Closes the connection with a reason.
    pub close: oneshot::Sender<Close>,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Serve one upgraded connection until it closes.
pub async fn serve(socket: WebSocket, hub: mpsc::Sender<Input>, meta: ConnMeta) {
    let conn: ConnId = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (tx, mut outgoing) = mpsc::channel(OUTGOING_QUEUE);
    let (close, mut closed) = oneshot::channel();
    if hub
        .send(Input::Connected(conn, Handle { tx, close }, meta))
        .await
        .is_err()
    {
        return;
    }
    let (mut sink, mut stream) = socket.split();
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let goodbye = loop {
        tokio::select! {
            frame = stream.next() => {
                heard = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        if hub.send(Input::Message(conn, text.to_string())).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let _ = hub
                            .send(Input::Refused(conn, ErrorCode::InvalidMessage, "binary frames are not part of the protocol; send JSON text".into()))
                            .await;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(e)) => {
                        let close = read_error(&e.to_string());
                        send_close(&mut sink, &close).await;
                        // The rest of the refused frame is still unread in the socket: closing
                        // it now would make the kernel reset the connection and the peer lose
                        // the close frame. Linger a moment instead.
                        tokio::time::sleep(LINGER).await;
                        break None;
                    }
                }
            }
            out = outgoing.recv() => match out {
                Some(text) => {
                    // A peer that does not read blocks this send; the hub's verdict on it
                    // (its queue filled up meanwhile) must still get through.
                    tokio::select! {
                        sent = sink.send(Message::Text(text.into())) => {
                            if sent.is_err() {
                                break None;
                            }
                        }
                        why = &mut closed => break why.ok(),
                        _ = tokio::time::sleep(SILENCE_LIMIT) => break Some(Close {
                            code: code::POLICY,
                            reason: format!(
                                "too slow: a message waited {} s to be taken",
                                SILENCE_LIMIT.as_secs()
                            ),
                        }),
                    }
                }
                None => break None,
            },
            why = &mut closed => break why.ok(),
            _ = ping.tick() => {
                if heard.elapsed() >= SILENCE_LIMIT {
                    // Dead: nothing to say goodbye to.
                    break None;
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break None;
                }
            }
        }
    };
    if let Some(close) = goodbye {
        send_close(&mut sink, &close).await;
    }
    let _ = hub.send(Input::Disconnected(conn)).await;
}

/// How long a connection is held open after a close frame sent for a read error, so that the
/// frame reaches the peer before the socket goes.
const LINGER: Duration = Duration::from_millis(500);

/// Send a close frame, waiting at most a second (a peer that does not read must not keep the
/// task).
async fn send_close(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    Close { code, reason }: &Close,
) {
    let frame = CloseFrame {
        code: *code,
        reason: truncate(reason, 123).to_owned().into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}

/// The close to send after a read failed: the websocket layer refuses frames over
/// [`MAX_FRAME`] with a capacity error.
fn read_error(error: &str) -> Close {
    let lower = error.to_ascii_lowercase();
    if lower.contains("too long") || lower.contains("too big") || lower.contains("capacity") {
        Close {
            code: code::TOO_BIG,
            reason: format!("frames and messages are limited to {MAX_FRAME} bytes"),
        }
    } else {
        Close {
            code: code::PROTOCOL,
            reason: error.to_owned(),
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_a_close_frame() {
        assert_eq!(truncate("abc", 123), "abc");
        let long = "é".repeat(100);
        let t = truncate(&long, 123);
        assert!(t.len() <= 123 && t.chars().all(|c| c == 'é'));
        assert_eq!(
            read_error("Space limit exceeded: Message too long: 2097152 > 1048576").code,
            code::TOO_BIG
        );
        assert_eq!(read_error("Connection reset").code, code::PROTOCOL);
    }
}
