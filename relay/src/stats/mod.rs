//! Per-core counters.
//!
//! Counters are plain integers owned by the core's state machine (no atomics on the packet path);
//! the control plane reads a [`CoreStats`] snapshot through a control command.

use serde::{Deserialize, Serialize};

mod data;
mod delay;
mod ice_tcp;
mod record;

pub use data::DataStats;
pub use delay::DelayHistogram;
pub use ice_tcp::IceTcpStats;
pub use record::RecordStats;

/// Why the relay dropped an ingress datagram (or an egress one it could not build).
///
/// Every drop is counted under exactly one reason, so tests and operators can tell an attack
/// (bad integrity, unknown sources) from a bug (malformed output) or overload (queue full).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// First byte matches none of the RFC 7983 ranges we accept.
    UnknownProtocol,
    /// Starts like STUN but does not parse as a STUN message.
    StunMalformed,
    /// A well-formed STUN message that is not a Binding request (or indication) for us.
    StunNotBindingRequest,
    /// Binding request without USERNAME, or whose USERNAME names no participant on this core.
    StunUnknownUfrag,
    /// MESSAGE-INTEGRITY missing or does not verify with the participant's ICE password.
    StunBadIntegrity,
    /// FINGERPRINT missing or wrong.
    StunBadFingerprint,
    /// DTLS record from an address that has not passed an ICE connectivity check.
    DtlsUnknownSource,
    /// A new DTLS handshake was refused because too many are already in progress on this core.
    DtlsHandshakeLimit,
    /// The participant's DTLS input queue is full (the handshake task is not keeping up).
    DtlsQueueFull,
    /// A DTLS record after the handshake that did not open: forged, replayed, truncated, or
    /// of a content type or epoch the association does not carry.
    DtlsRecordRejected,
    /// RTP from an address that has not passed an ICE connectivity check.
    RtpUnknownSource,
    /// RTCP from an address that has not passed an ICE connectivity check.
    RtcpUnknownSource,
    /// SRTP or SRTCP before the DTLS handshake produced keys.
    SrtpNotReady,
    /// SRTP/SRTCP authentication failed (wrong key, tampered, or truncated packet).
    SrtpAuthFailed,
    /// SRTP/SRTCP packet already received (replay protection).
    SrtpReplay,
    /// Decrypted RTP whose header does not parse.
    RtpMalformed,
    /// RTP with an SSRC that the participant has not declared in any feed.
    RtpUnknownSsrc,
    /// Decrypted RTCP that does not parse as a compound packet.
    RtcpMalformed,
    /// Encrypting toward a subscriber failed (its context is exhausted or broken).
    SrtpProtectFailed,
    /// RTP with a payload type the feed did not declare.
    RtpUnknownPayloadType,
    /// A packet for another core's subscribers found that core's inbox full.
    CrossCoreQueueFull,
}

impl DropReason {
    /// Every reason, in declaration order (the index into [`CoreStats::drops`]).
    pub const ALL: [DropReason; 21] = [
        DropReason::UnknownProtocol,
        DropReason::StunMalformed,
        DropReason::StunNotBindingRequest,
        DropReason::StunUnknownUfrag,
        DropReason::StunBadIntegrity,
        DropReason::StunBadFingerprint,
        DropReason::DtlsUnknownSource,
        DropReason::DtlsHandshakeLimit,
        DropReason::DtlsQueueFull,
        DropReason::DtlsRecordRejected,
        DropReason::RtpUnknownSource,
        DropReason::RtcpUnknownSource,
        DropReason::SrtpNotReady,
        DropReason::SrtpAuthFailed,
        DropReason::SrtpReplay,
        DropReason::RtpMalformed,
        DropReason::RtpUnknownSsrc,
        DropReason::RtcpMalformed,
        DropReason::SrtpProtectFailed,
        DropReason::RtpUnknownPayloadType,
        DropReason::CrossCoreQueueFull,
    ];

    /// Stable snake_case name, as used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownProtocol => "unknown_protocol",
            DropReason::StunMalformed => "stun_malformed",
            DropReason::StunNotBindingRequest => "stun_not_binding_request",
            DropReason::StunUnknownUfrag => "stun_unknown_ufrag",
            DropReason::StunBadIntegrity => "stun_bad_integrity",
            DropReason::StunBadFingerprint => "stun_bad_fingerprint",
            DropReason::DtlsUnknownSource => "dtls_unknown_source",
            DropReason::DtlsHandshakeLimit => "dtls_handshake_limit",
            DropReason::DtlsQueueFull => "dtls_queue_full",
            DropReason::DtlsRecordRejected => "dtls_record_rejected",
            DropReason::RtpUnknownSource => "rtp_unknown_source",
            DropReason::RtcpUnknownSource => "rtcp_unknown_source",
            DropReason::SrtpNotReady => "srtp_not_ready",
            DropReason::SrtpAuthFailed => "srtp_auth_failed",
            DropReason::SrtpReplay => "srtp_replay",
            DropReason::RtpMalformed => "rtp_malformed",
            DropReason::RtpUnknownSsrc => "rtp_unknown_ssrc",
            DropReason::RtcpMalformed => "rtcp_malformed",
            DropReason::SrtpProtectFailed => "srtp_protect_failed",
            DropReason::RtpUnknownPayloadType => "rtp_unknown_payload_type",
            DropReason::CrossCoreQueueFull => "cross_core_queue_full",
        }
    }
}

