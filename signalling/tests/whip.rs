//! A WHIP encoder whose media never connects (its client took the answer and went, or nothing
//! gets through) does not stay in the session: it goes once its time to connect is up, and
//! the relay forgets it.

mod common;

use std::time::{Duration, Instant};

use signalling::auth::{mint, Claims, Grants};
use signalling::limits::JoinLimits;

/// An encoder's offer (OBS's shape): opus and H.264, send-only.
const OFFER: &str = "v=0\r\no=rtc 1 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    a=group:BUNDLE 0 1\r\na=fingerprint:sha-256 AA:BB:CC\r\n\
    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
    a=ssrc:1111 cname:enc\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
    a=setup:actpass\r\na=ice-ufrag:encU\r\na=ice-pwd:encoderpasswordencoderpa\r\n\
    m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
    a=ssrc:2222 cname:enc\r\na=rtcp-mux\r\na=rtpmap:96 H264/90000\r\n\
    a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\n\
    a=setup:actpass\r\na=ice-ufrag:encU\r\na=ice-pwd:encoderpasswordencoderpa\r\n";

async fn participants(srv: &common::Server) -> u64 {
    let stats = srv.relay.handle().stats().await.unwrap();
    stats.iter().map(|c| c.participants).sum()
}

#[tokio::test]
async fn an_encoder_that_never_connects_goes_after_its_time_to_connect() {
    let srv = common::server("whip-never", JoinLimits::default()).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = mint(
        &srv.key.info.key_id,
        &srv.key.secret,
        &Claims {
            cid: srv.key.info.cid.clone(),
            sid: "studio".into(),
            uid: Some("obs".into()),
            name: None,
            grants: Grants::parse("publish").unwrap(),
            exp,
            nbf: None,
            region: None,
        },
    )
    .unwrap();
    let url = format!("{}/whip/studio", srv.http);
    let (status, answer) = tokio::task::spawn_blocking(move || {
        let mut r = ureq::post(&url)
            .header("authorization", &format!("Bearer {token}"))
            .header("content-type", "application/sdp")
            .send(OFFER)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(status, 201, "{answer}");
    assert!(answer.contains("a=setup:passive"), "{answer}");
    let answered = Instant::now();
    assert_eq!(participants(&srv).await, 1);
    // Nothing is sent to the relay: no ICE check, no DTLS. The encoder goes once its time
    // to connect is up (and the hub's next tick, once a second, sees it).
    let deadline = answered + signalling::hub::HTTP_CONNECT_TIMEOUT + Duration::from_secs(5);
    loop {
        if participants(&srv).await == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the encoder is still in the session {:?} after its answer",
            answered.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let gone = answered.elapsed();
    println!("an encoder that never connected went {gone:?} after its answer");
    assert!(gone >= signalling::hub::HTTP_CONNECT_TIMEOUT, "{gone:?}");
}
