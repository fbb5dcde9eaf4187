//! The account database, off the hub's task.
//!
//! SQLite calls block, and a write waits up to the busy timeout (2 s) while another process,
//! such as the CLI, holds the write lock. The hub serves every websocket from one task, so it
//! never calls SQLite itself: joins are authenticated on a reader thread and usage is written
//! on a writer thread, each with a connection of its own, and results come back to the hub as
//! inputs.
//!
//! The reader keeps a cache of the keys it has read. Before each authentication it reads the
//! keys' version counter (a table that triggers move on every change to `keys`, whoever makes
//! it), and drops the cache when it moved, so a revocation takes effect on the next join, also
//! when another process made it. The database is in WAL mode, where a read never waits for a
//! writer; should a read fail all the same, a cached key still authenticates.
//!
//! The writer retries usage and recordings it could not write (a lock held past the busy
//! timeout) in order, so a stalled database delays billing records but loses none while the
//! process runs.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::{self, AuthError, Identity, Keys};
use crate::metrics::DbLatency;
use crate::store::{KeyRecord, Recording, Store, StoreError, UsageDelta};

/// What a join presents.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A WEB_ONLY key from a page at `origin`.
    Key {
        /// The key id.
        key_id: String,
        /// The websocket's `Origin` header.
        origin: Option<String>,
    },
    /// A JWT for session `sid`.
    Token {
        /// The token.
        token: String,
        /// The session the join asks for (the public name).
        sid: String,
    },
}

/// Usage of one session since the last write.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    /// The client.
    pub cid: String,
    /// The session's public name.
    pub sid: String,
    /// Unix seconds: identifies this run of the session.
    pub started_at: i64,
    /// Usage since the last record.
    pub delta: UsageDelta,
    /// Most participants at once so far.
    pub peak: u32,
    /// Unix seconds, when the session ended with this record.
    pub ended_at: Option<i64>,
}

/// What the writer thread writes.
#[derive(Debug, Clone)]
enum Write {
    Usage(UsageRecord),
    Recording(Box<Recording>),
    /// The participants of a stopping server, until a Unix time.
    ResumeTokens(Vec<crate::store::ResumeToken>, i64),
}

type Done = Box<dyn FnOnce(Result<Identity, AuthError>) + Send>;

struct AuthJob {
    credentials: Credentials,
    done: Done,
}

/// How often the writer retries usage it could not write.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Handles to the reader and writer threads; they end when this is dropped, the writer once
/// it has written what it was given (a server that stops loses no usage or recording).
pub struct Accounts {
    auth: mpsc::Sender<AuthJob>,
    writes: Option<mpsc::Sender<Write>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// How long the threads' database calls take, for `/metrics`.
    latency: Arc<Mutex<DbLatency>>,
}

