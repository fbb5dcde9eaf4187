//! One packet to every consumer of a feed on this core: rewrite, then on to each subscriber's
//! pacer ([`super::egress`]).

use std::time::{Duration, Instant};

use crate::control::FeedDescription;
use crate::engine::pacer::Priority;
use crate::engine::playout_delay::PlayoutDelay;
use crate::engine::vp8::{self, Vp8Descriptor};
use crate::engine::{rtp, rtx};
use crate::ids::ParticipantKey;

use crate::sfu::consumer::layers::Forward;
use crate::sfu::consumer::Consumer;
use crate::sfu::copy::Rewrite;
use crate::sfu::cross_core::RtpInfo;
use crate::sfu::feed::layer::STALLED_AFTER;
use crate::sfu::feed::packet_cache::Cached;
use crate::sfu::feed::{dynacast, Feed};
use crate::sfu::participant::{Outgoing, OutgoingKind};
use crate::sfu::svc::{SvcForward, SvcFrame};

use super::egress::Egress;
use super::*;

/// The parts of a [`Worker`] that forwarding a packet to a feed's consumers writes to,
/// borrowed apart from the sessions so that a feed can be borrowed at the same time.
struct Outbox<'a> {
    participants: &'a mut Participants,
    egress: Egress<'a>,
    inactivity: Duration,
}

