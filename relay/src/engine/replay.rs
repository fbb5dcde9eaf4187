//! SRTP/SRTCP replay protection (RFC 3711 §3.3.2) that only authenticated packets can move.
//!
//! webrtc-srtp's own detector initialises its window from the first packet it *checks*, before
//! authentication, so one forged packet (a spoofed source address is enough) could place the
//! window far ahead of the real stream and have every genuine packet refused as too old. Here
//! `check` never changes state; `accept` is called only after the packet authenticated.

/// Packets further than this behind the newest accepted one are refused (RFC 3711 minimum).
pub const WINDOW: u64 = 64;

/// A sliding window over one SSRC's sequence space, which wraps at `modulus`.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    modulus: u64,
    latest: Option<u64>,
    /// Bit i set: `latest - i` was accepted.
    mask: u64,
}

impl ReplayWindow {
    /// A window over sequence numbers `0..modulus` (2^16 for SRTP, 2^31 for SRTCP).
    pub fn new(modulus: u64) -> Self {
        ReplayWindow {
            modulus,
            latest: None,
            mask: 0,
        }
    }

    /// Signed distance from `latest` to `seq` on the wrapping sequence space.
    fn ahead(&self, latest: u64, seq: u64) -> i64 {
        let m = self.modulus as i64;
        let mut d = (seq as i64 - latest as i64).rem_euclid(m);
        if d > m / 2 {
            d -= m;
        }
        d
    }

    /// Whether `seq` may be new. Changes nothing.
    pub fn check(&self, seq: u64) -> bool {
        if seq >= self.modulus {
            return false;
        }
        let Some(latest) = self.latest else {
            return true;
        };
        let ahead = self.ahead(latest, seq);
        if ahead > 0 {
            return true;
        }
        let behind = (-ahead) as u64;
        behind < WINDOW && self.mask & (1 << behind) == 0
    }

    /// Record an authenticated `seq` (that passed `check`).
    pub fn accept(&mut self, seq: u64) {
        let Some(latest) = self.latest else {
            self.latest = Some(seq);
            self.mask = 1;
            return;
        };
        let ahead = self.ahead(latest, seq);
        if ahead > 0 {
            let shift = ahead as u64;
            self.mask = if shift >= WINDOW {
                0
            } else {
                self.mask << shift
            };
            self.mask |= 1;
            self.latest = Some(seq);
        } else {
            let behind = (-ahead) as u64;
            if behind < WINDOW {
                self.mask |= 1 << behind;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_old_packets_are_refused() {
        let mut w = ReplayWindow::new(1 << 16);
        assert!(w.check(100));
        w.accept(100);
        assert!(!w.check(100));
        assert!(w.check(99) && w.check(101));
        w.accept(101);
        w.accept(99);
        assert!(!w.check(99));
        w.accept(200);
        assert!(!w.check(200 - 64), "outside the window");
        assert!(w.check(200 - 63));
        assert!(!w.check(1 << 16), "out of range");
    }

    #[test]
    fn wraps_around() {
        let mut w = ReplayWindow::new(1 << 16);
        w.accept(65_530);
        assert!(w.check(3), "after the wrap is ahead");
        w.accept(3);
        assert!(!w.check(3));
        assert!(w.check(65_531));
        assert!(!w.check(65_530));
    }

    #[test]
    fn checking_never_moves_the_window() {
        let mut w = ReplayWindow::new(1 << 31);
        // A forged packet is checked (and then fails authentication): nothing changes.
        assert!(w.check(2_000_000_000));
        assert!(w.check(1));
        w.accept(1);
        assert!(w.check(2));
    }
}
