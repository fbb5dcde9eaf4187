//! What crosses a trunk between two nodes: media as QUIC datagrams, control as messages on
//! one bidirectional stream. Both ends parse what the other sends, so every reader here
//! takes untrusted bytes and refuses, with a reason, what does not read.
//!
//! A media datagram is one plain RTP packet of a feed (QUIC encrypts the trunk, so no SRTP on
//! it) behind a header that carries what the publisher's core learned of it: the receiving
//! node forwards it as a core forwards a packet another core handed it, without reading the
//! codec again.
//!
//! ```text
//!  0        1                 5        6        7        8
//! +--------+-----------------+--------+--------+--------+----------------------------------+
//! | kind   | channel (u32)   | layer  | flags  | off    | optional fields, then RTP packet |
//! +--------+-----------------+--------+--------+--------+----------------------------------+
//! ```
//!
//! `kind` is 0 (a feed's packet) or 1 (the same, resent on a NACK); `channel` the number the
//! sending node bound to a feed with [`Control::Open`] (four bytes instead of a session and
//! feed name in every packet); `layer` its simulcast layer; `off` the layers dynacast turned
//! off at the publisher. Each bit of `flags` says one optional field follows, in this order:
//! the keyframe's picture size (bit 1, two `u16`), the timestamp on the lowest layer's
//! timeline (bit 2, `u32`), the playout delay (bit 3, its three extension bytes) and the
//! frame's SVC description (bit 4, [`SVC_LEN`] bytes). Bit 0 marks a keyframe's first packet.
//!
//! A control message is a big-endian `u32` length and that many bytes of JSON ([`Control`]):
//! control is rare next to media, and JSON keeps it readable in a capture and extensible.

use serde::{Deserialize, Serialize};

use relay::control::FeedDescription;
use relay::engine::playout_delay::PlayoutDelay;
use relay::engine::rtp;
use relay::ids::{FeedId, Sid, Uid};
use relay::sfu::cross_core::RtpInfo;
use relay::sfu::svc::SvcFrame;

/// Bytes before the optional fields in a media datagram.
pub const DATAGRAM_HEADER: usize = 8;

/// Bytes of a frame's SVC description.
pub const SVC_LEN: usize = 60;

/// The most a header can take: the fixed part and every optional field.
pub const MAX_DATAGRAM_HEADER: usize = DATAGRAM_HEADER + 4 + 4 + 3 + SVC_LEN;

/// The largest control message accepted: a data-channel message of the largest size the relay
/// takes (256 KiB), in base64, with its envelope; a feed description is a few kilobytes.
pub const MAX_CONTROL: usize = 512 * 1024;

const KEYFRAME: u8 = 1;
const FRAME_SIZE: u8 = 1 << 1;
const REFERENCE: u8 = 1 << 2;
const PLAYOUT: u8 = 1 << 3;
const SVC: u8 = 1 << 4;
const KNOWN_FLAGS: u8 = KEYFRAME | FRAME_SIZE | REFERENCE | PLAYOUT | SVC;

/// Why bytes from the other node were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A datagram that ends before its header does, or before its packet's RTP header.
    #[error("a datagram of {0} bytes is too short")]
    ShortDatagram(usize),
    /// A datagram kind this version does not know.
    #[error("unknown datagram kind {0}")]
    UnknownKind(u8),
    /// Flags this version does not know.
    #[error("unknown datagram flags {0:#04x}")]
    UnknownFlags(u8),
    /// A field out of its range (an SVC layer past 3, a decode target past 31).
    #[error("datagram field out of range: {0}")]
    OutOfRange(&'static str),
    /// The packet behind the header is not an RTP packet.
    #[error("the datagram's packet is not RTP")]
    NotRtp,
    /// A control message longer than [`MAX_CONTROL`].
    #[error("a control message of {0} bytes is over the limit of {MAX_CONTROL}")]
    ControlTooLong(usize),
    /// A control message that is not one of [`Control`].
    #[error("unreadable control message: {0}")]
    BadControl(String),
}

