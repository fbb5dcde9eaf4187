//! The embedded account database: clients, their keys, and usage, in one SQLite file.
//!
//! Migrations run when the store opens (`rusqlite_migration`, tracked in `user_version`).
//! Key secrets are stored so that tokens can be verified, returned once when a key is created,
//! and never again; `Debug` output of a key record does not show them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};
use serde::{Deserialize, Serialize};

/// Why the store refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file cannot be opened or created (missing directory, permissions).
    #[error("database {path}: cannot open: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
    /// Another process holds a lock on the file for too long.
    #[error("database {path} is locked by another process")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a database or is damaged.
    #[error("database {path} is corrupt or not a SQLite database: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
    /// The file is read-only.
    #[error("database {path} is not writable")]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// A schema migration failed.
    #[error("database {path}: migration failed: {reason}")]
    Migration {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No such client.
    #[error("no client {0}")]
    NoSuchClient(String),
    /// No such key.
    #[error("no key {0}")]
    NoSuchKey(String),
    /// A webhook that cannot be set: its URL, or its key.
    #[error("invalid webhook: {0}")]
    InvalidWebhook(String),
    /// Any other SQLite failure.
    #[error("database: {0}")]
    Sql(String),
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE clients (
            cid TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE keys (
            key_id TEXT PRIMARY KEY,
            cid TEXT NOT NULL REFERENCES clients(cid),
            secret TEXT NOT NULL,
            domains TEXT NOT NULL,
            recording INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        );
        CREATE INDEX keys_by_client ON keys(cid);",
        ),
        M::up(
            "CREATE TABLE session_usage (
                cid TEXT NOT NULL,
                sid TEXT NOT NULL,
                started_at INTEGER NOT NULL,
                ended_at INTEGER,
                participant_seconds REAL NOT NULL DEFAULT 0,
                bytes_in INTEGER NOT NULL DEFAULT 0,
                bytes_out INTEGER NOT NULL DEFAULT 0,
                peak_participants INTEGER NOT NULL DEFAULT 0,
                recording_seconds REAL NOT NULL DEFAULT 0,
                updated_at INTEGER NOT NULL,
                PRIMARY KEY (cid, sid, started_at)
            );",
        ),
        // A counter that every change to `keys` moves, so that a key cache can tell with one
        // read whether it is still current (other processes, such as the CLI, change keys).
        M::up(
            "CREATE TABLE keys_version (n INTEGER NOT NULL);
            INSERT INTO keys_version VALUES (0);
            CREATE TRIGGER keys_inserted AFTER INSERT ON keys
                BEGIN UPDATE keys_version SET n = n + 1; END;
            CREATE TRIGGER keys_updated AFTER UPDATE ON keys
                BEGIN UPDATE keys_version SET n = n + 1; END;
            CREATE TRIGGER keys_deleted AFTER DELETE ON keys
                BEGIN UPDATE keys_version SET n = n + 1; END;",
        ),
        // One row per recorded file, written when the file is finished.
        M::up(
            "CREATE TABLE recordings (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                cid TEXT NOT NULL,
                sid TEXT NOT NULL,
                session_started_at INTEGER NOT NULL,
                uid TEXT NOT NULL,
                feed_id TEXT NOT NULL,
                kinds TEXT NOT NULL,
                path TEXT NOT NULL,
                started_at INTEGER NOT NULL,
                finished_at INTEGER NOT NULL,
                duration_ms INTEGER NOT NULL,
                bytes INTEGER NOT NULL,
                error TEXT
            );
            CREATE INDEX recordings_by_client ON recordings(cid, started_at);",
        ),
        // Where a client's webhooks go, and the key whose secret signs them.
        M::up(
            "CREATE TABLE webhooks (
                cid TEXT PRIMARY KEY REFERENCES clients(cid),
                url TEXT NOT NULL,
                key_id TEXT NOT NULL REFERENCES keys(key_id),
                updated_at INTEGER NOT NULL
            );",
        ),
        // The participants of a server that stopped, so that their pages take their places
        // again after a restart: by a hash of each resume token, never the token itself.
        M::up(
            "CREATE TABLE resume_tokens (
                token_hash TEXT PRIMARY KEY,
                sid TEXT NOT NULL,
                uid TEXT NOT NULL,
                expires_at INTEGER NOT NULL
            );",
        ),
    ])
}

