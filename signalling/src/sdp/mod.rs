//! SDP for the server-offers model: signalling writes every offer (so it chooses mids, payload
//! types and header-extension ids once for everybody) and reads the browser's answers. The one
//! exception, a WHIP encoder's own offer, is [`ingest`]: its numbers are translated by the relay.
//! Parsing and writing use the `sdp` crate; this module holds the WebRTC rules on top
//! (ICE-lite, BUNDLE, rtcp-mux, DTLS roles, codecs).

pub mod ingest;
pub mod playback;

use std::io::Cursor;
use std::net::SocketAddr;

use sdp::description::common::{Address, Attribute, ConnectionInformation};
use sdp::description::media::{MediaDescription, MediaName, RangedPort};
use sdp::description::session::{Origin, SessionDescription, TimeDescription, Timing};

/// The transport-wide sequence number extension (draft-holmer-rmcat-transport-wide-cc-extensions-01).
pub const TRANSPORT_CC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Its id in every participant's packets ([`EXTENSIONS`]).
pub const TRANSPORT_CC_ID: u8 = 3;

/// The playout-delay extension, offered on video subscriptions when repair is on: the relay
/// uses it to give a subscriber's jitter buffer time for repairs from a lossy publisher.
pub const PLAYOUT_DELAY: (u8, &str) = (12, relay::engine::playout_delay::URI);

/// Header extensions offered, with the ids used by every participant.
pub const EXTENSIONS: [(u8, &str, Option<Kind>); 7] = [
    (1, "urn:ietf:params:rtp-hdrext:sdes:mid", None),
    (
        2,
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        None,
    ),
    (TRANSPORT_CC_ID, TRANSPORT_CC, None),
    (
        4,
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        Some(Kind::Audio),
    ),
    (
        10,
        "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        Some(Kind::Video),
    ),
    (
        11,
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        Some(Kind::Video),
    ),
    // The AV1 dependency descriptor, which a browser writes for VP9 and AV1 with spatial or
    // temporal layers (SVC): the relay drops layers per subscriber by it.
    (
        8,
        relay::engine::dependency_descriptor::URI,
        Some(Kind::Video),
    ),
];

/// The rids of the simulcast layers a publisher is asked for, lowest quality first: a
/// quarter, half and the whole resolution, which is what Chromium sends three encodings
/// offered in this order as.
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

impl Kind {
    /// `audio` / `video`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Audio => "audio",
            Kind::Video => "video",
        }
    }
}

/// One codec in an m-section.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Codec {
    /// Payload type.
    pub pt: u8,
    /// Encoding name, e.g. `VP8`.
    pub name: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Audio channels.
    pub channels: Option<u16>,
    /// `a=fmtp` parameters.
    pub fmtp: Option<String>,
    /// `a=rtcp-fb` values.
    pub feedback: Vec<String>,
}

fn codec(
    pt: u8,
    name: &str,
    clock_rate: u32,
    channels: Option<u16>,
    fmtp: Option<&str>,
    feedback: &[&str],
) -> Codec {
    Codec {
        pt,
        name: name.into(),
        clock_rate,
        channels,
        fmtp: fmtp.map(Into::into),
        feedback: feedback.iter().map(|s| s.to_string()).collect(),
    }
}

/// Where a publisher's video estimate starts, in kbit/s. Chromium otherwise starts at 300
/// kbit/s, picks its first resolution from that (480x270 for a 720p camera) and takes about
/// 25 s to climb back to 720p even when its estimate is far above what 720p needs. 1 Mbit/s is
/// what a 720p VP8 stream starts at; on a slower link the estimate falls within a second.
const START_BITRATE: &str = "x-google-start-bitrate=1000";

/// What signalling offers for a published track, in order of preference. With `repair`,
/// video codecs take generic NACKs and each has its RFC 4588 retransmission format.
pub fn publish_codecs(kind: Kind, repair: bool) -> Vec<Codec> {
    // No goog-remb: the relay sends transport-wide feedback, not REMB, and offers nothing it
    // does not do.
    let video_fb: &[&str] = if repair {
        &["transport-cc", "ccm fir", "nack", "nack pli"]
    } else {
        &["transport-cc", "ccm fir", "nack pli"]
    };
    match kind {
        Kind::Audio => vec![codec(
            111,
            "opus",
            48_000,
            Some(2),
            Some("minptime=10;useinbandfec=1"),
            &["transport-cc"],
        )],
        Kind::Video => {
            let primaries = [
                codec(96, "VP8", 90_000, None, Some(START_BITRATE), video_fb),
                codec(
                    98,
                    "VP9",
                    90_000,
                    None,
                    Some(&format!("profile-id=0;{START_BITRATE}")),
                    video_fb,
                ),
                codec(
                    102,
                    "H264",
                    90_000,
                    None,
                    Some(&format!(
                        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f;\
                         {START_BITRATE}"
                    )),
                    video_fb,
                ),
                codec(45, "AV1", 90_000, None, Some(START_BITRATE), video_fb),
            ];
            let mut codecs = Vec::new();
            for c in primaries {
                let rtx_pt = c.pt + 1;
                let apt = format!("apt={}", c.pt);
                codecs.push(c);
                if repair {
                    codecs.push(codec(rtx_pt, "rtx", 90_000, None, Some(&apt), &[]));
                }
            }
            codecs
        }
    }
}

/// Whether a codec is the RFC 4588 retransmission format.
pub fn is_rtx(c: &Codec) -> bool {
    c.name.eq_ignore_ascii_case("rtx")
}

