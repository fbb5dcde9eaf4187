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

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtcp::packet::Packet;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::receiver_report::ReceiverReport;
use rtcp::sender_report::SenderReport;

use crate::control::{
    DisconnectReason, Event, FeedDescription, ParticipantConfig, SubscribeOptions, SubscriptionInfo,
};
use crate::engine::client_hello;
use crate::engine::demux::{classify, PacketKind};
use crate::engine::ice_lite::{BindingRequest, IceCredentials, IceLite};
use crate::engine::rtcp::{parse_feedback, Feedback, NtpClock};
use crate::engine::srtp::{SrtpKeys, SrtpProfile, SrtpSession};
use crate::engine::{rtcp as rtcp_engine, rtp};
use crate::error::ControlError;
use crate::ids::{FeedId, FeedKey, ParticipantKey, SessionKey, Sid, Ssrc, Uid};
use crate::stats::{CoreStats, DropReason};

use super::consumer::Consumer;
use super::cross_core::{CrossCore, FeedRoute, RelayedPool, RtpInfo};
use super::feed::Feed;
use super::participant::{DtlsState, Participant, ParticipantUsage, PendingHello};
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
        }
    }
}

/// DTLS records held while waiting for a whole ClientHello; past this the handshake starts
/// anyway, with the relay's whole list of profiles. Chromium's ClientHello takes two.
const MAX_HELLO_RECORDS: usize = 8;

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
    /// Hand a message to another core (a session spread over several cores).
    CrossCore {
        /// The core.
        core: usize,
        /// The message.
        message: CrossCore,
    },
}

/// A session on this core.
struct Session {
    sid: Sid,
    participants: HashMap<Uid, ParticipantKey>,
    feeds: HashMap<FeedKey, Feed>,
    feed_keys: HashMap<FeedId, FeedKey>,
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

/// The sans-IO state of one core.
pub struct Worker {
    config: WorkerConfig,
    sessions: HashMap<SessionKey, Session>,
    session_keys: HashMap<Sid, SessionKey>,
    participants: HashMap<ParticipantKey, Participant>,
    by_ufrag: HashMap<String, ParticipantKey>,
    by_addr: HashMap<SocketAddr, ParticipantKey>,
    outputs: VecDeque<Output>,
    stats: CoreStats,
    next_key: u64,
    handshakes: usize,
    next_timeout: Option<Instant>,
    epoch: Instant,
    ntp: NtpClock,
    rng: StdRng,
    feedback: Vec<Feedback>,
    pool: BufferPool,
    /// Feeds published on other cores that have a replica here.
    replicas: HashMap<FeedRoute, (SessionKey, FeedKey)>,
    /// Packets handed to other cores, reused once they are done with them.
    relayed: RelayedPool,
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
            sessions: HashMap::new(),
            session_keys: HashMap::new(),
            participants: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            outputs: VecDeque::new(),
            stats,
            next_key: 1,
            handshakes: 0,
            next_timeout: None,
            epoch: now,
            ntp: NtpClock::new(now, wall),
            rng: StdRng::seed_from_u64(seed),
            feedback: Vec::new(),
            pool: BufferPool::new(MAX_IDLE_BUFFERS),
            replicas: HashMap::new(),
            relayed: RelayedPool::new(MAX_RELAYED),
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
        self.next_timeout
    }

