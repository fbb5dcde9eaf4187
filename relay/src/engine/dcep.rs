//! The Data Channel Establishment Protocol (RFC 8832): how a WebRTC data channel is opened
//! in-band on an SCTP stream.
//!
//! The side that opens a channel sends DATA_CHANNEL_OPEN on the stream it picked (the DTLS
//! client even ids, the server odd ones), with payload protocol identifier 50 (RFC 8831 §8);
//! the other side answers DATA_CHANNEL_ACK on the same stream. Messages may follow the OPEN at
//! once, before the ACK arrives, so the stream's reliability comes from the OPEN, not from the
//! ACK.

use thiserror::Error;

const MESSAGE_OPEN: u8 = 0x03;
const MESSAGE_ACK: u8 = 0x02;
/// Bytes of an OPEN before its label and protocol.
const OPEN_HEADER: usize = 12;

/// A DCEP message that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DcepError {
    /// Nothing, or fewer bytes than the message's fixed part.
    #[error("DCEP message too short ({0} bytes)")]
    TooShort(usize),
    /// A message type RFC 8832 does not define.
    #[error("unknown DCEP message type {0:#04x}")]
    UnknownType(u8),
    /// A channel type RFC 8832 does not define.
    #[error("unknown data channel type {0:#04x}")]
    UnknownChannelType(u8),
    /// The label and protocol lengths run past the message.
    #[error("DCEP label and protocol lengths exceed the message")]
    Truncated,
    /// The label or protocol is not UTF-8.
    #[error("DCEP label or protocol is not UTF-8")]
    NotUtf8,
}

/// How a channel's messages are delivered (RFC 8832 §5.1, the channel type and its
/// reliability parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    /// Every message is retransmitted until it arrives.
    Reliable,
    /// A message is retransmitted at most this many times.
    MaxRetransmits(u32),
    /// A message is retransmitted for at most this many milliseconds.
    MaxLifetimeMs(u32),
}

/// A channel's delivery: ordered or not, and how reliable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Messages are delivered in the order they were sent.
    pub ordered: bool,
    /// How hard a message is retransmitted.
    pub reliability: Reliability,
}

impl Delivery {
    /// Ordered and retransmitted until it arrives: what a `reliable` channel is.
    pub const RELIABLE: Delivery = Delivery {
        ordered: true,
        reliability: Reliability::Reliable,
    };
    /// Unordered and never retransmitted: what a `lossy` channel is.
    pub const LOSSY: Delivery = Delivery {
        ordered: false,
        reliability: Reliability::MaxRetransmits(0),
    };

    /// Whether a lost message is sent again until it arrives.
    pub fn is_reliable(&self) -> bool {
        self.reliability == Reliability::Reliable
    }

    fn channel_type(&self) -> (u8, u32) {
        let (kind, parameter) = match self.reliability {
            Reliability::Reliable => (0x00, 0),
            Reliability::MaxRetransmits(n) => (0x01, n),
            Reliability::MaxLifetimeMs(ms) => (0x02, ms),
        };
        (kind | if self.ordered { 0 } else { 0x80 }, parameter)
    }

    fn from_channel_type(kind: u8, parameter: u32) -> Result<Delivery, DcepError> {
        let reliability = match kind & 0x7f {
            0x00 => Reliability::Reliable,
            0x01 => Reliability::MaxRetransmits(parameter),
            0x02 => Reliability::MaxLifetimeMs(parameter),
            _ => return Err(DcepError::UnknownChannelType(kind)),
        };
        Ok(Delivery {
            ordered: kind & 0x80 == 0,
            reliability,
        })
    }
}

/// A DATA_CHANNEL_OPEN: the opener's description of a new channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Ordering and reliability.
    pub delivery: Delivery,
    /// The sender's priority for the channel (RFC 8831 §6.4); carried, not acted on.
    pub priority: u16,
    /// The channel's name, as the application gave it.
    pub label: String,
    /// The sub-protocol, usually empty.
    pub protocol: String,
}

/// A DCEP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Open a channel on this stream.
    Open(Open),
    /// The channel opened on this stream is accepted.
    Ack,
}

