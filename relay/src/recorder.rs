//! Recording through the control handle: where a recording's file goes, and starting and
//! stopping it on the cores that own its feeds.
//!
//! A recording is one file of one publisher's feeds (its video and its audio). Starting one
//! creates the file at once, so that an unwritable directory or a full disk is the start's
//! error, then sets a tap on each feed's own core ([`crate::sfu::feed::record_tap`]); a
//! video feed is asked for a keyframe there. The file's outcome comes later as
//! [`Event::RecordingFinished`](crate::Event::RecordingFinished).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::control::MediaKind;
use crate::error::ControlError;
use crate::ids::{FeedId, Sid};
use crate::record::timeline::Track;
use crate::record::writer::{Control, KeyframeTarget, Open};
use crate::RelayHandle;

/// Free space a recording needs to start: a few minutes of 720p video.
pub const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// What to record into one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRequest {
    /// The file, relative to the recordings directory (`<cid>/<sid>/<name>.webm`).
    pub path: String,
    /// The video feed, if any.
    pub video: Option<FeedId>,
    /// The audio feed, if any.
    pub audio: Option<FeedId>,
}

struct Active {
    sid: Sid,
    /// Each recorded feed, the core it is published on, and its track.
    taps: Vec<(usize, FeedId, Track)>,
}

/// The control plane's side of the recorder.
pub(crate) struct RecorderLink {
    dir: PathBuf,
    control: Sender<Control>,
    next: AtomicU64,
    active: Mutex<HashMap<u64, Active>>,
}

impl RecorderLink {
    pub(crate) fn new(dir: PathBuf, control: Sender<Control>) -> Self {
        RecorderLink {
            dir,
            control,
            next: AtomicU64::new(1),
            active: Mutex::new(HashMap::new()),
        }
    }

