//! The I/O shell: one `tokio-uring` runtime per core that moves datagrams, timers, control
//! commands and DTLS records between the core's UDP socket and its [`crate::sfu::worker::Worker`].
//! This is the only place that reads the clock.

pub(crate) mod batch;
pub(crate) mod core;
pub mod dtls;
pub(crate) mod gso;
pub mod ice_tcp;
pub(crate) mod socket;

/// How a core hands datagrams to the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Egress {
    /// One `sendmmsg` system call per batch of up to 64 datagrams (the default: measured
    /// faster, see docs/performance.md).
    #[default]
    Sendmmsg,
    /// One io_uring send operation per datagram, all of a batch submitted together.
    Uring,
}