/// A participant of a server that stopped, by its resume token's hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeToken {
    /// SHA-256 of the token, in hex.
    pub token_hash: String,
    /// The session (the hub's name, `cid/sid`).
    pub sid: String,
    /// The participant.
    pub uid: String,
}

impl ResumeToken {
    /// The hash a token is kept under.
    pub fn hash(token: &str) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A client's webhook as listed: where it goes and which key signs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// The client.
    pub cid: String,
    /// Where events are POSTed.
    pub url: String,
    /// The key whose secret signs them (named in each delivery).
    pub key_id: String,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A webhook with what signs it, for delivery.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// Where events go.
    pub url: String,
    /// The signing key.
    pub key_id: String,
    /// Its secret.
    pub secret: String,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// A recorded file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// Its id in the listing (None before it is stored).
    pub id: Option<i64>,
    /// The client.
    pub cid: String,
    /// The session (as the client names it).
    pub sid: String,
    /// Unix seconds: the run of the session it was part of.
    pub session_started_at: i64,
    /// The publisher.
    pub uid: String,
    /// The feed.
    pub feed_id: String,
    /// What it holds: `audio` and/or `video`.
    pub kinds: Vec<String>,
    /// The file, relative to the recordings directory.
    pub path: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds.
    pub finished_at: i64,
    /// Its duration.
    pub duration_ms: u64,
    /// Its size.
    pub bytes: u64,
    /// Why it ended early, if it did.
    pub error: Option<String>,
}

/// A client (an organisation that owns keys and sessions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Its id.
    pub cid: String,
    /// Display name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A key as listed: everything but the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The WEB_ONLY key itself (public: it is in web pages) and the JWT `kid`.
    pub key_id: String,
    /// Its client.
    pub cid: String,
    /// Allowed Origin hosts: exact hosts or `*.example.com`, optionally with `:port`.
    pub domains: Vec<String>,
    /// Whether sessions joined with this key may be recorded.
    pub recording: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, once revoked.
    pub revoked_at: Option<i64>,
}

/// A key with its secret, for verifying tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// What can be shown.
    pub info: KeyInfo,
    /// The HS256 secret tokens are signed with.
    pub secret: String,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("info", &self.info)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// Usage to add to a session's record.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UsageDelta {
    /// Participant-seconds since the last flush.
    pub participant_seconds: f64,
    /// Bytes the relay received from the session's participants.
    pub bytes_in: u64,
    /// Bytes the relay sent to them.
    pub bytes_out: u64,
    /// Recording seconds.
    pub recording_seconds: f64,
}

/// One session's usage, as billed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionUsage {
    /// The client.
    pub cid: String,
    /// The session (as the client names it).
    pub sid: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds, once the last participant left.
    pub ended_at: Option<i64>,
    /// Participant-minutes.
    pub participant_minutes: f64,
    /// Bytes received by the relay.
    pub bytes_in: u64,
    /// Bytes sent by the relay.
    pub bytes_out: u64,
    /// Most participants at once.
    pub peak_participants: u32,
    /// Recording minutes.
    pub recording_minutes: f64,
}

/// Usage of a client over a period: per session and in total.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The client.
    pub cid: String,
    /// Period start (Unix seconds, inclusive): sessions that started in it.
    pub from: i64,
    /// Period end (exclusive).
    pub to: i64,
    /// Per session.
    pub sessions: Vec<SessionUsage>,
    /// Participant-minutes of all sessions.
    pub participant_minutes: f64,
    /// Bytes received by the relay.
    pub bytes_in: u64,
    /// Bytes sent by the relay.
    pub bytes_out: u64,
    /// The highest peak of any session.
    pub peak_participants: u32,
    /// Recording minutes.
    pub recording_minutes: f64,
}