    /// Hold the recorder's thread for `duration` (tests of a slow disk).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn stall(&self, duration: std::time::Duration) {
        let _ = self.control.send(Control::Stall(duration));
    }

    /// Finish every file and end the recorder's thread.
    pub(crate) fn shutdown(&self) {
        let _ = self.control.send(Control::Shutdown);
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Active>> {
        // Each change is one insert or remove: a poisoned lock is still consistent.
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RelayHandle {
    /// Where recordings are written, if the relay records.
    pub fn recordings_dir(&self) -> Option<&Path> {
        self.inner.recorder.as_ref().map(|r| r.dir.as_path())
    }

    /// Check that recordings can go into `relative_dir` under the recordings directory (it is
    /// created, can be written, and has [`MIN_FREE_BYTES`] free): a session's recording
    /// checks before it tells anyone it records.
    pub fn prepare_recordings(&self, relative_dir: &str) -> Result<(), ControlError> {
        let recorder = self
            .inner
            .recorder
            .as_ref()
            .ok_or(ControlError::RecordingUnavailable)?;
        let relative = Path::new(relative_dir);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(ControlError::InvalidRecording {
                reason: "the directory must be relative, within the recordings directory".into(),
            });
        }
        prepare(&recorder.dir.join(relative))
    }

    /// Start recording a publisher's feeds into `request.path` under the recordings
    /// directory; returns the recording's id. The file is created now; its frames start at
    /// the video's next keyframe, which is asked for.
    pub async fn start_recording(
        &self,
        sid: &Sid,
        request: RecordingRequest,
    ) -> Result<u64, ControlError> {
        let recorder = self
            .inner
            .recorder
            .as_ref()
            .ok_or(ControlError::RecordingUnavailable)?;
        let invalid = |reason: &str| ControlError::InvalidRecording {
            reason: reason.into(),
        };
        let relative = Path::new(&request.path);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
            || relative.extension().is_none_or(|e| e != "webm")
        {
            return Err(invalid(
                "the path must be relative, within the directory, and end in .webm",
            ));
        }
        if request.video.is_none() && request.audio.is_none() {
            return Err(invalid("nothing to record: no video and no audio feed"));
        }
        let layout = self.layout(sid)?;
        let mut taps = Vec::new();
        for (feed_id, kind, track) in [
            (&request.video, MediaKind::Video, Track::Video),
            (&request.audio, MediaKind::Audio, Track::Audio),
        ] {
            let Some(feed_id) = feed_id else { continue };
            let feed = layout
                .feeds
                .get(feed_id)
                .ok_or_else(|| ControlError::NoSuchFeed {
                    sid: sid.clone(),
                    feed_id: feed_id.clone(),
                })?;
            if feed.description.kind != kind {
                return Err(invalid(&format!("feed {feed_id} is not {kind:?}")));
            }
            taps.push((feed.route.core, feed_id.clone(), track));
        }
        let full_path = recorder.dir.join(relative);
        let file = create(&full_path)?;
        let recording = recorder.next.fetch_add(1, Ordering::Relaxed);
        let video = taps
            .iter()
            .find(|(_, _, t)| *t == Track::Video)
            .map(|(core, feed_id, _)| KeyframeTarget {
                core: *core,
                sid: sid.clone(),
                feed_id: feed_id.clone(),
            });
        let open = Open {
            recording,
            sid: sid.clone(),
            path: request.path.clone(),
            full_path,
            file,
            video,
            audio: request.audio.is_some(),
        };
        recorder
            .control
            .send(Control::Open(Box::new(open)))
            .map_err(|_| ControlError::RecordingUnavailable)?;
        recorder.active().insert(
            recording,
            Active {
                sid: sid.clone(),
                taps: Vec::new(),
            },
        );
        for (core, feed_id, track) in taps {
            let set = self
                .run(core, |reply| Command::SetRecordTap {
                    sid: sid.clone(),
                    feed_id: feed_id.clone(),
                    tap: Some((recording, track)),
                    reply,
                })
                .await;
            if let Some(a) = recorder.active().get_mut(&recording) {
                a.taps.push((core, feed_id, track));
            }
            if let Err(e) = set {
                let _ = self.stop_recording(sid, recording).await;
                return Err(e);
            }
        }
        Ok(recording)
    }

    /// Stop recording `recording`: its file gets what is on its way, its cues and its
    /// duration ([`crate::Event::RecordingFinished`] follows).
    pub async fn stop_recording(&self, sid: &Sid, recording: u64) -> Result<(), ControlError> {
        let recorder = self
            .inner
            .recorder
            .as_ref()
            .ok_or(ControlError::RecordingUnavailable)?;
        let active = {
            let mut all = recorder.active();
            match all.get(&recording) {
                Some(a) if &a.sid == sid => all.remove(&recording),
                _ => None,
            }
        };
        let active = active.ok_or_else(|| ControlError::NoSuchRecording {
            sid: sid.clone(),
            recording,
        })?;
        let mut handed = [0; 2];
        for (core, feed_id, track) in active.taps {
            // A feed unpublished meanwhile has no tap left to clear.
            if let Ok(n) = self
                .run(core, |reply| Command::SetRecordTap {
                    sid: sid.clone(),
                    feed_id,
                    tap: None,
                    reply,
                })
                .await
            {
                handed[track as usize] = n;
            }
        }
        let _ = recorder.control.send(Control::Close { recording, handed });
        Ok(())
    }
}

/// Create a recording's file (and its directory), where there is room for it.
fn create(path: &Path) -> Result<File, ControlError> {
    prepare(path.parent().unwrap_or(Path::new(".")))?;
    File::create(path).map_err(|e| ControlError::RecordingFailed {
        reason: format!("cannot create {}: {e}", path.display()),
    })
}

/// Create directory `dir` if needed, and check that it can be written and has room.
fn prepare(dir: &Path) -> Result<(), ControlError> {
    let failed = |reason: String| ControlError::RecordingFailed { reason };
    std::fs::create_dir_all(dir)
        .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| {
        failed(format!(
            "cannot read the free space of {}: {e}",
            dir.display()
        ))
    })?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if free < MIN_FREE_BYTES {
        return Err(failed(format!(
            "the disk is full: {} MiB free under {} (a recording needs {} MiB)",
            free / (1024 * 1024),
            dir.display(),
            MIN_FREE_BYTES / (1024 * 1024)
        )));
    }
    // Permissions say little to a process that may run as root: try.
    let probe = dir.join(".webrtcai-write-check");
    File::create(&probe).map_err(|e| failed(format!("cannot write in {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
