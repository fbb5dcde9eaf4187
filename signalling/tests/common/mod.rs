//! A signalling server on 127.0.0.1 with a fresh account database, and a websocket client
//! that can claim any Origin.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use relay::{Relay, RelayConfig};
use serde_json::{json, Value};
use signalling::limits::JoinLimits;
use signalling::store::{KeyRecord, Store};
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The admin API's bearer secret in tests.
pub const ADMIN_SECRET: &str = "test-admin-secret";

pub struct Server {
    pub relay: Relay,
    pub http: String,
    pub url: String,
    pub store: Arc<Store>,
    /// A key of client "test" allowed on http(s)://127.0.0.1 (any port).
    pub key: KeyRecord,
}

pub async fn server(name: &str, limits: JoinLimits) -> Server {
    server_with_relay(
        name,
        limits,
        RelayConfig {
            cores: 1,
            pin: false,
            ..Default::default()
        },
    )
    .await
}

/// [`server`] in front of a relay configured as given.
pub async fn server_with_relay(name: &str, limits: JoinLimits, relay: RelayConfig) -> Server {
    let dir = std::env::temp_dir().join(format!("webrtcai-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(Store::open(dir.join("accounts.db")).unwrap());
    let client = store.create_client("test").unwrap();
    let key = store
        .create_key(&client.cid, &["127.0.0.1".into()], false)
        .unwrap();
    let mut relay = Relay::start(relay).unwrap();
    let events = relay.take_events().unwrap();
    let hub = signalling::start_hub(
        signalling::relay_link::RelayLink::Local(relay.handle()),
        events,
        store.clone(),
        limits,
        Duration::from_secs(1),
        true,
        None,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin = signalling::admin::Admin {
        store: store.clone(),
        secret: Some(ADMIN_SECRET.into()),
        hub: Some(hub.clone()),
        recordings_dir: relay.handle().recordings_dir().map(|d| d.to_path_buf()),
        edge: None,
        drain: None,
    };
    tokio::spawn(signalling::http::serve(
        listener,
        hub,
        admin,
        std::future::pending(),
    ));
    Server {
        relay,
        http: format!("http://{addr}"),
        url: format!("ws://{addr}/ws"),
        store,
        key,
    }
}

/// A websocket whose upgrade carries `origin` (None: no Origin header, like a script).
pub async fn connect_from(url: &str, origin: Option<&str>) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// A websocket from a page on http://127.0.0.1:3000.
pub async fn connect(url: &str) -> Ws {
    connect_from(url, Some("http://127.0.0.1:3000")).await
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Next JSON message.
pub async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// The next reply (and the offers and events before it).
pub async fn reply(ws: &mut Ws) -> (Value, Vec<Value>) {
    let mut other = Vec::new();
    loop {
        let v = next(ws).await;
        if v["type"] == "reply" {
            return (v, other);
        }
        other.push(v);
    }
}

/// Join with a key; panics unless it succeeds.
pub async fn join(ws: &mut Ws, key: &str, sid: &str, name: &str) -> Value {
    send(
        ws,
        json!({"type":"join","id":1,"v":1,"sid":sid,"name":name,"key":key}),
    )
    .await;
    let (r, _) = reply(ws).await;
    assert!(r["ok"]["uid"].is_string(), "{r}");
    r["ok"].clone()
}
