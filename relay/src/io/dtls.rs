//! DTLS as an actor beside the worker.
//!
//! The webrtc-rs DTLS implementation is async and owns its read loop, so each handshake runs as
//! a task on the core's runtime over a [`ChannelConn`]: records the worker routes to the
//! participant arrive through a bounded queue, and records DTLS writes leave through the core's
//! DTLS egress queue, which the shell sends to the participant's *current* ICE address (so a
//! migration during the handshake is followed). Nothing here blocks the ring thread.
//!
//! The task lives only as long as the handshake: what the association needs afterwards (its
//! record keys and the relay's last flight, which [`ChannelConn`] keeps a copy of) goes to a
//! sans-IO [`RecordLayer`](crate::engine::dtls_record::RecordLayer) and the library's
//! connection, with its tasks and buffers, is dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use dtls::config::{ClientAuthType, Config, ExtendedMasterSecretType};
use dtls::crypto::Certificate;
use dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Mutex};
use webrtc_util::conn::Conn;
use webrtc_util::KeyingMaterialExporter;

use crate::engine::dtls_record::{self, Established, CIPHER_SUITE};
use crate::engine::srtp::{SrtpKeys, SrtpProfile, EXPORTER_LABEL};
use crate::ids::ParticipantKey;

/// `sha-256 AB:CD:…` fingerprint of a DER certificate, as SDP's `a=fingerprint` writes it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    format!("sha-256 {}", hex.join(":"))
}

/// Whether a fingerprint string (any case, with or without the `sha-256 ` prefix) names `der`.
pub fn fingerprint_matches(expected: &str, der: &[u8]) -> bool {
    let ours = fingerprint(der);
    let want = expected.trim();
    let want = want
        .strip_prefix("sha-256 ")
        .or_else(|| want.strip_prefix("SHA-256 "))
        .unwrap_or(want);
    ours["sha-256 ".len()..].eq_ignore_ascii_case(want)
}

/// A fresh ECDSA P-256 certificate (one per relay process).
pub fn generate_certificate() -> Result<Certificate, String> {
    Certificate::generate_self_signed_with_alg(
        vec!["webrtc.ai".to_owned()],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    )
    .map_err(|e| e.to_string())
}

fn profile_of(p: SrtpProtectionProfile) -> Option<SrtpProfile> {
    match p {
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Some(SrtpProfile::AeadAes128Gcm),
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
            Some(SrtpProfile::Aes128CmHmacSha1_80)
        }
        _ => None,
    }
}

fn profiles_of(preference: &[SrtpProfile]) -> Vec<SrtpProtectionProfile> {
    preference
        .iter()
        .map(|p| match p {
            SrtpProfile::AeadAes128Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProfile::Aes128CmHmacSha1_80 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        })
        .collect()
}

