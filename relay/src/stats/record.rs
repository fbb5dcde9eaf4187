//! Counters of what one core handed the recorder.

use serde::{Deserialize, Serialize};

/// Packets of recorded feeds, on the feeds' own cores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordStats {
    /// Packets handed to the recorder's queue.
    pub packets: u64,
    /// Packets the queue had no room for (the recorder behind a slow disk): dropped, for the
    /// recording only.
    pub queue_full: u64,
    /// Packets of a codec a WebM file cannot hold (H.264): not handed over.
    pub unsupported: u64,
}

impl RecordStats {
    /// Add another core's counters.
    pub fn accumulate(&mut self, o: &RecordStats) {
        self.packets += o.packets;
        self.queue_full += o.queue_full;
        self.unsupported += o.unsupported;
    }
}
