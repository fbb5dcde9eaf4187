//! The feeds this node sends the peer: exported while the peer asks for them, each packet a
//! datagram on its channel (unless congestion sheds its layer or nobody there wants it),
//! and the last [`RESEND_CACHE`] kept to resend what the peer did not get.

use std::collections::VecDeque;

use bytes::Bytes;

use relay::control::{FeedDescription, MediaKind};
use relay::ids::{FeedId, Sid};
use relay::sfu::cross_core::{CrossCore, FeedRoute, RelayedRtp};

use super::{Tunnel, TunnelOutput, MAX_NACK_GAP, RESEND_CACHE};
use crate::frame::{Control, Datagram, MAX_DATAGRAM_HEADER};

/// A feed this node sends the peer.
#[derive(Debug)]
pub(super) struct Export {
    pub(super) route: FeedRoute,
    /// Simulcast video, whose layers can be shed.
    pub(super) simulcast: bool,
    /// The layers subscribers on the peer want (bit `l`: layer `l`), once it said; the others
    /// do not cross, but for the lowest, on which a new subscriber there starts at once.
    pub(super) wanted: Option<u8>,
    /// The last datagrams sent, for resending: (ssrc, sequence, bytes), shared with what
    /// went to QUIC (no copy).
    pub(super) sent: VecDeque<(u32, u16, Bytes)>,
}

impl Tunnel {
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

    pub(super) fn send_rtp(&mut self, route: FeedRoute, packet: &RelayedRtp) {
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
        let mut bytes = Vec::with_capacity(MAX_DATAGRAM_HEADER + packet.plain.len());
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

    /// The peer's requests about the feeds this node sends it.
    pub(super) fn export_control(&mut self, message: Control) {
        match message {
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
            _ => {}
        }
    }
}
