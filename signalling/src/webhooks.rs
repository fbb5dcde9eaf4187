//! Webhooks: each client's session events POSTed as JSON to the URL it set, signed.
//!
//! The hub never waits for a webhook. [`Webhooks::notify`] puts an event on a bounded queue
//! (an event that finds it full is dropped and counted); a dispatcher hands each client's
//! events to a task of that client's, which delivers them one at a time in order, retrying a
//! failed delivery with back-off until it succeeds or the event is [`GIVE_UP_AFTER`] old. So
//! a receiver that is down for a while gets everything afterwards, in order, and a receiver
//! that never answers holds up only its own client's events. Events a client lost (a full
//! queue, or given up on) are counted and the count goes out in the `dropped` field of its
//! next delivery.
//!
//! A delivery carries the headers
//!
//! ```text
//! Content-Type: application/json
//! WebRTCai-Key: wk_…                       (the key whose secret signs it)
//! WebRTCai-Signature: t=1733500000,v1=5f2c…  (hex HMAC-SHA256 of "{t}.{body}")
//! ```
//!
//! and the receiver checks the signature with the key's secret, and that `t` is recent.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::store::{Store, StoreError, WebhookTarget};

/// Events waiting for the dispatcher, all clients together.
pub const QUEUE: usize = 4096;

/// Events waiting for one client's receiver.
pub const CLIENT_QUEUE: usize = 1024;

/// An event not delivered this long after it happened is given up (and counted as dropped).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// How long one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The first wait after a failed delivery; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// The longest wait between tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long a client's webhook (URL and key) is used before it is read again.
const TARGET_TTL: Duration = Duration::from_secs(2);

/// One event for a client.
#[derive(Debug)]
struct Notice {
    cid: String,
    /// When it happened.
    at: Instant,
    /// Unix milliseconds, for the body.
    at_ms: u64,
    /// `event` and the event's fields.
    body: serde_json::Map<String, Value>,
}

/// Events lost per client, not yet reported.
type Dropped = Arc<Mutex<HashMap<String, u64>>>;

/// Deliveries so far, all clients together, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counts {
    /// Events a receiver took.
    pub delivered: AtomicU64,
    /// Tries that failed (each is retried until the event is given up).
    pub failed_tries: AtomicU64,
    /// Events lost: a full queue, or given up.
    pub lost: AtomicU64,
}

/// The hub's side of the webhooks.
#[derive(Clone)]
pub struct Webhooks {
    tx: mpsc::Sender<Notice>,
    dropped: Dropped,
    counts: Arc<Counts>,
}

impl Webhooks {
    /// Start the dispatcher, reading each client's webhook from the database at `path`.
    pub fn start(path: &Path) -> Result<Webhooks, StoreError> {
        let store = Arc::new(Store::open(path)?);
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Dropped::default();
        let counts = Arc::new(Counts::default());
        tokio::spawn(dispatch(rx, store, dropped.clone(), counts.clone()));
        Ok(Webhooks {
            tx,
            dropped,
            counts,
        })
    }

    /// Deliveries so far: (delivered, failed tries, lost).
    pub fn counts(&self) -> (u64, u64, u64) {
        let c = &self.counts;
        (
            c.delivered.load(Ordering::Relaxed),
            c.failed_tries.load(Ordering::Relaxed),
            c.lost.load(Ordering::Relaxed),
        )
    }

    /// Tell client `cid` of `event` (`session_started`, …) with `fields`; never waits.
    pub fn notify(&self, cid: &str, event: &str, fields: Value) {
        let mut body = serde_json::Map::new();
        body.insert("event".into(), Value::String(event.to_owned()));
        if let Value::Object(fields) = fields {
            body.extend(fields);
        }
        let notice = Notice {
            cid: cid.to_owned(),
            at: Instant::now(),
            at_ms: unix_ms(),
            body,
        };
        if let Err(e) = self.tx.try_send(notice) {
            count_lost(&self.dropped, &self.counts, e);
        }
    }
}

fn lock(d: &Dropped) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

