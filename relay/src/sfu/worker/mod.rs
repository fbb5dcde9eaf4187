//! The sans-IO state of one core: every session, participant and feed the core owns, and the
//! packet path between them.
//!
//! Inputs are `handle_*` calls that take `now`; outputs are drained with [`Worker::poll_output`]
//! after every input, and [`Worker::poll_timeout`] says when [`Worker::handle_timeout`] must be
//! called next. The worker never reads a clock, never touches a socket and never blocks, so the
//! whole forwarding path runs in tests under virtual time.
//!
//! Drain order after each input: `poll_output` until None, then `poll_timeout`.
//!
//! DTLS is the one protocol that does not run inside the worker (the DTLS library is async):
//! the worker decides *whether* a record may reach a handshake ([`Output::DtlsStart`],
//! [`Output::DtlsRecord`]), bounds how many run and for how long, and receives the outcome
//! through [`Worker::handle_dtls_connected`] / [`Worker::handle_dtls_failed`].

mod control;
mod data;
mod dtls;
mod egress;
mod fanout;
mod ingress;
mod quality;
mod record;
mod timers;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::control::Event;
use crate::engine::bwe::send_history::PacketResult;
use crate::engine::ice_lite::IceCredentials;
use crate::engine::rtcp::twcc::PacketStatus;
use crate::engine::rtcp::{Feedback, NtpClock};
use crate::engine::srtp::SrtpProfile;
use crate::error::ControlError;
use crate::ids::{FeedId, FeedKey, ParticipantKey, SessionKey, Sid, Uid};
use crate::stats::CoreStats;
use crate::FastMap;

use super::cross_core::{CrossCore, FeedRoute, RelayedPool};
use super::deadlines::Deadlines;
use super::feed::Feed;
use super::participant::{Participant, ParticipantUsage};
use super::pool::BufferPool;

/// Timing and limits of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Index of the core (reported in stats).
    pub core: usize,
    /// RFC 7675 consent timeout.
    pub consent_timeout: Duration,
    /// A DTLS handshake not finished after this is abandoned.
    pub dtls_handshake_timeout: Duration,
    /// Handshakes allowed in flight on this core at once.
    pub max_handshakes: usize,
    /// A feed that sent nothing for this long is reported stopped.
    pub feed_inactivity: Duration,
    /// Interval of receiver and sender reports.
    pub report_interval: Duration,
    /// Bytes a second each participant may send on data channels.
    pub data_rate: u64,
    /// Bytes a participant may send at once after a quiet spell.
    pub data_burst: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            core: 0,
            consent_timeout: crate::engine::ice_lite::DEFAULT_CONSENT_TIMEOUT,
            dtls_handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            feed_inactivity: Duration::from_secs(3),
            report_interval: Duration::from_secs(1),
            data_rate: DEFAULT_DATA_RATE,
            data_burst: DEFAULT_DATA_BURST,
        }
    }
}

/// Data-channel bytes a second a participant may send by default: 32 Mbit/s, far above chat,
/// cursors or game state, and low enough that one participant cannot take a core's time from
/// the others' media.
pub const DEFAULT_DATA_RATE: u64 = 4 * 1024 * 1024;

/// Data-channel bytes a participant may send at once by default: four of the largest
/// messages.
pub const DEFAULT_DATA_BURST: u64 = 1024 * 1024;

/// Packets handed to other cores that a core keeps for reuse (~2 MiB with their buffers): a
/// few hundred milliseconds of a busy feed, since sinks drop them within one of their
/// batches. More in flight than this (a sink far behind) costs allocations, not correctness.
const MAX_RELAYED: usize = 1024;

/// Idle packet buffers a core keeps: enough for a keyframe burst to a few hundred subscribers
/// (~4 MiB at most), beyond which returned buffers are freed.
const MAX_IDLE_BUFFERS: usize = 2048;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// What the I/O layer must do next.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram.
    Transmit(Transmit),
    /// Start a DTLS server handshake for this participant (records follow as `DtlsRecord`).
    DtlsStart {
        /// The participant.
        key: ParticipantKey,
        /// Certificate fingerprint to insist on, if known.
        remote_fingerprint: Option<String>,
        /// The SRTP profiles to accept, best first: the one the relay prefers among those the
        /// client's hello offered, or the relay's whole list when the hello could not be read.
        profiles: Vec<SrtpProfile>,
    },
    /// A DTLS record for the participant's handshake task.
    DtlsRecord {
        /// The participant.
        key: ParticipantKey,
        /// The datagram.
        data: Vec<u8>,
    },
    /// Tear down the participant's DTLS task.
    DtlsClose(ParticipantKey),
    /// Report to the control plane.
    Event(Event),
    /// An SCTP packet for the participant's DTLS association to encrypt and send.
    Sctp {
        /// The participant.
        key: ParticipantKey,
        /// The packet.
        packet: bytes::Bytes,
    },
    /// Hand a packet to the recorder's thread (dropped, and counted with
    /// [`Worker::handle_record_queue_full`], when its queue is full).
    Record(Box<crate::record::recording::RecordPacket>),
    /// Hand a message to another core (a session spread over several cores).
    CrossCore {
        /// The core.
        core: usize,
        /// The message.
        message: CrossCore,
    },
}

