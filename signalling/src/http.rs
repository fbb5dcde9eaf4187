//! The HTTP side: the SDK and demo app (embedded in the binary), a health endpoint, the
//! websocket endpoint and WHIP ([`crate::whip`]).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::hub::{ConnMeta, Input};

/// A file served as it is.
struct File {
    path: &'static str,
    mime: &'static str,
    body: &'static str,
    /// Whether pages on any origin may load it: the SDK is a public script that every
    /// customer's page imports from here (a module script is fetched in CORS mode, so without
    /// `Access-Control-Allow-Origin` the browser refuses it). The demo app is for this origin.
    cross_origin: bool,
}

const FILES: [File; 4] = [
    File {
        path: "/",
        mime: "text/html; charset=utf-8",
        body: include_str!("../../sdk/demo/index.html"),
        cross_origin: false,
    },
    File {
        path: "/demo.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../sdk/demo/demo.js"),
        cross_origin: false,
    },
    File {
        path: "/sdk/webrtcai.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../sdk/webrtcai.js"),
        cross_origin: true,
    },
    File {
        path: "/sdk/webrtcai.d.ts",
        mime: "application/typescript; charset=utf-8",
        body: include_str!("../../sdk/webrtcai.d.ts"),
        cross_origin: true,
    },
];

/// A strong ETag per file (same index as [`FILES`]), from a hash of its contents, computed
/// once: the files are part of the binary, so a tag changes exactly when an upgrade changes
/// the file.
fn etags() -> &'static [String; FILES.len()] {
    static TAGS: std::sync::OnceLock<[String; FILES.len()]> = std::sync::OnceLock::new();
    TAGS.get_or_init(|| {
        FILES.map(|f| {
            let digest = Sha256::digest(f.body.as_bytes());
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
    })
}

/// Whether an `If-None-Match` value matches `etag` (the weak comparison RFC 9110 asks for
/// here: a `W/` prefix is ignored).
fn none_match(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// The router: `/ws`, `/healthz`, and the static files.
pub fn router(hub: mpsc::Sender<Input>) -> Router {
    Router::new()
        .route("/ws", get(websocket))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(get(file))
        .with_state(hub.clone())
        .merge(crate::whip::router(hub))
}

/// Whether the server takes new sessions: 200 `ready`, or 503 `draining` (it is about to
/// stop) or `busy` (its hub did not answer within a second). `/healthz` says it is alive.
async fn ready(State(hub): State<mpsc::Sender<Input>>) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let answer = async {
        hub.send(Input::Metrics(tx)).await.ok()?;
        rx.await.ok()
    };
    match tokio::time::timeout(std::time::Duration::from_secs(1), answer).await {
        Ok(Some(m)) if !m.draining => (StatusCode::OK, "ready").into_response(),
        Ok(Some(_)) => (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
    }
}

async fn websocket(
    ws: WebSocketUpgrade,
    State(hub): State<mpsc::Sender<Input>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let meta = ConnMeta {
        origin: headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ip: peer.ip(),
    };
    ws.max_message_size(crate::ws::MAX_FRAME)
        .max_frame_size(crate::ws::MAX_FRAME)
        .on_upgrade(move |socket| crate::ws::serve(socket, hub, meta))
}

/// Serve the router on `listener` until `shutdown` resolves; connections carry their peer
/// address (join rate limits are per address).
pub async fn serve(
    listener: tokio::net::TcpListener,
    hub: mpsc::Sender<Input>,
    admin: crate::admin::Admin,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(hub)
            .merge(crate::admin::router(admin))
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// [`serve`] over TLS (https and wss) with `tls`'s certificate, which a reload replaces for
/// the handshakes that follow. When `shutdown` resolves, open connections get 5 s to finish.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    hub: mpsc::Sender<Input>,
    admin: crate::admin::Admin,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    tls: crate::tls::Tls,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let stop = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, tls.config())
        .handle(handle)
        .serve(
            router(hub)
                .merge(crate::admin::router(admin))
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
}

/// A static file. The SDK URL carries no version, so caches must revalidate (`no-cache`) to
/// pick up an upgraded server at once; the ETag makes that revalidation a bodiless 304.
async fn file(uri: Uri, headers: HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|f| f.path == uri.path()) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let (f, etag) = (&FILES[i], etags()[i].as_str());
    let mut out = HeaderMap::new();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        out.insert(header::ETAG, v);
    }
    if f.cross_origin {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| none_match(v, etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(f.mime));
    (out, f.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists() {
        let tag = "\"abc\"";
        assert!(none_match("\"abc\"", tag));
        assert!(none_match("\"x\", W/\"abc\"", tag));
        assert!(none_match("*", tag));
        assert!(!none_match("\"abcd\"", tag));
        assert!(!none_match("abc", tag));
        assert!(!none_match("", tag));
    }

    #[test]
    fn etags_are_strong_and_distinct() {
        let tags = etags();
        for t in tags {
            assert!(t.starts_with('"') && t.ends_with('"') && !t.starts_with("W/"));
        }
        assert_ne!(tags[2], tags[3]);
    }
}
