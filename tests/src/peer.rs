//! A WebRTC peer reduced to what a browser does on the wire toward an SFU: ICE checks as the
//! controlling agent (with USE-CANDIDATE and consent refreshes) or as the controlled one, answers
//! to the server's own checks (servers that run full ICE check us too), a DTLS client
//! handshake, SRTP/SRTCP with keys exported from DTLS, and RTP send/receive.
//!
//! A connected peer can be reduced to an [`SrtpLink`]: its socket and SRTP contexts without the
//! demultiplexing task, for load generation where hundreds of peers share one process.
//!
//! It is built from the webrtc-rs crates directly (not from the relay's own wrappers), so a
//! mistake in the relay's key split, profile mapping or STUN handling shows up as a failure.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    RawAttribute, ATTR_ICE_CONTROLLED, ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USERNAME,
    ATTR_USE_CANDIDATE,
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

/// Which side of ICE the peer plays (RFC 8445 §6.1.1): the offerer controls and nominates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceRole {
    /// Send checks with ICE-CONTROLLING and nominate with USE-CANDIDATE, as a browser that
    /// made the offer does.
    Controlling,
    /// Send checks with ICE-CONTROLLED and leave nomination to the server, as the answerer to
    /// a full-ICE server's offer does.
    Controlled,
}

/// How the peer behaves.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// SRTP profiles offered in use_srtp, in order of preference.
    pub profiles: Vec<SrtpProtectionProfile>,
    /// Interval of consent-freshness checks after connecting (RFC 7675 says ~5 s).
    pub consent_interval: Duration,
    /// Local address the peer's socket binds to.
    pub bind: IpAddr,
    /// ICE role.
    pub role: IceRole,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            profiles: vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ],
            consent_interval: Duration::from_millis(500),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            role: IceRole::Controlling,
        }
    }
}

/// This peer's ICE credentials, as its SDP announces them.
#[derive(Clone, Debug)]
pub struct IceCredentials {
    /// `a=ice-ufrag`.
    pub ufrag: String,
    /// `a=ice-pwd`: the key of the MESSAGE-INTEGRITY in the server's checks and our answers.
    pub pwd: String,
}

impl IceCredentials {
    /// Fresh random credentials (RFC 8839 asks for at least 24 bits of ufrag, 128 of pwd).
    pub fn random() -> IceCredentials {
        IceCredentials {
            ufrag: WirePeer::random_ufrag(),
            pwd: format!("{:032x}", rand::random::<u128>()),
        }
    }
}

/// What the peer must know of the server it connects to: from the relay's control API or
/// from the server's SDP.
#[derive(Clone, Debug)]
pub struct RemoteEndpoint {
    /// The server's ICE host candidate.
    pub candidate: SocketAddr,
    /// The server's ICE ufrag.
    pub ice_ufrag: String,
    /// The server's ICE password.
    pub ice_pwd: String,
    /// The server's DTLS certificate fingerprint, `sha-256 AB:CD:…`.
    pub fingerprint: String,
}

impl From<&ParticipantInfo> for RemoteEndpoint {
    fn from(info: &ParticipantInfo) -> Self {
        RemoteEndpoint {
            candidate: info.candidate,
            ice_ufrag: info.ice_ufrag.clone(),
            ice_pwd: info.ice_pwd.clone(),
            fingerprint: info.fingerprint.clone(),
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
    local_pwd: String,
    relay_ufrag: String,
    relay_pwd: String,
    role: IceRole,
    /// The tie-breaker, one value per agent (RFC 8445 §7.1.1).
    tie_breaker: u64,
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
                typ: match self.role {
                    IceRole::Controlling => ATTR_ICE_CONTROLLING,
                    IceRole::Controlled => ATTR_ICE_CONTROLLED,
                },
                length: 8,
                value: self.tie_breaker.to_be_bytes().to_vec(),
            }),
        ];
        if use_candidate && self.role == IceRole::Controlling {
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

    /// The answer to a server's Binding request, if `raw` is one that names our ufrag and is
    /// signed with our password: success with the address we saw it from, signed with our
    /// password (RFC 8445 §7.3). Anything else gets no answer.
    fn answer(&self, raw: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        let mut m = Message::new();
        m.raw = raw.to_vec();
        m.decode().ok()?;
        if m.typ != BINDING_REQUEST {
            return None;
        }
        let username = TextAttribute::get_from_as(&m, ATTR_USERNAME).ok()?;
        if username.text.split(':').next() != Some(self.local_ufrag.as_str()) {
            return None;
        }
        MessageIntegrity::new_short_term_integrity(self.local_pwd.clone())
            .check(&mut m)
            .ok()?;
        let mut reply = Message::new();
        reply
            .build(&[
                Box::new(m.transaction_id),
                Box::new(BINDING_SUCCESS),
                Box::new(XorMappedAddress {
                    ip: from.ip(),
                    port: from.port(),
                }),
                Box::new(MessageIntegrity::new_short_term_integrity(
                    self.local_pwd.clone(),
                )),
                Box::new(FINGERPRINT),
            ])
            .ok()?;
        Some(reply.raw)
    }
}

