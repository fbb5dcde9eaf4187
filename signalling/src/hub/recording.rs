//! A session's recording: one WebM file per published feed (its video and its audio), started
//! and stopped by a participant with the `record` grant or by the admin API, announced to
//! everyone in the session, and listed and metered when each file is finished.
//!
//! The relay writes the files. Its calls to start and stop one run on tasks of their own, not
//! as the session's jobs: they never change what the session's other requests see of the
//! relay, and their results come back as [`Input::Recording`]. Each file's outcome comes
//! later as the relay's `RecordingFinished` event, which may arrive after the session ended;
//! what it is listed and metered under is kept until then.

use std::collections::HashMap;

use relay::control::RecordedFile;
use relay::ids::{FeedId, Sid};
use relay::{ControlError, RecordingRequest};

use crate::protocol::Event;
use crate::store::{Recording, UsageDelta};
use serde_json::json;
use tokio::sync::oneshot;

use super::*;

/// A session's recording while it runs.
pub(super) struct RoomRecording {
    /// Unix seconds; names its files.
    started_at: i64,
    /// Who started it.
    by: String,
    /// Still checking its directory: not announced yet.
    starting: bool,
    /// Each recorded feed's file on the relay (None while its start is on its way).
    files: HashMap<String, Option<u64>>,
}

/// What a file is listed and metered under, kept until the relay says it is finished.
pub(super) struct FileMeta {
    cid: String,
    public_sid: String,
    session_started_at: i64,
    uid: String,
    feed_id: String,
    kinds: Vec<String>,
    started_at: i64,
    /// The session's key in the hub, to stop its recording if a file fails.
    sid: String,
    recording_started_at: i64,
}

/// A feed and its file's start on the relay (its recording id).
pub type FileStart = (String, Result<u64, ControlError>);

/// What the admin API's answer is.
pub type AdminReply = Result<serde_json::Value, (ErrorCode, String)>;

/// An admin request to start or stop a session's recording.
#[derive(Debug)]
pub struct AdminRecord {
    /// The client.
    pub cid: String,
    /// The session, as the client names it.
    pub sid: String,
    /// Start (true) or stop.
    pub enable: bool,
    /// Where the answer goes.
    pub reply: oneshot::Sender<AdminReply>,
}

/// Who waits for a recording's start.
#[derive(Debug)]
pub enum Replier {
    /// A participant's request.
    Conn(ConnId, u64),
    /// The admin API.
    Admin(oneshot::Sender<AdminReply>),
}

/// A recording call's result, back on the hub.
#[derive(Debug)]
pub enum RecordingDone {
    /// A session's recording checked its directory and started its feeds' files.
    Started {
        /// The session.
        sid: String,
        /// Who waits for the answer.
        reply: Replier,
        /// The directory's check, then each feed's file.
        result: Result<Vec<FileStart>, ControlError>,
    },
    /// One feed's file started (a feed published while the session records).
    FeedStarted {
        /// The session.
        sid: String,
        /// The feed.
        feed_id: String,
        /// The relay's recording id for its file.
        result: Result<u64, ControlError>,
    },
}

pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Hub {
    /// Start recording session `sid` for `by` (a uid, or `admin`); `reply` is answered once
    /// the recording's directory was found writable with room, or with why not.
    pub(super) fn start_recording(&mut self, sid: &str, by: &str, reply: Replier) {
        let Some(room) = self.rooms.get_mut(sid) else {
            return self.answer_recording(
                reply,
                Err((ErrorCode::NotJoined, format!("no session {sid}"))),
            );
        };
        if room.e2ee {
            return self.answer_recording(
                reply,
                Err((
                    ErrorCode::Forbidden,
                    "this session is end-to-end encrypted: the server cannot decode its media,                      so it cannot record it"
                        .into(),
                )),
            );
        }
        if let Some(r) = &room.recording {
            let started_at = r.started_at;
            return self.answer_recording(
                reply,
                Ok(Some(json!({ "recording": true, "started_at": started_at }))),
            );
        }
        if !self.relay.records() {
            return self.answer_recording(
                reply,
                Err((
                    ErrorCode::RecordingUnavailable,
                    "recording is permitted but this server was started without a recordings \
                     directory"
                        .into(),
                )),
            );
        }
        let started_at = unix_now();
        let dir = format!("{}/{}", safe_name(&room.cid), safe_name(&room.public_sid));
        let mut files = HashMap::new();
        let mut requests = Vec::new();
        for (feed_id, feed) in room.feeds.iter().filter(|(_, f)| f.published) {
            files.insert(feed_id.clone(), None);
            requests.push((
                feed_id.clone(),
                file_request(room, started_at, feed_id, feed),
            ));
        }
        room.recording = Some(RoomRecording {
            started_at,
            by: by.to_owned(),
            starting: true,
            files,
        });
        let relay = self.relay.clone();
        let inputs = self.inputs.clone();
        let (rsid, sid) = (Sid::from(sid), sid.to_owned());
        tokio::spawn(async move {
            let result = match relay.run(relay::Request::PrepareRecordings { dir }).await {
                Err(e) => Err(e),
                Ok(()) => {
                    let mut started = Vec::new();
                    for (feed_id, request) in requests {
                        started.push((feed_id, relay.start_recording(rsid.clone(), request).await));
                    }
                    Ok(started)
                }
            };
            let done = RecordingDone::Started { sid, reply, result };
            let _ = inputs.send(Input::Recording(done)).await;
        });
    }

    /// Stop recording session `sid` (`by` a uid or `admin`, or None with the `reason` it
    /// stopped on its own); everyone is told.
    pub(super) fn stop_recording(&mut self, sid: &str, by: Option<&str>, reason: Option<String>) {
        let Some(recording) = self.rooms.get_mut(sid).and_then(|r| r.recording.take()) else {
            return;
        };
        for id in recording.files.into_values().flatten() {
            self.stop_file(sid, id);
        }
        if !recording.starting {
            self.broadcast(
                sid,
                "",
                Event::RecordingStopped {
                    by: by.map(str::to_owned),
                    reason,
                },
            );
        }
    }

    /// Whether `sid` is being recorded, and since when (for who joins).
    pub(super) fn recording_since(&self, sid: &str) -> Option<(String, i64)> {
        let r = self.rooms.get(sid)?.recording.as_ref()?;
        (!r.starting).then(|| (r.by.clone(), r.started_at))
    }

    /// A feed was published: record it too, if the session records.
    pub(super) fn record_feed(&mut self, sid: &str, feed_id: &str) {
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        let Some(started_at) = room.recording.as_ref().map(|r| r.started_at) else {
            return;
        };
        let Some(feed) = room.feeds.get(feed_id) else {
            return;
        };
        let request = file_request(room, started_at, feed_id, feed);
        let recording = room.recording.as_mut().expect("checked above");
        if recording.files.contains_key(feed_id) {
            return;
        }
        recording.files.insert(feed_id.to_owned(), None);
        let relay = self.relay.clone();
        let inputs = self.inputs.clone();
        let (rsid, sid, feed_id) = (Sid::from(sid), sid.to_owned(), feed_id.to_owned());
        tokio::spawn(async move {
            let result = relay.start_recording(rsid.clone(), request).await;
            let done = RecordingDone::FeedStarted {
                sid,
                feed_id,
                result,
            };
            let _ = inputs.send(Input::Recording(done)).await;
        });
    }

    /// A feed goes: its file is finished.
    pub(super) fn unrecord_feed(&mut self, sid: &str, feed_id: &str) {
        let id = self
            .rooms
            .get_mut(sid)
            .and_then(|r| r.recording.as_mut())
            .and_then(|r| r.files.remove(feed_id))
            .flatten();
        if let Some(id) = id {
            self.stop_file(sid, id);
        }
    }

    fn stop_file(&self, sid: &str, id: u64) {
        let relay = self.relay.clone();
        let rsid = Sid::from(sid);
        tokio::spawn(async move {
            if let Err(e) = relay.stop_recording(rsid.clone(), id).await {
                tracing::warn!(recording = id, "stopping a recording: {e}");
            }
        });
    }

    fn answer_recording(
        &mut self,
        to: Replier,
        result: Result<Option<serde_json::Value>, (ErrorCode, String)>,
    ) {
        match to {
            Replier::Conn(conn, id) => self.reply(conn, id, result),
            Replier::Admin(tx) => {
                let _ = tx.send(result.map(|v| v.unwrap_or_else(|| json!({}))));
            }
        }
    }

    /// The admin API starts or stops a session's recording: allowed where a participant
    /// joined with a key that allows recording.
    pub(super) fn admin_record(&mut self, r: AdminRecord) {
        let sid = format!("{}/{}", r.cid, r.sid);
        let Some(room) = self.rooms.get(&sid) else {
            let _ = r.reply.send(Err((
                ErrorCode::NotJoined,
                format!("no session {} of client {} is running", r.sid, r.cid),
            )));
            return;
        };
        if !r.enable {
            self.stop_recording(&sid, Some("admin"), None);
            let _ = r.reply.send(Ok(json!({ "recording": false })));
            return;
        }
        if !room.peers.values().any(|p| p.key_records) {
            let _ = r.reply.send(Err((
                ErrorCode::Forbidden,
                "recording is not permitted: no participant joined with a key that allows \
                 recording"
                    .into(),
            )));
            return;
        }
        self.start_recording(&sid, "admin", Replier::Admin(r.reply));
    }

    /// The server stops: every session's recording stops, and `done` is answered once every
    /// file is finished (at once where none is being written).
    pub(super) fn finish_recordings(&mut self, done: oneshot::Sender<()>) {
        let recording: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.recording.is_some())
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in recording {
            self.stop_recording(&sid, None, Some("the server is shutting down".into()));
        }
        if self.recorded_files.is_empty() {
            let _ = done.send(());
        } else {
            self.finishing.push(done);
        }
    }

    pub(super) fn recording_done(&mut self, done: RecordingDone) {
        match done {
            RecordingDone::Started { sid, reply, result } => {
                let started = match result {
                    Ok(started) => started,
                    Err(e) => {
                        if let Some(room) = self.rooms.get_mut(&sid) {
                            room.recording = None;
                        }
                        let code = match e {
                            ControlError::RecordingUnavailable => ErrorCode::RecordingUnavailable,
                            _ => ErrorCode::RecordingFailed,
                        };
                        self.answer_recording(reply, Err((code, e.to_string())));
                        return;
                    }
                };
                for (feed_id, result) in started {
                    self.file_started(&sid, &feed_id, result);
                }
                let Some(r) = self.rooms.get_mut(&sid).and_then(|r| r.recording.as_mut()) else {
                    return; // the session ended meanwhile; its files were stopped
                };
                r.starting = false;
                let (by, started_at) = (r.by.clone(), r.started_at);
                self.broadcast(&sid, "", Event::RecordingStarted { by, started_at });
                self.answer_recording(
                    reply,
                    Ok(Some(json!({ "recording": true, "started_at": started_at }))),
                );
            }
            RecordingDone::FeedStarted {
                sid,
                feed_id,
                result,
            } => self.file_started(&sid, &feed_id, result),
        }
    }

    /// A feed's file started on the relay (or could not).
    fn file_started(&mut self, sid: &str, feed_id: &str, result: Result<u64, ControlError>) {
        let id = match result {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(%sid, %feed_id, "a feed's recording did not start: {e}");
                if let Some(r) = self.rooms.get_mut(sid).and_then(|r| r.recording.as_mut()) {
                    r.files.remove(feed_id);
                }
                if matches!(e, ControlError::RecordingFailed { .. }) {
                    self.stop_recording(sid, None, Some(e.to_string()));
                }
                return;
            }
        };
        let Some(room) = self.rooms.get_mut(sid) else {
            self.stop_file(sid, id);
            return;
        };
        let (Some(recording), Some(feed)) = (room.recording.as_mut(), room.feeds.get(feed_id))
        else {
            self.stop_file(sid, id);
            return;
        };
        match recording.files.get_mut(feed_id) {
            Some(slot @ None) => *slot = Some(id),
            // Stopped (or started again) while this one was on its way.
            _ => {
                self.stop_file(sid, id);
                return;
            }
        }
        self.recorded_files.insert(
            id,
            FileMeta {
                cid: room.cid.clone(),
                public_sid: room.public_sid.clone(),
                session_started_at: room.started_at,
                uid: feed.owner.clone(),
                feed_id: feed_id.to_owned(),
                kinds: feed
                    .tracks
                    .iter()
                    .map(|t| t.kind.as_str().to_owned())
                    .collect(),
                started_at: unix_now(),
                sid: sid.to_owned(),
                recording_started_at: recording.started_at,
            },
        );
    }

    /// The relay finished a file: it is listed and its minutes metered. A file that failed
    /// (a full disk) stops the session's recording, and everyone is told why.
    pub(super) fn file_finished(&mut self, recording: u64, file: RecordedFile) {
        let Some(meta) = self.recorded_files.remove(&recording) else {
            return;
        };
        if self.recorded_files.is_empty() {
            for done in self.finishing.drain(..) {
                let _ = done.send(());
            }
        }
        tracing::info!(
            path = %file.path,
            duration_ms = file.duration_ms,
            bytes = file.bytes,
            frames_lost = file.frames_lost,
            dropped = file.dropped,
            error = ?file.error,
            "recording finished"
        );
        let RecordedFile {
            path,
            duration_ms,
            bytes,
            error,
            ..
        } = file;
        let written = duration_ms > 0;
        self.webhooks.notify(
            &meta.cid,
            "recording_finished",
            serde_json::json!({
                "session": { "sid": meta.public_sid, "started_at": meta.session_started_at },
                "recording": {
                    "uid": meta.uid,
                    "feed_id": meta.feed_id,
                    "kinds": meta.kinds,
                    "path": path,
                    "started_at": meta.started_at,
                    "duration_ms": duration_ms,
                    "bytes": bytes,
                    "error": error,
                },
            }),
        );
        if written {
            self.accounts.add_usage(crate::accounts::UsageRecord {
                cid: meta.cid.clone(),
                sid: meta.public_sid.clone(),
                started_at: meta.session_started_at,
                delta: UsageDelta {
                    recording_seconds: duration_ms as f64 / 1000.0,
                    ..Default::default()
                },
                peak: 0,
                ended_at: None,
            });
            self.accounts.add_recording(Recording {
                id: None,
                cid: meta.cid,
                sid: meta.public_sid,
                session_started_at: meta.session_started_at,
                uid: meta.uid,
                feed_id: meta.feed_id,
                kinds: meta.kinds,
                path,
                started_at: meta.started_at,
                finished_at: unix_now(),
                duration_ms,
                bytes,
                error: error.clone(),
            });
        }
        // A file that failed while it was written: the others will too.
        if let (Some(e), true) = (error, written) {
            let same = self
                .rooms
                .get(&meta.sid)
                .and_then(|r| r.recording.as_ref())
                .is_some_and(|r| r.started_at == meta.recording_started_at);
            if same {
                self.stop_recording(&meta.sid, None, Some(e));
            }
        }
    }
}

/// The relay's request for feed `feed_id`'s file.
fn file_request(room: &Room, started_at: i64, feed_id: &str, feed: &Feed) -> RecordingRequest {
    let track = |kind| {
        feed.tracks
            .iter()
            .any(|t| t.kind == kind)
            .then(|| relay_feed(feed_id, kind))
    };
    let video: Option<FeedId> = track(Kind::Video);
    let audio: Option<FeedId> = track(Kind::Audio);
    RecordingRequest {
        path: format!(
            "{}/{}/{started_at}-{}-{}.webm",
            safe_name(&room.cid),
            safe_name(&room.public_sid),
            safe_name(&feed.owner),
            safe_name(feed_id),
        ),
        video,
        audio,
    }
}

/// A name as part of a path: what is not a letter, a digit, `-` or `_` becomes `_` (a
/// session's name is the customer's, and may hold `/` or `..`).
fn safe_name(uid: &str) -> String {
    uid.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