impl UsageReport {
    /// A human-readable table: one row per session and a total.
    pub fn table(&self) -> String {
        let row = |name: &str, started: String, pm: f64, bi: u64, bo: u64, peak: u32, rm: f64| {
            format!("{name:<24} {started:>12} {pm:>10.2} {bi:>14} {bo:>14} {peak:>6} {rm:>9.2}\n")
        };
        let mut out = format!(
            "{:<24} {:>12} {:>10} {:>14} {:>14} {:>6} {:>9}\n",
            "session", "started", "part-min", "bytes in", "bytes out", "peak", "rec-min"
        );
        for s in &self.sessions {
            out += &row(
                &s.sid,
                s.started_at.to_string(),
                s.participant_minutes,
                s.bytes_in,
                s.bytes_out,
                s.peak_participants,
                s.recording_minutes,
            );
        }
        out += &row(
            "total",
            String::new(),
            self.participant_minutes,
            self.bytes_in,
            self.bytes_out,
            self.peak_participants,
            self.recording_minutes,
        );
        out
    }
}

/// The account database.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_token(prefix: &str, bytes: usize) -> String {
    let mut rng = rand::rng();
    let hex: String = (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect();
    format!("{prefix}{hex}")
}

impl Store {
    /// Open (or create) the database file and bring its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let classify = |e: rusqlite::Error| -> StoreError {
            use rusqlite::ErrorCode as C;
            match e.sqlite_error_code() {
                Some(C::DatabaseBusy | C::DatabaseLocked) => {
                    StoreError::Locked { path: path.clone() }
                }
                Some(C::NotADatabase | C::DatabaseCorrupt) => StoreError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                },
                Some(C::ReadOnly) => StoreError::ReadOnly { path: path.clone() },
                Some(C::CannotOpen | C::PermissionDenied) => StoreError::Open {
                    path: path.clone(),
                    reason: e.to_string(),
                },
                _ => StoreError::Sql(e.to_string()),
            }
        };
        let mut conn = Connection::open(&path).map_err(|e| match classify(e) {
            StoreError::Sql(reason) => StoreError::Open {
                path: path.clone(),
                reason,
            },
            other => other,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(classify)?;
        // Reading the schema is the first access to the file's contents: corruption and locks
        // show up here.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(classify)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(classify)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(classify)?;
        migrations().to_latest(&mut conn).map_err(|e| match e {
            rusqlite_migration::Error::RusqliteError { err, .. } => classify(err),
            other => StoreError::Migration {
                path: path.clone(),
                reason: other.to_string(),
            },
        })?;
        Ok(Store {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Locked {
                    path: self.path.clone(),
                }
            }
            Some(rusqlite::ErrorCode::ReadOnly) => StoreError::ReadOnly {
                path: self.path.clone(),
            },
            _ => StoreError::Sql(e.to_string()),
        })
    }

    /// Create a client.
    pub fn create_client(&self, name: &str) -> Result<Client, StoreError> {
        let client = Client {
            cid: random_token("c-", 8),
            name: name.to_owned(),
            created_at: now(),
        };
        self.with(|c| {
            c.execute(
                "INSERT INTO clients (cid, name, created_at) VALUES (?1, ?2, ?3)",
                params![client.cid, client.name, client.created_at],
            )
        })?;
        Ok(client)
    }

    /// Every client.
    pub fn clients(&self) -> Result<Vec<Client>, StoreError> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT cid, name, created_at FROM clients ORDER BY created_at, cid")?;
            let rows = st.query_map([], |r| {
                Ok(Client {
                    cid: r.get(0)?,
                    name: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Create a WEB_ONLY key for a client; the secret is returned here and never again.
    pub fn create_key(
        &self,
        cid: &str,
        domains: &[String],
        recording: bool,
    ) -> Result<KeyRecord, StoreError> {
        let exists = self.with(|c| {
            c.query_row("SELECT 1 FROM clients WHERE cid = ?1", [cid], |_| Ok(()))
                .optional()
        })?;
        if exists.is_none() {
            return Err(StoreError::NoSuchClient(cid.to_owned()));
        }
        let record = KeyRecord {
            info: KeyInfo {
                key_id: random_token("wk_", 12),
                cid: cid.to_owned(),
                domains: domains.to_vec(),
                recording,
                created_at: now(),
                revoked_at: None,
            },
            secret: random_token("sk_", 32),
        };
        let domains_json =
            serde_json::to_string(&record.info.domains).unwrap_or_else(|_| "[]".into());
        self.with(|c| {
            c.execute(
                "INSERT INTO keys (key_id, cid, secret, domains, recording, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    record.info.key_id,
                    record.info.cid,
                    record.secret,
                    domains_json,
                    recording,
                    record.info.created_at
                ],
            )
        })?;
        Ok(record)
    }

    fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
        let domains: String = r.get(3)?;
        Ok(KeyRecord {
            info: KeyInfo {
                key_id: r.get(0)?,
                cid: r.get(1)?,
                domains: serde_json::from_str(&domains).unwrap_or_default(),
                recording: r.get(4)?,
                created_at: r.get(5)?,
                revoked_at: r.get(6)?,
            },
            secret: r.get(2)?,
        })
    }

    /// A key with its secret (for authentication), revoked or not.
    pub fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT key_id, cid, secret, domains, recording, created_at, revoked_at FROM keys WHERE key_id = ?1",
                [key_id],
                Self::row_to_record,
            )
            .optional()
        })
    }

    /// The keys of a client (or of every client), without secrets.
    pub fn keys(&self, cid: Option<&str>) -> Result<Vec<KeyInfo>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT key_id, cid, secret, domains, recording, created_at, revoked_at FROM keys
                 WHERE ?1 IS NULL OR cid = ?1 ORDER BY created_at, key_id",
            )?;
            let rows = st.query_map([cid], Self::row_to_record)?;
            rows.map(|r| r.map(|k| k.info)).collect()
        })
    }

    /// Add usage to a session's record (created on first use); `ended_at` closes it.
    pub fn add_usage(
        &self,
        cid: &str,
        sid: &str,
        started_at: i64,
        delta: UsageDelta,
        peak_participants: u32,
        ended_at: Option<i64>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO session_usage (cid, sid, started_at, ended_at, participant_seconds,
                     bytes_in, bytes_out, peak_participants, recording_seconds, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (cid, sid, started_at) DO UPDATE SET
                     ended_at = CASE
                         WHEN excluded.ended_at IS NULL THEN ended_at
                         WHEN ended_at IS NULL THEN excluded.ended_at
                         ELSE MAX(ended_at, excluded.ended_at) END,
                     participant_seconds = participant_seconds + excluded.participant_seconds,
                     bytes_in = bytes_in + excluded.bytes_in,
                     bytes_out = bytes_out + excluded.bytes_out,
                     peak_participants = MAX(peak_participants, excluded.peak_participants),
                     recording_seconds = recording_seconds + excluded.recording_seconds,
                     updated_at = excluded.updated_at",
                params![
                    cid,
                    sid,
                    started_at,
                    ended_at,
                    delta.participant_seconds,
                    delta.bytes_in as i64,
                    delta.bytes_out as i64,
                    peak_participants,
                    delta.recording_seconds,
                    now()
                ],
            )
            .map(|_| ())
        })
    }

    /// A client's usage for sessions that started in `[from, to)`.
    pub fn usage(&self, cid: &str, from: i64, to: i64) -> Result<UsageReport, StoreError> {
        let sessions: Vec<SessionUsage> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT cid, sid, started_at, ended_at, participant_seconds, bytes_in, bytes_out,
                        peak_participants, recording_seconds
                 FROM session_usage WHERE cid = ?1 AND started_at >= ?2 AND started_at < ?3
                 ORDER BY started_at, sid",
            )?;
            let rows = st.query_map(params![cid, from, to], |r| {
                Ok(SessionUsage {
                    cid: r.get(0)?,
                    sid: r.get(1)?,
                    started_at: r.get(2)?,
                    ended_at: r.get(3)?,
                    participant_minutes: r.get::<_, f64>(4)? / 60.0,
                    bytes_in: r.get::<_, i64>(5)? as u64,
                    bytes_out: r.get::<_, i64>(6)? as u64,
                    peak_participants: r.get(7)?,
                    recording_minutes: r.get::<_, f64>(8)? / 60.0,
                })
            })?;
            rows.collect()
        })?;
        Ok(UsageReport {
            cid: cid.to_owned(),
            from,
            to,
            participant_minutes: sessions.iter().map(|s| s.participant_minutes).sum(),
            bytes_in: sessions.iter().map(|s| s.bytes_in).sum(),
            bytes_out: sessions.iter().map(|s| s.bytes_out).sum(),
            peak_participants: sessions
                .iter()
                .map(|s| s.peak_participants)
                .max()
                .unwrap_or(0),
            recording_minutes: sessions.iter().map(|s| s.recording_minutes).sum(),
            sessions,
        })
    }

    /// Record a finished recording file.
    pub fn add_recording(&self, r: &Recording) -> Result<i64, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO recordings (cid, sid, session_started_at, uid, feed_id, kinds, path,
                     started_at, finished_at, duration_ms, bytes, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    r.cid,
                    r.sid,
                    r.session_started_at,
                    r.uid,
                    r.feed_id,
                    r.kinds.join(","),
                    r.path,
                    r.started_at,
                    r.finished_at,
                    r.duration_ms as i64,
                    r.bytes as i64,
                    r.error,
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// A client's recordings (all clients' with None), of session `sid` if given, oldest
    /// first.
    pub fn recordings(
        &self,
        cid: Option<&str>,
        sid: Option<&str>,
    ) -> Result<Vec<Recording>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, cid, sid, session_started_at, uid, feed_id, kinds, path, started_at,
                        finished_at, duration_ms, bytes, error
                 FROM recordings
                 WHERE (?1 IS NULL OR cid = ?1) AND (?2 IS NULL OR sid = ?2)
                 ORDER BY started_at, id",
            )?;
            let rows = st.query_map(params![cid, sid], recording_row)?;
            rows.collect()
        })
    }

    /// One recording.
    pub fn recording(&self, id: i64) -> Result<Option<Recording>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id, cid, sid, session_started_at, uid, feed_id, kinds, path, started_at,
                        finished_at, duration_ms, bytes, error
                 FROM recordings WHERE id = ?1",
                params![id],
                recording_row,
            )
            .optional()
        })
    }

    /// Keep the participants a stopping server had, by their resume tokens' hashes, until
    /// `expires_at` (Unix seconds).
    pub fn save_resume_tokens(
        &self,
        tokens: &[ResumeToken],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            for t in tokens {
                tx.execute(
                    "INSERT OR REPLACE INTO resume_tokens (token_hash, sid, uid, expires_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![t.token_hash, t.sid, t.uid, expires_at],
                )?;
            }
            tx.commit()
        })
    }

    /// The participants a server kept when it stopped that have not expired by `now`; every
    /// one is removed (a token is taken back once, by the next server to start).
    pub fn take_resume_tokens(&self, now: i64) -> Result<Vec<ResumeToken>, StoreError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let tokens = {
                let mut q = tx.prepare(
                    "SELECT token_hash, sid, uid FROM resume_tokens WHERE expires_at > ?1",
                )?;
                let rows = q.query_map([now], |r| {
                    Ok(ResumeToken {
                        token_hash: r.get(0)?,
                        sid: r.get(1)?,
                        uid: r.get(2)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            tx.execute("DELETE FROM resume_tokens", [])?;
            tx.commit()?;
            Ok(tokens)
        })
    }

    /// A number that changes whenever any key is created, changed or removed, by this process
    /// or another.
    pub fn keys_version(&self) -> Result<i64, StoreError> {
        self.with(|c| c.query_row("SELECT n FROM keys_version", [], |r| r.get(0)))
    }

    /// Send client `cid`'s events to `url`, signed with `key_id`'s secret (a key of the
    /// client's that is not revoked). `url` must be http or https.
    pub fn set_webhook(&self, cid: &str, url: &str, key_id: &str) -> Result<Webhook, StoreError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
            return Err(StoreError::InvalidWebhook(format!(
                "{url:?} is not an http:// or https:// URL"
            )));
        }
        if !self.clients()?.iter().any(|c| c.cid == cid) {
            return Err(StoreError::NoSuchClient(cid.to_owned()));
        }
        match self.key(key_id)? {
            Some(k) if k.info.cid == cid && k.info.revoked_at.is_none() => {}
            Some(k) if k.info.cid == cid => {
                return Err(StoreError::InvalidWebhook(format!(
                    "key {key_id} is revoked"
                )))
            }
            _ => return Err(StoreError::NoSuchKey(key_id.to_owned())),
        }
        let hook = Webhook {
            cid: cid.to_owned(),
            url: url.to_owned(),
            key_id: key_id.to_owned(),
            updated_at: now(),
        };
        self.with(|c| {
            c.execute(
                "INSERT INTO webhooks (cid, url, key_id, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (cid) DO UPDATE SET url = ?2, key_id = ?3, updated_at = ?4",
                params![hook.cid, hook.url, hook.key_id, hook.updated_at],
            )
        })?;
        Ok(hook)
    }

    /// Stop client `cid`'s webhooks; whether it had one.
    pub fn clear_webhook(&self, cid: &str) -> Result<bool, StoreError> {
        let n = self.with(|c| c.execute("DELETE FROM webhooks WHERE cid = ?1", [cid]))?;
        Ok(n > 0)
    }

    /// Client `cid`'s webhook, as listed.
    pub fn webhook(&self, cid: &str) -> Result<Option<Webhook>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT cid, url, key_id, updated_at FROM webhooks WHERE cid = ?1",
                [cid],
                |r| {
                    Ok(Webhook {
                        cid: r.get(0)?,
                        url: r.get(1)?,
                        key_id: r.get(2)?,
                        updated_at: r.get(3)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Where client `cid`'s events go and what signs them; none without a webhook, or when
    /// its key was revoked since.
    pub fn webhook_target(&self, cid: &str) -> Result<Option<WebhookTarget>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT w.url, w.key_id, k.secret FROM webhooks w JOIN keys k ON k.key_id = w.key_id
                 WHERE w.cid = ?1 AND k.revoked_at IS NULL",
                [cid],
                |r| {
                    Ok(WebhookTarget {
                        url: r.get(0)?,
                        key_id: r.get(1)?,
                        secret: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Revoke a key; it stops working for every new join at once.
    pub fn revoke_key(&self, key_id: &str) -> Result<KeyInfo, StoreError> {
        let changed = self.with(|c| {
            c.execute(
                "UPDATE keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
                params![key_id, now()],
            )
        })?;
        match self.key(key_id)? {
            Some(k) if changed == 1 || k.info.revoked_at.is_some() => Ok(k.info),
            _ => Err(StoreError::NoSuchKey(key_id.to_owned())),
        }
    }
}

fn recording_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Recording> {
    let kinds: String = r.get(6)?;
    Ok(Recording {
        id: Some(r.get(0)?),
        cid: r.get(1)?,
        sid: r.get(2)?,
        session_started_at: r.get(3)?,
        uid: r.get(4)?,
        feed_id: r.get(5)?,
        kinds: kinds
            .split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        path: r.get(7)?,
        started_at: r.get(8)?,
        finished_at: r.get(9)?,
        duration_ms: r.get::<_, i64>(10)? as u64,
        bytes: r.get::<_, i64>(11)? as u64,
        error: r.get(12)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("webrtcai-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("accounts.db")
    }

    #[test]
    fn resume_tokens_are_kept_by_hash_taken_once_and_expire() {
        let path = temp("resume");
        let token = |t: &str, uid: &str| ResumeToken {
            token_hash: ResumeToken::hash(t),
            sid: "c-1/room".into(),
            uid: uid.into(),
        };
        {
            let store = Store::open(&path).unwrap();
            store
                .save_resume_tokens(&[token("r-a", "alice"), token("r-b", "bob")], 1_000)
                .unwrap();
            store
                .save_resume_tokens(&[token("r-c", "carol")], 10)
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let mut got = store.take_resume_tokens(500).unwrap();
        got.sort_by(|a, b| a.uid.cmp(&b.uid));
        assert_eq!(got, [token("r-a", "alice"), token("r-b", "bob")]);
        assert_ne!(got[0].token_hash, "r-a");
        assert_eq!(got[0].token_hash.len(), 64);
        // Taken once: the next start finds none, and the expired one went too.
        assert!(store.take_resume_tokens(0).unwrap().is_empty());
    }

    #[test]
    fn clients_keys_and_revocation_survive_reopening() {
        let path = temp("roundtrip");
        let (cid, key_id, secret) = {
            let s = Store::open(&path).unwrap();
            let c = s.create_client("Acme").unwrap();
            let k = s
                .create_key(
                    &c.cid,
                    &["app.example.com".into(), "*.example.org".into()],
                    true,
                )
                .unwrap();
            assert!(format!("{k:?}").contains("<hidden>") && !format!("{k:?}").contains(&k.secret));
            (c.cid, k.info.key_id, k.secret)
        };
        let s = Store::open(&path).unwrap();
        assert_eq!(s.clients().unwrap()[0].name, "Acme");
        let k = s.key(&key_id).unwrap().unwrap();
        assert_eq!(k.secret, secret);
        assert_eq!(k.info.domains, vec!["app.example.com", "*.example.org"]);
        assert!(k.info.recording);
        let listed = s.keys(Some(&cid)).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(!serde_json::to_string(&listed).unwrap().contains(&secret));
        assert!(s.revoke_key(&key_id).unwrap().revoked_at.is_some());
        assert!(s.key(&key_id).unwrap().unwrap().info.revoked_at.is_some());
        assert!(matches!(
            s.revoke_key("wk_nope"),
            Err(StoreError::NoSuchKey(_))
        ));
        assert!(matches!(
            s.create_key("c-nope", &[], false),
            Err(StoreError::NoSuchClient(_))
        ));
    }

    #[test]
    fn unusable_files_are_clear_errors() {
        let corrupt = temp("corrupt");
        std::fs::write(&corrupt, vec![0x42; 8192]).unwrap();
        let e = Store::open(&corrupt).err().unwrap();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");

        let missing_dir = temp("missing")
            .parent()
            .unwrap()
            .join("no/such/dir/accounts.db");
        let e = Store::open(&missing_dir).err().unwrap();
        assert!(matches!(e, StoreError::Open { .. }), "{e}");

        // Held open with an exclusive lock by another connection.
        let locked = temp("locked");
        Store::open(&locked).unwrap();
        let holder = Connection::open(&locked).unwrap();
        holder
            .execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;")
            .unwrap();
        let e = Store::open(&locked).err().unwrap();
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    }
}
