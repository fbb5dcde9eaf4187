//! Quality per subscriber: the layers its estimate affords ([`crate::sfu::allocation`]), and
//! the probe packets that let the estimate find room for better ones.

use std::time::Instant;

use crate::control::{LayerState, Pause, SubscriberQuality};
use crate::ids::{FeedId, FeedKey, ParticipantKey, SessionKey, Sid, Uid};
use crate::sfu::allocation::{Demand, LOOK_AGAIN_WHILE_PAUSED};
use crate::sfu::consumer::Consumer;
use crate::sfu::cross_core::CrossCore;
use crate::sfu::feed::Feed;

use super::*;

impl Worker {
    /// What `uid` receives: its estimate and its video subscriptions' layers.
    pub fn quality(&self, sid: &Sid, uid: &Uid) -> Option<SubscriberQuality> {
        let (skey, key) = self.key_of(sid, uid).ok()?;
        let p = self.participants.get(&key)?;
        let session = self.sessions.get(&skey)?;
        let mut fkeys: Vec<FeedKey> = p.subscriptions.values().copied().collect();
        fkeys.sort_unstable_by_key(|f| f.0);
        fkeys.dedup();
        let subscriptions = fkeys
            .iter()
            .filter_map(|fkey| {
                let feed = session.feeds.get(fkey).filter(|f| f.is_video())?;
                let c = feed.consumers.find(key)?;
                let mut state = LayerState {
                    feed_id: feed.description.feed_id.clone(),
                    layers: feed.layers.len() as u8,
                    temporal_layers: 1,
                    target: c.layers.target(),
                    current: c.layers.current(),
                    switches: c.layers.switches(),
                    paused: c.layers.paused(),
                    pauses: c.layers.pauses(),
                };
                if let Some(frame) = &feed.svc_latest {
                    // SVC: a layer is a spatial and a temporal layer, spatial first.
                    let (spatial, temporal) = (frame.spatial_layers, frame.temporal_layers.max(1));
                    let (s, t) = super::fanout::svc_cap(c, frame);
                    let index = |(s, t): (u8, u8)| {
                        s.min(spatial.saturating_sub(1)) * temporal + t.min(temporal - 1)
                    };
                    state.layers = spatial * temporal;
                    state.temporal_layers = temporal;
                    state.target = index((s, t));
                    state.current = c.svc.current_layers().map(index);
                    state.switches = c.svc.switches();
                }
                Some(state)
            })
            .collect();
        Some(SubscriberQuality {
            estimate_bps: p.transport.estimate(),
            subscriptions,
        })
    }