/// A media datagram, parsed (borrowing the packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The feed, as the sending node numbered it on this trunk.
    pub channel: u32,
    /// Resent on the receiving node's NACK rather than sent first-hand.
    pub resent: bool,
    /// What the publisher's core learned of the packet (the RTP header's fields among it,
    /// read from the packet itself).
    pub info: RtpInfo,
    /// The plain RTP packet.
    pub packet: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Read a datagram: its header, and the RTP header of its packet.
    pub fn parse(bytes: &'a [u8]) -> Result<Datagram<'a>, FrameError> {
        let short = || FrameError::ShortDatagram(bytes.len());
        if bytes.len() < DATAGRAM_HEADER {
            return Err(short());
        }
        let resent = match bytes[0] {
            0 => false,
            1 => true,
            k => return Err(FrameError::UnknownKind(k)),
        };
        let channel = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let layer = bytes[5];
        let flags = bytes[6];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::UnknownFlags(flags));
        }
        let layers_off = bytes[7];
        let mut r = Reader {
            bytes,
            at: DATAGRAM_HEADER,
        };
        let frame_size = if flags & FRAME_SIZE != 0 {
            Some((r.u16().ok_or_else(short)?, r.u16().ok_or_else(short)?))
        } else {
            None
        };
        let reference_timestamp = if flags & REFERENCE != 0 {
            Some(r.u32().ok_or_else(short)?)
        } else {
            None
        };
        let playout_delay = if flags & PLAYOUT != 0 {
            Some(PlayoutDelay::parse(r.take(3).ok_or_else(short)?).ok_or_else(short)?)
        } else {
            None
        };
        let svc = if flags & SVC != 0 {
            Some(read_svc(r.take(SVC_LEN).ok_or_else(short)?)?)
        } else {
            None
        };
        let packet = &bytes[r.at..];
        let header = rtp::parse(packet).ok_or(FrameError::NotRtp)?;
        Ok(Datagram {
            channel,
            resent,
            info: RtpInfo {
                ssrc: header.ssrc,
                sequence: header.sequence,
                timestamp: header.timestamp,
                payload_len: header.payload_len,
                playout_delay,
                layer,
                keyframe: flags & KEYFRAME != 0,
                frame_size,
                layers_off,
                reference_timestamp,
                svc,
            },
            packet,
        })
    }

    /// Write the datagram into `out` (cleared first). The RTP header fields of `info` are
    /// not written: the packet has them.
    pub fn write(&self, out: &mut Vec<u8>) {
        let info = &self.info;
        out.clear();
        out.reserve(MAX_DATAGRAM_HEADER + self.packet.len());
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        let flags = flag(info.keyframe, KEYFRAME)
            | flag(info.frame_size.is_some(), FRAME_SIZE)
            | flag(info.reference_timestamp.is_some(), REFERENCE)
            | flag(info.playout_delay.is_some(), PLAYOUT)
            | flag(info.svc.is_some(), SVC);
        out.push(u8::from(self.resent));
        out.extend_from_slice(&self.channel.to_be_bytes());
        out.extend_from_slice(&[info.layer, flags, info.layers_off]);
        if let Some((w, h)) = info.frame_size {
            out.extend_from_slice(&w.to_be_bytes());
            out.extend_from_slice(&h.to_be_bytes());
        }
        if let Some(t) = info.reference_timestamp {
            out.extend_from_slice(&t.to_be_bytes());
        }
        if let Some(d) = info.playout_delay {
            out.extend_from_slice(&d.to_bytes());
        }
        if let Some(svc) = &info.svc {
            write_svc(svc, out);
        }
        out.extend_from_slice(self.packet);
    }
}

