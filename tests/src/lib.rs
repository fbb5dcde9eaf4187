//! Test and load-generation support: a wire-level WebRTC peer ([`peer::WirePeer`]), synthetic
//! verifiable media ([`media`]) and a harness that starts a relay and joins peers to it
//! ([`harness`]).

pub mod harness;
pub mod media;
pub mod peer;
