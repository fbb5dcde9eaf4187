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

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use relay::control::{FeedDescription, MediaKind};
use relay::ids::{FeedId, Sid};
use relay::sfu::cross_core::{CrossCore, FeedRoute, RelayedRtp};
use relay::sfu::data::{Relayed, RelayedData};

use crate::frame::{Control, Datagram};
use crate::routing::TrunkRoutes;

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

/// A feed this node receives from the peer (or wants to).
#[derive(Debug)]
struct Import {
    sid: Sid,
    feed_id: FeedId,
    /// The cores of this node with subscribers of it.
    sinks: BTreeSet<usize>,
    /// The layers each core's subscribers want.
    wanted: HashMap<usize, u8>,
    /// What the peer was last told of them.
    told: Option<u8>,
    /// The peer's channel for it, once opened.
    channel: Option<u32>,
    /// The highest sequence number seen of each stream.
    highest: HashMap<u32, u16>,
}

/// A feed this node sends the peer.
#[derive(Debug)]
struct Export {
    route: FeedRoute,
    /// Simulcast video, whose layers can be shed.
    simulcast: bool,
    /// The layers subscribers on the peer want (bit `l`: layer `l`), once it said; the others
    /// do not cross, but for the lowest, on which a new subscriber there starts at once.
    wanted: Option<u8>,
    /// The last datagrams sent, for resending: (ssrc, sequence, bytes), shared with what
    /// went to QUIC (no copy).
    sent: VecDeque<(u32, u16, Bytes)>,
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

/// Which layers a congested trunk sheds.
#[derive(Debug, Default)]
struct Congestion {
    /// The highest layer sent; None: all.
    cap: Option<u8>,
    /// The highest layer of a simulcast feed sent since the last step.
    highest_sent: u8,
    last_step: Option<Instant>,
    keeping_up_since: Option<Instant>,
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

    /// The peer's feed `feed_id` of `sid` has the replica `route` on this node; nothing
    /// flows until a core of this node has a subscriber of it ([`Tunnel::set_sink`]).
    pub fn import(&mut self, sid: &Sid, feed_id: &FeedId, route: FeedRoute) {
        self.import_of.insert((sid.clone(), feed_id.clone()), route);
        self.imports.entry(route).or_insert_with(|| Import {
            sid: sid.clone(),
            feed_id: feed_id.clone(),
            sinks: BTreeSet::new(),
            wanted: HashMap::new(),
            told: None,
            channel: None,
            highest: HashMap::new(),
        });
    }

    /// The replica `route` goes away here (the feed ended, or the session left this node).
    pub fn drop_import(&mut self, route: FeedRoute) {
        let Some(import) = self.imports.remove(&route) else {
            return;
        };
        self.import_of
            .remove(&(import.sid.clone(), import.feed_id.clone()));
        if let Some(channel) = import.channel {
            self.import_by_channel.remove(&channel);
        }
        if !import.sinks.is_empty() {
            self.outputs.extend(
                self.routes
                    .unwant_all(&import.sid, &import.feed_id)
                    .map(TunnelOutput::Control),
            );
        }
    }

    /// Core `core` of this node starts (`on`) or stops having subscribers of the replica
    /// `route`: the first asks the peer for the feed, the last makes it stop.
    pub fn set_sink(&mut self, route: FeedRoute, core: usize, on: bool) {
        let Some(import) = self.imports.get_mut(&route) else {
            return;
        };
        let was_empty = import.sinks.is_empty();
        if on {
            import.sinks.insert(core);
        } else {
            import.sinks.remove(&core);
            import.wanted.remove(&core);
        }
        let message = match (was_empty, import.sinks.is_empty()) {
            (true, false) => self.routes.want(&import.sid, &import.feed_id),
            (false, true) => {
                import.told = None;
                import.highest.clear();
                self.routes.unwant(&import.sid, &import.feed_id)
            }
            _ => None,
        };
        self.outputs.extend(message.map(TunnelOutput::Control));
    }

