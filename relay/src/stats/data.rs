//! Counters of the data channels on one core.

use serde::{Deserialize, Serialize};

/// What the core's data channels carried and refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataStats {
    /// SCTP packets received from participants (over their DTLS).
    pub sctp_packets_in: u64,
    /// SCTP packets sent to participants.
    pub sctp_packets_out: u64,
    /// SCTP packets not sent because the participant's DTLS record layer was not up or gone,
    /// or could not seal them (SCTP sends them again).
    pub sctp_packets_dropped: u64,
    /// Data channels opened, by either side.
    pub channels_opened: u64,
    /// Messages taken in from participants.
    pub messages_in: u64,
    /// Their bytes (envelope included).
    pub bytes_in: u64,
    /// Copies of messages handed to receivers' associations.
    pub messages_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Messages handed to other cores (a session spread over several).
    pub cross_core_out: u64,
    /// Messages whose envelope or DCEP could not be read, or that came on no channel: dropped.
    pub malformed: u64,
    /// Messages from participants without the `publish_data` grant: dropped.
    pub refused: u64,
    /// Times a participant's messages were left unread because it was over its rate (its
    /// SCTP window then slows it down).
    pub held_back: u64,
    /// Times a participant's messages were left unread because a receiver of its session on
    /// this core had too much waiting to be acknowledged (its SCTP window then slows it down).
    pub held_for_receivers: u64,
    /// Copies not delivered: the receiver's association was down, or it had more than its
    /// limit waiting to be acknowledged.
    pub undeliverable: u64,
}

impl DataStats {
    /// Add another core's counters.
    pub fn accumulate(&mut self, o: &DataStats) {
        self.sctp_packets_in += o.sctp_packets_in;
        self.sctp_packets_out += o.sctp_packets_out;
        self.sctp_packets_dropped += o.sctp_packets_dropped;
        self.channels_opened += o.channels_opened;
        self.messages_in += o.messages_in;
        self.bytes_in += o.bytes_in;
        self.messages_out += o.messages_out;
        self.bytes_out += o.bytes_out;
        self.cross_core_out += o.cross_core_out;
        self.malformed += o.malformed;
        self.refused += o.refused;
        self.held_back += o.held_back;
        self.held_for_receivers += o.held_for_receivers;
        self.undeliverable += o.undeliverable;
    }
}
