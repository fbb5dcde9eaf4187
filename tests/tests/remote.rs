//! The control API over TCP: a remote control plane sets up a call that real peers then use;
//! bad lines get reasons, unauthenticated connections are refused.

use std::time::Duration;

use relay::control::{Event, ParticipantConfig};
use relay::ids::{FeedId, Sid, Uid};
use relay::remote::{self, Client, RemoteError};
use relay::{Control, ControlError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use webrtcai_tests::harness::{video_feed, TestRelay};
use webrtcai_tests::media::{verify, Source};
use webrtcai_tests::peer::{PeerConfig, WirePeer};

const TOKEN: &str = "s3cret-control-token";

async fn start() -> (TestRelay, std::net::SocketAddr) {
    let mut t = TestRelay::start(2, |_| {});
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let events = std::mem::replace(&mut t.events, rx);
    tokio::spawn(remote::serve(
        listener,
        t.handle.clone(),
        events,
        Some(TOKEN.into()),
    ));
    (t, addr)
}

/// Send `lines`, then collect reply lines until `expect` arrived, the server closed, or 10 s
/// passed (the machine may be loaded: replies are awaited, not timed).
async fn raw_exchange(
    addr: std::net::SocketAddr,
    lines: &[&[u8]],
    expect: usize,
) -> Vec<serde_json::Value> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    for l in lines {
        // The server may close early (that is what some cases test): stop writing then.
        if s.write_all(l).await.is_err() || s.write_all(b"\n").await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let mut r = BufReader::new(s).lines();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < expect {
        match tokio::time::timeout_at(deadline, r.next_line()).await {
            Ok(Ok(Some(line))) => out.push(serde_json::from_str(&line).unwrap()),
            _ => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_control_plane_runs_a_call() {
    let (t, addr) = start().await;
    let (client, mut events) = Client::connect(addr, Some(TOKEN.into())).await.unwrap();
    let info = client.info().await.unwrap();
    assert_eq!(info.fingerprint, t.handle.fingerprint());
    assert_eq!(info.cores.len(), 2);

    let sid = Sid::from("remote-room");
    client.create_session(sid.clone(), None).await.unwrap();
    let err = client.create_session(sid.clone(), None).await.unwrap_err();
    assert!(
        matches!(
            err,
            RemoteError::Refused(ControlError::SessionExists { .. })
        ),
        "{err}"
    );

    let mut peers = Vec::new();
    for uid in ["pub", "sub"] {
        let (cert, fp) = WirePeer::certificate();
        let ufrag = WirePeer::random_ufrag();
        let p = client
            .add_participant(
                sid.clone(),
                Uid::from(uid),
                ParticipantConfig {
                    remote_ufrag: Some(ufrag.clone()),
                    remote_fingerprint: Some(fp),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        peers.push(
            WirePeer::connect(&p, ufrag, cert, PeerConfig::default())
                .await
                .unwrap(),
        );
    }
    let mut sub = peers.pop().unwrap();
    let mut publisher = peers.pop().unwrap();
    client
        .publish(sid.clone(), Uid::from("pub"), video_feed("cam", 77))
        .await
        .unwrap();
    let s = client
        .subscribe(
            sid.clone(),
            Uid::from("sub"),
            FeedId::from("cam"),
            Default::default(),
        )
        .await
        .unwrap();
    let mut src = Source::video(77, 1000);
    for _ in 0..30 {
        publisher.send_rtp(&src.next_packet()).await.unwrap();
    }
    for i in 0..30 {
        let p = sub.recv_rtp(Duration::from_secs(5), |_| {}).await.unwrap();
        assert_eq!(p.header.ssrc, s.ssrc.0);
        assert_eq!(verify(&p.payload), Some(i));
    }
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.iter().map(|s| s.rtp_forwarded).sum::<u64>(), 30);

    // Events reached the remote control plane.
    let mut connected = 0;
    let mut started = 0;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        match e {
            Event::ParticipantConnected { .. } => connected += 1,
            Event::FeedStarted { .. } => started += 1,
            _ => {}
        }
    }
    assert_eq!((connected, started), (2, 1));
    client.remove_session(sid.clone()).await.unwrap();
    assert_eq!(
        t.handle
            .stats()
            .await
            .unwrap()
            .iter()
            .map(|s| s.participants)
            .sum::<u64>(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_and_missing_token() {
    let (_t, addr) = start().await;

    // No hello: refused and closed.
    let r = raw_exchange(
        addr,
        &[br#"{"id":5,"op":"info"}"#, br#"{"id":6,"op":"info"}"#],
        2,
    )
    .await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["id"], 5);
    assert_eq!(r[0]["error"]["code"], "unauthorized");

    // Wrong token: same.
    let r = raw_exchange(
        addr,
        &[
            br#"{"id":1,"op":"hello","token":"guess"}"#,
            br#"{"id":2,"op":"info"}"#,
        ],
        2,
    )
    .await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["error"]["code"], "unauthorized");

    // Authenticated: each bad line gets a reason and the connection carries on.
    let hello = format!(r#"{{"id":1,"op":"hello","token":"{TOKEN}"}}"#);
    let r = raw_exchange(
        addr,
        &[
            hello.as_bytes(),
            b"{not json",
            br#"{"id":3,"op":"launch"}"#,
            br#"{"id":4,"op":"subscribe","sid":"nope","uid":"u","feed_id":"f"}"#,
            br#"{"id":5,"op":"info"}"#,
        ],
        5,
    )
    .await;
    let by_id = |id: i64| r.iter().find(|v| v["id"] == id).cloned().unwrap();
    assert!(r
        .iter()
        .any(|v| v["id"].is_null() && v["error"]["code"] == "invalid_request"));
    assert_eq!(by_id(3)["error"]["code"], "invalid_request");
    assert!(by_id(3)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("launch"));
    assert_eq!(by_id(4)["error"]["code"], "no_such_session");
    assert!(by_id(5)["ok"]["fingerprint"].is_string());

    // An endless line is cut off.
    let long = vec![b'x'; remote::MAX_LINE + 10];
    let r = raw_exchange(
        addr,
        &[hello.as_bytes(), &long, br#"{"id":9,"op":"info"}"#],
        3,
    )
    .await;
    assert!(
        r.iter().any(|v| v["error"]["code"] == "line_too_long"),
        "{r:?}"
    );
    assert!(!r.iter().any(|v| v["id"] == 9));
}

/// A participant's whole life through `relay`, in-process or remote alike (one vocabulary,
/// one trait): each step's outcome, with what is random (ICE credentials, SSRCs) left out.
async fn lifecycle<C: Control>(relay: &C, sid: &str) -> Vec<String> {
    use relay::control::View;
    let sid = Sid::from(sid);
    let (pub_, sub) = (Uid::from("pub"), Uid::from("sub"));
    let mut out = Vec::new();
    // Refusals read the same on both paths (the remote one says they were refused).
    let step = |out: &mut Vec<String>, name: &str, r: Result<String, C::Error>| {
        let line = match r {
            Ok(s) => format!("{name}: ok {s}"),
            Err(e) => format!("{name}: {}", e.to_string().trim_start_matches("refused: ")),
        };
        out.push(line);
    };
    let r = relay.create_session(sid.clone(), Some(1)).await;
    step(&mut out, "create", r.map(|p| format!("core {}", p.core)));
    for uid in [&pub_, &sub] {
        let r = relay
            .add_participant(sid.clone(), uid.clone(), ParticipantConfig::default())
            .await;
        step(
            &mut out,
            "add",
            r.map(|p| format!("pwd {}", p.ice_pwd.len())),
        );
    }
    let r = relay.restart_ice(sid.clone(), sub.clone()).await;
    step(
        &mut out,
        "restart_ice",
        r.map(|p| format!("ufrag {}", p.ice_ufrag.len())),
    );
    let config = ParticipantConfig {
        remote_ufrag: Some(WirePeer::random_ufrag()),
        ..Default::default()
    };
    let r = relay
        .update_participant(sid.clone(), sub.clone(), config)
        .await;
    step(&mut out, "update", r.map(|()| String::new()));
    let r = relay
        .publish(sid.clone(), pub_.clone(), video_feed("cam", 5))
        .await;
    step(&mut out, "publish", r.map(|()| String::new()));
    let cam = FeedId::from("cam");
    let r = relay
        .subscribe(sid.clone(), sub.clone(), cam.clone(), Default::default())
        .await;
    step(
        &mut out,
        "subscribe",
        r.map(|s| format!("{} {:?}", s.feed_id, s.kind)),
    );
    let r = relay
        .subscribe(sid.clone(), sub.clone(), cam.clone(), Default::default())
        .await;
    step(&mut out, "subscribe again", r.map(|_| String::new()));
    let r = relay
        .update_subscription(sid.clone(), sub.clone(), cam.clone(), Default::default())
        .await;
    step(&mut out, "update_subscription", r.map(|()| String::new()));
    let view = View {
        size: Some((320, 180)),
        ..Default::default()
    };
    let r = relay
        .set_view(sid.clone(), sub.clone(), cam.clone(), view)
        .await;
    step(&mut out, "set_view", r.map(|()| String::new()));
    let r = relay.quality(sid.clone(), sub.clone()).await;
    step(&mut out, "quality", r.map(|q| format!("{}", q.is_some())));
    let r = relay.request_keyframe(sid.clone(), cam.clone()).await;
    step(&mut out, "keyframe", r.map(|()| String::new()));
    let r = relay
        .set_speaker_feeds(sid.clone(), vec![cam.clone()])
        .await;
    step(&mut out, "speaker", r.map(|()| String::new()));
    let r = relay.participant_usage(sid.clone(), pub_.clone()).await;
    step(
        &mut out,
        "usage",
        r.map(|u| format!("{:?}", u.map(|u| u.bytes_in))),
    );
    let r = relay.session_usage(sid.clone()).await;
    step(&mut out, "session_usage", r.map(|u| format!("{}", u.len())));
    let r = relay
        .unsubscribe(sid.clone(), sub.clone(), cam.clone())
        .await;
    step(&mut out, "unsubscribe", r.map(|()| String::new()));
    let r = relay
        .unpublish(sid.clone(), pub_.clone(), cam.clone())
        .await;
    step(&mut out, "unpublish", r.map(|()| String::new()));
    let r = relay.remove_participant(sid.clone(), sub.clone()).await;
    step(&mut out, "remove", r.map(|()| String::new()));
    let r = relay.remove_participant(sid.clone(), sub.clone()).await;
    step(&mut out, "remove again", r.map(|()| String::new()));
    let r = relay.remove_session(sid.clone()).await;
    step(&mut out, "remove_session", r.map(|()| String::new()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_path_answers_every_request_as_the_in_process_one() {
    let (t, addr) = start().await;
    let (client, _events) = Client::connect(addr, Some(TOKEN.into())).await.unwrap();
    let local = lifecycle(&t.handle, "parity-local").await;
    let remote = lifecycle(&client, "parity-remote").await;
    let remote: Vec<String> = remote
        .into_iter()
        .map(|l| l.replace("parity-remote", "parity-local"))
        .collect();
    for (l, r) in local.iter().zip(&remote) {
        println!("{l:<60} | {r}");
    }
    assert_eq!(local, remote);
    // The steps did what they say (the vocabulary is not just the same, it works).
    assert!(
        local.contains(&"create: ok core 1".to_string()),
        "{local:?}"
    );
    assert!(
        local
            .iter()
            .any(|l| l.starts_with("subscribe again: participant sub already subscribes")),
        "{local:?}"
    );
    assert!(
        local.contains(&"remove again: no participant sub in session parity-local".to_string()),
        "{local:?}"
    );
    assert!(
        local.iter().any(|l| l.starts_with("restart_ice: ok ufrag")),
        "{local:?}"
    );
}
