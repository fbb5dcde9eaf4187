//! The I/O shell: one `tokio-uring` runtime per core that moves datagrams, timers, control
//! commands and DTLS records between the core's UDP socket and its [`crate::sfu::worker::Worker`].
//! This is the only place that reads the clock.

pub(crate) mod core;
pub mod dtls;
pub(crate) mod socket;
