//! The edge: trunks that carry one session's feeds between relay nodes over QUIC.
//!
//! Between two nodes that share sessions there is one QUIC connection, its peer authenticated
//! by a certificate from the cluster's CA ([`cluster`]). Media crosses it as datagrams and
//! control as messages on one stream ([`frame`]); which feeds cross, each once per trunk
//! however many subscribe at the far end, is [`routing`]'s pure bookkeeping. [`endpoint`]
//! sets up QUIC for a backbone (datagrams large enough for browser RTP, a short send buffer so
//! stale media is dropped rather than queued) and opens trunks.

pub mod cluster;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod fuzzing;
pub mod node;
pub mod routing;
pub mod tunnel;

pub use error::EdgeError;

/// The trunk protocol version, exchanged in [`frame::Control::Hello`]: nodes speaking another
/// are refused with a reason.
pub const VERSION: u32 = 1;
