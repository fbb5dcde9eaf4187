//! A WebRTC peer reduced to what a browser does on the wire toward an ICE-lite SFU: ICE checks
//! as the controlling agent (with USE-CANDIDATE and consent refreshes), a DTLS client
//! handshake, SRTP/SRTCP with keys exported from DTLS, and RTP send/receive.
//!
//! It is built from the webrtc-rs crates directly (not from the relay's own wrappers), so a
//! mistake in the relay's key split, profile mapping or STUN handling shows up as a failure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dtls::config::{Config as DtlsConfig, ExtendedMasterSecretType};
use dtls::conn::DTLSConn;
use dtls::crypto::Certificate;
use dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use sha2::{Digest, Sha256};
use stun::attributes::{
    RawAttribute, ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{Getter, Message, Setter, BINDING_REQUEST, BINDING_SUCCESS};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc_srtp::config::Config as SrtpConfig;
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;
use webrtc_util::conn::Conn;
use webrtc_util::marshal::{Marshal, Unmarshal};

use relay::ParticipantInfo;

/// What can go wrong for the peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// No valid Binding response.
    #[error("ICE: no verified binding response from {0}")]
    IceTimeout(SocketAddr),
    /// The DTLS handshake failed.
    #[error("DTLS: {0}")]
    Dtls(String),
    /// SRTP setup or processing failed.
    #[error("SRTP: {0}")]
    Srtp(String),
    /// Nothing arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A packet did not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// How the peer behaves.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// SRTP profiles offered in use_srtp, in order of preference.
    pub profiles: Vec<SrtpProtectionProfile>,
    /// Interval of consent-freshness checks after connecting (RFC 7675 says ~5 s).
    pub consent_interval: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            profiles: vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ],
            consent_interval: Duration::from_millis(500),
        }
    }
}

/// A received, decrypted datagram.
#[derive(Debug)]
pub enum Received {
    /// An RTP packet.
    Rtp(rtp::packet::Packet),
    /// A compound RTCP packet.
    Rtcp(Vec<Box<dyn rtcp::packet::Packet + Send + Sync>>),
}

struct Ice {
    relay: SocketAddr,
    local_ufrag: String,
    relay_ufrag: String,
    relay_pwd: String,
}

impl Ice {
    fn request(&self, use_candidate: bool) -> (stun::agent::TransactionId, Vec<u8>) {
        let tid = stun::agent::TransactionId::new();
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(tid),
            Box::new(TextAttribute::new(
                ATTR_USERNAME,
                format!("{}:{}", self.relay_ufrag, self.local_ufrag),
            )),
            Box::new(RawAttribute {
                typ: ATTR_PRIORITY,
                length: 4,
                value: 0x7e00_00ffu32.to_be_bytes().to_vec(),
            }),
            Box::new(RawAttribute {
                typ: ATTR_ICE_CONTROLLING,
                length: 8,
                value: rand::random::<u64>().to_be_bytes().to_vec(),
            }),
        ];
        if use_candidate {
            setters.push(Box::new(RawAttribute {
                typ: ATTR_USE_CANDIDATE,
                length: 0,
                value: vec![],
            }));
        }
        setters.push(Box::new(MessageIntegrity::new_short_term_integrity(
            self.relay_pwd.clone(),
        )));
        setters.push(Box::new(FINGERPRINT));
        // Only fails on attribute overflow, impossible with these sizes.
        m.build(&setters).expect("binding request");
        (tid, m.raw)
    }

    /// Verify a Binding success response; returns the mapped address it reports.
    fn verify_response(&self, raw: &[u8], tid: &stun::agent::TransactionId) -> Option<SocketAddr> {
        let mut m = Message::new();
        m.raw = raw.to_vec();
        m.decode().ok()?;
        if m.typ != BINDING_SUCCESS || m.transaction_id != *tid {
            return None;
        }
        MessageIntegrity::new_short_term_integrity(self.relay_pwd.clone())
            .check(&mut m)
            .ok()?;
        FINGERPRINT.check(&m).ok()?;
        let mut xor = XorMappedAddress::default();
        xor.get_from(&m).ok()?;
        Some(SocketAddr::new(xor.ip, xor.port))
    }
}

