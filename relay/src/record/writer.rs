//! The recorder's thread: it takes the packets the cores hand it, makes them into frames and
//! writes each recording's file.
//!
//! Cores never wait for it. They hand packets through one bounded queue and drop what does
//! not fit (a slow or full disk), which costs the recording frames until the next keyframe
//! and its subscribers nothing; the recorder counts the gaps and reports them
//! ([`Event::RecordingDropped`]). Opening and closing come through a second, unbounded queue
//! from the control plane, so that a full packet queue never loses one.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::{mpsc, oneshot, Notify};

use super::file::{FeedFile, VideoCodec, VideoFormat};
use super::frames::Codec;
use super::recording::{FeedRecording, RecordPacket};
use super::timeline::{TimedFrame, Track};
use crate::command::Command;
use crate::control::{Event, RecordedFile};
use crate::ids::{FeedId, Sid};

/// Packets queued for the recorder at most by default ([`crate::RelayConfig::record_queue`]):
/// a few seconds of a few dozen recorded feeds.
pub const QUEUE: usize = 16_384;

/// A file holding audio waits this long for its video's first keyframe (whose size its video
/// track needs) before it is written without video: the audio it holds meanwhile is small
/// (Opus at 32 kbit/s: 240 KiB a minute), and under loss a keyframe can take seconds to come
/// whole (it took more than 5 s behind 5% loss on a busy machine).
pub const VIDEO_WAIT: Duration = Duration::from_secs(60);

/// Keyframe requests for one recording, at most one per this.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// Reports of dropped packets, at most one per recording per this.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Where a recording's keyframe requests go: the core that owns its video feed.
#[derive(Debug, Clone)]
pub(crate) struct KeyframeTarget {
    pub(crate) core: usize,
    pub(crate) sid: Sid,
    pub(crate) feed_id: FeedId,
}

/// A recording to start writing.
#[derive(Debug)]
pub(crate) struct Open {
    pub(crate) recording: u64,
    pub(crate) sid: Sid,
    /// As reported: relative to the recordings directory.
    pub(crate) path: String,
    /// Where it is on disk.
    pub(crate) full_path: PathBuf,
    /// Created already (an error there is the start's error).
    pub(crate) file: File,
    pub(crate) video: Option<KeyframeTarget>,
    pub(crate) audio: bool,
}

/// What the control plane tells the recorder.
#[derive(Debug)]
pub(crate) enum Control {
    Open(Box<Open>),
    /// Stop: write what is held, the cues and the duration. `handed`: how many packets of
    /// each track the cores handed over in all (what the queue dropped at the end shows
    /// only here).
    Close {
        recording: u64,
        handed: [u64; 2],
    },
    /// Close every file and end the thread (the relay stops).
    Shutdown,
    /// Sleep, as a disk that stops answering would hold the thread (tests).
    #[cfg(feature = "fault-injection")]
    Stall(Duration),
}

/// The recorder as the rest of the relay reaches it.
pub(crate) struct Recorder {
    pub(crate) control: Sender<Control>,
    pub(crate) thread: JoinHandle<()>,
}

/// A core's way to a core, for keyframe requests.
pub(crate) type CoreDoor = (Sender<Command>, Arc<Notify>);

/// Start the recorder's thread, which takes the cores' packets from `packets`.
pub(crate) fn spawn(
    packets: Receiver<RecordPacket>,
    cores: Vec<CoreDoor>,
    events: mpsc::Sender<Event>,
) -> std::io::Result<Recorder> {
    let (control_tx, control) = crossbeam_channel::unbounded();
    let writer = Writer {
        packets,
        control,
        cores,
        events,
        files: HashMap::new(),
        deadline: None,
        last_all: Instant::now(),
    };
    let thread = std::thread::Builder::new()
        .name("relay-recorder".into())
        .spawn(move || writer.run())?;
    Ok(Recorder {
        control: control_tx,
        thread,
    })
}

struct Writing {
    sid: Sid,
    path: String,
    full_path: PathBuf,
    recording: FeedRecording,
    /// The created file until the muxer takes it.
    raw: Option<File>,
    file: Option<FeedFile>,
    /// Frames before the file could be started (its video track needs the first keyframe's
    /// size).
    pending: Vec<TimedFrame>,
    opened: Instant,
    video: Option<KeyframeTarget>,
    audio: bool,
    /// Whether the file has a video track (decided when it starts).
    has_video: bool,
    last_keyframe_request: Option<Instant>,
    dropped_reported: u64,
    last_drop_report: Option<Instant>,
    frames_skipped: u64,
}

struct Writer {
    packets: Receiver<RecordPacket>,
    control: Receiver<Control>,
    cores: Vec<CoreDoor>,
    events: mpsc::Sender<Event>,
    files: HashMap<u64, Writing>,
    /// When a file is due next (a frame to give up, frames to place).
    deadline: Option<Instant>,
    /// When every file was last looked at (some of what is due has no deadline: a file that
    /// waits for its video's first keyframe).
    last_all: Instant,
}

