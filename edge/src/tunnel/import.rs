//! The feeds this node receives from the peer: asked for while a core here has
//! subscribers, their datagrams handed to those cores, gaps asked for again at once, and the
//! subscribers' keyframe requests and layers wanted sent to the peer.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use relay::ids::{FeedId, Sid};
use relay::sfu::cross_core::{CrossCore, FeedRoute, RelayedRtp};

use super::{Tunnel, TunnelOutput, MAX_NACK_GAP};
use crate::frame::{Control, Datagram};

/// A feed this node receives from the peer (or wants to).
#[derive(Debug)]
pub(super) struct Import {
    pub(super) sid: Sid,
    pub(super) feed_id: FeedId,
    /// The cores of this node with subscribers of it.
    pub(super) sinks: BTreeSet<usize>,
    /// The layers each core's subscribers want.
    pub(super) wanted: HashMap<usize, u8>,
    /// What the peer was last told of them.
    pub(super) told: Option<u8>,
    /// The peer's channel for it, once opened.
    pub(super) channel: Option<u32>,
    /// The highest sequence number seen of each stream.
    pub(super) highest: HashMap<u32, u16>,
}

impl Tunnel {
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

    /// A core's request about a feed of the peer: a keyframe, or the layers its subscribers
    /// want.
    pub(super) fn ask_peer(&mut self, message: CrossCore) {
        match message {
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
            CrossCore::Rtp { .. } | CrossCore::Data(_) | CrossCore::DataHold { .. } => {}
        }
    }

    pub(super) fn tell_layers(import: &mut Import, outputs: &mut VecDeque<TunnelOutput>) {
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

    /// The peer opens or closes the channel of a feed it sends.
    pub(super) fn import_control(&mut self, message: Control) {
        match message {
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
            _ => {}
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
}