    /// The relay answered an [`TunnelOutput::Export`]: the feed's route and description, or
    /// None where the feed is not (or no longer) on this node.
    pub fn handle_exported(
        &mut self,
        sid: &Sid,
        feed_id: &FeedId,
        found: Option<(FeedRoute, FeedDescription)>,
    ) {
        let Some(channel) = self.pending.remove(&(sid.clone(), feed_id.clone())) else {
            // Unsubscribed meanwhile.
            if let Some((route, _)) = found {
                if !self.export_by_route.contains_key(&route) {
                    self.outputs.push_back(TunnelOutput::Unexport { route });
                }
            }
            return;
        };
        match found {
            Some((route, feed)) => {
                self.exports.insert(
                    channel,
                    Export {
                        route,
                        simulcast: feed.kind == MediaKind::Video && feed.simulcast.is_some(),
                        wanted: None,
                        sent: VecDeque::with_capacity(RESEND_CACHE),
                    },
                );
                self.export_by_route.insert(route, channel);
                self.outputs.push_back(TunnelOutput::Control(Control::Open {
                    channel,
                    sid: sid.clone(),
                    feed,
                }));
            }
            None => {
                self.routes.handle_unsubscribe(sid, feed_id);
            }
        }
    }

    /// A feed of this node ended: its channel closes.
    pub fn feed_ended(&mut self, route: FeedRoute) {
        let Some(channel) = self.export_by_route.remove(&route) else {
            return;
        };
        self.exports.remove(&channel);
        self.routes.close(channel);
        self.outputs
            .push_back(TunnelOutput::Control(Control::Close { channel }));
    }

    /// A message from one of this node's cores for this trunk.
    pub fn handle_core(&mut self, message: CrossCore) {
        match message {
            CrossCore::Rtp { route, packet } => self.send_rtp(route, &packet),
            CrossCore::KeyframeRequest {
                route,
                layer,
                bypass_limit,
            } => {
                if let Some(channel) = self.imports.get(&route).and_then(|i| i.channel) {
                    self.outputs
                        .push_back(TunnelOutput::Control(Control::KeyframeRequest {
                            channel,
                            layer,
                            bypass_limit,
                        }));
                }
            }
            CrossCore::LayersWanted { route, core, mask } => {
                if let Some(import) = self.imports.get_mut(&route) {
                    import.wanted.insert(core, mask);
                    Self::tell_layers(import, &mut self.outputs);
                }
            }
            // Data channels do not cross trunks.
            CrossCore::Data(_) => {}
        }
    }

    fn tell_layers(import: &mut Import, outputs: &mut VecDeque<TunnelOutput>) {
        let Some(channel) = import.channel else {
            return;
        };
        let mask = import.wanted.values().fold(0, |a, m| a | m);
        if import.told != Some(mask) && !import.wanted.is_empty() {
            import.told = Some(mask);
            outputs.push_back(TunnelOutput::Control(Control::LayersWanted {
                channel,
                mask,
            }));
        }
    }

    fn send_rtp(&mut self, route: FeedRoute, packet: &RelayedRtp) {
        let Some(&channel) = self.export_by_route.get(&route) else {
            return;
        };
        let Some(export) = self.exports.get_mut(&channel) else {
            return;
        };
        if export.simulcast {
            let layer = packet.info.layer;
            if layer > 0
                && export
                    .wanted
                    .is_some_and(|mask| mask & (1 << layer.min(7)) == 0)
            {
                self.stats.unwanted += 1;
                return;
            }
            if self.congestion.cap.is_some_and(|cap| layer > cap) {
                self.stats.shed += 1;
                return;
            }
            self.congestion.highest_sent = self.congestion.highest_sent.max(layer);
        }
        if export.sent.len() >= RESEND_CACHE {
            export.sent.pop_front();
        }
        let mut bytes = Vec::new();
        Datagram {
            channel,
            resent: false,
            info: packet.info,
            packet: &packet.plain,
        }
        .write(&mut bytes);
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += bytes.len() as u64;
        let bytes = Bytes::from(bytes);
        self.outputs
            .push_back(TunnelOutput::Datagram(bytes.clone()));
        export
            .sent
            .push_back((packet.info.ssrc, packet.info.sequence, bytes));
    }

