//! Counters of one core's ICE-TCP connections.

use serde::{Deserialize, Serialize};

/// The TCP side of a core ([`crate::io::ice_tcp`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IceTcpStats {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections open at the snapshot.
    pub connections_open: u64,
    /// Connections closed as soon as accepted: the core had its maximum open, or one from the
    /// same address.
    pub connections_refused: u64,
    /// Packets (RFC 4571 frames) received on connections.
    pub frames_in: u64,
    /// Packets for a connection dropped because its send queue was full (the peer reads too
    /// slowly for what it is sent).
    pub frames_dropped: u64,
    /// Packets received on connections longer than the relay takes (dropped).
    pub frames_too_long: u64,
}

impl IceTcpStats {
    /// Add another core's counters.
    pub fn accumulate(&mut self, o: &IceTcpStats) {
        self.connections_accepted += o.connections_accepted;
        self.connections_open += o.connections_open;
        self.connections_refused += o.connections_refused;
        self.frames_in += o.frames_in;
        self.frames_dropped += o.frames_dropped;
        self.frames_too_long += o.frames_too_long;
    }
}