impl Outbox<'_> {
    /// Rewrite one copy of `plain` per consumer of `feed` (on this core) and send it;
    /// `timer` is the feed's inactivity timer. Returns a layer that a subscriber waits for a
    /// keyframe of, to ask the publisher for one.
    fn fan_out(
        &mut self,
        now: Instant,
        timer: Timer,
        feed: &mut Feed,
        plain: &[u8],
        info: RtpInfo,
    ) -> Option<u8> {
        if feed.last_packet_at.is_none() {
            // (Re)started: every subscriber's stream continues from where it was.
            for c in &mut feed.consumers {
                c.rewriter.request_resync();
                c.layers.reset();
                c.svc.reset();
            }
            feed.frames.reset();
            // Armed once per start, not per packet: when it fires, the feed's last packet
            // says whether it stopped or when to look again.
            self.egress.timers.arm(timer, now + self.inactivity);
            if let (Timer::Feed(skey, fkey), true) = (timer, feed.layers.len() > 1) {
                self.egress
                    .timers
                    .arm(Timer::Dynacast(skey, fkey), now + dynacast::INTERVAL);
            }
        }
        feed.last_packet_at = Some(now);
        if feed.origin.is_some() {
            feed.layers_off = info.layers_off;
        }
        let video = feed.is_video();
        if let Some(layer) = feed.layers.get_mut(usize::from(info.layer)) {
            layer.rate.handle_packet(now, plain.len());
            if info.frame_size.is_some() {
                layer.size = info.frame_size;
            }
            if video {
                layer
                    .cache
                    .insert(info.ssrc, info.sequence, plain, info.playout_delay);
            }
        }
        // SVC: what the decode target of each spatial and temporal layer takes.
        if let Some(frame) = &info.svc {
            if feed
                .svc_latest
                .is_none_or(|l| l.structure != frame.structure)
            {
                feed.svc_latest = Some(*frame);
            }
            for (i, meter) in feed.svc_rates.iter_mut().enumerate() {
                let (s, t) = ((i / 4) as u8, (i % 4) as u8);
                let dt = frame.decode_target(s, t);
                if s < frame.spatial_layers
                    && t < frame.temporal_layers
                    && frame.needed_by & (1 << dt) != 0
                {
                    meter.handle_packet(now, plain.len());
                }
            }
        }
        let simulcast = feed.layers.len() > 1;
        // Where a switch between VP8 layers must renumber pictures: the descriptor.
        let vp8 = simulcast
            .then(|| vp8_descriptor(&feed.description, plain))
            .flatten();
        // Which other layers stalled, looked at once per packet rather than per consumer: no
        // packet for a while, or none for as many frames as another layer sent.
        let mut stalled = [false; crate::control::MAX_LAYERS];
        if simulcast {
            feed.frames.handle_packet(now, info.layer, info.timestamp);
            for (l, layer) in feed.layers.iter().enumerate().take(stalled.len()) {
                stalled[l] = l != usize::from(info.layer)
                    && (!layer.rate.flowing(now, STALLED_AFTER)
                        || feed.frames.stopped(now, l as u8));
            }
        }
        // The feed's cached copy, which a subscriber's copy held by its pacer is written from
        // when it leaves (video only: audio is never held long).
        let cached = video
            .then(|| feed.layers.get(usize::from(info.layer)))
            .flatten()
            .and_then(|l| l.cache.shared(info.ssrc, info.sequence));
        let mut keyframe_wanted = None;
        let clock_rate = feed.description.clock_rate;
        // A keyframe begins here: its codec says so, or, with SVC, its frame refers to none.
        let starts_keyframe = info.keyframe
            || info.svc.as_ref().is_some_and(|f| {
                f.start_of_frame && f.spatial_id == 0 && f.referenced_frames().is_empty()
            });
        for c in &mut feed.consumers {
            let Some(sub) = self.participants.get_mut(&c.subscriber) else {
                continue;
            };
            if sub.transport.media_destination().is_none() {
                continue;
            }
            if video {
                // The layer it is sent, or, before its first keyframe, the one it waits
                // for: where that one stopped (or never started), a keyframe of the best
                // layer still flowing is asked for, not one of a layer that is not sent.
                let awaited = c.layers.current().unwrap_or(c.layers.target());
                let stopped = stalled.get(usize::from(awaited)) == Some(&true);
                // A single stream is joined at any packet: its subscriber asks for the
                // keyframe it needs, and a keyframe is not looked for in every codec.
                let keyframe = info.keyframe || !simulcast;
                match c.layers.handle_packet(info.layer, keyframe, stopped) {
                    Forward::Drop if c.layers.paused().is_some() => {
                        self.egress.stats.rtp_paused += 1;
                        continue;
                    }
                    Forward::Drop => {
                        // With its layer stopped, the best of those still flowing that
                        // its target allows: one keyframe, not one of every layer below.
                        let fallback = stopped
                            && info.layer <= c.layers.target()
                            && (info.layer + 1..=c.layers.target())
                                .all(|l| stalled.get(usize::from(l)) != Some(&false));
                        let wanted = c.layers.awaiting_keyframe() == Some(info.layer) || fallback;
                        if wanted {
                            keyframe_wanted = Some(info.layer);
                        }
                        self.egress.stats.rtp_other_layer += 1;
                        continue;
                    }
                    Forward::Switch => {
                        self.egress.stats.layer_switches += u64::from(c.layers.switches() > 0);
                        // On from here, also on the same SSRC after a pause: an SVC
                        // subscriber from a frame it can decode.
                        c.rewriter.request_resync();
                        c.svc.reset();
                        // The new layer's timestamps continue the subscriber's timeline
                        // where the sender reports tell how the layers' clocks relate.
                        if let (Some(r), Some(offset)) =
                            (info.reference_timestamp, c.reference_offset)
                        {
                            c.rewriter.anchor_timestamp(r.wrapping_add(offset));
                        }
                    }
                    Forward::Send => {}
                }
                // SVC: only the frames of the subscriber's decode target, the best within
                // the spatial layer its view allows, whose number the next packet takes.
                if let Some(frame) = &info.svc {
                    let (spatial, temporal) = svc_cap(c, frame);
                    c.svc.set_cap(spatial, temporal);
                    let switches = c.svc.switches();
                    match c.svc.handle_packet(frame) {
                        SvcForward::Drop => {
                            c.rewriter.skip(info.ssrc, info.sequence);
                            if c.svc.needs_keyframe(frame) {
                                keyframe_wanted = Some(0);
                            }
                            self.egress.stats.rtp_svc_dropped += 1;
                            continue;
                        }
                        SvcForward::Switch => {
                            self.egress.stats.layer_switches +=
                                u64::from(c.svc.switches() - switches);
                        }
                        SvcForward::Send => {}
                    }
                }
            }
            // The end of what this subscriber gets of an SVC picture carries the marker bit.
            let ends_picture = info.svc.as_ref().is_some_and(|f| c.svc.ends_picture(f));
            let Some((seq, ts)) =
                c.rewriter
                    .rewrite(now, info.ssrc, info.sequence, info.timestamp, clock_rate)
            else {
                self.egress.stats.rtp_copies_not_sent += 1;
                continue;
            };
            if let Some(r) = info.reference_timestamp {
                c.reference_offset = Some(ts.wrapping_sub(r));
            }
            if ends_picture {
                c.rewriter.mark(seq);
            }
            let transport_wide = sub
                .transport
                .next_transport_sequence()
                .filter(|_| c.transport_wide)
                .map(|(id, _)| id);
            let delay = c.playout_delay(now, info.playout_delay);
            let mut rewrite = rewrite_for(c, feed.mid_extension, delay, transport_wide);
            (rewrite.sequence, rewrite.timestamp, rewrite.marker) = (seq, ts, ends_picture);
            if let Some(d) = &vp8 {
                rewrite.vp8 = c.picture_ids.map(info.ssrc, d).map(|(p, t)| (*d, p, t));
            }
            c.packets_sent = c.packets_sent.wrapping_add(1);
            c.octets_sent = c.octets_sent.wrapping_add(info.payload_len as u32);
            if video {
                c.keyframe
                    .handle_sent(now, starts_keyframe, info.timestamp, info.payload_len);
            }
            let priority = if video {
                Priority::Video
            } else {
                Priority::Audio
            };
            self.egress.send_copy(
                now,
                c.subscriber,
                sub,
                priority,
                plain,
                cached.as_ref(),
                c.mid.as_ref(),
                rewrite,
            );
        }
        keyframe_wanted
    }
}