    /// Whether the trunk carried what was given it (the node looks at QUIC's send buffer):
    /// while it does not, layers are shed; once it has for a while, one comes back.
    pub fn handle_trunk_state(&mut self, now: Instant, keeping_up: bool) {
        let c = &mut self.congestion;
        let since_step = c.last_step.map(|t| now.saturating_duration_since(t));
        if keeping_up {
            let since = *c.keeping_up_since.get_or_insert(now);
            let Some(cap) = c.cap else {
                return;
            };
            if now.saturating_duration_since(since) >= PROBE_AFTER
                && since_step.is_none_or(|d| d >= PROBE_AFTER)
            {
                // Back to all once the top one seen comes back.
                c.cap = (cap + 1 < c.highest_sent).then_some(cap + 1);
                c.last_step = Some(now);
                c.keeping_up_since = Some(now);
            }
        } else {
            c.keeping_up_since = None;
            if since_step.is_some_and(|d| d < STEP_DOWN_EVERY) {
                return;
            }
            let top = c.cap.unwrap_or(c.highest_sent);
            if top > 0 {
                c.cap = Some(top - 1);
                c.last_step = Some(now);
            }
        }
        self.stats.layer_cap = c.cap;
    }

    /// A data-channel message of a participant of this node, for the session's participants
    /// on the peer's: it goes on the control stream, in order with the session's others.
    pub fn send_data(&mut self, relayed: &RelayedData) {
        use base64::Engine as _;
        // What the message takes on the stream at most (base64, and JSON's six bytes for a
        // control character in a uid): one the peer would refuse, closing the trunk, stays
        // here.
        let names = relayed.sid.0.len()
            + relayed.from.0.len()
            + relayed.targets.iter().map(|t| t.0.len() + 3).sum::<usize>();
        let size = relayed.delivered.len().div_ceil(3) * 4 + 6 * names + 256;
        if size > crate::frame::MAX_CONTROL {
            self.stats.data_too_large += 1;
            return;
        }
        self.stats.data_out += 1;
        self.outputs.push_back(TunnelOutput::Control(Control::Data {
            sid: relayed.sid.clone(),
            from: relayed.from.clone(),
            targets: relayed.targets.clone(),
            reliable: relayed.reliable,
            text: relayed.text,
            delivered: base64::engine::general_purpose::STANDARD.encode(&relayed.delivered),
        }));
    }

    /// A control message from the peer.
    pub fn handle_control(&mut self, message: Control) {
        match message {
            Control::Hello { .. } => self.stats.bad_control += 1,
            Control::Data {
                sid,
                from,
                targets,
                reliable,
                text,
                delivered,
            } => {
                use base64::Engine as _;
                let Ok(delivered) = base64::engine::general_purpose::STANDARD.decode(delivered)
                else {
                    self.stats.bad_control += 1;
                    return;
                };
                self.stats.data_in += 1;
                self.outputs
                    .push_back(TunnelOutput::Data(Arc::new(RelayedData {
                        sid,
                        from,
                        targets,
                        reliable,
                        text,
                        delivered: Bytes::from(delivered),
                    })));
            }
            Control::Subscribe { sid, feed_id } => {
                if let Some(channel) = self.routes.handle_subscribe(&sid, &feed_id) {
                    self.pending.insert((sid.clone(), feed_id.clone()), channel);
                    self.outputs
                        .push_back(TunnelOutput::Export { sid, feed_id });
                }
            }
            Control::Unsubscribe { sid, feed_id } => {
                self.pending.remove(&(sid.clone(), feed_id.clone()));
                if let Some(Control::Close { channel }) =
                    self.routes.handle_unsubscribe(&sid, &feed_id)
                {
                    if let Some(export) = self.exports.remove(&channel) {
                        self.export_by_route.remove(&export.route);
                        self.outputs.push_back(TunnelOutput::Unexport {
                            route: export.route,
                        });
                        self.outputs
                            .push_back(TunnelOutput::Control(Control::Close { channel }));
                    }
                }
            }
            Control::Open { channel, sid, feed } => {
                if self
                    .routes
                    .handle_open(channel, &sid, &feed.feed_id)
                    .is_err()
                {
                    self.stats.bad_control += 1;
                    return;
                }
                let Some(&route) = self.import_of.get(&(sid, feed.feed_id)) else {
                    self.stats.bad_control += 1;
                    return;
                };
                let Some(import) = self.imports.get_mut(&route) else {
                    return;
                };
                import.channel = Some(channel);
                import.highest.clear();
                self.import_by_channel.insert(channel, route);
                Self::tell_layers(import, &mut self.outputs);
                // The subscribers' first requests went out before there was a channel.
                self.outputs
                    .push_back(TunnelOutput::Control(Control::KeyframeRequest {
                        channel,
                        layer: None,
                        bypass_limit: true,
                    }));
            }
            Control::Close { channel } => {
                self.routes.handle_close(channel);
                if let Some(route) = self.import_by_channel.remove(&channel) {
                    if let Some(import) = self.imports.get_mut(&route) {
                        import.channel = None;
                    }
                }
            }
            Control::LayersWanted { channel, mask } => match self.exports.get_mut(&channel) {
                Some(export) => {
                    export.wanted = Some(mask);
                    self.outputs.push_back(TunnelOutput::LayersWanted {
                        route: export.route,
                        mask,
                    })
                }
                None => self.stats.bad_control += 1,
            },
            Control::KeyframeRequest {
                channel,
                layer,
                bypass_limit,
            } => match self.exports.get_mut(&channel) {
                Some(export) => {
                    // A subscriber there waits for this layer's keyframe: it crosses now,
                    // before its node's next report of the layers wanted.
                    if let (Some(l), Some(mask)) = (layer, export.wanted.as_mut()) {
                        *mask |= 1 << l.min(7);
                    }
                    self.outputs.push_back(TunnelOutput::ToCore {
                        core: export.route.core,
                        message: CrossCore::KeyframeRequest {
                            route: export.route,
                            layer,
                            bypass_limit,
                        },
                    })
                }
                None => self.stats.bad_control += 1,
            },
            Control::Nack {
                channel,
                ssrc,
                sequences,
            } => {
                let Some(export) = self.exports.get(&channel) else {
                    return;
                };
                for seq in sequences.into_iter().take(usize::from(MAX_NACK_GAP)) {
                    match export
                        .sent
                        .iter()
                        .rev()
                        .find(|(s, q, _)| *s == ssrc && *q == seq)
                    {
                        Some((_, _, bytes)) => {
                            let mut again = bytes.to_vec();
                            again[0] = 1;
                            self.stats.resent += 1;
                            self.stats.datagrams_out += 1;
                            self.stats.bytes_out += again.len() as u64;
                            self.outputs.push_back(TunnelOutput::Datagram(again.into()));
                        }
                        None => self.stats.resend_missed += 1,
                    }
                }
            }
        }
    }