    /// Counters snapshot.
    pub fn stats(&self) -> CoreStats {
        let mut s = self.stats.clone();
        s.sessions = self.sessions.len() as u64;
        s.participants = self.participants.len() as u64;
        s.handshakes = self.handshakes as u64;
        s.buffers_allocated = self.pool.allocated() + self.relayed.allocated();
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

    fn arm(&mut self, at: Instant) {
        self.next_timeout = Some(self.next_timeout.map_or(at, |t| t.min(at)));
    }

    fn transmit(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        self.stats.packets_out += 1;
        self.stats.bytes_out += contents.len() as u64;
        self.outputs.push_back(Output::Transmit(Transmit {
            destination,
            contents,
        }));
    }

    // ----- control ---------------------------------------------------------------------------

    fn new_key(&mut self) -> u64 {
        let k = self.next_key;
        self.next_key += 1;
        k
    }

    /// Create an empty session.
    pub fn create_session(&mut self, sid: Sid) -> Result<(), ControlError> {
        if self.session_keys.contains_key(&sid) {
            return Err(ControlError::SessionExists { sid });
        }
        let key = SessionKey(self.new_key());
        self.session_keys.insert(sid.clone(), key);
        self.sessions.insert(
            key,
            Session {
                sid,
                participants: HashMap::new(),
                feeds: HashMap::new(),
                feed_keys: HashMap::new(),
            },
        );
        Ok(())
    }

    fn session_key(&self, sid: &Sid) -> Result<SessionKey, ControlError> {
        self.session_keys
            .get(sid)
            .copied()
            .ok_or_else(|| ControlError::NoSuchSession { sid: sid.clone() })
    }

    /// Remove a session and every participant in it.
    pub fn remove_session(&mut self, sid: &Sid) -> Result<(), ControlError> {
        let skey = self.session_key(sid)?;
        let keys: Vec<ParticipantKey> = self.sessions[&skey]
            .participants
            .values()
            .copied()
            .collect();
        for key in keys {
            self.remove_participant_by_key(key);
        }
        self.sessions.remove(&skey);
        self.session_keys.remove(sid);
        self.replicas.retain(|_, (s, _)| *s != skey);
        Ok(())
    }

    /// Add a participant; returns the relay's ICE credentials for it.
    pub fn add_participant(
        &mut self,
        sid: &Sid,
        uid: Uid,
        config: ParticipantConfig,
    ) -> Result<IceCredentials, ControlError> {
        let skey = self.session_key(sid)?;
        if self.sessions[&skey].participants.contains_key(&uid) {
            return Err(ControlError::ParticipantExists {
                sid: sid.clone(),
                uid,
            });
        }
        let creds = loop {
            let c = random_credentials(&mut self.rng);
            if !self.by_ufrag.contains_key(&c.ufrag) {
                break c;
            }
        };
        let key = ParticipantKey(self.new_key());
        let ice = IceLite::new(
            creds.clone(),
            config.remote_ufrag,
            self.config.consent_timeout,
        );
        let rtcp_ssrc = self.rng.random();
        self.sessions
            .get_mut(&skey)
            .expect("session_key found it")
            .participants
            .insert(uid.clone(), key);
        self.by_ufrag.insert(creds.ufrag.clone(), key);
        self.participants.insert(
            key,
            Participant::new(
                sid.clone(),
                skey,
                uid,
                ice,
                config.remote_fingerprint,
                rtcp_ssrc,
            ),
        );
        Ok(creds)
    }

    /// ICE restart: fresh relay credentials for the participant (DTLS and SRTP are kept).
    pub fn restart_ice(&mut self, sid: &Sid, uid: &Uid) -> Result<IceCredentials, ControlError> {
        let (_, key) = self.key_of(sid, uid)?;
        let creds = loop {
            let c = random_credentials(&mut self.rng);
            if !self.by_ufrag.contains_key(&c.ufrag) {
                break c;
            }
        };
        let p = self.participants.get_mut(&key).expect("participant of key");
        self.by_ufrag.remove(&p.ice.local().ufrag);
        self.by_ufrag.insert(creds.ufrag.clone(), key);
        p.ice.restart(creds.clone());
        Ok(creds)
    }

    /// Tell the relay the participant's ICE ufrag and certificate fingerprint once signalling
    /// has them (from the browser's answer). The fingerprint can be set until DTLS starts and
    /// never changed afterwards.
    pub fn update_participant(
        &mut self,
        sid: &Sid,
        uid: &Uid,
        config: ParticipantConfig,
    ) -> Result<(), ControlError> {
        let (_, key) = self.key_of(sid, uid)?;
        let p = self.participants.get_mut(&key).expect("participant of key");
        if p.dtls != DtlsState::Idle && config.remote_fingerprint != p.remote_fingerprint {
            return Err(ControlError::DtlsStarted);
        }
        p.ice.set_remote_ufrag(config.remote_ufrag);
        p.remote_fingerprint = config.remote_fingerprint;
        Ok(())
    }

    /// Remove a participant, its feeds and its subscriptions. No event is emitted.
    pub fn remove_participant(&mut self, sid: &Sid, uid: &Uid) -> Result<(), ControlError> {
        let (_, key) = self.key_of(sid, uid)?;
        self.remove_participant_by_key(key);
        Ok(())
    }

    /// The replicas of other cores' feeds in `sid` that have no subscriber here, however
    /// their subscribers left: the control plane stops their flow to this core.
    pub fn idle_replicas(&self, sid: &Sid) -> Result<Vec<FeedRoute>, ControlError> {
        let skey = self.session_key(sid)?;
        Ok(self.sessions[&skey]
            .feeds
            .values()
            .filter_map(Feed::idle_replica)
            .collect())
    }

    fn key_of(&self, sid: &Sid, uid: &Uid) -> Result<(SessionKey, ParticipantKey), ControlError> {
        let skey = self.session_key(sid)?;
        let key = self.sessions[&skey]
            .participants
            .get(uid)
            .copied()
            .ok_or_else(|| ControlError::NoSuchParticipant {
                sid: sid.clone(),
                uid: uid.clone(),
            })?;
        Ok((skey, key))
    }

    fn remove_participant_by_key(&mut self, key: ParticipantKey) {
        let Some(p) = self.participants.remove(&key) else {
            return;
        };
        self.by_ufrag.remove(&p.ice.local().ufrag);
        if let Some(addr) = p.ice.selected() {
            if self.by_addr.get(&addr) == Some(&key) {
                self.by_addr.remove(&addr);
            }
        }
        match p.dtls {
            DtlsState::Idle => {}
            DtlsState::Handshaking { .. } => {
                self.handshakes -= 1;
                self.outputs.push_back(Output::DtlsClose(key));
            }
            DtlsState::Connected { .. } => self.outputs.push_back(Output::DtlsClose(key)),
        }
        let Some(session) = self.sessions.get_mut(&p.session) else {
            return;
        };
        session.participants.remove(&p.uid);
        // Its subscriptions.
        for fkey in p.subscriptions.values() {
            if let Some(feed) = session.feeds.get_mut(fkey) {
                feed.consumers.retain(|c| c.subscriber != key);
            }
        }
        // Its feeds, and every subscription to them.
        for fkey in p.published.values() {
            remove_feed(session, &mut self.participants, *fkey);
        }
    }

    /// Declare (or update) a feed the participant publishes.
    ///
    /// Declaring an existing feed id again replaces its description (e.g. a new SSRC after
    /// renegotiation); subscribers keep their subscription and see a continuous stream.
    ///
    /// Returns where the feed lives relay-wide, for replicas on other cores.
    pub fn publish(
        &mut self,
        sid: &Sid,
        uid: &Uid,
        description: FeedDescription,
    ) -> Result<FeedRoute, ControlError> {
        let (skey, key) = self.key_of(sid, uid)?;
        if description.clock_rate == 0 {
            return Err(ControlError::InvalidFeed {
                reason: "clock_rate must not be 0".into(),
            });
        }
        if description.payload_types.iter().any(|pt| *pt > 127) {
            return Err(ControlError::InvalidFeed {
                reason: "payload types are 0..=127".into(),
            });
        }
        let existing = self.sessions[&skey]
            .feed_keys
            .get(&description.feed_id)
            .copied();
        let fkey = existing.unwrap_or_else(|| FeedKey(self.new_key()));
        // key_of found both.
        let session = self.sessions.get_mut(&skey).expect("session of key");
        let p = self.participants.get_mut(&key).expect("participant of key");
        let ssrc = description.ssrc.0;
        if let Some(other) = p.published.get(&ssrc) {
            if *other != fkey {
                return Err(ControlError::SsrcInUse { ssrc });
            }
        }
        match session.feeds.get_mut(&fkey) {
            Some(feed) if feed.publisher != key => {
                return Err(ControlError::FeedOwnedByOther {
                    feed_id: description.feed_id,
                })
            }
            Some(feed) => {
                p.published.remove(&feed.description.ssrc.0);
                p.published.insert(ssrc, fkey);
                for c in &mut feed.consumers {
                    c.rewriter.request_resync();
                }
                feed.update(description);
            }
            None => {
                p.published.insert(ssrc, fkey);
                session.feed_keys.insert(description.feed_id.clone(), fkey);
                session.feeds.insert(fkey, Feed::new(key, description));
            }
        }
        Ok(FeedRoute {
            core: self.config.core,
            session: skey,
            feed: fkey,
        })
    }

    /// Declare (or update) the replica of a feed published on another core, so that
    /// participants here can subscribe to it.
    pub fn add_remote_feed(
        &mut self,
        sid: &Sid,
        description: FeedDescription,
        route: FeedRoute,
    ) -> Result<(), ControlError> {
        let skey = self.session_key(sid)?;
        if let Some(&(_, fkey)) = self.replicas.get(&route) {
            let session = self.sessions.get_mut(&skey).expect("session_key found it");
            if let Some(feed) = session.feeds.get_mut(&fkey) {
                session.feed_keys.remove(&feed.description.feed_id);
                session.feed_keys.insert(description.feed_id.clone(), fkey);
                for c in &mut feed.consumers {
                    c.rewriter.request_resync();
                }
                feed.update(description);
            }
            return Ok(());
        }
        if self.sessions[&skey]
            .feed_keys
            .contains_key(&description.feed_id)
        {
            return Err(ControlError::FeedOwnedByOther {
                feed_id: description.feed_id,
            });
        }
        let fkey = FeedKey(self.new_key());
        let session = self.sessions.get_mut(&skey).expect("session_key found it");
        session.feed_keys.insert(description.feed_id.clone(), fkey);
        session
            .feeds
            .insert(fkey, Feed::replica(route, description));
        self.replicas.insert(route, (skey, fkey));
        Ok(())
    }

    /// Remove the replica of a feed and every subscription to it here.
    pub fn remove_remote_feed(&mut self, route: FeedRoute) {
        let Some((skey, fkey)) = self.replicas.remove(&route) else {
            return;
        };
        if let Some(session) = self.sessions.get_mut(&skey) {
            remove_feed(session, &mut self.participants, fkey);
        }
    }

    /// Forward a feed published here to `core` too (it has subscribers of the feed), or stop.
    pub fn set_sink(
        &mut self,
        route: FeedRoute,
        core: usize,
        on: bool,
    ) -> Result<(), ControlError> {
        let feed = self
            .sessions
            .get_mut(&route.session)
            .and_then(|s| s.feeds.get_mut(&route.feed))
            .filter(|f| f.origin.is_none())
            .ok_or(ControlError::NoSuchRoute)?;
        feed.sinks.retain(|c| *c != core);
        if on && core != self.config.core {
            feed.sinks.push(core);
        }
        Ok(())
    }

    /// Remove a feed and every subscription to it.
    pub fn unpublish(
        &mut self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
    ) -> Result<(), ControlError> {
        let (skey, key) = self.key_of(sid, uid)?;
        let session = self.sessions.get_mut(&skey).expect("session of key");
        let fkey = session.feed_key(sid, feed_id)?;
        if session.feeds[&fkey].publisher != key {
            return Err(ControlError::FeedOwnedByOther {
                feed_id: feed_id.clone(),
            });
        }
        if let Some(ssrc) = remove_feed(session, &mut self.participants, fkey) {
            if let Some(p) = self.participants.get_mut(&key) {
                p.published.remove(&ssrc);
            }
        }
        Ok(())
    }

    /// Subscribe a participant to a feed of the same session.
    pub fn subscribe(
        &mut self,
        now: Instant,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
        options: SubscribeOptions,
    ) -> Result<SubscriptionInfo, ControlError> {
        let (skey, key) = self.key_of(sid, uid)?;
        let session = self.sessions.get_mut(&skey).expect("session of key");
        let fkey = session.feed_key(sid, feed_id)?;
        let feed = session.feeds.get_mut(&fkey).expect("feed_key found it");
        if feed.publisher == key {
            return Err(ControlError::OwnFeed { uid: uid.clone() });
        }
        if feed.consumers.iter().any(|c| c.subscriber == key) {
            return Err(ControlError::AlreadySubscribed {
                uid: uid.clone(),
                feed_id: feed_id.clone(),
            });
        }
        let p = self.participants.get_mut(&key).expect("participant of key");
        let ssrc = loop {
            let s: u32 = self.rng.random();
            if s != 0 && s != p.rtcp_ssrc && !p.subscriptions.contains_key(&s) {
                break s;
            }
        };
        p.subscriptions.insert(ssrc, fkey);
        let mut consumer = Consumer::new(key, Ssrc(ssrc), self.rng.random(), self.rng.random());
        consumer.mid = options.mid.map(String::into_bytes);
        feed.consumers.push(consumer);
        let info = SubscriptionInfo {
            feed_id: feed_id.clone(),
            ssrc: Ssrc(ssrc),
            kind: feed.description.kind,
            feed: feed.description.clone(),
        };
        // No keyframe request yet: the subscriber cannot use one before it has applied the
        // description of this stream. The control plane calls `request_keyframe` when it has
        // (signalling: when the answer arrives), and a first DTLS connection asks by itself.
        let _ = now;
        Ok(info)
    }

    /// Ask the publisher of a feed for a keyframe (rate-limited like subscribers' requests).
    /// Signalling calls this once a subscriber has applied the description of a new feed.
    pub fn request_keyframe(
        &mut self,
        now: Instant,
        sid: &Sid,
        feed_id: &FeedId,
    ) -> Result<(), ControlError> {
        let skey = self.session_key(sid)?;
        let session = self.sessions.get_mut(&skey).expect("session_key found it");
        let fkey = session.feed_key(sid, feed_id)?;
        self.keyframe_request(now, skey, fkey, false);
        Ok(())
    }

    /// End a subscription.
    pub fn unsubscribe(
        &mut self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
    ) -> Result<(), ControlError> {
        let (skey, key) = self.key_of(sid, uid)?;
        let session = self.sessions.get_mut(&skey).expect("session of key");
        let not_subscribed = || ControlError::NotSubscribed {
            uid: uid.clone(),
            feed_id: feed_id.clone(),
        };
        let fkey = session.feed_keys.get(feed_id).ok_or_else(not_subscribed)?;
        let feed = session.feeds.get_mut(fkey).ok_or_else(not_subscribed)?;
        let pos = feed
            .consumers
            .iter()
            .position(|c| c.subscriber == key)
            .ok_or_else(not_subscribed)?;
        let c = feed.consumers.swap_remove(pos);
        if let Some(p) = self.participants.get_mut(&key) {
            p.subscriptions.remove(&c.ssrc.0);
        }
        Ok(())
    }

    // ----- packet path -----------------------------------------------------------------------

    /// A datagram arrived from `src`; `arrived` is the kernel's receive stamp, if any, passed
    /// on with packets for other cores.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        arrived: Option<SystemTime>,
        src: SocketAddr,
        datagram: &[u8],
    ) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        let result = match classify(datagram) {
            PacketKind::Stun => self.handle_stun(now, src, datagram),
            PacketKind::Dtls => self.handle_dtls_record(now, src, datagram),
            PacketKind::Rtp => self.handle_rtp(now, arrived, src, datagram),
            PacketKind::Rtcp => self.handle_rtcp(now, src, datagram),
            PacketKind::Unknown => Err(DropReason::UnknownProtocol),
        };
        if let Err(reason) = result {
            self.stats.drop(reason);
        }
    }

    fn handle_stun(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let mut req = BindingRequest::parse(datagram)?;
        let key = *self
            .by_ufrag
            .get(&req.local_ufrag())
            .ok_or(DropReason::StunUnknownUfrag)?;
        // by_ufrag only holds live participants.
        let p = self
            .participants
            .get_mut(&key)
            .expect("participant of ufrag");
        let outcome = p.ice.handle_binding(now, src, &mut req)?;
        p.usage.packets_in += 1;
        p.usage.bytes_in += datagram.len() as u64;
        let consent = p.ice.poll_timeout();
        if let Some(previous) = outcome.selected_changed {
            if let Some(old) = previous {
                self.outputs
                    .push_back(Output::Event(Event::ParticipantMigrated {
                        sid: p.sid.clone(),
                        uid: p.uid.clone(),
                        from: old,
                        to: src,
                    }));
                if self.by_addr.get(&old) == Some(&key) {
                    self.by_addr.remove(&old);
                }
            }
            self.by_addr.insert(src, key);
        }
        if let Some(consent) = consent {
            self.arm(consent);
        }
        self.transmit(src, outcome.response);
        Ok(())
    }

    fn handle_dtls_record(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let (key, p) = authenticated_source(
            &self.by_addr,
            &mut self.participants,
            src,
            datagram.len(),
            DropReason::DtlsUnknownSource,
        )?;
        if p.dtls == DtlsState::Idle {
            if self.handshakes >= self.config.max_handshakes {
                return Err(DropReason::DtlsHandshakeLimit);
            }
            self.handshakes += 1;
            p.dtls = DtlsState::Handshaking { since: now };
            p.hello = Some(PendingHello::default());
            let at = now + self.config.dtls_handshake_timeout;
            self.next_timeout = Some(self.next_timeout.map_or(at, |t| t.min(at)));
        }
        let Some(pending) = p.hello.as_mut() else {
            self.outputs.push_back(Output::DtlsRecord {
                key,
                data: datagram.to_vec(),
            });
            return Ok(());
        };
        // Hold the records until the ClientHello is whole (or plainly will not be), then
        // start the handshake with the profile the relay prefers among those offered: the
        // DTLS library would take the client's first.
        pending.hello.handle_datagram(datagram);
        pending.records.push(datagram.to_vec());
        let offered = pending.hello.offered_srtp_profiles();
        if offered.is_none()
            && !pending.hello.is_complete()
            && pending.records.len() < MAX_HELLO_RECORDS
        {
            return Ok(());
        }
        let profiles = offered
            .and_then(|offered| client_hello::choose(&SrtpProfile::PREFERENCE, &offered))
            .map_or_else(|| SrtpProfile::PREFERENCE.to_vec(), |p| vec![p]);
        let records = p.hello.take().map(|h| h.records).unwrap_or_default();
        self.outputs.push_back(Output::DtlsStart {
            key,
            remote_fingerprint: p.remote_fingerprint.clone(),
            profiles,
        });
        for data in records {
            self.outputs.push_back(Output::DtlsRecord { key, data });
        }
        Ok(())
    }

    fn handle_rtp(
        &mut self,
        now: Instant,
        arrived: Option<SystemTime>,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let (_, p) = authenticated_source(
            &self.by_addr,
            &mut self.participants,
            src,
            datagram.len(),
            DropReason::RtpUnknownSource,
        )?;
        let srtp = p.srtp.as_mut().ok_or(DropReason::SrtpNotReady)?;
        // Route by the cleartext SSRC before decrypting, so that undeclared SSRCs cost no
        // crypto and create no SRTP state.
        let ssrc = rtp::peek_ssrc(datagram).ok_or(DropReason::RtpMalformed)?;
        let fkey = *p.published.get(&ssrc).ok_or(DropReason::RtpUnknownSsrc)?;
        // The SRTP library parses the cleartext header itself and trusts its length fields.
        rtp::header_len(datagram).ok_or(DropReason::RtpMalformed)?;
        let mut plain = self.pool.take();
        if let Err(reason) = srtp.unprotect_rtp(datagram, &mut plain) {
            self.pool.give(plain);
            return Err(reason);
        }
        let header = rtp::parse(&plain).ok_or(DropReason::RtpMalformed)?;
        // `published` only names feeds that exist in the participant's session.
        let skey = p.session;
        let session = self
            .sessions
            .get_mut(&skey)
            .expect("session of participant");
        let feed = session.feeds.get_mut(&fkey).expect("feed of participant");
        let desc = &feed.description;
        if !desc.payload_types.is_empty() && !desc.payload_types.contains(&header.payload_type) {
            self.pool.give(plain);
            return Err(DropReason::RtpUnknownPayloadType);
        }
        let arrival = (now.saturating_duration_since(self.epoch).as_secs_f64()
            * desc.clock_rate as f64) as i64;
        feed.recv
            .on_packet(header.sequence, header.timestamp, arrival);
        if feed.last_packet_at.is_none() {
            self.outputs.push_back(Output::Event(Event::FeedStarted {
                sid: p.sid.clone(),
                uid: p.uid.clone(),
                feed_id: desc.feed_id.clone(),
            }));
        }
        let info = RtpInfo {
            ssrc,
            sequence: header.sequence,
            timestamp: header.timestamp,
            payload_len: header.payload_len,
        };
        let mut out = Outbox {
            participants: &mut self.participants,
            pool: &mut self.pool,
            stats: &mut self.stats,
            outputs: &mut self.outputs,
            next_timeout: &mut self.next_timeout,
            inactivity: self.config.feed_inactivity,
        };
        out.fan_out(now, feed, &plain, info);
        if feed.sinks.is_empty() {
            self.pool.give(plain);
        } else {
            // Other cores have subscribers: hand them the decrypted packet, shared.
            let route = FeedRoute {
                core: self.config.core,
                session: skey,
                feed: fkey,
            };
            let (packet, previous) = self.relayed.wrap(plain, info, arrived);
            self.pool.give(previous);
            for &core in &feed.sinks {
                self.outputs.push_back(Output::CrossCore {
                    core,
                    message: CrossCore::Rtp {
                        route,
                        packet: packet.clone(),
                    },
                });
            }
        }
        Ok(())
    }

    /// A message from another core.
    pub fn handle_cross_core(&mut self, now: Instant, message: CrossCore) {
        match message {
            CrossCore::Rtp { route, packet } => {
                self.stats.cross_core_rtp_in += 1;
                let Some(&(skey, fkey)) = self.replicas.get(&route) else {
                    // The replica went away while the packet was queued.
                    return;
                };
                let Some(feed) = self
                    .sessions
                    .get_mut(&skey)
                    .and_then(|s| s.feeds.get_mut(&fkey))
                else {
                    return;
                };
                let mut out = Outbox {
                    participants: &mut self.participants,
                    pool: &mut self.pool,
                    stats: &mut self.stats,
                    outputs: &mut self.outputs,
                    next_timeout: &mut self.next_timeout,
                    inactivity: self.config.feed_inactivity,
                };
                out.fan_out(now, feed, &packet.plain, packet.info);
            }
            CrossCore::KeyframeRequest {
                route,
                bypass_limit,
            } => {
                if route.core == self.config.core {
                    self.keyframe_request(now, route.session, route.feed, bypass_limit);
                }
            }
        }
    }

    /// Ask a feed's publisher for a keyframe: directly when it is on this core, through its
    /// origin core for a replica. Rate-limited per feed unless `bypass_limit`.
    fn keyframe_request(
        &mut self,
        now: Instant,
        skey: SessionKey,
        fkey: FeedKey,
        bypass_limit: bool,
    ) {
        let Some(feed) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.feeds.get_mut(&fkey))
        else {
            return;
        };
        if bypass_limit {
            feed.last_keyframe_request = Some(now);
        } else if !feed.allow_keyframe_request(now) {
            self.stats.keyframe_requests_suppressed += 1;
            return;
        }
        match feed.origin {
            Some(route) => self.outputs.push_back(Output::CrossCore {
                core: route.core,
                message: CrossCore::KeyframeRequest {
                    route,
                    bypass_limit,
                },
            }),
            None => {
                let (publisher, ssrc) = (feed.publisher, feed.description.ssrc.0);
                self.send_pli(publisher, ssrc);
            }
        }
    }

    fn handle_rtcp(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let (key, p) = authenticated_source(
            &self.by_addr,
            &mut self.participants,
            src,
            datagram.len(),
            DropReason::RtcpUnknownSource,
        )?;
        let srtp = p.srtp.as_mut().ok_or(DropReason::SrtpNotReady)?;
        let plain = srtp.unprotect_rtcp(datagram)?;
        let mut feedback = std::mem::take(&mut self.feedback);
        feedback.clear();
        let parsed = parse_feedback(&plain, &mut feedback);
        if parsed.is_none() {
            self.feedback = feedback;
            return Err(DropReason::RtcpMalformed);
        }
        for fb in feedback.drain(..) {
            self.apply_feedback(now, key, fb);
        }
        self.feedback = feedback;
        Ok(())
    }

    fn apply_feedback(&mut self, now: Instant, key: ParticipantKey, fb: Feedback) {
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&p.session) else {
            return;
        };
        match fb {
            Feedback::SenderReport {
                ssrc,
                ntp,
                rtp_time,
            } => {
                if let Some(feed) = p
                    .published
                    .get(&ssrc)
                    .and_then(|f| session.feeds.get_mut(f))
                {
                    feed.recv.on_sender_report(ntp, now);
                    feed.last_sr = Some((ntp, rtp_time));
                }
            }
            Feedback::KeyframeRequest { media_ssrc } => {
                let Some(&fkey) = p.subscriptions.get(&media_ssrc) else {
                    return;
                };
                let skey = p.session;
                self.keyframe_request(now, skey, fkey, false);
            }
        }
    }

    fn send_pli(&mut self, publisher: ParticipantKey, media_ssrc: u32) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let Some(dst) = p.media_destination() else {
            return;
        };
        let pli: Vec<Box<dyn Packet + Send + Sync>> = vec![Box::new(PictureLossIndication {
            sender_ssrc: p.rtcp_ssrc,
            media_ssrc,
        })];
        let Some(plain) = rtcp_engine::marshal(&pli) else {
            return;
        };
        let srtp = p.srtp.as_mut().expect("keyed publisher");
        match srtp.protect_rtcp(&plain) {
            Ok(sealed) => {
                p.usage.packets_out += 1;
                p.usage.bytes_out += sealed.len() as u64;
                self.stats.keyframe_requests_forwarded += 1;
                self.transmit(dst, sealed);
            }
            Err(reason) => self.stats.drop(reason),
        }
    }

    // ----- DTLS outcomes ---------------------------------------------------------------------

    /// The DTLS handshake of `key` completed with these SRTP keys.
    pub fn handle_dtls_connected(&mut self, now: Instant, key: ParticipantKey, keys: SrtpKeys) {
        let Some(p) = self.participants.get_mut(&key) else {
            return; // removed meanwhile; its task is being closed
        };
        if !matches!(p.dtls, DtlsState::Handshaking { .. }) {
            return;
        }
        self.handshakes -= 1;
        let session = match SrtpSession::new(&keys) {
            Ok(s) => s,
            Err(e) => {
                let detail = format!("SRTP keys: {e}");
                self.disconnect(key, DisconnectReason::DtlsFailed { detail });
                return;
            }
        };
        p.srtp = Some(session);
        p.dtls = DtlsState::Connected {
            profile: keys.profile,
        };
        let next = now + self.config.report_interval;
        p.next_report = Some(next);
        if let Some(address) = p.ice.selected() {
            self.outputs
                .push_back(Output::Event(Event::ParticipantConnected {
                    sid: p.sid.clone(),
                    uid: p.uid.clone(),
                    address,
                    profile: keys.profile,
                }));
        }
        // Ask the publishers this participant subscribes to for a keyframe: it can decode
        // nothing before one. This bypasses the per-feed limit (once per subscriber), since a
        // request made moments ago for someone else arrived before this one could receive.
        let skey = p.session;
        let feeds: Vec<FeedKey> = p.subscriptions.values().copied().collect();
        for fkey in feeds {
            self.keyframe_request(now, skey, fkey, true);
        }
        self.arm(next);
    }

    /// The DTLS handshake of `key` failed.
    pub fn handle_dtls_failed(&mut self, key: ParticipantKey, detail: String) {
        self.disconnect(key, DisconnectReason::DtlsFailed { detail });
    }

    /// The DTLS association of `key` ended after the handshake (close_notify or fatal alert).
    pub fn handle_dtls_closed(&mut self, key: ParticipantKey) {
        self.disconnect(key, DisconnectReason::DtlsClosed);
    }

    /// Where a DTLS record the handshake task wrote for `key` goes (the participant's current
    /// ICE address), counting it as sent. None once the participant is gone.
    pub fn dtls_destination(&mut self, key: ParticipantKey, len: usize) -> Option<SocketAddr> {
        let p = self.participants.get_mut(&key)?;
        let dst = p.ice.selected()?;
        p.usage.packets_out += 1;
        p.usage.bytes_out += len as u64;
        self.stats.packets_out += 1;
        self.stats.bytes_out += len as u64;
        Some(dst)
    }

    /// The I/O layer sent `datagrams` of the last outputs as one GSO send.
    pub fn handle_gso_sent(&mut self, datagrams: usize) {
        self.stats.gso_datagrams += datagrams as u64;
    }

    /// Another core's inbox was full; a cross-core message was dropped.
    pub fn handle_cross_core_queue_full(&mut self) {
        self.stats.drop(DropReason::CrossCoreQueueFull);
    }

    /// A DTLS record for `key` could not be queued (its task is behind).
    pub fn handle_dtls_queue_full(&mut self) {
        self.stats.drop(DropReason::DtlsQueueFull);
    }

    fn disconnect(&mut self, key: ParticipantKey, reason: DisconnectReason) {
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        let event = Event::ParticipantDisconnected {
            sid: p.sid.clone(),
            uid: p.uid.clone(),
            reason,
        };
        self.remove_participant_by_key(key);
        self.outputs.push_back(Output::Event(event));
    }

    // ----- timers ----------------------------------------------------------------------------

    /// Run everything that is due at `now`: consent and handshake expiry, feed inactivity,
    /// RTCP reports.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_timeout.is_some_and(|t| t > now) {
            return;
        }
        let mut expired = Vec::new();
        let mut reports = Vec::new();
        for (key, p) in &self.participants {
            if p.ice.consent_expired(now) {
                expired.push((*key, DisconnectReason::ConsentExpired));
            } else if let DtlsState::Handshaking { since } = p.dtls {
                if now >= since + self.config.dtls_handshake_timeout {
                    expired.push((*key, DisconnectReason::DtlsTimeout));
                }
            }
            if p.next_report.is_some_and(|t| t <= now) {
                reports.push(*key);
            }
        }
        for (key, reason) in expired {
            self.disconnect(key, reason);
        }
        for key in reports {
            self.send_reports(now, key);
        }
        let inactivity = self.config.feed_inactivity;
        for session in self.sessions.values_mut() {
            for feed in session.feeds.values_mut() {
                if feed.last_packet_at.is_some_and(|t| now >= t + inactivity) {
                    feed.last_packet_at = None;
                    if let Some(p) = self.participants.get(&feed.publisher) {
                        self.outputs.push_back(Output::Event(Event::FeedStopped {
                            sid: session.sid.clone(),
                            uid: p.uid.clone(),
                            feed_id: feed.description.feed_id.clone(),
                        }));
                    }
                }
            }
        }
        self.recompute_timeout();
    }

    fn recompute_timeout(&mut self) {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for p in self.participants.values() {
            if let Some(t) = p.ice.poll_timeout() {
                consider(t);
            }
            if let DtlsState::Handshaking { since } = p.dtls {
                consider(since + self.config.dtls_handshake_timeout);
            }
            if let Some(t) = p.next_report {
                consider(t);
            }
        }
        for session in self.sessions.values() {
            for feed in session.feeds.values() {
                if let Some(t) = feed.last_packet_at {
                    consider(t + self.config.feed_inactivity);
                }
            }
        }
        self.next_timeout = next;
    }

    fn send_reports(&mut self, now: Instant, key: ParticipantKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.next_report = Some(now + self.config.report_interval);
        let (Some(dst), Some(session)) = (p.media_destination(), self.sessions.get_mut(&p.session))
        else {
            return;
        };
        let mut packets: Vec<Box<dyn Packet + Send + Sync>> = Vec::new();
        let ntp = self.ntp.ntp(now);
        // Sender reports for what the relay sends this participant.
        for (ssrc, fkey) in &p.subscriptions {
            let Some(feed) = session.feeds.get(fkey) else {
                continue;
            };
            let Some(c) = feed.consumers.iter().find(|c| c.subscriber == key) else {
                continue;
            };
            let Some((last_ts, at)) = c.rewriter.last_sent() else {
                continue;
            };
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            let rtp_time =
                last_ts.wrapping_add((elapsed * feed.description.clock_rate as f64) as u32);
            packets.push(Box::new(SenderReport {
                ssrc: *ssrc,
                ntp_time: ntp,
                rtp_time,
                packet_count: c.packets_sent,
                octet_count: c.octets_sent,
                ..Default::default()
            }));
        }
        // Receiver reports for what this participant publishes (31 blocks per packet).
        let mut blocks = Vec::new();
        for (ssrc, fkey) in &p.published {
            if let Some(feed) = session.feeds.get_mut(fkey) {
                blocks.extend(feed.recv.report(*ssrc, now));
            }
        }
        for chunk in blocks.chunks(31) {
            packets.push(Box::new(ReceiverReport {
                ssrc: p.rtcp_ssrc,
                reports: chunk.to_vec(),
                ..Default::default()
            }));
        }
        if packets.is_empty() {
            return;
        }
        let Some(plain) = rtcp_engine::marshal(&packets) else {
            return;
        };
        let srtp = p.srtp.as_mut().expect("media_destination implies keyed");
        match srtp.protect_rtcp(&plain) {
            Ok(sealed) => {
                p.usage.packets_out += 1;
                p.usage.bytes_out += sealed.len() as u64;
                self.transmit(dst, sealed);
            }
            Err(reason) => self.stats.drop(reason),
        }
    }
}

