#![forbid(unsafe_code)]
//! The WebRTC.ai media relay.
//!
//! Thread-per-core: each core runs its own `tokio-uring` runtime with its own UDP socket and its
//! own sessions; nothing on the packet path is shared between cores. Within a core, all protocol
//! and forwarding logic is the sans-IO [`sfu::worker::Worker`]; the I/O shell in [`io`] only
//! moves datagrams, timers and DTLS records between the socket and the worker.
//!
//! The control plane (signalling) talks to the relay through [`RelayHandle`]: create a session,
//! add participants, declare feeds, subscribe; the relay reports [`control::Event`]s back.

#[doc(hidden)]
pub mod bench;
mod command;
pub mod config;
pub mod control;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod io;
mod layout;
pub mod record;
mod recorder;
mod relay;
pub mod remote;
pub mod request;
pub mod sfu;
pub mod stats;
pub mod trunk;

pub use control::{Event, FeedDescription, MediaKind, ParticipantConfig, ParticipantInfo};

/// A hash map for the per-packet path: foldhash instead of std's SipHash, several times
/// cheaper for the small keys looked up for every copy (a participant's key, an SSRC), and
/// seeded at random per map as std's is, so that keys a peer picks cannot be aimed at
/// collisions. (Its resistance is weaker than SipHash's; every map that uses it is keyed by
/// what the relay assigned or by SSRCs a participant declared and authenticated.)
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub use error::{ControlError, Error};
pub use recorder::{RecordingRequest, MIN_FREE_BYTES};
pub use relay::{Relay, RelayConfig, RelayHandle, DEFAULT_SPREAD_AFTER};
pub use request::{Control, Reply, Request};