/// The retransmission payload types among `codecs` with the payload type each repairs
/// (`a=fmtp:<pt> apt=<apt>`), as (pt, apt).
pub fn rtx_payload_types(codecs: &[Codec]) -> Vec<(u8, u8)> {
    codecs
        .iter()
        .filter(|c| is_rtx(c))
        .filter_map(|c| {
            let apt = c
                .fmtp
                .as_deref()?
                .split(';')
                .find_map(|kv| kv.trim().strip_prefix("apt="))?
                .parse()
                .ok()?;
            Some((c.pt, apt))
        })
        .collect()
}

/// The codecs of a subscription as offered to the subscriber: the publisher's, without NACK
/// and retransmission when repair is off. Where NACK stays, the subscriber is also asked for
/// receiver reference times (`rrtr`, RFC 3611): the relay answers them, and a receive-only
/// peer has no other way to learn its round trip, which it needs to space its NACKs and to
/// leave its jitter buffer room for a repair.
///
/// `transport-cc` stays: the subscriber's transport-wide feedback is what the relay estimates
/// its bandwidth from, to choose the simulcast layers it sends it.
fn subscribe_codecs(codecs: &[Codec], repair: bool) -> Vec<Codec> {
    codecs
        .iter()
        .filter(|c| repair || !is_rtx(c))
        .map(|c| {
            let mut c = c.clone();
            if !repair {
                c.feedback.retain(|f| f != "nack");
            } else if c.feedback.iter().any(|f| f == "nack")
                && !c.feedback.iter().any(|f| f == "rrtr")
            {
                c.feedback.push("rrtr".to_string());
            }
            c
        })
        .collect()
}

/// The role of an m-section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The browser sends a track of this feed.
    Publish {
        /// The feed.
        feed_id: String,
        /// Whether the browser is asked to send it as simulcast layers ([`SIMULCAST_RIDS`]).
        simulcast: bool,
    },
    /// The browser receives a track of this feed with this SSRC.
    Subscribe {
        /// The feed.
        feed_id: String,
        /// The SSRC the relay sends with.
        ssrc: u32,
        /// The publisher's negotiated codecs.
        codecs: Vec<Codec>,
        /// The SSRC the relay sends retransmissions with (RFC 4588), if it does.
        rtx_ssrc: Option<u32>,
    },
    /// No longer used: port 0, except the first m-section (see [`offer`]).
    Closed,
}

/// One m-section of a participant's peer connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// Its mid.
    pub mid: String,
    /// Audio or video.
    pub kind: Kind,
    /// What it does.
    pub role: Role,
}

/// What an offer needs besides the sections.
pub struct OfferParams<'a> {
    /// o= session id (stable per participant).
    pub session_id: u64,
    /// o= version (increases with each offer).
    pub version: u64,
    /// The relay's ICE ufrag for this participant.
    pub ice_ufrag: &'a str,
    /// The relay's ICE password.
    pub ice_pwd: &'a str,
    /// `sha-256 AB:…`
    pub fingerprint: &'a str,
    /// The relay core's address.
    pub candidate: SocketAddr,
    /// The relay core's ICE-TCP address, where it listens for one.
    pub tcp_candidate: Option<SocketAddr>,
    /// Whether packet repair (NACK and RTX) is negotiated.
    pub repair: bool,
    /// The mid of the data-channel section, where the participant asked for data channels:
    /// written before the media sections, so that it is the BUNDLE tag for good.
    pub data_mid: Option<&'a str>,
}

fn attr(k: &str, v: impl Into<String>) -> Attribute {
    Attribute::new(k.into(), Some(v.into()))
}

fn flag(k: &str) -> Attribute {
    Attribute::new(k.into(), None)
}

/// Whether a section is written as rejected (port 0, out of the BUNDLE group). The first one
/// never is, even when closed: it is the BUNDLE tag, and a browser that sees it rejected tears
/// down the bundled transport (its DTLS closes, and the relay drops the participant); with
/// every section closed there would be no BUNDLE group at all, which a browser on max-bundle
/// refuses. A closed first section stays, inactive.
fn rejected(index: usize, s: &Section) -> bool {
    index > 0 && s.role == Role::Closed
}

/// An m-section of the offer: on the relay core's port (0 when `rejected`), its `c=` line.
fn section(
    p: &OfferParams<'_>,
    media: &str,
    rejected: bool,
    protos: &[&str],
    formats: Vec<String>,
) -> MediaDescription {
    let ip = p.candidate.ip();
    MediaDescription {
        media_name: MediaName {
            media: media.into(),
            port: RangedPort {
                value: if rejected {
                    0
                } else {
                    p.candidate.port() as isize
                },
                range: None,
            },
            protos: protos.iter().map(|&s| s.to_owned()).collect(),
            formats,
        },
        connection_information: Some(ConnectionInformation {
            network_type: "IN".into(),
            address_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.into(),
            address: Some(Address {
                address: ip.to_string(),
                ttl: None,
                range: None,
            }),
        }),
        ..Default::default()
    }
}

/// ICE credentials and DTLS role of a section on the bundled transport.
fn transport_attributes(a: &mut Vec<Attribute>, p: &OfferParams<'_>, fingerprint: &str) {
    a.push(attr("ice-ufrag", p.ice_ufrag));
    a.push(attr("ice-pwd", p.ice_pwd));
    a.push(attr("fingerprint", fingerprint));
    a.push(attr("setup", "actpass"));
}

/// Priority of the UDP host candidate: type preference 126 (host), local preference 65535,
/// component 1 (RFC 8445 section 5.1.2.1).
const UDP_PRIORITY: u32 = (126 << 24) | (65535 << 8) | 255;