impl Outbox<'_> {
    /// Send outgoing packet `out_seq` of consumer `index` of `feed` again, from the feed's
    /// cache: on the subscriber's RTX stream where it negotiated one, else as it was sent.
    /// False when the packet cannot be sent again (no longer cached, never sent where only a
    /// packet sent may be, or sent again too often or too recently). With `probe`, as a packet of that probe cluster:
    /// on the RTX stream only, and whether or not it was asked for.
    fn resend(
        &mut self,
        now: Instant,
        feed: &mut Feed,
        index: usize,
        out_seq: u16,
        probe: Option<u32>,
    ) -> bool {
        let c = &mut feed.consumers[index];
        let was_sent = c.rewriter.original(out_seq).is_some();
        let Some(original) = c.rewriter.mapped(out_seq) else {
            return false;
        };
        let Some(Cached {
            packet: cached,
            playout_delay,
        }) = feed
            .layers
            .iter()
            .find_map(|l| l.cache.get(original.ssrc, original.sequence))
        else {
            return false;
        };
        let Some(sub) = self.participants.get_mut(&c.subscriber) else {
            return false;
        };
        if sub.transport.media_destination().is_none() {
            return false;
        }
        let Some(header) = rtp::parse(cached) else {
            return false;
        };
        let as_rtx = c
            .retransmits
            .rtx_ssrc
            .zip(feed.description.rtx_pt_of(header.payload_type));
        // A packet that carried a transport-wide number cannot be repeated on its media SSRC:
        // the repeat would have to carry the same number, which the estimator would then see
        // twice.
        if as_rtx.is_none() && (c.transport_wide || probe.is_some()) {
            return false;
        }
        // Nor where its playout delay came from the subscriber's own wait for repairs (it
        // negotiated RTX, but this payload type has none): the wait may have changed since,
        // and the packet sent again under the same index must be the one sent.
        if as_rtx.is_none()
            && c.retransmits.rtx_ssrc.is_some()
            && c.playout_delay_extension.is_some()
        {
            return false;
        }
        // A number nothing went out with yet (see `Rewriter::mapped`): asked for, on the RTX
        // stream only, and of a simulcast layer's stream, whose every packet the subscriber
        // gets once it is on the layer. With SVC the number may be one a frame of another
        // decode target would have had, which came late and was dropped.
        if !was_sent && (as_rtx.is_none() || probe.is_some() || feed.layers.len() < 2) {
            return false;
        }
        // A marker bit the relay set is set again. Where the number is too old for the
        // rewriter to say: on the RTX stream, a new packet, as the publisher marked it (a
        // keyframe of a few hundred packets must stay repairable); sent again as it was, an
        // SVC packet might not be the one that went out, so it is not sent.
        let marker = match original.marked {
            Some(marked) => marked,
            None if as_rtx.is_none() && feed.svc_latest.is_some() => return false,
            None => false,
        };
        if probe.is_none() && !c.retransmits.allow(now, out_seq) {
            return false;
        }
        // The packet as the subscriber was sent it the first time (numbered anew when it
        // leaves on the RTX stream: a new packet on the wire).
        let transport_wide = sub
            .transport
            .next_transport_sequence()
            .filter(|_| c.transport_wide)
            .map(|(id, _)| id);
        let delay = c.playout_delay(now, playout_delay);
        let mut rewrite = rewrite_for(c, feed.mid_extension, delay, transport_wide);
        rewrite.sequence = out_seq;
        rewrite.timestamp = header.timestamp.wrapping_add(original.ts_offset);
        rewrite.marker = marker;
        if feed.layers.len() > 1 {
            if let Some(d) = vp8_descriptor(&feed.description, cached) {
                rewrite.vp8 = c.picture_ids.map(original.ssrc, &d).map(|(p, t)| (d, p, t));
            }
        }
        let mut out = self.egress.pool.take();
        let transport_wide = rewrite.write(cached, c.mid.as_deref(), &mut out);
        if let Some((rtx_ssrc, rtx_pt)) = as_rtx {
            let mut rtx = self.egress.pool.take();
            let seq = c.retransmits.next_rtx_seq();
            // `out` is a packet rtp::parse accepted, rewritten in place.
            rtx::wrap(&out, rtx_pt, rtx_ssrc, seq, &mut rtx);
            self.egress.pool.give(std::mem::replace(&mut out, rtx));
        }
        // Sent again on the media SSRC, the packet is byte for byte the one sent before under
        // the same index: nothing new is sealed under a used nonce.
        match probe {
            // A probe leaves when its cluster's schedule says, not the pacer.
            Some(cluster) => {
                let out = Outgoing {
                    packet: out,
                    transport_wide,
                    kind: OutgoingKind::Probe(cluster),
                };
                self.egress.depart(now, sub, out);
            }
            None => {
                let out = Outgoing {
                    packet: out,
                    transport_wide,
                    kind: OutgoingKind::Retransmission,
                };
                let key = c.subscriber;
                self.egress
                    .send(now, key, sub, Priority::Retransmission, out);
            }
        }
        true
    }
}