/// An event that found a queue full (or closed): its client's next delivery says so.
fn count_lost(dropped: &Dropped, counts: &Counts, e: mpsc::error::TrySendError<Notice>) {
    let (mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n)) = e;
    *lock(dropped).entry(n.cid).or_default() += 1;
    counts.lost.fetch_add(1, Ordering::Relaxed);
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Hand each event to its client's task (started on the client's first event).
async fn dispatch(
    mut rx: mpsc::Receiver<Notice>,
    store: Arc<Store>,
    dropped: Dropped,
    counts: Arc<Counts>,
) {
    let mut clients: HashMap<String, mpsc::Sender<Notice>> = HashMap::new();
    while let Some(notice) = rx.recv().await {
        let tx = clients.entry(notice.cid.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
            let client = Client {
                cid: notice.cid.clone(),
                store: store.clone(),
                dropped: dropped.clone(),
                counts: counts.clone(),
                target: None,
            };
            tokio::spawn(client.deliver_all(rx));
            tx
        });
        if let Err(e) = tx.try_send(notice) {
            count_lost(&dropped, &counts, e);
        }
    }
}

/// One client's deliveries.
struct Client {
    cid: String,
    store: Arc<Store>,
    dropped: Dropped,
    counts: Arc<Counts>,
    /// Its webhook, and when it was read.
    target: Option<(Option<WebhookTarget>, Instant)>,
}

impl Client {
    async fn deliver_all(mut self, mut rx: mpsc::Receiver<Notice>) {
        while let Some(notice) = rx.recv().await {
            self.deliver(notice).await;
        }
    }

    /// The client's webhook now (read again every [`TARGET_TTL`]).
    async fn target(&mut self) -> Option<WebhookTarget> {
        if let Some((t, read)) = &self.target {
            if read.elapsed() < TARGET_TTL {
                return t.clone();
            }
        }
        let (store, cid) = (self.store.clone(), self.cid.clone());
        let read = tokio::task::spawn_blocking(move || store.webhook_target(&cid)).await;
        let target = match read {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::warn!(cid = %self.cid, "webhook not read: {e}");
                // Keep what was known: it was right a moment ago.
                return self.target.as_ref().and_then(|(t, _)| t.clone());
            }
            Err(_) => None,
        };
        self.target = Some((target.clone(), Instant::now()));
        target
    }

    /// Deliver one event: retried until it is taken or too old.
    async fn deliver(&mut self, notice: Notice) {
        let id = format!("wh_{:016x}", rand::random::<u64>());
        let mut backoff = FIRST_BACKOFF;
        let mut body = None;
        loop {
            // A client without a webhook gets nothing, and nothing counts as lost.
            let Some(target) = self.target().await else {
                return;
            };
            // The events lost before this one go out with it, once.
            let text = body.get_or_insert_with(|| {
                let dropped = lock(&self.dropped).remove(&self.cid).unwrap_or(0);
                let mut b = notice.body.clone();
                b.insert("id".into(), Value::String(id.clone()));
                b.insert("cid".into(), Value::String(self.cid.clone()));
                b.insert("created_at".into(), json!(notice.at_ms));
                b.insert("dropped".into(), json!(dropped));
                Value::Object(b).to_string()
            });
            let (t, sent) = (target.clone(), text.clone());
            let result = tokio::task::spawn_blocking(move || post(&t, &sent)).await;
            match result {
                Ok(Ok(())) => {
                    self.counts.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(cid = %self.cid, url = %target.url, "webhook not delivered: {e}")
                }
                Err(_) => {}
            }
            self.counts.failed_tries.fetch_add(1, Ordering::Relaxed);
            if notice.at.elapsed() + backoff > GIVE_UP_AFTER {
                tracing::warn!(cid = %self.cid, url = %target.url, "webhook given up after {:?}", notice.at.elapsed());
                *lock(&self.dropped).entry(self.cid.clone()).or_default() += 1;
                self.counts.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// `t=…,v1=…`: the hex HMAC-SHA256, with `secret`, of `"{t}.{body}"`.
pub fn signature(secret: &str, t: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// POST `body` to the target; Ok when it answers 2xx.
fn post(target: &WebhookTarget, body: &str) -> Result<(), String> {
    let t = unix_ms() / 1000;
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let response = agent
        .post(&target.url)
        .header("content-type", "application/json")
        .header("webrtcai-key", &target.key_id)
        .header("webrtcai-signature", &signature(&target.secret, t, body))
        .send(body)
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_and_body() {
        // Computed apart: printf '1700000000.{}' | openssl dgst -sha256 -hmac secret
        let s = signature("secret", 1_700_000_000, "{}");
        assert_eq!(
            s,
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
