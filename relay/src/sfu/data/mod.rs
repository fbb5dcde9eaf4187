//! Data channels between the participants of a session: the envelope that says who a
//! message is for and who sent it, how fast a participant may send, and what a participant's
//! side of it holds.
//!
//! The relay terminates each participant's SCTP association and routes whole messages, as
//! mediasoup does; a participant has two channels the relay opens, one reliable (ordered,
//! retransmitted) and one lossy (unordered, never retransmitted), as LiveKit's SDK has, and
//! the envelope addresses each message, so a session of any size needs no more.

pub mod envelope;
pub mod limiter;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::engine::dcep::Delivery;
use crate::engine::sctp::DataChannels;
use crate::ids::{Sid, Uid};

use limiter::Limiter;

/// The stream of the reliable channel the relay opens to every participant.
pub const RELIABLE_STREAM: u16 = 1;
/// The stream of the lossy one.
pub const LOSSY_STREAM: u16 = 3;
/// Their labels, which the SDK looks for.
pub const RELIABLE_LABEL: &str = "reliable";
/// See [`RELIABLE_LABEL`].
pub const LOSSY_LABEL: &str = "lossy";

/// Bytes a receiver may have waiting for acknowledgement on its reliable channel before
/// further copies to it are dropped (a receiver that cannot keep up must not hold the
/// relay's memory).
pub const MAX_BUFFERED: usize = 8 * 1024 * 1024;

/// Bytes a receiver may have waiting for acknowledgement on its reliable channel before the
/// senders of its session on its core are held back: their messages stay unread in their SCTP
/// receive buffers, their windows close, and the browsers hold the rest. A receiver that is a
/// little slower than a sender, for a moment or for good, so gets everything, at its pace.
pub const HOLD_ABOVE: usize = 1024 * 1024;

/// Bytes below which a receiver that held its senders back lets them go on.
pub const RESUME_BELOW: usize = 512 * 1024;

/// The longest a receiver holds its senders back without draining below [`RESUME_BELOW`]:
/// one that stopped reading must not stop its session. Past it, it holds no one, and copies
/// to it past [`MAX_BUFFERED`] are dropped.
pub const MAX_HOLD: Duration = Duration::from_secs(5);

/// How long a receiver that held its senders for all of [`MAX_HOLD`] holds no one again once
/// it has drained: one that stalls again and again (a flaky link, or a participant that
/// acknowledges in bursts on purpose) cannot keep its session's senders waiting most of the
/// time.
pub const HOLD_COOLDOWN: Duration = Duration::from_secs(30);

/// Bytes of messages kept for a participant whose association is not up yet (it joined a
/// moment ago): delivered once it is, so that a newcomer misses nothing sent after it joined.
pub const MAX_PENDING: usize = 1024 * 1024;

/// Messages taken from one participant per input: a fast sender cannot hold its core for
/// long however much it has queued; the rest waits for the next wake-up.
pub const MAX_MESSAGES_PER_INPUT: usize = 64;

/// Copies (to receivers here, and to other cores) made from one participant's messages per
/// input: a few milliseconds of work at most, so that a sender to a large session does not
/// hold back the media of the core's other participants. A message is never split: one that
/// goes to more receivers than this is taken alone.
pub const MAX_COPIES_PER_INPUT: usize = 256;

/// A participant's side of the data channels.
#[derive(Debug)]
pub struct ParticipantData {
    /// Its SCTP association and channels.
    pub channels: DataChannels,
    /// How fast it may send.
    pub limiter: Limiter,
    /// Whether it may send at all (the `publish_data` grant).
    pub may_send: bool,
    /// When it was last told that it may not.
    pub refused_at: Option<Instant>,
    /// Messages for it that came before its association was up, and their bytes.
    pub pending: VecDeque<Relayed>,
    /// Bytes in `pending`.
    pub pending_bytes: usize,
    /// Since when, as a receiver, it has had more than [`HOLD_ABOVE`] waiting on its reliable
    /// channel without draining below [`RESUME_BELOW`].
    pub congested_since: Option<Instant>,
    /// Whether, as a sender, its messages wait for a congested receiver.
    pub held: bool,
    /// Until when, as a receiver, it holds no one (it held its senders for all of
    /// [`MAX_HOLD`] lately).
    pub no_hold_until: Option<Instant>,
}

impl ParticipantData {
    /// A participant's side before its SCTP association: the relay's two channels wait for
    /// it.
    pub fn new(may_send: bool, max_message_size: Option<u32>, limiter: Limiter) -> Self {
        let mut channels = match max_message_size {
            Some(max) => DataChannels::new(max as usize),
            None => DataChannels::default(),
        };
        channels.open(RELIABLE_STREAM, RELIABLE_LABEL, Delivery::RELIABLE);
        channels.open(LOSSY_STREAM, LOSSY_LABEL, Delivery::LOSSY);
        ParticipantData {
            channels,
            limiter,
            may_send,
            refused_at: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            congested_since: None,
            held: false,
            no_hold_until: None,
        }
    }
}

/// A message on its way to receivers, on this core or on others: built once, shared by all.
#[derive(Debug)]
pub struct RelayedData {
    /// The session.
    pub sid: Sid,
    /// The sender.
    pub from: Uid,
    /// The uids it is for; empty for everyone but the sender.
    pub targets: Vec<Uid>,
    /// Whether it goes on the reliable channel.
    pub reliable: bool,
    /// The application sent a string.
    pub text: bool,
    /// What receivers get: the delivered envelope and the payload.
    pub delivered: Bytes,
}

impl RelayedData {
    /// Whether it goes to `uid`.
    pub fn is_for(&self, uid: &Uid) -> bool {
        *uid != self.from && (self.targets.is_empty() || self.targets.contains(uid))
    }
}

/// A shared message.
pub type Relayed = Arc<RelayedData>;
