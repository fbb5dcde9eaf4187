//! The SDP the load generator exchanges with servers that speak it (Janus): our offer as a
//! publisher, our answer to a subscription offer, and what we need out of the server's
//! descriptions (ICE credentials, DTLS fingerprint, a host candidate, each m-section's mid and
//! codec).
//!
//! Our side always takes `a=setup:active`, so the peer stays the DTLS client whichever side
//! made the offer, and offers no header extensions or feedback, so the server's forwarding is
//! measured without work the load generator would then have to parse.

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use sdp::description::common::{Address, ConnectionInformation};
use sdp::description::media::MediaDescription;
use sdp::description::session::SessionDescription;
use webrtcai_tests::peer::{IceCredentials, RemoteEndpoint};

/// What can be wrong with a description from the server.
#[derive(Debug, thiserror::Error)]
pub enum JsepError {
    /// The text is not SDP.
    #[error("SDP does not parse: {0}")]
    Parse(String),
    /// A field we need is absent.
    #[error("SDP has no {0}")]
    Missing(&'static str),
}

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    /// Opus, 48 kHz.
    Audio,
    /// VP8, 90 kHz.
    Video,
}

impl MediaKind {
    /// The SDP media name.
    pub fn sdp_name(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }

    /// Payload type, codec name, clock rate and channels we offer for this kind.
    fn codec(self) -> (u8, &'static str, u32, u16) {
        match self {
            MediaKind::Audio => (111, "opus", 48_000, 2),
            MediaKind::Video => (96, "VP8", 90_000, 0),
        }
    }
}

/// One stream a publisher sends.
#[derive(Clone, Copy, Debug)]
pub struct OfferedStream {
    /// Its kind.
    pub kind: MediaKind,
    /// The SSRC it is sent with.
    pub ssrc: u32,
}

/// Our side of a description: ICE credentials, certificate fingerprint and our one host
/// candidate.
#[derive(Clone, Debug)]
pub struct LocalDescription {
    /// Our ICE credentials.
    pub ice: IceCredentials,
    /// `sha-256 AB:CD:…` of our certificate.
    pub fingerprint: String,
    /// The address our socket is bound to.
    pub candidate: SocketAddr,
}

/// One m-section of the server's description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// `audio`, `video` or `application`.
    pub media: String,
    /// `a=mid`.
    pub mid: String,
    /// Port 0: rejected or disabled.
    pub rejected: bool,
    /// The first payload type and its `a=rtpmap` value (`VP8/90000`), if any.
    pub codec: Option<(u8, String)>,
}

/// What we need of the server's description.
#[derive(Clone, Debug)]
pub struct RemoteDescription {
    /// Where and how to reach the server.
    pub endpoint: RemoteEndpoint,
    /// Its m-sections in order.
    pub sections: Vec<Section>,
}

fn session(local: &LocalDescription, mids: &[String]) -> SessionDescription {
    let mut s = SessionDescription::new_jsep_session_description(false);
    s.origin.unicast_address = local.candidate.ip().to_string();
    s.with_value_attribute("group".into(), format!("BUNDLE {}", mids.join(" ")))
        .with_value_attribute("msid-semantic".into(), " WMS loadgen".into())
}

fn section(
    local: &LocalDescription,
    media: &str,
    mid: &str,
    direction: &str,
    codec: (u8, &str, u32, u16),
) -> MediaDescription {
    let mut m = MediaDescription::new_jsep_media_description(media.to_owned(), vec![]);
    let ip = local.candidate.ip();
    m.connection_information = Some(ConnectionInformation {
        network_type: "IN".into(),
        address_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.into(),
        address: Some(Address {
            address: ip.to_string(),
            ttl: None,
            range: None,
        }),
    });
    m.media_name.port.value = local.candidate.port() as isize;
    let (algorithm, value) = local
        .fingerprint
        .split_once(' ')
        .unwrap_or(("sha-256", local.fingerprint.as_str()));
    m.with_value_attribute("mid".into(), mid.to_owned())
        .with_property_attribute(direction.to_owned())
        .with_ice_credentials(local.ice.ufrag.clone(), local.ice.pwd.clone())
        .with_fingerprint(algorithm.to_owned(), value.to_owned())
        .with_value_attribute("setup".into(), "active".into())
        .with_property_attribute("rtcp-mux".into())
        .with_codec(codec.0, codec.1.to_owned(), codec.2, codec.3, String::new())
        .with_candidate(host_candidate(local.candidate))
        .with_property_attribute("end-of-candidates".into())
}

fn host_candidate(addr: SocketAddr) -> String {
    format!("1 1 udp 2130706431 {} {} typ host", addr.ip(), addr.port())
}