/// What a deadline of the worker belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    /// A participant's consent expiry, handshake timeout, congestion feedback or next RTCP
    /// report, whichever is first ([`Participant::next_deadline`]).
    Participant(ParticipantKey),
    /// A flowing feed's inactivity check.
    Feed(SessionKey, FeedKey),
    /// The next NACK toward a feed's publisher.
    Repair(SessionKey, FeedKey),
    /// A simulcast feed's look at which layers its subscribers here want (dynacast).
    Dynacast(SessionKey, FeedKey),
    /// The next packet a subscriber's pacer lets go.
    Pacer(ParticipantKey),
    /// A participant's SCTP timer, or the moment its rate lets more of its messages in.
    Data(ParticipantKey),
}

/// A session on this core.
struct Session {
    sid: Sid,
    participants: HashMap<Uid, ParticipantKey>,
    feeds: FastMap<FeedKey, Feed>,
    feed_keys: HashMap<FeedId, FeedKey>,
    /// The dominant speaker's video feeds: allocated right after screen shares.
    speaker_feeds: Vec<FeedId>,
    /// The other cores the session spans, which its data-channel messages go to.
    other_cores: Vec<usize>,
    /// The other cores whose receivers of the session hold its senders here, each until when
    /// at most ([`CrossCore::DataHold`]).
    remote_holds: Vec<(usize, Instant)>,
}

impl Session {
    fn feed_key(&self, sid: &Sid, feed_id: &FeedId) -> Result<FeedKey, ControlError> {
        self.feed_keys
            .get(feed_id)
            .copied()
            .ok_or_else(|| ControlError::NoSuchFeed {
                sid: sid.clone(),
                feed_id: feed_id.clone(),
            })
    }
}

/// A core's participants by key. Each is boxed: a participant is about 8.6 KB, and a hash
/// map keeps between an eighth and more than half of its slots empty, which then cost a
/// pointer each rather than a participant's size (measured in `tests/memory.rs`).
pub(crate) type Participants = FastMap<ParticipantKey, Box<Participant>>;

/// The sans-IO state of one core.
pub struct Worker {
    config: WorkerConfig,
    sessions: FastMap<SessionKey, Session>,
    session_keys: HashMap<Sid, SessionKey>,
    participants: Participants,
    by_ufrag: HashMap<String, ParticipantKey>,
    /// Looked up for every datagram received.
    by_addr: FastMap<SocketAddr, ParticipantKey>,
    outputs: VecDeque<Output>,
    stats: CoreStats,
    next_key: u64,
    handshakes: usize,
    /// When each participant and each flowing feed next needs the timer.
    timers: Deadlines<Timer>,
    /// Scratch space for [`Worker::handle_timeout`].
    later: Vec<(Timer, Instant)>,
    epoch: Instant,
    ntp: NtpClock,
    rng: StdRng,
    feedback: Vec<Feedback>,
    /// Scratch space for reading transport-wide feedback.
    statuses: Vec<PacketStatus>,
    /// Scratch space for the estimators' reading of it, one for the core's subscribers.
    feedback_results: Vec<PacketResult>,
    /// Scratch space for NACKs toward publishers, kept so that sending them allocates nothing.
    nack_seqs: Vec<u16>,
    nack_entries: Vec<(u16, u16)>,
    pool: BufferPool,
    /// Feeds published on other cores that have a replica here.
    replicas: HashMap<FeedRoute, (SessionKey, FeedKey)>,
    /// Packets handed to other cores, reused once they are done with them.
    relayed: RelayedPool,
    /// Scratch space: the receivers of a data-channel message.
    data_receivers: Vec<ParticipantKey>,
    /// Senders a receiver let go of, to take in from next.
    data_wake: Vec<ParticipantKey>,
}

impl Worker {
    /// A worker with no sessions. `now` and `wall` anchor RTCP wall-clock times; `seed` makes
    /// random choices (SSRCs, initial sequence numbers, ICE credentials) reproducible in tests.
    pub fn new(config: WorkerConfig, now: Instant, wall: SystemTime, seed: u64) -> Self {
        let stats = CoreStats {
            core: config.core,
            ..Default::default()
        };
        Worker {
            config,
            sessions: FastMap::default(),
            session_keys: HashMap::new(),
            participants: FastMap::default(),
            by_ufrag: HashMap::new(),
            by_addr: FastMap::default(),
            outputs: VecDeque::new(),
            stats,
            next_key: 1,
            handshakes: 0,
            timers: Deadlines::default(),
            later: Vec::new(),
            epoch: now,
            ntp: NtpClock::new(now, wall),
            rng: StdRng::seed_from_u64(seed),
            feedback: Vec::new(),
            statuses: Vec::new(),
            feedback_results: Vec::new(),
            nack_seqs: Vec::new(),
            nack_entries: Vec::new(),
            pool: BufferPool::new(MAX_IDLE_BUFFERS),
            replicas: HashMap::new(),
            relayed: RelayedPool::new(MAX_RELAYED),
            data_receivers: Vec::new(),
            data_wake: Vec::new(),
        }
    }

