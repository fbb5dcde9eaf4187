//! Entry points for the fuzz targets in `fuzz/` and for the stable test that replays their
//! corpora: anything a browser can send must be refused with a reason, never panic.

use crate::protocol;
use crate::sdp;

/// Decode a websocket text message as a request.
pub fn message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = protocol::request_id(text);
    if let Ok(request) = protocol::decode(text) {
        // Whatever decodes re-encodes.
        serde_json::to_string(&request).expect("requests serialise");
    }
}

/// Parse a browser's answer.
pub fn sdp_answer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(answer) = sdp::parse_answer(text) {
        assert!(answer
            .fingerprint
            .to_ascii_lowercase()
            .starts_with("sha-256 "));
    }
}

/// Take a WHIP encoder's offer, and the same as a WHEP player's of a VP8 and opus feed, and
/// answer each: whatever parses is either refused with a reason or answered with one
/// m-section per offered one, every taken track renumbered between payload types the relay
/// declares and the offer's.
pub fn whip_offer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offer) = sdp::parse_offer(text) else {
        return;
    };
    let sections = offer.sections.len();
    let params = sdp::OfferParams {
        session_id: 1,
        version: 1,
        ice_ufrag: "ufrag",
        ice_pwd: "passwordpasswordpassword",
        fingerprint: "sha-256 AA:BB",
        candidate: ([127, 0, 0, 1], 40000).into(),
        tcp_candidate: None,
        repair: true,
        data_mid: None,
    };
    let reread = |answer: String| {
        let back = sdp::parse_answer(&answer.replace("a=setup:passive", "a=setup:active"))
            .expect("the answer parses");
        assert_eq!(back.sections.len(), sections);
    };
    let feed = [
        (
            sdp::Kind::Video,
            sdp::publish_codecs(sdp::Kind::Video, true)[..2].to_vec(),
        ),
        (
            sdp::Kind::Audio,
            sdp::publish_codecs(sdp::Kind::Audio, true),
        ),
    ];
    if let Ok(play) = sdp::playback::plan(offer.clone(), &feed, true) {
        for (ours, _) in &play.renumbering.payload_types {
            assert!(feed
                .iter()
                .any(|(_, codecs)| codecs.iter().any(|c| c.pt == *ours)));
        }
        reread(play.answer(&params, "f", &[(1, Some(2)), (3, None)]));
    }
    let Ok(ingest) = sdp::ingest::plan(offer, true, |kind| {
        relay::ids::FeedId::from(format!("f/{}", kind.as_str()))
    }) else {
        return;
    };
    for track in &ingest.tracks {
        let d = &track.description;
        let r = d
            .renumbering
            .as_deref()
            .expect("a WHIP track is renumbered");
        for (_, ours) in &r.payload_types {
            assert!(
                d.payload_types.contains(ours) || d.rtx_payload_types.iter().any(|x| x.pt == *ours)
            );
        }
    }
    reread(ingest.answer(&params));
}

/// Check an `Origin` header value against a fixed set of allowed domains.
pub fn origin(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let domains = [
        "app.example.com".to_owned(),
        "*.example.org".to_owned(),
        "localhost:8080".to_owned(),
    ];
    if crate::auth::origin_allowed(Some(text), &domains).is_ok() {
        let lower = text.to_ascii_lowercase();
        assert!(
            lower.starts_with("http://") || lower.starts_with("https://"),
            "{text}"
        );
    }
}

/// A fuzz target: takes any bytes, must not panic.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, for the corpus replay test.
pub const TARGETS: [(&str, Target); 3] = [
    ("signalling_message", message),
    ("sdp_answer", sdp_answer),
    ("whip_offer", whip_offer),
];
