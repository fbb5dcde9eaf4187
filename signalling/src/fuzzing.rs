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

/// Take a WHIP encoder's offer and answer it: whatever parses is either refused with a reason
/// or answered with one m-section per offered one, every taken track renumbered into payload
/// types the relay declares.
pub fn whip_offer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offer) = sdp::parse_offer(text) else {
        return;
    };
    let sections = offer.sections.len();
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
    let answer = ingest.answer(&sdp::OfferParams {
        session_id: 1,
        version: 1,
        ice_ufrag: "ufrag",
        ice_pwd: "passwordpasswordpassword",
        fingerprint: "sha-256 AA:BB",
        candidate: ([127, 0, 0, 1], 40000).into(),
        tcp_candidate: None,
        repair: true,
        data_mid: None,
    });
    let back = sdp::parse_answer(&answer.replace("a=setup:passive", "a=setup:active"))
        .expect("the answer parses");
    assert_eq!(back.sections.len(), sections);
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
