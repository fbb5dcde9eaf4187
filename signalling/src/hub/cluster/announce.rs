//! What this node tells the others of its sessions: joins, leaves, feeds, mutes, speech and
//! quality, each recorded in Redis and published; all of it again, with a roster, when asked.

use super::*;

impl Hub {
    /// A participant joined here.
    pub(in crate::hub) fn announce_join(&self, sid: &str, uid: &str, name: Option<String>) {
        let Some(link) = &self.cluster else {
            return;
        };
        let record = MemberRecord {
            name: name.clone(),
            node: link.node.clone(),
        };
        self.tell_cluster(
            sid,
            SessionEvent::Joined {
                uid: uid.to_owned(),
                name,
            },
            Some(Record::Member(uid.to_owned(), Some(record))),
        );
    }

    /// A participant of this node left.
    pub(in crate::hub) fn announce_leave(&self, sid: &str, uid: &str) {
        self.tell_cluster(
            sid,
            SessionEvent::Left {
                uid: uid.to_owned(),
            },
            Some(Record::Member(uid.to_owned(), None)),
        );
    }

    /// A feed of this node as it is recorded in Redis (None: not one of this node's
    /// published feeds, or not in a cluster).
    pub(super) fn feed_record(&self, sid: &str, feed_id: &str) -> Option<FeedRecord> {
        let link = self.cluster.as_ref()?;
        let feed = self.rooms.get(sid)?.feeds.get(feed_id)?;
        if feed.origin.is_some() || !feed.published {
            return None;
        }
        let tracks = feed
            .tracks
            .iter()
            .filter_map(|t| {
                Some(RemoteTrack {
                    kind: t.kind,
                    codecs: t.codecs.clone(),
                    description: t.description.clone()?,
                })
            })
            .collect();
        Some(FeedRecord {
            node: link.node.clone(),
            info: feed.info(feed_id),
            tracks,
            edge: link.edge_addr,
        })
    }

    /// A feed of this node is published: the other nodes may import it.
    pub(in crate::hub) fn announce_feed(&self, sid: &str, feed_id: &str) {
        let Some(record) = self.feed_record(sid, feed_id) else {
            return;
        };
        let event = SessionEvent::FeedPublished {
            info: record.info.clone(),
            tracks: record.tracks.clone(),
            edge: record.edge,
        };
        self.tell_cluster(
            sid,
            event,
            Some(Record::Feed(feed_id.to_owned(), Some(record))),
        );
    }

    /// A feed of this node went.
    pub(in crate::hub) fn announce_unpublished(&self, sid: &str, feed_id: &str) {
        self.tell_cluster(
            sid,
            SessionEvent::FeedUnpublished {
                feed_id: feed_id.to_owned(),
            },
            Some(Record::Feed(feed_id.to_owned(), None)),
        );
    }

    /// A track of a feed of this node was muted or unmuted: the record (its muted tracks) is
    /// written again, and the other nodes are told.
    pub(in crate::hub) fn announce_mute(&self, sid: &str, feed_id: &str, kind: &str, muted: bool) {
        let Some(record) = self.feed_record(sid, feed_id) else {
            return;
        };
        let event = SessionEvent::FeedMuted {
            feed_id: feed_id.to_owned(),
            kind: kind.to_owned(),
            muted,
        };
        self.tell_cluster(
            sid,
            event,
            Some(Record::Feed(feed_id.to_owned(), Some(record))),
        );
    }

    /// A participant of this node's connection rates otherwise now: the other nodes are told.
    pub(in crate::hub) fn announce_quality(
        &self,
        sid: &str,
        uid: &str,
        quality: relay::control::ConnectionQuality,
    ) {
        let event = SessionEvent::Quality {
            uid: uid.to_owned(),
            quality,
        };
        self.tell_cluster(sid, event, None);
    }

    /// A participant of this node spoke (or stopped): the other nodes are told, for their
    /// dominant speaker.
    pub(in crate::hub) fn announce_speech(
        &self,
        sid: &str,
        uid: &str,
        speaking: bool,
        loudness: u8,
    ) {
        let event = SessionEvent::Speech {
            uid: uid.to_owned(),
            speaking,
            loudness,
        };
        self.tell_cluster(sid, event, None);
    }

    /// Redis was lost and is back (restarted empty, perhaps): record again every participant
    /// and feed of this node, and have the others do the same.
    pub(in crate::hub) fn cluster_recovered(&mut self) {
        let sids: Vec<String> = self.rooms.keys().cloned().collect();
        for sid in sids {
            self.follow_session(&sid);
            self.say_again(&sid);
        }
        // And its claims and start times, which an empty Redis lost.
        self.renew_claims();
    }

    /// Record and announce again what this node has of `sid`.
    pub(super) fn say_again(&self, sid: &str) {
        let Some(room) = self.rooms.get(sid) else {
            return;
        };
        let peers: Vec<(String, Option<String>)> = room
            .peers
            .iter()
            .map(|(u, p)| (u.clone(), p.name.clone()))
            .collect();
        let feeds: Vec<String> = room
            .feeds
            .iter()
            .filter(|(_, f)| f.origin.is_none() && f.published)
            .map(|(id, _)| id.clone())
            .collect();
        let roster = SessionEvent::Roster {
            members: peers.iter().map(|(uid, _)| uid.clone()).collect(),
            feeds: feeds
                .iter()
                .map(|id| {
                    let muted = room.feeds[id]
                        .tracks
                        .iter()
                        .filter(|t| t.muted)
                        .map(|t| t.kind.as_str().to_owned())
                        .collect();
                    (id.clone(), muted)
                })
                .collect(),
        };
        for (uid, name) in peers.iter() {
            self.announce_join(sid, uid, name.clone());
        }
        for feed_id in feeds.iter() {
            self.announce_feed(sid, feed_id);
        }
        self.tell_cluster(sid, roster, None);
        // And Redis forgets what this node recorded and no longer has.
        if let Some(link) = &self.cluster {
            let (directory, me, sid) = (link.directory.clone(), link.node.clone(), sid.to_owned());
            let members: Vec<String> = peers.into_iter().map(|(uid, _)| uid).collect();
            let _ = link.writes.send(Box::pin(async move {
                if let Err(e) = directory
                    .prune_node_records(&sid, &me, &members, &feeds)
                    .await
                {
                    tracing::warn!(%sid, error = %e, "records this node no longer has stay");
                }
            }));
        }
    }

    /// Keep a participant's resume token in Redis, so that it can join again on another
    /// node if this one stops.
    pub(in crate::hub) fn record_resume(&self, sid: &str, uid: &str, token: &str) {
        let Some(link) = &self.cluster else {
            return;
        };
        let directory = link.directory.clone();
        let (sid, uid, token) = (sid.to_owned(), uid.to_owned(), token.to_owned());
        let _ = link.writes.send(Box::pin(async move {
            if let Err(e) = directory
                .put_resume(&token, &sid, &uid, RESUME_TOKEN_TTL)
                .await
            {
                tracing::warn!(%sid, %uid, error = %e, "a resume token was not recorded");
            }
        }));
    }

    /// The participant left: its resume token goes.
    pub(in crate::hub) fn forget_resume(&self, token: &str) {
        let Some(link) = &self.cluster else {
            return;
        };
        let directory = link.directory.clone();
        let token = token.to_owned();
        let _ = link.writes.send(Box::pin(async move {
            let _ = directory.remove_resume(&token).await;
        }));
    }
}
