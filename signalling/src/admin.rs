//! The HTTP admin API: the same operations as the `webrtcai` admin subcommands, for a
//! customer's or operator's backend. Every request needs `Authorization: Bearer <admin secret>`;
//! without a configured secret the API is off.
//!
//! ```text
//! GET  /admin/clients                      POST /admin/clients  {"name":"Acme"}
//! GET  /admin/keys?cid=…                   POST /admin/keys     {"cid":"…","domains":["app.example.com"],"recording":true}
//! POST /admin/keys/{key_id}/revoke
//! POST /admin/tokens {"key":"wk_…","sid":"room","uid":"ada","grants":"publish,subscribe","ttl_secs":3600}
//! GET  /admin/usage?cid=…&from=…&to=…[&format=table]
//! GET  /admin/recordings?cid=…[&sid=…]     GET  /admin/recordings/{id}/file
//! POST /admin/sessions/{sid}/recording {"cid":"…","enable":true}
//! ```

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, Claims, Grants};
use crate::store::{Store, StoreError};

/// What the admin routes need.
#[derive(Clone)]
pub struct Admin {
    /// The account database.
    pub store: Arc<Store>,
    /// The bearer secret; None turns the API off.
    pub secret: Option<String>,
    /// The hub, for what concerns running sessions (recording); None without one.
    pub hub: Option<tokio::sync::mpsc::Sender<crate::hub::Input>>,
    /// Where recordings are, for downloads.
    pub recordings_dir: Option<std::path::PathBuf>,
    /// This node's edge, where it is one node of a cluster.
    pub edge: Option<edge::node::EdgeHandle>,
    /// Starts the server's drain and stop (as SIGTERM does); None where nothing stops it.
    pub drain: Option<Arc<tokio::sync::Notify>>,
}

fn error(status: StatusCode, code: &str, reason: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "reason": reason.into()}})),
    )
        .into_response()
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NoSuchClient(_) | StoreError::NoSuchKey(_) => {
            error(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        StoreError::InvalidWebhook(_) => error(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
        other => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database",
            other.to_string(),
        ),
    }
}

/// None when authorised; otherwise the refusal to send.
fn authorize(admin: &Admin, headers: &HeaderMap) -> Option<Response> {
    let Some(secret) = &admin.secret else {
        return Some(error(
            StatusCode::NOT_FOUND,
            "admin_disabled",
            "the admin API is off: start the server with --admin-secret",
        ));
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer <admin secret>",
        ));
    };
    let same = given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    (!same).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong admin secret",
        )
    })
}

/// The admin routes.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/admin/clients", get(list_clients).post(create_client))
        .route(
            "/admin/clients/{cid}/webhook",
            get(show_webhook).put(set_webhook).delete(clear_webhook),
        )
        .route("/admin/keys", get(list_keys).post(create_key))
        .route("/admin/keys/{key_id}/revoke", post(revoke_key))
        .route("/admin/tokens", post(mint_token))
        .route("/admin/usage", get(usage))
        .route("/admin/recordings", get(list_recordings))
        .route("/admin/recordings/{id}/file", get(recording_file))
        .route("/admin/sessions/{sid}/recording", post(record_session))
        .route("/admin/trunks", get(trunks))
        .route("/admin/drain", post(drain))
        .with_state(admin)
}

#[derive(Deserialize)]
struct NewClient {
    name: String,
}

/// Run `f` on the store on a blocking thread: a database call can wait for a lock held by
/// another process, and must not hold up the runtime's thread, which serves the websockets.
async fn on_store<T: Send + 'static>(
    a: &Admin,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = a.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .unwrap_or_else(|e| Err(StoreError::Sql(format!("database task failed: {e}"))))
}

async fn list_clients(State(a): State<Admin>, h: HeaderMap) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    on_store(&a, |s| s.clients())
        .await
        .map(|c| Json(c).into_response())
        .unwrap_or_else(store_error)
}

async fn create_client(
    State(a): State<Admin>,
    h: HeaderMap,
    Json(body): Json<NewClient>,
) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    if body.name.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "invalid", "name must not be empty");
    }
    on_store(&a, move |s| s.create_client(&body.name))
        .await
        .map(|c| (StatusCode::CREATED, Json(c)).into_response())
        .unwrap_or_else(store_error)
}

