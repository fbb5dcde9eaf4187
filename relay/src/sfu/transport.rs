//! One participant's transport: the ICE-lite agent that picks its address, the DTLS handshake
//! gate that keys SRTP, the SRTP contexts, what the relay owes the participant's congestion
//! control about the packets it sends (transport-wide feedback, the DLRR answer to its
//! receiver reference time), and the relay's own estimate of what the path to the participant
//! carries (from the participant's transport-wide feedback about what the relay sends it).
//!
//! The DTLS handshake itself runs outside (the DTLS library is async); the transport decides
//! which records reach it and when it may start: the first records are held until the
//! ClientHello they carry is whole, so that the handshake is configured with the SRTP profile
//! the relay prefers among those offered (the library would take the client's first).
//!
//! Sans-IO: every input takes `now`; [`Transport::poll_timeout`] says when something is due.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::engine::bwe::probe_sender::ProbeSender;
use crate::engine::bwe::send_history::PacketResult;
use crate::engine::bwe::{BandwidthEstimator, BweConfig};
use crate::engine::client_hello::{self, ClientHello};
use crate::engine::ice_lite::IceLite;
use crate::engine::rtcp::twcc::PacketStatus;
use crate::engine::rtcp::xr::ReceiverTime;
use crate::engine::srtp::{BadKeyLength, SrtpKeys, SrtpProfile, SrtpSession};
use crate::engine::twcc::TwccReceiver;

/// DTLS records held while waiting for a whole ClientHello; past this the handshake starts
/// anyway, with the relay's whole list of profiles. Chromium's ClientHello takes two.
pub const MAX_HELLO_RECORDS: usize = 8;

/// Application-data records held while the handshake finishes, for the record layer that
/// follows it; past this they are dropped (SCTP sends them again).
pub const MAX_EARLY_RECORDS: usize = 8;

/// DTLS's content types for alerts and application data (RFC 5246 §6.2.1).
const ALERT: u8 = 21;
const APPLICATION_DATA: u8 = 23;

/// Where the participant's DTLS association stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsState {
    /// No DTLS record seen yet.
    Idle,
    /// A handshake runs since the given time.
    Handshaking {
        /// When the first record arrived.
        since: Instant,
    },
    /// Keys are installed.
    Connected {
        /// The negotiated SRTP profile.
        profile: SrtpProfile,
    },
}

/// What to do with a DTLS record the participant sent.
#[derive(Debug, PartialEq, Eq)]
pub enum DtlsInput {
    /// Held with the ClientHello's other records until it is whole, or, application data
    /// that came while the handshake finishes, until the keys are in.
    Held,
    /// Hand it to the running handshake.
    Forward,
    /// Start the handshake with these settings, then hand it `records` in order (the held
    /// ones and this one).
    Start {
        /// The SRTP profiles to accept, best first: the one the relay prefers among those the
        /// hello offered, or the relay's whole list when the hello could not be read.
        profiles: Vec<SrtpProfile>,
        /// The certificate fingerprint to insist on, if signalling gave one.
        remote_fingerprint: Option<String>,
        /// The records.
        records: Vec<Vec<u8>>,
    },
}

/// An input the transport refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The fingerprint can no longer change: the handshake has started.
    #[error("DTLS has started; the fingerprint cannot change")]
    DtlsStarted,
    /// The handshake produced keys that do not fit its profile.
    #[error("SRTP keys: {0}")]
    Keys(String),
}

impl From<BadKeyLength> for TransportError {
    fn from(e: BadKeyLength) -> Self {
        TransportError::Keys(e.to_string())
    }
}

/// The first records of a handshake, held until the ClientHello they carry is whole.
#[derive(Debug, Default)]
struct PendingHello {
    hello: ClientHello,
    records: Vec<Vec<u8>>,
}

