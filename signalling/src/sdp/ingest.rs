//! A WHIP encoder's offer (RFC 9725): what the relay takes of it, and the answer.
//!
//! Here the client offers, so the payload types and header-extension ids are its own, and the
//! answer has to keep them. Each taken m-section becomes a track of one feed whose description
//! is written in the relay's numbers (those of [`super::publish_codecs`] and
//! [`super::EXTENSIONS`], which subscribers are offered) with a [`Renumbering`] from the
//! client's: the relay turns each packet into the relay's numbers as it arrives.
//!
//! Per m-section, the first codec of the client's order that the relay takes is chosen, with its
//! retransmission format where repair is on. An m-section that does not send, or offers nothing
//! the relay takes (a data channel, an unknown codec), is rejected (port 0).

use relay::control::{
    HeaderExtension, MediaKind, PayloadCodec, Renumbering, RtxPayloadType, Simulcast,
};
use relay::ids::{FeedId, Ssrc};
use relay::FeedDescription;

use super::{
    attr, candidate_attributes, flag, is_rtx, publish_codecs, rejected_answer_section,
    rtx_payload_types, session, taken_answer_section, AnsweredSection, Codec, Kind, OfferParams,
    SdpError, EXTENSIONS,
};

/// Feedback the relay gives or uses, per codec.
const FEEDBACK: [&str; 4] = ["transport-cc", "ccm fir", "nack", "nack pli"];

/// One track the relay takes from the offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    /// Its m-section.
    pub mid: String,
    /// Audio or video.
    pub kind: Kind,
    /// What subscribers are offered: the chosen codec in the relay's numbers (with the
    /// client's format parameters) and its retransmission format.
    pub codecs: Vec<Codec>,
    /// What the relay is told, in its own numbers, with the client's numbers beside them.
    pub description: FeedDescription,
}

/// What the relay takes of an offer, and how it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingest {
    /// The client's ICE ufrag.
    pub ice_ufrag: String,
    /// The client's certificate fingerprint.
    pub fingerprint: String,
    /// The tracks taken, in the offer's order.
    pub tracks: Vec<Track>,
    /// Every m-section of the offer, with what the answer says of it.
    sections: Vec<(AnsweredSection, Option<Taken>)>,
}

/// What the answer keeps of an m-section: in the client's numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Taken {
    codecs: Vec<Codec>,
    extensions: Vec<(u8, String)>,
}

/// Choose what to take from `offer` (as [`super::parse_offer`] read it). `feed_of` names the
/// relay feed of each kind. Refused where no m-section sends anything the relay takes.
pub fn plan(
    offer: super::Answer,
    repair: bool,
    feed_of: impl Fn(Kind) -> FeedId,
) -> Result<Ingest, SdpError> {
    let mut tracks = Vec::new();
    let mut sections = Vec::new();
    // Why sending sections were not taken, for the refusal where none is.
    let mut why = Vec::new();
    for s in offer.sections {
        let mut taken = take(&s, repair).filter(|_| {
            // One track of each kind: a feed has one audio and one video track.
            !tracks.iter().any(|t: &Track| Some(t.kind) == kind_of(&s))
        });
        if let (Some((t, codec)), Some(kind)) = (&taken, kind_of(&s)) {
            let track = track_of(&s, kind, t, codec, repair, feed_of(kind));
            match streams_known(&track) {
                Ok(()) => tracks.push(track),
                Err(reason) => {
                    why.push(format!("mid {}: {reason}", s.mid));
                    taken = None;
                }
            }
        }
        sections.push((s, taken.map(|(t, _)| t)));
    }
    if tracks.is_empty() {
        let mut reason = "the offer sends no audio (opus) or video (VP8, VP9, H.264 with \
                          packetization-mode 1, AV1) the relay takes"
            .to_owned();
        if !why.is_empty() {
            reason = format!("{reason} ({})", why.join("; "));
        }
        return Err(SdpError::Invalid(reason));
    }
    Ok(Ingest {
        ice_ufrag: offer.ice_ufrag,
        fingerprint: offer.fingerprint,
        tracks,
        sections,
    })
}