/// Our offer as a publisher of `streams`, one sendonly m-section each, mids `0`, `1`, ….
pub fn publisher_offer(local: &LocalDescription, streams: &[OfferedStream]) -> String {
    let mids: Vec<String> = (0..streams.len()).map(|i| i.to_string()).collect();
    let mut s = session(local, &mids);
    for (stream, mid) in streams.iter().zip(&mids) {
        let m = section(
            local,
            stream.kind.sdp_name(),
            mid,
            "sendonly",
            stream.kind.codec(),
        )
        .with_media_source(
            stream.ssrc,
            "loadgen".into(),
            "loadgen".into(),
            format!("{}-{mid}", stream.kind.sdp_name()),
        );
        s = s.with_media(m);
    }
    s.marshal()
}

/// Our answer to a server's offer of streams to receive: every audio or video m-section it
/// offers is accepted recvonly with its first codec, anything else is rejected.
pub fn subscriber_answer(local: &LocalDescription, offer: &RemoteDescription) -> String {
    let accepted: Vec<String> = offer
        .sections
        .iter()
        .filter(|s| !s.rejected && s.codec.is_some())
        .map(|s| s.mid.clone())
        .collect();
    let mut s = session(local, &accepted);
    for sec in &offer.sections {
        let m = match (&sec.codec, sec.rejected) {
            (Some((pt, rtpmap)), false) if sec.media == "audio" || sec.media == "video" => {
                let mut parts = rtpmap.split('/');
                let name = parts.next().unwrap_or("VP8");
                let clock = parts.next().and_then(|c| c.parse().ok()).unwrap_or(90_000);
                let channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                section(
                    local,
                    &sec.media,
                    &sec.mid,
                    "recvonly",
                    (*pt, name, clock, channels),
                )
            }
            _ => {
                let mut m = MediaDescription::new_jsep_media_description(sec.media.clone(), vec![]);
                m.media_name.port.value = 0;
                m.media_name.formats = vec!["0".into()];
                m.with_value_attribute("mid".into(), sec.mid.clone())
                    .with_property_attribute("inactive".into())
            }
        };
        s = s.with_media(m);
    }
    s.marshal()
}

fn attribute<'a>(
    s: &'a SessionDescription,
    m: Option<&'a MediaDescription>,
    key: &str,
) -> Option<&'a str> {
    m.and_then(|m| m.attribute(key).flatten())
        .or_else(|| s.attribute(key).map(String::as_str))
}

/// The first UDP IPv4 host candidate of component 1 in `value` (`a=candidate:` without the key).
fn parse_candidate(value: &str) -> Option<SocketAddr> {
    let f: Vec<&str> = value.split_whitespace().collect();
    if f.len() < 8 || f[1] != "1" || !f[2].eq_ignore_ascii_case("udp") || f[7] != "host" {
        return None;
    }
    let ip: IpAddr = f[4].parse().ok()?;
    let port: u16 = f[5].parse().ok()?;
    ip.is_ipv4().then_some(SocketAddr::new(ip, port))
}