    /// Return the buffer of a sent [`Transmit`] so the next forwarded copy reuses it.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        self.pool.give(buffer);
    }

    /// Outputs waiting to be polled.
    pub fn pending_outputs(&self) -> usize {
        self.outputs.len()
    }

    /// Next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Worker::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// What the path to participant `uid` of `sid` carries, bit/s, where the relay estimates
    /// it (the participant subscribes with transport-wide feedback).
    pub fn estimate(&self, sid: &Sid, uid: &Uid) -> Result<Option<f64>, ControlError> {
        let (_, key) = self.key_of(sid, uid)?;
        Ok(self
            .participants
            .get(&key)
            .and_then(|p| p.transport.estimate()))
    }

    /// Counters snapshot.
    pub fn stats(&self) -> CoreStats {
        let mut s = self.stats.clone();
        s.sessions = self.sessions.len() as u64;
        s.participants = self.participants.len() as u64;
        s.handshakes = self.handshakes as u64;
        s.buffers_allocated = self.pool.allocated() + self.relayed.allocated();
        for p in self.participants.values() {
            if let Some(bps) = p.transport.estimate() {
                s.estimates_kbps.record((bps / 1000.0) as u64, 1);
            }
        }
        s
    }

    /// Datagrams queued for sending so far: a running count, whose difference across an
    /// input says how many datagrams that input produced.
    pub fn packets_out(&self) -> u64 {
        self.stats.packets_out
    }

    /// The I/O layer measured that a sent datagram spent `delay` inside the relay, from the
    /// kernel's receipt of the datagram it answers to the kernel taking it.
    pub fn record_forwarding_delay(&mut self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.stats.forwarding_delay.record(us, 1);
    }

    /// The worker's handle for participant `uid` of `sid` (what its DTLS and SCTP inputs
    /// and outputs name it by).
    pub fn participant_key(&self, sid: &Sid, uid: &Uid) -> Result<ParticipantKey, ControlError> {
        Ok(self.key_of(sid, uid)?.1)
    }

    /// Traffic counters of a participant.
    pub fn participant_usage(&self, sid: &Sid, uid: &Uid) -> Option<ParticipantUsage> {
        let (_, key) = self.key_of(sid, uid).ok()?;
        Some(self.participants.get(&key)?.usage)
    }

    /// Traffic counters of every participant of a session (for metering).
    pub fn session_usage(&self, sid: &Sid) -> Result<Vec<(Uid, ParticipantUsage)>, ControlError> {
        let skey = self.session_key(sid)?;
        Ok(self.sessions[&skey]
            .participants
            .iter()
            .filter_map(|(uid, key)| Some((uid.clone(), self.participants.get(key)?.usage)))
            .collect())
    }

    /// Number of sessions (placement uses it).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the session lives on this worker.
    pub fn has_session(&self, sid: &Sid) -> bool {
        self.session_keys.contains_key(sid)
    }

    /// Make the participant's timer fire at `at` at the latest.
    fn arm(&mut self, key: ParticipantKey, at: Instant) {
        self.timers.arm(Timer::Participant(key), at);
    }

    fn transmit(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        transmit(&mut self.stats, &mut self.outputs, destination, contents);
    }
}

/// Count a datagram as sent and queue it; for callers that hold a participant borrowed, which
/// [`Worker::transmit`] would conflict with.
fn transmit(
    stats: &mut CoreStats,
    outputs: &mut VecDeque<Output>,
    destination: SocketAddr,
    contents: Vec<u8>,
) {
    stats.packets_out += 1;
    stats.bytes_out += contents.len() as u64;
    outputs.push_back(Output::Transmit(Transmit {
        destination,
        contents,
    }));
}

/// Remove a feed from its session and every subscription to it from its subscribers; returns
/// the feed's description if it existed.
fn remove_feed(
    session: &mut Session,
    participants: &mut Participants,
    fkey: FeedKey,
) -> Option<crate::control::FeedDescription> {
    let feed = session.feeds.remove(&fkey)?;
    session.feed_keys.remove(&feed.description.feed_id);
    if let Some(p) = participants.get_mut(&feed.publisher) {
        p.forget_published(p.published_ssrcs(fkey));
        p.feeds.retain(|f| *f != fkey);
    }
    for c in feed.consumers {
        if let Some(sub) = participants.get_mut(&c.subscriber) {
            for ssrc in c.ssrcs() {
                sub.subscriptions.remove(&ssrc);
            }
        }
    }
    Some(feed.description)
}

fn random_credentials(rng: &mut StdRng) -> IceCredentials {
    const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| ICE_CHARS[rng.random_range(0..ICE_CHARS.len())] as char)
            .collect()
    };
    IceCredentials {
        ufrag: pick(8),
        pwd: pick(24),
    }
}
