//! Where an H.264 keyframe starts in RTP (RFC 6184): what a forwarder switching a subscriber
//! between simulcast layers needs to know of an H.264 payload, and nothing more.
//!
//! A keyframe is an IDR picture (NAL unit type 5), which Chromium sends after its parameter
//! sets (SPS 7, PPS 8), alone, aggregated in a STAP-A (24) or fragmented in FU-As (28). The
//! first packet of a keyframe is the one with the SPS, or with the IDR's first fragment when
//! no SPS precedes it.

/// NAL unit types that begin a keyframe.
const IDR: u8 = 5;
const SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Whether an RTP payload begins a keyframe.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        IDR | SPS => true,
        STAP_A => {
            // Units of a 16-bit length, then the unit; one cut short ends the walk.
            let mut rest = &payload[1..];
            while let [hi, lo, tail @ ..] = rest {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                let Some(unit) = tail.get(..len) else {
                    return false;
                };
                if let Some(&h) = unit.first() {
                    if matches!(h & 0x1f, IDR | SPS) {
                        return true;
                    }
                }
                rest = &tail[len..];
            }
            false
        }
        // The FU header: S bit, then the fragmented unit's type.
        FU_A => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && fu & 0x1f == IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_units_aggregates_and_fragments() {
        // NRI 3 and the type, as Chromium sends them.
        assert!(starts_keyframe(&[0x67, 0x42, 0xc0, 0x1f])); // SPS
        assert!(starts_keyframe(&[0x65, 0x88])); // IDR slice
        assert!(!starts_keyframe(&[0x41, 0x9a])); // non-IDR slice
        assert!(!starts_keyframe(&[0x68, 0xce])); // PPS alone
        assert!(!starts_keyframe(&[]));
        // STAP-A with a PPS, then an SPS.
        assert!(starts_keyframe(&[0x78, 0, 2, 0x68, 0xce, 0, 2, 0x67, 0x42]));
        // STAP-A with a non-IDR slice only, and one whose length runs past the end.
        assert!(!starts_keyframe(&[0x78, 0, 2, 0x41, 0x9a]));
        assert!(!starts_keyframe(&[0x78, 0, 9, 0x67, 0x42]));
        // FU-A: the first fragment of an IDR slice, a later one, a first of a non-IDR.
        assert!(starts_keyframe(&[0x7c, 0x85, 0x88]));
        assert!(!starts_keyframe(&[0x7c, 0x05, 0x88]));
        assert!(!starts_keyframe(&[0x7c, 0x81, 0x9a]));
        assert!(!starts_keyframe(&[0x7c]));
    }
}
