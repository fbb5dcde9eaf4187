//! Entry points for the edge's fuzz targets in `fuzz/` and for the stable test that replays
//! their corpora: whatever another node sends is refused with a reason, never a panic.

use crate::frame::{ControlReader, Datagram};
use crate::tunnel::Tunnel;

/// Parse a media datagram; what parses writes back to the same datagram.
pub fn datagram(data: &[u8]) {
    if let Ok(d) = Datagram::parse(data) {
        let mut out = Vec::new();
        d.write(&mut out);
        assert_eq!(Datagram::parse(&out).as_ref(), Ok(&d));
    }
}

/// Read a control stream, split in two where its first byte says; what reads encodes back to
/// the same message, and a tunnel takes it (a data message's payload decoded among the rest).
pub fn control(data: &[u8]) {
    let Some(&first) = data.first() else {
        return;
    };
    let split = usize::from(first).min(data.len());
    let mut reader = ControlReader::default();
    let mut tunnel = Tunnel::new();
    for piece in [&data[..split], &data[split..]] {
        reader.handle_bytes(piece);
        while let Some(message) = reader.poll_message() {
            let Ok(message) = message else {
                continue;
            };
            let mut again = ControlReader::default();
            again.handle_bytes(&message.encode());
            assert_eq!(again.poll_message(), Some(Ok(message.clone())));
            tunnel.handle_control(message);
            while tunnel.poll_output().is_some() {}
        }
    }
}

/// A fuzz target: takes any bytes, must not panic.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, for the corpus replay test.
pub const TARGETS: [(&str, Target); 2] = [("edge_datagram", datagram), ("edge_control", control)];