/// The datagram's channel, read without parsing the rest (for counting what a trunk drops).
pub fn peek_channel(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

fn write_svc(svc: &SvcFrame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&svc.frame_number.to_be_bytes());
    out.push(u8::from(svc.start_of_frame) | u8::from(svc.end_of_frame) << 1);
    out.extend_from_slice(&[svc.spatial_id, svc.temporal_id]);
    out.extend_from_slice(&svc.needed_by.to_be_bytes());
    out.extend_from_slice(&svc.switch_for.to_be_bytes());
    for r in svc.referenced {
        out.extend_from_slice(&r.to_be_bytes());
    }
    out.push(svc.references);
    out.extend_from_slice(&svc.structure.to_be_bytes());
    out.extend_from_slice(&svc.decode_target_for);
    out.extend_from_slice(&[svc.spatial_layers, svc.temporal_layers]);
    for (w, h) in svc.sizes {
        out.extend_from_slice(&w.to_be_bytes());
        out.extend_from_slice(&h.to_be_bytes());
    }
    debug_assert_eq!(out.len() - start, SVC_LEN);
}

/// An SVC description, its fields kept to the ranges the relay's layer logic indexes and
/// shifts by (a spatial or temporal layer below 4, a decode target below 32).
fn read_svc(bytes: &[u8]) -> Result<SvcFrame, FrameError> {
    // `bytes` is SVC_LEN long: every read below succeeds.
    let mut r = Reader { bytes, at: 0 };
    let frame_number = r.u16().unwrap_or(0);
    let ends = r.u8().unwrap_or(0);
    let spatial_id = r.u8().unwrap_or(0);
    let temporal_id = r.u8().unwrap_or(0);
    let needed_by = r.u32().unwrap_or(0);
    let switch_for = r.u32().unwrap_or(0);
    let mut referenced = [0u16; 4];
    for x in &mut referenced {
        *x = r.u16().unwrap_or(0);
    }
    let references = r.u8().unwrap_or(0);
    let structure = r.u32().unwrap_or(0);
    let mut decode_target_for = [0u8; 16];
    decode_target_for.copy_from_slice(r.take(16).unwrap_or(&[0; 16]));
    let spatial_layers = r.u8().unwrap_or(0);
    let temporal_layers = r.u8().unwrap_or(0);
    let mut sizes = [(0u16, 0u16); 4];
    for s in &mut sizes {
        *s = (r.u16().unwrap_or(0), r.u16().unwrap_or(0));
    }
    if spatial_id > 3 || temporal_id > 3 {
        return Err(FrameError::OutOfRange("svc layer"));
    }
    if spatial_layers > 4 || temporal_layers > 4 {
        return Err(FrameError::OutOfRange("svc layer count"));
    }
    if references > 4 {
        return Err(FrameError::OutOfRange("svc references"));
    }
    if decode_target_for.iter().any(|&t| t > 31) {
        return Err(FrameError::OutOfRange("svc decode target"));
    }
    Ok(SvcFrame {
        frame_number,
        start_of_frame: ends & 1 != 0,
        end_of_frame: ends & 2 != 0,
        spatial_id,
        temporal_id,
        needed_by,
        switch_for,
        referenced,
        references,
        structure,
        decode_target_for,
        spatial_layers,
        temporal_layers,
        sizes,
    })
}