#[derive(Deserialize)]
struct KeyFilter {
    cid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    key: String,
}

/// Send a client's session events to `url`, signed with `key`'s secret.
async fn set_webhook(
    State(a): State<Admin>,
    h: HeaderMap,
    Path(cid): Path<String>,
    Json(body): Json<NewWebhook>,
) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    on_store(&a, move |s| s.set_webhook(&cid, &body.url, &body.key))
        .await
        .map(|w| Json(w).into_response())
        .unwrap_or_else(store_error)
}

async fn show_webhook(State(a): State<Admin>, h: HeaderMap, Path(cid): Path<String>) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    let asked = cid.clone();
    match on_store(&a, move |s| s.webhook(&cid)).await {
        Ok(Some(w)) => Json(w).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("client {asked} has no webhook"),
        ),
        Err(e) => store_error(e),
    }
}

async fn clear_webhook(State(a): State<Admin>, h: HeaderMap, Path(cid): Path<String>) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    on_store(&a, move |s| s.clear_webhook(&cid))
        .await
        .map(|cleared| Json(json!({ "cleared": cleared })).into_response())
        .unwrap_or_else(store_error)
}

#[derive(Deserialize)]
struct NewKey {
    cid: String,
    domains: Vec<String>,
    #[serde(default)]
    recording: bool,
}

async fn list_keys(State(a): State<Admin>, h: HeaderMap, Query(f): Query<KeyFilter>) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    on_store(&a, move |s| s.keys(f.cid.as_deref()))
        .await
        .map(|k| Json(k).into_response())
        .unwrap_or_else(store_error)
}

async fn create_key(State(a): State<Admin>, h: HeaderMap, Json(body): Json<NewKey>) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    if body.domains.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "a key needs at least one allowed domain",
        );
    }
    on_store(&a, move |s| {
        s.create_key(&body.cid, &body.domains, body.recording)
    })
    .await
    .map(|k| {
        (
            StatusCode::CREATED,
            Json(json!({"key": k.info, "secret": k.secret})),
        )
            .into_response()
    })
    .unwrap_or_else(store_error)
}

async fn revoke_key(State(a): State<Admin>, h: HeaderMap, Path(key_id): Path<String>) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    on_store(&a, move |s| s.revoke_key(&key_id))
        .await
        .map(|k| Json(k).into_response())
        .unwrap_or_else(store_error)
}

#[derive(Deserialize)]
struct NewToken {
    key: String,
    sid: String,
    uid: Option<String>,
    name: Option<String>,
    #[serde(default = "default_grants")]
    grants: String,
    #[serde(default = "default_ttl")]
    ttl_secs: u64,
    #[serde(default)]
    region: Option<String>,
}

fn default_grants() -> String {
    "publish,subscribe".into()
}

fn default_ttl() -> u64 {
    3600
}

async fn mint_token(State(a): State<Admin>, h: HeaderMap, Json(body): Json<NewToken>) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    let grants = match Grants::parse(&body.grants) {
        Ok(g) => g,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", e),
    };
    let key_id = body.key.clone();
    let key = match on_store(&a, move |s| s.key(&key_id)).await {
        Ok(Some(k)) if k.info.revoked_at.is_none() => k,
        Ok(Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "revoked",
                "the key has been revoked",
            )
        }
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no key {}", body.key),
            )
        }
        Err(e) => return store_error(e),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        cid: key.info.cid.clone(),
        sid: body.sid,
        uid: body.uid,
        name: body.name,
        grants,
        exp: now + body.ttl_secs.clamp(1, 7 * 24 * 3600),
        nbf: None,
        region: body.region,
    };
    match auth::mint(&key.info.key_id, &key.secret, &claims) {
        Ok(token) => Json(json!({"token": token, "exp": claims.exp})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "mint", e),
    }
}

#[derive(Deserialize)]
struct UsageQuery {
    cid: String,
    from: Option<i64>,
    to: Option<i64>,
    format: Option<String>,
}

