//! A client of Janus's HTTP API, enough to drive the VideoRoom plugin: a session with its
//! long-poll, plugin handles, synchronous requests, asynchronous messages (acknowledged, then
//! answered by an event carrying the same transaction) and the per-handle events that say a
//! PeerConnection is up (`webrtcup`) or gone (`hangup`).
//!
//! Janus delivers every event of a session through `GET /janus/<session>`; one task keeps that
//! long-poll open and routes each event to the request waiting for its transaction, or else to
//! the handle that sent it. The long-poll also keeps the session alive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::http::{self, HttpError};

/// What can go wrong talking to Janus.
#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    /// The HTTP exchange failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Janus answered `{"janus":"error"}`.
    #[error("Janus error {code}: {reason}")]
    Api {
        /// Janus's error code.
        code: i64,
        /// Its reason.
        reason: String,
    },
    /// The plugin answered with an error.
    #[error("VideoRoom error {code}: {reason}")]
    Plugin {
        /// The plugin's error code.
        code: i64,
        /// Its reason.
        reason: String,
    },
    /// An answer without the fields the API promises.
    #[error("unexpected answer from Janus: {0}")]
    Unexpected(String),
    /// No answer or event in time.
    #[error("no {0} from Janus in time")]
    Timeout(&'static str),
    /// The handle's PeerConnection was hung up.
    #[error("Janus hung up: {0}")]
    Hangup(String),
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;
type Routes = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>>;

/// One Janus session (everything a run creates lives in it; destroying it cleans up).
pub struct Session {
    addr: SocketAddr,
    id: u64,
    pending: Pending,
    routes: Routes,
    poller: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// A plugin handle and the events Janus sends about it.
pub struct Handle {
    /// Janus's handle id.
    pub id: u64,
    events: mpsc::UnboundedReceiver<Value>,
}

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn transaction() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `{"janus":"error"}` as an error; anything else passes.
fn check(v: Value) -> Result<Value, JanusError> {
    if v["janus"] == "error" {
        return Err(JanusError::Api {
            code: v["error"]["code"].as_i64().unwrap_or(0),
            reason: v["error"]["reason"].as_str().unwrap_or("").to_owned(),
        });
    }
    Ok(v)
}

/// The VideoRoom's `plugindata.data`, or its error.
fn plugin_data(v: &Value) -> Result<Value, JanusError> {
    let data = &v["plugindata"]["data"];
    if data.is_null() {
        return Err(JanusError::Unexpected(v.to_string()));
    }
    if let Some(code) = data["error_code"].as_i64() {
        return Err(JanusError::Plugin {
            code,
            reason: data["error"].as_str().unwrap_or("").to_owned(),
        });
    }
    Ok(data.clone())
}

impl Session {
    /// Create a session on the Janus whose HTTP API is at `addr` and start its long-poll.
    pub async fn create(addr: SocketAddr) -> Result<Session, JanusError> {
        let reply = check(
            http::json(
                addr,
                "/janus",
                Some(&json!({"janus": "create", "transaction": transaction()})),
                REQUEST_TIMEOUT,
            )
            .await?,
        )?;
        let id = reply["data"]["id"]
            .as_u64()
            .ok_or_else(|| JanusError::Unexpected(reply.to_string()))?;
        let pending: Pending = Arc::default();
        let routes: Routes = Arc::default();
        let poller = tokio::spawn(long_poll(addr, id, pending.clone(), routes.clone()));
        Ok(Session {
            addr,
            id,
            pending,
            routes,
            poller,
        })
    }

    async fn post(&self, path: String, body: Value) -> Result<Value, JanusError> {
        check(http::json(self.addr, &path, Some(&body), REQUEST_TIMEOUT).await?)
    }

    /// Attach a handle to the VideoRoom plugin.
    pub async fn attach(&self) -> Result<Handle, JanusError> {
        let reply = self
            .post(
                format!("/janus/{}", self.id),
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom",
                       "transaction": transaction()}),
            )
            .await?;
        let id = reply["data"]["id"]
            .as_u64()
            .ok_or_else(|| JanusError::Unexpected(reply.to_string()))?;
        let (tx, events) = mpsc::unbounded_channel();
        lock(&self.routes).insert(id, tx);
        Ok(Handle { id, events })
    }

    /// A synchronous plugin request (create, destroy, list…): its `plugindata.data`.
    pub async fn request(&self, handle: &Handle, body: Value) -> Result<Value, JanusError> {
        let reply = self
            .post(
                format!("/janus/{}/{}", self.id, handle.id),
                json!({"janus": "message", "body": body, "transaction": transaction()}),
            )
            .await?;
        plugin_data(&reply)
    }

    /// An asynchronous plugin message (join, publish, start), optionally with a JSEP: the
    /// event that answers it, as its `plugindata.data` and its JSEP if any.
    pub async fn message(
        &self,
        handle: &Handle,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<(Value, Option<Value>), JanusError> {
        let tid = transaction();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(tid.clone(), tx);
        let mut request = json!({"janus": "message", "body": body, "transaction": tid});
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        let sent = self
            .post(format!("/janus/{}/{}", self.id, handle.id), request)
            .await;
        let reply = match sent {
            Ok(r) if r["janus"] == "ack" => tokio::time::timeout(REQUEST_TIMEOUT, rx)
                .await
                .map_err(|_| JanusError::Timeout("plugin event"))?
                .map_err(|_| JanusError::Timeout("plugin event (session closed)"))?,
            // Some requests are answered synchronously even when sent as messages.
            Ok(r) => r,
            Err(e) => {
                lock(&self.pending).remove(&tid);
                return Err(e);
            }
        };
        let data = plugin_data(&check(reply.clone())?)?;
        let jsep = reply.get("jsep").cloned();
        Ok((data, jsep))
    }

    /// Destroy the session (Janus hangs up and detaches everything in it).
    pub async fn destroy(&self) -> Result<(), JanusError> {
        self.post(
            format!("/janus/{}", self.id),
            json!({"janus": "destroy", "transaction": transaction()}),
        )
        .await
        .map(|_| ())
    }
}

impl Handle {
    /// Wait for Janus's `webrtcup` on this handle (ICE and DTLS done on its side).
    pub async fn webrtc_up(&mut self, timeout: Duration) -> Result<(), JanusError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| JanusError::Timeout("webrtcup"))?
                .ok_or(JanusError::Timeout("webrtcup (session closed)"))?;
            match event["janus"].as_str() {
                Some("webrtcup") => return Ok(()),
                Some("hangup") => {
                    return Err(JanusError::Hangup(
                        event["reason"].as_str().unwrap_or("").to_owned(),
                    ))
                }
                _ => continue,
            }
        }
    }
}

