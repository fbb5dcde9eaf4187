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
pub const TARGETS: [(&str, Target); 2] =
    [("signalling_message", message), ("sdp_answer", sdp_answer)];
