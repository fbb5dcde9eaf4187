//! QUIC for the backbone: one endpoint per node that both opens and accepts trunks, each
//! trunk authenticated both ways by the cluster's CA and begun with a [`Control::Hello`] each
//! way.
//!
//! The transport is set for media rather than for downloads:
//! - Datagrams must hold a browser's RTP packet (up to about 1200 bytes of RTP, more with
//!   RTX and extensions) plus the datagram header; quinn's default first MTU of 1200 leaves
//!   about 1150 bytes. Trunks start at [`INITIAL_MTU`] and discover up to [`MAX_MTU`]: a
//!   path that cannot carry it falls back to 1200 and the edge counts the packets too large
//!   for it.
//! - Datagrams have no expiry in QUIC; a short send buffer ([`DATAGRAM_SEND_BUFFER`]) makes
//!   a congested trunk drop the oldest media instead of delivering it late.
//! - Keep-alives every 500 ms and a 2 s idle timeout: a node that stops is noticed within
//!   2 s even when no media flows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use rustls_pki_types::CertificateDer;

use crate::cluster::{node_of, NodeIdentity};
use crate::frame::{Control, ControlReader, Datagram};
use crate::EdgeError;

/// The ALPN of a trunk: a node never mistakes another QUIC service for a peer.
pub const ALPN: &[u8] = b"webrtcai-trunk/1";

/// The UDP payload a trunk starts with: IPv6's 1500-byte Ethernet MTU less its headers.
pub const INITIAL_MTU: u16 = 1452;

/// The largest UDP payload MTU discovery tries: IPv4 on 1500-byte Ethernet.
pub const MAX_MTU: u16 = 1472;

/// Bytes of datagrams queued to send before the oldest are dropped (about 100 ms at
/// 20 Mbit/s).
pub const DATAGRAM_SEND_BUFFER: usize = 256 * 1024;

/// Bytes of received datagrams held before the oldest are dropped.
pub const DATAGRAM_RECEIVE_BUFFER: usize = 4 << 20;

/// How long the two Hellos may take once QUIC is up.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The application close code for a refused peer.
const REFUSED: u32 = 1;

fn config_error(e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Config(e.to_string())
}

/// The transport settings of every trunk.
pub fn transport_config() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.initial_mtu(INITIAL_MTU);
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_MTU);
    t.mtu_discovery_config(Some(mtu));
    t.datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    t.datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER));
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    // 2 s fits an IdleTimeout: it takes up to 2^62 ms.
    t.max_idle_timeout(IdleTimeout::try_from(Duration::from_secs(2)).ok());
    t.max_concurrent_bidi_streams(VarInt::from_u32(1));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t
}

/// A QUIC endpoint on `bind` that accepts trunks from, and opens them to, nodes whose
/// certificates the cluster's CA signed.
pub fn endpoint(bind: SocketAddr, identity: &NodeIdentity) -> Result<quinn::Endpoint, EdgeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.ca.clone()).map_err(config_error)?;
    let roots = Arc::new(roots);
    let transport = Arc::new(transport_config());

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(config_error)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
        .map_err(config_error)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let server = QuicServerConfig::try_from(server).map_err(config_error)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport.clone());

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key.clone_key())
        .map_err(config_error)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    let client = QuicClientConfig::try_from(client).map_err(config_error)?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport);

    let mut endpoint = quinn::Endpoint::server(server, bind)?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// Who this node is on its trunks.
#[derive(Debug, Clone)]
pub struct Local {
    /// The node's id (its certificate's name).
    pub node: String,
    /// Its region.
    pub region: String,
}

impl Local {
    fn hello(&self) -> Control {
        Control::Hello {
            node: self.node.clone(),
            region: self.region.clone(),
            version: crate::VERSION,
        }
    }
}

/// One trunk: a QUIC connection to another node and its control stream.
pub struct Trunk {
    /// The connection (datagrams, statistics).
    pub connection: quinn::Connection,
    /// The peer's node id, as its certificate and its Hello both say.
    pub peer: String,
    /// The peer's region, as its Hello says.
    pub peer_region: String,
    /// Whether this node opened it.
    pub opened_here: bool,
    sender: ControlSender,
    receiver: ControlReceiver,
}