/// Priority of the passive ICE-TCP host candidate: a type preference below UDP's (RFC 6544
/// section 4.2 leaves the values to the agent), so that any working UDP pair wins.
const TCP_PRIORITY: u32 = (90 << 24) | (65535 << 8) | 255;

/// The relay core's host candidates (UDP, and TCP where the core listens for it; RFC 6544
/// writes its port as the one to connect to, `tcptype passive`), and no more to come.
fn candidate_attributes(a: &mut Vec<Attribute>, p: &OfferParams<'_>) {
    let ip = p.candidate.ip();
    a.push(attr(
        "candidate",
        format!(
            "1 1 udp {UDP_PRIORITY} {ip} {} typ host",
            p.candidate.port()
        ),
    ));
    if let Some(tcp) = p.tcp_candidate {
        a.push(attr(
            "candidate",
            format!(
                "2 1 tcp {TCP_PRIORITY} {} {} typ host tcptype passive",
                tcp.ip(),
                tcp.port()
            ),
        ));
    }
    a.push(flag("end-of-candidates"));
}

/// The data-channel m-section (RFC 8841): SCTP over the bundled DTLS, on the port every
/// browser uses, with the largest message the relay takes.
fn data_section(p: &OfferParams<'_>, mid: &str, fingerprint: &str) -> MediaDescription {
    let mut m = section(
        p,
        "application",
        false,
        &["UDP", "DTLS", "SCTP"],
        vec!["webrtc-datachannel".into()],
    );
    let a = &mut m.attributes;
    a.push(attr("mid", mid));
    transport_attributes(a, p, fingerprint);
    a.push(attr(
        "sctp-port",
        relay::engine::sctp::SCTP_PORT.to_string(),
    ));
    a.push(attr(
        "max-message-size",
        relay::engine::sctp::MAX_MESSAGE_SIZE.to_string(),
    ));
    candidate_attributes(a, p);
    m
}

/// An ICE-lite session description with the origin line of `p`, without media yet.
fn session(p: &OfferParams<'_>) -> SessionDescription {
    let mut sd = SessionDescription {
        origin: Origin {
            username: "-".into(),
            session_id: p.session_id,
            session_version: p.version,
            network_type: "IN".into(),
            address_type: "IP4".into(),
            unicast_address: "0.0.0.0".into(),
        },
        session_name: "-".into(),
        time_descriptions: vec![TimeDescription {
            timing: Timing {
                start_time: 0,
                stop_time: 0,
            },
            repeat_times: vec![],
        }],
        ..Default::default()
    };
    sd.attributes.push(flag("ice-lite"));
    sd
}

/// Each codec's `rtpmap`, `rtcp-fb` and `fmtp` lines.
fn codec_attributes(a: &mut Vec<Attribute>, codecs: &[Codec]) {
    for c in codecs {
        let channels = c.channels.map(|n| format!("/{n}")).unwrap_or_default();
        a.push(attr(
            "rtpmap",
            format!("{} {}/{}{channels}", c.pt, c.name, c.clock_rate),
        ));
        for fb in &c.feedback {
            a.push(attr("rtcp-fb", format!("{} {fb}", c.pt)));
        }
        if let Some(f) = &c.fmtp {
            a.push(attr("fmtp", format!("{} {f}", c.pt)));
        }
    }
}

/// An answer's m-section the relay rejects, in kind: the offer's media and protocol, port 0.
fn rejected_answer_section(p: &OfferParams<'_>, s: &AnsweredSection) -> MediaDescription {
    let protos: Vec<&str> = s.protocol.split('/').collect();
    let format = if s.media == "application" {
        "webrtc-datachannel"
    } else {
        "0"
    };
    let mut m = section(p, &s.media, true, &protos, vec![format.into()]);
    m.attributes.push(attr("mid", s.mid.clone()));
    m
}

/// An answer's m-section the relay takes (a client offered): its transport (the relay is the
/// DTLS server), `direction`, the extensions and codecs kept, in the offer's numbers.
fn taken_answer_section(
    p: &OfferParams<'_>,
    s: &AnsweredSection,
    direction: &str,
    extensions: &[(u8, String)],
    codecs: &[Codec],
) -> MediaDescription {
    let mut m = section(
        p,
        &s.media,
        false,
        &["UDP", "TLS", "RTP", "SAVPF"],
        codecs.iter().map(|c| c.pt.to_string()).collect(),
    );
    let a = &mut m.attributes;
    a.push(attr("mid", s.mid.clone()));
    a.push(attr("ice-ufrag", p.ice_ufrag));
    a.push(attr("ice-pwd", p.ice_pwd));
    a.push(attr("fingerprint", p.fingerprint));
    a.push(attr("setup", "passive"));
    a.push(flag(direction));
    a.push(flag("rtcp-mux"));
    if s.rtcp_rsize {
        a.push(flag("rtcp-rsize"));
    }
    for (id, uri) in extensions {
        a.push(attr("extmap", format!("{id} {uri}")));
    }
    codec_attributes(a, codecs);
    m
}

