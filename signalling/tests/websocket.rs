//! What the server does about connections that misbehave or die, each seen from the outside:
//! a close frame with a code and a reason, and nobody else affected.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use signalling::limits::JoinLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The close frame the server sends, or None when the connection ended without one.
async fn close_frame(ws: &mut Ws, within: Duration) -> Option<(u16, String)> {
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    return Some((f.code.into(), f.reason.to_string()))
                }
                Some(Ok(Message::Close(None))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the server closed the connection in time")
}

/// A client that keeps reading, as a browser does (so it answers the server's pings), and
/// hands the messages it reads to the test.
struct Live {
    sink: futures::stream::SplitSink<Ws, Message>,
    messages: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    reader: tokio::task::JoinHandle<()>,
}

impl Live {
    fn new(ws: Ws) -> Live {
        let (sink, mut stream) = ws.split();
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Text(t) = m {
                    let _ = tx.send(serde_json::from_str(&t).unwrap());
                }
            }
        });
        Live {
            sink,
            messages,
            reader,
        }
    }

    /// Close the connection.
    async fn close(mut self) {
        let _ = self.sink.close().await;
        self.reader.abort();
    }

    /// The client still gets a reply at once.
    async fn still_served(&mut self) {
        let asked = Instant::now();
        let ping = json!({"type":"ping","id":77}).to_string();
        self.sink.send(Message::Text(ping.into())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(1), self.messages.recv())
                .await
                .expect("a reply within a second")
                .expect("the connection is open");
            if m["type"] == "reply" {
                assert_eq!(m["ok"], json!({}), "{m}");
                break;
            }
        }
        assert!(asked.elapsed() < Duration::from_secs(1));
    }
}

/// A client that joined `sid` and keeps reading.
async fn live_member(srv: &Server, sid: &str, name: &str) -> Live {
    let mut ws = connect(&srv.url).await;
    join(&mut ws, &srv.key.info.key_id, sid, name).await;
    Live::new(ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_limit_gets_a_close_frame() {
    let srv = server("ws-big", Default::default()).await;
    let mut bystander = live_member(&srv, "s", "b").await;
    let mut rude = connect(&srv.url).await;
    let _ = rude.send(Message::Text("x".repeat(2 << 20).into())).await;
    let (code, reason) = close_frame(&mut rude, Duration::from_secs(5))
        .await
        .expect("a close frame");
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("limited to"), "{reason}");
    bystander.still_served().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_joins_is_closed() {
    let srv = server("ws-idle", Default::default()).await;
    let mut idle = connect(&srv.url).await;
    // Pings are answered before a join, but do not count as one.
    send(&mut idle, json!({"type":"ping","id":1})).await;
    assert_eq!(reply(&mut idle).await.0["ok"], json!({}));
    let started = Instant::now();
    let (code, reason) = close_frame(&mut idle, Duration::from_secs(15))
        .await
        .expect("a close frame");
    assert_eq!((code, reason.as_str()), (1008, "no join within 10 s"));
    assert!(started.elapsed() >= Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let srv = server("ws-cap", Default::default()).await;
    let mut open = Vec::new();
    for _ in 0..signalling::hub::MAX_CONNECTIONS_PER_ADDRESS {
        open.push(Live::new(connect(&srv.url).await));
    }
    let mut one_more = connect(&srv.url).await;
    let (code, reason) = close_frame(&mut one_more, Duration::from_secs(5))
        .await
        .expect("a close frame");
    assert_eq!(code, 1008);
    assert!(
        reason.contains("too many connections from 127.0.0.1"),
        "{reason}"
    );
    // The others are fine; closing one makes room.
    open[0].still_served().await;
    open.pop().unwrap().close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Live::new(connect(&srv.url).await).still_served().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_too_slow_is_closed_not_buffered() {
    let srv = server(
        "ws-slow",
        JoinLimits {
            per_key_per_minute: 1000,
            per_address_per_minute: 1000,
        },
    )
    .await;
    let key = srv.key.info.key_id.clone();
    let mut bystander = live_member(&srv, "s", "b").await;
    let mut slow = connect(&srv.url).await;
    join(&mut slow, &key, "s", "slow").await;
    // Each request earns a ~50 KB error reply (it quotes the feed id); the client reads
    // none of them, so the socket buffers fill and the server's queue after them.
    let long = "f".repeat(50_000);
    let (mut sink, mut stream) = slow.split();
    let writer = tokio::spawn(async move {
        for id in 0..2000u64 {
            let m = json!({"type":"subscribe","id":id,"feed_id":long}).to_string();
            if sink.send(Message::Text(m.into())).await.is_err() {
                break;
            }
        }
        sink
    });
    // The bystander is served all along.
    for _ in 0..5 {
        bystander.still_served().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _sink = writer.await.unwrap();
    // Reading now, the client finds the replies that fitted, then the end.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        let mut replies = 0;
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(_))) => replies += 1,
                Some(Ok(Message::Close(f))) => {
                    return (
                        replies,
                        f.map(|f| (u16::from(f.code), f.reason.to_string())),
                    )
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (replies, None),
            }
        }
    })
    .await
    .expect("the server let the slow reader go");
    assert!(ended.0 < 2000, "{} of 2000 replies queued", ended.0);
    if let Some((code, reason)) = &ended.1 {
        assert_eq!(*code, 1008);
        assert!(reason.contains("too slow"), "{reason}");
    }
    bystander.still_served().await;
}

/// A TCP proxy between a client and the server that can stop forwarding (a network that
/// silently drops everything); says when the server closed its side.
async fn black_hole_proxy(
    server: std::net::SocketAddr,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<Instant>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut_tx, mut cut_rx) = tokio::sync::oneshot::channel::<()>();
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut upstream = tokio::net::TcpStream::connect(server).await.unwrap();
        let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
        let mut cut = false;
        loop {
            tokio::select! {
                _ = &mut cut_rx, if !cut => cut = true,
                n = client.read(&mut a), if !cut => match n {
                    Ok(n) if n > 0 => { let _ = upstream.write_all(&a[..n]).await; }
                    _ => return,
                },
                n = upstream.read(&mut b) => match n {
                    // Held, not forwarded, once cut.
                    Ok(n) if n > 0 => if !cut { let _ = client.write_all(&b[..n]).await; },
                    _ => { let _ = eof_tx.send(Instant::now()); return; }
                },
            }
        }
    });
    (format!("ws://{addr}/ws"), cut_tx, eof_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_noticed_within_seconds() {
    let srv = server("ws-silent", Default::default()).await;
    let server_addr = srv
        .url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .parse()
        .unwrap();
    let (url, cut, eof) = black_hole_proxy(server_addr).await;
    let mut ws = connect(&url).await;
    join(&mut ws, &srv.key.info.key_id, "s", "gone").await;
    // The client keeps its side open (nothing is reset), but nothing gets through any more.
    cut.send(()).unwrap();
    let cut_at = Instant::now();
    let closed_at = tokio::time::timeout(Duration::from_secs(10), eof)
        .await
        .expect("the server dropped the silent connection")
        .unwrap();
    let after = closed_at - cut_at;
    assert!(
        after
            <= signalling::ws::SILENCE_LIMIT
                + signalling::ws::PING_INTERVAL
                + Duration::from_secs(1),
        "{after:?}"
    );
    drop(ws);
}
