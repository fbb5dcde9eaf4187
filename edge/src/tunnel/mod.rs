//! One trunk's media, both ways (sans-IO): the feeds this node sends its peer and those it
//! receives from it.
//!
//! The edge is a sink like any core: a feed's origin core hands it the decrypted packets
//! (`CrossCore::Rtp`) and it writes them into datagrams; at the far end the edge hands each
//! packet to the cores with subscribers, as an origin core would, with the route of the
//! replica that node keeps. Keyframe requests and the layers wanted (dynacast) travel the
//! other way as control messages. Loss on the trunk is repaired on the trunk, hop by hop:
//! the receiving edge sees a gap in a stream's sequence numbers and asks again at once, and
//! the sending edge resends from the last [`RESEND_CACHE`] datagrams of the feed.
//!
//! A congested trunk sheds the highest simulcast layers first, across all its feeds, and never
//! audio: the node reports whether the trunk keeps up ([`Tunnel::handle_trunk_state`]); while
//! it does not, the highest layer still sent stops crossing, one step every
//! [`STEP_DOWN_EVERY`]; after [`PROBE_AFTER`] of keeping up, one layer comes back. The far
//! side's subscribers see the layer stop, as when a publisher stops sending one, and move to
//! the layers that still come.

mod congestion;
mod data;
mod export;
mod import;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use relay::ids::{FeedId, Sid};
use relay::sfu::cross_core::{CrossCore, FeedRoute};
use relay::sfu::data::Relayed;

use crate::frame::Control;
use crate::routing::TrunkRoutes;

use congestion::Congestion;
use export::Export;
use import::Import;

/// While a trunk does not keep up, it sheds one more layer this often (a step takes effect
/// at once, but the send buffer drains only as fast as the trunk does).
pub const STEP_DOWN_EVERY: Duration = Duration::from_secs(1);

/// A trunk that kept up this long takes one layer back.
pub const PROBE_AFTER: Duration = Duration::from_secs(5);

/// Datagrams of each sent feed kept for resending: about a second of a 2 Mbit/s video.
pub const RESEND_CACHE: usize = 256;

/// The longest run of missing packets asked for again; a longer gap is a restart of the
/// stream or an outage, which a keyframe repairs better.
pub const MAX_NACK_GAP: u16 = 64;

/// What the tunnel asks of the node.
#[derive(Debug)]
pub enum TunnelOutput {
    /// A control message for the peer.
    Control(Control),
    /// A media datagram for the peer.
    Datagram(Bytes),
    /// A message for one of this node's cores.
    ToCore {
        /// The core.
        core: usize,
        /// The message.
        message: CrossCore,
    },
    /// The peer wants a feed of this node: the node makes its relay send the feed to the
    /// edge, then calls [`Tunnel::exported`].
    Export {
        /// The session.
        sid: Sid,
        /// The feed.
        feed_id: FeedId,
    },
    /// The peer no longer wants a feed of this node.
    Unexport {
        /// The feed's route on this node.
        route: FeedRoute,
    },
    /// The layers the peer wants of a feed of this node changed (the node combines them with
    /// other trunks' before telling the feed's core).
    LayersWanted {
        /// The feed's route on this node.
        route: FeedRoute,
        /// Bit `l`: layer `l`.
        mask: u8,
    },
    /// A data-channel message of a participant of the peer, for the session's participants
    /// on this node: the node hands it to each core of the session.
    Data(Relayed),
}

/// Counters of one tunnel.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TunnelStats {
    /// Media datagrams sent (resent ones included).
    pub datagrams_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Media datagrams received and handed to cores.
    pub datagrams_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Datagrams resent on the peer's NACKs.
    pub resent: u64,
    /// Sequence numbers this node asked the peer for again.
    pub nacked: u64,
    /// NACKed packets no longer at hand.
    pub resend_missed: u64,
    /// Datagrams that did not parse.
    pub malformed: u64,
    /// Datagrams of a channel not open (late after a close, or never opened).
    pub unknown_channel: u64,
    /// Control messages from the peer that did not fit the trunk's state.
    pub bad_control: u64,
    /// Video packets not sent because their layer was shed while the trunk was congested.
    pub shed: u64,
    /// Video packets not sent because no subscriber on the peer wants their layer.
    pub unwanted: u64,
    /// The highest simulcast layer sent now (None: every layer).
    pub layer_cap: Option<u8>,
    /// Data-channel messages sent to the peer.
    pub data_out: u64,
    /// Data-channel messages received from the peer.
    pub data_in: u64,
    /// Data-channel messages too large for the trunk's control stream (many long uids
    /// named), not sent.
    pub data_too_large: u64,
}

