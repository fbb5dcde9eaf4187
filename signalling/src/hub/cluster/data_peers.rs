//! The other nodes of each session, for the edge: where its data-channel messages go.

use super::*;

impl Hub {
    /// The other nodes with participants of `sid` present now, for the edge: the session's
    /// data-channel messages from this node go to them. Told when they change.
    pub(in crate::hub) fn sync_data_peers(&mut self, sid: &str) {
        let Some(link) = &self.cluster else {
            return;
        };
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        // A session with nobody here any more (its leave under way) sends nothing.
        let mut nodes: Vec<String> = room
            .remote
            .values()
            .filter(|p| p.present() && !room.peers.is_empty())
            .map(|p| p.node.clone())
            .filter(|n| *n != link.node)
            .collect();
        nodes.sort();
        nodes.dedup();
        let peers: Vec<PeerNode> = nodes
            .iter()
            .filter_map(|n| {
                let info = self.nodes.iter().find(|i| i.id == *n)?;
                Some(PeerNode {
                    node: n.clone(),
                    addr: info.edge,
                })
            })
            .collect();
        let known: Vec<String> = peers.iter().map(|p| p.node.clone()).collect();
        if room.data_peers == known {
            return;
        }
        room.data_peers = known;
        let _ = link.edge.set_session_peers(&Sid::from(sid), peers);
    }

    /// [`Hub::sync_data_peers`] for every session here.
    pub(in crate::hub) fn sync_all_data_peers(&mut self) {
        let sids: Vec<String> = self.rooms.keys().cloned().collect();
        for sid in sids {
            self.sync_data_peers(&sid);
        }
    }
}
