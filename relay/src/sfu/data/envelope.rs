//! The envelope around every data-channel message between the SDK and the relay.
//!
//! A participant's messages go to the whole session or to the participants it names, and a
//! receiver must know who sent each one. Both travel in a small header in front of the
//! application's bytes, as in LiveKit's data packets, so that one pair of channels per
//! participant (reliable and lossy) carries everything, whatever the session's size. The SCTP
//! message is always binary; a flag says whether the application sent a string.
//!
//! Sent by a participant:
//!
//! ```text
//! version (1) | flags | target count (u16) | count × (length (u16), uid) | payload
//! ```
//!
//! Delivered to a participant:
//!
//! ```text
//! version (1) | flags | sender length (u16) | sender uid | payload
//! ```
//!
//! Integers are big-endian, uids UTF-8; a target count of zero means everyone else.

use thiserror::Error;

/// The envelope version this relay speaks.
pub const VERSION: u8 = 1;
/// Flag: the payload is a UTF-8 string the application sent as a string.
pub const TEXT: u8 = 0x01;
/// Targets a message may name (more is refused, not cut: a sender must know).
pub const MAX_TARGETS: usize = 1024;

/// A message whose envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// Fewer bytes than the header says there are.
    #[error("envelope truncated")]
    Truncated,
    /// A version this relay does not speak.
    #[error("envelope version {0}, expected {VERSION}")]
    Version(u8),
    /// Flags this relay does not know.
    #[error("unknown envelope flags {0:#04x}")]
    Flags(u8),
    /// More targets than [`MAX_TARGETS`].
    #[error("{0} targets, at most {MAX_TARGETS}")]
    TooManyTargets(usize),
    /// A uid that is not UTF-8, or a payload flagged as text that is not.
    #[error("envelope text is not UTF-8")]
    NotUtf8,
}

/// A participant's message as it sent it: to whom, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed<'a> {
    /// The application sent a string.
    pub text: bool,
    /// The uids it named; empty for everyone.
    targets: &'a [u8],
    count: usize,
    /// The application's bytes.
    pub payload: &'a [u8],
}

impl<'a> Addressed<'a> {
    /// Read a participant's message. Uids are checked here, so that [`Addressed::targets`]
    /// cannot fail; a text payload is checked too, so that no receiver gets a string that
    /// is not one.
    pub fn parse(bytes: &'a [u8]) -> Result<Addressed<'a>, EnvelopeError> {
        let (text, rest) = header(bytes)?;
        let [a, b, rest @ ..] = rest else {
            return Err(EnvelopeError::Truncated);
        };
        let count = usize::from(u16::from_be_bytes([*a, *b]));
        if count > MAX_TARGETS {
            return Err(EnvelopeError::TooManyTargets(count));
        }
        let mut at = 0;
        for _ in 0..count {
            let (uid, _) = string_at(&rest[at..])?;
            at += 2 + uid.len();
        }
        let (targets, payload) = rest.split_at(at);
        if text && std::str::from_utf8(payload).is_err() {
            return Err(EnvelopeError::NotUtf8);
        }
        Ok(Addressed {
            text,
            targets,
            count,
            payload,
        })
    }

    /// Whether it goes to everyone in the session (but its sender).
    pub fn to_everyone(&self) -> bool {
        self.count == 0
    }

    /// The uids it names.
    pub fn targets(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut rest = self.targets;
        std::iter::from_fn(move || {
            let (uid, after) = string_at(rest).ok()?;
            rest = after;
            Some(uid)
        })
    }

    /// Whether it names `uid` (or everyone).
    pub fn is_for(&self, uid: &str) -> bool {
        self.to_everyone() || self.targets().any(|t| t == uid)
    }
}

/// Write a participant's message (what the SDK does; the relay's tests and load generator
/// use it).
pub fn address(text: bool, targets: &[&str], payload: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(4 + payload.len() + targets.iter().map(|t| t.len() + 2).sum::<usize>());
    out.extend_from_slice(&[VERSION, if text { TEXT } else { 0 }]);
    out.extend_from_slice(&(targets.len() as u16).to_be_bytes());
    for t in targets {
        push_string(&mut out, t);
    }
    out.extend_from_slice(payload);
    out
}

/// A message as a receiver gets it: who sent it, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered<'a> {
    /// The application sent a string.
    pub text: bool,
    /// The sender's uid.
    pub from: &'a str,
    /// The application's bytes.
    pub payload: &'a [u8],
}