/// The sending half of a trunk's control stream.
pub struct ControlSender {
    send: quinn::SendStream,
}

impl ControlSender {
    /// Send a control message.
    pub async fn send(&mut self, message: &Control) -> Result<(), EdgeError> {
        self.send
            .write_all(&message.encode())
            .await
            .map_err(|e| EdgeError::Closed(e.to_string()))
    }
}

/// The receiving half of a trunk's control stream.
pub struct ControlReceiver {
    connection: quinn::Connection,
    recv: quinn::RecvStream,
    reader: ControlReader,
    buf: Vec<u8>,
}

impl ControlReceiver {
    /// The next control message; an error when the trunk ends or the peer sends what does
    /// not read (the trunk is then closed with the reason).
    pub async fn recv(&mut self) -> Result<Control, EdgeError> {
        loop {
            match self.reader.poll_message() {
                Some(Ok(message)) => return Ok(message),
                Some(Err(e)) => {
                    self.connection
                        .close(VarInt::from_u32(REFUSED), e.to_string().as_bytes());
                    return Err(e.into());
                }
                None => {}
            }
            match self.recv.read(&mut self.buf).await {
                Ok(Some(n)) => self.reader.handle_bytes(&self.buf[..n]),
                Ok(None) => return Err(EdgeError::Closed("the control stream ended".into())),
                Err(e) => return Err(EdgeError::Closed(e.to_string())),
            }
        }
    }
}

impl std::fmt::Debug for Trunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trunk")
            .field("peer", &self.peer)
            .field("peer_region", &self.peer_region)
            .field("remote", &self.connection.remote_address())
            .finish()
    }
}

impl Trunk {
    /// Open a trunk to node `peer` at `addr`: its certificate must name `peer`.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        peer: &str,
        local: &Local,
    ) -> Result<Trunk, EdgeError> {
        let connect_error = |reason: String| EdgeError::Connect {
            peer: format!("{peer} at {addr}"),
            reason,
        };
        let connection = endpoint
            .connect(addr, peer)
            .map_err(|e| connect_error(e.to_string()))?
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        send.write_all(&local.hello().encode())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let mut trunk = Trunk::new(connection, send, recv, true);
        trunk.greeted_by(peer).await?;
        Ok(trunk)
    }

    /// Accept a trunk another node opened: its certificate names it.
    pub async fn accept(incoming: quinn::Incoming, local: &Local) -> Result<Trunk, EdgeError> {
        let from = incoming.remote_address();
        let connect_error = |reason: String| EdgeError::Connect {
            peer: from.to_string(),
            reason,
        };
        let connection = incoming.await.map_err(|e| connect_error(e.to_string()))?;
        let named = certified_node(&connection)?;
        let (send, recv) = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi())
            .await
            .map_err(|_| connect_error("no control stream".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        let mut trunk = Trunk::new(connection, send, recv, false);
        trunk.greeted_by(&named).await?;
        trunk.sender.send(&local.hello()).await?;
        Ok(trunk)
    }

    fn new(
        connection: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        opened_here: bool,
    ) -> Trunk {
        Trunk {
            connection: connection.clone(),
            peer: String::new(),
            peer_region: String::new(),
            opened_here,
            sender: ControlSender { send },
            receiver: ControlReceiver {
                connection,
                recv,
                reader: ControlReader::default(),
                buf: vec![0; 16 * 1024],
            },
        }
    }

    /// The connection and the two halves of the control stream, for tasks of their own.
    pub fn split(self) -> (quinn::Connection, ControlSender, ControlReceiver) {
        (self.connection, self.sender, self.receiver)
    }

    /// Read the peer's Hello: it must be from `expected` (whom its certificate names) and
    /// speak this version; otherwise the trunk is closed with the reason.
    async fn greeted_by(&mut self, expected: &str) -> Result<(), EdgeError> {
        let hello = tokio::time::timeout(HELLO_TIMEOUT, self.recv_control())
            .await
            .map_err(|_| self.refuse("no hello".into()))??;
        match hello {
            Control::Hello {
                node,
                region,
                version,
            } => {
                if version != crate::VERSION {
                    return Err(self.refuse(format!(
                        "{node} speaks trunk version {version}, this node {}",
                        crate::VERSION
                    )));
                }
                if node != expected {
                    return Err(self.refuse(format!(
                        "the hello names {node:?}, the certificate {expected:?}"
                    )));
                }
                self.peer = node;
                self.peer_region = region;
                Ok(())
            }
            other => Err(self.refuse(format!("expected a hello, got {other:?}"))),
        }
    }

    fn refuse(&self, reason: String) -> EdgeError {
        self.connection
            .close(VarInt::from_u32(REFUSED), reason.as_bytes());
        EdgeError::Refused(reason)
    }

    /// Send a control message.
    pub async fn send_control(&mut self, message: &Control) -> Result<(), EdgeError> {
        self.sender.send(message).await
    }

    /// The next control message (see [`ControlReceiver::recv`]).
    pub async fn recv_control(&mut self) -> Result<Control, EdgeError> {
        self.receiver.recv().await
    }

    /// Send a media datagram (`scratch` is reused for its bytes). Err where it cannot go:
    /// larger than the path takes now, or the trunk closed.
    pub fn send_datagram(
        &self,
        datagram: &Datagram<'_>,
        scratch: &mut Vec<u8>,
    ) -> Result<(), EdgeError> {
        datagram.write(scratch);
        self.connection
            .send_datagram(Bytes::copy_from_slice(scratch))
            .map_err(|e| EdgeError::Closed(e.to_string()))
    }

    /// The largest datagram the trunk can carry now (it grows as MTU discovery succeeds).
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.connection.max_datagram_size()
    }
}

