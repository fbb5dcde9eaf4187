//! Bad input over a real websocket: every bad message gets an error reply with a reason, the
//! connection carries on, and other participants notice nothing.

mod common;

use std::time::Duration;

use common::{connect, join, next, reply, send, server};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_reasons_and_change_nothing() {
    let srv = server("bad-input", Default::default()).await;
    let (url, key) = (srv.url.clone(), srv.key.info.key_id.clone());
    let mut bystander = connect(&url).await;
    join(&mut bystander, &key, "s", "bystander").await;
    let mut ws = connect(&url).await;

    // Before joining.
    send(&mut ws, json!({"type":"subscribe","id":9,"feed_id":"x"})).await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["id"], 9);
    assert_eq!(r["error"]["code"], "not_joined");

    send(
        &mut ws,
        json!({"type":"join","id":2,"v":99,"sid":"s","key":key}),
    )
    .await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["error"]["code"], "unsupported_version");

    let me = join(&mut ws, &key, "s", "tester").await;
    let (ev, _) = (next(&mut bystander).await, ());
    assert_eq!(ev["event"], "participant-joined");

    // Not JSON, unknown type, missing field, binary, oversized.
    ws.send(Message::Text("{not json".into())).await.unwrap();
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["id"], Value::Null);
    assert_eq!(r["error"]["code"], "invalid_message");
    assert!(!r["error"]["reason"].as_str().unwrap().is_empty());

    send(&mut ws, json!({"type":"teleport","id":3})).await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(
        (r["id"].as_u64(), r["error"]["code"].as_str()),
        (Some(3), Some("invalid_message"))
    );
    assert!(r["error"]["reason"].as_str().unwrap().contains("teleport"));

    send(&mut ws, json!({"type":"subscribe","id":4})).await;
    let (r, _) = reply(&mut ws).await;
    assert!(r["error"]["reason"].as_str().unwrap().contains("feed_id"));

    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["error"]["code"], "invalid_message");

    let big = json!({"type":"subscribe","id":5,"feed_id":"x".repeat(100_000)});
    send(&mut ws, big).await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["error"]["code"], "message_too_large");

    // A feed that does not exist, joining twice.
    send(
        &mut ws,
        json!({"type":"subscribe","id":6,"feed_id":"f-nope"}),
    )
    .await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(
        (r["id"].as_u64(), r["error"]["code"].as_str()),
        (Some(6), Some("no_such_feed"))
    );
    // A view of what is not subscribed to, and a size without both sides or out of range.
    send(
        &mut ws,
        json!({"type":"set_view","id":11,"feed_id":"f-nope","hidden":true}),
    )
    .await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(
        (r["id"].as_u64(), r["error"]["code"].as_str()),
        (Some(11), Some("subscription_state"))
    );
    for (id, bad) in [
        (12, json!({"width": 320})),
        (13, json!({"width": 0, "height": 180})),
        (14, json!({"width": 320, "height": 100_000})),
    ] {
        let mut m = json!({"type":"set_view","id":id,"feed_id":"f-nope"});
        m.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        send(&mut ws, m).await;
        let (r, _) = reply(&mut ws).await;
        assert_eq!(
            (r["id"].as_u64(), r["error"]["code"].as_str()),
            (Some(id), Some("invalid_message")),
            "{r}"
        );
    }
    send(&mut ws, json!({"type":"join","id":7,"v":1,"sid":"s"})).await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["error"]["code"], "already_joined");

    // Publish, then answer its offer badly in every way.
    send(
        &mut ws,
        json!({"type":"publish","id":8,"source":"webcam","audio":true,"video":true}),
    )
    .await;
    let (r, _) = reply(&mut ws).await;
    let feed_id = r["ok"]["feed_id"].as_str().unwrap().to_owned();
    let offer = next(&mut ws).await;
    assert_eq!(offer["type"], "offer");
    let offer_id = offer["offer_id"].as_u64().unwrap();
    let sdp = offer["sdp"].as_str().unwrap();
    assert!(
        sdp.contains("a=ice-lite") && sdp.contains("a=group:BUNDLE 0 1"),
        "{sdp}"
    );
    let tr = &offer["transceivers"];
    assert_eq!(tr[0]["feed_id"], feed_id.as_str());

    for (i, (bad, why)) in [
        ("garbage".to_owned(), "SDP"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=setup:passive\r\na=ice-ufrag:x\r\na=fingerprint:sha-256 AA\r\n".to_owned(), "DTLS client"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=ice-ufrag:x\r\n".to_owned(), "fingerprint"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=ice-ufrag:x\r\na=fingerprint:sha-256 AA\r\n".to_owned(), "mid 1"),
        (format!("v=0\r\n{}", "a=x\r\n".repeat(20_000)), "limited"),
    ]
    .into_iter()
    .enumerate()
    {
        send(&mut ws, json!({"type":"answer","id":100 + i,"offer_id":offer_id,"sdp":bad})).await;
        let (r, _) = reply(&mut ws).await;
        assert_eq!(r["id"], 100 + i);
        let code = r["error"]["code"].as_str().unwrap();
        assert!(code == "invalid_sdp" || code == "message_too_large", "{r}");
        assert!(r["error"]["reason"].as_str().unwrap().contains(why), "{r} should mention {why}");
    }
    send(
        &mut ws,
        json!({"type":"answer","id":200,"offer_id":offer_id + 5,"sdp":"v=0"}),
    )
    .await;
    let (r, _) = reply(&mut ws).await;
    assert!(r["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("outstanding"));

    // The connection still works, and the bystander saw only the join and, now, the leave.
    send(&mut ws, json!({"type":"leave","id":300})).await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["ok"], json!({}));
    let ev = next(&mut bystander).await;
    assert_eq!(ev["event"], "participant-left");
    assert_eq!(ev["uid"], me["uid"]);

    // A frame beyond the websocket limit closes only that connection.
    let mut rude = connect(&url).await;
    let _ = rude.send(Message::Text("x".repeat(2 << 20).into())).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rude.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok());
    send(
        &mut bystander,
        json!({"type":"subscribe","id":2,"feed_id":"f-none"}),
    )
    .await;
    let (r, _) = reply(&mut bystander).await;
    assert_eq!(r["error"]["code"], "no_such_feed");
}