    /// Decide the layers of `key`'s video subscriptions from its estimate, where one is due:
    /// move them, pause what does not fit, ask for the keyframes the moves wait for, and ask
    /// for a probe where a better layer does not fit yet.
    pub(super) fn allocate(&mut self, now: Instant, key: ParticipantKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(estimate) = p.transport.estimate() else {
            return;
        };
        if !p.allocator.due(now) {
            return;
        }
        let skey = p.session;
        let Some(session) = self.sessions.get(&skey) else {
            return;
        };
        let mut fkeys: Vec<FeedKey> = p.subscriptions.values().copied().collect();
        fkeys.sort_unstable_by_key(|f| f.0);
        fkeys.dedup();
        let mut fixed = 0.0;
        let mut adaptive = Vec::new();
        for fkey in fkeys {
            let Some(feed) = session.feeds.get(&fkey) else {
                continue;
            };
            let Some(index) = feed.consumers.position(key) else {
                continue;
            };
            // A layer dynacast turned off costs what it did when it was on: a subscriber
            // moved to it has it turned on again.
            let svc = feed.svc_latest.map(|f| (f.temporal_layers.max(1), f));
            let rates: Vec<Option<f64>> = if let Some((temporal, frame)) = svc {
                // SVC: a layer is a spatial and a temporal layer (spatial first), as the
                // decode target with those takes it. A camera's spatial layers above the
                // lowest are not offered below half their frame rate: a larger picture at a
                // quarter of the rate (7.5 fps) looks worse than a smaller one that moves. A
                // screen share's sharpness comes first.
                let screen = feed.description.screen;
                (0..frame.spatial_layers * temporal)
                    .map(|l| (l / temporal, l % temporal))
                    .map(|(s, t)| {
                        let offered = s == 0 || screen || t + 2 >= temporal;
                        let meter = &feed.svc_rates[usize::from(s * 4 + t)];
                        meter.bitrate(now).filter(|_| offered)
                    })
                    .collect()
            } else {
                feed.layers
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        l.rate.bitrate(now).or_else(|| {
                            (feed.layers_off & (1 << i) != 0)
                                .then(|| l.rate.last_bitrate())
                                .flatten()
                        })
                    })
                    .collect()
            };
            if !feed.is_video() {
                fixed += rates.iter().flatten().sum::<f64>();
                continue;
            }
            let c = &feed.consumers[index];
            // Its packets carry no transport-wide numbers (repairs go out as plain
            // retransmissions): the estimate does not see them and says nothing of what it
            // takes; it keeps the layer its view allows.
            if !c.transport_wide {
                continue;
            }
            if c.layers.paused() == Some(Pause::Hidden) {
                // Not shown: costs nothing, whatever the link.
                continue;
            }
            // The layer it receives has only just started (the top layer Chromium starts
            // last): what it takes is not known yet, and a move off it now would wait for a
            // probe and a dwell to come back. Decided at the next look.
            let just_started = |l: u8| {
                rates.get(usize::from(l)) == Some(&None)
                    && feed.layers.get(usize::from(l)).is_some_and(|layer| {
                        layer
                            .rate
                            .flowing(now, crate::sfu::feed::layer::STALLED_AFTER)
                    })
            };
            if svc.is_none() && c.layers.current().is_some_and(just_started) {
                continue;
            }
            let top = (rates.len().max(1) - 1) as u8;
            let demand = if let Some((temporal, frame)) = svc {
                // The best of its view: all the temporal layers of the spatial layer it
                // shows; not more, which it would not be sent.
                let max = (super::fanout::svc_view_cap(c, &frame) + 1) * temporal - 1;
                let allocated = c
                    .svc_allocated
                    .map(|(s, t)| s * temporal + t.min(temporal - 1));
                Demand {
                    current: (!c.layers.starved()).then(|| allocated.unwrap_or(max).min(max)),
                    max: max.min(top),
                    rates,
                }
            } else {
                Demand {
                    current: (!c.layers.starved()).then(|| c.layers.target()),
                    max: max_layer(feed, c),
                    rates,
                }
            };
            // Screen shares first, then the dominant speaker, then the rest in a stable order.
            let speaker = session.speaker_feeds.contains(&feed.description.feed_id);
            adaptive.push((
                (!feed.description.screen, !speaker),
                fkey,
                index,
                demand,
                svc,
            ));
        }
        if adaptive.is_empty() {
            // Nothing left to look at again: a paused video unsubscribed, or hidden.
            if let Some(p) = self.participants.get_mut(&key) {
                p.reallocate_at = None;
            }
            return;
        }
        adaptive.sort_by_key(|a| (a.0, a.1 .0));
        let demands: Vec<Demand> = adaptive.iter().map(|a| a.3.clone()).collect();
        let congested = p.transport.congested(now);
        p.allocator.set_untested(!p.transport.pushed_back());
        let decision = p
            .allocator
            .decide(now, estimate, fixed, congested, &demands);
        let starved = decision.targets.iter().any(Option::is_none);
        p.transport.set_probe_limit(decision.probe_limit);
        if let Some(rate) = decision.probe {
            tracing::debug!(participant = key.0, estimate, rate, "probe");
            p.transport.request_probe(now, rate);
        }
        let (sid, uid) = (p.sid.clone(), p.uid.clone());
        let (mut keyframes, mut changes) = (Vec::new(), Vec::new());
        let Some(session) = self.sessions.get_mut(&skey) else {
            return;
        };
        for ((_, fkey, index, demand, svc), target) in adaptive.iter().zip(decision.targets) {
            let Some(feed) = session.feeds.get_mut(fkey) else {
                continue;
            };
            if let Some((temporal, _)) = svc {
                // One stream: the layers are the cap of the frames it gets, taken at the next
                // switch point (for another spatial layer a keyframe, which its selector asks
                // for).
                let c = &mut feed.consumers[*index];
                if let Some(t) = target {
                    let layers = (t / temporal, t % temporal);
                    if c.svc_allocated != Some(layers) {
                        tracing::debug!(participant = key.0, feed = fkey.0, to = ?layers, estimate, rates = ?demand.rates, "svc layers");
                        c.svc_allocated = Some(layers);
                    }
                }
                let before = c.layers.paused();
                c.layers.set_starved(target.is_none());
                if c.layers.paused() != before {
                    changes.push((feed.description.feed_id.clone(), before, c.layers.paused()));
                }
                continue;
            }
            let layers = &mut feed.consumers[*index].layers;
            let before = layers.paused();
            layers.set_starved(target.is_none());
            if let Some(target) = target.filter(|&t| t != layers.target() || before.is_some()) {
                tracing::debug!(
                    participant = key.0,
                    feed = fkey.0,
                    from = layers.target(),
                    to = target,
                    estimate,
                    rates = ?demand.rates,
                    "layer"
                );
                layers.set_target(target);
                if let Some(wanted) = layers.awaiting_keyframe() {
                    keyframes.push((*fkey, wanted));
                }
            }
            if layers.paused() != before {
                tracing::debug!(participant = key.0, feed = fkey.0, paused = ?layers.paused(), estimate);
                changes.push((feed.description.feed_id.clone(), before, layers.paused()));
            }
        }
        for (feed_id, before, after) in changes {
            self.pause_changed(&sid, &uid, feed_id, before, after);
        }
        for (fkey, layer) in keyframes {
            self.keyframe_request(now, skey, fkey, Some(usize::from(layer)), false);
        }
        if let Some(p) = self.participants.get_mut(&key) {
            p.reallocate_at = starved.then(|| now + LOOK_AGAIN_WHILE_PAUSED);
            if let Some(at) = p.next_deadline() {
                self.timers.arm(Timer::Participant(key), at);
            }
        }
        self.send_probes(now, key);
    }

    /// Dynacast: report which layers of simulcast feed `fkey` the subscribers here want to
    /// the feed's own core; there, tell its publisher where that changes what it should send.
    /// Returns when to look again, while the feed flows.
    ///
    /// A subscriber wants the best layer its view allows ([`max_layer`]) unless its element
    /// is hidden, whatever its link carries now, as in LiveKit: the allocator's choice
    /// waits on what flows. A top layer Chromium had not started yet (it starts them as its
    /// own estimate grows) was not chosen, so not wanted, so turned off for good, and a
    /// subscriber of a 1 Mbit/s link stayed on 640x360 (and the publisher at 700 kbit/s).
    pub(super) fn dynacast(
        &mut self,
        now: Instant,
        skey: SessionKey,
        fkey: FeedKey,
    ) -> Option<Instant> {
        let recorder = self.record_wants(now, skey, fkey);
        let session = self.sessions.get_mut(&skey)?;
        let feed = session.feeds.get_mut(&fkey)?;
        feed.last_packet_at?;
        let wanted = recorder
            | feed
                .consumers
                .iter()
                .filter(|c| c.layers.paused() != Some(Pause::Hidden))
                .fold(0u8, |mask, c| {
                    let current = c.layers.current().map_or(0, |l| 1u8 << l);
                    mask | 1u8 << max_layer(feed, c) | 1u8 << c.layers.target() | current
                });
        match feed.origin {
            // Every time, not only on a change: a message lost to a full queue is made good
            // at the next.
            Some(route) => self.outputs.push_back(Output::CrossCore {
                core: route.core,
                message: CrossCore::LayersWanted {
                    route,
                    core: self.config.core,
                    mask: wanted,
                },
            }),
            None => {
                // What cores without subscribers of it any more wanted is forgotten.
                let own = self.config.core;
                feed.dynacast
                    .retain_cores(|core| core == own || feed.sinks.contains(&core));
                feed.dynacast.handle_wanted(own, wanted);
                if let Some(active) = feed.dynacast.poll(now) {
                    let all = ((1u16 << feed.layers.len().min(8)) - 1) as u8;
                    feed.layers_off = !active & all;
                    let rids = feed
                        .layers
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| active & (1 << i) != 0)
                        .filter_map(|(_, l)| l.rid.clone())
                        .collect();
                    self.stats.dynacast_changes += 1;
                    if let Some(p) = self.participants.get(&feed.publisher) {
                        self.outputs.push_back(Output::Event(Event::FeedLayers {
                            sid: session.sid.clone(),
                            uid: p.uid.clone(),
                            feed_id: feed.description.feed_id.clone(),
                            active: rids,
                        }));
                    }
                }
            }
        }
        Some(now + crate::sfu::feed::dynacast::INTERVAL)
    }

    /// Tell signalling that `uid`'s video of `feed_id` was paused or resumed, and count it.
    pub(super) fn pause_changed(
        &mut self,
        sid: &Sid,
        uid: &Uid,
        feed_id: FeedId,
        before: Option<Pause>,
        after: Option<Pause>,
    ) {
        if before == after {
            return;
        }
        match (before, after) {
            (None, Some(_)) => self.stats.subscriptions_paused += 1,
            (Some(_), None) => self.stats.subscriptions_resumed += 1,
            _ => {}
        }
        self.outputs
            .push_back(Output::Event(Event::SubscriptionPaused {
                sid: sid.clone(),
                uid: uid.clone(),
                feed_id,
                paused: after,
            }));
    }

    /// Send the probe packets due to `key`, on the RTX stream of one of its video
    /// subscriptions: recent packets of it again, as libwebrtc probes (large packets, so that
    /// a cluster outlasts a shaper's burst allowance), or padding where none is cached or the
    /// video is paused. Its browser counts them in its feedback and drops them.
    pub(super) fn send_probes(&mut self, now: Instant, key: ParticipantKey) {
        let (stream, flowing) = self.probe_stream(key).unzip();
        let mut sent = 0u16;
        loop {
            let Some(p) = self.participants.get_mut(&key) else {
                return;
            };
            let Some((cluster, id, number)) = p.transport.poll_probe_packet(now, stream.is_some())
            else {
                break;
            };
            // poll_probe_packet starts nothing without a stream; one started while there was
            // (its only video unsubscribed since) is given up, not left due for ever.
            let Some(s) = stream else {
                p.transport.give_up_probe();
                break;
            };
            // The last 16 packets sent, in turn: sent, not waiting in the pacer (a repair
            // of a packet that has not left yet tells the subscriber the ones before it are
            // missing, and it asks for them).
            let queued = self
                .participants
                .get(&key)
                .map_or(0, |p| p.pacer.len().min(usize::from(u16::MAX / 2)) as u16);
            // Not of a paused video: a packet of it again could complete a picture its
            // subscriber had only in part, and the browser would show a frame of it.
            let resent = flowing == Some(true)
                && self
                    .recent_packet(s, queued.wrapping_add(sent % 16))
                    .is_some_and(|seq| self.probe_with_resend(now, (s.0, s.1, s.2), seq, cluster));
            if !resent && !self.send_padding(now, key, s, (cluster, id, number)) {
                break;
            }
            sent += 1;
        }
        if sent > 0 {
            if let Some(at) = self.participants.get(&key).and_then(|p| p.next_deadline()) {
                self.timers.arm(Timer::Participant(key), at);
            }
        }
    }

    /// A video subscription of `key` with an RTX stream its browser knows already (it has
    /// had media), one that is not paused where there is one: where probes go. Its session,
    /// feed, consumer index and RTX payload type, and whether it is not paused.
    fn probe_stream(
        &self,
        key: ParticipantKey,
    ) -> Option<((SessionKey, FeedKey, usize, u8), bool)> {
        let p = self.participants.get(&key)?;
        let session = self.sessions.get(&p.session)?;
        let mut paused = None;
        for &fkey in p.subscriptions.values() {
            let Some(feed) = session.feeds.get(&fkey) else {
                continue;
            };
            let Some(index) = feed.consumers.position(key).filter(|&i| {
                let c = &feed.consumers[i];
                c.transport_wide
                    && c.retransmits.rtx_ssrc.is_some()
                    && c.rewriter.last_sent().is_some()
            }) else {
                continue;
            };
            let Some(rtx) = feed.description.rtx_payload_types.first() else {
                continue;
            };
            let stream = (p.session, fkey, index, rtx.pt);
            if feed.consumers[index].layers.paused().is_none() {
                return Some((stream, true));
            }
            paused.get_or_insert(stream);
        }
        paused.map(|s| (s, false))
    }

    /// The outgoing sequence number `back` behind the newest sent on probe stream `s`.
    fn recent_packet(&self, s: (SessionKey, FeedKey, usize, u8), back: u16) -> Option<u16> {
        let feed = self.sessions.get(&s.0)?.feeds.get(&s.1)?;
        let newest = feed.consumers.get(s.2)?.rewriter.highest_sent()?;
        Some(newest.wrapping_sub(back))
    }

    /// Send one padding-only probe packet of `cluster`, numbered `number` in extension `id`,
    /// on probe stream `s`.
    fn send_padding(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        s: (SessionKey, FeedKey, usize, u8),
        (cluster, id, number): (u32, u8, u16),
    ) -> bool {
        let (Some(p), Some(session)) =
            (self.participants.get_mut(&key), self.sessions.get_mut(&s.0))
        else {
            return false;
        };
        let Some(c) = session
            .feeds
            .get_mut(&s.1)
            .and_then(|f| f.consumers.get_mut(s.2))
        else {
            return false;
        };
        let (Some(rtx_ssrc), Some((ts, _))) = (c.retransmits.rtx_ssrc, c.rewriter.last_sent())
        else {
            return false;
        };
        let mut out = self.pool.take();
        let seq = c.retransmits.next_rtx_seq();
        padding_packet(s.3, seq, ts, rtx_ssrc, (id, number), &mut out);
        // In the subscriber's own numbers where it has them, as every packet to it.
        if p.renumber.as_ref().is_some_and(|r| !r.apply(&mut out)) {
            self.pool.give(out);
            return false;
        }
        let Some((dst, srtp)) = p.transport.media_out() else {
            self.pool.give(out);
            return false;
        };
        match srtp.protect_rtp(&mut out) {
            Ok(()) => {
                p.usage.packets_out += 1;
                p.usage.bytes_out += out.len() as u64;
                p.transport.handle_probe_sent(now, out.len(), cluster);
                self.stats.probe_packets_sent += 1;
                transmit(&mut self.stats, &mut self.outputs, dst, out);
                true
            }
            Err(reason) => {
                self.pool.give(out);
                self.stats.drop(reason);
                false
            }
        }
    }
}