/// A participant's ICE, DTLS and SRTP state and its congestion feedback.
pub struct Transport {
    /// ICE-lite agent: credentials, the selected address, consent.
    pub ice: IceLite,
    dtls: DtlsState,
    remote_fingerprint: Option<String>,
    srtp: Option<SrtpSession>,
    hello: Option<PendingHello>,
    /// Application-data records that came before the handshake's end was known here.
    early: Vec<Vec<u8>>,
    handshake_timeout: Duration,
    twcc: TwccReceiver,
    receiver_time: Option<(ReceiverTime, Instant)>,
    /// Where the participant negotiated transport-wide feedback for what it receives: the
    /// header-extension id the relay numbers its packets with, and the estimate.
    bwe: Option<(u8, BandwidthEstimator)>,
    /// The probe cluster being sent, if any.
    probe: Option<ProbeSender>,
}

impl Transport {
    /// A transport that has received nothing yet; a handshake not done `handshake_timeout`
    /// after its first record is given up.
    pub fn new(
        ice: IceLite,
        remote_fingerprint: Option<String>,
        handshake_timeout: Duration,
    ) -> Self {
        Transport {
            ice,
            dtls: DtlsState::Idle,
            remote_fingerprint,
            srtp: None,
            hello: None,
            early: Vec::new(),
            handshake_timeout,
            twcc: TwccReceiver::new(),
            receiver_time: None,
            bwe: None,
            probe: None,
        }
    }

    /// Where the DTLS association stands.
    pub fn dtls(&self) -> DtlsState {
        self.dtls
    }

    /// The certificate fingerprint from the participant's answer. It may be set until the
    /// handshake starts, never changed afterwards (that would let another certificate in).
    pub fn set_remote_fingerprint(
        &mut self,
        fingerprint: Option<String>,
    ) -> Result<(), TransportError> {
        if self.dtls != DtlsState::Idle && fingerprint != self.remote_fingerprint {
            return Err(TransportError::DtlsStarted);
        }
        self.remote_fingerprint = fingerprint;
        Ok(())
    }

    /// A DTLS record from the participant's selected address. The first one begins the
    /// handshake (the caller bounds how many run at once, before calling).
    pub fn handle_dtls_record(&mut self, now: Instant, record: &[u8]) -> DtlsInput {
        if self.dtls == DtlsState::Idle {
            self.dtls = DtlsState::Handshaking { since: now };
            self.hello = Some(PendingHello::default());
        }
        let Some(pending) = self.hello.as_mut() else {
            // The peer sends application data once it has the relay's last flight, which may
            // be before the handshake task's outcome reaches the worker, and may close the
            // association as soon (an alert under the new epoch). The handshake needs none of
            // it; the record layer that follows takes it.
            let handshaking = matches!(self.dtls, DtlsState::Handshaking { .. });
            let protected = match record {
                [APPLICATION_DATA, ..] => true,
                [ALERT, _, _, hi, lo, ..] => u16::from_be_bytes([*hi, *lo]) >= 1,
                _ => false,
            };
            if handshaking && protected {
                if self.early.len() < MAX_EARLY_RECORDS {
                    self.early.push(record.to_vec());
                }
                return DtlsInput::Held;
            }
            return DtlsInput::Forward;
        };
        pending.hello.handle_datagram(record);
        pending.records.push(record.to_vec());
        let offered = pending.hello.offered_srtp_profiles();
        if offered.is_none()
            && !pending.hello.is_complete()
            && pending.records.len() < MAX_HELLO_RECORDS
        {
            return DtlsInput::Held;
        }
        let profiles = offered
            .and_then(|offered| client_hello::choose(&SrtpProfile::PREFERENCE, &offered))
            .map_or_else(|| SrtpProfile::PREFERENCE.to_vec(), |p| vec![p]);
        let records = self.hello.take().map(|h| h.records).unwrap_or_default();
        DtlsInput::Start {
            profiles,
            remote_fingerprint: self.remote_fingerprint.clone(),
            records,
        }
    }

