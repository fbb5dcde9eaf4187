//! Which simulcast layers a congested trunk sheds: one more a step while it does not keep
//! up, one back after it has for a while.

use std::time::Instant;

use super::{Tunnel, PROBE_AFTER, STEP_DOWN_EVERY};

/// Which layers a congested trunk sheds.
#[derive(Debug, Default)]
pub(super) struct Congestion {
    /// The highest layer sent; None: all.
    pub(super) cap: Option<u8>,
    /// The highest layer of a simulcast feed sent since the last step.
    pub(super) highest_sent: u8,
    pub(super) last_step: Option<Instant>,
    pub(super) keeping_up_since: Option<Instant>,
}

impl Tunnel {
    /// Whether the trunk carried what was given it (the node looks at QUIC's send buffer):
    /// while it does not, layers are shed; once it has for a while, one comes back.
    pub fn handle_trunk_state(&mut self, now: Instant, keeping_up: bool) {
        let c = &mut self.congestion;
        let since_step = c.last_step.map(|t| now.saturating_duration_since(t));
        if keeping_up {
            let since = *c.keeping_up_since.get_or_insert(now);
            let Some(cap) = c.cap else {
                return;
            };
            if now.saturating_duration_since(since) >= PROBE_AFTER
                && since_step.is_none_or(|d| d >= PROBE_AFTER)
            {
                // Back to all once the top one seen comes back.
                c.cap = (cap + 1 < c.highest_sent).then_some(cap + 1);
                c.last_step = Some(now);
                c.keeping_up_since = Some(now);
            }
        } else {
            c.keeping_up_since = None;
            if since_step.is_some_and(|d| d < STEP_DOWN_EVERY) {
                return;
            }
            let top = c.cap.unwrap_or(c.highest_sent);
            if top > 0 {
                c.cap = Some(top - 1);
                c.last_step = Some(now);
            }
        }
        self.stats.layer_cap = c.cap;
    }
}