/// Whether a datagram is STUN (RFC 7983 demultiplexing: first byte 0..=3).
fn is_stun(d: &[u8]) -> bool {
    matches!(d.first(), Some(0..=3))
}

/// Channels the demultiplexing task feeds.
struct Inboxes {
    stun: mpsc::UnboundedSender<Vec<u8>>,
    dtls: mpsc::UnboundedSender<Vec<u8>>,
    media: mpsc::UnboundedSender<Vec<u8>>,
}

/// A task aborted when its owner is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn spawn_demux(socket: Arc<UdpSocket>, ice: Arc<Ice>, inboxes: Arc<Inboxes>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            if from != ice.relay || n == 0 {
                continue;
            }
            let d = buf[..n].to_vec();
            if is_stun(&d) {
                if let Some(reply) = ice.answer(&d, from) {
                    let _ = socket.send_to(&reply, from).await;
                    continue;
                }
            }
            let _ = match d[0] {
                0..=3 => inboxes.stun.send(d),
                20..=63 => inboxes.dtls.send(d),
                128..=191 => inboxes.media.send(d),
                _ => Ok(()),
            };
        }
    }))
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
    demux: AbortOnDrop,
    consent: AbortOnDrop,
    consent_enabled: Arc<AtomicBool>,
    dtls: Arc<DTLSConn>,
    tx: Context,
    rx: Context,
    profile: ProtectionProfile,
    fingerprint: String,
}

