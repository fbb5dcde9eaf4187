//! Who speaks in a session, and who the dominant speaker is (mediasoup's "active speaker",
//! LiveKit's `ActiveSpeakersChanged`), from the relay's speech reports: each publisher's
//! start and end of speech, and every 500 ms while it speaks, how loud.
//!
//! The dominant speaker is the loudest of those speaking (loudness smoothed over reports), with
//! hysteresis: where the dominant speaker still speaks, another takes over only after being the
//! loudest, by [`SWITCH_MARGIN`], for [`SWITCH_AFTER`], so that two people talking over each other, or a cough, do not
//! make a page's layout jump. Where nobody else speaks, the last dominant speaker stays so.
//!
//! Sans-IO: reports come in with `now`; what to tell the session's pages comes out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Another speaker takes over only after being the loudest this long…
pub const SWITCH_AFTER: Duration = Duration::from_millis(1500);

/// …by at least this many dB: two people as loud as each other do not take turns.
pub const SWITCH_MARGIN: f64 = 3.0;

/// What to tell every page of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `uid` started or stopped speaking.
    Speaking { uid: String, speaking: bool },
    /// The dominant speaker is now `uid` (None: the last one left).
    ActiveSpeaker { uid: Option<String> },
}

#[derive(Debug, Clone)]
struct Speaker {
    speaking: bool,
    /// Smoothed loudness, dB above silence.
    loudness: f64,
}

/// The speakers of one session.
#[derive(Debug, Clone, Default)]
pub struct Speakers {
    speakers: HashMap<String, Speaker>,
    active: Option<String>,
    /// Louder than the dominant speaker since then.
    challenger: Option<(String, Instant)>,
}

impl Speakers {
    /// The dominant speaker.
    pub fn active(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// A speech report for `uid` at `now`.
    pub fn handle_report(
        &mut self,
        now: Instant,
        uid: &str,
        speaking: bool,
        loudness: u8,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let s = self.speakers.entry(uid.to_owned()).or_insert(Speaker {
            speaking: false,
            loudness: f64::from(loudness),
        });
        if s.speaking != speaking {
            s.speaking = speaking;
            changes.push(Change::Speaking {
                uid: uid.to_owned(),
                speaking,
            });
        }
        if speaking {
            s.loudness = (s.loudness + f64::from(loudness)) / 2.0;
        }
        self.decide(now, &mut changes);
        changes
    }

    /// `uid` left the session.
    pub fn remove(&mut self, now: Instant, uid: &str) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.speakers.remove(uid).is_some_and(|s| s.speaking) {
            changes.push(Change::Speaking {
                uid: uid.to_owned(),
                speaking: false,
            });
        }
        if self.active.as_deref() == Some(uid) {
            self.active = None;
            self.decide(now, &mut changes);
            if self.active.is_none() {
                changes.push(Change::ActiveSpeaker { uid: None });
            }
        }
        changes
    }

    fn decide(&mut self, now: Instant, changes: &mut Vec<Change>) {
        let loudest = self
            .speakers
            .iter()
            .filter(|(_, s)| s.speaking)
            .max_by(|a, b| {
                a.1.loudness
                    .total_cmp(&b.1.loudness)
                    .then_with(|| b.0.cmp(a.0))
            })
            .map(|(uid, _)| uid.clone());
        let Some(loudest) = loudest else {
            self.challenger = None;
            return;
        };
        let active = self
            .active
            .as_ref()
            .and_then(|a| self.speakers.get(a))
            .filter(|s| s.speaking);
        let louder = |s: &Speaker| self.speakers[&loudest].loudness >= s.loudness + SWITCH_MARGIN;
        let take_over = if self.active.as_ref() == Some(&loudest) {
            self.challenger = None;
            false
        } else if active.is_some_and(|a| !louder(a)) {
            // Speaking, and not quieter by the margin: it stays.
            self.challenger = None;
            false
        } else if active.is_none() {
            true
        } else {
            match &self.challenger {
                Some((uid, since)) if *uid == loudest => {
                    now.saturating_duration_since(*since) >= SWITCH_AFTER
                }
                _ => {
                    self.challenger = Some((loudest.clone(), now));
                    false
                }
            }
        };
        if take_over {
            self.challenger = None;
            self.active = Some(loudest.clone());
            changes.push(Change::ActiveSpeaker { uid: Some(loudest) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn active(uid: &str) -> Change {
        Change::ActiveSpeaker {
            uid: Some(uid.into()),
        }
    }

    fn speaking(uid: &str, speaking: bool) -> Change {
        Change::Speaking {
            uid: uid.into(),
            speaking,
        }
    }

    #[test]
    fn the_loudest_takes_over_only_after_a_while_and_the_last_stays() {
        let t0 = Instant::now();
        let mut s = Speakers::default();
        // Ada speaks: speaking, and the dominant speaker at once.
        assert_eq!(
            s.handle_report(t0, "ada", true, 60),
            vec![speaking("ada", true), active("ada")]
        );
        assert!(s.handle_report(t0 + 500 * MS, "ada", true, 60).is_empty());
        // Bob starts, louder: speaking at once, dominant only after SWITCH_AFTER.
        assert_eq!(
            s.handle_report(t0 + 600 * MS, "bob", true, 90),
            vec![speaking("bob", true)]
        );
        assert!(s.handle_report(t0 + 1000 * MS, "ada", true, 60).is_empty());
        assert!(s.handle_report(t0 + 1100 * MS, "bob", true, 90).is_empty());
        assert_eq!(
            s.handle_report(t0 + 600 * MS + SWITCH_AFTER, "bob", true, 90),
            vec![active("bob")]
        );
        // Bob stops; Ada, still speaking, is dominant again at once.
        assert_eq!(
            s.handle_report(t0 + 2500 * MS, "bob", false, 0),
            vec![speaking("bob", false), active("ada")]
        );
        // Ada stops too: nobody speaks, and Ada stays the dominant speaker.
        assert_eq!(
            s.handle_report(t0 + 3000 * MS, "ada", false, 0),
            vec![speaking("ada", false)]
        );
        assert_eq!(s.active(), Some("ada"));
        // A louder one for a moment, then quieter again: no switch.
        s.handle_report(t0 + 4000 * MS, "ada", true, 60);
        s.handle_report(t0 + 4100 * MS, "cy", true, 100);
        let changes = s.handle_report(t0 + 4600 * MS, "cy", true, 10);
        assert_eq!(changes, vec![]);
        assert!(s
            .handle_report(t0 + 4100 * MS + SWITCH_AFTER, "ada", true, 60)
            .is_empty());
        assert_eq!(s.active(), Some("ada"));
        // As loud as the dominant speaker, however long: no switch.
        let t3 = t0 + 5000 * MS;
        for i in 0..10 {
            s.handle_report(t3 + i * 500 * MS, "cy", true, 61);
            s.handle_report(t3 + i * 500 * MS, "ada", true, 60);
        }
        assert_eq!(s.active(), Some("ada"));
        // The dominant speaker leaves: the one still speaking takes over.
        assert_eq!(
            s.remove(t0 + 11_000 * MS, "ada"),
            vec![speaking("ada", false), active("cy")]
        );
        assert_eq!(
            s.remove(t0 + 11_000 * MS, "cy"),
            vec![speaking("cy", false), Change::ActiveSpeaker { uid: None }]
        );
    }
}
