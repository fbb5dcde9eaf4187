//! One RTP stream a publisher sends for a feed: the whole feed, or one layer of a simulcast
//! feed (mediasoup's RtpStreamRecv). Each has its own SSRCs, sequence numbers, timestamps and
//! sender reports, so each has its own reception statistics, losses to ask for and keyframe
//! requests.

use std::time::{Duration, Instant};

use super::nack::NackGenerator;
use super::packet_cache::PacketCache;
use super::RecvStats;

/// At most one keyframe request per layer in this interval reaches the publisher: many
/// subscribers losing the same frame must not make the encoder send a keyframe each.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// A layer's rate is measured over windows this long…
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// …and it counts as stopped after this long without a packet: a layer the publisher turned
/// off (Chromium drops its best layers when its own estimate falls) must be left soon, since
/// its subscribers see nothing until they are moved and get a keyframe of another.
pub const STOPPED_AFTER: Duration = Duration::from_millis(700);

/// A subscriber's layer that sent nothing for this long has stopped for it: a 30 fps layer
/// sends every 33 ms, and at 5% loss a gap this long is all but impossible; from then on it
/// takes the first keyframe of any layer it may have rather than freeze.
pub const STALLED_AFTER: Duration = Duration::from_millis(300);

/// Bytes on the wire a packet to a subscriber adds to its RTP packet: SRTP's tag, UDP, IPv4.
const WIRE_OVERHEAD: usize = 16 + 8 + 20;

/// What a layer takes to send, bit/s: measured on every core that forwards it, from what it
/// brings in, as the subscribers' packets will carry it.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    window_start: Option<Instant>,
    bytes: usize,
    rate: Option<f64>,
    last_packet: Option<Instant>,
}

impl RateMeter {
    /// A packet of `size` bytes (RTP, plaintext) arrived at `now`.
    pub fn handle_packet(&mut self, now: Instant, size: usize) {
        // Back after a stop (the publisher turned the layer off): a window from here, not
        // one stretched over the silence.
        if !self.flowing(now, STOPPED_AFTER) {
            self.window_start = None;
            self.bytes = 0;
        }
        self.last_packet = Some(now);
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let window = self.bytes as f64 * 8.0 / elapsed.as_secs_f64();
            // Half the last window, half what came before: a keyframe's burst moves it less.
            self.rate = Some(match self.rate {
                Some(r) => (r + window) / 2.0,
                None => window,
            });
            self.window_start = Some(now);
            self.bytes = 0;
        }
        self.bytes += size + WIRE_OVERHEAD;
    }

    /// Whether a packet came within `within` before `now`.
    pub fn flowing(&self, now: Instant, within: Duration) -> bool {
        self.last_packet
            .is_some_and(|at| now.saturating_duration_since(at) < within)
    }

    /// The last rate measured, also once the layer stopped: what it would take again.
    pub fn last_bitrate(&self) -> Option<f64> {
        self.rate
    }

    /// The rate, bit/s; None before a whole window was measured, or once the layer stopped.
    pub fn bitrate(&self, now: Instant) -> Option<f64> {
        let flowing = self
            .last_packet
            .is_some_and(|at| now.saturating_duration_since(at) < STOPPED_AFTER);
        self.rate.filter(|_| flowing)
    }
}

/// One stream of a feed.
#[derive(Debug, Default)]
pub struct Layer {
    /// Its rid, for a simulcast layer.
    pub rid: Option<String>,
    /// The media SSRC: declared by signalling, or learnt from the layer's first packets.
    pub ssrc: Option<u32>,
    /// The SSRC of its retransmissions, likewise.
    pub rtx_ssrc: Option<u32>,
    /// Reception statistics of the media SSRC, for receiver reports.
    pub recv: RecvStats,
    /// What is missing of it and when to ask for it.
    pub nack: NackGenerator,
    /// Its last sender report: (NTP, RTP timestamp).
    pub last_sr: Option<(u64, u32)>,
    /// When a keyframe was last asked for.
    pub last_keyframe_request: Option<Instant>,
    /// When its last media packet arrived.
    pub last_packet_at: Option<Instant>,
    /// What it takes to send.
    pub rate: RateMeter,
    /// Its last packets, for subscribers' NACKs (video only). One ring per layer: the layers
    /// number their packets each on their own, and sharing one ring by sequence number made
    /// them overwrite each other's packets, so that repairs a subscriber asked for were gone.
    pub cache: PacketCache,
    /// The picture size of its last keyframe, where the codec gives it: which layer is enough
    /// for a subscriber that shows the video at a given size.
    pub size: Option<(u16, u16)>,
}

