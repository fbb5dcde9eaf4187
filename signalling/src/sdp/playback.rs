//! A WHEP player's offer: which of its m-sections play which track of a feed, and the answer.
//!
//! As with [`super::ingest`], the player offered, so the answer keeps its payload types and
//! header-extension ids. The relay sends in its own numbers and renumbers each packet to the
//! player's last ([`Renumbering`], given with the participant). Each track of the feed takes
//! the first m-section of its kind that receives and offers the feed's codec; the others are
//! rejected.

use relay::control::Renumbering;

use super::{
    attr, candidate_attributes, flag, is_rtx, rejected_answer_section, rtx_payload_types, session,
    taken_answer_section, AnsweredSection, Codec, Kind, OfferParams, SdpError, EXTENSIONS,
    PLAYOUT_DELAY, TRANSPORT_CC,
};

/// One track the player gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Play {
    /// Its m-section in the player's offer.
    pub mid: String,
    /// Audio or video.
    pub kind: Kind,
    /// The player's codec for it, and its retransmission format where both sides have one
    /// (in the player's numbers).
    codecs: Vec<Codec>,
    /// Retransmissions go on their own stream.
    pub rtx: bool,
    /// The player takes the playout-delay extension.
    pub playout_delay: bool,
    /// The player takes transport-wide sequence numbers (and sends feedback).
    pub transport_cc: bool,
    extensions: Vec<(u8, String)>,
}

/// What a player gets of a feed, and how it is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Playback {
    /// The player's ICE ufrag.
    pub ice_ufrag: String,
    /// The player's certificate fingerprint.
    pub fingerprint: String,
    /// The feed's tracks it plays, in the feed's order.
    pub plays: Vec<Play>,
    /// The relay's numbers to the player's, for every packet sent to it.
    pub renumbering: Renumbering,
    sections: Vec<AnsweredSection>,
}

/// Match the player's `offer` with a feed's `tracks` (each kind's codecs in the relay's
/// numbers, as subscribers are offered them). Refused where it can play none of them.
pub fn plan(
    offer: super::Answer,
    tracks: &[(Kind, Vec<Codec>)],
    repair: bool,
) -> Result<Playback, SdpError> {
    let mut plays: Vec<Play> = Vec::new();
    let mut renumbering = Renumbering::default();
    for (kind, codecs) in tracks {
        let Some(ours) = codecs.iter().find(|c| !is_rtx(c)) else {
            continue;
        };
        let found = offer.sections.iter().find_map(|s| {
            let free = !plays.iter().any(|p| p.mid == s.mid);
            let fits = free && !s.rejected && s.receives && s.media == kind.as_str();
            let theirs = s.codecs.iter().find(|c| fits && same_codec(c, ours))?;
            Some((s, theirs))
        });
        let Some((s, theirs)) = found else {
            continue;
        };
        let our_rtx = rtx_payload_types(codecs)
            .into_iter()
            .find(|(_, apt)| *apt == ours.pt)
            .map(|(pt, _)| pt)
            .filter(|_| repair);
        let their_rtx = rtx_payload_types(&s.codecs)
            .into_iter()
            .find(|(_, apt)| *apt == theirs.pt)
            .and_then(|(pt, _)| s.codecs.iter().find(|c| c.pt == pt));
        // (the player's id, the relay's, the URI) of each extension both know.
        let known: Vec<(u8, u8, &String)> = s
            .extensions
            .iter()
            .filter(|(id, _)| (1..=14).contains(id))
            .filter_map(|(id, uri)| Some((*id, relay_id(uri)?, uri)))
            .collect();
        let extensions: Vec<(u8, String)> = known
            .iter()
            .map(|(id, _, uri)| (*id, (*uri).clone()))
            .collect();
        let transport_cc = extensions.iter().any(|(_, u)| u == TRANSPORT_CC);
        let playout_delay = extensions.iter().any(|(_, u)| u == PLAYOUT_DELAY.1);
        let feedback: Vec<String> = theirs
            .feedback
            .iter()
            .filter(|f| ["transport-cc", "ccm fir", "nack", "nack pli"].contains(&f.as_str()))
            .filter(|f| transport_cc || *f != "transport-cc")
            .filter(|f| repair || *f != "nack")
            .cloned()
            .collect();
        let mut chosen = vec![Codec {
            feedback,
            ..theirs.clone()
        }];
        renumbering.payload_types.push((ours.pt, theirs.pt));
        let rtx = match (our_rtx, their_rtx) {
            (Some(ours), Some(theirs)) => {
                renumbering.payload_types.push((ours, theirs.pt));
                chosen.push(theirs.clone());
                true
            }
            _ => false,
        };
        for &(theirs, ours, _) in &known {
            if !renumbering.extensions.contains(&(ours, theirs)) {
                renumbering.extensions.push((ours, theirs));
            }
        }
        plays.push(Play {
            mid: s.mid.clone(),
            kind: *kind,
            codecs: chosen,
            rtx,
            playout_delay,
            transport_cc,
            extensions,
        });
    }
    if plays.is_empty() {
        return Err(SdpError::Invalid(
            "the offer receives none of the feed's tracks in its codec".into(),
        ));
    }
    Ok(Playback {
        ice_ufrag: offer.ice_ufrag,
        fingerprint: offer.fingerprint,
        plays,
        renumbering,
        sections: offer.sections,
    })
}

