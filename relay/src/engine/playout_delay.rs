//! The playout-delay RTP header extension
//! (<http://www.webrtc.org/experiments/rtp-hdrext/playout-delay>): a sender's bounds on how
//! long the receiver's jitter buffer holds frames before rendering them.
//!
//! Three bytes: the minimum and the maximum delay, 12 bits each, in units of 10 ms. A receiver
//! keeps the last values it saw until others come. Chromium applies them per frame, from the
//! frame's first packet; with both zero it renders without any buffering, so a sender that
//! means "no minimum" sends a minimum of zero with a non-zero maximum.

use std::time::Duration;

/// The extension's URI in SDP (`a=extmap`).
pub const URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

/// The largest delay the 12-bit fields can carry.
pub const MAX: Duration = Duration::from_millis(4095 * 10);

/// Bounds on a receiver's playout delay, in whole 10 ms units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutDelay {
    /// Minimum, 10 ms units (0..=4095).
    min: u16,
    /// Maximum, 10 ms units (0..=4095).
    max: u16,
}

impl PlayoutDelay {
    /// Bounds of `min` and `max`: each rounded up to 10 ms and capped at [`MAX`], and the
    /// maximum raised to the minimum if it was below it.
    pub fn new(min: Duration, max: Duration) -> Self {
        let units = |d: Duration| d.min(MAX).as_millis().div_ceil(10) as u16;
        let min = units(min);
        PlayoutDelay {
            min,
            max: units(max).max(min),
        }
    }

    /// The minimum delay.
    pub fn min(&self) -> Duration {
        Duration::from_millis(u64::from(self.min) * 10)
    }

    /// The maximum delay.
    pub fn max(&self) -> Duration {
        Duration::from_millis(u64::from(self.max) * 10)
    }

    /// Bounds that hold frames as long as either: the longer minimum and the longer maximum.
    pub fn longest(self, other: Self) -> Self {
        PlayoutDelay {
            min: self.min.max(other.min),
            max: self.max.max(other.max),
        }
    }

    /// The extension element's value.
    pub fn to_bytes(self) -> [u8; 3] {
        [
            (self.min >> 4) as u8,
            ((self.min & 0x0f) << 4) as u8 | (self.max >> 8) as u8,
            self.max as u8,
        ]
    }

    /// An element's value; None unless it is exactly three bytes.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let &[a, b, c] = value else {
            return None;
        };
        Some(PlayoutDelay {
            min: u16::from(a) << 4 | u16::from(b) >> 4,
            max: u16::from(b & 0x0f) << 8 | u16::from(c),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twelve_bits_each_in_tens_of_milliseconds() {
        let d = PlayoutDelay::new(Duration::from_millis(230), Duration::from_secs(10));
        // 23 and 1000 units: 0x017 and 0x3e8.
        assert_eq!(d.to_bytes(), [0x01, 0x73, 0xe8]);
        assert_eq!(PlayoutDelay::parse(&d.to_bytes()), Some(d));
        assert_eq!(d.min(), Duration::from_millis(230));
        assert_eq!(d.max(), Duration::from_secs(10));
        let top = PlayoutDelay::new(Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(top.to_bytes(), [0xff, 0xff, 0xff]);
        assert_eq!(top.max(), MAX);
        assert_eq!(PlayoutDelay::parse(&[1, 2]), None);
        assert_eq!(PlayoutDelay::parse(&[1, 2, 3, 4]), None);
    }

    #[test]
    fn rounded_up_and_the_maximum_never_below_the_minimum() {
        let d = PlayoutDelay::new(Duration::from_millis(231), Duration::from_millis(100));
        assert_eq!(d.min(), Duration::from_millis(240));
        assert_eq!(d.max(), Duration::from_millis(240));
        let zero = PlayoutDelay::new(Duration::ZERO, Duration::from_secs(10));
        assert_eq!(zero.to_bytes(), [0, 0x03, 0xe8]);
        assert_eq!(zero.longest(d), PlayoutDelay::new(d.min(), zero.max()));
    }
}
