//! One packet to every consumer of a feed on this core: rewrite, protect, queue.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::engine::rtp;
use crate::ids::ParticipantKey;
use crate::stats::CoreStats;

use crate::sfu::cross_core::RtpInfo;
use crate::sfu::feed::Feed;
use crate::sfu::participant::Participant;
use crate::sfu::pool::BufferPool;

use super::*;

/// The parts of a [`Worker`] that forwarding a packet to a feed's consumers writes to,
/// borrowed apart from the sessions so that a feed can be borrowed at the same time.
struct Outbox<'a> {
    participants: &'a mut HashMap<ParticipantKey, Participant>,
    pool: &'a mut BufferPool,
    stats: &'a mut CoreStats,
    outputs: &'a mut VecDeque<Output>,
    timers: &'a mut Deadlines<Timer>,
    inactivity: Duration,
}

impl Outbox<'_> {
    /// Rewrite, protect and queue one copy of `plain` per consumer of `feed` (on this core);
    /// `timer` is the feed's inactivity timer.
    fn fan_out(
        &mut self,
        now: Instant,
        timer: Timer,
        feed: &mut Feed,
        plain: &[u8],
        info: RtpInfo,
    ) {
        if feed.last_packet_at.is_none() {
            // (Re)started: every subscriber's stream continues from where it was.
            for c in &mut feed.consumers {
                c.rewriter.request_resync();
            }
            // Armed once per start, not per packet: when it fires, the feed's last packet
            // says whether it stopped or when to look again.
            self.timers.arm(timer, now + self.inactivity);
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

impl Worker {
    /// Forward `plain` to the consumers on this core of feed `fkey` of session `skey`; false
    /// when there is no such feed (it went away while the packet was on its way).
    pub(super) fn fan_out(
        &mut self,
        now: Instant,
        skey: SessionKey,
        fkey: FeedKey,
        plain: &[u8],
        info: RtpInfo,
    ) -> bool {
        let Some(feed) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.feeds.get_mut(&fkey))
        else {
            return false;
        };
        let mut out = Outbox {
            participants: &mut self.participants,
            pool: &mut self.pool,
            stats: &mut self.stats,
            outputs: &mut self.outputs,
            timers: &mut self.timers,
            inactivity: self.config.feed_inactivity,
        };
        out.fan_out(now, Timer::Feed(skey, fkey), feed, plain, info);
        true
    }
}