/// Write an offer for `sections`.
pub fn offer(p: &OfferParams<'_>, sections: &[Section]) -> String {
    let (fp_alg, fp_value) = p
        .fingerprint
        .split_once(' ')
        .unwrap_or(("sha-256", p.fingerprint));
    let fingerprint = format!("{fp_alg} {fp_value}");
    // With a data section first, every media section comes after the BUNDLE tag.
    let first = usize::from(p.data_mid.is_some());
    let bundle: Vec<&str> = p
        .data_mid
        .into_iter()
        .chain(
            sections
                .iter()
                .enumerate()
                .filter(|(i, s)| !rejected(first + *i, s))
                .map(|(_, s)| s.mid.as_str()),
        )
        .collect();
    let mut sd = session(p);
    if !bundle.is_empty() {
        sd.attributes
            .push(attr("group", format!("BUNDLE {}", bundle.join(" "))));
    }
    sd.attributes.push(attr("msid-semantic", " WMS *"));
    // One-byte and two-byte header extensions in one stream (RFC 8285 §6): a browser writes
    // the dependency descriptor, often longer than 16 bytes, only where this is offered.
    sd.attributes.push(flag("extmap-allow-mixed"));
    sd.attributes.push(attr("fingerprint", fingerprint.clone()));

    if let Some(mid) = p.data_mid {
        sd.media_descriptions
            .push(data_section(p, mid, &fingerprint));
    }
    for (i, s) in sections.iter().enumerate() {
        let i = first + i;
        let codecs: Vec<Codec> = match &s.role {
            Role::Publish { .. } => publish_codecs(s.kind, p.repair),
            Role::Subscribe { codecs, .. } => subscribe_codecs(codecs, p.repair),
            Role::Closed => publish_codecs(s.kind, p.repair)
                .into_iter()
                .take(1)
                .collect(),
        };
        let mut m = section(
            p,
            s.kind.as_str(),
            rejected(i, s),
            &["UDP", "TLS", "RTP", "SAVPF"],
            codecs.iter().map(|c| c.pt.to_string()).collect(),
        );
        let a = &mut m.attributes;
        a.push(attr("mid", s.mid.clone()));
        if rejected(i, s) {
            a.push(flag("inactive"));
            sd.media_descriptions.push(m);
            continue;
        }
        transport_attributes(a, p, &fingerprint);
        a.push(flag("rtcp-mux"));
        a.push(flag("rtcp-rsize"));
        let subscribing = matches!(s.role, Role::Subscribe { .. });
        // A simulcast publisher is not offered the dependency descriptor: Chromium would
        // write one per layer stream, each with its own frame numbers and structures, for a
        // feed the relay forwards by switching streams, not by dropping layers.
        let simulcast_publish = matches!(
            s.role,
            Role::Publish {
                simulcast: true,
                ..
            }
        );
        for (id, uri, only) in EXTENSIONS {
            if simulcast_publish && uri == relay::engine::dependency_descriptor::URI {
                continue;
            }
            if only.is_none_or(|k| k == s.kind) {
                a.push(attr("extmap", format!("{id} {uri}")));
            }
        }
        if subscribing && s.kind == Kind::Video && p.repair {
            let (id, uri) = PLAYOUT_DELAY;
            a.push(attr("extmap", format!("{id} {uri}")));
        }
        match &s.role {
            Role::Publish { simulcast, .. } => {
                a.push(flag("recvonly"));
                if *simulcast && s.kind == Kind::Video {
                    for rid in SIMULCAST_RIDS {
                        a.push(attr("rid", format!("{rid} recv")));
                    }
                    a.push(attr(
                        "simulcast",
                        format!("recv {}", SIMULCAST_RIDS.join(";")),
                    ));
                }
            }
            Role::Subscribe { feed_id, .. } => {
                a.push(flag("sendonly"));
                a.push(attr(
                    "msid",
                    format!("{feed_id} {feed_id}-{}", s.kind.as_str()),
                ));
            }
            Role::Closed => a.push(flag("inactive")),
        }
        codec_attributes(a, &codecs);
        if let Role::Subscribe {
            feed_id,
            ssrc,
            rtx_ssrc,
            ..
        } = &s.role
        {
            let rtx_ssrc = rtx_ssrc.filter(|_| p.repair);
            if let Some(rtx) = rtx_ssrc {
                a.push(attr("ssrc-group", format!("FID {ssrc} {rtx}")));
            }
            for ssrc in std::iter::once(*ssrc).chain(rtx_ssrc) {
                a.push(attr("ssrc", format!("{ssrc} cname:{feed_id}")));
                a.push(attr(
                    "ssrc",
                    format!("{ssrc} msid:{feed_id} {feed_id}-{}", s.kind.as_str()),
                ));
            }
        }
        candidate_attributes(a, p);
        sd.media_descriptions.push(m);
    }
    sd.marshal()
}

/// What signalling needs from a browser's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The browser's ICE ufrag.
    pub ice_ufrag: String,
    /// The browser's certificate fingerprint, `sha-256 AB:…`.
    pub fingerprint: String,
    /// Per m-section, in order.
    pub sections: Vec<AnsweredSection>,
}

/// One m-section of an answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnsweredSection {
    /// Its mid.
    pub mid: String,
    /// Port 0: the browser rejected it.
    pub rejected: bool,
    /// The codecs it accepted, in its order of preference.
    pub codecs: Vec<Codec>,
    /// The header extensions it accepted: (id, uri).
    pub extensions: Vec<(u8, String)>,
    /// The SSRC the browser sends with (the primary of an FID group), if it sends.
    pub ssrc: Option<u32>,
    /// The SSRC of its retransmissions (the second of the FID group), if it sends RTX.
    pub rtx_ssrc: Option<u32>,
    /// The rids of the simulcast layers it sends (`a=simulcast:send`, each with its
    /// `a=rid:… send`), in the answer's order; empty without simulcast.
    pub simulcast: Vec<String>,
    /// A data-channel section (`m=application`): the largest message the browser takes
    /// (`a=max-message-size`; RFC 8841 says 64 KiB where it is absent).
    pub data: Option<u32>,
    /// It sends media (`sendonly` or `sendrecv`, which is also what no direction means).
    pub sends: bool,
    /// It receives media (`recvonly` or `sendrecv`, or no direction).
    pub receives: bool,
    /// It asked for reduced-size RTCP (`a=rtcp-rsize`).
    pub rtcp_rsize: bool,
    /// Its `m=` line's media (`audio`, `video`, `application`) and protocol, to reject it
    /// in kind.
    pub media: String,
    /// The `m=` line's protocol.
    pub protocol: String,
}

