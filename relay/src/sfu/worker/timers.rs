//! Everything the worker does because time passed: consent and handshake expiry, feed
//! inactivity, RTCP reports, congestion feedback, NACKs.

use std::time::Instant;

use rtcp::extended_report::{
    DLRRReport, DLRRReportBlock, ExtendedReport, ReceiverReferenceTimeReportBlock,
};
use rtcp::packet::Packet;
use rtcp::receiver_report::ReceiverReport;
use rtcp::sender_report::SenderReport;

use crate::control::{DisconnectReason, Event, Pause};
use crate::engine::rtcp as rtcp_engine;
use crate::ids::ParticipantKey;

use super::*;

impl Worker {
    /// Run everything that is due at `now`: consent and handshake expiry, feed inactivity,
    /// RTCP reports. Costs O(log n) per due deadline, nothing for the rest.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Deadlines found to lie later are armed after the loop, so that it ends (in scratch
        // space kept between calls: with pacing, this runs every few milliseconds).
        let mut later = std::mem::take(&mut self.later);
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Participant(key) => {
                    if let Some(at) = self.participant_timeout(now, key) {
                        later.push((timer, at));
                    }
                }
                Timer::Feed(skey, fkey) => {
                    if let Some(at) = self.feed_timeout(now, skey, fkey) {
                        later.push((timer, at));
                    }
                }
                Timer::Repair(skey, fkey) => {
                    if let Some(at) = self.send_nacks(now, skey, fkey) {
                        later.push((timer, at));
                    }
                }
                Timer::Dynacast(skey, fkey) => {
                    if let Some(at) = self.dynacast(now, skey, fkey) {
                        later.push((timer, at));
                    }
                }
                // Arms itself again (later than now) while packets wait.
                Timer::Pacer(key) => self.pace(now, key),
                Timer::Data(key) => {
                    if let Some(at) = self.data_timeout(now, key) {
                        later.push((timer, at));
                    }
                }
            }
        }
        for (timer, at) in later.drain(..) {
            self.timers.arm(timer, at);
        }
        self.later = later;
    }

    /// The participant's timer fired: expire it or send its reports; returns its next
    /// deadline, if it is still there.
    fn participant_timeout(&mut self, now: Instant, key: ParticipantKey) -> Option<Instant> {
        let p = self.participants.get(&key)?;
        if p.transport.ice.consent_expired(now) {
            self.disconnect(key, DisconnectReason::ConsentExpired);
            return None;
        }
        if p.transport.handshake_expired(now) {
            self.disconnect(key, DisconnectReason::DtlsTimeout);
            return None;
        }
        if p.next_report.is_some_and(|t| t <= now) {
            self.send_reports(now, key);
        }
        if let Some(p) = self
            .participants
            .get_mut(&key)
            .filter(|p| p.reallocate_at.is_some_and(|t| t <= now))
        {
            // allocate() sets the next look where a video is still paused, and none where
            // none is (a decision within the last second set its own look, later than now).
            p.reallocate_at = None;
            self.allocate(now, key);
        }
        // Congestion feedback, if due: it is the only other thing in the transport's deadline.
        if self
            .participants
            .get(&key)?
            .transport
            .poll_timeout()
            .is_some_and(|t| t <= now)
        {
            self.send_twcc(now, key);
        }
        if self
            .participants
            .get(&key)?
            .transport
            .probe_timeout()
            .is_some_and(|t| t <= now)
        {
            self.send_probes(now, key);
        }
        self.participants.get(&key)?.next_deadline()
    }

    /// Rate the participant's connection (once a report interval) and report a change.
    fn rate_connection(&mut self, now: Instant, key: ParticipantKey) {
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        let Some(session) = self.sessions.get(&p.session) else {
            return;
        };
        // Its link cannot carry the lowest layer of a video it subscribes to.
        let starved = p.subscriptions.values().any(|fkey| {
            session.feeds.get(fkey).is_some_and(|f| {
                f.consumers
                    .find(key)
                    .is_some_and(|c| c.layers.paused() == Some(Pause::Bandwidth))
            })
        });
        let packets_in = p.usage.packets_in;
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if let Some(quality) = p.link.poll_rating(now, packets_in, starved) {
            let rtt_ms = p
                .link
                .rtt()
                .map(|r| r.as_millis().min(u128::from(u32::MAX)) as u32);
            self.outputs
                .push_back(Output::Event(Event::ConnectionQuality {
                    sid: p.sid.clone(),
                    uid: p.uid.clone(),
                    quality,
                    rtt_ms,
                    loss_percent: (p.link.loss() * 100.0).round().clamp(0.0, 100.0) as u8,
                }));
        }
    }

    /// The feed's inactivity timer fired: report it stopped if nothing came for
    /// `feed_inactivity`, else return when to look again.
    fn feed_timeout(&mut self, now: Instant, skey: SessionKey, fkey: FeedKey) -> Option<Instant> {
        let session = self.sessions.get_mut(&skey)?;
        let feed = session.feeds.get_mut(&fkey)?;
        let due = feed.last_packet_at? + self.config.feed_inactivity;
        if now < due {
            return Some(due);
        }
        feed.last_packet_at = None;
        if let Some(p) = self.participants.get(&feed.publisher) {
            self.outputs.push_back(Output::Event(Event::FeedStopped {
                sid: session.sid.clone(),
                uid: p.uid.clone(),
                feed_id: feed.description.feed_id.clone(),
            }));
        }
        None
    }

    /// Send the congestion feedback due to a publisher (what it has is consumed even when it
    /// cannot be sent, so that the deadline moves on).
    pub(super) fn send_twcc(&mut self, now: Instant, key: ParticipantKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let dst = p.transport.media_destination();
        let media_ssrc = p.published.keys().next().copied().unwrap_or(0);
        let mut plain = self.pool.take();
        while p
            .transport
            .poll_twcc_feedback(now, p.rtcp_ssrc, media_ssrc, &mut plain)
        {
            let (Some(dst), Some(srtp)) = (dst, p.transport.srtp_mut()) else {
                continue;
            };
            let mut packet = self.pool.take();
            match srtp.protect_rtcp_into(&plain, &mut packet) {
                Ok(()) => {
                    p.usage.packets_out += 1;
                    p.usage.bytes_out += packet.len() as u64;
                    self.stats.twcc_feedback_sent += 1;
                    transmit(&mut self.stats, &mut self.outputs, dst, packet);
                }
                Err(reason) => {
                    self.pool.give(packet);
                    self.stats.drop(reason);
                }
            }
        }
        self.pool.give(plain);
    }

    pub(super) fn send_reports(&mut self, now: Instant, key: ParticipantKey) {
        self.rate_connection(now, key);
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.next_report = Some(now + self.config.report_interval);
        let (Some(dst), Some(session)) = (
            p.transport.media_destination(),
            self.sessions.get_mut(&p.session),
        ) else {
            return;
        };
        let mut packets: Vec<Box<dyn Packet + Send + Sync>> = Vec::new();
        let ntp = self.ntp.ntp(now);
        // Sender reports for what the relay sends this participant.
        for (ssrc, fkey) in &p.subscriptions {
            let Some(feed) = session.feeds.get(fkey) else {
                continue;
            };
            let Some(c) = feed.consumers.find(key) else {
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
        for fkey in &p.feeds {
            if let Some(feed) = session.feeds.get_mut(fkey) {
                for layer in &mut feed.layers {
                    if let Some(ssrc) = layer.ssrc {
                        blocks.extend(layer.recv.report(ssrc, now));
                    }
                }
            }
        }
        if let Some(worst) = blocks.iter().map(|b| b.fraction_lost).max() {
            p.link.handle_uplink_loss(worst);
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
        // The delay since the subscriber's reference time, from which it gets its RTT; and
        // the relay's own toward a publisher, from whose answer it gets its RTT.
        let mut xr: Vec<Box<dyn Packet + Send + Sync>> = Vec::new();
        if let Some((time, at)) = p.transport.take_receiver_time() {
            xr.push(Box::new(DLRRReportBlock {
                reports: vec![DLRRReport {
                    ssrc: time.ssrc,
                    last_rr: time.lrr,
                    dlrr: rtcp_engine::dlsr_units(now.saturating_duration_since(at)),
                }],
            }));
        }
        if !p.feeds.is_empty() {
            xr.push(Box::new(ReceiverReferenceTimeReportBlock {
                ntp_timestamp: ntp,
            }));
        }
        if !xr.is_empty() {
            packets.push(Box::new(ExtendedReport {
                sender_ssrc: p.rtcp_ssrc,
                reports: xr,
            }));
        }
        let Some(plain) = rtcp_engine::marshal(&packets) else {
            return;
        };
        let Some(srtp) = p.transport.srtp_mut() else {
            return; // media_destination implies keyed
        };
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use crate::control::{DisconnectReason, Event, ParticipantConfig};
    use crate::engine::ice_lite::binding_request;
    use crate::fuzzing::{harness, PUBLISHER_SSRC};
    use crate::ids::{Sid, Uid};
    use crate::sfu::worker::Output;

    const PARTICIPANTS: usize = 10_000;

    /// Ten thousand participants on one core, each with its own deadlines: every consent
    /// expiry, handshake timeout, RTCP report and feed stop happens within 1 ms of when it is
    /// due, when the core is woken exactly at `poll_timeout` (what the I/O shell does), also
    /// when a new input brings a deadline earlier than the one the core was sleeping for.
    #[test]
    fn deadlines_are_met_with_ten_thousand_participants() {
        let mut h = harness(1);
        let t0 = h.now;
        let config = crate::sfu::worker::WorkerConfig::default();
        let sid = Sid::from("s");
        let w = &mut h.worker;
        // When each participant is due to be dropped, and why.
        let mut due: HashMap<Uid, (Instant, DisconnectReason)> = HashMap::new();
        let mut inputs: Vec<(Instant, SocketAddr, Vec<u8>)> = Vec::new();
        for i in 0..PARTICIPANTS {
            let uid = Uid::from(format!("p{i}").as_str());
            let creds = w
                .add_participant(
                    &sid,
                    uid.clone(),
                    ParticipantConfig {
                        remote_ufrag: Some("peer".into()),
                        remote_fingerprint: None,
                        ..Default::default()
                    },
                )
                .unwrap();
            let at = t0 + Duration::from_micros(250 * i as u64);
            let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5000));
            let check = binding_request(&format!("{}:peer", creds.ufrag), &creds.pwd, true);
            inputs.push((at, addr, check));
            if i % 40 == 1 {
                // Starts a handshake that never finishes (250 of them, within the core's
                // limit of handshakes in flight).
                let hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12];
                let hello = [hello, vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]].concat();
                inputs.push((at, addr, hello));
                due.insert(
                    uid,
                    (
                        at + config.dtls_handshake_timeout,
                        DisconnectReason::DtlsTimeout,
                    ),
                );
            } else {
                due.insert(
                    uid,
                    (
                        at + config.consent_timeout,
                        DisconnectReason::ConsentExpired,
                    ),
                );
            }
        }
        // One media packet starts the harness's feed at t0: it is due to stop 3 s later.
        let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 10, 0, 0, 0, 0];
        rtp[8..12].copy_from_slice(&PUBLISHER_SSRC.to_be_bytes());
        rtp.extend_from_slice(&[5; 100]);
        h.clients[0].protect_rtp(&mut rtp).unwrap();
        inputs.insert(0, (t0, h.publisher, rtp));

        let w = &mut h.worker;
        let mut lateness = Vec::new();
        let mut dropped: HashMap<Uid, (Instant, DisconnectReason)> = HashMap::new();
        let mut stopped = None;
        // Reports to the harness's subscriber, due every second from its connection at t0.
        let mut reports = Vec::new();
        let subscriber = h.subscribers[0];
        let mut wakeups = 0;
        let mut drain = |w: &mut crate::sfu::worker::Worker, now: Instant| {
            while let Some(o) = w.poll_output() {
                match o {
                    Output::Event(Event::ParticipantDisconnected { uid, reason, .. }) => {
                        dropped.insert(uid, (now, reason));
                    }
                    Output::Event(Event::FeedStopped { .. }) => stopped = Some(now),
                    Output::Transmit(t) if t.destination == subscriber && t.contents[1] == 200 => {
                        reports.push(now)
                    }
                    _ => {}
                }
            }
        };
        let end = t0 + Duration::from_secs(40);
        let mut now = t0;
        let mut inputs = inputs.into_iter().peekable();
        loop {
            let timer = w.poll_timeout().filter(|t| *t <= end);
            let input_at = inputs.peek().map(|i| i.0);
            match (timer, input_at) {
                (Some(t), i) if i.is_none_or(|i| t <= i) => {
                    assert!(t >= now, "a deadline in the past");
                    now = t;
                    wakeups += 1;
                    w.handle_timeout(now);
                    drain(w, now);
                }
                (_, Some(_)) => {
                    let (at, src, datagram) = inputs.next().unwrap();
                    now = at;
                    w.handle_receive(now, None, src, &datagram);
                    drain(w, now);
                }
                (None, None) => break,
                (Some(_), None) => unreachable!(),
            }
        }
        // The harness's own two participants' consent, from their checks at t0, ends at 30 s.
        assert_eq!(dropped.len(), PARTICIPANTS + 2);
        for (uid, (at, reason)) in &due {
            let (when, why) = &dropped[uid];
            let when = *when;
            assert_eq!(why, reason, "{uid:?}");
            lateness.push(when.saturating_duration_since(*at));
            assert!(when >= *at, "{uid:?} dropped early");
        }
        let stop = stopped.expect("the feed stopped");
        lateness.push(stop - (t0 + config.feed_inactivity));
        // A sender report every second from the first at t0 + 1 s, until the subscriber's
        // consent ends.
        assert_eq!(reports.len(), 29);
        for (k, at) in reports.iter().enumerate() {
            let want = t0 + config.report_interval * (k as u32 + 1);
            lateness.push(at.saturating_duration_since(want));
            assert!(*at >= want);
        }
        let worst = lateness.iter().max().unwrap();
        assert!(
            *worst <= Duration::from_millis(1),
            "a deadline was {worst:?} late"
        );
        // One wake-up per distinct deadline, not one per participant per wake-up; the heap
        // holds about one entry per participant.
        assert!(wakeups <= 3 * PARTICIPANTS, "{wakeups} wake-ups");
        assert!(w.timers.entries() <= 2 * w.timers.len() + 64 + 1);
    }
}