    /// A media datagram from the peer, received at `arrived`.
    pub fn handle_datagram(&mut self, bytes: &[u8], arrived: SystemTime) {
        let datagram = match Datagram::parse(bytes) {
            Ok(d) => d,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let Some(&route) = self.import_by_channel.get(&datagram.channel) else {
            self.stats.unknown_channel += 1;
            return;
        };
        let Some(import) = self.imports.get_mut(&route) else {
            self.stats.unknown_channel += 1;
            return;
        };
        let (ssrc, seq) = (datagram.info.ssrc, datagram.info.sequence);
        if !datagram.resent {
            match import.highest.get(&ssrc).copied() {
                None => {
                    import.highest.insert(ssrc, seq);
                }
                Some(high) => {
                    let ahead = seq.wrapping_sub(high);
                    if (1..0x8000).contains(&ahead) {
                        if (2..=MAX_NACK_GAP).contains(&ahead) {
                            let missing: Vec<u16> =
                                (1..ahead).map(|i| high.wrapping_add(i)).collect();
                            self.stats.nacked += missing.len() as u64;
                            self.outputs.push_back(TunnelOutput::Control(Control::Nack {
                                channel: datagram.channel,
                                ssrc,
                                sequences: missing,
                            }));
                        }
                        import.highest.insert(ssrc, seq);
                    }
                }
            }
        }
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let packet = Arc::new(RelayedRtp {
            plain: datagram.packet.to_vec(),
            info: datagram.info,
            arrived: Some(arrived),
        });
        for &core in &import.sinks {
            self.outputs.push_back(TunnelOutput::ToCore {
                core,
                message: CrossCore::Rtp {
                    route,
                    packet: packet.clone(),
                },
            });
        }
    }

    /// The trunk broke: every feed received on it stops until it is opened again, and those
    /// asked for are asked again on the next trunk ([`Tunnel::resubscribe`]).
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay::control::MediaKind;
    use relay::ids::{FeedKey, SessionKey};
    use relay::sfu::cross_core::RtpInfo;

    /// The origin of the feed on node A (core 1) and its replica on node B (from B's edge,
    /// which is B's "core" 4).
    const AT_A: FeedRoute = FeedRoute {
        core: 1,
        session: SessionKey(10),
        feed: FeedKey(20),
    };
    const AT_B: FeedRoute = FeedRoute {
        core: 4,
        session: SessionKey(1),
        feed: FeedKey(1),
    };

    fn sid() -> Sid {
        "c/room".into()
    }

    fn cam() -> FeedId {
        "cam".into()
    }

    fn description() -> FeedDescription {
        FeedDescription {
            feed_id: cam(),
            kind: MediaKind::Video,
            ssrc: None,
            clock_rate: 90_000,
            payload_types: vec![96],
            header_extensions: vec![],
            nack: true,
            rtx_ssrc: None,
            rtx_payload_types: vec![],
            codecs: vec![],
            simulcast: None,
            screen: false,
        }
    }

    fn rtp(seq: u16, layer: u8) -> CrossCore {
        let mut plain = vec![0x80, 96, 0, 0, 0, 0, 0, 9, 0, 0, 0, 7, 1, 2, 3];
        plain[2..4].copy_from_slice(&seq.to_be_bytes());
        CrossCore::Rtp {
            route: AT_A,
            packet: Arc::new(RelayedRtp {
                plain,
                info: RtpInfo {
                    ssrc: 7,
                    sequence: seq,
                    timestamp: 9,
                    payload_len: 3,
                    playout_delay: None,
                    layer,
                    keyframe: seq == 0,
                    frame_size: (seq == 0).then_some((1280, 720)),
                    layers_off: 0,
                    reference_timestamp: None,
                    svc: None,
                },
                arrived: None,
            }),
        }
    }

    /// Two nodes' tunnels of one trunk, with what each hands its node.
    struct Pair {
        a: Tunnel,
        b: Tunnel,
        /// What reached A's node (not the peer).
        at_a: Vec<TunnelOutput>,
        /// What reached B's node.
        at_b: Vec<TunnelOutput>,
        /// Datagrams from A that the trunk loses, by their order.
        lose: Vec<usize>,
        sent: usize,
        /// What A's relay says the feed is.
        feed: FeedDescription,
    }

    impl Pair {
        fn new() -> Pair {
            Pair {
                a: Tunnel::new(),
                b: Tunnel::new(),
                at_a: vec![],
                at_b: vec![],
                lose: vec![],
                sent: 0,
                feed: description(),
            }
        }

        /// Deliver everything until both are quiet; A's relay answers exports with the feed.
        fn run(&mut self) {
            loop {
                let mut moved = false;
                while let Some(out) = self.a.poll_output() {
                    moved = true;
                    match out {
                        TunnelOutput::Control(c) => self.b.handle_control(c),
                        TunnelOutput::Datagram(d) => {
                            self.sent += 1;
                            if !self.lose.contains(&self.sent) {
                                self.b.handle_datagram(&d, SystemTime::UNIX_EPOCH);
                            }
                        }
                        TunnelOutput::Export { sid, feed_id } => {
                            self.a
                                .handle_exported(&sid, &feed_id, Some((AT_A, self.feed.clone())));
                            self.at_a.push(TunnelOutput::Export { sid, feed_id });
                        }
                        other => self.at_a.push(other),
                    }
                }
                while let Some(out) = self.b.poll_output() {
                    moved = true;
                    match out {
                        TunnelOutput::Control(c) => self.a.handle_control(c),
                        TunnelOutput::Datagram(d) => {
                            self.a.handle_datagram(&d, SystemTime::UNIX_EPOCH)
                        }
                        other => self.at_b.push(other),
                    }
                }
                if !moved {
                    return;
                }
            }
        }

        /// Sequence numbers of the packets B's cores got, per core.
        fn delivered(&self, core: usize) -> Vec<u16> {
            self.at_b
                .iter()
                .filter_map(|o| match o {
                    TunnelOutput::ToCore {
                        core: c,
                        message: CrossCore::Rtp { route, packet },
                    } if *c == core => {
                        assert_eq!(*route, AT_B);
                        Some(packet.info.sequence)
                    }
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn a_data_channel_message_crosses_as_sent_and_a_bad_one_is_counted() {
        let mut p = Pair::new();
        let sent = RelayedData {
            sid: sid(),
            from: "alice".into(),
            targets: vec!["bob".into()],
            reliable: false,
            text: true,
            delivered: Bytes::from_static(b"\x01\x00\x05alicehi \xe2\x9c\x93"),
        };
        p.a.send_data(&sent);
        p.run();
        let got: Vec<&RelayedData> = p
            .at_b
            .iter()
            .filter_map(|o| match o {
                TunnelOutput::Data(r) => Some(&**r),
                _ => None,
            })
            .collect();
        assert_eq!(got.len(), 1);
        let r = got[0];
        assert_eq!(
            (
                &r.sid,
                &r.from,
                &r.targets,
                r.reliable,
                r.text,
                &r.delivered
            ),
            (
                &sent.sid,
                &sent.from,
                &sent.targets,
                false,
                true,
                &sent.delivered
            )
        );
        assert_eq!((p.a.stats().data_out, p.b.stats().data_in), (1, 1));
        // A payload that is not base64 is the peer's fault: counted, nothing delivered.
        p.b.handle_control(Control::Data {
            sid: sid(),
            from: "x".into(),
            targets: vec![],
            reliable: true,
            text: false,
            delivered: "not base64!".into(),
        });
        assert!(p.b.poll_output().is_none());
        assert_eq!(p.b.stats().bad_control, 1);
        // A message whose frame the peer would refuse (over MAX_CONTROL once its many long
        // uids are escaped) is not sent: it would close the trunk for every session.
        let huge = RelayedData {
            targets: (0..1024)
                .map(|_| relay::ids::Uid("\u{1}".repeat(250)))
                .collect(),
            delivered: Bytes::from(vec![0u8; 256 * 1024]),
            ..sent
        };
        p.a.send_data(&huge);
        assert!(p.a.poll_output().is_none());
        assert_eq!((p.a.stats().data_out, p.a.stats().data_too_large), (1, 1));
    }

    #[test]
    fn a_feed_crosses_once_for_every_core_with_subscribers_and_stops_with_the_last() {
        let mut p = Pair::new();
        p.b.import(&sid(), &cam(), AT_B);
        p.run();
        assert_eq!(p.a.exported(), 0, "nothing flows before a subscriber");
        p.b.set_sink(AT_B, 0, true);
        p.b.set_sink(AT_B, 2, true);
        p.run();
        assert_eq!(p.a.exported(), 1);
        assert_eq!(p.at_a.len(), 2, "{:?}", p.at_a); // the export, then the first keyframe ask
        let TunnelOutput::ToCore {
            core: 1,
            message:
                CrossCore::KeyframeRequest {
                    route: AT_A,
                    layer: None,
                    bypass_limit: true,
                },
        } = p.at_a[1]
        else {
            panic!("{:?}", p.at_a[1]);
        };
        for seq in 0..3 {
            p.a.handle_core(rtp(seq, 0));
        }
        p.run();
        assert_eq!(p.a.stats().datagrams_out, 3, "once on the trunk");
        assert_eq!(p.delivered(0), [0, 1, 2]);
        assert_eq!(p.delivered(2), [0, 1, 2]);
        let TunnelOutput::ToCore {
            message: CrossCore::Rtp { packet, .. },
            ..
        } = &p.at_b[0]
        else {
            panic!()
        };
        assert!(packet.info.keyframe && packet.info.frame_size == Some((1280, 720)));

        p.b.set_sink(AT_B, 0, false);
        p.run();
        assert_eq!(p.a.exported(), 1, "core 2 still has subscribers");
        p.b.set_sink(AT_B, 2, false);
        p.run();
        assert_eq!(p.a.exported(), 0);
        assert!(matches!(
            p.at_a.last(),
            Some(TunnelOutput::Unexport { route: AT_A })
        ));
        p.a.handle_core(rtp(3, 0));
        assert!(p.a.poll_output().is_none(), "not sent once unsubscribed");
    }

    #[test]
    fn a_datagram_lost_on_the_trunk_is_asked_for_and_resent() {
        let mut p = Pair::new();
        p.b.import(&sid(), &cam(), AT_B);
        p.b.set_sink(AT_B, 0, true);
        p.run();
        p.lose = vec![3, 4];
        for seq in 0..6 {
            p.a.handle_core(rtp(seq, 0));
        }
        p.run();
        // The gap is seen at 4 and asked for at once; 5 was on its way already.
        assert_eq!(p.delivered(0), [0, 1, 4, 5, 2, 3]);
        let (a, b) = (p.a.stats(), p.b.stats());
        assert_eq!((b.nacked, a.resent, a.resend_missed), (2, 2, 0));
    }

    #[test]
    fn keyframe_requests_and_layers_wanted_reach_the_origin_core() {
        let mut p = Pair::new();
        p.b.import(&sid(), &cam(), AT_B);
        p.b.set_sink(AT_B, 0, true);
        p.b.set_sink(AT_B, 2, true);
        // Before the channel opens: remembered, told once it does.
        p.b.handle_core(CrossCore::LayersWanted {
            route: AT_B,
            core: 0,
            mask: 0b001,
        });
        p.run();
        p.b.handle_core(CrossCore::LayersWanted {
            route: AT_B,
            core: 2,
            mask: 0b100,
        });
        p.b.handle_core(CrossCore::LayersWanted {
            route: AT_B,
            core: 2,
            mask: 0b100,
        });
        p.b.handle_core(CrossCore::KeyframeRequest {
            route: AT_B,
            layer: Some(2),
            bypass_limit: false,
        });
        p.run();
        let layers: Vec<u8> = p
            .at_a
            .iter()
            .filter_map(|o| match o {
                TunnelOutput::LayersWanted { route: AT_A, mask } => Some(*mask),
                _ => None,
            })
            .collect();
        assert_eq!(
            layers,
            [0b001, 0b101],
            "combined over B's cores, each change once"
        );
        assert!(matches!(
            p.at_a.last(),
            Some(TunnelOutput::ToCore {
                core: 1,
                message: CrossCore::KeyframeRequest {
                    route: AT_A,
                    layer: Some(2),
                    bypass_limit: false
                }
            })
        ));
    }

    #[test]
    fn what_does_not_fit_the_trunk_is_counted_and_dropped() {
        let mut p = Pair::new();
        p.b.handle_datagram(&[0, 0, 0, 0, 9, 0, 0, 0], SystemTime::UNIX_EPOCH);
        p.b.handle_datagram(&[1, 2], SystemTime::UNIX_EPOCH);
        // An Open for a feed B never asked for.
        p.b.handle_control(Control::Open {
            channel: 0,
            sid: sid(),
            feed: description(),
        });
        p.a.handle_control(Control::KeyframeRequest {
            channel: 9,
            layer: None,
            bypass_limit: false,
        });
        let mut d = vec![];
        let CrossCore::Rtp { packet, .. } = rtp(1, 0) else {
            unreachable!()
        };
        Datagram {
            channel: 0,
            resent: false,
            info: packet.info,
            packet: &packet.plain,
        }
        .write(&mut d);
        p.b.handle_datagram(&d, SystemTime::UNIX_EPOCH);
        let b = p.b.stats();
        assert_eq!((b.malformed, b.bad_control, b.unknown_channel), (2, 1, 1));
        assert_eq!(p.a.stats().bad_control, 1);
        assert!(p.b.poll_output().is_none() && p.a.poll_output().is_none());
    }

    #[test]
    fn layers_no_subscriber_on_the_peer_wants_do_not_cross_but_the_lowest() {
        let mut p = Pair::new();
        p.feed.simulcast = Some(relay::control::Simulcast {
            mid: "0".into(),
            rids: vec!["q".into(), "h".into(), "f".into()],
        });
        p.b.import(&sid(), &cam(), AT_B);
        p.b.set_sink(AT_B, 0, true);
        p.run();
        let mut seq = 0;
        let mut send_layers = |p: &mut Pair| {
            let before = p.delivered(0).len();
            for layer in 0..3 {
                p.a.handle_core(rtp(seq, layer));
                seq += 1;
            }
            p.run();
            p.delivered(0).len() - before
        };
        // Before B said what its subscribers want: every layer.
        assert_eq!(send_layers(&mut p), 3);
        // B's subscribers want the middle layer only (small elements): the top one stays
        // home, the lowest still crosses.
        p.b.handle_core(CrossCore::LayersWanted {
            route: AT_B,
            core: 0,
            mask: 0b010,
        });
        p.run();
        assert_eq!(send_layers(&mut p), 2);
        assert_eq!(p.a.stats().unwanted, 1);
        // One of them grows: the top layer crosses again.
        p.b.handle_core(CrossCore::LayersWanted {
            route: AT_B,
            core: 0,
            mask: 0b111,
        });
        p.run();
        assert_eq!(send_layers(&mut p), 3);
        assert_eq!(p.a.stats().unwanted, 1);
        // Back to the middle only; then a subscriber there asks for a keyframe of the top
        // layer (its element grew): that layer crosses at once, before the next report.
        p.b.handle_core(CrossCore::LayersWanted {
            route: AT_B,
            core: 0,
            mask: 0b011,
        });
        p.run();
        assert_eq!(send_layers(&mut p), 2);
        p.b.handle_core(CrossCore::KeyframeRequest {
            route: AT_B,
            layer: Some(2),
            bypass_limit: false,
        });
        p.run();
        assert_eq!(send_layers(&mut p), 3);
    }

    #[test]
    fn a_congested_trunk_sheds_the_top_layers_one_a_second_and_takes_them_back_when_clear() {
        let mut p = Pair::new();
        p.feed.simulcast = Some(relay::control::Simulcast {
            mid: "0".into(),
            rids: vec!["q".into(), "h".into(), "f".into()],
        });
        p.b.import(&sid(), &cam(), AT_B);
        p.b.set_sink(AT_B, 0, true);
        p.run();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // One packet of each layer, and what crossed.
        let mut seq = 0;
        let mut send_layers = |p: &mut Pair| {
            let before = p.delivered(0).len();
            for layer in 0..3 {
                p.a.handle_core(rtp(seq, layer));
                seq += 1;
            }
            p.run();
            p.delivered(0).len() - before
        };
        assert_eq!(send_layers(&mut p), 3);
        p.a.handle_trunk_state(at(0), false);
        assert_eq!(p.a.stats().layer_cap, Some(1));
        assert_eq!(send_layers(&mut p), 2, "the top layer is shed");
        p.a.handle_trunk_state(at(500), false);
        assert_eq!(p.a.stats().layer_cap, Some(1), "one step a second");
        p.a.handle_trunk_state(at(1000), false);
        p.a.handle_trunk_state(at(2000), false);
        assert_eq!(
            p.a.stats().layer_cap,
            Some(0),
            "never below the lowest layer"
        );
        assert_eq!(send_layers(&mut p), 1);
        assert_eq!(p.a.stats().shed, 3);
        // Clear for 5 s: one layer back, 5 s later the next.
        p.a.handle_trunk_state(at(2100), true);
        p.a.handle_trunk_state(at(7000), true);
        assert_eq!(p.a.stats().layer_cap, Some(0));
        p.a.handle_trunk_state(at(7100), true);
        assert_eq!(p.a.stats().layer_cap, Some(1));
        p.a.handle_trunk_state(at(12200), true);
        assert_eq!(p.a.stats().layer_cap, None);
        assert_eq!(send_layers(&mut p), 3);
    }

    #[test]
    fn audio_and_single_stream_video_are_never_shed() {
        let mut p = Pair::new();
        p.feed.kind = MediaKind::Audio;
        p.b.import(&sid(), &cam(), AT_B);
        p.b.set_sink(AT_B, 0, true);
        p.run();
        let start = Instant::now();
        for s in 0..5 {
            p.a.handle_trunk_state(start + STEP_DOWN_EVERY * s, false);
            p.a.handle_core(rtp(s as u16, 0));
        }
        p.run();
        assert_eq!(p.delivered(0).len(), 5);
        assert_eq!(p.a.stats().shed, 0);
    }

    #[test]
    fn after_a_broken_trunk_the_feeds_wanted_are_asked_for_again() {
        let mut p = Pair::new();
        p.b.import(&sid(), &cam(), AT_B);
        p.b.set_sink(AT_B, 0, true);
        p.run();
        p.a.reset();
        p.b.reset();
        let mut fresh = Pair::new();
        fresh.a = std::mem::take(&mut p.a);
        fresh.b = std::mem::take(&mut p.b);
        fresh.run();
        assert!(fresh
            .at_a
            .iter()
            .any(|o| matches!(o, TunnelOutput::Unexport { route: AT_A })));
        assert_eq!(fresh.a.exported(), 1, "asked again on the new trunk");
        fresh.a.handle_core(rtp(0, 0));
        fresh.run();
        assert_eq!(fresh.delivered(0), [0]);
    }
}
