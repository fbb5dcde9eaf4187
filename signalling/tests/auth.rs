//! Every refusal of a join over the real websocket, with real Origin headers and real tokens;
//! token lifecycle; revocation while a session runs; grants; rate limits.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{connect, connect_from, join, reply, send, server, Ws};
use serde_json::{json, Value};
use signalling::auth::{mint, Claims, Grants};
use signalling::limits::JoinLimits;

async fn try_join(ws: &mut Ws, body: Value) -> Value {
    let mut msg = json!({"type":"join","id":1,"v":1,"sid":"room"});
    for (k, v) in body.as_object().unwrap() {
        msg[k] = v.clone();
    }
    send(ws, msg).await;
    reply(ws).await.0
}

fn refusal(r: &Value) -> (String, String) {
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    (
        r["error"]["code"].as_str().unwrap().to_owned(),
        r["error"]["reason"].as_str().unwrap().to_owned(),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_joins_check_the_origin() {
    let srv = server("auth-origin", Default::default()).await;
    let key = srv.key.info.key_id.clone();

    // Allowed page.
    let mut ok = connect(&srv.url).await;
    join(&mut ok, &key, "room", "a").await;

    for (origin, why) in [
        (None, "no Origin header"),
        (
            Some("https://evil.example"),
            "https://evil.example is not an allowed domain",
        ),
        (Some("http://localhost:3000"), "not an allowed domain"),
        (
            Some("http://127.0.0.1.evil.example"),
            "not an allowed domain",
        ),
        (Some("null"), "not an allowed domain"),
        (Some("file://127.0.0.1"), "not an allowed domain"),
    ] {
        let mut ws = connect_from(&srv.url, origin).await;
        let r = try_join(&mut ws, json!({"key": key})).await;
        let (_, reason) = refusal(&r);
        assert!(reason.contains(why), "{origin:?}: {reason}");
        // The connection stays usable: a second try with a token works from anywhere.
    }

    let mut ws = connect(&srv.url).await;
    let r = try_join(&mut ws, json!({"key": "wk_does_not_exist"})).await;
    assert!(refusal(&r).1.contains("unknown key"));
    let r = try_join(&mut ws, json!({})).await;
    assert!(refusal(&r).1.contains("key or a token"));

    // Revocation takes effect at once, also for new joins into the running session.
    srv.store.revoke_key(&key).unwrap();
    let mut late = connect(&srv.url).await;
    let r = try_join(&mut late, json!({"key": key})).await;
    assert!(refusal(&r).1.contains("revoked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_lifecycle_and_grants() {
    let srv = server("auth-token", Default::default()).await;
    let key = &srv.key;
    let claims = |sid: &str, grants: &str, exp: u64| Claims {
        cid: key.info.cid.clone(),
        sid: sid.into(),
        uid: Some("viewer-1".into()),
        name: Some("Viewer".into()),
        grants: Grants::parse(grants).unwrap(),
        exp,
        nbf: None,
        region: None,
    };
    let tok = |c: &Claims| mint(&key.info.key_id, &key.secret, c).unwrap();

    // A subscribe-only token works from a script without an Origin, with its uid and name.
    let viewer_token = tok(&claims("room", "subscribe", now() + 3600));
    let mut viewer = connect_from(&srv.url, None).await;
    let r = try_join(&mut viewer, json!({"token": viewer_token})).await;
    assert_eq!(r["ok"]["uid"], "viewer-1", "{r}");
    // …but may not publish.
    send(
        &mut viewer,
        json!({"type":"publish","id":2,"source":"webcam","video":true}),
    )
    .await;
    let (r, _) = reply(&mut viewer).await;
    assert_eq!(r["error"]["code"], "forbidden");
    assert!(r["error"]["reason"].as_str().unwrap().contains("publish"));

    // The same uid cannot join twice.
    let mut twin = connect_from(&srv.url, None).await;
    let r = try_join(&mut twin, json!({"token": viewer_token})).await;
    assert_eq!(r["error"]["code"], "already_joined");

    // Refusals, each with its reason.
    let cases = [
        (
            tok(&claims("other-room", "publish", now() + 3600)),
            "not room",
        ),
        (tok(&claims("room", "publish", now() - 120)), "expired"),
        (
            mint(
                &key.info.key_id,
                "sk_wrong",
                &claims("room", "publish", now() + 3600),
            )
            .unwrap(),
            "bad signature",
        ),
        ("not.a.token".to_owned(), "invalid token"),
    ];
    for (token, why) in cases {
        let mut ws = connect_from(&srv.url, None).await;
        let r = try_join(&mut ws, json!({"token": token})).await;
        assert!(refusal(&r).1.contains(why), "{why}: {r}");
    }

    // A publisher token from a script (a server-side participant).
    let mut ws = connect_from(&srv.url, None).await;
    let mut c = claims("room", "publish,subscribe", now() + 60);
    c.uid = Some("bot".into());
    assert!(try_join(&mut ws, json!({"token": tok(&c)})).await["ok"].is_object());
    // Revoking the signing key refuses its tokens at once.
    srv.store.revoke_key(&key.info.key_id).unwrap();
    let mut ws = connect_from(&srv.url, None).await;
    let mut c = claims("room", "publish", now() + 3600);
    c.uid = Some("after-revoke".into());
    let r = try_join(&mut ws, json!({"token": tok(&c)})).await;
    assert!(refusal(&r).1.contains("revoked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_attempts_are_rate_limited() {
    let srv = server(
        "auth-limits",
        JoinLimits {
            per_key_per_minute: 1000,
            per_address_per_minute: 3,
        },
    )
    .await;
    let key = srv.key.info.key_id.clone();
    for i in 0..3 {
        let mut ws = connect(&srv.url).await;
        join(&mut ws, &key, "room", &format!("p{i}")).await;
    }
    let mut ws = connect(&srv.url).await;
    let r = try_join(&mut ws, json!({"key": key})).await;
    assert_eq!(r["error"]["code"], "rate_limited");
    assert!(r["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("per minute"));
}

/// One tenant using up its joins, by key or by token, and a flood of made-up keys, leave
/// another tenant's joins alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_per_tenant() {
    let srv = server(
        "auth-tenants",
        JoinLimits {
            per_key_per_minute: 3,
            per_address_per_minute: 1000,
        },
    )
    .await;
    let other = srv.store.create_client("other").unwrap();
    let theirs = srv
        .store
        .create_key(&other.cid, &["127.0.0.1".into()], false)
        .unwrap();
    let token = |key: &signalling::store::KeyRecord, uid: &str| {
        let c = Claims {
            cid: key.info.cid.clone(),
            sid: "room".into(),
            uid: Some(uid.into()),
            name: None,
            grants: Grants::parse("publish,subscribe").unwrap(),
            exp: now() + 60,
            nbf: None,
            region: None,
        };
        mint(&key.info.key_id, &key.secret, &c).unwrap()
    };
    // Made-up keys count against nothing but the address.
    for i in 0..20 {
        let mut ws = connect(&srv.url).await;
        let r = try_join(&mut ws, json!({"key": format!("wk_made_up_{i}")})).await;
        assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    }
    // The first tenant uses up its key's joins with tokens.
    for i in 0..3 {
        let mut ws = connect_from(&srv.url, None).await;
        let r = try_join(&mut ws, json!({"token": token(&srv.key, &format!("a{i}"))})).await;
        assert!(r["ok"].is_object(), "{r}");
    }
    let mut ws = connect_from(&srv.url, None).await;
    let r = try_join(&mut ws, json!({"token": token(&srv.key, "a-late")})).await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    let mut ws = connect(&srv.url).await;
    let r = try_join(&mut ws, json!({"key": srv.key.info.key_id})).await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    // The other tenant joins, by token and by key.
    let mut ws = connect_from(&srv.url, None).await;
    let r = try_join(&mut ws, json!({"token": token(&theirs, "b0")})).await;
    assert!(r["ok"].is_object(), "{r}");
    let mut ws = connect(&srv.url).await;
    let r = try_join(&mut ws, json!({"key": theirs.info.key_id})).await;
    assert!(r["ok"].is_object(), "{r}");
    // A key id of 64 KiB is refused before anything is kept for it.
    let mut ws = connect(&srv.url).await;
    let r = try_join(&mut ws, json!({"key": "k".repeat(60_000)})).await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_needs_the_key_permission() {
    let srv = server("auth-recording", Default::default()).await;
    // The test key was created without recording.
    let mut ws = connect(&srv.url).await;
    join(&mut ws, &srv.key.info.key_id, "room", "a").await;
    send(&mut ws, json!({"type":"record","id":5,"enable":true})).await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    assert!(r["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("recording is not permitted"));

    // A key with recording passes the permission check.
    let with = srv
        .store
        .create_key(&srv.key.info.cid, &["127.0.0.1".into()], true)
        .unwrap();
    let mut ws = connect(&srv.url).await;
    join(&mut ws, &with.info.key_id, "room", "b").await;
    send(&mut ws, json!({"type":"record","id":6,"enable":true})).await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["error"]["code"], "recording_unavailable", "{r}");

    // A token's record grant is capped by its key: without the key's permission it is refused.
    let c = Claims {
        cid: srv.key.info.cid.clone(),
        sid: "room".into(),
        uid: Some("rec".into()),
        name: None,
        grants: Grants::parse("subscribe,record").unwrap(),
        exp: now() + 60,
        nbf: None,
        region: None,
    };
    let mut ws = connect_from(&srv.url, None).await;
    let token = mint(&srv.key.info.key_id, &srv.key.secret, &c).unwrap();
    assert!(try_join(&mut ws, json!({"token": token})).await["ok"].is_object());
    send(&mut ws, json!({"type":"record","id":7,"enable":true})).await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["error"]["code"], "forbidden");
}