impl<'a> Delivered<'a> {
    /// Write a message for its receivers: one buffer serves all of them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.from.len() + self.payload.len());
        out.extend_from_slice(&[VERSION, if self.text { TEXT } else { 0 }]);
        push_string(&mut out, self.from);
        out.extend_from_slice(self.payload);
        out
    }

    /// Read a delivered message (what the SDK does).
    pub fn parse(bytes: &'a [u8]) -> Result<Delivered<'a>, EnvelopeError> {
        let (text, rest) = header(bytes)?;
        let (from, payload) = string_at(rest)?;
        Ok(Delivered {
            text,
            from,
            payload,
        })
    }
}

/// The version and flags; the rest.
fn header(bytes: &[u8]) -> Result<(bool, &[u8]), EnvelopeError> {
    let [version, flags, rest @ ..] = bytes else {
        return Err(EnvelopeError::Truncated);
    };
    if *version != VERSION {
        return Err(EnvelopeError::Version(*version));
    }
    if flags & !TEXT != 0 {
        return Err(EnvelopeError::Flags(*flags));
    }
    Ok((flags & TEXT != 0, rest))
}

/// A length-prefixed UTF-8 string at the start of `bytes`; what follows it.
fn string_at(bytes: &[u8]) -> Result<(&str, &[u8]), EnvelopeError> {
    let [a, b, rest @ ..] = bytes else {
        return Err(EnvelopeError::Truncated);
    };
    let len = usize::from(u16::from_be_bytes([*a, *b]));
    if rest.len() < len {
        return Err(EnvelopeError::Truncated);
    }
    let (s, after) = rest.split_at(len);
    let s = std::str::from_utf8(s).map_err(|_| EnvelopeError::NotUtf8)?;
    Ok((s, after))
}

/// A string with its length, cut at 65,535 bytes (uids are far shorter).
fn push_string(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_to_two_participants_names_them_and_nobody_else() {
        let bytes = address(true, &["ada", "grace"], "hi ✓".as_bytes());
        assert_eq!(&bytes[..4], &[VERSION, TEXT, 0, 2]);
        let m = Addressed::parse(&bytes).unwrap();
        assert!(m.text && !m.to_everyone());
        assert_eq!(m.targets().collect::<Vec<_>>(), ["ada", "grace"]);
        assert!(m.is_for("grace") && !m.is_for("alan") && !m.is_for("ad"));
        assert_eq!(m.payload, "hi ✓".as_bytes());
    }

    #[test]
    fn a_message_to_everyone_and_its_delivery() {
        let bytes = address(false, &[], &[0, 1, 2]);
        let m = Addressed::parse(&bytes).unwrap();
        assert!(!m.text && m.to_everyone() && m.is_for("anyone"));
        let out = Delivered {
            text: m.text,
            from: "ada",
            payload: m.payload,
        }
        .to_bytes();
        assert_eq!(out, [VERSION, 0, 0, 3, b'a', b'd', b'a', 0, 1, 2]);
        let d = Delivered::parse(&out).unwrap();
        assert_eq!(
            (d.text, d.from, d.payload),
            (false, "ada", &[0u8, 1, 2][..])
        );
        // An empty payload is a message too.
        let empty = address(true, &[], b"");
        assert_eq!(Addressed::parse(&empty).unwrap().payload, b"");
    }

    #[test]
    fn malformed_envelopes_are_refused_with_a_reason() {
        use EnvelopeError::*;
        assert_eq!(Addressed::parse(&[]), Err(Truncated));
        assert_eq!(Addressed::parse(&[2, 0, 0, 0]), Err(Version(2)));
        assert_eq!(Addressed::parse(&[1, 0x80, 0, 0]), Err(Flags(0x80)));
        assert_eq!(Addressed::parse(&[1, 0, 0]), Err(Truncated));
        // One target announced, its length runs past the end.
        assert_eq!(Addressed::parse(&[1, 0, 0, 1, 0, 9, b'a']), Err(Truncated));
        assert_eq!(Addressed::parse(&[1, 0, 0, 1, 0, 1, 0xff]), Err(NotUtf8));
        assert_eq!(
            Addressed::parse(&[1, 0, 0xff, 0xff]),
            Err(TooManyTargets(65535))
        );
        // Flagged as text, not UTF-8.
        assert_eq!(Addressed::parse(&[1, TEXT, 0, 0, 0xc3]), Err(NotUtf8));
        assert_eq!(Delivered::parse(&[1, 0, 0, 4, b'a']), Err(Truncated));
    }
}