impl Writer {
    fn run(mut self) {
        loop {
            // Files are looked at all together only when one of them is due (or a second
            // passed); a packet makes only its own file's frames.
            let wait = self
                .deadline
                .map_or(Duration::from_secs(1), |at| {
                    at.saturating_duration_since(Instant::now())
                })
                .min(Duration::from_secs(1));
            crossbeam_channel::select! {
                recv(self.control) -> m => match m {
                    Ok(m) => {
                        if !self.handle_control(m) {
                            return;
                        }
                    }
                    Err(_) => {
                        self.shutdown();
                        return;
                    }
                },
                recv(self.packets) -> p => {
                    if let Ok(p) = p {
                        self.handle_packet(p);
                    }
                    // A steady flow of packets must not hold the others' deadlines up.
                    let now = Instant::now();
                    let due = self.deadline.is_some_and(|at| now >= at)
                        || now >= self.last_all + Duration::from_secs(1);
                    if !due {
                        continue;
                    }
                }
                default(wait) => {}
            }
            self.service_all(Instant::now());
        }
    }

    /// False when the thread ends.
    fn handle_control(&mut self, m: Control) -> bool {
        match m {
            Control::Open(o) => self.open(*o),
            Control::Close { recording, handed } => {
                // What the cores handed before they stopped is in the packet queue.
                self.drain_packets();
                if let Some(w) = self.files.get_mut(&recording) {
                    w.recording.handle_handed(handed);
                }
                self.close(recording, Instant::now());
            }
            Control::Shutdown => {
                self.shutdown();
                return false;
            }
            #[cfg(feature = "fault-injection")]
            Control::Stall(d) => std::thread::sleep(d),
        }
        true
    }

    fn shutdown(&mut self) {
        self.drain_packets();
        let now = Instant::now();
        let all: Vec<u64> = self.files.keys().copied().collect();
        for id in all {
            self.close(id, now);
        }
    }

    fn drain_packets(&mut self) {
        while let Ok(p) = self.packets.try_recv() {
            self.handle_packet(p);
        }
    }

    fn open(&mut self, o: Open) {
        let now = Instant::now();
        if let Some(target) = &o.video {
            self.request_keyframe(target);
        }
        self.files.insert(
            o.recording,
            Writing {
                sid: o.sid,
                path: o.path,
                full_path: o.full_path,
                recording: FeedRecording::new(now, o.video.is_some(), o.audio),
                raw: Some(o.file),
                file: None,
                pending: Vec::new(),
                opened: now,
                last_keyframe_request: o.video.as_ref().map(|_| now),
                video: o.video,
                audio: o.audio,
                has_video: false,
                dropped_reported: 0,
                last_drop_report: None,
                frames_skipped: 0,
            },
        );
    }

    fn handle_packet(&mut self, p: RecordPacket) {
        if !self.files.contains_key(&p.recording) {
            // Its opening may still be in the other queue.
            while let Ok(m) = self.control.try_recv() {
                if !self.handle_control(m) {
                    return;
                }
            }
        }
        let id = p.recording;
        let Some(w) = self.files.get_mut(&id) else {
            return; // closed already
        };
        w.recording.handle_packet(p);
        self.service(id, Instant::now());
    }

    /// Every file: what is due, and when to look again.
    fn service_all(&mut self, now: Instant) {
        self.deadline = None;
        self.last_all = now;
        let ids: Vec<u64> = self.files.keys().copied().collect();
        for id in ids {
            self.service(id, now);
        }
    }

    /// File `id`: write what is ready, ask for a keyframe where it waits for one, report
    /// what the queue dropped.
    fn service(&mut self, id: u64, now: Instant) {
        let Some(w) = self.files.get_mut(&id) else {
            return;
        };
        if let Err(e) = step(w, now) {
            self.fail(id, e);
            return;
        }
        let mut keyframe = None;
        if w.recording.poll_keyframe_request()
            && w.last_keyframe_request
                .is_none_or(|at| now >= at + KEYFRAME_INTERVAL)
        {
            if let Some(target) = &w.video {
                w.last_keyframe_request = Some(now);
                keyframe = Some(target.clone());
            }
        }
        let dropped = w.recording.dropped;
        if dropped > w.dropped_reported
            && w.last_drop_report
                .is_none_or(|at| now >= at + DROP_REPORT_INTERVAL)
        {
            let _ = self.events.try_send(Event::RecordingDropped {
                sid: w.sid.clone(),
                recording: id,
                packets: dropped - w.dropped_reported,
            });
            w.dropped_reported = dropped;
            w.last_drop_report = Some(now);
        }
        let due = w.recording.poll_timeout();
        if let Some(at) = due {
            self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
        }
        if let Some(target) = keyframe {
            self.request_keyframe(&target);
        }
    }

    fn request_keyframe(&self, target: &KeyframeTarget) {
        let Some((commands, notify)) = self.cores.get(target.core) else {
            return;
        };
        // Nobody waits for the answer.
        let (reply, _) = oneshot::channel();
        let sent = commands.send(Command::RequestKeyframe {
            sid: target.sid.clone(),
            feed_id: target.feed_id.clone(),
            reply,
        });
        if sent.is_ok() {
            notify.notify_one();
        }
    }

