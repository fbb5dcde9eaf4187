//! Where a session's participants go: the session's node in their region, claimed in Redis.

use super::*;
use crate::cluster::placement;

impl Hub {
    /// Where the first participant of `sid` on this node goes (a future for the session's
    /// job; None out of a cluster). The session's participants in a region (this node's, or
    /// the one their token names) share its node there, claimed atomically in Redis by the
    /// first instance to place it (the least filled node of the region with room), until
    /// that node is full. An edge-only node keeps its participants: it is where they enter
    /// the cloud. Redis unreachable, or no node of the region with room: here.
    pub(in crate::hub) fn place(
        &self,
        sid: &str,
        region: Option<&str>,
    ) -> Option<impl Future<Output = Placed> + Send + 'static> {
        let link = self.cluster.as_ref()?;
        let (directory, me) = (link.directory.clone(), link.node.clone());
        let draining = self.draining;
        let region = region.unwrap_or(&link.region).to_owned();
        let sid = sid.to_owned();
        Some(async move {
            let mut nodes = match directory.nodes().await {
                Ok(nodes) => nodes,
                Err(e) => {
                    tracing::warn!(%sid, error = %e, "placed here: the nodes are not known");
                    return Placed::Here;
                }
            };
            if draining {
                // A draining node takes no new session, whatever its record still says.
                for n in nodes.iter_mut().filter(|n| n.id == me) {
                    n.homes_sessions = false;
                }
            } else if !nodes.iter().any(|n| n.id == me && n.homes_sessions) {
                return Placed::Here;
            }
            // A session is placed in its region (the node reached's, or the token's); with
            // no node of that region with room, here (the session spans regions by the edges).
            let in_region = |n: &&crate::cluster::NodeInfo| n.region == region;
            let Some(candidate) = placement::choose(&nodes, &region).filter(in_region) else {
                return Placed::Here;
            };
            let candidate = candidate.id.clone();
            let holder = match directory
                .claim_session(&sid, &region, &candidate, &nodes)
                .await
            {
                Ok(holder) => holder,
                Err(e) => {
                    tracing::warn!(%sid, error = %e, "placed here: the session's node is not known");
                    return Placed::Here;
                }
            };
            match placement::place(&nodes, &region, Some(&holder)).filter(in_region) {
                Some(n) if n.id != me => Placed::There {
                    node: n.id.clone(),
                    url: ws_url(n),
                },
                _ => Placed::Here,
            }
        })
    }

    /// A join's placement is known: it goes on here, or the page is sent to the node.
    pub(in crate::hub) fn placed(
        &mut self,
        sid: &str,
        pending: PendingJoin,
        identity: Identity,
        placed: Placed,
    ) {
        match placed {
            Placed::Here if self.draining && !self.rooms.contains_key(sid) => {
                let (conn, id) = (pending.conn, pending.id);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.joining = false;
                }
                self.reply(conn, id, Err(super::super::join::draining()));
            }
            Placed::Here => {
                self.room_input(sid, jobs::RoomInput::Join(Box::new(pending), identity))
            }
            Placed::There { node, url } => {
                let (conn, id) = (pending.conn, pending.id);
                tracing::debug!(%sid, %node, "join sent on to the session's node");
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.joining = false;
                }
                self.send(conn, ServerMessage::moved(id, &node, url));
            }
        }
    }

    /// Keep this node's claims on the sessions it has participants of, and their start times
    /// (both lapse after [`crate::cluster::directory::SESSION_TTL`] otherwise: the next join
    /// of the region could place the session anew, and its usage would start a new record).
    pub(in crate::hub) fn renew_claims(&self) {
        let Some(link) = &self.cluster else {
            return;
        };
        let sids: Vec<(String, i64)> = self
            .rooms
            .iter()
            .filter(|(_, r)| !r.peers.is_empty())
            .map(|(sid, r)| (sid.clone(), r.started_at))
            .collect();
        if sids.is_empty() {
            return;
        }
        let claims = link.homes_sessions;
        let (directory, me, region) = (
            link.directory.clone(),
            link.node.clone(),
            link.region.clone(),
        );
        let _ = link.writes.send(Box::pin(async move {
            for (sid, started_at) in sids {
                if claims {
                    let _ = directory.renew_session(&sid, &region, &me).await;
                }
                let _ = directory.renew_started(&sid, started_at).await;
                let _ = directory.enter_session(&sid, &me).await;
            }
        }));
    }

    /// The websocket URLs of the other live nodes, this node's region first: where a page
    /// goes on when this node stops.
    pub(in crate::hub) fn other_servers(&self) -> Vec<String> {
        let Some(link) = &self.cluster else {
            return Vec::new();
        };
        let region = self
            .nodes
            .iter()
            .find(|n| n.id == link.node)
            .map(|n| n.region.clone());
        let mut others: Vec<&crate::cluster::NodeInfo> =
            self.nodes.iter().filter(|n| n.id != link.node).collect();
        others.sort_by_key(|n| (Some(&n.region) != region.as_ref(), n.load, n.id.clone()));
        others.into_iter().map(ws_url).collect()
    }
}

/// Where the first participant of a session on a node goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// This node.
    Here,
    /// Another node: the page joins there.
    There {
        /// Its id.
        node: String,
        /// Its websocket URL.
        url: String,
    },
}

/// A node's websocket URL, from its signalling URL.
fn ws_url(node: &crate::cluster::NodeInfo) -> String {
    let ws = match node.signalling.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", node.signalling.trim_start_matches("http://")),
    };
    format!("{}/ws", ws.trim_end_matches('/'))
}