type VerifyFn = Arc<
    dyn Fn(&[Vec<u8>], &[rustls_pki_types::CertificateDer<'static>]) -> Result<(), dtls::Error>
        + Send
        + Sync,
>;

/// DTLS configuration for either side of a WebRTC association: extended master secret
/// required, certificates checked against the SDP fingerprint (not a CA), the given SRTP
/// profiles in order of preference, and the one cipher suite the record layer after the
/// handshake implements.
pub fn config(
    certificate: &Certificate,
    profiles: &[SrtpProfile],
    remote_fingerprint: Option<String>,
) -> Config {
    let verify = remote_fingerprint.map(|expected| {
        let f: VerifyFn = Arc::new(move |certs: &[Vec<u8>], _| match certs.first() {
            Some(der) if fingerprint_matches(&expected, der) => Ok(()),
            _ => Err(dtls::Error::Other(
                "certificate does not match the fingerprint".into(),
            )),
        });
        f
    });
    Config {
        certificates: vec![certificate.clone()],
        cipher_suites: vec![CIPHER_SUITE],
        srtp_protection_profiles: profiles_of(profiles),
        extended_master_secret: ExtendedMasterSecretType::Require,
        client_auth: ClientAuthType::RequireAnyClientCert,
        // WebRTC certificates are self-signed; identity is the fingerprint checked above.
        insecure_skip_verify: true,
        verify_peer_certificate: verify,
        ..Default::default()
    }
}

/// What a finished handshake of the relay's (the server's) leaves: the SRTP keys it exports
/// (RFC 5764 §4.2) and what the record layer goes on with. `channel` is the connection the
/// handshake ran over.
pub async fn finish(
    conn: &dtls::conn::DTLSConn,
    channel: &ChannelConn,
) -> Result<(SrtpKeys, Established), String> {
    let profile = profile_of(conn.selected_srtpprotection_profile())
        .ok_or_else(|| "no SRTP profile negotiated".to_owned())?;
    let state = conn.connection_state().await;
    let material = state
        .export_keying_material(EXPORTER_LABEL, &[], profile.keying_material_len())
        .await
        .map_err(|e| e.to_string())?;
    let keys = SrtpKeys::from_keying_material(profile, &material, false)
        .ok_or_else(|| "short keying material".to_owned())?;
    // The record layer implements one suite, the only one offered; the library shows which
    // it chose only inside, so its ServerHello is read.
    let suite = channel.suite();
    if suite != Some(CIPHER_SUITE as u16) {
        return Err(format!(
            "cipher suite {suite:04x?} negotiated; the record layer takes only {CIPHER_SUITE}"
        ));
    }
    let secrets = state.key_log_data().map_err(|e| e.to_string())?;
    let random = |r: Vec<u8>| <[u8; 32]>::try_from(r).map_err(|_| "bad random".to_owned());
    let (last_flight, next_sequence) = channel.sent();
    let established = Established {
        is_client: false,
        master_secret: secrets.master_secret,
        client_random: random(secrets.remote_random)?,
        server_random: random(secrets.local_random)?,
        next_sequence,
        last_flight,
    };
    Ok((keys, established))
}

/// What the handshake sent, for the record layer that goes on from it.
#[derive(Debug, Default)]
struct Sent {
    /// The datagrams sent since the last record arrived: the flight answering the peer's.
    flight: Vec<Vec<u8>>,
    /// A record arrived after the last send, so the next send begins a new flight.
    answered: bool,
    /// One past the highest sequence number sent under epoch 1.
    next_sequence: u64,
    /// The cipher suite the ServerHello named.
    suite: Option<u16>,
}

/// A `Conn` whose reads come from a queue and whose writes go to a queue.
pub struct ChannelConn {
    inbox: Mutex<mpsc::Receiver<Vec<u8>>>,
    outbox: mpsc::UnboundedSender<(ParticipantKey, Vec<u8>)>,
    key: ParticipantKey,
    local: SocketAddr,
    remote: SocketAddr,
    sent: std::sync::Mutex<Sent>,
}

impl ChannelConn {
    /// `inbox` carries records from the peer, `outbox` takes records to it, tagged with `key`.
    pub fn new(
        inbox: mpsc::Receiver<Vec<u8>>,
        outbox: mpsc::UnboundedSender<(ParticipantKey, Vec<u8>)>,
        key: ParticipantKey,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Self {
        ChannelConn {
            inbox: Mutex::new(inbox),
            outbox,
            key,
            local,
            remote,
            sent: std::sync::Mutex::default(),
        }
    }

    /// The relay's last flight and its next epoch-1 sequence number, once the handshake is
    /// done.
    pub fn sent(&self) -> (Vec<Vec<u8>>, u64) {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        (sent.flight.clone(), sent.next_sequence)
    }

    /// The cipher suite the relay's ServerHello named.
    pub fn suite(&self) -> Option<u16> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).suite
    }
}

#[async_trait]
impl Conn for ChannelConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        let mut inbox = self.inbox.lock().await;
        match inbox.recv().await {
            Some(record) => {
                self.sent.lock().unwrap_or_else(|e| e.into_inner()).answered = true;
                let n = record.len().min(buf.len());
                buf[..n].copy_from_slice(&record[..n]);
                Ok(n)
            }
            None => Err(webrtc_util::Error::ErrUseClosedNetworkConn),
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        Ok((self.recv(buf).await?, self.remote))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            if std::mem::take(&mut sent.answered) {
                sent.flight.clear();
            }
            sent.flight.push(buf.to_vec());
            if let Some(suite) = dtls_record::server_hello_suite(buf) {
                sent.suite = Some(suite);
            }
            for (_, epoch, seq) in dtls_record::records_of(buf) {
                if epoch == 1 {
                    sent.next_sequence = sent.next_sequence.max(seq + 1);
                }
            }
        }
        self.outbox
            .send((self.key, buf.to_vec()))
            .map_err(|_| webrtc_util::Error::ErrUseClosedNetworkConn)?;
        Ok(buf.len())
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        self.send(buf).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.remote)
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inbox.lock().await.close();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::dtls_record::{RecordLayer, RecordOutput};
    use std::time::{Duration, Instant};

    type Queue = mpsc::UnboundedReceiver<(ParticipantKey, Vec<u8>)>;

    fn conn(key: u64) -> (Arc<ChannelConn>, mpsc::Sender<Vec<u8>>, Queue) {
        let (inbox, rx) = mpsc::channel(64);
        let (tx, outbox) = mpsc::unbounded_channel();
        let local = SocketAddr::from(([127, 0, 0, 1], 5000));
        let conn = ChannelConn::new(rx, tx, ParticipantKey(key), local, local);
        (Arc::new(conn), inbox, outbox)
    }

    /// The relay's side runs the library's handshake, then goes on in the record layer; its
    /// last flight is lost on the way, so the record layer must answer the peer's repeated
    /// one. The peer is the library's own client.
    #[test]
    fn the_record_layer_goes_on_from_the_handshake_against_the_library_client() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (server_cert, client_cert) = (
                generate_certificate().unwrap(),
                generate_certificate().unwrap(),
            );
            let server_fp = fingerprint(server_cert.certificate[0].as_ref());
            let client_fp = fingerprint(client_cert.certificate[0].as_ref());
            let (server_conn, server_inbox, mut from_server) = conn(1);
            let (client_conn, client_inbox, mut from_client) = conn(2);
            let gcm = [SrtpProfile::AeadAes128Gcm];
            let server_config = config(&server_cert, &gcm, Some(client_fp));
            let mut client_config = config(&client_cert, &gcm, Some(server_fp));
            client_config.flight_interval = Duration::from_millis(50);

            let server = tokio::spawn({
                let channel = server_conn.clone();
                async move {
                    let dtls =
                        dtls::conn::DTLSConn::new(channel.clone(), server_config, false, None)
                            .await
                            .map_err(|e| e.to_string())?;
                    finish(&dtls, &channel).await
                }
            });
            let client = tokio::spawn(async move {
                dtls::conn::DTLSConn::new(client_conn, client_config, true, None).await
            });
            let (mut server, mut client) = (Some(server), Some(client));
            let mut layer: Option<RecordLayer> = None;
            let mut client_dtls = None;
            let mut lost = 0;
            let mut answered = 0;
            let deadline = tokio::time::sleep(Duration::from_secs(10));
            tokio::pin!(deadline);
            // Until the client's handshake is done: carry datagrams, losing every record the
            // library's handshake sends under the new epoch (its Finished), so that the peer
            // gets the relay's Finished only from the record layer.
            while client_dtls.is_none() {
                tokio::select! {
                    Some((_, d)) = from_server.recv() => {
                        if dtls_record::records_of(&d).any(|r| r.1 == 1) {
                            lost += 1;
                        } else {
                            client_inbox.send(d).await.unwrap();
                        }
                    }
                    Some((_, d)) = from_client.recv() => match layer.as_mut() {
                        None => server_inbox.send(d).await.unwrap(),
                        Some(layer) => {
                            layer.handle_datagram(Instant::now(), &d);
                            while let Some(out) = layer.poll_output() {
                                let RecordOutput::Transmit(t) = out else {
                                    panic!("{out:?} during the handshake");
                                };
                                answered += 1;
                                client_inbox.send(t).await.unwrap();
                            }
                        }
                    },
                    done = async { server.as_mut().unwrap().await }, if server.is_some() => {
                        server = None;
                        let (keys, established) = done.unwrap().unwrap();
                        assert_eq!(keys.profile, SrtpProfile::AeadAes128Gcm);
                        assert_eq!(server_conn.suite(), Some(0xc02b));
                        layer = Some(RecordLayer::new(established).unwrap());
                    }
                    done = async { client.as_mut().unwrap().await }, if client.is_some() => {
                        client = None;
                        client_dtls = Some(done.unwrap().unwrap());
                    }
                    _ = &mut deadline => panic!("no handshake (lost {lost}, answered {answered})"),
                }
            }
            assert!(lost >= 1, "the relay's last flight was never sent");
            assert!(
                answered >= 1,
                "the record layer never sent the last flight again"
            );
            let client_dtls = client_dtls.unwrap();
            let mut layer = layer.expect("the relay's handshake finished");

            // The peer's application data opens here; the relay's opens there.
            client_dtls
                .write(b"sctp from the peer", None)
                .await
                .unwrap();
            let (_, record) = from_client.recv().await.unwrap();
            layer.handle_datagram(Instant::now(), &record);
            assert_eq!(
                layer.poll_output(),
                Some(RecordOutput::Data(b"sctp from the peer".to_vec()))
            );
            client_inbox
                .send(layer.seal(b"sctp from the relay").unwrap())
                .await
                .unwrap();
            let mut buf = [0u8; 100];
            let n = client_dtls.read(&mut buf, None).await.unwrap();
            assert_eq!(&buf[..n], b"sctp from the relay");

            // The peer's close_notify ends the association, answered with the relay's.
            client_dtls.close().await.unwrap();
            let (_, record) = from_client.recv().await.unwrap();
            layer.handle_datagram(Instant::now(), &record);
            assert!(matches!(
                layer.poll_output(),
                Some(RecordOutput::Transmit(_))
            ));
            assert_eq!(layer.poll_output(), Some(RecordOutput::Closed));
        });
    }

    #[test]
    fn fingerprint_format_and_match() {
        let f = fingerprint(b"abc");
        // SHA-256("abc") from FIPS 180-2 appendix B.1.
        assert_eq!(
            f,
            "sha-256 BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
        assert!(fingerprint_matches(&f.to_lowercase(), b"abc"));
        assert!(fingerprint_matches(&f["sha-256 ".len()..], b"abc"));
        assert!(!fingerprint_matches(&f, b"abd"));
    }
}
