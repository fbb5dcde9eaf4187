//! WHIP's HTTP side (RFC 9725): `POST /whip/{sid}` with the encoder's offer and a bearer
//! token creates a resource, `DELETE /whip/{sid}/{resource}` ends it. WHEP's is the same for a
//! player of one feed: `POST /whep/{sid}/{feed}`, `DELETE /whep/{sid}/{feed}/{resource}`. The
//! hub does the rest ([`crate::hub::whip`], `hub/whep.rs`).
//!
//! The answer carries every candidate of the relay (it is ICE-lite), so a client's trickled
//! candidates would add nothing: `PATCH` is answered 405, which RFC 9725 lets a resource do
//! that takes neither trickle nor restarts. An encoder that loses its path publishes again.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::sync::{mpsc, oneshot};

use crate::hub::whip::{Created, Refusal, WhipRequest};
use crate::hub::Input;
use crate::protocol::ErrorCode;

/// The largest offer taken: a browser's with every codec is under 10 KiB.
pub const MAX_OFFER: usize = 64 * 1024;

/// How long a request waits for the hub (and the relay behind it) before it is given up on.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The WHIP routes.
pub fn router(hub: mpsc::Sender<Input>) -> Router {
    Router::new()
        .route("/whip/{sid}", post(publish).options(options))
        .route(
            "/whip/{sid}/{resource}",
            axum::routing::delete(end).patch(patch).options(options),
        )
        .route("/whep/{sid}/{feed}", post(play).options(options))
        .route(
            "/whep/{sid}/{feed}/{resource}",
            axum::routing::delete(end_play)
                .patch(patch)
                .options(options),
        )
        .with_state(hub)
}

/// Browsers ask before a cross-origin POST with a body of this type and a bearer token: any
/// page may publish, its token says what into.
async fn options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, DELETE, PATCH, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, if-match"),
    );
    // Accept-Post (RFC 7231 has none; the W3C LDP header WHIP names).
    h.insert(
        header::HeaderName::from_static("accept-post"),
        HeaderValue::from_static("application/sdp"),
    );
    r
}

fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("location"),
    );
}

/// The bearer token of a request.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The offer of a POST, or the response that refuses it.
fn offer_of(headers: &HeaderMap, body: &Bytes) -> Result<(String, String), Box<Response>> {
    let Some(token) = bearer(headers) else {
        return Err(Box::new(refused((
            ErrorCode::Unauthorized,
            "a bearer token (Authorization: Bearer <token>) is required".into(),
        ))));
    };
    let sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/sdp")
        });
    if !sdp {
        return Err(Box::new(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as application/sdp".into(),
        )));
    }
    if body.len() > MAX_OFFER {
        return Err(Box::new(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an offer is at most {MAX_OFFER} bytes"),
        )));
    }
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "the offer is not UTF-8".into(),
        )));
    };
    Ok((token, offer))
}

/// `201 Created` with the answer, its resource at `base`/{resource}.
fn created(base: &str, created: Created) -> Response {
    let location = format!("{base}/{}", created.resource);
    let mut r = (StatusCode::CREATED, created.answer).into_response();
    let h = r.headers_mut();
    cors(h);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    r
}

async fn publish(
    State(hub): State<mpsc::Sender<Input>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (token, offer) = match offer_of(&headers, &body) {
        Ok(got) => got,
        Err(r) => return *r,
    };
    let (reply, answer) = oneshot::channel();
    let request = WhipRequest::Publish {
        sid: sid.clone(),
        token,
        ip: peer.ip(),
        offer,
        reply,
    };
    match ask(&hub, request, answer).await {
        Ok(c) => created(&format!("/whip/{sid}"), c),
        Err(refusal) => refused(refusal),
    }
}

async fn play(
    State(hub): State<mpsc::Sender<Input>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((sid, feed)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (token, offer) = match offer_of(&headers, &body) {
        Ok(got) => got,
        Err(r) => return *r,
    };
    let (reply, answer) = oneshot::channel();
    let request = WhipRequest::Play {
        sid: sid.clone(),
        feed_id: feed.clone(),
        token,
        ip: peer.ip(),
        offer,
        reply,
    };
    match ask(&hub, request, answer).await {
        Ok(c) => created(&format!("/whep/{sid}/{feed}"), c),
        Err(refusal) => refused(refusal),
    }
}

async fn end_play(
    state: State<mpsc::Sender<Input>>,
    peer: ConnectInfo<SocketAddr>,
    Path((sid, _feed, resource)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    end(state, peer, Path((sid, resource)), headers).await
}

async fn end(
    State(hub): State<mpsc::Sender<Input>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((sid, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return refused((
            ErrorCode::Unauthorized,
            "a bearer token (Authorization: Bearer <token>) is required".into(),
        ));
    };
    let (reply, outcome) = oneshot::channel();
    let request = WhipRequest::End {
        sid,
        token,
        ip: peer.ip(),
        resource,
        reply,
    };
    match ask(&hub, request, outcome).await {
        Ok(()) => {
            let mut r = StatusCode::OK.into_response();
            cors(r.headers_mut());
            r
        }
        Err(refusal) => refused(refusal),
    }
}

async fn patch() -> Response {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "this server is ICE-lite and gives every candidate in its answer: trickled candidates \
         and ICE restarts are not taken (publish again instead)"
            .into(),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    r
}

/// Hand `request` to the hub and wait for its outcome.
async fn ask<T>(
    hub: &mpsc::Sender<Input>,
    request: WhipRequest,
    outcome: oneshot::Receiver<Result<T, Refusal>>,
) -> Result<T, Refusal> {
    let busy = || {
        (
            ErrorCode::RateLimited,
            "the server did not answer in time; try again".to_owned(),
        )
    };
    hub.send(Input::Whip(request)).await.map_err(|_| busy())?;
    match tokio::time::timeout(TIMEOUT, outcome).await {
        Ok(Ok(result)) => result,
        _ => Err(busy()),
    }
}

/// A refusal as an HTTP status with the reason as text.
fn refused((code, reason): Refusal) -> Response {
    let status = match code {
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden | ErrorCode::E2eeMismatch => StatusCode::FORBIDDEN,
        ErrorCode::InvalidSdp => StatusCode::BAD_REQUEST,
        ErrorCode::NotJoined | ErrorCode::NoSuchFeed => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyJoined => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Draining => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    // The protocol's name for the code, as the SDK's errors have it.
    let name = serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut r = text(status, format!("{name}: {reason}"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn text(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    cors(r.headers_mut());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_is_read_from_its_header_only() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def"),
        );
        assert_eq!(bearer(&h).as_deref(), Some("abc.def"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  x "),
        );
        assert_eq!(bearer(&h).as_deref(), Some("x"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcg=="),
        );
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