/// One trunk's media state.
#[derive(Debug, Default)]
pub struct Tunnel {
    routes: TrunkRoutes,
    imports: HashMap<FeedRoute, Import>,
    import_of: HashMap<(Sid, FeedId), FeedRoute>,
    import_by_channel: HashMap<u32, FeedRoute>,
    /// Channels asked for, waiting for the relay.
    pending: HashMap<(Sid, FeedId), u32>,
    exports: HashMap<u32, Export>,
    export_by_route: HashMap<FeedRoute, u32>,
    outputs: VecDeque<TunnelOutput>,
    stats: TunnelStats,
    congestion: Congestion,
}

impl Tunnel {
    /// A tunnel with nothing on it.
    pub fn new() -> Tunnel {
        Tunnel::default()
    }

    /// Counters.
    pub fn stats(&self) -> TunnelStats {
        self.stats
    }

    /// Feeds this node sends the peer now.
    pub fn exported(&self) -> usize {
        self.exports.len()
    }

    /// A message from one of this node's cores for this trunk.
    pub fn handle_core(&mut self, message: CrossCore) {
        match message {
            CrossCore::Rtp { route, packet } => self.send_rtp(route, &packet),
            CrossCore::KeyframeRequest { .. } | CrossCore::LayersWanted { .. } => {
                self.ask_peer(message)
            }
            // Data-channel messages go to the peers of their session ([`Tunnel::send_data`]).
            // A hold is not carried to other nodes: there, the bound on what waits for a
            // receiver is what applies.
            CrossCore::Data(_) | CrossCore::DataHold { .. } => {}
        }
    }

    /// A control message from the peer.
    pub fn handle_control(&mut self, message: Control) {
        match message {
            Control::Hello { .. } => self.stats.bad_control += 1,
            Control::Data { .. } => self.receive_data(message),
            Control::Open { .. } | Control::Close { .. } => self.import_control(message),
            Control::Subscribe { .. }
            | Control::Unsubscribe { .. }
            | Control::LayersWanted { .. }
            | Control::KeyframeRequest { .. }
            | Control::Nack { .. } => self.export_control(message),
        }
    }

    /// The trunk broke: every feed received on it stops until it is opened again, and those
    /// asked for are asked again on the next trunk.
    pub fn reset(&mut self) {
        let mut fresh = Tunnel::default();
        for (route, import) in self.imports.drain() {
            fresh.import(&import.sid, &import.feed_id, route);
            let wanted = import.wanted;
            for core in import.sinks {
                fresh.set_sink(route, core, true);
            }
            if let Some(i) = fresh.imports.get_mut(&route) {
                i.wanted = wanted;
            }
        }
        // What a fresh tunnel would ask: the node sends it on the new trunk.
        let asks: Vec<TunnelOutput> = fresh.outputs.drain(..).collect();
        let unexports = self
            .exports
            .values()
            .map(|e| TunnelOutput::Unexport { route: e.route });
        fresh.outputs.extend(unexports);
        fresh.outputs.extend(asks);
        fresh.stats = self.stats;
        *self = fresh;
    }

    /// The next thing for the node to do.
    pub fn poll_output(&mut self) -> Option<TunnelOutput> {
        self.outputs.pop_front()
    }

    /// The next thing for the node to do if it is a media datagram: what a packet from a core
    /// makes, sent on the hot path without the rest.
    pub fn poll_datagram(&mut self) -> Option<Bytes> {
        if !matches!(self.outputs.front(), Some(TunnelOutput::Datagram(_))) {
            return None;
        }
        match self.outputs.pop_front() {
            Some(TunnelOutput::Datagram(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// Whether something is left for the node to do.
    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }
}