/// Whether the relay can tell the track's streams apart: a declared SSRC, or simulcast
/// layers whose first packets name them by MID and rid (so both extensions must be taken, in
/// the one-byte form the relay reads before decryption). Else why not.
fn streams_known(track: &Track) -> Result<(), String> {
    let d = &track.description;
    d.check_layers()?;
    if d.simulcast.is_some() {
        let theirs = |uri: &str| {
            d.renumbering.as_deref().and_then(|r| {
                let ours = EXTENSIONS.iter().find(|(_, u, _)| *u == uri)?.0;
                r.extensions
                    .iter()
                    .find(|(_, o)| *o == ours)
                    .map(|(t, _)| *t)
            })
        };
        let mid = theirs(relay::control::MID_EXTENSION_URI);
        let rid = theirs("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
        if mid.is_none() || rid.is_none() {
            return Err("simulcast needs the mid and rid header extensions".into());
        }
    }
    Ok(())
}

fn kind_of(s: &AnsweredSection) -> Option<Kind> {
    match s.media.as_str() {
        "audio" => Some(Kind::Audio),
        "video" => Some(Kind::Video),
        _ => None,
    }
}

/// The relay's codec for one the client offers, if it takes it.
fn relay_codec(c: &Codec, kind: Kind, repair: bool) -> Option<Codec> {
    let params = |key: &str| {
        c.fmtp.as_deref().and_then(|f| {
            f.split(';')
                .find_map(|kv| kv.trim().strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        })
    };
    let fits = match c.name.to_ascii_uppercase().as_str() {
        "H264" => params("packetization-mode") == Some("1"),
        "VP9" => params("profile-id").is_none_or(|p| p == "0"),
        "OPUS" => c.clock_rate == 48_000,
        _ => true,
    };
    if !fits || is_rtx(c) {
        return None;
    }
    publish_codecs(kind, repair)
        .into_iter()
        .find(|r| r.name.eq_ignore_ascii_case(&c.name) && r.clock_rate == c.clock_rate)
}

/// What the answer keeps of a sending m-section (in the client's numbers) and the relay's
/// codec chosen, or None to reject it.
fn take(s: &AnsweredSection, repair: bool) -> Option<(Taken, Codec)> {
    let kind = kind_of(s)?;
    if s.rejected || !s.sends {
        return None;
    }
    let (chosen, ours) = s
        .codecs
        .iter()
        .find_map(|c| Some(c).zip(relay_codec(c, kind, repair)))?;
    let extensions: Vec<(u8, String)> = s
        .extensions
        .iter()
        .filter(|(id, uri)| {
            (1..=14).contains(id)
                && EXTENSIONS
                    .iter()
                    .any(|(_, u, only)| u == uri && only.is_none_or(|k| k == kind))
        })
        .cloned()
        .collect();
    let twcc = extensions.iter().any(|(_, u)| u == super::TRANSPORT_CC);
    let keep_feedback = |c: &Codec| -> Vec<String> {
        c.feedback
            .iter()
            .filter(|f| FEEDBACK.contains(&f.as_str()))
            .filter(|f| twcc || *f != "transport-cc")
            .filter(|f| repair || *f != "nack")
            .cloned()
            .collect()
    };
    let mut codecs = vec![Codec {
        feedback: keep_feedback(chosen),
        ..chosen.clone()
    }];
    if repair && kind == Kind::Video {
        let rtx = rtx_payload_types(&s.codecs)
            .into_iter()
            .find(|(_, apt)| *apt == chosen.pt)
            .and_then(|(pt, _)| s.codecs.iter().find(|c| c.pt == pt));
        codecs.extend(rtx.cloned());
    }
    Some((Taken { codecs, extensions }, ours))
}

fn track_of(
    s: &AnsweredSection,
    kind: Kind,
    taken: &Taken,
    ours: &Codec,
    repair: bool,
    feed_id: FeedId,
) -> Track {
    let chosen = &taken.codecs[0];
    let client_rtx = taken.codecs.get(1).map(|c| c.pt);
    let relay_rtx = publish_codecs(kind, repair)
        .into_iter()
        .filter(is_rtx)
        .find(|c| rtx_payload_types(std::slice::from_ref(c)) == [(c.pt, ours.pt)])
        .filter(|_| client_rtx.is_some());
    // Subscribers get the relay's payload types, with the client's format parameters (an
    // H.264 profile says what decoders must handle), and the relay's feedback.
    let mut codecs = vec![Codec {
        fmtp: chosen.fmtp.clone().or(ours.fmtp.clone()),
        ..ours.clone()
    }];
    codecs.extend(relay_rtx.clone());
    let mut payload_types = vec![(chosen.pt, ours.pt)];
    payload_types.extend(client_rtx.zip(relay_rtx.as_ref().map(|c| c.pt)));
    let extensions: Vec<(u8, u8)> = taken
        .extensions
        .iter()
        .filter_map(|(id, uri)| {
            let (ours, _, _) = EXTENSIONS.iter().find(|(_, u, _)| u == uri)?;
            Some((*id, *ours))
        })
        .collect();
    let simulcast = (kind == Kind::Video && !s.simulcast.is_empty()).then(|| Simulcast {
        mid: s.mid.clone(),
        rids: s.simulcast.clone(),
    });
    let nack = repair && chosen.feedback.iter().any(|f| f == "nack");
    let description = FeedDescription {
        feed_id,
        kind: match kind {
            Kind::Audio => MediaKind::Audio,
            Kind::Video => MediaKind::Video,
        },
        ssrc: s.ssrc.filter(|_| simulcast.is_none()).map(Ssrc),
        clock_rate: ours.clock_rate,
        payload_types: vec![ours.pt],
        header_extensions: extensions
            .iter()
            .filter_map(|(_, ours)| {
                let (id, uri, _) = EXTENSIONS.iter().find(|(id, _, _)| id == ours)?;
                Some(HeaderExtension {
                    id: *id,
                    uri: (*uri).to_owned(),
                })
            })
            .collect(),
        nack,
        rtx_ssrc: s
            .rtx_ssrc
            .filter(|_| relay_rtx.is_some() && simulcast.is_none())
            .map(Ssrc),
        rtx_payload_types: relay_rtx
            .iter()
            .map(|c| RtxPayloadType {
                pt: c.pt,
                apt: ours.pt,
            })
            .collect(),
        codecs: vec![PayloadCodec {
            pt: ours.pt,
            name: ours.name.clone(),
        }],
        simulcast,
        screen: false,
        renumbering: Some(Box::new(Renumbering {
            payload_types,
            extensions,
        })),
    };
    Track {
        mid: s.mid.clone(),
        kind,
        codecs,
        description,
    }
}

impl Ingest {
    /// The answer: the relay's ICE-lite credentials and candidates, the passive DTLS role
    /// (the relay is the DTLS server), each taken section receive-only in the client's
    /// numbers, the others rejected. `p.data_mid` is ignored.
    pub fn answer(&self, p: &OfferParams<'_>) -> String {
        let bundle: Vec<&str> = self
            .sections
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(s, _)| s.mid.as_str())
            .collect();
        let mut sd = session(p);
        sd.attributes
            .push(attr("group", format!("BUNDLE {}", bundle.join(" "))));
        sd.attributes.push(flag("extmap-allow-mixed"));
        for (s, taken) in &self.sections {
            let Some(taken) = taken else {
                sd.media_descriptions.push(rejected_answer_section(p, s));
                continue;
            };
            let mut m = taken_answer_section(p, s, "recvonly", &taken.extensions, &taken.codecs);
            let a = &mut m.attributes;
            if !s.simulcast.is_empty() {
                for rid in &s.simulcast {
                    a.push(attr("rid", format!("{rid} recv")));
                }
                a.push(attr("simulcast", format!("recv {}", s.simulcast.join(";"))));
            }
            candidate_attributes(a, p);
            sd.media_descriptions.push(m);
        }
        sd.marshal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::{parse_answer, parse_offer};

    /// What OBS 30's WHIP output offers (libdatachannel): H.264 as 96 and opus as 111, with
    /// its own extension ids, both send-only.
    const OBS_OFFER: &str = "v=0\r\no=rtc 3363245330 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\na=group:LS 0 1\r\na=msid-semantic:WMS *\r\n\
        a=ice-options:ice2,trickle\r\na=fingerprint:sha-256 AA:BB:CC\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
        a=ssrc:1111 cname:obs\r\na=ssrc:1111 msid:obs obs-audio\r\na=rtcp-mux\r\n\
        a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1\r\n\
        a=setup:actpass\r\na=ice-ufrag:obsU\r\na=ice-pwd:obspasswordobspasswordob\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
        a=ssrc:2222 cname:obs\r\na=ssrc:2222 msid:obs obs-video\r\na=rtcp-mux\r\n\
        a=rtpmap:96 H264/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 goog-remb\r\n\
        a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n\
        a=setup:actpass\r\na=ice-ufrag:obsU\r\na=ice-pwd:obspasswordobspasswordob\r\n";

    fn params() -> OfferParams<'static> {
        OfferParams {
            session_id: 7,
            version: 2,
            ice_ufrag: "relayufr",
            ice_pwd: "relaypasswordrelaypassword",
            fingerprint: "sha-256 DD:EE",
            candidate: "127.0.0.1:40000".parse().unwrap(),
            tcp_candidate: None,
            repair: true,
            data_mid: None,
        }
    }

    fn feed(kind: Kind) -> FeedId {
        FeedId::from(format!("f-1/{}", kind.as_str()))
    }

    #[test]
    fn an_obs_offer_is_taken_in_its_numbers_and_described_in_the_relays() {
        let ingest = plan(parse_offer(OBS_OFFER).unwrap(), true, feed).unwrap();
        assert_eq!(ingest.ice_ufrag, "obsU");
        let [audio, video] = &ingest.tracks[..] else {
            panic!("{:?}", ingest.tracks);
        };
        assert_eq!((audio.kind, video.kind), (Kind::Audio, Kind::Video));
        // H.264 is the relay's 102; the client's 96 (the relay's VP8) becomes it.
        let v = &video.description;
        assert_eq!(v.payload_types, [102]);
        assert_eq!(v.codecs[0].name, "H264");
        assert_eq!(v.ssrc, Some(Ssrc(2222)));
        assert_eq!(v.rtx_ssrc, None);
        assert!(v.nack);
        let renumbering = v.renumbering.as_deref().unwrap();
        assert_eq!(renumbering.payload_types, [(96, 102)]);
        assert!(renumbering.extensions.is_empty());
        assert_eq!(video.codecs[0].pt, 102);
        assert!(video.codecs[0]
            .fmtp
            .as_deref()
            .unwrap()
            .contains("profile-level-id=42e01f"));
        assert_eq!(audio.description.payload_types, [111]);
        assert_eq!(audio.description.ssrc, Some(Ssrc(1111)));

        // The answer keeps the client's numbers; goog-remb, which the relay does not send, is
        // left out; the relay is the DTLS server.
        let text = ingest.answer(&params());
        assert!(text.contains("a=ice-lite\r\n"), "{text}");
        assert!(text.contains("a=group:BUNDLE 0 1\r\n"));
        assert!(text.contains("m=video 40000 UDP/TLS/RTP/SAVPF 96\r\n"));
        assert!(text.contains("a=rtpmap:96 H264/90000\r\n"));
        assert!(text.contains("a=rtcp-fb:96 nack pli\r\n"));
        assert!(!text.contains("goog-remb"));
        assert!(text.contains("a=setup:passive\r\n"));
        assert!(text.contains("a=recvonly\r\n"));
        assert!(text.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"));
        // A browser's parser of answers reads it as the client will.
        let back = parse_answer(&text.replace("a=setup:passive", "a=setup:active")).unwrap();
        assert_eq!(back.sections.len(), 2);
        assert_eq!(back.sections[1].codecs[0].pt, 96);
    }

    /// Chromium's own offer for a send-only camera with simulcast, shortened: VP8 first, its
    /// extension ids, and a data section the relay does not take from a WHIP client.
    const CHROMIUM_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 39 40 98\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:chrU\r\na=ice-pwd:chromepasswordchromepass\r\na=ice-options:trickle\r\n\
        a=fingerprint:sha-256 01:02\r\na=setup:actpass\r\na=mid:0\r\n\
        a=extmap:1 urn:ietf:params:rtp-hdrext:toffset\r\n\
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
        a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n\
        a=sendonly\r\na=msid:- t1\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\n\
        a=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
        a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
        a=rtpmap:39 AV1/90000\r\na=rtpmap:40 rtx/90000\r\na=fmtp:40 apt=39\r\n\
        a=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=2\r\n\
        a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:chrU\r\na=ice-pwd:chromepasswordchromepass\r\na=fingerprint:sha-256 01:02\r\n\
        a=setup:actpass\r\na=mid:1\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n";

    #[test]
    fn chromium_simulcast_is_learnt_by_rid_and_extensions_are_renumbered() {
        let ingest = plan(parse_offer(CHROMIUM_OFFER).unwrap(), true, feed).unwrap();
        let [video] = &ingest.tracks[..] else {
            panic!("{:?}", ingest.tracks);
        };
        let v = &video.description;
        assert_eq!(v.payload_types, [96]);
        assert_eq!(v.rtx_payload_types, [RtxPayloadType { pt: 97, apt: 96 }]);
        assert_eq!(v.ssrc, None);
        assert_eq!(
            v.simulcast,
            Some(Simulcast {
                mid: "0".into(),
                rids: vec!["q".into(), "h".into(), "f".into()]
            })
        );
        let r = v.renumbering.as_deref().unwrap();
        assert_eq!(r.payload_types, [(96, 96), (97, 97)]);
        // Chromium's mid is 4 and the relay's 1; toffset is not taken.
        assert_eq!(r.extensions, [(3, 3), (4, 1), (10, 10), (11, 11)]);
        assert!(v
            .header_extensions
            .iter()
            .any(|e| e.id == 1 && e.uri == crate::sdp::EXTENSIONS[0].1));

        let text = ingest.answer(&params());
        assert!(text.contains("a=group:BUNDLE 0\r\n"), "{text}");
        assert!(text.contains("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"));
        assert!(!text.contains("toffset"));
        assert!(text.contains("m=video 40000 UDP/TLS/RTP/SAVPF 96 97\r\n"));
        assert!(text.contains("a=simulcast:recv q;h;f\r\n"));
        assert!(text.contains("a=rid:q recv\r\n"));
        assert!(text.contains("a=rtcp-rsize\r\n"));
        assert!(text.contains("m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n"));
    }

    #[test]
    fn an_offer_with_nothing_the_relay_takes_is_refused() {
        let recvonly = OBS_OFFER.replace("a=sendonly", "a=recvonly");
        let err = plan(parse_offer(&recvonly).unwrap(), true, feed).unwrap_err();
        assert!(err.to_string().contains("sends no audio"), "{err}");
        let h264_mode0 = OBS_OFFER
            .replace("packetization-mode=1", "packetization-mode=0")
            .replace(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                "m=audio 0 UDP/TLS/RTP/SAVPF 111",
            );
        assert!(plan(parse_offer(&h264_mode0).unwrap(), true, feed).is_err());
        // A single stream without its SSRC cannot be routed: refused with the reason.
        let no_ssrc = OBS_OFFER.replace(
            "a=ssrc:1111 cname:obs\r\na=ssrc:1111 msid:obs obs-audio\r\n",
            "",
        );
        let no_ssrc = no_ssrc.replace(
            "a=ssrc:2222 cname:obs\r\na=ssrc:2222 msid:obs obs-video\r\n",
            "",
        );
        let err = plan(parse_offer(&no_ssrc).unwrap(), true, feed).unwrap_err();
        assert!(err.to_string().contains("needs its ssrc"), "{err}");
        // Simulcast without the rid extension: its layers could never be told apart.
        let no_rid = CHROMIUM_OFFER.replace(
            "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n",
            "",
        );
        let err = plan(parse_offer(&no_rid).unwrap(), true, feed).unwrap_err();
        assert!(err.to_string().contains("mid and rid"), "{err}");
        // A client that insists on being the DTLS server cannot be answered.
        let passive = OBS_OFFER.replace("a=setup:actpass", "a=setup:passive");
        assert!(parse_offer(&passive).is_err());
    }
}
