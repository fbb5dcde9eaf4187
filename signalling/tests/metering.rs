//! Usage of a participant that the relay drops by itself (here: its DTLS handshake fails) is
//! metered to its last byte: the relay's drop event carries the final counters, because by
//! the time signalling hears of it the relay has forgotten the participant.

mod common;

use std::time::Duration;

use common::*;
use relay::engine::ice_lite::binding_request;
use serde_json::json;

/// `a=<name>:<value>` of the first such line.
fn attribute<'a>(sdp: &'a str, name: &str) -> &'a str {
    sdp.lines()
        .find_map(|l| l.strip_prefix(&format!("a={name}:")))
        .unwrap_or_else(|| panic!("no a={name} in {sdp}"))
        .trim()
}

#[tokio::test]
async fn a_participant_the_relay_dropped_is_metered_to_the_last_byte() {
    let relay = relay::RelayConfig {
        cores: 1,
        pin: false,
        dtls_handshake_timeout: Duration::from_millis(600),
        ..Default::default()
    };
    let srv = server_with_relay("dropped-usage", Default::default(), relay).await;
    let mut ws = connect(&srv.url).await;
    join(&mut ws, &srv.key.info.key_id, "metered", "ada").await;
    send(
        &mut ws,
        json!({"type":"publish","id":2,"source":"webcam","audio":true,"video":false}),
    )
    .await;
    let _ = reply(&mut ws).await;
    let offer = next(&mut ws).await;
    let sdp = offer["sdp"].as_str().unwrap();
    let (ufrag, pwd) = (attribute(sdp, "ice-ufrag"), attribute(sdp, "ice-pwd"));
    // `1 1 udp <priority> <ip> <port> typ host`
    let candidate: Vec<&str> = attribute(sdp, "candidate").split_whitespace().collect();
    let relay_addr: std::net::SocketAddr = format!("{}:{}", candidate[4], candidate[5])
        .parse()
        .unwrap();

    // A connectivity check, the start of a handshake that never finishes, then checks every
    // 10 ms until the relay drops the participant for its handshake timeout and stops
    // answering. Usage is flushed every second, so the last of these bytes come after the
    // last flush before the drop.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut sent, mut received) = (0u64, 0u64);
    let mut buf = [0u8; 1500];
    let hello = [
        22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut checks = 0;
    loop {
        let check = binding_request(&format!("{ufrag}:peer"), pwd, true);
        udp.send_to(&check, relay_addr).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(300), udp.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) if buf[0] < 4 => {
                // Answered, so counted.
                sent += check.len() as u64;
                received += n as u64;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
        if checks == 0 {
            sent += udp.send_to(&hello, relay_addr).await.unwrap() as u64;
        }
        checks += 1;
        assert!(checks < 1000, "the relay never dropped the participant");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The session ends with its only participant; its record is closed with every byte.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let usage = loop {
        let report = srv.store.usage(&srv.key.info.cid, 0, i64::MAX).unwrap();
        if let Some(s) = report.sessions.iter().find(|s| s.ended_at.is_some()) {
            break s.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session did not end: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (usage.bytes_in, usage.bytes_out),
        (sent, received),
        "bytes from and to the dropped participant after {checks} checks"
    );
}