/// A control message between two nodes' edges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// The first message each way: who is at this end.
    Hello {
        /// The node's id in the cluster.
        node: String,
        /// Its region.
        region: String,
        /// The trunk protocol version it speaks ([`crate::VERSION`]).
        version: u32,
    },
    /// Send me this feed: a participant here subscribes to it. Sent once per feed, however
    /// many subscribe here.
    Subscribe {
        /// The session.
        sid: Sid,
        /// The feed.
        feed_id: FeedId,
    },
    /// Stop sending it: the last subscriber here left.
    Unsubscribe {
        /// The session.
        sid: Sid,
        /// The feed.
        feed_id: FeedId,
    },
    /// The feed will come on `channel`, described as its publisher's node has it (so that the
    /// receiving relay can forward and rewrite it as it would a local publisher's).
    Open {
        /// The trunk-local number of its datagrams.
        channel: u32,
        /// The session.
        sid: Sid,
        /// What the feed is.
        feed: FeedDescription,
    },
    /// Nothing more comes on `channel` (unsubscribed, or the feed ended).
    Close {
        /// The channel.
        channel: u32,
    },
    /// The layers of the feed on `channel` that subscribers on the receiving node want (bit
    /// `l`: layer `l`), so that dynacast at the publisher counts them.
    LayersWanted {
        /// The channel.
        channel: u32,
        /// The layers wanted; 0 when none is.
        mask: u8,
    },
    /// A subscriber on the receiving node needs a keyframe of the feed (of `layer`, or of all).
    KeyframeRequest {
        /// The channel.
        channel: u32,
        /// The layer, where one.
        layer: Option<u8>,
        /// A new subscriber's first request, not held back by the per-layer limit.
        #[serde(default)]
        bypass_limit: bool,
    },
    /// Packets of the feed on `channel` that did not arrive: resend them if still at hand
    /// (the trunk's own repair, hop by hop, before any subscriber notices).
    Nack {
        /// The channel.
        channel: u32,
        /// The stream (a simulcast layer's SSRC).
        ssrc: u32,
        /// The missing sequence numbers.
        sequences: Vec<u16>,
    },
    /// A data-channel message of a participant of the sending node, for the session's
    /// participants on the receiving node (on the stream: in order, never lost while the
    /// trunk is up, whichever channel it was sent on).
    Data {
        /// The session.
        sid: Sid,
        /// The sender.
        from: Uid,
        /// Who it is for; empty for everyone.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        targets: Vec<Uid>,
        /// It went on the reliable channel.
        reliable: bool,
        /// The application sent a string.
        text: bool,
        /// What receivers get (the delivered envelope and the payload), in base64.
        delivered: String,
    },
}

impl Control {
    /// The message as it goes on the stream: length and JSON.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a control message always serialises");
        let mut out = Vec::with_capacity(4 + json.len());
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        out
    }
}

/// Reads control messages from the bytes of the stream as they arrive, in whatever pieces
/// (sans-IO: the caller feeds it bytes and polls it for messages).
#[derive(Debug, Default)]
pub struct ControlReader {
    buf: Vec<u8>,
    failed: bool,
}

impl ControlReader {
    /// Bytes that arrived on the stream.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next whole message, if one arrived; an error ends the stream for good (the peer is
    /// broken or hostile, and what follows cannot be framed).
    pub fn poll_message(&mut self) -> Option<Result<Control, FrameError>> {
        if self.failed || self.buf.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_CONTROL {
            self.fail();
            return Some(Err(FrameError::ControlTooLong(len)));
        }
        if self.buf.len() < 4 + len {
            return None;
        }
        let parsed = serde_json::from_slice::<Control>(&self.buf[4..4 + len])
            .map_err(|e| FrameError::BadControl(e.to_string()));
        self.buf.drain(..4 + len);
        if parsed.is_err() {
            self.fail();
        }
        Some(parsed)
    }

    fn fail(&mut self) {
        self.failed = true;
        self.buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: [u8; 13] = [0x80, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xaa];

    fn info() -> RtpInfo {
        RtpInfo {
            ssrc: 3,
            sequence: 1,
            timestamp: 2,
            payload_len: 1,
            playout_delay: None,
            layer: 2,
            keyframe: false,
            frame_size: None,
            layers_off: 0b100,
            reference_timestamp: None,
            svc: None,
        }
    }

    fn svc() -> SvcFrame {
        SvcFrame {
            frame_number: 0xfffe,
            start_of_frame: true,
            end_of_frame: false,
            spatial_id: 2,
            temporal_id: 1,
            needed_by: 0x8000_0001,
            switch_for: 4,
            referenced: [1, 2, 3, 0],
            references: 3,
            structure: 9,
            decode_target_for: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 31],
            spatial_layers: 3,
            temporal_layers: 2,
            sizes: [(320, 180), (640, 360), (1280, 720), (0, 0)],
        }
    }

