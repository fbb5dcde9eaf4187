//! DTLS as an actor beside the worker.
//!
//! The webrtc-rs DTLS implementation is async and owns its read loop, so each handshake runs as
//! a task on the core's runtime over a [`ChannelConn`]: records the worker routes to the
//! participant arrive through a bounded queue, and records DTLS writes leave through the core's
//! DTLS egress queue, which the shell sends to the participant's *current* ICE address (so a
//! migration during the handshake is followed). Nothing here blocks the ring thread.

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
/// profiles in order of preference.
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
        srtp_protection_profiles: profiles_of(profiles),
        extended_master_secret: ExtendedMasterSecretType::Require,
        client_auth: ClientAuthType::RequireAnyClientCert,
        // WebRTC certificates are self-signed; identity is the fingerprint checked above.
        insecure_skip_verify: true,
        verify_peer_certificate: verify,
        ..Default::default()
    }
}

/// Export SRTP keys from a finished handshake (RFC 5764 §4.2).
pub async fn srtp_keys(conn: &dtls::conn::DTLSConn, is_client: bool) -> Result<SrtpKeys, String> {
    let profile = profile_of(conn.selected_srtpprotection_profile())
        .ok_or_else(|| "no SRTP profile negotiated".to_owned())?;
    let state = conn.connection_state().await;
    let material = state
        .export_keying_material(EXPORTER_LABEL, &[], profile.keying_material_len())
        .await
        .map_err(|e| e.to_string())?;
    SrtpKeys::from_keying_material(profile, &material, is_client)
        .ok_or_else(|| "short keying material".to_owned())
}

/// A `Conn` whose reads come from a queue and whose writes go to a queue.
pub struct ChannelConn {
    inbox: Mutex<mpsc::Receiver<Vec<u8>>>,
    outbox: mpsc::UnboundedSender<(ParticipantKey, Vec<u8>)>,
    key: ParticipantKey,
    local: SocketAddr,
    remote: SocketAddr,
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
        }
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
