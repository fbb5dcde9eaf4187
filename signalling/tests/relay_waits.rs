//! One session waiting on a busy relay core holds up only itself: other sessions' requests
//! and new sessions go on, and the waiting session's own requests are answered in order.

mod common;

use std::time::{Duration, Instant};

use common::{connect, join, reply, send, server_with_relay};
use relay::ids::Sid;
use relay::RelayConfig;
use serde_json::json;

/// How long the first session's core is held.
const STALL: Duration = Duration::from_secs(3);
/// Far below the stall, far above a loaded machine's round trip.
const PROMPT: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_core_holds_up_only_its_own_sessions() {
    let srv = server_with_relay(
        "relay-waits",
        Default::default(),
        RelayConfig {
            cores: 2,
            pin: false,
            ..Default::default()
        },
    )
    .await;
    let (url, key, cid) = (
        srv.url.clone(),
        srv.key.info.key_id.clone(),
        srv.key.info.cid.clone(),
    );
    let relay = srv.relay.handle();
    let mut a = connect(&url).await;
    join(&mut a, &key, "a", "alice").await;
    let mut b = connect(&url).await;
    join(&mut b, &key, "b", "bob").await;
    let core_a = relay.cores_of(&Sid::from(format!("{cid}/a").as_str()))[0];
    let core_b = relay.cores_of(&Sid::from(format!("{cid}/b").as_str()))[0];
    assert_ne!(
        core_a, core_b,
        "placement spreads two sessions over two cores"
    );

    let stall = {
        let relay = relay.clone();
        tokio::spawn(async move { relay.stall_core(core_a, STALL).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stalled_at = Instant::now();

    // Session a asks for something its core must do, then for something the hub answers alone.
    send(&mut a, json!({"type":"restart_ice","id":2})).await;
    send(
        &mut a,
        json!({"type":"unsubscribe","id":3,"feed_id":"f-none"}),
    )
    .await;

    // Session b, on the other core, is answered at once.
    let asked = Instant::now();
    send(&mut b, json!({"type":"restart_ice","id":2})).await;
    let (r, _) = reply(&mut b).await;
    let waited = asked.elapsed();
    assert_eq!(r["id"], 2);
    assert!(r["ok"].is_object(), "{r}");
    assert!(
        waited < PROMPT,
        "session b waited {waited:?} behind session a's busy core"
    );

    // So is a new session: placement passes over the core that does not answer.
    let mut c = connect(&url).await;
    let asked = Instant::now();
    join(&mut c, &key, "c", "carol").await;
    let waited = asked.elapsed();
    assert!(
        waited < PROMPT,
        "a new session waited {waited:?} for a busy core"
    );
    assert_eq!(
        relay.cores_of(&Sid::from(format!("{cid}/c").as_str())),
        vec![core_b],
        "the new session is not placed on the busy core"
    );

    // Session a's requests are answered once its core is free, in the order sent.
    let (first, _) = reply(&mut a).await;
    assert!(
        stalled_at.elapsed() >= STALL - Duration::from_millis(200),
        "restart_ice was answered while its core was held: {first}"
    );
    assert_eq!(first["id"], 2);
    assert!(first["ok"].is_object(), "{first}");
    let (second, _) = reply(&mut a).await;
    assert_eq!(second["id"], 3);
    assert_eq!(second["error"]["code"], "subscription_state");
    stall.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_on_a_busy_core_are_bounded() {
    let srv = server_with_relay(
        "relay-waits-bounded",
        Default::default(),
        RelayConfig {
            cores: 1,
            pin: false,
            ..Default::default()
        },
    )
    .await;
    let (url, key) = (srv.url.clone(), srv.key.info.key_id.clone());
    let relay = srv.relay.handle();
    let mut a = connect(&url).await;
    join(&mut a, &key, "a", "alice").await;
    let stall = {
        let relay = relay.clone();
        tokio::spawn(async move { relay.stall_core(0, STALL).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    // One request the core must answer, then more than may wait behind it.
    send(&mut a, json!({"type":"restart_ice","id":2})).await;
    let extra = signalling::hub::MAX_WAITING + 100;
    for i in 0..extra as u64 {
        send(
            &mut a,
            json!({"type":"unsubscribe","id":10 + i,"feed_id":"f-none"}),
        )
        .await;
    }
    let mut refused = 0;
    let mut answered = Vec::new();
    while answered.len() + refused < extra + 1 {
        let (r, _) = reply(&mut a).await;
        if r["error"]["code"] == "rate_limited" {
            assert!(
                r["error"]["reason"].as_str().unwrap().contains("waiting"),
                "{r}"
            );
            refused += 1;
        } else {
            answered.push(r["id"].as_u64().unwrap());
        }
    }
    assert_eq!(refused, 100, "what did not fit behind the busy core");
    assert_eq!(answered[0], 2);
    assert!(
        answered.windows(2).all(|w| w[0] < w[1]),
        "the rest are answered in the order sent"
    );
    stall.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_waiting_on_a_busy_core_is_answered() {
    let srv = server_with_relay(
        "relay-waits-leave",
        Default::default(),
        RelayConfig {
            cores: 1,
            pin: false,
            ..Default::default()
        },
    )
    .await;
    let (url, key) = (srv.url.clone(), srv.key.info.key_id.clone());
    let relay = srv.relay.handle();
    let mut a = connect(&url).await;
    join(&mut a, &key, "a", "alice").await;
    // Older than the time a connection has to join, so that the hub's housekeeping would
    // close it as idle once it has left.
    let deadline = Instant::now() + signalling::hub::JOIN_TIMEOUT + Duration::from_millis(500);
    while Instant::now() < deadline {
        send(&mut a, json!({"type":"ping","id":5})).await;
        let (r, _) = reply(&mut a).await;
        assert_eq!(r["id"], 5);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stall = {
        let relay = relay.clone();
        tokio::spawn(async move { relay.stall_core(0, STALL).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(&mut a, json!({"type":"leave","id":6})).await;
    let (r, _) = reply(&mut a).await;
    assert_eq!(r["id"], 6);
    assert!(r["ok"].is_object(), "{r}");
    stall.await.unwrap().unwrap();
}