impl Worker {
    /// Feed `fkey` of session `skey`, and the parts of the worker that forwarding it writes
    /// to, borrowed apart.
    fn feed_outbox(&mut self, skey: SessionKey, fkey: FeedKey) -> Option<(&mut Feed, Outbox<'_>)> {
        let feed = self.sessions.get_mut(&skey)?.feeds.get_mut(&fkey)?;
        let out = Outbox {
            participants: &mut self.participants,
            egress: Egress {
                pool: &mut self.pool,
                stats: &mut self.stats,
                outputs: &mut self.outputs,
                timers: &mut self.timers,
            },
            inactivity: self.config.feed_inactivity,
        };
        Some((feed, out))
    }

    /// A subscriber NACKed `out_seqs` of its stream `media_ssrc`: send what can be sent again.
    pub(super) fn answer_nack(
        &mut self,
        now: Instant,
        subscriber: ParticipantKey,
        media_ssrc: u32,
        out_seqs: impl Iterator<Item = u16>,
    ) {
        // An unknown stream, the RTX stream itself, or a stream being torn down: nothing
        // can be sent again.
        let target = self.participants.get(&subscriber).and_then(|p| {
            let fkey = *p.subscriptions.get(&media_ssrc)?;
            let feed = self.sessions.get(&p.session)?.feeds.get(&fkey)?;
            let index = feed
                .consumers
                .position(subscriber)
                .filter(|&i| feed.consumers[i].ssrc.0 == media_ssrc)?;
            Some((p.session, fkey, index))
        });
        let Some(((feed, mut out), index)) =
            target.and_then(|(skey, fkey, index)| Some((self.feed_outbox(skey, fkey)?, index)))
        else {
            let n = out_seqs.count() as u64;
            self.stats.nacks_received += n;
            self.stats.nacks_unanswerable += n;
            return;
        };
        if feed.is_video() {
            feed.consumers[index].repair_wait.handle_request(now);
        }
        for seq in out_seqs {
            out.egress.stats.nacks_received += 1;
            if !out.resend(now, feed, index, seq, None) {
                out.egress.stats.nacks_unanswerable += 1;
            }
        }
    }

