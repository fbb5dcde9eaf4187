//! Outcomes of the DTLS handshakes that run beside the worker, and disconnection.

use std::net::SocketAddr;
use std::time::Instant;

use crate::control::{DisconnectReason, Event};
use crate::engine::srtp::SrtpKeys;
use crate::ids::{FeedKey, ParticipantKey};
use crate::stats::DropReason;

use super::*;

impl Worker {
    /// The DTLS handshake of `key` completed with these SRTP keys.
    pub fn handle_dtls_connected(&mut self, now: Instant, key: ParticipantKey, keys: SrtpKeys) {
        let Some(p) = self.participants.get_mut(&key) else {
            return; // removed meanwhile; its task is being closed
        };
        match p.transport.handle_keys(&keys) {
            Ok(true) => self.handshakes -= 1,
            Ok(false) => return,
            Err(e) => {
                // Still handshaking: removing the participant gives its slot back.
                let detail = e.to_string();
                self.disconnect(key, DisconnectReason::DtlsFailed { detail });
                return;
            }
        }
        for data in p.transport.take_early_records() {
            self.outputs.push_back(Output::DtlsRecord { key, data });
        }
        let next = now + self.config.report_interval;
        p.next_report = Some(next);
        if let Some(address) = p.transport.ice.selected() {
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
            let layer = self.wanted_layer(skey, fkey, key);
            self.keyframe_request(now, skey, fkey, layer, true);
        }
        self.arm(key, next);
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
        let dst = p.transport.ice.selected()?;
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

    /// The kernel refused `datagrams` of the last outputs, each for its own destination.
    pub fn handle_send_failed(&mut self, datagrams: usize) {
        self.stats.datagrams_not_sent += datagrams as u64;
    }

    /// The ICE-TCP counters, which the I/O layer keeps here so that they reach the snapshot
    /// with the rest.
    pub fn ice_tcp_stats(&mut self) -> &mut crate::stats::IceTcpStats {
        &mut self.stats.ice_tcp
    }

    /// Another core's inbox was full; a cross-core message was dropped.
    pub fn handle_cross_core_queue_full(&mut self) {
        self.stats.drop(DropReason::CrossCoreQueueFull);
    }

    /// A DTLS record for `key` could not be queued (its task is behind).
    pub fn handle_dtls_queue_full(&mut self) {
        self.stats.drop(DropReason::DtlsQueueFull);
    }

    /// A DTLS record after the handshake was dropped by the participant's record layer
    /// (forged, replayed, truncated, or of a content type or epoch it does not carry).
    pub fn handle_dtls_record_dropped(&mut self) {
        self.stats.drop(DropReason::DtlsRecordRejected);
    }

    pub(super) fn disconnect(&mut self, key: ParticipantKey, reason: DisconnectReason) {
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        let event = Event::ParticipantDisconnected {
            sid: p.sid.clone(),
            uid: p.uid.clone(),
            reason,
            usage: p.usage,
        };
        self.remove_participant_by_key(key);
        self.outputs.push_back(Output::Event(event));
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Instant, UNIX_EPOCH};

    use crate::control::{DisconnectReason, Event, ParticipantConfig};
    use crate::engine::ice_lite::binding_request;
    use crate::engine::srtp::{SrtpKeys, SrtpProfile};
    use crate::ids::{ParticipantKey, Sid, Uid};
    use crate::sfu::worker::{Output, Worker, WorkerConfig};

    /// A participant that passed ICE at `addr` and sent a whole ClientHello: its handshake
    /// runs.
    fn handshaking(w: &mut Worker, now: Instant, uid: &str, addr: SocketAddr) -> ParticipantKey {
        let creds = w
            .add_participant(
                &Sid::from("s"),
                Uid::from(uid),
                ParticipantConfig {
                    remote_ufrag: Some("peer".into()),
                    remote_fingerprint: None,
                    ..Default::default()
                },
            )
            .unwrap();
        let check = binding_request(&format!("{}:peer", creds.ufrag), &creds.pwd, true);
        w.handle_receive(now, None, addr, &check);
        let hello = [
            22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        w.handle_receive(now, None, addr, &hello);
        let mut key = None;
        while let Some(o) = w.poll_output() {
            if let Output::DtlsStart { key: k, .. } = o {
                key = Some(k);
            }
        }
        key.expect("the handshake started")
    }

    /// Keys that do not fit their profile fail the participant and give back exactly its one
    /// handshake slot: the other handshake is still counted, and ends at zero.
    #[test]
    fn keys_that_do_not_fit_give_back_one_handshake() {
        let now = Instant::now();
        let mut w = Worker::new(WorkerConfig::default(), now, UNIX_EPOCH, 1);
        w.create_session(Sid::from("s")).unwrap();
        let a = handshaking(&mut w, now, "a", SocketAddr::from(([10, 0, 0, 1], 1)));
        let b = handshaking(&mut w, now, "b", SocketAddr::from(([10, 0, 0, 2], 2)));
        assert_eq!(w.stats().handshakes, 2);
        let profile = SrtpProfile::AeadAes128Gcm;
        let material = vec![7; profile.keying_material_len()];
        let good = SrtpKeys::from_keying_material(profile, &material, false).unwrap();
        let mut bad = good.clone();
        bad.local_key.pop();
        w.handle_dtls_connected(now, a, bad);
        let mut failed = false;
        while let Some(o) = w.poll_output() {
            if let Output::Event(Event::ParticipantDisconnected { uid, reason, .. }) = o {
                failed =
                    uid == Uid::from("a") && matches!(reason, DisconnectReason::DtlsFailed { .. });
            }
        }
        assert!(failed, "a was dropped for its keys");
        assert_eq!(w.stats().handshakes, 1, "b's handshake still runs");
        w.handle_dtls_connected(now, b, good);
        assert_eq!(w.stats().handshakes, 0);
    }
}