/// Counters of one core, as a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreStats {
    /// Index of the core.
    pub core: usize,
    /// Datagrams received on the core's socket.
    pub packets_in: u64,
    /// Bytes received on the core's socket.
    pub bytes_in: u64,
    /// Datagrams handed to the socket for sending.
    pub packets_out: u64,
    /// Bytes handed to the socket for sending.
    pub bytes_out: u64,
    /// RTP packets forwarded to subscribers (one per subscriber copy).
    pub rtp_forwarded: u64,
    /// Keyframe requests (PLI/FIR from subscribers, or for new subscribers) sent to publishers.
    pub keyframe_requests_forwarded: u64,
    /// Keyframe requests not forwarded: one was sent to the publisher very recently, or the
    /// subscriber asking is still being sent the last keyframe.
    pub keyframe_requests_suppressed: u64,
    /// Transport-wide congestion control feedback messages sent to publishers.
    #[serde(default)]
    pub twcc_feedback_sent: u64,
    /// Transport-wide feedback messages received from subscribers, for their estimates.
    #[serde(default)]
    pub twcc_feedback_received: u64,
    /// Of those, messages that did not parse (the rest of their compound still counted).
    #[serde(default)]
    pub twcc_feedback_malformed: u64,
    /// Generic NACK packets sent to publishers for packets they lost on the way in.
    #[serde(default)]
    pub nacks_sent: u64,
    /// Sequence numbers those NACKs asked for (a packet asked for again counts again).
    #[serde(default)]
    pub nack_packets_requested: u64,
    /// Retransmissions (RTX packets with media) received from publishers.
    #[serde(default)]
    pub rtx_received: u64,
    /// Of those, the ones that filled a gap the relay had asked for, and were forwarded as the original packet.
    #[serde(default)]
    pub repairs_used: u64,
    /// Retransmissions received for packets the relay already had, or that came too late: dropped.
    #[serde(default)]
    pub rtx_redundant: u64,
    /// Padding-only packets on a retransmission stream (bandwidth probes): dropped.
    #[serde(default)]
    pub rtx_probes_dropped: u64,
    /// Sequence numbers subscribers NACKed.
    #[serde(default)]
    pub nacks_received: u64,
    /// Packets sent to subscribers again because they NACKed them (as RTX where negotiated).
    #[serde(default)]
    pub retransmissions_sent: u64,
    /// NACKed packets the relay no longer had, never sent, or had already sent again too often or within one round trip.
    #[serde(default)]
    pub nacks_unanswerable: u64,
    /// Drops, indexed like [`DropReason::ALL`].
    pub drops: [u64; DropReason::ALL.len()],
    /// Sessions on this core.
    pub sessions: u64,
    /// Participants on this core.
    pub participants: u64,
    /// DTLS handshakes in progress.
    pub handshakes: u64,
    /// Packet buffers the core has ever allocated for forwarding; flat once traffic is steady,
    /// because sent buffers are reused.
    #[serde(default)]
    pub buffers_allocated: u64,
    /// Datagrams that left in UDP GSO sends (bursts to one destination, one send each).
    #[serde(default)]
    pub gso_datagrams: u64,
    /// Datagrams the kernel refused to send, each on its own account (no route to its
    /// destination any more, say: the participant's network went away). Counted as sent when
    /// they were handed over; lost, as on a network.
    #[serde(default)]
    pub datagrams_not_sent: u64,
    /// RTP packets received from other cores for the replicas of their feeds (sessions spread
    /// over cores); a core gets a feed's packets only while it has subscribers of the feed.
    #[serde(default)]
    pub cross_core_rtp_in: u64,
    /// Copies of forwarded RTP not sent to one subscriber because the packet predates that
    /// subscriber stream's last re-anchor, repeats one already sent, or arrived further behind
    /// than the reorder window: sending it would reuse an outgoing sequence number.
    #[serde(default)]
    pub rtp_copies_not_sent: u64,
    /// SSRCs of simulcast layers learnt from the rid their first packets carry.
    #[serde(default)]
    pub simulcast_ssrcs_learnt: u64,
    /// Subscribers switched from one simulcast layer to another.
    #[serde(default)]
    pub layer_switches: u64,
    /// Copies not sent because the subscriber receives another layer of the feed.
    #[serde(default)]
    pub rtp_other_layer: u64,
    /// Copies not sent because the subscriber's video is paused (hidden, or no room on its
    /// link).
    #[serde(default)]
    pub rtp_paused: u64,
    /// Changes in the layers simulcast publishers were asked to send (dynacast).
    #[serde(default)]
    pub dynacast_changes: u64,
    /// Video subscriptions paused (`rtp_paused`).
    #[serde(default)]
    pub subscriptions_paused: u64,
    /// Video subscriptions resumed after a pause.
    #[serde(default)]
    pub subscriptions_resumed: u64,
    /// Padding packets sent to subscribers to probe their links.
    #[serde(default)]
    pub probe_packets_sent: u64,
    /// Copies of an SVC feed's packets not sent because the subscriber's decode target does
    /// not need their frame.
    #[serde(default)]
    pub rtp_svc_dropped: u64,
    /// Packets of SVC feeds whose dependency descriptor could not be read (malformed, or its
    /// structure not received): sent to every subscriber as they are.
    #[serde(default)]
    pub svc_descriptors_unreadable: u64,
    /// Packets to subscribers that waited in their pacer before leaving (a burst beyond what
    /// the subscriber's estimate lets through at once).
    #[serde(default)]
    pub rtp_paced: u64,
    /// How long each of the `rtp_paced` packets waited, in microseconds.
    #[serde(default)]
    pub pacing_delay: DelayHistogram,
    /// Time from the kernel's receipt of a datagram to the kernel's acceptance of each
    /// datagram this core sent in response (forwarded copies, STUN responses), in
    /// microseconds, one count per sent datagram. For a feed published on another core, from
    /// that core's receipt, so the hop between cores is included.
    #[serde(default)]
    pub forwarding_delay: DelayHistogram,
    /// The subscribers' bandwidth estimates at the snapshot, in kbit/s, one count per
    /// participant with an estimate: a distribution now, not a running count.
    #[serde(default)]
    pub estimates_kbps: DelayHistogram,
    /// CPU time the core's thread has used since it started, in microseconds (read when the
    /// snapshot is taken, on the core itself).
    #[serde(default)]
    pub cpu_time_us: u64,
    /// Data channels.
    #[serde(default)]
    pub data: DataStats,
    /// Recording.
    #[serde(default)]
    pub record: RecordStats,
    /// ICE-TCP connections.
    #[serde(default)]
    pub ice_tcp: IceTcpStats,
}