/// The node a connection's peer certificate names (the TLS layer already checked that the
/// cluster's CA signed it).
fn certified_node(connection: &quinn::Connection) -> Result<String, EdgeError> {
    let refuse = |reason: &str| {
        connection.close(VarInt::from_u32(REFUSED), reason.as_bytes());
        EdgeError::Refused(reason.to_string())
    };
    let identity = connection
        .peer_identity()
        .ok_or_else(|| refuse("no certificate"))?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| refuse("no certificate"))?;
    let first = chain.first().ok_or_else(|| refuse("no certificate"))?;
    node_of(first).map_err(|e| refuse(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterCa;
    use relay::sfu::cross_core::RtpInfo;

    fn local(node: &str) -> Local {
        Local {
            node: node.into(),
            region: format!("region-{node}"),
        }
    }

    fn identity(ca: &ClusterCa, node: &str) -> NodeIdentity {
        NodeIdentity::from_issued(ca, &ca.issue(node).unwrap()).unwrap()
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// Open a trunk from `b` to `a`, accepting it at `a`: both ends' results.
    async fn trunk(
        a: &quinn::Endpoint,
        a_local: &Local,
        b: &quinn::Endpoint,
        b_local: &Local,
        name_a_as: &str,
    ) -> (Result<Trunk, EdgeError>, Result<Trunk, EdgeError>) {
        let addr = a.local_addr().unwrap();
        let accept = async {
            let incoming = a.accept().await.expect("endpoint open");
            Trunk::accept(incoming, a_local).await
        };
        let connect = Trunk::connect(b, addr, name_a_as, b_local);
        tokio::join!(accept, connect)
    }

    #[tokio::test]
    async fn a_trunk_carries_control_and_browser_sized_rtp_as_datagrams() {
        let ca = ClusterCa::generate("test").unwrap();
        let a = endpoint(loopback(), &identity(&ca, "a")).unwrap();
        let b = endpoint(loopback(), &identity(&ca, "b")).unwrap();
        let (at_a, at_b) = trunk(&a, &local("a"), &b, &local("b"), "a").await;
        let (mut at_a, mut at_b) = (at_a.unwrap(), at_b.unwrap());
        assert_eq!(
            (at_a.peer.as_str(), at_a.peer_region.as_str()),
            ("b", "region-b")
        );
        assert_eq!(
            (at_b.peer.as_str(), at_b.peer_region.as_str()),
            ("a", "region-a")
        );

        let subscribe = Control::Subscribe {
            sid: "c/room".into(),
            feed_id: "cam".into(),
        };
        at_b.send_control(&subscribe).await.unwrap();
        assert_eq!(at_a.recv_control().await.unwrap(), subscribe);

        // A browser's largest RTP packet (1200 bytes with its RTX header) and the
        // datagram's largest header fit from the first packet on.
        let max = at_a.max_datagram_size().unwrap();
        assert!(
            max >= 1200 + crate::frame::MAX_DATAGRAM_HEADER,
            "max datagram {max}"
        );
        let mut packet = vec![0u8; 1200];
        packet[0] = 0x80;
        packet[1] = 96;
        packet[2..4].copy_from_slice(&7u16.to_be_bytes());
        let info = RtpInfo {
            ssrc: 0,
            sequence: 7,
            timestamp: 0,
            payload_len: 1188,
            playout_delay: None,
            layer: 1,
            keyframe: true,
            frame_size: Some((640, 360)),
            layers_off: 0,
            reference_timestamp: None,
            svc: None,
        };
        let sent = Datagram {
            channel: 5,
            resent: false,
            info,
            packet: &packet,
        };
        let mut scratch = vec![];
        at_a.send_datagram(&sent, &mut scratch).unwrap();
        let got = at_b.connection.read_datagram().await.unwrap();
        assert_eq!(Datagram::parse(&got).unwrap(), sent);
    }

    #[tokio::test]
    async fn a_node_certified_by_another_ca_is_refused_both_ways() {
        let ca = ClusterCa::generate("test").unwrap();
        let stranger_ca = ClusterCa::generate("other").unwrap();
        let a = endpoint(loopback(), &identity(&ca, "a")).unwrap();
        let b = endpoint(loopback(), &identity(&stranger_ca, "b")).unwrap();
        // b opens to a: a refuses b's certificate, b refuses a's.
        let (at_a, at_b) = trunk(&a, &local("a"), &b, &local("b"), "a").await;
        assert!(at_a.is_err() && at_b.is_err(), "{at_a:?} {at_b:?}");
        let reason = at_b.unwrap_err().to_string();
        assert!(reason.contains("connecting to a"), "{reason}");
    }

    #[tokio::test]
    async fn a_node_answering_to_another_name_is_refused() {
        let ca = ClusterCa::generate("test").unwrap();
        let a = endpoint(loopback(), &identity(&ca, "a")).unwrap();
        let b = endpoint(loopback(), &identity(&ca, "b")).unwrap();
        // b means to reach "c", but a's certificate names "a".
        let (at_a, at_b) = trunk(&a, &local("a"), &b, &local("b"), "c").await;
        assert!(at_a.is_err(), "{at_a:?}");
        let reason = at_b.unwrap_err().to_string();
        assert!(reason.contains("not valid for name"), "{reason}");
    }

    #[tokio::test]
    async fn a_node_of_another_version_or_name_is_refused_with_the_reason() {
        let ca = ClusterCa::generate("test").unwrap();
        let a = endpoint(loopback(), &identity(&ca, "a")).unwrap();
        let b = endpoint(loopback(), &identity(&ca, "b")).unwrap();
        let addr = a.local_addr().unwrap();
        for (hello, why) in [
            (
                Control::Hello {
                    node: "b".into(),
                    region: "r".into(),
                    version: crate::VERSION + 1,
                },
                "speaks trunk version 2",
            ),
            (
                Control::Hello {
                    node: "z".into(),
                    region: "r".into(),
                    version: crate::VERSION,
                },
                "the hello names \"z\", the certificate \"b\"",
            ),
        ] {
            let accept = async {
                let incoming = a.accept().await.expect("endpoint open");
                Trunk::accept(incoming, &local("a")).await
            };
            let raw = async {
                let c = b.connect(addr, "a").unwrap().await.unwrap();
                let (mut send, _recv) = c.open_bi().await.unwrap();
                send.write_all(&hello.encode()).await.unwrap();
                c.closed().await
            };
            let (at_a, closed) = tokio::join!(accept, raw);
            let refused = at_a.unwrap_err().to_string();
            assert!(refused.contains(why), "{refused}");
            assert!(closed.to_string().contains(why), "{closed}");
        }
    }
}