/// Channels the demultiplexing task feeds.
struct Inboxes {
    stun: mpsc::UnboundedSender<Vec<u8>>,
    dtls: mpsc::UnboundedSender<Vec<u8>>,
    media: mpsc::UnboundedSender<Vec<u8>>,
}

fn spawn_demux(socket: Arc<UdpSocket>, relay: SocketAddr, inboxes: Arc<Inboxes>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            if from != relay || n == 0 {
                continue;
            }
            let d = buf[..n].to_vec();
            let _ = match d[0] {
                0..=3 => inboxes.stun.send(d),
                20..=63 => inboxes.dtls.send(d),
                128..=191 => inboxes.media.send(d),
                _ => Ok(()),
            };
        }
    })
}

/// DTLS transport over the peer's current socket.
struct DtlsTransport {
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
    socket: Arc<Mutex<Arc<UdpSocket>>>,
    relay: SocketAddr,
}

impl DtlsTransport {
    fn current(&self) -> Arc<UdpSocket> {
        self.socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl Conn for DtlsTransport {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        match self.inbox.lock().await.recv().await {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(webrtc_util::Error::ErrUseClosedNetworkConn),
        }
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        Ok((self.recv(buf).await?, self.relay))
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.current().send_to(buf, self.relay).await?)
    }
    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        self.send(buf).await
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.current().local_addr()?)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.relay)
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// A connected peer.
pub struct WirePeer {
    ice: Arc<Ice>,
    socket: Arc<Mutex<Arc<UdpSocket>>>,
    inboxes: Arc<Inboxes>,
    stun_rx: mpsc::UnboundedReceiver<Vec<u8>>,
    media_rx: mpsc::UnboundedReceiver<Vec<u8>>,
    demux: JoinHandle<()>,
    consent: JoinHandle<()>,
    consent_enabled: Arc<AtomicBool>,
    dtls: Arc<DTLSConn>,
    tx: Context,
    rx: Context,
    profile: ProtectionProfile,
    fingerprint: String,
}

impl Drop for WirePeer {
    fn drop(&mut self) {
        self.demux.abort();
        self.consent.abort();
    }
}

/// A loopback UDP socket with the same 4 MiB buffer request as the relay's (the kernel caps it
/// at `net.core.rmem_max`), so that bursts are not lost in the peer's own receive queue.
fn bind_socket() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    UdpSocket::from_std(socket.into())
}

fn fingerprint(der: &[u8]) -> String {
    let hex: Vec<String> = Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    format!("sha-256 {}", hex.join(":"))
}

impl WirePeer {
    /// Generate this peer's certificate and return its fingerprint alongside, so signalling
    /// can hand it to the relay before connecting.
    pub fn certificate() -> (Certificate, String) {
        // Only fails if the RNG fails.
        let cert = Certificate::generate_self_signed(vec!["peer".to_owned()]).expect("cert");
        let fp = fingerprint(cert.certificate[0].as_ref());
        (cert, fp)
    }

    /// A random ICE ufrag as a browser would put in its offer.
    pub fn random_ufrag() -> String {
        format!("{:08x}", rand::random::<u32>())
    }