impl Drop for Accounts {
    fn drop(&mut self) {
        // Closing the channel ends the writer after one last try at what it holds.
        self.writes = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Accounts {
    /// Open two more connections to the database at `path` and start the threads.
    pub fn start(path: &Path) -> Result<Accounts, StoreError> {
        let reader = Store::open(path)?;
        let writer = Store::open(path)?;
        let (auth, auth_rx) = mpsc::channel::<AuthJob>();
        let (writes, writes_rx) = mpsc::channel::<Write>();
        let latency = Arc::new(Mutex::new(DbLatency::default()));
        let reads = latency.clone();
        std::thread::Builder::new()
            .name("accounts-auth".into())
            .spawn(move || {
                let mut keys = KeyCache::new(reader);
                while let Ok(job) = auth_rx.recv() {
                    let started = Instant::now();
                    let result = keys.authenticate(&job.credentials);
                    lock(&reads).reads.record(micros(started), 1);
                    (job.done)(result);
                }
            })
            .map_err(|e| StoreError::Sql(format!("cannot start the accounts thread: {e}")))?;
        let writer = std::thread::Builder::new()
            .name("accounts-usage".into())
            .spawn({
                let latency = latency.clone();
                move || write_all(writer, writes_rx, &latency)
            })
            .map_err(|e| StoreError::Sql(format!("cannot start the usage thread: {e}")))?;
        Ok(Accounts {
            auth,
            writes: Some(writes),
            writer: Some(writer),
            latency,
        })
    }

    /// How long the database calls took so far.
    pub fn latency(&self) -> DbLatency {
        lock(&self.latency).clone()
    }

    /// Authenticate `credentials` on the reader thread; `done` is called there with the
    /// outcome (it should hand it back to the hub, not do work of its own).
    pub fn authenticate(
        &self,
        credentials: Credentials,
        done: impl FnOnce(Result<Identity, AuthError>) + Send + 'static,
    ) {
        let job = AuthJob {
            credentials,
            done: Box::new(done),
        };
        if let Err(mpsc::SendError(job)) = self.auth.send(job) {
            (job.done)(Err(AuthError::Store(
                "the accounts thread has stopped".into(),
            )));
        }
    }

    /// Write usage on the writer thread (retried there until it succeeds).
    pub fn add_usage(&self, record: UsageRecord) {
        let sent = self.writes.as_ref().map(|w| w.send(Write::Usage(record)));
        if !matches!(sent, Some(Ok(()))) {
            tracing::error!("the usage thread has stopped; usage not recorded");
        }
    }

    /// Keep a stopping server's participants until `expires_at` (Unix seconds), on the writer
    /// thread, so that the next server to start takes them back.
    pub fn save_resume_tokens(&self, tokens: Vec<crate::store::ResumeToken>, expires_at: i64) {
        let sent = self
            .writes
            .as_ref()
            .map(|w| w.send(Write::ResumeTokens(tokens, expires_at)));
        if !matches!(sent, Some(Ok(()))) {
            tracing::error!("the writer thread has stopped; resume tokens not kept");
        }
    }

    /// List a finished recording file, on the writer thread (retried there like usage).
    pub fn add_recording(&self, recording: Recording) {
        let sent = self
            .writes
            .as_ref()
            .map(|w| w.send(Write::Recording(Box::new(recording))));
        if !matches!(sent, Some(Ok(()))) {
            tracing::error!("the usage thread has stopped; recording not listed");
        }
    }
}

/// Keys read from the database, valid while its keys' version stays the same.
struct KeyCache {
    store: Store,
    version: Option<i64>,
    keys: HashMap<String, KeyRecord>,
}

impl KeyCache {
    fn new(store: Store) -> Self {
        KeyCache {
            store,
            version: None,
            keys: HashMap::new(),
        }
    }

    fn authenticate(&mut self, credentials: &Credentials) -> Result<Identity, AuthError> {
        match self.store.keys_version() {
            Ok(v) if Some(v) != self.version => {
                self.keys.clear();
                self.version = Some(v);
            }
            Ok(_) => {}
            // Keep what is cached: it was right a moment ago.
            Err(e) => tracing::warn!("key version not read ({e}); using cached keys"),
        }
        match credentials {
            Credentials::Key { key_id, origin } => auth::with_key(self, key_id, origin.as_deref()),
            Credentials::Token { token, sid } => auth::with_token(self, token, sid),
        }
    }
}

impl Keys for &mut KeyCache {
    fn key(&mut self, key_id: &str) -> Result<Option<KeyRecord>, AuthError> {
        if let Some(key) = self.keys.get(key_id) {
            return Ok(Some(key.clone()));
        }
        let found = Store::key(&self.store, key_id).map_err(|e| AuthError::Store(e.to_string()))?;
        if let Some(key) = &found {
            // A bound on what unknown callers can make it hold: only keys that exist are
            // cached, and there are as many of those as the operator created.
            self.keys.insert(key_id.to_owned(), key.clone());
        }
        Ok(found)
    }
}

fn lock(latency: &Mutex<DbLatency>) -> std::sync::MutexGuard<'_, DbLatency> {
    latency.lock().unwrap_or_else(|e| e.into_inner())
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn write_all(store: Store, records: mpsc::Receiver<Write>, latency: &Mutex<DbLatency>) {
    let mut pending: VecDeque<Write> = VecDeque::new();
    loop {
        let next = if pending.is_empty() {
            records.recv().ok()
        } else {
            match records.recv_timeout(RETRY_INTERVAL) {
                Ok(r) => Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Shutting down: one last try for what is left.
                    drain(&store, &mut pending, latency);
                    return;
                }
            }
        };
        match next {
            Some(record) => pending.push_back(record),
            None if pending.is_empty() => return,
            None => {}
        }
        drain(&store, &mut pending, latency);
    }
}

/// Write pending records in order, stopping at the first that fails (it is retried later).
fn drain(store: &Store, pending: &mut VecDeque<Write>, latency: &Mutex<DbLatency>) {
    while let Some(w) = pending.front() {
        let started = Instant::now();
        let (written, what) = match w {
            Write::Usage(r) => (
                store.add_usage(&r.cid, &r.sid, r.started_at, r.delta, r.peak, r.ended_at),
                &r.sid,
            ),
            Write::Recording(r) => (store.add_recording(r).map(|_| ()), &r.path),
            Write::ResumeTokens(tokens, expires_at) => (
                store.save_resume_tokens(tokens, *expires_at),
                &"resume tokens".to_owned(),
            ),
        };
        {
            let mut l = lock(latency);
            l.writes.record(micros(started), 1);
            l.write_failures += u64::from(written.is_err());
        }
        match written {
            Ok(()) => {
                pending.pop_front();
            }
            Err(e) => {
                tracing::warn!(
                    %what,
                    waiting = pending.len(),
                    "usage not written yet: {e}"
                );
                return;
            }
        }
    }
}