async fn usage(State(a): State<Admin>, h: HeaderMap, Query(q): Query<UsageQuery>) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    let to = q.to.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64 + 1)
            .unwrap_or(i64::MAX)
    });
    let (cid, from) = (q.cid.clone(), q.from.unwrap_or(0));
    match on_store(&a, move |s| s.usage(&cid, from, to)).await {
        Ok(report) if q.format.as_deref() == Some("table") => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            report.table(),
        )
            .into_response(),
        Ok(report) => Json(report).into_response(),
        Err(e) => store_error(e),
    }
}

/// Drain and stop, as SIGTERM does: no new session from now on, and the process exits once
/// its participants have left (or its drain timeout is up).
async fn drain(State(a): State<Admin>, h: HeaderMap) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    let Some(drain) = &a.drain else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server cannot be drained",
        );
    };
    drain.notify_one();
    (StatusCode::ACCEPTED, Json(json!({ "draining": true }))).into_response()
}

/// This node's trunks to the other nodes of its cluster: each one's QUIC state and counters.
async fn trunks(State(a): State<Admin>, h: HeaderMap) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    let Some(edge) = &a.edge else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server is not part of a cluster (start it with --redis)",
        );
    };
    match edge.stats().await {
        Ok(trunks) => Json(json!({ "node": edge.node(), "trunks": trunks })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "edge", e.to_string()),
    }
}

#[derive(Deserialize)]
struct RecordingsQuery {
    cid: Option<String>,
    sid: Option<String>,
}

async fn list_recordings(
    State(a): State<Admin>,
    h: HeaderMap,
    Query(q): Query<RecordingsQuery>,
) -> Response {
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    on_store(&a, move |s| {
        s.recordings(q.cid.as_deref(), q.sid.as_deref())
    })
    .await
    .map(|r| Json(r).into_response())
    .unwrap_or_else(store_error)
}

/// A recording's file, with range requests (players seek with them).
async fn recording_file(
    State(a): State<Admin>,
    h: HeaderMap,
    Path(id): Path<i64>,
    request: axum::extract::Request,
) -> Response {
    use tower::ServiceExt;
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    let recording = match on_store(&a, move |s| s.recording(id)).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no recording {id}"),
            )
        }
        Err(e) => return store_error(e),
    };
    let relative = std::path::Path::new(&recording.path);
    let Some(dir) = a.recordings_dir.as_ref().filter(|_| {
        relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    }) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server has no recordings directory",
        );
    };
    let path = dir.join(relative);
    if !path.is_file() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("recording {id}'s file {} is gone", recording.path),
        );
    }
    let name = relative
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let served = tower_http::services::ServeFile::new_with_mime(
        &path,
        &"video/webm".parse().expect("a MIME type"),
    )
    .oneshot(request)
    .await;
    match served {
        Ok(mut response) => {
            if let Ok(v) = format!("attachment; filename=\"{name}\"").parse() {
                response
                    .headers_mut()
                    .insert(header::CONTENT_DISPOSITION, v);
            }
            response.map(axum::body::Body::new).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string()),
    }
}

#[derive(Deserialize)]
struct RecordBody {
    cid: String,
    enable: bool,
}

/// Start or stop a running session's recording.
async fn record_session(
    State(a): State<Admin>,
    h: HeaderMap,
    Path(sid): Path<String>,
    Json(body): Json<RecordBody>,
) -> Response {
    use crate::protocol::ErrorCode;
    if let Some(r) = authorize(&a, &h) {
        return r;
    }
    let Some(hub) = &a.hub else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no sessions run here",
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = crate::hub::recording::AdminRecord {
        cid: body.cid,
        sid,
        enable: body.enable,
        reply,
    };
    if hub
        .send(crate::hub::Input::AdminRecord(request))
        .await
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "shutting down",
        );
    }
    match answer.await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err((code, reason))) => {
            let status = match code {
                ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                ErrorCode::NotJoined => StatusCode::NOT_FOUND,
                ErrorCode::RecordingFailed => StatusCode::INSUFFICIENT_STORAGE,
                _ => StatusCode::CONFLICT,
            };
            let code = match code {
                ErrorCode::NotJoined => "not_found".to_owned(),
                other => serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            };
            error(status, &code, reason)
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "shutting down",
        ),
    }
}