/// A refused answer must not leave its offer blocking every later one: the participant that
/// answered badly publishes again and gets an offer for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_answer_does_not_stall_negotiation() {
    let srv = server("refused-answer", Default::default()).await;
    let (url, key) = (srv.url.clone(), srv.key.info.key_id.clone());
    let mut ws = connect(&url).await;
    join(&mut ws, &key, "s", "tester").await;

    send(
        &mut ws,
        json!({"type":"publish","id":2,"source":"webcam","audio":false,"video":true}),
    )
    .await;
    let (r, _) = reply(&mut ws).await;
    let first = r["ok"]["feed_id"].as_str().unwrap().to_owned();
    let offer = next(&mut ws).await;
    assert_eq!(offer["type"], "offer");
    let offer_id = offer["offer_id"].as_u64().unwrap();
    send(
        &mut ws,
        json!({"type":"answer","id":3,"offer_id":offer_id,"sdp":"garbage"}),
    )
    .await;
    let (r, _) = reply(&mut ws).await;
    assert_eq!(r["error"]["code"], "invalid_sdp", "{r}");

    send(
        &mut ws,
        json!({"type":"publish","id":4,"source":"screen","audio":false,"video":true}),
    )
    .await;
    let (r, _) = reply(&mut ws).await;
    let second = r["ok"]["feed_id"].as_str().unwrap().to_owned();
    let offer = next(&mut ws).await;
    assert_eq!(offer["type"], "offer", "{offer}");
    assert!(offer["offer_id"].as_u64().unwrap() > offer_id, "{offer}");
    // The new offer carries the refused one's change too, so nothing is lost.
    let feeds: Vec<&str> = offer["transceivers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["feed_id"].as_str())
        .collect();
    assert!(feeds.contains(&first.as_str()), "{offer}");
    assert!(feeds.contains(&second.as_str()), "{offer}");
    // The superseded offer can no longer be answered.
    send(
        &mut ws,
        json!({"type":"answer","id":5,"offer_id":offer_id,"sdp":"garbage"}),
    )
    .await;
    let (r, _) = reply(&mut ws).await;
    assert!(
        r["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("not the outstanding offer"),
        "{r}"
    );
}

/// A participant that leaves is sent no offer for its own feeds going away: it is leaving,
/// and a peer connection that applies an offer with every section closed (aiortc) refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_participant_is_sent_no_offer() {
    let srv = server("leave-offer", Default::default()).await;
    let mut ws = connect(&srv.url).await;
    join(&mut ws, &srv.key.info.key_id, "s", "leaver").await;
    send(
        &mut ws,
        json!({"type":"publish","id":2,"source":"webcam","audio":true,"video":true}),
    )
    .await;
    let _ = reply(&mut ws).await;
    let offer = next(&mut ws).await;
    let offer_id = offer["offer_id"].as_u64().unwrap();
    // A refused answer leaves its offer no longer outstanding: the next change would be offered.
    send(
        &mut ws,
        json!({"type":"answer","id":3,"offer_id":offer_id,"sdp":"garbage"}),
    )
    .await;
    let _ = reply(&mut ws).await;
    send(&mut ws, json!({"type":"leave","id":4})).await;
    let (r, before) = reply(&mut ws).await;
    assert_eq!(r["id"], 4, "{r}");
    assert!(
        before.iter().all(|m| m["type"] != "offer"),
        "an offer to the leaving participant: {before:?}"
    );
}
