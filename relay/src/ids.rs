//! Newtype identifiers, named as in the product's vocabulary.
//!
//! `Sid`, `Uid` and `FeedId` come from the control plane (signalling names them; the relay only
//! compares them). `Ssrc` comes from the wire. `ParticipantKey` is the relay's own handle for a
//! participant on one core: it is never reused while the core runs, so a late DTLS result for a
//! removed participant can never be applied to a new one.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// A session (meeting room), unique within a client.
    Sid
);
string_id!(
    /// A participant (one device) within a session.
    Uid
);
string_id!(
    /// A published media stream of a participant.
    FeedId
);

/// RTP synchronisation source, as carried in RTP and RTCP headers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ssrc(pub u32);

impl fmt::Debug for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ssrc({})", self.0)
    }
}

/// The relay's handle for one participant on one core; unique for the life of the core.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ParticipantKey(pub u64);

impl ParticipantKey {
    /// The publisher of a feed replica: the real one is on another core. Keys of
    /// participants start at 1, so this one never names a participant.
    pub const REMOTE: ParticipantKey = ParticipantKey(0);
}

/// The relay's handle for a session on one core (cheap to copy on the packet path).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SessionKey(pub u64);

/// The relay's handle for a feed on one core (cheap to copy on the packet path).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FeedKey(pub u64);