/// Why an answer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// The text is not SDP.
    #[error("not parsable SDP: {0}")]
    Parse(String),
    /// A required attribute is missing or has a bad value.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(s: impl Into<String>) -> SdpError {
    SdpError::Invalid(s.into())
}

/// Read a browser's answer.
pub fn parse_answer(text: &str) -> Result<Answer, SdpError> {
    parse(text, false)
}

/// Read a client's offer (a WHIP encoder's): as an answer, but its DTLS role may be left to
/// the relay (`actpass`), which takes the server's.
pub fn parse_offer(text: &str) -> Result<Answer, SdpError> {
    parse(text, true)
}

fn parse(text: &str, offer: bool) -> Result<Answer, SdpError> {
    let sd = SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes()))
        .map_err(|e| SdpError::Parse(e.to_string()))?;
    let session_attr = |k: &str| sd.attribute(k).cloned();
    let mut ice_ufrag = session_attr("ice-ufrag");
    let mut fingerprint = session_attr("fingerprint");
    let mut sections = Vec::with_capacity(sd.media_descriptions.len());
    for m in &sd.media_descriptions {
        let get = |k: &str| m.attribute(k).flatten().map(str::to_owned);
        let mid = get("mid").ok_or_else(|| invalid("an m-section has no a=mid"))?;
        let rejected = m.media_name.port.value == 0;
        if !rejected {
            if let Some(u) = get("ice-ufrag") {
                ice_ufrag.get_or_insert(u);
            }
            if let Some(f) = get("fingerprint") {
                fingerprint.get_or_insert(f);
            }
            match get("setup").as_deref() {
                Some("active") | None => {}
                Some("actpass") if offer => {}
                Some(other) => {
                    return Err(invalid(format!(
                        "a=setup:{other} in mid {mid}: the browser must be the DTLS client (active)"
                    )))
                }
            }
        }
        if m.media_name.media == "application" {
            let max = match get("max-message-size") {
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("a=max-message-size:{v} in mid {mid}")))?,
                None => 65536,
            };
            // RFC 8841 §6: zero means no limit but the receiver's memory.
            let max: u32 = if max == 0 { u32::MAX } else { max };
            sections.push(AnsweredSection {
                mid,
                rejected,
                data: Some(max),
                media: m.media_name.media.clone(),
                protocol: m.media_name.protos.join("/"),
                ..Default::default()
            });
            continue;
        }
        let values = |k: &str| -> Vec<&str> {
            m.attributes
                .iter()
                .filter(|a| a.key == k)
                .filter_map(|a| a.value.as_deref())
                .collect()
        };
        let mut codecs = Vec::new();
        for f in &m.media_name.formats {
            let Ok(pt) = f.parse::<u8>() else {
                return Err(invalid(format!("payload type {f:?} in mid {mid}")));
            };
            let prefix = format!("{pt} ");
            let Some(map) = values("rtpmap")
                .into_iter()
                .find_map(|v| v.strip_prefix(&prefix))
            else {
                continue;
            };
            let mut parts = map.split('/');
            let name = parts.next().unwrap_or_default().to_owned();
            let clock_rate = parts
                .next()
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| invalid(format!("rtpmap of {pt} in mid {mid}")))?;
            let channels = parts.next().and_then(|c| c.parse().ok());
            codecs.push(Codec {
                pt,
                name,
                clock_rate,
                channels,
                fmtp: values("fmtp")
                    .into_iter()
                    .find_map(|v| v.strip_prefix(&prefix))
                    .map(str::to_owned),
                feedback: values("rtcp-fb")
                    .into_iter()
                    .filter_map(|v| v.strip_prefix(&prefix))
                    .map(str::to_owned)
                    .collect(),
            });
        }
        let mut extensions = Vec::new();
        for v in values("extmap") {
            let (id, uri) = v
                .split_once(' ')
                .ok_or_else(|| invalid(format!("extmap {v:?} in mid {mid}")))?;
            let id = id.split('/').next().unwrap_or(id);
            let id: u8 = id
                .parse()
                .map_err(|_| invalid(format!("extmap id {id:?} in mid {mid}")))?;
            extensions.push((id, uri.split(' ').next().unwrap_or(uri).to_owned()));
        }
        let fid = values("ssrc-group").into_iter().find_map(|v| {
            let mut it = v.split_whitespace();
            if it.next() != Some("FID") {
                return None;
            }
            let primary = it.next()?.parse::<u32>().ok()?;
            Some((primary, it.next().and_then(|r| r.parse::<u32>().ok())))
        });
        let fid_primary = fid.map(|(primary, _)| primary);
        let first_ssrc = values("ssrc")
            .into_iter()
            .find_map(|v| v.split_whitespace().next()?.parse::<u32>().ok());
        // RFC 8853: `send` then `;`-separated layers, each `,`-separated alternatives of which
        // the first is taken, `~` marking one paused for now. Only rids the answer declares
        // as sent count.
        let sent_rids: Vec<&str> = values("rid")
            .into_iter()
            .filter_map(|v| {
                let mut it = v.split_whitespace();
                let id = it.next()?;
                (it.next() == Some("send")).then_some(id)
            })
            .collect();
        let simulcast = values("simulcast")
            .into_iter()
            .find_map(|v| v.strip_prefix("send "))
            .map(|list| {
                list.trim()
                    .split(';')
                    .filter_map(|layer| layer.split(',').next())
                    .map(|rid| rid.trim_start_matches('~'))
                    .filter(|rid| sent_rids.contains(rid))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        sections.push(AnsweredSection {
            mid,
            rejected,
            codecs,
            extensions,
            ssrc: fid_primary.or(first_ssrc),
            rtx_ssrc: fid.and_then(|(_, rtx)| rtx),
            simulcast,
            data: None,
            sends: !["recvonly", "inactive"]
                .iter()
                .any(|d| m.attribute(d).is_some()),
            receives: !["sendonly", "inactive"]
                .iter()
                .any(|d| m.attribute(d).is_some()),
            rtcp_rsize: m.attribute("rtcp-rsize").is_some(),
            media: m.media_name.media.clone(),
            protocol: m.media_name.protos.join("/"),
        });
    }
    let ice_ufrag = ice_ufrag.ok_or_else(|| invalid("no a=ice-ufrag"))?;
    let fingerprint = fingerprint.ok_or_else(|| invalid("no a=fingerprint"))?;
    if !fingerprint.to_ascii_lowercase().starts_with("sha-256 ") {
        return Err(invalid("a=fingerprint must be sha-256"));
    }
    Ok(Answer {
        ice_ufrag,
        fingerprint,
        sections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> OfferParams<'static> {
        OfferParams {
            session_id: 42,
            version: 2,
            ice_ufrag: "relayufr",
            ice_pwd: "relaypasswordrelaypassword",
            fingerprint: "sha-256 AA:BB",
            candidate: "127.0.0.1:40000".parse().unwrap(),
            tcp_candidate: Some("127.0.0.1:40000".parse().unwrap()),
            repair: true,
            data_mid: None,
        }
    }

    #[test]
    fn data_channels_come_first_and_the_answer_gives_the_largest_message() {
        let sections = vec![Section {
            mid: "0".into(),
            kind: Kind::Video,
            role: Role::Closed,
        }];
        let o = offer(
            &OfferParams {
                data_mid: Some("data"),
                ..params()
            },
            &sections,
        );
        // The data section is the BUNDLE tag, so a closed media section after it is rejected.
        assert!(o.contains("a=group:BUNDLE data\r\n"), "{o}");
        let data = o.find("m=application 40000 UDP/DTLS/SCTP webrtc-datachannel\r\n");
        let video = o.find("m=video 0 ");
        assert!(data.is_some() && data < video, "{o}");
        for line in [
            "a=mid:data",
            "a=sctp-port:5000",
            "a=max-message-size:262144",
            "a=setup:actpass",
        ] {
            assert!(o.contains(&format!("{line}\r\n")), "{line}: {o}");
        }
        // What Chromium answers for it.
        let answer = CHROME_ANSWER.replace(
            "m=audio 0 UDP/TLS/RTP/SAVPF 111",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:data\r\na=sctp-port:5000\r\na=max-message-size:262144\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111",
        );
        let a = parse_answer(&answer).unwrap();
        let d = a.sections.iter().find(|s| s.mid == "data").unwrap();
        assert_eq!(
            (d.data, d.rejected, d.codecs.len()),
            (Some(262_144), false, 0)
        );
        // Without the attribute, RFC 8841's 64 KiB; zero is no limit.
        let plain = answer.replace("a=max-message-size:262144\r\n", "");
        let a = parse_answer(&plain).unwrap();
        assert_eq!(
            a.sections.iter().find(|s| s.mid == "data").unwrap().data,
            Some(65536)
        );
        let zero = answer.replace("max-message-size:262144", "max-message-size:0");
        let a = parse_answer(&zero).unwrap();
        assert_eq!(
            a.sections.iter().find(|s| s.mid == "data").unwrap().data,
            Some(u32::MAX)
        );
        let bad = answer.replace("max-message-size:262144", "max-message-size:lots");
        assert!(parse_answer(&bad).is_err());
    }

    #[test]
    fn offer_has_the_webrtc_essentials() {
        let sections = vec![
            Section {
                mid: "0".into(),
                kind: Kind::Video,
                role: Role::Publish {
                    feed_id: "f1".into(),
                    simulcast: false,
                },
            },
            Section {
                mid: "1".into(),
                kind: Kind::Audio,
                role: Role::Subscribe {
                    feed_id: "f2".into(),
                    ssrc: 1234,
                    codecs: publish_codecs(Kind::Audio, true),
                    rtx_ssrc: None,
                },
            },
            Section {
                mid: "2".into(),
                kind: Kind::Video,
                role: Role::Closed,
            },
        ];
        let o = offer(&params(), &sections);
        for line in [
            "a=ice-lite",
            "a=group:BUNDLE 0 1",
            "a=fingerprint:sha-256 AA:BB",
            "m=video 40000 UDP/TLS/RTP/SAVPF 96 97 98 99 102 103 45 46",
            "c=IN IP4 127.0.0.1",
            "a=setup:actpass",
            "a=rtcp-mux",
            "a=recvonly",
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli",
            "a=rtpmap:97 rtx/90000",
            "a=fmtp:97 apt=96",
            "a=fmtp:96 x-google-start-bitrate=1000",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
            "a=candidate:2 1 tcp 1526726655 127.0.0.1 40000 typ host tcptype passive",
            "m=audio 40000 UDP/TLS/RTP/SAVPF 111",
            "a=rtpmap:111 opus/48000/2",
            "a=sendonly",
            "a=msid:f2 f2-audio",
            "a=ssrc:1234 cname:f2",
            "m=video 0 UDP/TLS/RTP/SAVPF 96",
            "a=inactive",
        ] {
            assert!(
                o.contains(&format!("{line}\r\n")),
                "missing {line:?} in\n{o}"
            );
        }
        // The crate reads back what it wrote.
        SessionDescription::unmarshal(&mut Cursor::new(o.as_bytes())).unwrap();
    }

    #[test]
    fn a_closed_first_section_stays_the_bundle_tag() {
        let closed = |mid: &str, kind| Section {
            mid: mid.into(),
            kind,
            role: Role::Closed,
        };
        // Everything closed: still a BUNDLE group, on the first section, inactive but open.
        let o = offer(
            &params(),
            &[closed("0", Kind::Video), closed("1", Kind::Audio)],
        );
        let first = o.split("m=").nth(1).unwrap();
        let second = o.split("m=").nth(2).unwrap();
        assert!(o.contains("a=group:BUNDLE 0\r\n"), "{o}");
        assert!(first.starts_with("video 40000 "), "{o}");
        for line in [
            "a=inactive",
            "a=ice-ufrag:relayufr",
            "a=setup:actpass",
            "a=rtcp-mux",
        ] {
            assert!(
                first.contains(&format!("{line}\r\n")),
                "missing {line:?} in\n{o}"
            );
        }
        assert!(
            !first.contains("a=msid") && !first.contains("a=ssrc"),
            "{o}"
        );
        assert!(second.starts_with("audio 0 "), "{o}");

        // A new section joins the group behind it.
        let o = offer(
            &params(),
            &[
                closed("0", Kind::Video),
                closed("1", Kind::Audio),
                Section {
                    mid: "2".into(),
                    kind: Kind::Video,
                    role: Role::Publish {
                        feed_id: "f3".into(),
                        simulcast: false,
                    },
                },
            ],
        );
        assert!(o.contains("a=group:BUNDLE 0 2\r\n"), "{o}");
        SessionDescription::unmarshal(&mut Cursor::new(o.as_bytes())).unwrap();
    }

    #[test]
    fn repair_in_offers_and_without_it() {
        let vp8 = publish_codecs(Kind::Video, true)
            .into_iter()
            .take(2)
            .collect::<Vec<_>>();
        let subscribe = |rtx_ssrc| Section {
            mid: "0".into(),
            kind: Kind::Video,
            role: Role::Subscribe {
                feed_id: "f".into(),
                ssrc: 5,
                codecs: vp8.clone(),
                rtx_ssrc,
            },
        };
        let o = offer(&params(), &[subscribe(Some(6))]);
        for line in [
            "m=video 40000 UDP/TLS/RTP/SAVPF 96 97",
            "a=rtcp-fb:96 nack",
            "a=fmtp:97 apt=96",
            "a=ssrc-group:FID 5 6",
            "a=ssrc:6 cname:f",
            "a=ssrc:6 msid:f f-video",
        ] {
            assert!(
                o.contains(&format!("{line}\r\n")),
                "missing {line:?} in\n{o}"
            );
        }
        let off = OfferParams {
            repair: false,
            ..params()
        };
        let o = offer(&off, &[subscribe(Some(6))]);
        assert!(o.contains("m=video 40000 UDP/TLS/RTP/SAVPF 96\r\n"), "{o}");
        assert!(o.contains("a=rtcp-fb:96 nack pli\r\n"), "{o}");
        assert!(!o.contains("a=rtcp-fb:96 nack\r\n"), "{o}");
        assert!(
            !o.contains("rtx") && !o.contains("FID") && !o.contains("a=ssrc:6"),
            "{o}"
        );
        let publish = Section {
            mid: "0".into(),
            kind: Kind::Video,
            role: Role::Publish {
                feed_id: "f".into(),
                simulcast: false,
            },
        };
        let o = offer(&off, &[publish]);
        assert!(
            o.contains("m=video 40000 UDP/TLS/RTP/SAVPF 96 98 102 45\r\n"),
            "{o}"
        );
        assert!(!o.contains("a=rtcp-fb:96 nack\r\n"), "{o}");
    }

    #[test]
    fn congestion_feedback_is_offered_to_everyone() {
        let sections = vec![
            Section {
                mid: "0".into(),
                kind: Kind::Video,
                role: Role::Publish {
                    feed_id: "f1".into(),
                    simulcast: false,
                },
            },
            Section {
                mid: "1".into(),
                kind: Kind::Video,
                role: Role::Subscribe {
                    feed_id: "f2".into(),
                    ssrc: 5,
                    codecs: publish_codecs(Kind::Video, true),
                    rtx_ssrc: Some(6),
                },
            },
            Section {
                mid: "2".into(),
                kind: Kind::Audio,
                role: Role::Subscribe {
                    feed_id: "f2".into(),
                    ssrc: 7,
                    codecs: publish_codecs(Kind::Audio, true),
                    rtx_ssrc: None,
                },
            },
        ];
        let o = offer(&params(), &sections);
        let publish = o.split("m=").nth(1).unwrap();
        assert!(publish.contains("a=rtcp-fb:96 transport-cc\r\n"), "{o}");
        assert!(
            publish.contains("transport-wide-cc-extensions-01\r\n"),
            "{o}"
        );
        // Subscribers are asked for it too: the relay estimates their bandwidth from it.
        for subscribe in o.split("m=").skip(2) {
            assert!(subscribe.contains(" transport-cc\r\n"), "{o}");
            assert!(
                subscribe.contains("a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n"),
                "{o}"
            );
            assert!(
                subscribe.contains("a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid"),
                "{o}"
            );
        }
        assert!(o.contains("a=rtcp-fb:96 nack\r\n"), "{o}");
        // The dependency descriptor on video (publishing and subscribing), with the two-byte
        // header form it needs allowed for the session.
        let dd = "a=extmap:8 https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension\r\n";
        let sections_of: Vec<&str> = o.split("m=").collect();
        assert!(sections_of[0].contains("a=extmap-allow-mixed\r\n"), "{o}");
        assert!(
            sections_of[1].contains(dd) && sections_of[2].contains(dd),
            "{o}"
        );
        assert!(!sections_of[3].contains(dd), "{o}");
        // The playout delay goes to video subscriptions only, the relay being its sender.
        let playout = "a=extmap:12 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
        let parts: Vec<&str> = o.split("m=").collect();
        assert!(!parts[1].contains(playout), "{o}");
        assert!(parts[2].contains(playout), "{o}");
        assert!(!parts[3].contains(playout), "{o}");
        let without = offer(
            &OfferParams {
                repair: false,
                ..params()
            },
            &sections,
        );
        assert!(!without.contains("playout-delay"), "{without}");
    }

    const CHROME_ANSWER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 98 97\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Zx9q\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\na=fingerprint:sha-256 01:02:03\r\na=setup:active\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\na=sendonly\r\na=msid:- 8f1e\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=0\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=ssrc-group:FID 1111 2222\r\na=ssrc:1111 cname:abc\r\na=ssrc:2222 cname:abc\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=rtpmap:111 opus/48000/2\r\n";

    #[test]
    fn reads_a_chrome_style_answer() {
        let a = parse_answer(CHROME_ANSWER).unwrap();
        assert_eq!(a.ice_ufrag, "Zx9q");
        assert_eq!(a.fingerprint, "sha-256 01:02:03");
        assert_eq!(a.sections.len(), 2);
        let v = &a.sections[0];
        assert_eq!(v.mid, "0");
        assert!(!v.rejected);
        assert_eq!(v.ssrc, Some(1111));
        assert_eq!(v.rtx_ssrc, Some(2222));
        assert_eq!(rtx_payload_types(&v.codecs), vec![(97, 96)]);
        assert_eq!(v.codecs[0].name, "VP8");
        assert_eq!(v.codecs[0].feedback, vec!["nack pli"]);
        assert_eq!(v.codecs[1].fmtp.as_deref(), Some("profile-id=0"));
        assert_eq!(
            v.extensions[1],
            (
                3,
                "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01".into()
            )
        );
        assert!(a.sections[1].rejected);
    }

    /// Simulcast is offered on the video of a publish that asks for it, as three layers to
    /// receive; the answer's layers are the rids it sends, in its order, paused ones
    /// included and the first of each set of alternatives.
    #[test]
    fn simulcast_offered_and_read_back() {
        let section = |mid: &str, kind, simulcast| Section {
            mid: mid.into(),
            kind,
            role: Role::Publish {
                feed_id: "f".into(),
                simulcast,
            },
        };
        let text = offer(
            &params(),
            &[
                section("0", Kind::Video, true),
                section("1", Kind::Audio, true),
                section("2", Kind::Video, false),
            ],
        );
        let media: Vec<&str> = text.split("m=").skip(1).collect();
        assert!(media[0].contains(
            "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f\r\n"
        ));
        for other in &media[1..] {
            assert!(!other.contains("a=rid:") && !other.contains("a=simulcast"));
        }
        assert!(media[0].contains("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"));
        // The dependency descriptor goes to a video publisher without simulcast only.
        let dd = relay::engine::dependency_descriptor::URI;
        assert!(!media[0].contains(dd) && media[2].contains(dd), "{text}");

        let chrome = CHROME_ANSWER.replace(
            "a=ssrc-group:FID 1111 2222\r\na=ssrc:1111 cname:abc\r\na=ssrc:2222 cname:abc\r\n",
            "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;~h;f,x;z\r\n",
        );
        let a = parse_answer(&chrome).unwrap();
        let v = &a.sections[0];
        assert_eq!(v.simulcast, vec!["q", "h", "f"]);
        assert_eq!((v.ssrc, v.rtx_ssrc), (None, None));
        assert!(parse_answer(CHROME_ANSWER).unwrap().sections[0]
            .simulcast
            .is_empty());
    }

    #[test]
    fn hostile_answers_are_refused_with_reasons() {
        assert!(matches!(parse_answer("hello"), Err(SdpError::Parse(_))));
        let passive = CHROME_ANSWER.replace("a=setup:active", "a=setup:passive");
        assert!(parse_answer(&passive)
            .unwrap_err()
            .to_string()
            .contains("DTLS client"));
        let no_fp = CHROME_ANSWER.replace("a=fingerprint:sha-256 01:02:03\r\n", "");
        assert_eq!(
            parse_answer(&no_fp).unwrap_err(),
            invalid("no a=fingerprint")
        );
        let sha1 = CHROME_ANSWER.replace("sha-256 01", "sha-1 01");
        assert!(parse_answer(&sha1).is_err());
        let bad_pt = CHROME_ANSWER.replace("SAVPF 96 98", "SAVPF 96 999");
        assert!(parse_answer(&bad_pt)
            .unwrap_err()
            .to_string()
            .contains("999"));
        let no_mid = CHROME_ANSWER.replace("a=mid:0\r\n", "");
        assert!(parse_answer(&no_mid).is_err());
    }
}
