//! What can go wrong at the edge.

use crate::frame::FrameError;

/// Why a trunk could not be set up, or ended.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A node id that cannot name a certificate (a DNS label: lowercase letters, digits and
    /// dashes, 1 to 63 of them).
    #[error("node id {0:?} is not a DNS label (a-z, 0-9 and -, at most 63)")]
    BadNodeId(String),
    /// Making or reading a certificate or key failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// TLS or QUIC refused the configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// Binding the UDP socket, or another I/O failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The QUIC handshake failed (a peer without a certificate from the cluster's CA among
    /// the reasons).
    #[error("connecting to {peer}: {reason}")]
    Connect {
        /// Who was being connected to.
        peer: String,
        /// What QUIC or TLS said.
        reason: String,
    },
    /// The connection ended.
    #[error("trunk closed: {0}")]
    Closed(String),
    /// The peer sent what does not read.
    #[error("peer sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer is not who it says, or speaks another version.
    #[error("peer refused: {0}")]
    Refused(String),
}
