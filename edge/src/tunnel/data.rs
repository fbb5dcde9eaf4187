//! Data-channel messages across the trunk, on its control stream.

use std::sync::Arc;

use bytes::Bytes;

use relay::sfu::data::RelayedData;

use super::{Tunnel, TunnelOutput};
use crate::frame::Control;

impl Tunnel {
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

    /// A data-channel message from the peer, for this node's participants of its session.
    pub(super) fn receive_data(&mut self, message: Control) {
        use base64::Engine as _;
        let Control::Data {
            sid,
            from,
            targets,
            reliable,
            text,
            delivered,
        } = message
        else {
            return;
        };
        let Ok(delivered) = base64::engine::general_purpose::STANDARD.decode(delivered) else {
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
}
