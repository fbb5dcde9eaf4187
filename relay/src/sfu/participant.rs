//! One participant on a core: its ICE-lite agent, DTLS state, SRTP contexts and the SSRC maps
//! that route its packets to feeds.

use std::collections::HashMap;
use std::time::Instant;

use crate::engine::client_hello::ClientHello;
use crate::engine::ice_lite::IceLite;
use crate::engine::rtcp::xr::ReceiverTime;
use crate::engine::srtp::{SrtpProfile, SrtpSession};
use crate::engine::twcc::TwccReceiver;
use crate::ids::{FeedKey, SessionKey, Sid, Uid};

/// Where the participant's DTLS association stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsState {
    /// No DTLS record seen yet.
    Idle,
    /// A handshake task runs since the given time.
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

/// The first records of a DTLS handshake, held until the ClientHello they carry is whole, so
/// that the handshake can be configured with the SRTP profile the relay prefers among those
/// offered.
#[derive(Debug, Default)]
pub struct PendingHello {
    /// The ClientHello reassembled so far.
    pub hello: ClientHello,
    /// The records, in arrival order.
    pub records: Vec<Vec<u8>>,
}

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

/// A participant on this core.
pub struct Participant {
    /// Its session.
    pub sid: Sid,
    /// Its session's key on this core.
    pub session: SessionKey,
    /// Its id in the session.
    pub uid: Uid,
    /// ICE-lite agent.
    pub ice: IceLite,
    /// DTLS progress.
    pub dtls: DtlsState,
    /// Expected certificate fingerprint, if signalling gave one.
    pub remote_fingerprint: Option<String>,
    /// SRTP contexts once DTLS has completed.
    pub srtp: Option<SrtpSession>,
    /// While handshaking, before the handshake task starts: the ClientHello so far and the
    /// records that carried it, handed on once it is whole.
    pub hello: Option<PendingHello>,
    /// Media SSRC → feed it publishes.
    pub published: HashMap<u32, FeedKey>,
    /// SSRC the relay sends with → feed it subscribes to.
    pub subscriptions: HashMap<u32, FeedKey>,
    /// The relay's own SSRC in RTCP toward this participant (receiver reports, PLI).
    pub rtcp_ssrc: u32,
    /// When the next RTCP report toward this participant is due.
    pub next_report: Option<Instant>,
    /// Traffic counters.
    pub usage: ParticipantUsage,
    /// Arrivals of its packets by transport-wide sequence number, for its congestion control.
    pub twcc: TwccReceiver,
    /// Its latest receiver reference time and when it arrived, answered with a DLRR in the
    /// next report.
    pub receiver_time: Option<(ReceiverTime, Instant)>,
}

impl Participant {
    /// A participant that has not sent anything yet.
    pub fn new(
        sid: Sid,
        session: SessionKey,
        uid: Uid,
        ice: IceLite,
        remote_fingerprint: Option<String>,
        rtcp_ssrc: u32,
    ) -> Self {
        Participant {
            sid,
            session,
            uid,
            ice,
            dtls: DtlsState::Idle,
            remote_fingerprint,
            srtp: None,
            hello: None,
            published: HashMap::new(),
            subscriptions: HashMap::new(),
            rtcp_ssrc,
            next_report: None,
            usage: ParticipantUsage::default(),
            twcc: TwccReceiver::new(),
            receiver_time: None,
        }
    }

    /// The first of the participant's deadlines: consent expiry, the end of a handshake that
    /// may take `handshake_timeout`, the next RTCP report, the next congestion feedback.
    pub fn next_deadline(&self, handshake_timeout: std::time::Duration) -> Option<Instant> {
        let handshake = match self.dtls {
            DtlsState::Handshaking { since } => Some(since + handshake_timeout),
            _ => None,
        };
        [
            self.ice.poll_timeout(),
            handshake,
            self.next_report,
            self.twcc.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Where to send media and RTCP, once ICE has selected an address and SRTP is keyed.
    pub fn media_destination(&self) -> Option<std::net::SocketAddr> {
        self.srtp.as_ref()?;
        self.ice.selected()
    }
}