impl Layer {
    /// A stream with declared SSRCs (a feed without simulcast).
    pub fn declared(ssrc: Option<u32>, rtx_ssrc: Option<u32>) -> Self {
        Layer {
            ssrc,
            rtx_ssrc,
            ..Layer::default()
        }
    }

    /// A simulcast layer whose SSRCs are not known yet.
    pub fn named(rid: String) -> Self {
        Layer {
            rid: Some(rid),
            ..Layer::default()
        }
    }

    /// Forget what was received (the feed was renegotiated); the SSRCs stay.
    pub fn reset(&mut self) {
        self.recv = RecvStats::default();
        self.nack.reset();
        self.last_sr = None;
        self.last_packet_at = None;
        self.cache.clear();
    }

    /// Whether a keyframe request may be sent now; records it if so.
    pub fn allow_keyframe_request(&mut self, now: Instant) -> bool {
        match self.last_keyframe_request {
            Some(at) if now.saturating_duration_since(at) < KEYFRAME_REQUEST_INTERVAL => false,
            _ => {
                self.last_keyframe_request = Some(now);
                true
            }
        }
    }

    /// The layer's timestamp at NTP time `ntp`, from its last sender report: what lets
    /// timestamps of different layers, which start at unrelated random values, be compared.
    pub fn timestamp_at(&self, ntp: u64, clock_rate: u32) -> Option<u32> {
        let (sr_ntp, sr_ts) = self.last_sr?;
        // NTP is 32.32 fixed point seconds; the difference fits i64 for any sane span.
        let diff = ntp.wrapping_sub(sr_ntp) as i64;
        // Rounded to the nearest tick.
        let ticks = (diff as i128 * i128::from(clock_rate) + (1 << 31)) >> 32;
        Some(sr_ts.wrapping_add(ticks as i64 as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_over_whole_windows_until_the_layer_stops() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        // 1000-byte packets every 10 ms: (1000 + 44) * 8 * 100 = 835.2 kbit/s.
        for i in 0..100 {
            m.handle_packet(t0 + Duration::from_millis(10 * i), 1000);
            assert_eq!(m.bitrate(t0 + Duration::from_millis(10 * i)), None);
        }
        let t1 = t0 + Duration::from_secs(1);
        m.handle_packet(t1, 1000);
        let r = m.bitrate(t1).unwrap();
        assert!((r - 835_200.0).abs() < 1.0, "{r}");
        // Half as much the next second: halfway between.
        for i in 1..=50 {
            m.handle_packet(t1 + Duration::from_millis(20 * i), 1000);
        }
        let r = m.bitrate(t1 + Duration::from_secs(1)).unwrap();
        assert!((r - 0.75 * 835_200.0).abs() < 9_000.0, "{r}");
        assert_eq!(m.bitrate(t1 + Duration::from_secs(1) + STOPPED_AFTER), None);
    }

    #[test]
    fn keyframe_requests_are_rate_limited() {
        let t0 = Instant::now();
        let mut l = Layer::default();
        assert!(l.allow_keyframe_request(t0));
        assert!(!l.allow_keyframe_request(t0 + Duration::from_millis(499)));
        assert!(l.allow_keyframe_request(t0 + KEYFRAME_REQUEST_INTERVAL));
    }

    #[test]
    fn timestamps_are_carried_from_the_sender_report_in_both_directions() {
        let mut l = Layer::default();
        assert_eq!(l.timestamp_at(1 << 32, 90_000), None);
        let sr_ntp = 1000u64 << 32;
        l.last_sr = Some((sr_ntp, 4_294_000_000));
        // Half a second later: 45000 ticks on, across the 32-bit wrap.
        assert_eq!(
            l.timestamp_at(sr_ntp + (1 << 31), 90_000),
            Some(4_294_000_000u32.wrapping_add(45_000))
        );
        // A quarter second before.
        assert_eq!(
            l.timestamp_at(sr_ntp - (1 << 30), 90_000),
            Some(4_294_000_000 - 22_500)
        );
        // A thirtieth of a second, which NTP cannot carry exactly: 3000 ticks, not 2999.
        assert_eq!(
            l.timestamp_at(sr_ntp + (1 << 32) / 30, 90_000),
            Some(4_294_003_000)
        );
    }
}
