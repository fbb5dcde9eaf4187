//! Feeds and participants going away.

use std::time::Instant;

use relay::ids::{Sid, Uid};

use crate::protocol::{Event, ServerMessage};
use crate::sdp::Role;

use serde_json::json;

use super::*;

impl Hub {
    /// Remove a feed from the session's state: from its publisher's connection and from every
    /// subscriber (each gets an offer), and tell the others (on other nodes too, for a feed of
    /// this node). Returns its owner and the relay feeds to unpublish, for the caller's job.
    fn forget_feed(&mut self, sid: &str, feed_id: &str) -> Option<Gone> {
        self.unrecord_feed(sid, feed_id);
        let feed = self.rooms.get_mut(sid)?.feeds.remove(feed_id)?;
        let uids: Vec<String> = self.rooms[sid].peers.keys().cloned().collect();
        for uid in &uids {
            let peer = self.peer_mut(sid, uid).expect("listed");
            let mut changed = false;
            for e in &mut peer.entries {
                let matches = match &e.section.role {
                    Role::Publish { feed_id: f, .. } | Role::Subscribe { feed_id: f, .. } => {
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
                // A WHEP player plays one feed: with it gone, it leaves at the next tick.
                let player =
                    peer.http && peer.entries.iter().all(|e| e.section.role == Role::Closed);
                if player {
                    let now = Instant::now();
                    peer.disconnected_at = Some(now.checked_sub(RESUME_WINDOW).unwrap_or(now));
                }
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
            if feed.origin.is_none() {
                self.announce_unpublished(sid, feed_id);
                let gone = json!({ "feed": { "feed_id": feed_id, "uid": feed.owner } });
                self.webhook(sid, "feed_unpublished", gone);
            }
        }
        let tracks = feed
            .tracks
            .iter()
            .map(|t| relay_feed(feed_id, t.kind))
            .collect();
        Some(Gone {
            owner: feed.owner,
            tracks,
            imported: feed.origin.is_some(),
        })
    }

    /// Remove feeds: from the session at once, from the relay in a job (through the edge for
    /// those imported from other nodes).
    pub(super) fn unpublish(&mut self, sid: &str, feed_ids: &[String]) {
        let gone: Vec<Gone> = feed_ids
            .iter()
            .filter_map(|f| self.forget_feed(sid, f))
            .collect();
        if gone.is_empty() {
            return;
        }
        let relay = self.relay.clone();
        let edge = self.cluster.as_ref().map(|c| c.edge.clone());
        let rsid = Sid::from(sid);
        self.spawn_job(
            sid,
            async move {
                for g in gone {
                    for track in g.tracks {
                        match (&edge, g.imported) {
                            (Some(edge), true) => {
                                let _ = edge.remove_import(&rsid, &track).await;
                            }
                            _ => {
                                let owner = Uid::from(g.owner.as_str());
                                let _ = relay
                                    .unpublish(rsid.clone(), owner.clone(), track.clone())
                                    .await;
                            }
                        }
                    }
                }
            },
            |_, ()| {},
        );
    }

    /// Remove a participant: its feeds go and the others are told at once; the relay drops it
    /// in a job, after which its usage is counted (and the session ends if it was the last),
    /// then `reply` (a leave request) is answered. `last_usage` are its final counters when the
    /// relay already dropped it (else they are read from the relay first).
    pub(super) fn leave_with(
        &mut self,
        sid: &str,
        uid: &str,
        last_usage: Option<ParticipantUsage>,
        reply: Option<(ConnId, u64)>,
    ) {
        self.leave_inner(sid, uid, last_usage, reply, None);
    }

    /// A participant of this node whose websocket dropped joined again through node `node`
    /// (its page thought this node had stopped): it goes from here as in a leave, but the
    /// others here see it as a participant of that node, not a leave, and the cluster is not
    /// told (its records are that node's now).
    pub(super) fn moved_away(&mut self, sid: &str, uid: &str, node: &str) {
        let usage = self.peer_mut(sid, uid).and_then(|p| p.dropped.take());
        self.leave_inner(sid, uid, usage, None, Some(node.to_owned()));
    }

    fn leave_inner(
        &mut self,
        sid: &str,
        uid: &str,
        last_usage: Option<ParticipantUsage>,
        reply: Option<(ConnId, u64)>,
        moved_to: Option<String>,
    ) {
        let Some(room) = self.rooms.get(sid) else {
            return;
        };
        if !room.peers.contains_key(uid) {
            return;
        }
        let owned: Vec<String> = room
            .feeds
            .iter()
            .filter(|(_, f)| f.owner == uid)
            .map(|(id, _)| id.clone())
            .collect();
        let left_at = Instant::now();
        // Out of the session before its feeds go: it is sent no offer for them.
        let room = self.rooms.get_mut(sid).expect("checked above");
        let mut name = None;
        if let Some(peer) = room.peers.remove(uid) {
            name = peer.name.clone();
            if peer.http {
                self.whip_resources
                    .retain(|_, (s, u)| !(s.as_str() == sid && u.as_str() == uid));
            }
            self.resume.remove(&peer.resume_token);
            self.forget_resume(&peer.resume_token);
            if let Some(c) = peer.conn.and_then(|c| self.conns.get_mut(&c)) {
                c.joined = None;
                // Not idle while its leave is finished on the relay, and free to join again.
                c.unjoined_since = left_at;
            }
        }
        let tracks: Vec<FeedId> = owned
            .iter()
            .filter_map(|f| self.forget_feed(sid, f))
            .flat_map(|g| g.tracks)
            .collect();
        let empty = self.rooms[sid].peers.is_empty();
        match &moved_to {
            Some(node) => self.now_remote(sid, uid, node, name),
            None => {
                self.broadcast(
                    sid,
                    uid,
                    Event::ParticipantLeft {
                        uid: uid.to_owned(),
                    },
                );
                let participant = json!({ "participant": { "uid": uid, "name": name } });
                self.webhook(sid, "participant_left", participant);
                self.announce_leave(sid, uid);
            }
        }
        let unfollowed = if empty {
            self.unfollow_session(sid)
        } else {
            None
        };
        let changes = room_speakers_remove(self, sid, uid, left_at);
        let room_sid = sid.to_owned();
        let relay = self.relay.clone();
        let (rsid, ruid) = (Sid::from(sid), Uid::from(uid));
        let (sid, uid) = (sid.to_owned(), uid.to_owned());
        self.spawn_job(
            &sid.clone(),
            async move {
                // Out of a cluster, the session ends with its last participant here.
                let last_node = match unfollowed {
                    Some(unfollowed) => unfollowed.await,
                    None => true,
                };
                for track in tracks {
                    let _ = relay
                        .unpublish(rsid.clone(), ruid.clone(), track.clone())
                        .await;
                }
                // Its last traffic counts before the relay forgets it.
                let usage = match last_usage {
                    Some(usage) => Some(usage),
                    None => relay
                        .session_usage(rsid.clone())
                        .await
                        .ok()
                        .and_then(|all| all.into_iter().find(|(u, _)| *u == ruid).map(|(_, u)| u)),
                };
                let _ = relay.remove_participant(rsid.clone(), ruid.clone()).await;
                if empty {
                    let _ = relay.remove_session(rsid.clone()).await;
                }
                (usage, last_node)
            },
            move |hub, (usage, last_node)| {
                if let Some(room) = hub.rooms.get_mut(&sid) {
                    room.meter.account(left_at, &uid, usage);
                    room.meter.metered_until.remove(&uid);
                    room.meter.counters.remove(&uid);
                }
                if empty {
                    // The session ends here. In a cluster it goes on where other nodes have
                    // participants of it (Redis lists them), and the last to let it go closes
                    // its shared usage record.
                    let ended = last_node.then(super::recording::unix_now);
                    hub.write_usage(&sid, Instant::now(), &[], ended);
                    if let Some(ended_at) = ended {
                        hub.webhook(&sid, "session_ended", json!({ "ended_at": ended_at }));
                    }
                    hub.rooms.remove(&sid);
                }
                if let Some((conn, id)) = reply {
                    hub.send(conn, ServerMessage::ok(id, serde_json::json!({})));
                }
            },
        );
        // After the leave's job: what it starts on the relay waits behind that.
        self.tell_speakers(&room_sid, changes);
    }
}

/// A feed taken out of the session, for the relay.
struct Gone {
    owner: String,
    tracks: Vec<FeedId>,
    /// It came from another node, through the edge.
    imported: bool,
}

/// Take `uid` off `sid`'s speakers.
fn room_speakers_remove(
    hub: &mut Hub,
    sid: &str,
    uid: &str,
    now: Instant,
) -> Vec<super::speakers::Change> {
    hub.rooms
        .get_mut(sid)
        .map(|r| r.speakers.remove(now, uid))
        .unwrap_or_default()
}