    /// Send outgoing packet `out_seq` of consumer `index` of feed `fkey` again on its RTX
    /// stream as a packet of probe cluster `cluster`; false where it cannot be.
    pub(super) fn probe_with_resend(
        &mut self,
        now: Instant,
        (skey, fkey, index): (SessionKey, FeedKey, usize),
        out_seq: u16,
        cluster: u32,
    ) -> bool {
        match self.feed_outbox(skey, fkey) {
            Some((feed, mut out)) if index < feed.consumers.len() => {
                out.resend(now, feed, index, out_seq, Some(cluster))
            }
            _ => false,
        }
    }

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
        let Some((feed, mut out)) = self.feed_outbox(skey, fkey) else {
            return false;
        };
        if let Some(layer) = out.fan_out(now, Timer::Feed(skey, fkey), feed, plain, info) {
            self.keyframe_request(now, skey, fkey, Some(usize::from(layer)), false);
        }
        true
    }
}

/// The best spatial and temporal layers of an SVC feed that consumer `c` is sent: what its
/// link affords within what its view allows ([`svc_view_cap`]); all temporal layers of a
/// spatial layer the view allows less than the allocator did.
pub(super) fn svc_cap(c: &Consumer, frame: &SvcFrame) -> (u8, u8) {
    let view = svc_view_cap(c, frame);
    match c.svc_allocated {
        Some((spatial, temporal)) if spatial <= view => (spatial, temporal),
        _ => (view, 3),
    }
}

/// The best spatial layer of an SVC feed that consumer `c` may have: at most its cap, and the
/// smallest that covers the size it shows the video at (where the structure gives the layers'
/// sizes).
pub(super) fn svc_view_cap(c: &Consumer, frame: &SvcFrame) -> u8 {
    let top = frame.spatial_layers.saturating_sub(1);
    let cap = c.layers.max().map_or(top, |m| m.min(top));
    let sizes: [Option<(u16, u16)>; 4] = {
        let mut sizes = [None; 4];
        for (slot, size) in sizes.iter_mut().zip(frame.layer_sizes()) {
            *slot = size;
        }
        sizes
    };
    let known = &sizes[..usize::from(frame.spatial_layers.clamp(1, 4))];
    c.layers
        .shown_at()
        .and_then(|(w, h)| super::quality::layer_for_size(known, w, h))
        .map_or(cap, |l| l.min(cap))
}

/// The VP8 payload descriptor of `packet` (plaintext), where feed `feed` sends it as VP8.
fn vp8_descriptor(feed: &FeedDescription, packet: &[u8]) -> Option<Vp8Descriptor> {
    let header = rtp::parse(packet)?;
    let codec = feed.codec_of(header.payload_type)?;
    if !codec.eq_ignore_ascii_case("VP8") {
        return None;
    }
    vp8::parse(&packet[header.header_len..header.header_len + header.payload_len])
}

/// What makes a copy of a packet consumer `c`'s, but for its numbers and pictures: its SSRC,
/// its MID in extension `mid_id` (where the feed has one and the consumer was given a MID:
/// [`Rewrite::write`] takes the consumer's), the playout delay (where there is one and the
/// consumer negotiated its extension), and a transport-wide number in extension
/// `transport_wide`, set when the copy leaves.
fn rewrite_for(
    c: &Consumer,
    mid_id: Option<u8>,
    playout_delay: Option<PlayoutDelay>,
    transport_wide: Option<u8>,
) -> Rewrite {
    Rewrite {
        ssrc: c.ssrc.0,
        sequence: 0,
        timestamp: 0,
        marker: false,
        mid: mid_id,
        playout_delay: c
            .playout_delay_extension
            .zip(playout_delay.map(PlayoutDelay::to_bytes)),
        transport_wide,
        vp8: None,
    }
}