impl Message {
    /// Read a message from an SCTP message with payload protocol identifier [`PPI_DCEP`].
    pub fn parse(bytes: &[u8]) -> Result<Message, DcepError> {
        match bytes.first() {
            None => Err(DcepError::TooShort(0)),
            Some(&MESSAGE_ACK) => Ok(Message::Ack),
            Some(&MESSAGE_OPEN) => {
                if bytes.len() < OPEN_HEADER {
                    return Err(DcepError::TooShort(bytes.len()));
                }
                let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
                let parameter = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                let delivery = Delivery::from_channel_type(bytes[1], parameter)?;
                let label_len = usize::from(u16_at(8));
                let protocol_len = usize::from(u16_at(10));
                let rest = &bytes[OPEN_HEADER..];
                if rest.len() < label_len + protocol_len {
                    return Err(DcepError::Truncated);
                }
                let text = |b: &[u8]| {
                    std::str::from_utf8(b)
                        .map(str::to_owned)
                        .map_err(|_| DcepError::NotUtf8)
                };
                Ok(Message::Open(Open {
                    delivery,
                    priority: u16_at(2),
                    label: text(&rest[..label_len])?,
                    protocol: text(&rest[label_len..label_len + protocol_len])?,
                }))
            }
            Some(&other) => Err(DcepError::UnknownType(other)),
        }
    }

    /// The message's bytes. A label or protocol longer than 65,535 bytes is cut there.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Ack => vec![MESSAGE_ACK],
            Message::Open(open) => {
                let label = cut(&open.label);
                let protocol = cut(&open.protocol);
                let (kind, parameter) = open.delivery.channel_type();
                let mut out = Vec::with_capacity(OPEN_HEADER + label.len() + protocol.len());
                out.extend_from_slice(&[MESSAGE_OPEN, kind]);
                out.extend_from_slice(&open.priority.to_be_bytes());
                out.extend_from_slice(&parameter.to_be_bytes());
                out.extend_from_slice(&(label.len() as u16).to_be_bytes());
                out.extend_from_slice(&(protocol.len() as u16).to_be_bytes());
                out.extend_from_slice(label);
                out.extend_from_slice(protocol);
                out
            }
        }
    }
}

/// At most the 65,535 bytes a DCEP length field counts.
fn cut(s: &str) -> &[u8] {
    &s.as_bytes()[..s.len().min(usize::from(u16::MAX))]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OPEN for `createDataChannel('chat')` as a browser writes it: ordered, reliable,
    /// priority 256, no protocol.
    const CHROMIUM_OPEN: [u8; 16] = [
        0x03, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0x00, 0x04, 0x00, 0x00, b'c', b'h', b'a', b't',
    ];

    #[test]
    fn reads_what_a_browser_opens_a_channel_with() {
        let Ok(Message::Open(open)) = Message::parse(&CHROMIUM_OPEN) else {
            panic!("not an open");
        };
        assert_eq!(open.delivery, Delivery::RELIABLE);
        assert_eq!((open.priority, open.label.as_str()), (256, "chat"));
        assert_eq!(open.protocol, "");
        assert_eq!(Message::Open(open).to_bytes(), CHROMIUM_OPEN);
    }

    #[test]
    fn every_channel_type_survives_the_round_trip() {
        for ordered in [true, false] {
            for reliability in [
                Reliability::Reliable,
                Reliability::MaxRetransmits(0),
                Reliability::MaxRetransmits(7),
                Reliability::MaxLifetimeMs(1500),
            ] {
                let open = Open {
                    delivery: Delivery {
                        ordered,
                        reliability,
                    },
                    priority: 512,
                    label: "lossy ✓".into(),
                    protocol: "json".into(),
                };
                let bytes = Message::Open(open.clone()).to_bytes();
                assert_eq!(Message::parse(&bytes), Ok(Message::Open(open)));
            }
        }
        // RFC 8832 §5.1: 0x81 is unordered with a retransmission limit.
        let bytes = Message::Open(Open {
            delivery: Delivery::LOSSY,
            priority: 0,
            label: String::new(),
            protocol: String::new(),
        })
        .to_bytes();
        assert_eq!(bytes[1], 0x81);
        assert_eq!(Message::parse(&[MESSAGE_ACK]), Ok(Message::Ack));
        assert_eq!(Message::Ack.to_bytes(), [MESSAGE_ACK]);
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        assert_eq!(Message::parse(&[]), Err(DcepError::TooShort(0)));
        assert_eq!(Message::parse(&[0x03, 0]), Err(DcepError::TooShort(2)));
        assert_eq!(Message::parse(&[0x09]), Err(DcepError::UnknownType(9)));
        let mut bad = CHROMIUM_OPEN;
        bad[1] = 0x03;
        assert_eq!(Message::parse(&bad), Err(DcepError::UnknownChannelType(3)));
        let mut long = CHROMIUM_OPEN;
        long[9] = 5;
        assert_eq!(Message::parse(&long), Err(DcepError::Truncated));
        let mut invalid = CHROMIUM_OPEN;
        invalid[12] = 0xff;
        assert_eq!(Message::parse(&invalid), Err(DcepError::NotUtf8));
    }
}
