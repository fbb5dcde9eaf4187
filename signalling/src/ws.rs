//! One task per websocket connection: frames in → [`Input::Message`], hub output → frames out.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::hub::{ConnId, ConnMeta, Input};
use crate::protocol::ErrorCode;

/// Frames above this are refused by the websocket layer itself (the connection closes);
/// messages between [`crate::protocol::MAX_MESSAGE`] and this get an error reply.
pub const MAX_FRAME: usize = 1 << 20;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Serve one upgraded connection until it closes.
pub async fn serve(socket: WebSocket, hub: mpsc::Sender<Input>, meta: ConnMeta) {
    let conn: ConnId = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (tx, mut outgoing) = mpsc::unbounded_channel();
    if hub.send(Input::Connected(conn, tx, meta)).await.is_err() {
        return;
    }
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if hub.send(Input::Message(conn, text.to_string())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let _ = hub
                        .send(Input::Refused(conn, ErrorCode::InvalidMessage, "binary frames are not part of the protocol; send JSON text".into()))
                        .await;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            out = outgoing.recv() => match out {
                Some(text) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = hub.send(Input::Disconnected(conn)).await;
}
