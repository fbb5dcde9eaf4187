//! The HTTP admin API: authorisation, every operation, and a token it mints used to join.

mod common;

use common::{connect_from, reply, send, server, ADMIN_SECRET};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request on a fresh connection; returns the status and the body.
async fn http(
    base: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req += &format!("Authorization: Bearer {a}\r\n");
    }
    if !body.is_empty() {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    req += "\r\n";
    req += &body;
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json_body(b: &str) -> Value {
    serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}: {b}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api() {
    let srv = server("admin", Default::default()).await;
    let base = srv.http.clone();

    // Refused without or with a wrong secret, with the reason.
    let (st, b) = http(&base, "GET", "/admin/clients", None, None).await;
    assert_eq!(st, 401);
    assert!(b.contains("missing Authorization"));
    let (st, b) = http(&base, "GET", "/admin/clients", Some("guess"), None).await;
    assert_eq!(st, 401);
    assert!(b.contains("wrong admin secret"));

    let auth = Some(ADMIN_SECRET);
    let (st, b) = http(
        &base,
        "POST",
        "/admin/clients",
        auth,
        Some(json!({"name":"Globex"})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let cid = json_body(&b)["cid"].as_str().unwrap().to_owned();
    let (_, b) = http(&base, "GET", "/admin/clients", auth, None).await;
    assert_eq!(json_body(&b).as_array().unwrap().len(), 2);

    let (st, b) = http(
        &base,
        "POST",
        "/admin/keys",
        auth,
        Some(json!({"cid": cid, "domains": ["app.globex.com"], "recording": true})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let created = json_body(&b);
    let key_id = created["key"]["key_id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk_"));
    let (_, b) = http(&base, "GET", &format!("/admin/keys?cid={cid}"), auth, None).await;
    assert!(
        b.contains(&key_id) && !b.contains(&secret),
        "secrets are never listed"
    );
    let (st, _) = http(
        &base,
        "POST",
        "/admin/keys",
        auth,
        Some(json!({"cid": "c-none", "domains": ["x"]})),
    )
    .await;
    assert_eq!(st, 404);
    let (st, b) = http(
        &base,
        "POST",
        "/admin/keys",
        auth,
        Some(json!({"cid": cid})),
    )
    .await;
    assert_eq!(st, 422, "{b}");

    // A minted token joins from a backend (no Origin).
    let (st, b) = http(
        &base,
        "POST",
        "/admin/tokens",
        auth,
        Some(json!({"key": key_id, "sid": "standup", "uid": "bot", "grants": "subscribe"})),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let token = json_body(&b)["token"].as_str().unwrap().to_owned();
    let mut ws = connect_from(&srv.url, None).await;
    send(
        &mut ws,
        json!({"type":"join","id":1,"v":1,"sid":"standup","token":token}),
    )
    .await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["ok"]["uid"], "bot", "{r}");

    // Usage as JSON and as a table.
    let (st, b) = http(&base, "GET", &format!("/admin/usage?cid={cid}"), auth, None).await;
    assert_eq!(st, 200);
    assert_eq!(json_body(&b)["cid"], cid.as_str());
    let (_, b) = http(
        &base,
        "GET",
        &format!("/admin/usage?cid={cid}&format=table"),
        auth,
        None,
    )
    .await;
    assert!(b.contains("part-min") && b.contains("total"), "{b}");

    // Revocation.
    let (st, b) = http(
        &base,
        "POST",
        &format!("/admin/keys/{key_id}/revoke"),
        auth,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert!(json_body(&b)["revoked_at"].is_i64());
    let (st, _) = http(
        &base,
        "POST",
        "/admin/tokens",
        auth,
        Some(json!({"key": key_id, "sid": "standup"})),
    )
    .await;
    assert_eq!(st, 400);
}
