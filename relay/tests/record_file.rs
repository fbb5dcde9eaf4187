//! A recording's file as players see it: VP8 and Opus made by FFmpeg's encoders (libvpx,
//! libopus), written by `record::file` at their own timestamps, then read back by the real
//! `ffprobe` and decoded by `ffmpeg` (both are installed by `./scripts/test`).

use std::path::Path;
use std::process::Command;

use relay::record::file::{FeedFile, VideoCodec, VideoFormat};

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is installed (./scripts/test installs it)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The frames of an IVF file: (presentation time in frames, keyframe, bytes).
fn ivf_frames(bytes: &[u8]) -> Vec<(u64, bool, Vec<u8>)> {
    assert_eq!(&bytes[..4], b"DKIF");
    let header = usize::from(u16::from_le_bytes([bytes[6], bytes[7]]));
    let mut at = header;
    let mut frames = Vec::new();
    while at + 12 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let pts = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap());
        let data = bytes[at + 12..at + 12 + size].to_vec();
        // VP8's frame tag: P bit 0 on a keyframe.
        frames.push((pts, data[0] & 1 == 0, data));
        at += 12 + size;
    }
    frames
}

/// The packets of an Ogg file's one logical stream, the two Opus headers left out.
fn ogg_packets(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut at = 0;
    while at + 27 <= bytes.len() {
        assert_eq!(&bytes[at..at + 4], b"OggS");
        let segments = usize::from(bytes[at + 26]);
        let table = &bytes[at + 27..at + 27 + segments];
        let mut data = at + 27 + segments;
        for &len in table {
            current.extend_from_slice(&bytes[data..data + usize::from(len)]);
            data += usize::from(len);
            if len < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        at = data;
    }
    packets.into_iter().skip(2).collect()
}

fn probe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn vp8_and_opus_written_here_play_and_seek_in_ffmpeg() {
    let dir = std::env::temp_dir().join(format!("record-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ivf = dir.join("video.ivf");
    let ogg = dir.join("audio.ogg");
    // Four seconds of 320x240 at 30 fps with a keyframe a second, and of a 440 Hz tone in
    // 20 ms Opus frames.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-t",
        "4",
        "-c:v",
        "libvpx",
        "-g",
        "30",
        "-b:v",
        "300k",
        ivf.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "4",
        "-ac",
        "2",
        "-c:a",
        "libopus",
        "-frame_duration",
        "20",
        ogg.to_str().unwrap(),
    ]);
    let video = ivf_frames(&std::fs::read(&ivf).unwrap());
    let audio = ogg_packets(&std::fs::read(&ogg).unwrap());
    assert!(
        video.len() >= 119 && audio.len() >= 199,
        "{} frames, {} packets",
        video.len(),
        audio.len()
    );

    let path = dir.join("feed.webm");
    let mut file = FeedFile::create(
        &path,
        Some(VideoFormat {
            codec: VideoCodec::Vp8,
            width: 320,
            height: 240,
            codec_private: None,
        }),
        true,
    )
    .unwrap();
    // Interleaved by time, as a recorder gets them.
    let mut v = video.iter().peekable();
    let mut a = audio.iter().enumerate().peekable();
    loop {
        let vt = v.peek().map(|(pts, ..)| pts * 1_000_000_000 / 30);
        let at = a.peek().map(|(i, _)| *i as u64 * 20_000_000);
        match (vt, at) {
            (Some(vt), Some(at)) if vt <= at => {
                let (_, key, data) = v.next().unwrap();
                file.write_video(vt, *key, data).unwrap();
            }
            (Some(vt), None) => {
                let (_, key, data) = v.next().unwrap();
                file.write_video(vt, *key, data).unwrap();
            }
            (_, Some(at)) => {
                let (_, data) = a.next().unwrap();
                file.write_audio(at, data).unwrap();
            }
            (None, None) => break,
        }
    }
    file.finish(4000).unwrap();

    let info = probe(&path);
    let streams = info["streams"].as_array().unwrap();
    let codecs: Vec<&str> = streams
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap())
        .collect();
    assert_eq!(codecs, ["vp8", "opus"], "{info}");
    assert_eq!(
        (streams[0]["width"].as_u64(), streams[0]["height"].as_u64()),
        (Some(320), Some(240))
    );
    let duration: f64 = info["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((duration - 4.0).abs() < 0.1, "duration {duration}");
    // Decodes without a single complaint.
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(decode.status.success());
    assert_eq!(
        String::from_utf8_lossy(&decode.stderr),
        "",
        "ffmpeg complained"
    );
    // Seeking to 3 s lands on the keyframe there (the cues say where it is).
    let seek = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-read_intervals",
            "3%+#1",
            "-select_streams",
            "v",
            "-show_frames",
            "-show_entries",
            "frame=pts_time,key_frame",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&seek.stdout);
    assert!(first.starts_with("1,3.0"), "after a seek to 3 s: {first}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_directory_is_a_clear_error() {
    let err = FeedFile::create(Path::new("/proc/no/such/dir/feed.webm"), None, true).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot create /proc/no/such/dir/feed.webm"),
        "{err}"
    );
}

#[test]
fn a_full_disk_while_writing_is_a_clear_error() {
    // /dev/full takes the file's creation and seeks, and refuses every write with ENOSPC, as a
    // disk that filled up during a recording does.
    let mut file = FeedFile::create(Path::new("/dev/full"), None, true).unwrap();
    let frame = [0x55u8; 200];
    let err = (0..10_000u64)
        .find_map(|i| file.write_audio(i * 20_000_000, &frame).err())
        .expect("a write fails once the buffer reaches the device");
    assert!(
        err.to_string().contains("No space left on device"),
        "the reason is the disk's: {err}"
    );
}