impl CoreStats {
    /// Count one drop.
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// How many datagrams were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Drops of all reasons.
    pub fn total_dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Add another core's counters into this one (for a relay-wide total).
    pub fn accumulate(&mut self, other: &CoreStats) {
        self.packets_in += other.packets_in;
        self.bytes_in += other.bytes_in;
        self.packets_out += other.packets_out;
        self.bytes_out += other.bytes_out;
        self.rtp_forwarded += other.rtp_forwarded;
        self.keyframe_requests_forwarded += other.keyframe_requests_forwarded;
        self.keyframe_requests_suppressed += other.keyframe_requests_suppressed;
        self.twcc_feedback_sent += other.twcc_feedback_sent;
        self.twcc_feedback_received += other.twcc_feedback_received;
        self.twcc_feedback_malformed += other.twcc_feedback_malformed;
        self.nacks_sent += other.nacks_sent;
        self.nack_packets_requested += other.nack_packets_requested;
        self.rtx_received += other.rtx_received;
        self.repairs_used += other.repairs_used;
        self.rtx_redundant += other.rtx_redundant;
        self.rtx_probes_dropped += other.rtx_probes_dropped;
        self.nacks_received += other.nacks_received;
        self.retransmissions_sent += other.retransmissions_sent;
        self.nacks_unanswerable += other.nacks_unanswerable;
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
        self.sessions += other.sessions;
        self.participants += other.participants;
        self.handshakes += other.handshakes;
        self.buffers_allocated += other.buffers_allocated;
        self.gso_datagrams += other.gso_datagrams;
        self.datagrams_not_sent += other.datagrams_not_sent;
        self.cross_core_rtp_in += other.cross_core_rtp_in;
        self.rtp_copies_not_sent += other.rtp_copies_not_sent;
        self.simulcast_ssrcs_learnt += other.simulcast_ssrcs_learnt;
        self.layer_switches += other.layer_switches;
        self.rtp_other_layer += other.rtp_other_layer;
        self.rtp_paused += other.rtp_paused;
        self.dynacast_changes += other.dynacast_changes;
        self.subscriptions_paused += other.subscriptions_paused;
        self.subscriptions_resumed += other.subscriptions_resumed;
        self.probe_packets_sent += other.probe_packets_sent;
        self.rtp_svc_dropped += other.rtp_svc_dropped;
        self.svc_descriptors_unreadable += other.svc_descriptors_unreadable;
        self.rtp_paced += other.rtp_paced;
        self.data.accumulate(&other.data);
        self.record.accumulate(&other.record);
        self.ice_tcp.accumulate(&other.ice_tcp);
        self.pacing_delay.merge(&other.pacing_delay);
        self.forwarding_delay.merge(&other.forwarding_delay);
        self.estimates_kbps.merge(&other.estimates_kbps);
        self.cpu_time_us += other.cpu_time_us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_slot() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?} out of order in ALL");
        }
        let mut s = CoreStats::default();
        s.drop(DropReason::SrtpReplay);
        assert_eq!(s.dropped(DropReason::SrtpReplay), 1);
        assert_eq!(s.total_dropped(), 1);
    }
}