/// A UDP socket on `ip` (any port) with the same 4 MiB buffer request as the relay's (the
/// kernel caps it at `net.core.rmem_max`), so that bursts are not lost in the peer's own
/// receive queue.
fn bind_socket(ip: IpAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
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

    /// Bind a socket on `ip` for a peer whose SDP must name its port before it connects.
    pub fn bind(ip: IpAddr) -> Result<UdpSocket, PeerError> {
        Ok(bind_socket(ip)?)
    }

    /// Connect to the relay: ICE check with USE-CANDIDATE, DTLS client handshake, SRTP keys.
    pub async fn connect(
        info: &ParticipantInfo,
        local_ufrag: String,
        certificate: Certificate,
        config: PeerConfig,
    ) -> Result<WirePeer, PeerError> {
        let socket = bind_socket(config.bind)?;
        let local = IceCredentials {
            ufrag: local_ufrag,
            pwd: IceCredentials::random().pwd,
        };
        WirePeer::connect_on(socket, &info.into(), local, certificate, config).await
    }

    /// Connect to `remote` from an already bound `socket`: ICE checks in `config.role`
    /// (answering the server's checks meanwhile), DTLS client handshake, SRTP keys.
    pub async fn connect_on(
        socket: UdpSocket,
        remote: &RemoteEndpoint,
        local: IceCredentials,
        certificate: Certificate,
        config: PeerConfig,
    ) -> Result<WirePeer, PeerError> {
        let relay = remote.candidate;
        let socket = Arc::new(socket);
        let (stun_tx, stun_rx) = mpsc::unbounded_channel();
        let (dtls_tx, dtls_rx) = mpsc::unbounded_channel();
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        let inboxes = Arc::new(Inboxes {
            stun: stun_tx,
            dtls: dtls_tx,
            media: media_tx,
        });
        let ice = Arc::new(Ice {
            relay,
            local_ufrag: local.ufrag,
            local_pwd: local.pwd,
            relay_ufrag: remote.ice_ufrag.clone(),
            relay_pwd: remote.ice_pwd.clone(),
            role: config.role,
            tie_breaker: rand::random(),
        });
        let demux = spawn_demux(socket.clone(), ice.clone(), inboxes.clone());
        let shared_socket = Arc::new(Mutex::new(socket.clone()));
        let mut peer_stun_rx = stun_rx;
        check(&ice, &socket, &mut peer_stun_rx, true).await?;

        let transport = Arc::new(DtlsTransport {
            inbox: tokio::sync::Mutex::new(dtls_rx),
            socket: shared_socket.clone(),
            relay,
        });
        let relay_fp = remote.fingerprint.clone();
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
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(config.consent_interval).await;
                    if enabled.load(Ordering::Relaxed) {
                        let s = socket.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let (_, req) = ice.request(false);
                        let _ = s.send_to(&req, ice.relay).await;
                    }
                }
            }))
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

    /// The DTLS connection, for application data (SCTP, for data channels).
    pub fn dtls(&self) -> Arc<DTLSConn> {
        self.dtls.clone()
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
        let socket = Arc::new(bind_socket(self.local_addr().ip())?);
        self.demux = spawn_demux(socket.clone(), self.ice.clone(), self.inboxes.clone());
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

    /// Reduce the peer to its socket and SRTP contexts: the demultiplexing task stops (what it
    /// had queued is dropped), consent refreshes go on, the DTLS association stays open.
    pub fn into_link(self) -> SrtpLink {
        let socket = self.current_socket();
        let WirePeer {
            ice,
            inboxes,
            demux,
            consent,
            dtls,
            tx,
            rx,
            ..
        } = self;
        drop(demux);
        // Kernel receive timestamps, so that latency is measured to the socket, not to when
        // this process got round to reading it.
        let _ = nix::sys::socket::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&*socket),
            nix::sys::socket::sockopt::ReceiveTimestampns,
            &true,
        );
        SrtpLink {
            socket,
            arrival: None,
            ice,
            tx: Some(tx),
            rx,
            _inboxes: inboxes,
            _dtls: dtls,
            _consent: consent,
            buf: vec![0u8; 2048],
            last_len: 0,
        }
    }
}

/// What [`SrtpLink::recv`] got.
#[derive(Debug)]
pub enum Incoming {
    /// A decrypted and authenticated RTP packet, header included.
    Rtp(Bytes),
    /// An SRTCP packet, left encrypted ([`SrtpLink::decrypt_rtcp`] opens it).
    Rtcp,
    /// A datagram the peer handled itself (a STUN check it answered, a late DTLS record).
    Other,
}

/// A connected peer's media path without a demultiplexing task: one socket read per datagram,
/// STUN checks answered inline, RTP decrypted into a buffer the link owns. Used where
/// hundreds of peers share one process and a task and a channel hop per packet would cost more
/// than the server under test.
pub struct SrtpLink {
    socket: Arc<UdpSocket>,
    ice: Arc<Ice>,
    /// None once handed to an [`SrtpSender`].
    tx: Option<Context>,
    rx: Context,
    /// Kept so that the DTLS association's reader waits on an open, empty inbox; with the
    /// inbox closed it would see a closed transport and stop (or retry) instead.
    _inboxes: Arc<Inboxes>,
    _dtls: Arc<DTLSConn>,
    _consent: AbortOnDrop,
    buf: Vec<u8>,
    /// Length of the last datagram in `buf`.
    last_len: usize,
    arrival: Option<std::time::SystemTime>,
}

impl SrtpLink {
    /// Encrypt a marshalled RTP packet and send it to the server.
    pub async fn send_rtp(&mut self, plain: &[u8]) -> Result<(), PeerError> {
        let tx = self
            .tx
            .as_mut()
            .ok_or(PeerError::Srtp("the sending side was split off".into()))?;
        let sealed = tx
            .encrypt_rtp(plain)
            .map_err(|e| PeerError::Srtp(e.to_string()))?;
        self.socket.send_to(&sealed, self.ice.relay).await?;
        Ok(())
    }