/// The best layer of `feed` that consumer `c` may have: at most its cap, and the smallest
/// that covers the size it shows the video at (where the layers' sizes are known).
pub(super) fn max_layer(feed: &Feed, c: &Consumer) -> u8 {
    let top = feed.layers.len().saturating_sub(1) as u8;
    let cap = c.layers.max().map_or(top, |m| m.min(top));
    let Some((w, h)) = c.layers.shown_at() else {
        return cap;
    };
    // (Called for every subscription at every decision and dynacast look: no allocation.)
    let mut sizes = [None; 8];
    let n = feed.layers.len().min(sizes.len());
    for (size, layer) in sizes.iter_mut().zip(&feed.layers) {
        *size = layer.size;
    }
    layer_for_size(&sizes[..n], w, h).map_or(cap, |l| l.min(cap))
}

/// The lowest layer whose picture covers an element of `width` x `height`: as wide or as tall
/// as it (a video is fitted inside its element, so one side fills it). A layer whose size is
/// not known yet is taken as twice the one below it, or half the one above, as simulcast
/// layers are; None when no size is known, or no layer covers it (then the top is best).
pub(super) fn layer_for_size(sizes: &[Option<(u16, u16)>], width: u32, height: u32) -> Option<u8> {
    let (known, (w, h)) = sizes
        .iter()
        .enumerate()
        .find_map(|(i, s)| Some((i, (*s)?)))?;
    (0..sizes.len()).find_map(|i| {
        let (lw, lh) = sizes[i].map_or_else(
            || {
                let scale = |v: u16| {
                    let v = f64::from(v) * 2f64.powi(i as i32 - known as i32);
                    v as u32
                };
                (scale(w), scale(h))
            },
            |(w, h)| (u32::from(w), u32::from(h)),
        );
        (lw >= width || lh >= height).then_some(i as u8)
    })
}