    /// The handshake completed with `keys`: install the SRTP contexts. Ok(false) when no
    /// handshake was running (a late outcome of one given up), which changes nothing.
    pub fn handle_keys(&mut self, keys: &SrtpKeys) -> Result<bool, TransportError> {
        if !matches!(self.dtls, DtlsState::Handshaking { .. }) {
            return Ok(false);
        }
        self.srtp = Some(SrtpSession::new(keys)?);
        self.dtls = DtlsState::Connected {
            profile: keys.profile,
        };
        Ok(true)
    }

    /// The application-data records held while the handshake finished, once it has.
    pub fn take_early_records(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.early)
    }

    /// Whether a running handshake has taken too long at `now`.
    pub fn handshake_expired(&self, now: Instant) -> bool {
        matches!(self.dtls, DtlsState::Handshaking { since } if now >= since + self.handshake_timeout)
    }

    /// The first of the transport's deadlines: consent expiry, the end of the handshake, the
    /// next congestion feedback.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let handshake = match self.dtls {
            DtlsState::Handshaking { since } => Some(since + self.handshake_timeout),
            _ => None,
        };
        [self.ice.poll_timeout(), handshake, self.twcc.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Where to send media and RTCP: the ICE-selected address, once SRTP is keyed.
    pub fn media_destination(&self) -> Option<SocketAddr> {
        self.srtp.as_ref()?;
        self.ice.selected()
    }

    /// Where to send media and the SRTP contexts to seal it with, once both exist.
    pub fn media_out(&mut self) -> Option<(SocketAddr, &mut SrtpSession)> {
        let dst = self.ice.selected()?;
        Some((dst, self.srtp.as_mut()?))
    }

    /// The SRTP contexts, once keyed.
    pub fn srtp(&self) -> Option<&SrtpSession> {
        self.srtp.as_ref()
    }

    /// The SRTP contexts, once keyed.
    pub fn srtp_mut(&mut self) -> Option<&mut SrtpSession> {
        self.srtp.as_mut()
    }

    /// An authentic packet carried transport-wide sequence number `seq`. Returns when
    /// feedback is due if this arrival made it due (nothing was owed before).
    pub fn handle_transport_sequence(&mut self, now: Instant, seq: u16) -> Option<Instant> {
        let idle = self.twcc.poll_timeout().is_none();
        self.twcc.handle_packet(now, seq);
        if idle {
            self.twcc.poll_timeout()
        } else {
            None
        }
    }

    /// Write the next congestion feedback message due at `now` into `out`; call until it
    /// returns false.
    pub fn poll_twcc_feedback(
        &mut self,
        now: Instant,
        sender_ssrc: u32,
        media_ssrc: u32,
        out: &mut Vec<u8>,
    ) -> bool {
        self.twcc.poll_feedback(now, sender_ssrc, media_ssrc, out)
    }

    /// Number what the relay sends the participant in header extension `id` and estimate the
    /// path from its feedback (once; later calls change nothing).
    pub fn enable_bwe(&mut self, id: u8, config: BweConfig) {
        if self.bwe.is_none() {
            self.bwe = Some((id, BandwidthEstimator::new(config)));
        }
    }

    /// The extension id and transport-wide number for the next packet to the participant,
    /// where it is estimated; record the packet with [`Transport::handle_sent`] once sealed.
    pub fn next_transport_sequence(&self) -> Option<(u8, u16)> {
        self.bwe.as_ref().map(|(id, b)| (*id, b.next_sequence()))
    }

    /// A packet numbered with [`Transport::next_transport_sequence`] left at `now`, `size`
    /// bytes on the wire.
    ///
    /// While a probe cluster is being sent, media is part of it, as in libwebrtc's prober:
    /// the probe's packets only fill up to the cluster's rate, and its measure is what the
    /// path carried of everything. Probe packets on top of the media overshot a capped link
    /// by the media's rate, and measured what was left of the path beside it, from a handful
    /// of packets: results on a 400 kbit/s link spread from 220 to 680 kbit/s.
    pub fn handle_sent(&mut self, now: Instant, size: usize) {
        if let Some((_, b)) = self.bwe.as_mut() {
            let cluster = self.probe.as_mut().filter(|p| !p.done()).map(|p| {
                p.handle_sent(size);
                p.cluster()
            });
            b.handle_sent(now, size, cluster);
        }
    }

    /// The participant's transport-wide feedback about what the relay sent it; `results` is
    /// the core's room to work in ([`BandwidthEstimator::handle_feedback`]).
    pub fn handle_transport_feedback(
        &mut self,
        now: Instant,
        statuses: &[PacketStatus],
        results: &mut Vec<PacketResult>,
    ) {
        if let Some((_, b)) = self.bwe.as_mut() {
            b.handle_feedback(now, statuses, results);
        }
    }

    /// The round trip to the participant, from its reports.
    pub fn set_rtt(&mut self, rtt: Duration) {
        if let Some((_, b)) = self.bwe.as_mut() {
            b.set_rtt(rtt);
        }
    }

    /// Probe no higher than `limit` bit/s, where the path is estimated.
    pub fn set_probe_limit(&mut self, limit: f64) {
        if let Some((_, b)) = self.bwe.as_mut() {
            b.set_probe_limit(limit);
        }
    }

    /// Ask for a probe toward `target` bit/s, where the path is estimated.
    pub fn request_probe(&mut self, now: Instant, target: f64) {
        if let Some((_, b)) = self.bwe.as_mut() {
            b.request_probe(now, target);
        }
    }

    /// Whether a probe packet is due at `now`: the cluster it belongs to, and the extension id
    /// and transport-wide number to stamp it with (then report it with
    /// [`Transport::handle_probe_sent`]). A new cluster starts only where `can_pad`: where the
    /// participant has a stream to send padding on.
    pub fn poll_probe_packet(&mut self, now: Instant, can_pad: bool) -> Option<(u32, u8, u16)> {
        let (id, bwe) = self.bwe.as_mut()?;
        if self.probe.as_ref().is_none_or(ProbeSender::done) && can_pad {
            self.probe = bwe.poll_probe(now).map(|c| {
                tracing::debug!(
                    cluster = c.id,
                    bitrate = c.bitrate,
                    bytes = c.bytes,
                    "probe cluster"
                );
                ProbeSender::new(now, c)
            });
        }
        let probe = self.probe.as_ref()?;
        probe
            .poll_packet(now)
            .then(|| (probe.cluster(), *id, bwe.next_sequence()))
    }

    /// Give up the cluster being sent: there is no stream to send it on any more (its packets
    /// would stay due, and the participant's timer with them).
    pub fn give_up_probe(&mut self) {
        self.probe = None;
    }

    /// A probe packet of cluster `cluster`, `size` bytes, left at `now`.
    pub fn handle_probe_sent(&mut self, now: Instant, size: usize, cluster: u32) {
        if let Some((_, b)) = self.bwe.as_mut() {
            b.handle_sent(now, size, Some(cluster));
        }
        if let Some(p) = self.probe.as_mut().filter(|p| p.cluster() == cluster) {
            p.handle_sent(size);
        }
    }

    /// When the next probe packet is due.
    pub fn probe_timeout(&self) -> Option<Instant> {
        self.probe.as_ref()?.poll_timeout()
    }

    /// What the path to the participant carries, bit/s, where it is estimated.
    pub fn estimate(&self) -> Option<f64> {
        self.bwe.as_ref().map(|(_, b)| b.estimate())
    }

    /// Whether the estimated link ever pushed back (a queue, or loss) since the participant
    /// joined.
    pub fn pushed_back(&self) -> bool {
        self.bwe.as_ref().is_some_and(|(_, b)| b.pushed_back())
    }

    /// Whether the estimated link pushed back lately (a queue, or loss).
    pub fn congested(&self, now: Instant) -> bool {
        self.bwe.as_ref().is_some_and(|(_, b)| b.congested(now))
    }

    /// The participant's receiver reference time (RFC 3611 §4.4) arrived at `now`.
    pub fn handle_receiver_time(&mut self, now: Instant, time: ReceiverTime) {
        self.receiver_time = Some((time, now));
    }

    /// The latest receiver reference time and when it arrived, for the DLRR of the next
    /// report; answered once.
    pub fn take_receiver_time(&mut self) -> Option<(ReceiverTime, Instant)> {
        self.receiver_time.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ice_lite::IceCredentials;
    use crate::fuzzing::{client_hello_record as client_hello, fragmented_client_hello, use_srtp};

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn transport() -> Transport {
        let creds = IceCredentials {
            ufrag: "abcd".into(),
            pwd: "0123456789012345678901".into(),
        };
        let ice = IceLite::new(creds, None, Duration::from_secs(30));
        Transport::new(ice, Some("sha-256 AA:BB".into()), TIMEOUT)
    }

    #[test]
    fn media_sent_during_a_probe_cluster_is_part_of_it() {
        let mut t = transport();
        t.enable_bwe(3, BweConfig::default());
        let t0 = Instant::now();
        // A probe for a better layer at 1.5 Mbit/s.
        t.request_probe(t0, 1_500_000.0);
        let (cluster, id, first) = t.poll_probe_packet(t0, true).expect("a probe");
        assert_eq!((id, first), (3, 0));
        t.handle_probe_sent(t0, 1200, cluster);
        let due = t.probe_timeout().expect("more of the cluster");
        // Media leaves before the next probe packet: the probe waits for its bytes too…
        t.handle_sent(t0 + Duration::from_micros(100), 1200);
        let later = t.probe_timeout().expect("more of the cluster");
        assert_eq!(
            later - due,
            Duration::from_secs_f64(1200.0 * 8.0 / 1_500_000.0)
        );
        // …and media alone completes it.
        let mut at = t0;
        while t.probe_timeout().is_some() {
            at += Duration::from_millis(1);
            assert!(t
                .poll_probe_packet(at, false)
                .is_none_or(|p| p.0 == cluster));
            t.handle_sent(at, 1200);
        }
        // (1.5 Mbit/s for 150 ms is 28 kB: 24 packets, one a millisecond.)
        assert!(at - t0 < Duration::from_millis(35), "{:?}", at - t0);
    }

    fn keys(profile: SrtpProfile) -> SrtpKeys {
        let (key, salt) = match profile {
            SrtpProfile::AeadAes128Gcm => (16, 12),
            SrtpProfile::Aes128CmHmacSha1_80 => (16, 14),
        };
        SrtpKeys {
            profile,
            local_key: vec![1; key],
            local_salt: vec![2; salt],
            remote_key: vec![3; key],
            remote_salt: vec![4; salt],
        }
    }

    #[test]
    fn a_fragmented_hello_is_held_then_started_with_the_preferred_profile() {
        let t0 = Instant::now();
        let mut t = transport();
        // Chromium's order (SHA1_80 first) with a large key share pushing use_srtp into the
        // last fragment.
        let record = client_hello(&[(0x0033, vec![0x5a; 1200]), use_srtp(&[0x0001, 0x0007])]);
        let parts = fragmented_client_hello(&record, 500);
        assert_eq!(t.handle_dtls_record(t0, &parts[0]), DtlsInput::Held);
        assert_eq!(t.dtls(), DtlsState::Handshaking { since: t0 });
        assert_eq!(t.handle_dtls_record(t0, &parts[1]), DtlsInput::Held);
        let at = t0 + Duration::from_millis(5);
        let DtlsInput::Start {
            profiles,
            remote_fingerprint,
            records,
        } = t.handle_dtls_record(at, &parts[2])
        else {
            panic!("a whole hello starts the handshake");
        };
        assert_eq!(profiles, [SrtpProfile::AeadAes128Gcm]);
        assert_eq!(remote_fingerprint.as_deref(), Some("sha-256 AA:BB"));
        assert_eq!(records, parts);
        // The handshake keeps the time of its first record; what follows goes straight on.
        assert_eq!(t.dtls(), DtlsState::Handshaking { since: t0 });
        assert_eq!(t.handle_dtls_record(at, &[22; 40]), DtlsInput::Forward);
    }

    #[test]
    fn application_data_before_the_keys_waits_for_them() {
        let t0 = Instant::now();
        let mut t = transport();
        let record = client_hello(&[use_srtp(&[0x0007])]);
        assert!(matches!(
            t.handle_dtls_record(t0, &record),
            DtlsInput::Start { .. }
        ));
        // The peer's Finished goes to the handshake; its first SCTP packets wait.
        assert_eq!(t.handle_dtls_record(t0, &[22; 40]), DtlsInput::Forward);
        for i in 0..=MAX_EARLY_RECORDS {
            assert_eq!(t.handle_dtls_record(t0, &[23, i as u8]), DtlsInput::Held);
        }
        assert_eq!(t.handle_keys(&keys(SrtpProfile::AeadAes128Gcm)), Ok(true));
        let early = t.take_early_records();
        assert_eq!(early.len(), MAX_EARLY_RECORDS);
        assert_eq!(early[0], [23, 0]);
        assert!(t.take_early_records().is_empty());
        // Afterwards every record goes on, to the record layer.
        assert_eq!(t.handle_dtls_record(t0, &[23, 9]), DtlsInput::Forward);
        // An alert under the new epoch waits too; one of epoch 0 (a handshake failure) goes
        // to the handshake.
        let mut t = transport();
        t.handle_dtls_record(t0, &client_hello(&[use_srtp(&[0x0007])]));
        assert_eq!(
            t.handle_dtls_record(t0, &[21, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 3, 0, 26]),
            DtlsInput::Held
        );
        assert_eq!(
            t.handle_dtls_record(t0, &[21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 3, 0, 2, 2, 40]),
            DtlsInput::Forward
        );
    }

    #[test]
    fn records_that_never_make_a_hello_start_with_the_whole_preference() {
        let t0 = Instant::now();
        let mut t = transport();
        let garbage = [22u8; 30];
        for _ in 1..MAX_HELLO_RECORDS {
            assert_eq!(t.handle_dtls_record(t0, &garbage), DtlsInput::Held);
        }
        let DtlsInput::Start {
            profiles, records, ..
        } = t.handle_dtls_record(t0, &garbage)
        else {
            panic!("the record limit starts the handshake");
        };
        assert_eq!(profiles, SrtpProfile::PREFERENCE.to_vec());
        assert_eq!(records.len(), MAX_HELLO_RECORDS);
        // A hello offering nothing the relay implements starts at once, with the whole list
        // (the handshake then fails with a reason).
        let mut t = transport();
        let record = client_hello(&[use_srtp(&[0x0002])]);
        assert!(matches!(
            t.handle_dtls_record(t0, &record),
            DtlsInput::Start { profiles, .. } if profiles == SrtpProfile::PREFERENCE.to_vec()
        ));
    }

    #[test]
    fn a_handshake_expires_after_its_timeout_unless_keyed() {
        let t0 = Instant::now();
        let mut t = transport();
        assert!(!t.handshake_expired(t0 + TIMEOUT * 2), "idle never expires");
        t.handle_dtls_record(t0, &client_hello(&[use_srtp(&[0x0001])]));
        assert_eq!(t.poll_timeout(), Some(t0 + TIMEOUT));
        assert!(!t.handshake_expired(t0 + TIMEOUT - Duration::from_millis(1)));
        assert!(t.handshake_expired(t0 + TIMEOUT));

        let mut t = transport();
        t.handle_dtls_record(t0, &client_hello(&[use_srtp(&[0x0001])]));
        assert_eq!(
            t.handle_keys(&keys(SrtpProfile::Aes128CmHmacSha1_80)),
            Ok(true)
        );
        assert_eq!(
            t.dtls(),
            DtlsState::Connected {
                profile: SrtpProfile::Aes128CmHmacSha1_80
            }
        );
        assert!(!t.handshake_expired(t0 + TIMEOUT * 2));
        assert_eq!(t.poll_timeout(), None);
        assert!(t.srtp_mut().is_some());
        // No address was selected: nothing can be sent yet.
        assert_eq!(t.media_destination(), None);
    }

    #[test]
    fn keys_count_only_for_a_running_handshake_and_must_fit_it() {
        let t0 = Instant::now();
        let mut t = transport();
        let k = keys(SrtpProfile::AeadAes128Gcm);
        assert_eq!(t.handle_keys(&k), Ok(false), "no handshake ran");
        assert!(t.srtp_mut().is_none());
        t.handle_dtls_record(t0, &client_hello(&[use_srtp(&[0x0007])]));
        let mut short = k.clone();
        short.remote_salt.pop();
        assert!(matches!(
            t.handle_keys(&short),
            Err(TransportError::Keys(_))
        ));
        assert_eq!(t.handle_keys(&k), Ok(true));
        assert_eq!(t.handle_keys(&k), Ok(false), "keyed once");
    }

    #[test]
    fn the_fingerprint_is_fixed_once_the_handshake_starts() {
        let t0 = Instant::now();
        let mut t = transport();
        assert_eq!(t.set_remote_fingerprint(Some("sha-256 CC".into())), Ok(()));
        t.handle_dtls_record(t0, &[22; 30]);
        assert_eq!(t.set_remote_fingerprint(Some("sha-256 CC".into())), Ok(()));
        assert_eq!(
            t.set_remote_fingerprint(Some("sha-256 DD".into())),
            Err(TransportError::DtlsStarted)
        );
        assert_eq!(
            t.set_remote_fingerprint(None),
            Err(TransportError::DtlsStarted)
        );
    }

    #[test]
    fn congestion_feedback_falls_due_once_per_interval_while_packets_arrive() {
        let t0 = Instant::now();
        let mut t = transport();
        let due = t.handle_transport_sequence(t0, 65_534);
        assert!(due.is_some_and(|d| d > t0));
        assert_eq!(t.poll_timeout(), due);
        // Later arrivals (across the wrap) do not move it.
        assert_eq!(t.handle_transport_sequence(t0, 65_535), None);
        assert_eq!(t.handle_transport_sequence(t0, 1), None);
        let due = due.unwrap();
        let mut out = Vec::new();
        assert!(!t.poll_twcc_feedback(due - Duration::from_millis(1), 1, 2, &mut out));
        assert!(t.poll_twcc_feedback(due, 1, 2, &mut out));
        assert!(!out.is_empty());
        assert!(!t.poll_twcc_feedback(due, 1, 2, &mut out));
        assert_eq!(t.poll_timeout(), None, "nothing new arrived");
        // The next arrival makes feedback due again.
        assert!(t.handle_transport_sequence(due, 2).is_some_and(|d| d > due));
    }

    #[test]
    fn a_receiver_time_is_answered_once() {
        let t0 = Instant::now();
        let mut t = transport();
        let time = ReceiverTime { ssrc: 7, lrr: 42 };
        t.handle_receiver_time(t0, time);
        assert_eq!(t.take_receiver_time(), Some((time, t0)));
        assert_eq!(t.take_receiver_time(), None);
    }
}
