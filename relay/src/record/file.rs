//! One recorded feed's WebM file: its video and audio frames, timestamps in nanoseconds
//! from the start of the recording, cues and duration written at the end so that players
//! can seek.
//!
//! The muxer is libwebm, the WebM project's own, through the `webm` crate: it writes VP8,
//! VP9, AV1 and Opus, the cues and the duration (it seeks back to the header at the end), and
//! is what browsers' own recorders are checked against. It runs on the recorder's thread,
//! never on a core.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use webm::mux::{AudioCodecId, SegmentMode, VideoCodecId};
use webm::mux::{AudioTrack, Segment, SegmentBuilder, VideoTrack, Writer};

/// A recording file that could not be written.
#[derive(Debug, Error)]
pub enum FileError {
    /// The file could not be created (the directory is missing or not writable, the disk full).
    #[error("cannot create {path}: {source}")]
    Create {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The muxer refused: a bad parameter, or a timestamp that went back.
    #[error("the WebM muxer refused to {0}")]
    Mux(&'static str),
    /// Writing to the file failed (the disk is full, the file system went away).
    #[error("cannot write the file: {0}")]
    Write(String),
}

/// A video codec a recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
    /// AV1.
    Av1,
}

/// A file's video track: its codec, the size of its first keyframe, and the codec's
/// configuration where it has one (AV1's `av1C`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFormat {
    /// The codec.
    pub codec: VideoCodec,
    /// Width.
    pub width: u16,
    /// Height.
    pub height: u16,
    /// The track's CodecPrivate.
    pub codec_private: Option<Vec<u8>>,
}

/// A feed's file while it is written.
pub struct FeedFile {
    segment: Segment<KeepsError<BufWriter<File>>>,
    /// The first I/O error under the muxer, which reports only that it failed.
    io_error: Arc<Mutex<Option<String>>>,
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    /// The last timestamp written: libwebm wants them in order across tracks.
    last_ns: u64,
}

impl std::fmt::Debug for FeedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedFile")
            .field("last_ns", &self.last_ns)
            .finish_non_exhaustive()
    }
}

/// Opus's identification header (RFC 7845 §5.1), which WebM carries as the audio track's
/// codec private data: two channels at 48 kHz, as WebRTC sends Opus.
fn opus_head() -> [u8; 19] {
    let mut h = [0u8; 19];
    h[..8].copy_from_slice(b"OpusHead");
    h[8] = 1; // version
    h[9] = 2; // channels
    h[10..12].copy_from_slice(&312u16.to_le_bytes()); // pre-skip: 6.5 ms at 48 kHz
    h[12..16].copy_from_slice(&48_000u32.to_le_bytes());
    h
}

impl FeedFile {
    /// Create `path` with a video track of `video` and an Opus track if `audio`.
    pub fn create(path: &Path, video: Option<VideoFormat>, audio: bool) -> Result<Self, FileError> {
        let file = File::create(path).map_err(|source| FileError::Create {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(file, video, audio)
    }

    /// Write into `file` (created when the recording started, so that a directory that
    /// cannot be written is an error then, not when the first keyframe comes).
    pub fn new(file: File, video: Option<VideoFormat>, audio: bool) -> Result<Self, FileError> {
        let mux = |what| move |_| FileError::Mux(what);
        let io_error = Arc::new(Mutex::new(None));
        let dest = KeepsError {
            inner: BufWriter::new(file),
            error: io_error.clone(),
        };
        let mut builder = SegmentBuilder::new(Writer::new(dest))
            .map_err(mux("start a segment"))?
            .set_mode(SegmentMode::File)
            .map_err(mux("set file mode"))?
            .set_writing_app("webrtc.ai relay")
            .map_err(mux("name the writing app"))?;
        let mut video_track = None;
        if let Some(v) = video {
            let id = match v.codec {
                VideoCodec::Vp8 => VideoCodecId::VP8,
                VideoCodec::Vp9 => VideoCodecId::VP9,
                VideoCodec::Av1 => VideoCodecId::AV1,
            };
            let (b, t) = builder
                .add_video_track(u32::from(v.width), u32::from(v.height), id, None)
                .map_err(mux("add the video track"))?;
            builder = b;
            if let Some(private) = &v.codec_private {
                builder = builder
                    .set_codec_private(t, private)
                    .map_err(mux("set the video's codec configuration"))?;
            }
            video_track = Some(t);
        }
        let mut audio_track = None;
        if audio {
            let (b, t) = builder
                .add_audio_track(48_000, 2, AudioCodecId::Opus, None)
                .map_err(mux("add the audio track"))?;
            builder = b
                .set_codec_private(t, &opus_head())
                .map_err(mux("set the Opus header"))?;
            audio_track = Some(t);
        }
        Ok(FeedFile {
            io_error,
            segment: builder.build(),
            video: video_track,
            audio: audio_track,
            last_ns: 0,
        })
    }

    /// A video frame at `ns` from the start. A frame earlier than one already written (the
    /// other track ran ahead) is written at that time instead: libwebm takes them in order.
    pub fn write_video(&mut self, ns: u64, keyframe: bool, data: &[u8]) -> Result<(), FileError> {
        let track = self.video.ok_or(FileError::Mux(
            "write video to a file without a video track",
        ))?;
        let ns = ns.max(self.last_ns);
        if self.segment.add_frame(track, data, ns, keyframe).is_err() {
            return Err(self.failed("write a video frame"));
        }
        self.last_ns = ns;
        Ok(())
    }

    /// An Opus frame at `ns` from the start.
    pub fn write_audio(&mut self, ns: u64, data: &[u8]) -> Result<(), FileError> {
        let track = self.audio.ok_or(FileError::Mux(
            "write audio to a file without an audio track",
        ))?;
        let ns = ns.max(self.last_ns);
        if self.segment.add_frame(track, data, ns, true).is_err() {
            return Err(self.failed("write an audio frame"));
        }
        self.last_ns = ns;
        Ok(())
    }

    /// Write the cues and the duration (`duration_ms`) and close the file.
    pub fn finish(self, duration_ms: u64) -> Result<(), FileError> {
        let io_error = self.io_error.clone();
        let failed = |what| match io_error.lock().ok().and_then(|e| e.clone()) {
            Some(e) => FileError::Write(e),
            None => FileError::Mux(what),
        };
        let Ok(writer) = self.segment.finalize(Some(duration_ms)) else {
            return Err(failed("finish the file"));
        };
        writer
            .into_inner()
            .flush()
            .map_err(|e| FileError::Write(e.to_string()))
    }

    /// Why the muxer refused to `what`: the I/O error under it, if there was one.
    fn failed(&self, what: &'static str) -> FileError {
        match self.io_error.lock().ok().and_then(|e| e.clone()) {
            Some(e) => FileError::Write(e),
            None => FileError::Mux(what),
        }
    }
}

/// A writer that keeps the first error it met: libwebm only says that a write failed.
struct KeepsError<W> {
    inner: W,
    error: Arc<Mutex<Option<String>>>,
}

impl<W> KeepsError<W> {
    fn keep<T>(&self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r {
            if let Ok(mut slot) = self.error.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }
        r
    }
}

impl<W: Write> Write for KeepsError<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.keep(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.keep(r)
    }
}

impl<W: Seek> Seek for KeepsError<W> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let r = self.inner.seek(pos);
        self.keep(r)
    }
}
