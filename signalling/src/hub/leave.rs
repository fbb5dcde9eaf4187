//! Feeds and participants going away.

use std::time::Instant;

use relay::ids::{Sid, Uid};

use crate::protocol::Event;
use crate::sdp::Role;

use super::*;

impl Hub {
    /// Remove a feed: from the relay, from its publisher's connection, from every subscriber.
    pub(super) async fn unpublish(&mut self, sid: &str, feed_id: &str) {
        let Some(feed) = self
            .rooms
            .get_mut(sid)
            .and_then(|r| r.feeds.remove(feed_id))
        else {
            return;
        };
        for t in &feed.tracks {
            let _ = self
                .relay
                .unpublish(
                    &Sid::from(sid),
                    &Uid::from(feed.owner.as_str()),
                    &relay_feed(feed_id, t.kind),
                )
                .await;
        }
        let uids: Vec<String> = self.rooms[sid].peers.keys().cloned().collect();
        for uid in &uids {
            let peer = self.peer_mut(sid, uid).expect("listed");
            let mut changed = false;
            for e in &mut peer.entries {
                let matches = match &e.section.role {
                    Role::Publish { feed_id: f } | Role::Subscribe { feed_id: f, .. } => {
                        f == feed_id
                    }
                    Role::Closed => false,
                };
                if matches {
                    e.section.role = Role::Closed;
                    e.state = Negotiation::New;
                    changed = true;
                }
            }
            if changed {
                self.negotiate(sid, uid);
            }
        }
        if feed.published {
            self.broadcast(
                sid,
                &feed.owner,
                Event::FeedUnpublished {
                    feed_id: feed_id.to_owned(),
                    uid: feed.owner.clone(),
                },
            );
        }
    }

    /// A participant leaves: its feeds go, the others are told.
    pub(super) async fn leave(&mut self, sid: &str, uid: &str) {
        self.leave_with(sid, uid, None).await;
    }

    /// Remove a participant; `last_usage` are its final counters when the relay already
    /// dropped it (else they are read from the relay first).
    pub(super) async fn leave_with(
        &mut self,
        sid: &str,
        uid: &str,
        last_usage: Option<ParticipantUsage>,
    ) {
        let Some(room) = self.rooms.get(sid) else {
            return;
        };
        if !room.peers.contains_key(uid) {
            return;
        }
        let feeds: Vec<String> = room
            .feeds
            .iter()
            .filter(|(_, f)| f.owner == uid)
            .map(|(id, _)| id.clone())
            .collect();
        for f in feeds {
            self.unpublish(sid, &f).await;
        }
        // Its last traffic counts before the relay forgets it.
        let usage = match last_usage {
            Some(usage) => Some(usage),
            None => self
                .relay
                .session_usage(&Sid::from(sid))
                .await
                .ok()
                .and_then(|all| all.into_iter().find(|(u, _)| u.0 == uid).map(|(_, u)| u)),
        };
        let _ = self
            .relay
            .remove_participant(&Sid::from(sid), &Uid::from(uid))
            .await;
        let room = self.rooms.get_mut(sid).expect("checked above");
        room.meter.account(Instant::now(), uid, usage);
        room.meter.metered_until.remove(uid);
        room.meter.counters.remove(uid);
        if let Some(peer) = room.peers.remove(uid) {
            self.resume.remove(&peer.resume_token);
            if let Some(c) = peer.conn.and_then(|c| self.conns.get_mut(&c)) {
                c.joined = None;
            }
        }
        let empty = self.rooms[sid].peers.is_empty();
        self.broadcast(
            sid,
            uid,
            Event::ParticipantLeft {
                uid: uid.to_owned(),
            },
        );
        if empty {
            let ended = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            self.flush_usage(sid, Instant::now(), Some(ended)).await;
            self.rooms.remove(sid);
            let _ = self.relay.remove_session(&Sid::from(sid)).await;
        }
    }
}
