//! The HTTP side: the SDK and demo app (embedded in the binary), a health endpoint, and the
//! websocket endpoint.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::mpsc;

use crate::hub::{ConnMeta, Input};

/// Files served as they are, by path.
const FILES: [(&str, &str, &str); 4] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../sdk/demo/index.html"),
    ),
    (
        "/demo.js",
        "text/javascript; charset=utf-8",
        include_str!("../../sdk/demo/demo.js"),
    ),
    (
        "/sdk/webrtcai.js",
        "text/javascript; charset=utf-8",
        include_str!("../../sdk/webrtcai.js"),
    ),
    (
        "/sdk/webrtcai.d.ts",
        "application/typescript; charset=utf-8",
        include_str!("../../sdk/webrtcai.d.ts"),
    ),
];

/// The router: `/ws`, `/healthz`, and the static files.
pub fn router(hub: mpsc::Sender<Input>) -> Router {
    Router::new()
        .route("/ws", get(websocket))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(get(file))
        .with_state(hub)
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

async fn file(uri: Uri) -> Response {
    match FILES.iter().find(|(path, _, _)| *path == uri.path()) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
