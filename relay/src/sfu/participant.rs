//! One participant on a core: its transport, the SSRC maps that route its packets to feeds,
//! its RTCP schedule, its data channels and its traffic counters.

use std::collections::HashMap;
use std::time::Instant;

use crate::engine::pacer::Pacer;
use crate::ids::{FeedKey, SessionKey, Sid, Uid};
use crate::sfu::copy::Paced;

use super::allocation::Allocator;
use super::data::ParticipantData;
use super::link_quality::LinkQuality;
use super::transport::Transport;

/// Byte and packet counters of one participant, for usage metering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParticipantUsage {
    /// Datagrams received from the participant.
    pub packets_in: u64,
    /// Bytes received from the participant.
    pub bytes_in: u64,
    /// Datagrams sent to the participant.
    pub packets_out: u64,
    /// Bytes sent to the participant.
    pub bytes_out: u64,
}

/// An RTP packet built for a participant (rewritten for it, not yet numbered or protected),
/// on its way out through its pacer.
#[derive(Debug)]
pub struct Outgoing {
    /// The plaintext packet.
    pub packet: Vec<u8>,
    /// Where in the packet the value of its transport-wide number extension lies: the number
    /// is written when the packet leaves (the element is there, zero, until then).
    pub transport_wide: Option<usize>,
    /// What the packet is, for the counters and the estimator.
    pub kind: OutgoingKind,
}

/// What an [`Outgoing`] packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingKind {
    /// A forwarded packet.
    Media,
    /// A packet sent again because the participant asked (NACK).
    Retransmission,
    /// A packet of probe cluster `0`, sent again to measure the link.
    Probe(u32),
}

/// A participant on this core.
pub struct Participant {
    /// Its session.
    pub sid: Sid,
    /// Its session's key on this core.
    pub session: SessionKey,
    /// Its id in the session.
    pub uid: Uid,
    /// ICE, DTLS, SRTP and congestion feedback.
    pub transport: Transport,
    /// Media and RTX SSRC → feed it publishes: declared, or learnt for simulcast layers.
    pub published: HashMap<u32, FeedKey>,
    /// Every feed it publishes, whether its SSRCs are known yet or not.
    pub feeds: Vec<FeedKey>,
    /// SSRC the relay sends with → feed it subscribes to.
    pub subscriptions: HashMap<u32, FeedKey>,
    /// The relay's own SSRC in RTCP toward this participant (receiver reports, PLI).
    pub rtcp_ssrc: u32,
    /// When the next RTCP report toward this participant is due.
    pub next_report: Option<Instant>,
    /// Traffic counters.
    pub usage: ParticipantUsage,
    /// Which layers its estimate affords.
    pub allocator: Allocator,
    /// When the allocator looks again without waiting for feedback: a video of its is paused
    /// for its link, and where nothing else flows to it no feedback comes but a probe's, so
    /// looking only at feedback would never ask for the probe that ends the pause.
    pub reallocate_at: Option<Instant>,
    /// What waits to be sent to it, where its link is estimated.
    pub pacer: Pacer<Paced>,
    /// Its data channels.
    pub data: ParticipantData,
    /// What its connection quality is rated from.
    pub link: LinkQuality,
    /// Its own numbers, where it uses its own (a WHEP player): every packet to it is
    /// renumbered from the relay's last.
    pub renumber: Option<Box<crate::sfu::feed::renumber::Renumber>>,
}

impl Participant {
    /// A participant that has not sent anything yet.
    pub fn new(
        sid: Sid,
        session: SessionKey,
        uid: Uid,
        transport: Transport,
        rtcp_ssrc: u32,
        data: ParticipantData,
    ) -> Self {
        Participant {
            sid,
            session,
            uid,
            transport,
            published: HashMap::new(),
            feeds: Vec::new(),
            subscriptions: HashMap::new(),
            rtcp_ssrc,
            next_report: None,
            usage: ParticipantUsage::default(),
            allocator: Allocator::default(),
            reallocate_at: None,
            pacer: Pacer::new(0.0),
            data,
            link: LinkQuality::default(),
            renumber: None,
        }
    }

    /// The SSRCs taken as feed `fkey`'s.
    pub fn published_ssrcs(&self, fkey: FeedKey) -> Vec<u32> {
        self.published
            .iter()
            .filter(|(_, f)| **f == fkey)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Stop taking `ssrcs` as its feeds' (replaced, or their feed went) and retire their SRTP
    /// state, whose active part is bounded per participant: left active, the state of SSRCs
    /// used once would pile up until new ones were refused.
    pub fn forget_published(&mut self, ssrcs: impl IntoIterator<Item = u32>) {
        for ssrc in ssrcs {
            self.published.remove(&ssrc);
            if let Some(srtp) = self.transport.srtp_mut() {
                srtp.forget_remote(ssrc);
            }
        }
    }

    /// Whether the relay may take `ssrc` for a new stream to this participant: not 0, not its
    /// RTCP SSRC, not a current subscription's, and not one it was sent with before (its SRTP
    /// context still counts those: a new stream under an old SSRC, its numbers starting
    /// afresh, could repeat an SRTP nonce under the same key).
    pub fn may_send_with(&self, ssrc: u32) -> bool {
        ssrc != 0
            && ssrc != self.rtcp_ssrc
            && !self.subscriptions.contains_key(&ssrc)
            && !self
                .transport
                .srtp()
                .is_some_and(|srtp| srtp.has_sent_on(ssrc))
    }

    /// The first of the participant's deadlines: its transport's (consent, handshake,
    /// congestion feedback, the next probe packet), the next RTCP report and the allocator's
    /// next look at a paused video.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.transport.poll_timeout(),
            self.transport.probe_timeout(),
            self.next_report,
            self.reallocate_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