/// The participant whose ICE-selected address is `src`, with the datagram counted to it;
/// `unknown` if there is none. Only addresses that passed a verified check are in `by_addr`.
/// Remove a feed from its session and every subscription to it from its subscribers; returns
/// the publisher's SSRC of the feed if it existed.
fn remove_feed(
    session: &mut Session,
    participants: &mut HashMap<ParticipantKey, Participant>,
    fkey: FeedKey,
) -> Option<u32> {
    let feed = session.feeds.remove(&fkey)?;
    session.feed_keys.remove(&feed.description.feed_id);
    for c in feed.consumers {
        if let Some(sub) = participants.get_mut(&c.subscriber) {
            sub.subscriptions.remove(&c.ssrc.0);
        }
    }
    Some(feed.description.ssrc.0)
}

/// The parts of a [`Worker`] that forwarding a packet to a feed's consumers writes to,
/// borrowed apart from the sessions so that a feed can be borrowed at the same time.
struct Outbox<'a> {
    participants: &'a mut HashMap<ParticipantKey, Participant>,
    pool: &'a mut BufferPool,
    stats: &'a mut CoreStats,
    outputs: &'a mut VecDeque<Output>,
    next_timeout: &'a mut Option<Instant>,
    inactivity: Duration,
}

impl Outbox<'_> {
    /// Rewrite, protect and queue one copy of `plain` per consumer of `feed` (on this core).
    fn fan_out(&mut self, now: Instant, feed: &mut Feed, plain: &[u8], info: RtpInfo) {
        if feed.last_packet_at.is_none() {
            // (Re)started: every subscriber's stream continues from where it was.
            for c in &mut feed.consumers {
                c.rewriter.request_resync();
            }
            let at = now + self.inactivity;
            *self.next_timeout = Some(self.next_timeout.map_or(at, |t| t.min(at)));
        }
        feed.last_packet_at = Some(now);
        let clock_rate = feed.description.clock_rate;
        for c in &mut feed.consumers {
            let Some(sub) = self.participants.get_mut(&c.subscriber) else {
                continue;
            };
            let Some(dst) = sub.media_destination() else {
                continue;
            };
            let Some((seq, ts)) =
                c.rewriter
                    .rewrite(now, info.ssrc, info.sequence, info.timestamp, clock_rate)
            else {
                self.stats.rtp_copies_not_sent += 1;
                continue;
            };
            let mut out = self.pool.take();
            let rewritten = match (feed.mid_extension, &c.mid) {
                (Some(id), Some(mid)) => rtp::with_extension(plain, id, mid, &mut out),
                _ => false,
            };
            if !rewritten {
                out.extend_from_slice(plain);
            }
            rtp::rewrite(&mut out, c.ssrc.0, seq, ts);
            // media_destination() implies srtp is set.
            let srtp = sub.srtp.as_mut().expect("keyed subscriber");
            match srtp.protect_rtp(&mut out) {
                Ok(()) => {
                    c.packets_sent = c.packets_sent.wrapping_add(1);
                    c.octets_sent = c.octets_sent.wrapping_add(info.payload_len as u32);
                    sub.usage.packets_out += 1;
                    sub.usage.bytes_out += out.len() as u64;
                    self.stats.rtp_forwarded += 1;
                    self.stats.packets_out += 1;
                    self.stats.bytes_out += out.len() as u64;
                    self.outputs.push_back(Output::Transmit(Transmit {
                        destination: dst,
                        contents: out,
                    }));
                }
                Err(reason) => {
                    self.pool.give(out);
                    self.stats.drop(reason);
                }
            }
        }
    }
}

fn authenticated_source<'a>(
    by_addr: &HashMap<SocketAddr, ParticipantKey>,
    participants: &'a mut HashMap<ParticipantKey, Participant>,
    src: SocketAddr,
    len: usize,
    unknown: DropReason,
) -> Result<(ParticipantKey, &'a mut Participant), DropReason> {
    let key = *by_addr.get(&src).ok_or(unknown)?;
    // Every by_addr entry names a live participant: removal deletes its entry.
    let p = participants.get_mut(&key).expect("participant of address");
    p.usage.packets_in += 1;
    p.usage.bytes_in += len as u64;
    Ok((key, p))
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