/// Keep `GET /janus/<session>` open and route what it returns until the session is gone.
async fn long_poll(addr: SocketAddr, session: u64, pending: Pending, routes: Routes) {
    let path = format!("/janus/{session}?maxev=100");
    loop {
        let events = match http::json(addr, &path, None, Duration::from_secs(60)).await {
            Ok(Value::Array(events)) => events,
            Ok(event) => vec![event],
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for event in events {
            if event["janus"] == "error" && event["error"]["code"] == 458 {
                // No such session: it was destroyed.
                return;
            }
            let waiter = event["transaction"]
                .as_str()
                .and_then(|t| lock(&pending).remove(t));
            match waiter {
                Some(w) => {
                    let _ = w.send(event);
                }
                None => {
                    if let Some(route) = event["sender"]
                        .as_u64()
                        .and_then(|h| lock(&routes).get(&h).cloned())
                    {
                        let _ = route.send(event);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_recognised() {
        let e =
            check(json!({"janus": "error", "error": {"code": 458, "reason": "No such session"}}));
        assert!(matches!(e, Err(JanusError::Api { code: 458, .. })));
        let reply = json!({"janus": "success", "plugindata": {"plugin": "janus.plugin.videoroom",
            "data": {"videoroom": "event", "error_code": 428, "error": "No such feed"}}});
        assert!(matches!(
            plugin_data(&reply),
            Err(JanusError::Plugin { code: 428, .. })
        ));
        let ok = json!({"janus": "success", "plugindata": {"data": {"videoroom": "created", "room": 4}}});
        assert_eq!(plugin_data(&ok).unwrap()["room"], 4);
        assert!(plugin_data(&json!({"janus": "ack"})).is_err());
    }
}