    /// Hand the sending side (the SRTP context for what this peer sends, and a handle on its
    /// socket) to an [`SrtpSender`], which needs no runtime: a thread can pace media with a
    /// finer clock than the runtime's timers. The link keeps receiving; its
    /// [`SrtpLink::send_rtp`] fails from then on. An error if already split.
    pub fn split_sender(&mut self) -> Result<SrtpSender, PeerError> {
        let tx = self
            .tx
            .take()
            .ok_or(PeerError::Srtp("the sending side was split off".into()))?;
        let socket = socket2::SockRef::from(&*self.socket).try_clone()?;
        Ok(SrtpSender {
            socket: socket.into(),
            relay: self.ice.relay,
            tx,
        })
    }

    /// Encrypt a marshalled (compound or reduced-size) RTCP packet and send it to the server.
    pub async fn send_rtcp(&mut self, plain: &[u8]) -> Result<(), PeerError> {
        let tx = self
            .tx
            .as_mut()
            .ok_or(PeerError::Srtp("the sending side was split off".into()))?;
        let sealed = tx
            .encrypt_rtcp(plain)
            .map_err(|e| PeerError::Srtp(e.to_string()))?;
        self.socket.send_to(&sealed, self.ice.relay).await?;
        Ok(())
    }

    /// Decrypt the SRTCP packet the last [`SrtpLink::recv`] returned as [`Incoming::Rtcp`].
    /// Left to the caller so that a run that only counts RTCP does not pay for it.
    pub fn decrypt_rtcp(&mut self) -> Result<Bytes, PeerError> {
        let d = self
            .buf
            .get(..self.last_len)
            .ok_or(PeerError::Malformed("RTCP"))?;
        self.rx
            .decrypt_rtcp(d)
            .map_err(|e| PeerError::Srtp(e.to_string()))
    }

    /// Receive the next datagram from the server. SRTP that fails authentication or replay
    /// checks is an error; the link stays usable.
    pub async fn recv(&mut self) -> Result<Incoming, PeerError> {
        let (n, from, arrival) = self.recv_datagram().await?;
        self.arrival = arrival;
        self.last_len = n;
        if from != self.ice.relay || n == 0 {
            return Ok(Incoming::Other);
        }
        let d = &self.buf[..n];
        if is_stun(d) {
            if let Some(reply) = self.ice.answer(d, from) {
                self.socket.send_to(&reply, from).await?;
            }
            return Ok(Incoming::Other);
        }
        if !(128..=191).contains(&d[0]) {
            return Ok(Incoming::Other);
        }
        if d.len() >= 2 && (192..=223).contains(&d[1]) {
            return Ok(Incoming::Rtcp);
        }
        self.rx
            .decrypt_rtp(d)
            .map(Incoming::Rtp)
            .map_err(|e| PeerError::Srtp(e.to_string()))
    }

    /// When the kernel received the datagram behind the last [`SrtpLink::recv`]
    /// (`SO_TIMESTAMPNS`, wall clock), if it said.
    pub fn arrival(&self) -> Option<std::time::SystemTime> {
        self.arrival
    }

    /// One `recvmsg`, with the kernel's receive timestamp.
    async fn recv_datagram(
        &mut self,
    ) -> std::io::Result<(usize, SocketAddr, Option<std::time::SystemTime>)> {
        recv_stamped(&self.socket, &mut self.buf).await
    }
}

/// Receive one datagram into `buf` with one `recvmsg`: its length, its IPv4 source, and when
/// the kernel received it (`SO_TIMESTAMPNS`, wall clock) if the socket has stamping on.
pub async fn recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<std::time::SystemTime>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
    socket
        .async_io(tokio::io::Interest::READABLE, || {
            let mut iov = [std::io::IoSliceMut::new(&mut buf[..])];
            let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
            let msg =
                recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)
                    .map_err(std::io::Error::from)?;
            let arrival = msg.cmsgs().find_map(|c| match c {
                ControlMessageOwned::ScmTimestampns(ts) => Some(
                    std::time::UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32),
                ),
                _ => None,
            });
            let from = msg
                .address
                .and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                })
                .ok_or_else(|| std::io::Error::other("datagram without an IPv4 source"))?;
            Ok((msg.bytes, from, arrival))
        })
        .await
}

