//! Whether a publisher is speaking, from the audio level its browser writes into each audio
//! packet (RFC 6464: `-dBov`, 0 the loudest, 127 silence), as mediasoup's audio-level
//! observer and LiveKit's speaker detection read it: the relay never decodes audio.
//!
//! A packet is loud where its level is at most [`LOUD_LEVEL`] (-50 dBov, well above a quiet
//! room's noise, which a browser's noise suppression takes further down). Speaking starts
//! with [`START_PACKETS`] loud packets within [`START_WINDOW`] (one click is not speech) and
//! ends [`HOLD`] after the last loud one (the pauses between words are not silence). While
//! it lasts, a report every [`REPORT_INTERVAL`] gives the loudness (dB above silence, the
//! mean of the loud packets since the last report) from which the session's dominant speaker
//! is chosen.
//!
//! Sans-IO: levels come in with their arrival time; reports are polled.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The audio-level header extension (RFC 6464).
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// A packet at this level (-dBov) or louder counts as speech.
pub const LOUD_LEVEL: u8 = 50;

/// Loud packets within [`START_WINDOW`] that start speaking.
pub const START_PACKETS: usize = 3;

/// See [`START_PACKETS`].
pub const START_WINDOW: Duration = Duration::from_millis(500);

/// Speaking ends this long after the last loud packet.
pub const HOLD: Duration = Duration::from_millis(1500);

/// While speaking, the loudness is reported this often.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(500);

/// Silence, as the extension writes it.
const SILENT: u8 = 127;

/// What changed, to be told to signalling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechReport {
    /// Whether the publisher is speaking.
    pub speaking: bool,
    /// Its loudness in dB above silence (0-127), over the loud packets since the last report.
    pub loudness: u8,
}

/// The speech state of one audio feed.
#[derive(Debug, Clone, Default)]
pub struct Speech {
    /// Arrival times and loudness of the recent loud packets (at most [`START_PACKETS`]).
    recent_loud: VecDeque<(Instant, u8)>,
    /// The last loud packet.
    last_loud: Option<Instant>,
    speaking: bool,
    /// Sum and count of the loud packets' loudness since the last report.
    sum: u32,
    count: u32,
    last_report: Option<Instant>,
    /// A change of `speaking` not reported yet.
    changed: bool,
}

/// The level in the one-byte payload of the audio-level extension (the V bit is ignored:
/// browsers set it from their own voice detection, or not at all).
pub fn level(ext: &[u8]) -> Option<u8> {
    ext.first().map(|b| b & 0x7f)
}

impl Speech {
    /// A packet with `level` (-dBov) arrived at `now`.
    pub fn handle_level(&mut self, now: Instant, level: u8) {
        let level = level.min(SILENT);
        if level <= LOUD_LEVEL {
            let loudness = SILENT - level;
            self.last_loud = Some(now);
            self.recent_loud.push_back((now, loudness));
            if self.recent_loud.len() > START_PACKETS {
                self.recent_loud.pop_front();
            }
            self.sum += u32::from(loudness);
            self.count += 1;
            let started = self.recent_loud.len() == START_PACKETS
                && self.recent_loud.front().is_some_and(|(first, _)| {
                    now.saturating_duration_since(*first) <= START_WINDOW
                });
            if started && !self.speaking {
                self.speaking = true;
                self.changed = true;
                // Its loudness is that of the packets that started it, not of a click before.
                self.sum = self.recent_loud.iter().map(|(_, l)| u32::from(*l)).sum();
                self.count = START_PACKETS as u32;
            }
        }
        self.expire(now);
    }

    /// Whether the publisher is speaking as of the last input.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// What to report at `now`: a change, or the loudness while speaking every
    /// [`REPORT_INTERVAL`].
    pub fn poll_report(&mut self, now: Instant) -> Option<SpeechReport> {
        self.expire(now);
        let due = self.speaking
            && self
                .last_report
                .is_none_or(|at| now.saturating_duration_since(at) >= REPORT_INTERVAL);
        if !self.changed && !due {
            return None;
        }
        self.changed = false;
        self.last_report = Some(now);
        let loudness = self.sum.checked_div(self.count).unwrap_or(0) as u8;
        self.sum = 0;
        self.count = 0;
        Some(SpeechReport {
            speaking: self.speaking,
            loudness,
        })
    }

    fn expire(&mut self, now: Instant) {
        let quiet = self
            .last_loud
            .is_none_or(|at| now.saturating_duration_since(at) >= HOLD);
        if self.speaking && quiet {
            self.speaking = false;
            self.changed = true;
            self.recent_loud.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_on_a_few_loud_packets_holds_over_pauses_and_ends_after_silence() {
        let t0 = Instant::now();
        let mut s = Speech::default();
        // Silence, then one click: not speech.
        for i in 0..50 {
            s.handle_level(t0 + i * 20 * MS, 127);
        }
        s.handle_level(t0 + 1000 * MS, 20);
        for i in 1..30 {
            s.handle_level(t0 + (1000 + i * 20) * MS, 120);
        }
        assert!(!s.speaking());
        assert_eq!(s.poll_report(t0 + 1600 * MS), None);
        // Three loud packets within 500 ms: speaking, reported at once with their loudness.
        let t1 = t0 + 2000 * MS;
        for (i, level) in [30, 40, 35].into_iter().enumerate() {
            s.handle_level(t1 + i as u32 * 100 * MS, level);
        }
        assert!(s.speaking());
        assert_eq!(
            s.poll_report(t1 + 200 * MS),
            Some(SpeechReport {
                speaking: true,
                loudness: 127 - 35
            })
        );
        // A pause of a second between words: still speaking, the loudness reported every
        // REPORT_INTERVAL (0 where nothing loud came since).
        assert_eq!(s.poll_report(t1 + 400 * MS), None);
        s.handle_level(t1 + 1200 * MS, 127);
        assert_eq!(
            s.poll_report(t1 + 1200 * MS),
            Some(SpeechReport {
                speaking: true,
                loudness: 0
            })
        );
        s.handle_level(t1 + 1300 * MS, 27);
        // Silent for HOLD after the last loud packet: it ends, reported once.
        s.handle_level(t1 + 1300 * MS + HOLD - MS, 127);
        assert!(s.speaking());
        s.handle_level(t1 + 1300 * MS + HOLD, 127);
        assert!(!s.speaking());
        assert_eq!(
            s.poll_report(t1 + 1300 * MS + HOLD),
            Some(SpeechReport {
                speaking: false,
                loudness: 100
            })
        );
        assert_eq!(s.poll_report(t1 + 5000 * MS), None);
        // Loud packets spread wider than START_WINDOW do not start it.
        let t2 = t0 + 10_000 * MS;
        for i in 0..3 {
            s.handle_level(t2 + i * 300 * MS, 10);
        }
        assert!(!s.speaking());
    }

    #[test]
    fn the_level_is_the_low_seven_bits() {
        assert_eq!(level(&[0x80 | 42]), Some(42));
        assert_eq!(level(&[127]), Some(127));
        assert_eq!(level(&[]), None);
    }
}
