//! Data channels on the core: SCTP packets in and out of each participant's association, its
//! messages taken in at the rate it is allowed, and routed to the session's participants here
//! and on the session's other cores.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::control::{Event, DATA_REFUSAL_REPEAT};
use crate::engine::sctp::{DataEvent, Message};
use crate::ids::{ParticipantKey, SessionKey, Sid, Uid};
use crate::sfu::cross_core::CrossCore;
use crate::sfu::data::envelope::{Addressed, Delivered};
use crate::sfu::data::{
    Relayed, RelayedData, HOLD_ABOVE, HOLD_COOLDOWN, LOSSY_STREAM, MAX_BUFFERED,
    MAX_COPIES_PER_INPUT, MAX_HOLD, MAX_MESSAGES_PER_INPUT, MAX_PENDING, RELIABLE_STREAM,
    RESUME_BELOW,
};

use super::{Output, Timer, Worker};

impl Worker {
    /// An SCTP packet from participant `key` (the plaintext of a DTLS application-data
    /// record).
    pub fn handle_sctp(&mut self, now: Instant, key: ParticipantKey, packet: &[u8]) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        self.stats.data.sctp_packets_in += 1;
        p.data.channels.handle_packet(now, packet);
        self.take_messages(now, key);
        self.wake_held(now);
    }

    /// An SCTP packet for a participant could not be sent: its association has no record
    /// layer (gone, or not yet up), or its sequence numbers are used up.
    pub fn handle_sctp_not_sent(&mut self) {
        self.stats.data.sctp_packets_dropped += 1;
    }

    /// The participant's data timer fired (SCTP retransmission or acknowledgement, or its
    /// rate lets more in); returns its next deadline.
    pub(super) fn data_timeout(&mut self, now: Instant, key: ParticipantKey) -> Option<Instant> {
        self.participants
            .get_mut(&key)?
            .data
            .channels
            .handle_timeout(now);
        self.take_messages(now, key);
        self.wake_held(now);
        self.data_deadline(now, key)
    }

    /// Take in what the senders a receiver let go of have waiting.
    fn wake_held(&mut self, now: Instant) {
        while let Some(key) = self.data_wake.pop() {
            self.take_messages(now, key);
        }
    }

    /// Until when `key`'s messages wait for a receiver of its session, on this core or on
    /// another: the earliest moment one that holds it gives up, or `None` if none does.
    fn held_until(&self, now: Instant, key: ParticipantKey) -> Option<Instant> {
        let p = self.participants.get(&key)?;
        let session = self.sessions.get(&p.session)?;
        session
            .participants
            .values()
            .filter(|&&r| r != key)
            .filter_map(|r| self.participants.get(r)?.data.congested_since)
            .map(|since| since + MAX_HOLD)
            .chain(session.remote_holds.iter().map(|&(_, until)| until))
            .filter(|&end| end > now)
            .min()
    }

    /// Let the senders that `key` (a receiver that drained, or left) held go on, at the next
    /// input or timer; and tell the session's other cores until when this core's receivers
    /// still hold (no longer, where `key` was the last).
    pub(super) fn release_held(&mut self, skey: SessionKey, key: ParticipantKey) {
        self.wake_senders(skey, Some(key));
        self.announce_hold(skey);
    }

    /// Queue the held senders of session `skey` (but `except`) to take in from next.
    fn wake_senders(&mut self, skey: SessionKey, except: Option<ParticipantKey>) {
        let Some(session) = self.sessions.get(&skey) else {
            return;
        };
        for &s in session.participants.values() {
            if Some(s) != except && self.participants.get(&s).is_some_and(|p| p.data.held) {
                self.data_wake.push(s);
            }
        }
    }

    /// Tell the session's other cores until when this core's receivers of it hold its
    /// senders: the latest end of their holds, or None. Sent when a hold starts or ends, which
    /// is rare (a receiver falling behind by a megabyte, or catching up).
    pub(super) fn announce_hold(&mut self, skey: SessionKey) {
        let Some(session) = self.sessions.get(&skey) else {
            return;
        };
        if session.other_cores.is_empty() {
            return;
        }
        let until = session
            .participants
            .values()
            .filter_map(|r| self.participants.get(r)?.data.congested_since)
            .map(|since| since + MAX_HOLD)
            .max();
        for &core in &session.other_cores {
            self.outputs.push_back(Output::CrossCore {
                core,
                message: CrossCore::DataHold {
                    sid: session.sid.clone(),
                    core: self.config.core,
                    until,
                },
            });
        }
    }

    /// Receivers of session `sid` on `core` hold its senders here until `until`, or no longer.
    pub(super) fn handle_data_hold(
        &mut self,
        now: Instant,
        sid: &Sid,
        core: usize,
        until: Option<Instant>,
    ) {
        let Some(&skey) = self.session_keys.get(sid) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&skey) else {
            return;
        };
        session
            .remote_holds
            .retain(|&(c, end)| c != core && end > now);
        if let Some(end) = until.filter(|&end| end > now) {
            session.remote_holds.push((core, end));
        }
        // Held senders look again: the hold may end sooner than their timer was set for.
        self.wake_senders(skey, None);
        self.wake_held(now);
    }

    /// Take in what `key` sent, as far as its rate and the per-input bound allow, and route
    /// it.
    fn take_messages(&mut self, now: Instant, key: ParticipantKey) {
        let mut copies = 0;
        for _ in 0..MAX_MESSAGES_PER_INPUT {
            if copies >= MAX_COPIES_PER_INPUT {
                break;
            }
            let Some(p) = self.participants.get_mut(&key) else {
                return;
            };
            if !p.data.channels.has_readable() {
                break;
            }
            if !p.data.limiter.allows(now) {
                self.stats.data.held_back += 1;
                break;
            }
            let held = self.held_until(now, key).is_some();
            let Some(p) = self.participants.get_mut(&key) else {
                return;
            };
            if held {
                if !p.data.held {
                    p.data.held = true;
                    self.stats.data.held_for_receivers += 1;
                }
                break;
            }
            p.data.held = false;
            let Some(message) = p.data.channels.read(now) else {
                break;
            };
            p.data.limiter.take(now, message.data.len());
            copies += self.route(now, key, message);
        }
        self.flush_data(now, key);
    }

    /// Move `key`'s SCTP packets and events out, and arm its timer.
    fn flush_data(&mut self, now: Instant, key: ParticipantKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let mut connected = false;
        while let Some(event) = p.data.channels.poll_event() {
            match event {
                DataEvent::Connected => connected = true,
                DataEvent::ChannelOpened { .. } => self.stats.data.channels_opened += 1,
                DataEvent::Malformed(reason) => {
                    self.stats.data.malformed += 1;
                    tracing::debug!(uid = %p.uid, %reason, "data channel message dropped");
                }
                DataEvent::Lost(reason) => {
                    tracing::info!(uid = %p.uid, %reason, "data association lost");
                }
                DataEvent::ChannelClosed { .. } => {}
            }
        }
        if connected {
            // What came for it while its association was coming up.
            let pending = std::mem::take(&mut p.data.pending);
            p.data.pending_bytes = 0;
            for relayed in pending {
                self.send_to(now, key, &relayed);
            }
        }
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if let Some(since) = p.data.congested_since {
            if p.data.channels.buffered(RELIABLE_STREAM) <= RESUME_BELOW {
                p.data.congested_since = None;
                if now.saturating_duration_since(since) >= MAX_HOLD {
                    p.data.no_hold_until = Some(now + HOLD_COOLDOWN);
                }
                let skey = p.session;
                self.release_held(skey, key);
            }
        }
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        while let Some(packet) = p.data.channels.poll_transmit() {
            self.stats.data.sctp_packets_out += 1;
            self.outputs.push_back(Output::Sctp { key, packet });
        }
        if let Some(at) = self.data_deadline(now, key) {
            self.timers.arm(Timer::Data(key), at);
        }
    }

    /// When `key`'s data needs the timer: SCTP's own timer, or now if messages wait and its
    /// rate allows them (more than one input's worth came), or when its rate will.
    fn data_deadline(&mut self, now: Instant, key: ParticipantKey) -> Option<Instant> {
        // Only a sender found held looks at its receivers again: the common case is one
        // lookup, not one per participant of the session.
        let held = match self.participants.get(&key)?.data.held {
            true => self.held_until(now, key),
            false => None,
        };
        let data = &mut self.participants.get_mut(&key)?.data;
        let waiting = data
            .channels
            .has_readable()
            .then(|| held.unwrap_or_else(|| data.limiter.ready_at(now)));
        [data.channels.poll_timeout(), waiting]
            .into_iter()
            .flatten()
            .min()
    }

    /// A message `key` sent: to its session's participants here and on the session's other
    /// cores, if it may send and the envelope reads.
    fn route(&mut self, now: Instant, key: ParticipantKey, message: Message) -> usize {
        let Some(p) = self.participants.get_mut(&key) else {
            return 0;
        };
        if !p.data.may_send {
            self.stats.data.refused += 1;
            if p.data
                .refused_at
                .is_none_or(|at| now >= at + DATA_REFUSAL_REPEAT)
            {
                p.data.refused_at = Some(now);
                self.outputs.push_back(Output::Event(Event::DataRefused {
                    sid: p.sid.clone(),
                    uid: p.uid.clone(),
                    reason: "sending data is not granted (publish_data)".into(),
                }));
            }
            return 0;
        }
        let addressed = match Addressed::parse(&message.data) {
            Ok(a) => a,
            Err(e) => {
                self.stats.data.malformed += 1;
                tracing::debug!(uid = %p.uid, error = %e, "data message dropped");
                return 0;
            }
        };
        self.stats.data.messages_in += 1;
        self.stats.data.bytes_in += message.data.len() as u64;
        let delivered = Delivered {
            text: addressed.text,
            from: &p.uid.0,
            payload: addressed.payload,
        }
        .to_bytes();
        let relayed = Arc::new(RelayedData {
            sid: p.sid.clone(),
            from: p.uid.clone(),
            targets: addressed.targets().map(Uid::from).collect(),
            reliable: message.delivery.is_reliable(),
            text: addressed.text,
            delivered: Bytes::from(delivered),
        });
        let skey = p.session;
        let mut copies = self.deliver(now, skey, &relayed);
        let Some(session) = self.sessions.get(&skey) else {
            return copies;
        };
        for &core in &session.other_cores {
            copies += 1;
            self.stats.data.cross_core_out += 1;
            self.outputs.push_back(Output::CrossCore {
                core,
                message: CrossCore::Data(relayed.clone()),
            });
        }
        copies
    }

    /// A message from another core's participant, for this core's participants of its
    /// session.
    pub(super) fn handle_cross_core_data(&mut self, now: Instant, relayed: Relayed) {
        if let Some(&skey) = self.session_keys.get(&relayed.sid) {
            self.deliver(now, skey, &relayed);
        }
    }

    /// Hand `relayed` to each participant of the session on this core that it is for.
    fn deliver(&mut self, now: Instant, skey: SessionKey, relayed: &Relayed) -> usize {
        let Some(session) = self.sessions.get(&skey) else {
            return 0;
        };
        let mut receivers = std::mem::take(&mut self.data_receivers);
        receivers.extend(
            session
                .participants
                .iter()
                .filter(|(uid, _)| relayed.is_for(uid))
                .map(|(_, key)| *key),
        );
        for &rkey in &receivers {
            self.send_to(now, rkey, relayed);
            self.flush_data(now, rkey);
        }
        let copies = receivers.len();
        receivers.clear();
        self.data_receivers = receivers;
        copies
    }

    /// Hand `relayed` to `rkey`'s channel; keep it for later while its association is not up
    /// yet.
    fn send_to(&mut self, now: Instant, rkey: ParticipantKey, relayed: &Relayed) {
        let Some(r) = self.participants.get_mut(&rkey) else {
            return;
        };
        if !r.data.channels.is_connected() {
            let size = relayed.delivered.len();
            if r.data.pending_bytes + size <= MAX_PENDING {
                r.data.pending_bytes += size;
                r.data.pending.push_back(relayed.clone());
            } else {
                self.stats.data.undeliverable += 1;
            }
            return;
        }
        let stream = if relayed.reliable {
            RELIABLE_STREAM
        } else {
            LOSSY_STREAM
        };
        let buffered = match relayed.reliable {
            true => r.data.channels.buffered(stream),
            false => 0,
        };
        // A receiver that cannot keep up must not hold the relay's memory.
        if buffered > MAX_BUFFERED {
            self.stats.data.undeliverable += 1;
            return;
        }
        match r.data.channels.send(now, stream, false, &relayed.delivered) {
            Ok(()) => {
                if relayed.reliable
                    && r.data.congested_since.is_none()
                    && r.data.no_hold_until.is_none_or(|until| now >= until)
                    && buffered + relayed.delivered.len() > HOLD_ABOVE
                {
                    r.data.congested_since = Some(now);
                    let skey = r.session;
                    self.announce_hold(skey);
                }
                self.stats.data.messages_out += 1;
                self.stats.data.bytes_out += relayed.delivered.len() as u64;
            }
            Err(e) => {
                self.stats.data.undeliverable += 1;
                tracing::trace!(uid = %r.uid, error = %e, "data message not delivered");
            }
        }
    }
}