/// A padding-only RTP packet (RFC 3550 §5.1: P set, the last byte counts the padding) on
/// stream `ssrc` with payload type `pt`, carrying transport-wide number `(id, number)`.
fn padding_packet(
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    (id, number): (u8, u16),
    out: &mut Vec<u8>,
) {
    use crate::engine::bwe::probe_sender::PADDING;
    out.clear();
    // V=2, P, X.
    out.extend_from_slice(&[0xb0, pt & 0x7f]);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    // One-byte header extensions (RFC 8285), one word: the 2-byte number and a pad byte.
    out.extend_from_slice(&[0xbe, 0xde, 0, 1, id << 4 | 1]);
    out.extend_from_slice(&number.to_be_bytes());
    out.push(0);
    out.resize(out.len() + PADDING - 1, 0);
    out.push(PADDING as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rtp;

    #[test]
    fn the_lowest_layer_that_covers_the_element() {
        let sizes = [Some((320, 180)), Some((640, 360)), Some((1280, 720))];
        assert_eq!(layer_for_size(&sizes, 320, 180), Some(0));
        // A 4:3 element shows 16:9 video 320 wide: the 320x180 layer fills it.
        assert_eq!(layer_for_size(&sizes, 320, 240), Some(0));
        assert_eq!(layer_for_size(&sizes, 321, 181), Some(1));
        assert_eq!(layer_for_size(&sizes, 1280, 720), Some(2));
        assert_eq!(layer_for_size(&sizes, 1920, 1080), None);
        // Sizes not seen yet are guessed from one that was.
        assert_eq!(
            layer_for_size(&[None, None, Some((1280, 720))], 600, 300),
            Some(1)
        );
        assert_eq!(
            layer_for_size(&[Some((320, 180)), None, None], 1000, 500),
            Some(2)
        );
        assert_eq!(layer_for_size(&[None, None, None], 100, 100), None);
    }

    #[test]
    fn a_padding_packet_is_all_padding_with_its_number() {
        let mut out = Vec::new();
        padding_packet(97, 5, 9000, 0xabcd, (3, 0x1234), &mut out);
        let h = rtp::parse(&out).expect("valid RTP");
        assert_eq!(
            (h.payload_type, h.sequence, h.timestamp, h.ssrc),
            (97, 5, 9000, 0xabcd)
        );
        assert_eq!(h.payload_len, 0, "nothing but padding");
        assert_eq!(rtp::transport_sequence(&out, 3), Some(0x1234));
        assert_eq!(out.len(), 12 + 8 + 255);
    }
}