    #[test]
    fn a_datagram_reads_back_as_written_with_each_optional_field() {
        let full = RtpInfo {
            keyframe: true,
            frame_size: Some((1280, 720)),
            reference_timestamp: Some(0xdead_beef),
            playout_delay: Some(PlayoutDelay::new(
                std::time::Duration::ZERO,
                std::time::Duration::from_millis(100),
            )),
            svc: Some(svc()),
            ..info()
        };
        let mut out = vec![9; 3];
        for (info, header) in [(info(), DATAGRAM_HEADER), (full, MAX_DATAGRAM_HEADER)] {
            let d = Datagram {
                channel: 0x0102_0304,
                resent: info.keyframe,
                info,
                packet: &PACKET,
            };
            d.write(&mut out);
            assert_eq!(out.len(), header + PACKET.len());
            assert_eq!(&out[..6], &[u8::from(d.resent), 1, 2, 3, 4, 2]);
            assert_eq!(Datagram::parse(&out).unwrap(), d);
            assert_eq!(peek_channel(&out), Some(0x0102_0304));
            // Cut anywhere before the end of the RTP header, it is refused, never misread.
            for cut in 0..header + 12 {
                assert!(Datagram::parse(&out[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_datagram_out_of_range_is_refused_with_a_reason() {
        let mut out = vec![];
        let d = Datagram {
            channel: 1,
            resent: false,
            info: info(),
            packet: &PACKET,
        };
        d.write(&mut out);
        out[0] = 7;
        assert_eq!(Datagram::parse(&out), Err(FrameError::UnknownKind(7)));
        out[0] = 0;
        out[6] = 0x80;
        assert_eq!(Datagram::parse(&out), Err(FrameError::UnknownFlags(0x80)));
        out[6] = 0;
        out[DATAGRAM_HEADER] = 0x40; // RTP version 1
        assert_eq!(Datagram::parse(&out), Err(FrameError::NotRtp));

        for (spoil, what) in [
            (3usize, "svc layer"),
            (30, "svc decode target"),
            (42, "svc layer count"),
            (21, "svc references"),
        ] {
            let with_svc = Datagram {
                info: RtpInfo {
                    svc: Some(svc()),
                    ..info()
                },
                ..d
            };
            with_svc.write(&mut out);
            out[DATAGRAM_HEADER + spoil] = 40;
            assert_eq!(
                Datagram::parse(&out),
                Err(FrameError::OutOfRange(what)),
                "byte {spoil}"
            );
        }
    }

    #[test]
    fn control_messages_arrive_whole_from_any_split() {
        let messages = [
            Control::Hello {
                node: "a".into(),
                region: "eu".into(),
                version: 1,
            },
            Control::Subscribe {
                sid: "c/room".into(),
                feed_id: "f-1".into(),
            },
            Control::KeyframeRequest {
                channel: 3,
                layer: Some(1),
                bypass_limit: false,
            },
            Control::Nack {
                channel: 3,
                ssrc: 7,
                sequences: vec![65535, 0],
            },
        ];
        let bytes: Vec<u8> = messages.iter().flat_map(Control::encode).collect();
        for piece in [1, 2, 5, 7, bytes.len()] {
            let mut r = ControlReader::default();
            let mut got = vec![];
            for chunk in bytes.chunks(piece) {
                r.handle_bytes(chunk);
                while let Some(m) = r.poll_message() {
                    got.push(m.unwrap());
                }
            }
            assert_eq!(got, messages, "in pieces of {piece}");
        }
    }

    #[test]
    fn a_bad_control_stream_is_refused_with_a_reason_and_stays_refused() {
        let mut r = ControlReader::default();
        r.handle_bytes(&(MAX_CONTROL as u32 + 1).to_be_bytes());
        assert_eq!(
            r.poll_message(),
            Some(Err(FrameError::ControlTooLong(MAX_CONTROL + 1)))
        );
        r.handle_bytes(&Control::Close { channel: 1 }.encode());
        assert_eq!(r.poll_message(), None);

        let mut r = ControlReader::default();
        let junk = br#"{"op":"fly"}"#;
        r.handle_bytes(&(junk.len() as u32).to_be_bytes());
        r.handle_bytes(junk);
        let Some(Err(FrameError::BadControl(why))) = r.poll_message() else {
            panic!("refused");
        };
        assert!(why.contains("unknown variant"), "{why}");
        assert_eq!(r.poll_message(), None);
    }
}