/// The sending side of an [`SrtpLink`], usable from any thread: SRTP protection and a
/// non-blocking send on the link's own socket (same address, so the server sees one peer).
pub struct SrtpSender {
    socket: std::net::UdpSocket,
    relay: SocketAddr,
    tx: Context,
}

impl SrtpSender {
    /// Encrypt a marshalled RTP packet and send it without blocking; a full socket buffer is
    /// an error ([`std::io::ErrorKind::WouldBlock`]) and the packet is not sent.
    pub fn send_rtp(&mut self, plain: &[u8]) -> Result<(), PeerError> {
        let sealed = self
            .tx
            .encrypt_rtp(plain)
            .map_err(|e| PeerError::Srtp(e.to_string()))?;
        self.socket.send_to(&sealed, self.relay)?;
        Ok(())
    }

    /// Encrypt a marshalled RTCP packet and send it without blocking, as
    /// [`SrtpSender::send_rtp`] does.
    pub fn send_rtcp(&mut self, plain: &[u8]) -> Result<(), PeerError> {
        let sealed = self
            .tx
            .encrypt_rtcp(plain)
            .map_err(|e| PeerError::Srtp(e.to_string()))?;
        self.socket.send_to(&sealed, self.relay)?;
        Ok(())
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
        local_pwd: String::new(),
        relay_ufrag: relay_ufrag.to_owned(),
        relay_pwd: pwd.to_owned(),
        role: IceRole::Controlling,
        tie_breaker: rand::random(),
    };
    ice.request(use_candidate).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(role: IceRole) -> Ice {
        Ice {
            relay: SocketAddr::from(([198, 18, 0, 2], 20000)),
            local_ufrag: "ours".into(),
            local_pwd: "our-password-0123456789".into(),
            relay_ufrag: "theirs".into(),
            relay_pwd: "their-password-0123456789".into(),
            role,
            tie_breaker: 7,
        }
    }

    /// The server's view: it checks us with our credentials.
    fn server_view() -> Ice {
        Ice {
            relay: SocketAddr::from(([198, 18, 0, 1], 5000)),
            local_ufrag: "theirs".into(),
            local_pwd: "their-password-0123456789".into(),
            relay_ufrag: "ours".into(),
            relay_pwd: "our-password-0123456789".into(),
            role: IceRole::Controlling,
            tie_breaker: 9,
        }
    }

    #[test]
    fn answers_the_servers_checks_with_our_password() {
        let us = agent(IceRole::Controlled);
        let (tid, request) = server_view().request(true);
        let from = SocketAddr::from(([198, 18, 0, 2], 20000));
        let reply = us.answer(&request, from).expect("answered");
        // The server verifies the answer with our password and learns its mapped address.
        assert_eq!(server_view().verify_response(&reply, &tid), Some(from));
    }

    #[test]
    fn ignores_checks_it_cannot_verify() {
        let us = agent(IceRole::Controlling);
        let from = SocketAddr::from(([198, 18, 0, 2], 20000));
        let mut wrong = server_view();
        wrong.relay_pwd = "not-our-password-000000".into();
        assert!(us.answer(&wrong.request(false).1, from).is_none());
        let mut other_ufrag = server_view();
        other_ufrag.relay_ufrag = "someone-else".into();
        assert!(us.answer(&other_ufrag.request(false).1, from).is_none());
        // Our own requests (to the server) and responses are not requests to us.
        assert!(us.answer(&us.request(true).1, from).is_none());
        assert!(us.answer(&[0, 1, 0, 0], from).is_none());
    }

    #[test]
    fn controlled_checks_never_nominate() {
        let controlled = agent(IceRole::Controlled).request(true).1;
        let mut m = Message::new();
        m.raw = controlled;
        m.decode().unwrap();
        assert!(m.contains(ATTR_ICE_CONTROLLED));
        assert!(!m.contains(ATTR_USE_CANDIDATE));
        let controlling = agent(IceRole::Controlling).request(true).1;
        let mut m = Message::new();
        m.raw = controlling;
        m.decode().unwrap();
        assert!(m.contains(ATTR_ICE_CONTROLLING) && m.contains(ATTR_USE_CANDIDATE));
    }
}