/// The relay's id of an extension it writes or passes on to subscribers.
fn relay_id(uri: &str) -> Option<u8> {
    EXTENSIONS
        .iter()
        .map(|(id, u, _)| (*id, *u))
        .chain([PLAYOUT_DELAY])
        .find(|(_, u)| *u == uri)
        .map(|(id, _)| id)
}

/// Whether the player's codec `c` decodes what the feed's `ours` carries.
fn same_codec(c: &Codec, ours: &Codec) -> bool {
    let param = |c: &Codec, key: &str| {
        c.fmtp.as_deref().and_then(|f| {
            f.split(';')
                .find_map(|kv| kv.trim().strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().to_ascii_lowercase())
        })
    };
    if !c.name.eq_ignore_ascii_case(&ours.name) || c.clock_rate != ours.clock_rate {
        return false;
    }
    match ours.name.to_ascii_uppercase().as_str() {
        // The same profile (its first byte), in the mode the relay's packets are in.
        "H264" => {
            param(c, "packetization-mode").as_deref() == Some("1")
                && param(c, "profile-level-id").map(|p| p.get(..2).map(str::to_owned))
                    == param(ours, "profile-level-id").map(|p| p.get(..2).map(str::to_owned))
        }
        "VP9" => param(c, "profile-id") == param(ours, "profile-id").or(Some("0".into())),
        _ => true,
    }
}