    /// Connect to the relay: ICE check with USE-CANDIDATE, DTLS client handshake, SRTP keys.
    pub async fn connect(
        info: &ParticipantInfo,
        local_ufrag: String,
        certificate: Certificate,
        config: PeerConfig,
    ) -> Result<WirePeer, PeerError> {
        let relay = info.candidate;
        let socket = Arc::new(bind_socket()?);
        let (stun_tx, stun_rx) = mpsc::unbounded_channel();
        let (dtls_tx, dtls_rx) = mpsc::unbounded_channel();
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        let inboxes = Arc::new(Inboxes {
            stun: stun_tx,
            dtls: dtls_tx,
            media: media_tx,
        });
        let demux = spawn_demux(socket.clone(), relay, inboxes.clone());
        let ice = Arc::new(Ice {
            relay,
            local_ufrag,
            relay_ufrag: info.ice_ufrag.clone(),
            relay_pwd: info.ice_pwd.clone(),
        });
        let shared_socket = Arc::new(Mutex::new(socket.clone()));
        let mut peer_stun_rx = stun_rx;
        check(&ice, &socket, &mut peer_stun_rx, true).await?;

        let transport = Arc::new(DtlsTransport {
            inbox: tokio::sync::Mutex::new(dtls_rx),
            socket: shared_socket.clone(),
            relay,
        });
        let relay_fp = info.fingerprint.clone();
        let dtls_config = DtlsConfig {
            certificates: vec![certificate.clone()],
            srtp_protection_profiles: config.profiles.clone(),
            extended_master_secret: ExtendedMasterSecretType::Require,
            insecure_skip_verify: true,
            verify_peer_certificate: Some(Arc::new(move |certs: &[Vec<u8>], _| {
                match certs.first() {
                    Some(der) if fingerprint(der).eq_ignore_ascii_case(&relay_fp) => Ok(()),
                    _ => Err(dtls::Error::Other("relay fingerprint mismatch".into())),
                }
            })),
            ..Default::default()
        };
        let dtls = tokio::time::timeout(
            Duration::from_secs(10),
            DTLSConn::new(transport, dtls_config, true, None),
        )
        .await
        .map_err(|_| PeerError::Timeout("DTLS handshake"))?
        .map_err(|e| PeerError::Dtls(e.to_string()))?;
        let profile = match dtls.selected_srtpprotection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
                ProtectionProfile::Aes128CmHmacSha1_80
            }
            other => return Err(PeerError::Dtls(format!("unexpected profile {other:?}"))),
        };
        let mut srtp = SrtpConfig {
            profile,
            ..Default::default()
        };
        srtp.extract_session_keys_from_dtls(dtls.connection_state().await, true)
            .await
            .map_err(|e| PeerError::Srtp(e.to_string()))?;
        let k = &srtp.keys;
        let tx = Context::new(
            &k.local_master_key,
            &k.local_master_salt,
            profile,
            None,
            None,
        )
        .map_err(|e| PeerError::Srtp(e.to_string()))?;
        let rx = Context::new(
            &k.remote_master_key,
            &k.remote_master_salt,
            profile,
            Some(srtp_replay_protection(64)),
            Some(srtcp_replay_protection(64)),
        )
        .map_err(|e| PeerError::Srtp(e.to_string()))?;

        let consent_enabled = Arc::new(AtomicBool::new(true));
        let consent = {
            let ice = ice.clone();
            let socket = shared_socket.clone();
            let enabled = consent_enabled.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(config.consent_interval).await;
                    if enabled.load(Ordering::Relaxed) {
                        let s = socket.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let (_, req) = ice.request(false);
                        let _ = s.send_to(&req, ice.relay).await;
                    }
                }
            })
        };
        Ok(WirePeer {
            ice,
            socket: shared_socket,
            inboxes,
            stun_rx: peer_stun_rx,
            media_rx,
            demux,
            consent,
            consent_enabled,
            dtls: Arc::new(dtls),
            tx,
            rx,
            profile,
            fingerprint: fingerprint(certificate.certificate[0].as_ref()),
        })
    }

    /// The negotiated SRTP profile.
    pub fn profile(&self) -> ProtectionProfile {
        self.profile
    }

    /// This peer's certificate fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn current_socket(&self) -> Arc<UdpSocket> {
        self.socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The address the relay sees this peer at.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound UDP socket always has a local address.
        self.current_socket().local_addr().expect("bound socket")
    }

    /// Stop or resume consent refreshes (to let the relay's consent expire).
    pub fn set_consent(&self, enabled: bool) {
        self.consent_enabled.store(enabled, Ordering::Relaxed);
    }

    /// Move to a new local port (a network change) and nominate it with USE-CANDIDATE.
    pub async fn migrate(&mut self) -> Result<SocketAddr, PeerError> {
        let socket = Arc::new(bind_socket()?);
        self.demux.abort();
        self.demux = spawn_demux(socket.clone(), self.ice.relay, self.inboxes.clone());
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = socket.clone();
        check(&self.ice, &socket, &mut self.stun_rx, true).await?;
        Ok(socket.local_addr()?)
    }

    /// Encrypt an RTP packet (without sending it).
    pub fn protect_rtp(&mut self, packet: &rtp::packet::Packet) -> Result<Vec<u8>, PeerError> {
        let raw = packet
            .marshal()
            .map_err(|_| PeerError::Malformed("outgoing RTP"))?;
        Ok(self
            .tx
            .encrypt_rtp(&raw)
            .map_err(|e| PeerError::Srtp(e.to_string()))?
            .to_vec())
    }

    /// Encrypt and send an RTP packet.
    pub async fn send_rtp(&mut self, packet: &rtp::packet::Packet) -> Result<(), PeerError> {
        let sealed = self.protect_rtp(packet)?;
        // Await on owned values only: holding `&self` across the await would make the future
        // require `WirePeer: Sync`, which the SRTP contexts are not.
        let (socket, relay) = (self.current_socket(), self.ice.relay);
        socket.send_to(&sealed, relay).await?;
        Ok(())
    }

    /// Encrypt and send a compound RTCP packet.
    pub async fn send_rtcp(
        &mut self,
        packets: &[Box<dyn rtcp::packet::Packet + Send + Sync>],
    ) -> Result<(), PeerError> {
        let raw =
            rtcp::packet::marshal(packets).map_err(|_| PeerError::Malformed("outgoing RTCP"))?;
        let sealed = self
            .tx
            .encrypt_rtcp(&raw)
            .map_err(|e| PeerError::Srtp(e.to_string()))?;
        let (socket, relay) = (self.current_socket(), self.ice.relay);
        socket.send_to(&sealed, relay).await?;
        Ok(())
    }

    /// Send arbitrary bytes to the relay from this peer's address.
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), PeerError> {
        self.current_socket().send_to(bytes, self.ice.relay).await?;
        Ok(())
    }

    /// Next decrypted RTP or RTCP datagram.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Received, PeerError> {
        let d = tokio::time::timeout(timeout, self.media_rx.recv())
            .await
            .map_err(|_| PeerError::Timeout("media"))?
            .ok_or(PeerError::Timeout("media (closed)"))?;
        if d.len() >= 2 && (192..=223).contains(&d[1]) {
            let plain = self
                .rx
                .decrypt_rtcp(&d)
                .map_err(|e| PeerError::Srtp(e.to_string()))?;
            let pkts = rtcp::packet::unmarshal(&mut plain.clone())
                .map_err(|_| PeerError::Malformed("RTCP"))?;
            return Ok(Received::Rtcp(pkts));
        }
        let mut plain: Bytes = self
            .rx
            .decrypt_rtp(&d)
            .map_err(|e| PeerError::Srtp(e.to_string()))?;
        let pkt =
            rtp::packet::Packet::unmarshal(&mut plain).map_err(|_| PeerError::Malformed("RTP"))?;
        Ok(Received::Rtp(pkt))
    }

    /// Next RTP packet; RTCP arriving meanwhile is handed to `on_rtcp`.
    pub async fn recv_rtp(
        &mut self,
        timeout: Duration,
        mut on_rtcp: impl FnMut(Vec<Box<dyn rtcp::packet::Packet + Send + Sync>>),
    ) -> Result<rtp::packet::Packet, PeerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await? {
                Received::Rtp(p) => return Ok(p),
                Received::Rtcp(r) => on_rtcp(r),
            }
        }
    }

    /// Close the DTLS association (sends close_notify).
    pub async fn close(&self) {
        let _ = self.dtls.close().await;
    }
}

/// Send checks until one is answered and verified (10 tries, 100 ms apart, as a browser's
/// first pacing).
async fn check(
    ice: &Ice,
    socket: &UdpSocket,
    stun_rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    use_candidate: bool,
) -> Result<SocketAddr, PeerError> {
    for _ in 0..10 {
        let (tid, req) = ice.request(use_candidate);
        socket.send_to(&req, ice.relay).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Ok(Some(resp)) = tokio::time::timeout_at(deadline, stun_rx.recv()).await {
            if let Some(mapped) = ice.verify_response(&resp, &tid) {
                return Ok(mapped);
            }
        }
    }
    Err(PeerError::IceTimeout(ice.relay))
}

/// A Binding request signed with `pwd` from `username`, for tests that forge checks.
pub fn binding_request(username: &str, pwd: &str, use_candidate: bool) -> Vec<u8> {
    let (relay_ufrag, local_ufrag) = username.split_once(':').unwrap_or((username, ""));
    let ice = Ice {
        relay: SocketAddr::from(([127, 0, 0, 1], 9)),
        local_ufrag: local_ufrag.to_owned(),
        relay_ufrag: relay_ufrag.to_owned(),
        relay_pwd: pwd.to_owned(),
    };
    ice.request(use_candidate).1
}
