//! Sans-IO protocol pieces: each takes bytes and `now`, returns bytes or a verdict, and never
//! touches a socket or a clock.

pub mod av1;
pub mod bwe;
pub mod client_hello;
pub mod dcep;
pub mod demux;
pub mod dependency_descriptor;
pub mod dtls_record;
pub mod h264;
pub mod ice_lite;
pub mod pacer;
pub mod playout_delay;
pub mod replay;
pub mod rtcp;
pub mod rtp;
pub mod rtx;
pub mod sctp;
pub mod srtcp;
pub mod srtp;
pub mod srtp_cm;
pub mod srtp_gcm;
pub(crate) mod srtp_kdf;
pub mod twcc;
pub mod vp8;
pub mod vp9;