impl Playback {
    /// The answer: each played m-section send-only, in the player's numbers, with the SSRCs
    /// the relay sends the feed `feed_id` with (`ssrcs`, per play: media and retransmission),
    /// the others rejected; the relay's ICE-lite credentials and candidates, DTLS server.
    pub fn answer(
        &self,
        p: &OfferParams<'_>,
        feed_id: &str,
        ssrcs: &[(u32, Option<u32>)],
    ) -> String {
        let mut sd = session(p);
        let bundle: Vec<&str> = self.plays.iter().map(|x| x.mid.as_str()).collect();
        sd.attributes
            .push(attr("group", format!("BUNDLE {}", bundle.join(" "))));
        sd.attributes.push(attr("msid-semantic", " WMS *"));
        sd.attributes.push(flag("extmap-allow-mixed"));
        for s in &self.sections {
            let Some((i, play)) = self.plays.iter().enumerate().find(|(_, x)| x.mid == s.mid)
            else {
                sd.media_descriptions.push(rejected_answer_section(p, s));
                continue;
            };
            let mut m = taken_answer_section(p, s, "sendonly", &play.extensions, &play.codecs);
            let a = &mut m.attributes;
            let kind = play.kind.as_str();
            a.push(attr("msid", format!("{feed_id} {feed_id}-{kind}")));
            if let Some(&(ssrc, rtx)) = ssrcs.get(i) {
                let rtx = rtx.filter(|_| play.rtx);
                if let Some(rtx) = rtx {
                    a.push(attr("ssrc-group", format!("FID {ssrc} {rtx}")));
                }
                for ssrc in std::iter::once(ssrc).chain(rtx) {
                    a.push(attr("ssrc", format!("{ssrc} cname:{feed_id}")));
                    a.push(attr(
                        "ssrc",
                        format!("{ssrc} msid:{feed_id} {feed_id}-{kind}"),
                    ));
                }
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
    use crate::sdp::{parse_answer, parse_offer, publish_codecs};

    /// A player's receive-only offer (Chromium's, shortened): VP8 as 100 with RTX 101, opus
    /// as 109, the MID as extension 4 and transport-wide numbers as 3.
    const PLAYER_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\na=fingerprint:sha-256 0A:0B\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 109\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:plyr\r\n\
        a=ice-pwd:playerpasswordplayerpass\r\na=setup:actpass\r\na=mid:0\r\n\
        a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=recvonly\r\na=rtcp-mux\r\n\
        a=rtpmap:109 opus/48000/2\r\na=rtcp-fb:109 transport-cc\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 100 101 102\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\n\
        a=extmap:7 urn:ietf:params:rtp-hdrext:toffset\r\na=recvonly\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
        a=rtpmap:100 VP8/90000\r\na=rtcp-fb:100 transport-cc\r\na=rtcp-fb:100 nack\r\n\
        a=rtcp-fb:100 nack pli\r\na=rtcp-fb:100 goog-remb\r\n\
        a=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\na=rtpmap:102 VP9/90000\r\n";

    fn params() -> OfferParams<'static> {
        OfferParams {
            session_id: 7,
            version: 1,
            ice_ufrag: "relayufr",
            ice_pwd: "relaypasswordrelaypassword",
            fingerprint: "sha-256 DD:EE",
            candidate: "127.0.0.1:40000".parse().unwrap(),
            tcp_candidate: None,
            repair: true,
            data_mid: None,
        }
    }

    fn feed() -> Vec<(Kind, Vec<Codec>)> {
        let vp8: Vec<Codec> = publish_codecs(Kind::Video, true)
            .into_iter()
            .take(2)
            .collect();
        vec![
            (Kind::Video, vp8),
            (Kind::Audio, publish_codecs(Kind::Audio, true)),
        ]
    }

    #[test]
    fn a_player_gets_the_feed_in_its_own_numbers() {
        let play = plan(parse_offer(PLAYER_OFFER).unwrap(), &feed(), true).unwrap();
        let kinds: Vec<(Kind, &str, bool)> = play
            .plays
            .iter()
            .map(|p| (p.kind, p.mid.as_str(), p.rtx))
            .collect();
        assert_eq!(kinds, [(Kind::Video, "1", true), (Kind::Audio, "0", false)]);
        assert_eq!(
            play.renumbering.payload_types,
            [(96, 100), (97, 101), (111, 109)]
        );
        // The relay's MID (1), transport-wide numbers (3), playout delay (12) and audio level
        // (4) in the player's ids; toffset is not the relay's.
        let mut ext = play.renumbering.extensions.clone();
        ext.sort();
        assert_eq!(ext, [(1, 4), (3, 3), (4, 1), (12, 6)]);
        assert!(play.plays[0].playout_delay && play.plays[0].transport_cc);

        let text = play.answer(&params(), "f-1", &[(5000, Some(5001)), (6000, None)]);
        assert!(text.contains("a=group:BUNDLE 1 0\r\n"), "{text}");
        assert!(text.contains("m=video 40000 UDP/TLS/RTP/SAVPF 100 101\r\n"));
        assert!(text.contains("m=audio 40000 UDP/TLS/RTP/SAVPF 109\r\n"));
        assert!(text.contains("a=sendonly\r\n"));
        assert!(text.contains("a=ssrc-group:FID 5000 5001\r\n"));
        assert!(text.contains("a=ssrc:6000 msid:f-1 f-1-audio\r\n"));
        assert!(!text.contains("goog-remb") && !text.contains("toffset"));
        let back = parse_answer(&text.replace("a=setup:passive", "a=setup:active")).unwrap();
        assert_eq!(back.sections[1].codecs[0].pt, 100);
    }

    #[test]
    fn a_player_without_the_feeds_codec_is_refused() {
        let no_vp8 = PLAYER_OFFER
            .replace("a=rtpmap:100 VP8/90000", "a=rtpmap:100 AV1/90000")
            .replace(
                "a=recvonly\r\na=rtcp-mux\r\na=rtpmap:109",
                "a=sendonly\r\na=rtcp-mux\r\na=rtpmap:109",
            );
        let err = plan(parse_offer(&no_vp8).unwrap(), &feed(), true).unwrap_err();
        assert!(err.to_string().contains("receives none"), "{err}");
    }
}