/// Read what we need from the server's SDP.
pub fn parse(text: &str) -> Result<RemoteDescription, JsepError> {
    let s = SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes()))
        .map_err(|e| JsepError::Parse(e.to_string()))?;
    let first = s.media_descriptions.first();
    let ice_ufrag = attribute(&s, first, "ice-ufrag").ok_or(JsepError::Missing("ice-ufrag"))?;
    let ice_pwd = attribute(&s, first, "ice-pwd").ok_or(JsepError::Missing("ice-pwd"))?;
    let fingerprint =
        attribute(&s, first, "fingerprint").ok_or(JsepError::Missing("fingerprint"))?;
    let candidate = s
        .media_descriptions
        .iter()
        .flat_map(|m| m.attributes.iter())
        .filter(|a| a.key == "candidate")
        .find_map(|a| a.value.as_deref().and_then(parse_candidate))
        .ok_or(JsepError::Missing("UDP IPv4 host candidate"))?;
    let sections = s
        .media_descriptions
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let codec = m.media_name.formats.first().and_then(|f| {
                let pt: u8 = f.parse().ok()?;
                let rtpmap = m.attributes.iter().find_map(|a| {
                    let v = a.value.as_deref().filter(|_| a.key == "rtpmap")?;
                    let (p, map) = v.split_once(' ')?;
                    (p == f).then(|| map.trim().to_owned())
                })?;
                Some((pt, rtpmap))
            });
            Section {
                media: m.media_name.media.clone(),
                mid: m
                    .attribute("mid")
                    .flatten()
                    .map_or_else(|| i.to_string(), str::to_owned),
                rejected: m.media_name.port.value == 0,
                codec,
            }
        })
        .collect();
    Ok(RemoteDescription {
        endpoint: RemoteEndpoint {
            candidate,
            ice_ufrag: ice_ufrag.to_owned(),
            ice_pwd: ice_pwd.to_owned(),
            fingerprint: fingerprint.to_owned(),
        },
        sections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalDescription {
        LocalDescription {
            ice: IceCredentials {
                ufrag: "abcd1234".into(),
                pwd: "0123456789abcdef0123456789abcdef".into(),
            },
            fingerprint: "sha-256 AA:BB:CC".into(),
            candidate: "198.18.0.1:5000".parse().unwrap(),
        }
    }

    /// The shape of a Janus 1.1.2 VideoRoom subscription offer (audio + video, half trickle).
    const JANUS_OFFER: &str = "v=0\r\n\
o=- 1700000000000000 1 IN IP4 198.18.0.2\r\n\
s=VideoRoom 4242\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 12:34:56:78\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS *\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 198.18.0.2\r\n\
a=sendonly\r\n\
a=mid:0\r\n\
a=rtcp-mux\r\n\
a=ice-ufrag:Jn4x\r\n\
a=ice-pwd:Z0Y1X2W3V4U5T6S7R8Q9P0\r\n\
a=ice-options:trickle\r\n\
a=setup:actpass\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=ssrc:11 cname:janus\r\n\
a=candidate:1 1 udp 2015363327 198.18.0.2 20123 typ host\r\n\
a=candidate:2 1 udp 2015363583 fe80::1 20124 typ host\r\n\
a=end-of-candidates\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
c=IN IP4 198.18.0.2\r\n\
a=sendonly\r\n\
a=mid:1\r\n\
a=rtcp-mux\r\n\
a=ice-ufrag:Jn4x\r\n\
a=ice-pwd:Z0Y1X2W3V4U5T6S7R8Q9P0\r\n\
a=setup:actpass\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=ssrc:22 cname:janus\r\n\
m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 198.18.0.2\r\n\
a=mid:2\r\n";

    #[test]
    fn reads_a_janus_offer() {
        let d = parse(JANUS_OFFER).unwrap();
        assert_eq!(
            d.endpoint.candidate,
            "198.18.0.2:20123".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(d.endpoint.ice_ufrag, "Jn4x");
        assert_eq!(d.endpoint.ice_pwd, "Z0Y1X2W3V4U5T6S7R8Q9P0");
        assert_eq!(d.endpoint.fingerprint, "sha-256 12:34:56:78");
        assert_eq!(d.sections.len(), 3);
        assert_eq!(d.sections[0].codec, Some((111, "opus/48000/2".into())));
        assert_eq!(d.sections[1].codec, Some((96, "VP8/90000".into())));
        assert_eq!(d.sections[1].mid, "1");
        assert!(d.sections[2].rejected);
    }

    #[test]
    fn answer_accepts_media_and_rejects_the_rest() {
        let offer = parse(JANUS_OFFER).unwrap();
        let answer = subscriber_answer(&local(), &offer);
        let back = SessionDescription::unmarshal(&mut Cursor::new(answer.as_bytes())).unwrap();
        assert_eq!(back.attribute("group").unwrap(), "BUNDLE 0 1");
        let m = &back.media_descriptions;
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].media_name.formats, vec!["111"]);
        assert!(m[0].has_attribute("recvonly"));
        assert_eq!(m[0].attribute("setup"), Some(Some("active")));
        assert_eq!(m[1].attribute("rtpmap"), Some(Some("96 VP8/90000")));
        assert_eq!(m[2].media_name.port.value, 0);
        assert_eq!(m[2].attribute("mid"), Some(Some("2")));
        // Our own answer reads back through the same parser, candidate included.
        let ours = parse(&answer).unwrap();
        assert_eq!(ours.endpoint.candidate, local().candidate);
        assert_eq!(ours.endpoint.fingerprint, "sha-256 AA:BB:CC");
    }

    #[test]
    fn publisher_offer_names_ssrcs_and_takes_the_dtls_client_role() {
        let offer = publisher_offer(
            &local(),
            &[
                OfferedStream {
                    kind: MediaKind::Audio,
                    ssrc: 7,
                },
                OfferedStream {
                    kind: MediaKind::Video,
                    ssrc: 8,
                },
            ],
        );
        let back = SessionDescription::unmarshal(&mut Cursor::new(offer.as_bytes())).unwrap();
        assert_eq!(back.attribute("group").unwrap(), "BUNDLE 0 1");
        let m = &back.media_descriptions;
        assert_eq!(m[0].media_name.media, "audio");
        assert_eq!(m[1].media_name.formats, vec!["96"]);
        assert_eq!(m[1].media_name.port.value, 5000);
        assert!(m[1].has_attribute("sendonly"));
        assert_eq!(m[1].attribute("setup"), Some(Some("active")));
        assert_eq!(
            m[1].attribute("ice-pwd"),
            Some(Some(local().ice.pwd.as_str()))
        );
        assert!(offer.contains("a=ssrc:8 cname:loadgen\r\n"));
        assert!(offer.contains("a=candidate:1 1 udp 2130706431 198.18.0.1 5000 typ host\r\n"));
    }
}
