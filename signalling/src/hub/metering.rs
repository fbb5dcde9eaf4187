//! Usage of a session: presence and traffic counted between flushes, written off the hub.

use std::collections::HashMap;
use std::time::Instant;

use relay::ids::{Sid, Uid};

use crate::accounts::UsageRecord;
use crate::store::UsageDelta;

use super::*;

/// Usage counted since the last flush to the database.
pub(super) struct Meter {
    pub(super) last_flush: Instant,
    pub(super) pending: UsageDelta,
    pub(super) peak: u32,
    /// The relay's cumulative counters per participant at the last flush.
    pub(super) counters: HashMap<String, ParticipantUsage>,
    /// Up to when each participant's presence has been counted.
    pub(super) metered_until: HashMap<String, Instant>,
}

impl Meter {
    pub(super) fn new(now: Instant) -> Self {
        Meter {
            last_flush: now,
            pending: UsageDelta::default(),
            peak: 0,
            counters: HashMap::new(),
            metered_until: HashMap::new(),
        }
    }

    /// Account one participant's presence and traffic up to `now`.
    pub(super) fn account(&mut self, now: Instant, uid: &str, usage: Option<ParticipantUsage>) {
        if let Some(since) = self.metered_until.get_mut(uid) {
            self.pending.participant_seconds += now.saturating_duration_since(*since).as_secs_f64();
            *since = now;
        }
        if let Some(u) = usage {
            let last = self.counters.insert(uid.to_owned(), u).unwrap_or_default();
            self.pending.bytes_in += u.bytes_in.saturating_sub(last.bytes_in);
            self.pending.bytes_out += u.bytes_out.saturating_sub(last.bytes_out);
        }
    }
}

impl Hub {
    /// Read a session's traffic counters from the relay (a job), then write its usage.
    pub(super) fn flush_usage(&mut self, sid: &str) {
        if !self.rooms.contains_key(sid) {
            return; // ended while the flush waited
        }
        let relay = self.relay.clone();
        let rsid = Sid::from(sid);
        let sid = sid.to_owned();
        self.spawn_job(
            &sid.clone(),
            async move { relay.session_usage(rsid.clone()).await.unwrap_or_default() },
            move |hub, usage| hub.write_usage(&sid, Instant::now(), &usage, None),
        );
    }

    /// Write a session's usage since the last flush, with the relay's counters `usage` (and
    /// close its record when it `ended`).
    pub(super) fn write_usage(
        &mut self,
        sid: &str,
        now: Instant,
        usage: &[(Uid, ParticipantUsage)],
        ended: Option<i64>,
    ) {
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        let uids: Vec<String> = room.peers.keys().cloned().collect();
        for uid in uids {
            let u = usage.iter().find(|(u, _)| u.0 == uid).map(|(_, u)| *u);
            room.meter.account(now, &uid, u);
        }
        let delta = std::mem::take(&mut room.meter.pending);
        room.meter.last_flush = now;
        // Written off the hub's task, retried there while the database is busy.
        self.accounts.add_usage(UsageRecord {
            cid: room.cid.clone(),
            sid: room.public_sid.clone(),
            started_at: room.started_at,
            delta,
            peak: room.meter.peak,
            ended_at: ended,
        });
    }
}
