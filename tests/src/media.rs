//! Synthetic media whose every byte can be checked on arrival.
//!
//! Each payload starts with the packet's index in its stream (8 bytes) followed by bytes derived
//! from that index, so a receiver can verify a forwarded packet byte for byte without keeping a
//! copy of what was sent.

use bytes::Bytes;

/// Generates RTP packets of one stream, video-like (90 kHz, a frame every 33 ms split into
/// packets) or audio-like (48 kHz, 20 ms per packet).
#[derive(Debug, Clone)]
pub struct Source {
    /// The SSRC.
    pub ssrc: u32,
    /// The payload type.
    pub payload_type: u8,
    /// Payload bytes per packet (at least 8).
    pub payload_len: usize,
    /// Packets per frame (timestamp advances after each frame).
    pub packets_per_frame: u32,
    /// Timestamp increment per frame.
    pub ts_per_frame: u32,
    next_index: u64,
    seq: u16,
    ts: u32,
}

impl Source {
    /// A 30 fps video stream.
    pub fn video(ssrc: u32, payload_len: usize) -> Self {
        Source {
            ssrc,
            payload_type: 96,
            payload_len: payload_len.max(8),
            packets_per_frame: 4,
            ts_per_frame: 3000,
            next_index: 0,
            seq: rand::random(),
            ts: rand::random(),
        }
    }

    /// A 50 packets/s audio stream.
    pub fn audio(ssrc: u32) -> Self {
        Source {
            ssrc,
            payload_type: 111,
            payload_len: 160,
            packets_per_frame: 1,
            ts_per_frame: 960,
            next_index: 0,
            seq: rand::random(),
            ts: rand::random(),
        }
    }

    /// Restart the stream under a new SSRC and a new random sequence and timestamp base, as an
    /// encoder restart or renegotiation does.
    pub fn restart(&mut self, ssrc: u32) {
        self.ssrc = ssrc;
        self.seq = rand::random();
        self.ts = rand::random();
    }

    /// Index of the next packet.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The next packet.
    pub fn next_packet(&mut self) -> rtp::packet::Packet {
        let index = self.next_index;
        self.next_index += 1;
        let last_of_frame = (index + 1).is_multiple_of(self.packets_per_frame as u64);
        let pkt = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: last_of_frame,
                payload_type: self.payload_type,
                sequence_number: self.seq,
                timestamp: self.ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: payload(index, self.payload_len),
        };
        self.seq = self.seq.wrapping_add(1);
        if last_of_frame {
            self.ts = self.ts.wrapping_add(self.ts_per_frame);
        }
        pkt
    }
}

/// The payload of packet `index`.
pub fn payload(index: u64, len: usize) -> Bytes {
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&index.to_be_bytes());
    let mut x = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while p.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    p.truncate(len);
    Bytes::from(p)
}

/// The index a payload claims, if the rest of it matches that index exactly.
pub fn verify(payload_bytes: &[u8]) -> Option<u64> {
    let index = u64::from_be_bytes(payload_bytes.get(..8)?.try_into().ok()?);
    (payload(index, payload_bytes.len()) == payload_bytes).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_verify_and_detect_corruption() {
        let p = payload(42, 1200);
        assert_eq!(verify(&p), Some(42));
        let mut bad = p.to_vec();
        bad[600] ^= 1;
        assert_eq!(verify(&bad), None);
        assert_eq!(verify(&p[..4]), None);
    }

    #[test]
    fn video_frames_share_timestamps() {
        let mut s = Source::video(1, 100);
        let a: Vec<_> = (0..8).map(|_| s.next_packet()).collect();
        assert_eq!(a[0].header.timestamp, a[3].header.timestamp);
        assert!(a[3].header.marker && !a[2].header.marker);
        assert_eq!(
            a[4].header.timestamp,
            a[0].header.timestamp.wrapping_add(3000)
        );
        assert_eq!(
            a[1].header.sequence_number,
            a[0].header.sequence_number.wrapping_add(1)
        );
    }
}
