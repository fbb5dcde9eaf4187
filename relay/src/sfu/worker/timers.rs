//! Everything the worker does because time passed: consent and handshake expiry, feed
//! inactivity, RTCP reports.

use std::time::Instant;

use rtcp::packet::Packet;
use rtcp::receiver_report::ReceiverReport;
use rtcp::sender_report::SenderReport;

use crate::control::{DisconnectReason, Event};
use crate::engine::rtcp as rtcp_engine;
use crate::ids::ParticipantKey;

use crate::sfu::participant::DtlsState;

use super::*;

impl Worker {
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

    pub(super) fn recompute_timeout(&mut self) {
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

    pub(super) fn send_reports(&mut self, now: Instant, key: ParticipantKey) {
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