    /// A write failed (a full disk, the file gone): the file is closed with what it has.
    fn fail(&mut self, id: u64, error: String) {
        if let Some(w) = self.files.remove(&id) {
            tracing::warn!(recording = id, path = %w.path, %error, "recording failed");
            self.finish(id, w, Some(error));
        }
    }

    fn close(&mut self, id: u64, now: Instant) {
        let Some(mut w) = self.files.remove(&id) else {
            return;
        };
        let rest = w.recording.finish(now);
        let mut error = None;
        for f in rest {
            if let Err(e) = write(&mut w, f) {
                error = Some(e);
                break;
            }
        }
        if error.is_none() && w.file.is_none() && !w.pending.is_empty() {
            error = start_file(&mut w).err();
            if error.is_none() {
                error = write_pending(&mut w).err();
            }
        }
        self.finish(id, w, error);
    }

    fn finish(&mut self, id: u64, mut w: Writing, mut error: Option<String>) {
        let duration_ms = if w.file.is_some() {
            w.recording.end_ns() / 1_000_000 + FRAME_MS
        } else {
            0
        };
        match w.file.take() {
            Some(file) => {
                if let Err(e) = file.finish(duration_ms) {
                    error.get_or_insert(e.to_string());
                }
            }
            None => {
                // Nothing came: no empty file is left behind.
                drop(w.raw.take());
                let _ = std::fs::remove_file(&w.full_path);
                error.get_or_insert_with(|| "no media arrived while recording".into());
            }
        }
        let bytes = std::fs::metadata(&w.full_path).map_or(0, |m| m.len());
        let _ = self.events.try_send(Event::RecordingFinished {
            sid: w.sid,
            recording: id,
            file: RecordedFile {
                path: w.path,
                duration_ms,
                bytes,
                frames_lost: w.recording.frames_lost() + w.frames_skipped,
                dropped: w.recording.dropped,
                error,
            },
        });
    }
}

/// The last frame's own length, added to its time for the file's duration: an Opus frame.
const FRAME_MS: u64 = 20;

/// Write what the recording has ready.
fn step(w: &mut Writing, now: Instant) -> Result<(), String> {
    while let Some(f) = w.recording.poll_frame(now) {
        write(w, f)?;
    }
    if w.file.is_none() && !w.pending.is_empty() && now >= w.opened + VIDEO_WAIT {
        start_file(w)?;
        write_pending(w)?;
    }
    Ok(())
}

fn write(w: &mut Writing, f: TimedFrame) -> Result<(), String> {
    if w.file.is_none() {
        let ready = f.track == Track::Video && f.frame.size.is_some() || w.video.is_none();
        w.pending.push(f);
        if ready {
            start_file(w)?;
            write_pending(w)?;
        }
        return Ok(());
    }
    write_frame(w, f)
}

fn write_pending(w: &mut Writing) -> Result<(), String> {
    for f in std::mem::take(&mut w.pending) {
        write_frame(w, f)?;
    }
    Ok(())
}

fn write_frame(w: &mut Writing, f: TimedFrame) -> Result<(), String> {
    let Some(file) = w.file.as_mut() else {
        return Ok(());
    };
    let result = match f.track {
        Track::Video if w.has_video => {
            // Several frames each shown (a VP9 picture's top layer and those it depends on):
            // a block each, a millisecond apart, so that a player shows the last.
            let mut bounds = vec![0];
            bounds.extend(&f.frame.splits);
            bounds.push(f.frame.data.len());
            let mut result = Ok(());
            for (i, part) in bounds.windows(2).enumerate() {
                let ns = f.ns + i as u64 * 1_000_000;
                let key = f.frame.keyframe && i == 0;
                result = file.write_video(ns, key, &f.frame.data[part[0]..part[1]]);
                if result.is_err() {
                    break;
                }
            }
            result
        }
        Track::Audio if w.audio => file.write_audio(f.ns, &f.frame.data),
        _ => {
            // Video before its file had a video track (it came too late).
            w.frames_skipped += 1;
            return Ok(());
        }
    };
    result.map_err(|e| e.to_string())
}

/// Start the file: with a video track where a keyframe with its size is among the frames.
fn start_file(w: &mut Writing) -> Result<(), String> {
    let Some(raw) = w.raw.take() else {
        return Ok(());
    };
    let keyframe = w
        .pending
        .iter()
        .find(|f| f.track == Track::Video && f.frame.keyframe);
    let codec = match w.recording.video_codec() {
        Some(Codec::Vp9) => VideoCodec::Vp9,
        Some(Codec::Av1) => VideoCodec::Av1,
        _ => VideoCodec::Vp8,
    };
    let video = keyframe.and_then(|f| {
        let (width, height) = f.frame.size?;
        Some(VideoFormat {
            codec,
            width,
            height,
            codec_private: f.frame.config.clone(),
        })
    });
    w.has_video = video.is_some();
    w.file = Some(FeedFile::new(raw, video, w.audio).map_err(|e| e.to_string())?);
    Ok(())
}
