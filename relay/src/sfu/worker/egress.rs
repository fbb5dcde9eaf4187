//! The last step of every RTP packet to a subscriber: its pacer, then numbering and sealing.
//!
//! What makes a packet a subscriber's (its numbers, its extensions) is decided when it is
//! forwarded, but it takes its transport-wide number and is protected only when it leaves the
//! pacer: the estimator must see numbers in the order packets went out and learn when each
//! really left, and SRTP then seals packets in that order too. A forwarded copy that the pacer
//! holds is written only when it leaves, from the feed's cached packet ([`crate::sfu::copy`]).
//! A subscriber whose link is not estimated (it negotiated no transport-wide feedback) has no
//! rate to pace at: its packets leave at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::engine::pacer::{Priority, PACING_FACTOR};
use crate::ids::ParticipantKey;
use crate::sfu::copy::{Paced, Rewrite};
use crate::sfu::participant::{Outgoing, OutgoingKind, Participant};
use crate::stats::CoreStats;

use super::*;

/// The parts of a [`Worker`] that sending to a subscriber writes to, borrowed apart from the
/// participants.
pub(super) struct Egress<'a> {
    pub pool: &'a mut BufferPool,
    pub stats: &'a mut CoreStats,
    pub outputs: &'a mut VecDeque<Output>,
    pub timers: &'a mut Deadlines<Timer>,
}

impl Egress<'_> {
    /// Send `out` to subscriber `sub` (whose key is `key`) through its pacer, at `priority`.
    pub fn send(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        sub: &mut Participant,
        priority: Priority,
        out: Outgoing,
    ) {
        let Some(estimate) = sub.transport.estimate() else {
            self.depart(now, sub, out);
            return;
        };
        sub.pacer.set_rate(estimate * PACING_FACTOR);
        if sub.pacer.pass(now, priority, out.packet.len()) {
            self.depart(now, sub, out);
            return;
        }
        sub.pacer
            .enqueue(now, priority, out.packet.len(), Paced::Built(out));
        self.drain(now, key, sub);
    }

    /// Send subscriber `sub` its copy of the feed's packet `packet`, made by `rewrite` with
    /// `mid`: written now if it may leave now, else left to wait in its pacer as the feed's
    /// `cached` packet and the rewrite, and written when it leaves (written now and held if
    /// the feed does not cache the packet).
    #[allow(clippy::too_many_arguments)]
    pub fn send_copy(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        sub: &mut Participant,
        priority: Priority,
        packet: &[u8],
        cached: Option<&Arc<Vec<u8>>>,
        mid: Option<&Arc<[u8]>>,
        rewrite: Rewrite,
    ) {
        let mid_bytes = mid.map(|m| &m[..]);
        let size = rewrite.size_hint(packet, mid_bytes);
        let held = match sub.transport.estimate() {
            None => false,
            Some(estimate) => {
                sub.pacer.set_rate(estimate * PACING_FACTOR);
                !sub.pacer.pass(now, priority, size)
            }
        };
        if let (true, Some(cached)) = (held, cached) {
            let paced = Paced::Copy {
                packet: cached.clone(),
                mid: mid.cloned(),
                rewrite,
            };
            sub.pacer.enqueue(now, priority, size, paced);
            self.drain(now, key, sub);
            return;
        }
        let out = rewrite.outgoing(packet, mid_bytes, self.pool.take());
        if held {
            sub.pacer
                .enqueue(now, priority, out.packet.len(), Paced::Built(out));
            self.drain(now, key, sub);
        } else {
            self.depart(now, sub, out);
        }
    }

    /// Send what `sub`'s pacer lets go at `now`, and wake again when more may go.
    pub fn drain(&mut self, now: Instant, key: ParticipantKey, sub: &mut Participant) {
        while let Some((paced, waited)) = sub.pacer.poll_transmit(now) {
            if !waited.is_zero() {
                self.stats.rtp_paced += 1;
                let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
                self.stats.pacing_delay.record(us, 1);
            }
            let out = match paced {
                Paced::Built(out) => out,
                Paced::Copy {
                    packet,
                    mid,
                    rewrite,
                } => rewrite.outgoing(&packet, mid.as_deref(), self.pool.take()),
            };
            self.depart(now, sub, out);
        }
        if let Some(at) = sub.pacer.poll_timeout() {
            self.timers.arm(Timer::Pacer(key), at);
        }
    }

    /// Number, protect and queue `out` for `sub` now.
    pub fn depart(&mut self, now: Instant, sub: &mut Participant, out: Outgoing) {
        let Outgoing {
            mut packet,
            transport_wide,
            kind,
        } = out;
        // In the subscriber's own numbers where it has them (a WHEP player), before it takes
        // a transport-wide number: a packet refused here must not leave a gap in them.
        // Renumbering moves no byte, so the number's place stays where the relay put it.
        if let Some(renumber) = &sub.renumber {
            if !renumber.apply(&mut packet) {
                self.pool.give(packet);
                self.stats
                    .drop(crate::stats::DropReason::RtpUnknownPayloadType);
                return;
            }
        }
        let numbered = match (transport_wide, sub.transport.next_transport_sequence()) {
            (Some(at), Some((_, n))) => match packet.get_mut(at..at + 2) {
                Some(value) => {
                    value.copy_from_slice(&n.to_be_bytes());
                    true
                }
                None => false,
            },
            _ => false,
        };
        let Some((dst, srtp)) = sub.transport.media_out() else {
            self.pool.give(packet);
            return;
        };
        if let Err(reason) = srtp.protect_rtp(&mut packet) {
            self.pool.give(packet);
            self.stats.drop(reason);
            return;
        }
        sub.usage.packets_out += 1;
        sub.usage.bytes_out += packet.len() as u64;
        match kind {
            OutgoingKind::Media => self.stats.rtp_forwarded += 1,
            OutgoingKind::Retransmission => self.stats.retransmissions_sent += 1,
            OutgoingKind::Probe(_) => self.stats.probe_packets_sent += 1,
        }
        if numbered {
            match kind {
                OutgoingKind::Probe(cluster) => {
                    sub.transport.handle_probe_sent(now, packet.len(), cluster)
                }
                _ => sub.transport.handle_sent(now, packet.len()),
            }
        }
        transmit(self.stats, self.outputs, dst, packet);
    }
}

impl Worker {
    /// Subscriber `key`'s pacer is due: send what it lets go.
    pub(super) fn pace(&mut self, now: Instant, key: ParticipantKey) {
        let Some(sub) = self.participants.get_mut(&key) else {
            return;
        };
        let mut egress = Egress {
            pool: &mut self.pool,
            stats: &mut self.stats,
            outputs: &mut self.outputs,
            timers: &mut self.timers,
        };
        egress.drain(now, key, sub);
    }
}
