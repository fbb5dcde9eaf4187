//! The hub as one node of a cluster: a session spans the nodes where its participants are.
//!
//! Each node's hub serves the participants connected to it, with its own relay, as in
//! single-node mode. What the participants on other nodes must see crosses Redis as
//! [`SessionEvent`]s on the session's channel: who joined and left, and each published feed
//! with what its node's relay was told of it, so that this node's relay can take it through
//! the edge ([`edge::node::EdgeHandle::import`]) and this node's participants subscribe to it
//! like to a local one. The feed then crosses the trunk between the two nodes once, whoever
//! subscribes here.
//!
//! Who is in a session and what is published also stay in Redis, by the node that has them, so
//! that a node new to a session answers its first participant's join with everyone and every
//! feed already there. A node that starts following a session, or that finds Redis again after
//! losing it, has the others say again what they have ([`SessionEvent::Sync`]); every event is
//! idempotent, so one told twice changes nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use edge::node::{EdgeHandle, PeerNode};
use relay::ids::{Sid, Uid};
use serde::{Deserialize, Serialize};

use crate::cluster::directory::Directory;
use crate::cluster::events::{Envelope, Events};
use crate::cluster::placement;
use crate::protocol::{Event, FeedInfo, ParticipantInfo};

use super::*;

/// What the hub needs of the cluster.
#[derive(Clone)]
pub struct ClusterLink {
    /// This node's id.
    pub node: String,
    /// Its region.
    pub region: String,
    /// It homes sessions (not edge-only): it holds claims on them.
    pub homes_sessions: bool,
    /// Its edge's QUIC address, which other nodes open trunks to.
    pub edge_addr: SocketAddr,
    /// Its edge.
    pub edge: EdgeHandle,
    /// Sessions' events through Redis.
    pub events: Events,
    /// The records in Redis.
    pub directory: Directory,
    /// Writes to Redis, carried out one after another in the order the hub made them.
    pub writes: mpsc::UnboundedSender<Write>,
}

/// A write to Redis, made by the hub and awaited by [`run_writes`].
pub type Write = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Carry out the hub's writes in order (a leave never overtakes its join).
pub async fn run_writes(mut writes: mpsc::UnboundedReceiver<Write>) {
    while let Some(write) = writes.recv().await {
        write.await;
    }
}

/// A participant as it is recorded in Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MemberRecord {
    name: Option<String>,
    node: String,
}

/// A feed as it is recorded in Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FeedRecord {
    node: String,
    info: FeedInfo,
    tracks: Vec<RemoteTrack>,
    edge: SocketAddr,
}

/// What a node new to a session finds of it in Redis: the participants and feeds on other
/// live nodes (the feeds imported already).
#[derive(Debug, Default)]
pub struct RemoteState {
    members: Vec<(String, MemberRecord)>,
    feeds: Vec<FeedRecord>,
    /// When the session started, on whichever node it started first: every node's usage
    /// goes into the one record of that start.
    pub(super) started_at: Option<i64>,
}

/// Where a feed published on another node comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The node.
    pub node: String,
    /// Its edge.
    pub edge: SocketAddr,
}

/// A participant connected to another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePeer {
    name: Option<String>,
    node: String,
    /// Its connection's rating, as its node last told.
    quality: Option<relay::control::ConnectionQuality>,
    /// Its node stopped at this time: it is reconnecting, and leaves if not back within
    /// [`RESUME_WINDOW`].
    gone_since: Option<Instant>,
    /// When this node last heard it joined (a roster heard before then does not take it
    /// away).
    heard_at: Instant,
}

impl RemotePeer {
    /// On its node now (not reconnecting after that node stopped).
    pub(super) fn present(&self) -> bool {
        self.gone_since.is_none()
    }
}

/// A track of a feed, as its node's relay has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteTrack {
    /// Audio or video.
    pub kind: Kind,
    /// The codecs its publisher's answer chose (offered to subscribers here).
    pub codecs: Vec<Codec>,
    /// What the publisher's relay was told of it.
    pub description: relay::FeedDescription,
}

/// How long a resume token stays in Redis: longer than any session, and removed when its
/// participant leaves.
pub const RESUME_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A change to a session that nodes tell each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    /// A node follows the session from now on: the others say again what they have.
    Sync,
    /// A participant joined on the sending node.
    Joined {
        /// Who.
        uid: String,
        /// Its display name.
        name: Option<String>,
    },
    /// A participant of the sending node left.
    Left {
        /// Who.
        uid: String,
    },
    /// A feed was published on the sending node.
    FeedPublished {
        /// The feed as participants see it.
        info: FeedInfo,
        /// Its tracks as the sending node's relay has them.
        tracks: Vec<RemoteTrack>,
        /// The sending node's edge.
        edge: SocketAddr,
    },
    /// A feed of the sending node went.
    FeedUnpublished {
        /// The feed.
        feed_id: String,
    },
    /// Its publisher muted or unmuted a track of a feed of the sending node.
    FeedMuted {
        /// The feed.
        feed_id: String,
        /// `audio` or `video`.
        kind: String,
        /// Muted now, or unmuted.
        muted: bool,
    },
    /// A participant of the sending node started or stopped speaking, or (every 500 ms while
    /// it speaks) how loud: each node picks the dominant speaker from all of the session's.
    Speech {
        /// Who.
        uid: String,
        /// Speaking now.
        speaking: bool,
        /// dB above silence.
        loudness: u8,
    },
    /// How a participant of the sending node's connection rates now.
    Quality {
        /// Who.
        uid: String,
        /// Its rating.
        quality: relay::control::ConnectionQuality,
    },
    /// Everything the sending node has of the session, said after it said each participant
    /// and feed again: what others hold of it beyond this went while they could not hear (an
    /// event lost while a node was cut off from Redis), and goes now.
    Roster {
        /// Its participants.
        members: Vec<String>,
        /// Its published feeds, each with its muted tracks (`audio`, `video`).
        feeds: Vec<(String, Vec<String>)>,
    },
}

impl Hub {
    /// Record the change in Redis (`record`), then tell the nodes following `sid`; in
    /// order with the hub's other writes.
    fn tell_cluster(&self, sid: &str, event: SessionEvent, record: Option<Record>) {
        let Some(link) = &self.cluster else {
            return;
        };
        let (events, directory) = (link.events.clone(), link.directory.clone());
        let (sid, me) = (sid.to_owned(), link.node.clone());
        let write: Write = Box::pin(async move {
            let recorded = match record {
                None => Ok(()),
                Some(Record::Member(uid, Some(m))) => {
                    let json = serde_json::to_string(&m).expect("records serialise");
                    directory.put_member(&sid, &uid, &json).await
                }
                Some(Record::Member(uid, None)) => directory.remove_member(&sid, &uid, &me).await,
                Some(Record::Feed(feed_id, Some(f))) => {
                    let json = serde_json::to_string(&f).expect("records serialise");
                    directory.put_feed(&sid, &feed_id, &json).await
                }
                Some(Record::Feed(feed_id, None)) => {
                    directory.remove_feed(&sid, &feed_id, &me).await
                }
            };
            if let Err(e) = recorded {
                tracing::warn!(%sid, error = %e, "a session record was not written");
            }
            if let Err(e) = events.publish(&sid, event).await {
                tracing::warn!(%sid, error = %e, "a session event did not reach the cluster");
            }
        });
        let _ = link.writes.send(write);
    }

    /// A session starts on this node: follow its events, and have the others say what they
    /// have.
    pub(super) fn follow_session(&self, sid: &str) {
        let Some(link) = &self.cluster else {
            return;
        };
        let (events, directory, me) = (
            link.events.clone(),
            link.directory.clone(),
            link.node.clone(),
        );
        let sid = sid.to_owned();
        // In the hub's order with the session's other writes: a leave's unfollow made just
        // before cannot come after it and leave the session unfollowed.
        let _ = link.writes.send(Box::pin(async move {
            if let Err(e) = directory.enter_session(&sid, &me).await {
                tracing::warn!(%sid, error = %e, "the session's nodes do not list this one");
            }
            if let Err(e) = events.follow(&sid).await {
                tracing::warn!(%sid, error = %e, "not following the session's events");
                return;
            }
            if let Err(e) = events.publish(&sid, SessionEvent::Sync).await {
                tracing::warn!(%sid, error = %e, "the cluster was not asked for the session");
            }
        }));
    }

    /// The session has no participant left on this node: stop following it, and let the
    /// edge forget the feeds it took from other nodes. The edge's part is returned for the
    /// caller's job on the session, so that a join that comes next (a page refreshed) waits
    /// for it and the feeds it imports again are not removed after.
    /// The returned work says whether this node was the last with participants of the
    /// session (it then closes the session's usage record); true where Redis cannot say.
    #[must_use = "the imports are removed only when the returned work runs"]
    pub(super) fn unfollow_session(
        &self,
        sid: &str,
    ) -> Option<Pin<Box<dyn Future<Output = bool> + Send>>> {
        let link = self.cluster.as_ref()?;
        let imported: Vec<relay::ids::FeedId> = self
            .rooms
            .get(sid)
            .map(|r| {
                r.feeds
                    .iter()
                    .filter(|(_, f)| f.origin.is_some())
                    .flat_map(|(id, f)| f.tracks.iter().map(|t| super::relay_feed(id, t.kind)))
                    .collect()
            })
            .unwrap_or_default();
        let (events, directory, me) = (
            link.events.clone(),
            link.directory.clone(),
            link.node.clone(),
        );
        let unfollowed = sid.to_owned();
        let (last_tx, last_rx) = tokio::sync::oneshot::channel();
        let _ = link.writes.send(Box::pin(async move {
            let _ = events.unfollow(&unfollowed).await;
            let last = directory
                .leave_session(&unfollowed, &me)
                .await
                .unwrap_or(true);
            let _ = last_tx.send(last);
        }));
        let _ = link.edge.set_session_peers(&Sid::from(sid), Vec::new());
        let edge = link.edge.clone();
        let rsid = Sid::from(sid);
        Some(Box::pin(async move {
            for track in imported {
                let _ = edge.remove_import(&rsid, &track).await;
            }
            last_rx.await.unwrap_or(true)
        }))
    }

    /// A participant joined here.
    pub(super) fn announce_join(&self, sid: &str, uid: &str, name: Option<String>) {
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
    pub(super) fn announce_leave(&self, sid: &str, uid: &str) {
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
    fn feed_record(&self, sid: &str, feed_id: &str) -> Option<FeedRecord> {
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
    pub(super) fn announce_feed(&self, sid: &str, feed_id: &str) {
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
    pub(super) fn announce_unpublished(&self, sid: &str, feed_id: &str) {
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
    pub(super) fn announce_mute(&self, sid: &str, feed_id: &str, kind: &str, muted: bool) {
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

    /// Redis was lost and is back (restarted empty, perhaps): record again every participant
    /// and feed of this node, and have the others do the same.
    pub(super) fn cluster_recovered(&mut self) {
        let sids: Vec<String> = self.rooms.keys().cloned().collect();
        for sid in sids {
            self.follow_session(&sid);
            self.say_again(&sid);
        }
        // And its claims and start times, which an empty Redis lost.
        self.renew_claims();
    }

    /// Record and announce again what this node has of `sid`.
    fn say_again(&self, sid: &str) {
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

    /// What `sid` has on other live nodes, for a node new to it: read from Redis in the join's
    /// job, after the relay has the session, with the feeds imported through the edge.
    pub(super) fn load_remote(
        &self,
        sid: &str,
    ) -> Option<impl Future<Output = RemoteState> + Send> {
        let link = self.cluster.as_ref()?;
        let (directory, edge, me) = (link.directory.clone(), link.edge.clone(), link.node.clone());
        let sid = sid.to_owned();
        Some(async move {
            let read = async {
                let started_at = directory
                    .session_started(&sid, super::recording::unix_now())
                    .await?;
                let alive = directory.nodes().await?;
                let members = directory.members(&sid).await?;
                let feeds = directory.feeds(&sid).await?;
                Ok::<_, crate::cluster::ClusterError>((started_at, alive, members, feeds))
            };
            let (started_at, alive, members, feeds) = match read.await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%sid, error = %e, "the session's other nodes are not known yet");
                    return RemoteState::default();
                }
            };
            let elsewhere = |node: &str| node != me && alive.iter().any(|n| n.id == node);
            let mut state = RemoteState {
                started_at: Some(started_at),
                ..Default::default()
            };
            for (uid, json) in members {
                match serde_json::from_str::<MemberRecord>(&json) {
                    Ok(m) if elsewhere(&m.node) => state.members.push((uid, m)),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%sid, %uid, error = %e, "unreadable member record"),
                }
            }
            let rsid = Sid::from(sid.as_str());
            for (feed_id, json) in feeds {
                let f = match serde_json::from_str::<FeedRecord>(&json) {
                    Ok(f) if elsewhere(&f.node) => f,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(%sid, %feed_id, error = %e, "unreadable feed record");
                        continue;
                    }
                };
                let peer = PeerNode {
                    node: f.node.clone(),
                    addr: f.edge,
                };
                let uid = Uid::from(f.info.uid.as_str());
                let mut imported = true;
                for t in &f.tracks {
                    if let Err(e) = edge
                        .import(peer.clone(), &rsid, &uid, t.description.clone())
                        .await
                    {
                        tracing::warn!(%sid, %feed_id, error = %e, "a feed of another node was not imported");
                        imported = false;
                    }
                }
                if imported {
                    state.feeds.push(f);
                }
            }
            state
        })
    }

    /// Take in what a node new to `sid` found of it on other nodes.
    pub(super) fn apply_remote(&mut self, sid: &str, state: RemoteState) {
        self.apply_remote_state(sid, state);
        self.sync_data_peers(sid);
    }

    fn apply_remote_state(&mut self, sid: &str, state: RemoteState) {
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        for (uid, m) in state.members {
            if !room.peers.contains_key(&uid) {
                room.remote.insert(
                    uid,
                    RemotePeer {
                        name: m.name,
                        node: m.node,
                        gone_since: None,
                        heard_at: Instant::now(),
                        quality: None,
                    },
                );
            }
        }
        for f in state.feeds {
            let feed_id = f.info.feed_id.clone();
            room.feeds.entry(feed_id).or_insert_with(|| Feed {
                owner: f.info.uid.clone(),
                source: f.info.source,
                tracks: remote_tracks(&f.info, &f.tracks),
                published: true,
                origin: Some(Origin {
                    node: f.node,
                    edge: f.edge,
                }),
            });
        }
    }

    /// Another node told of a change to a session this node follows.
    pub(super) fn cluster_event(&mut self, envelope: Envelope<SessionEvent>) {
        let sid = envelope.sid.clone();
        self.handle_cluster_event(envelope);
        self.sync_data_peers(&sid);
    }

    /// The other nodes with participants of `sid` present now, for the edge: the session's
    /// data-channel messages from this node go to them. Told when they change.
    pub(super) fn sync_data_peers(&mut self, sid: &str) {
        let Some(link) = &self.cluster else {
            return;
        };
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        // A session with nobody here any more (its leave under way) sends nothing.
        let mut nodes: Vec<String> = room
            .remote
            .values()
            .filter(|p| p.present() && !room.peers.is_empty())
            .map(|p| p.node.clone())
            .filter(|n| *n != link.node)
            .collect();
        nodes.sort();
        nodes.dedup();
        let peers: Vec<PeerNode> = nodes
            .iter()
            .filter_map(|n| {
                let info = self.nodes.iter().find(|i| i.id == *n)?;
                Some(PeerNode {
                    node: n.clone(),
                    addr: info.edge,
                })
            })
            .collect();
        let known: Vec<String> = peers.iter().map(|p| p.node.clone()).collect();
        if room.data_peers == known {
            return;
        }
        room.data_peers = known;
        let _ = link.edge.set_session_peers(&Sid::from(sid), peers);
    }

    /// [`Hub::sync_data_peers`] for every session here.
    pub(super) fn sync_all_data_peers(&mut self) {
        let sids: Vec<String> = self.rooms.keys().cloned().collect();
        for sid in sids {
            self.sync_data_peers(&sid);
        }
    }

    fn handle_cluster_event(&mut self, envelope: Envelope<SessionEvent>) {
        let Envelope { from, sid, event } = envelope;
        let Some(room) = self.rooms.get_mut(&sid) else {
            return;
        };
        match event {
            SessionEvent::Sync => self.say_again(&sid),
            SessionEvent::Joined { uid, name } => {
                if let Some(peer) = room.peers.get_mut(&uid) {
                    // One of this node's participants, joined again through that node: its
                    // page lost this one (a network that failed for a while). It goes from
                    // here now if its websocket or media connection here is gone, else as
                    // soon as one is seen to end (the page has left it).
                    if peer.conn.is_none() || peer.dropped.is_some() {
                        self.room_input(&sid, jobs::RoomInput::MovedAway { uid, node: from });
                    } else {
                        peer.claimed_by = Some(from);
                    }
                    return;
                }
                if let Some(peer) = room.remote.get_mut(&uid) {
                    // Back on another node after its own stopped: a reconnect, not a join.
                    let back = peer.gone_since.take().is_some();
                    peer.heard_at = Instant::now();
                    let moved = peer.node != from;
                    if moved {
                        // What its old node said of it (speech, quality) no longer holds.
                        peer.quality = None;
                    }
                    peer.node = from;
                    let quiet = if moved {
                        room.speakers.remove(Instant::now(), &uid)
                    } else {
                        Vec::new()
                    };
                    self.tell_speakers(&sid, quiet);
                    if back {
                        self.broadcast(
                            &sid,
                            &uid,
                            Event::ParticipantReconnected { uid: uid.clone() },
                        );
                    }
                    return;
                }
                room.remote.insert(
                    uid.clone(),
                    RemotePeer {
                        name: name.clone(),
                        node: from,
                        gone_since: None,
                        heard_at: Instant::now(),
                        quality: None,
                    },
                );
                room.meter.peak = room
                    .meter
                    .peak
                    .max((room.peers.len() + room.remote.len()) as u32);
                self.broadcast(
                    &sid,
                    &uid,
                    Event::ParticipantJoined(ParticipantInfo {
                        uid: uid.clone(),
                        name,
                        quality: None,
                    }),
                );
            }
            SessionEvent::Left { uid } => self.remote_left(&sid, &uid, &from),
            SessionEvent::Quality { uid, quality } => {
                let Some(p) = room
                    .remote
                    .get_mut(&uid)
                    .filter(|p| p.node == from && p.present())
                else {
                    return;
                };
                p.quality = Some(quality);
                self.broadcast(
                    &sid,
                    &uid,
                    Event::ConnectionQuality {
                        uid: uid.clone(),
                        quality,
                    },
                );
            }
            SessionEvent::Speech {
                uid,
                speaking,
                loudness,
            } => {
                if !room
                    .remote
                    .get(&uid)
                    .is_some_and(|p| p.node == from && p.present())
                {
                    return;
                }
                let changes = room
                    .speakers
                    .handle_report(Instant::now(), &uid, speaking, loudness);
                self.tell_speakers(&sid, changes);
            }
            SessionEvent::Roster { members, feeds } => {
                // In its turn: a feed of that node whose import waits for the session's job
                // is among what the roster may take away.
                let input = jobs::RoomInput::Roster {
                    from,
                    members,
                    feeds,
                    at: Instant::now(),
                };
                self.room_input(&sid, input);
            }
            SessionEvent::FeedPublished { info, tracks, edge } => {
                match room.feeds.get(&info.feed_id).map(|f| f.origin.as_ref()) {
                    // Published again through another node (its publisher moved): the old
                    // one goes first.
                    Some(Some(o)) if o.node != from => {
                        let stale = vec![info.feed_id.clone()];
                        let node = Some(o.node.clone());
                        self.room_input(&sid, jobs::RoomInput::RemoteUnpublished(stale, node));
                    }
                    Some(_) => return,
                    None => {}
                }
                let origin = Origin { node: from, edge };
                self.room_input(
                    &sid,
                    jobs::RoomInput::RemoteFeed(Box::new((info, tracks, origin))),
                );
            }
            SessionEvent::FeedMuted {
                feed_id,
                kind,
                muted,
            } => {
                // In its turn: an import of the feed may be waiting for the session's job.
                let input = jobs::RoomInput::RemoteMuted {
                    feed_id,
                    kind,
                    muted,
                    from,
                };
                self.room_input(&sid, input);
            }
            SessionEvent::FeedUnpublished { feed_id } => {
                // In its turn: an import of the feed may be waiting for the session's job.
                let input = jobs::RoomInput::RemoteUnpublished(vec![feed_id], Some(from));
                self.room_input(&sid, input);
            }
        }
    }

    /// Node `from`'s roster of `sid` (everything it has of the session): what this node
    /// holds of it beyond that went while this node could not hear, and goes now; its
    /// tracks are muted or not as the roster says.
    pub(super) fn apply_roster(
        &mut self,
        sid: &str,
        from: String,
        members: Vec<String>,
        feeds: Vec<(String, Vec<String>)>,
        at: Instant,
    ) {
        let Some(room) = self.rooms.get(sid) else {
            return;
        };
        let left: Vec<String> = room
            .remote
            .iter()
            .filter(|(uid, p)| {
                // One heard joining after the roster came is newer than the roster.
                p.node == from
                    && p.gone_since.is_none()
                    && p.heard_at < at
                    && !members.contains(uid)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        let unpublished: Vec<String> = room
            .feeds
            .iter()
            .filter(|(id, f)| {
                f.origin.as_ref().is_some_and(|o| o.node == from)
                    && !feeds.iter().any(|(f, _)| f == *id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !left.is_empty() || !unpublished.is_empty() {
            tracing::info!(%sid, node = %from, ?left, ?unpublished, "repaired from a node's roster");
        }
        for uid in left {
            self.remote_left(sid, &uid, &from);
        }
        if !unpublished.is_empty() {
            let input = jobs::RoomInput::RemoteUnpublished(unpublished, Some(from.clone()));
            self.room_input(sid, input);
        }
        for (feed_id, muted) in feeds {
            for kind in ["audio", "video"] {
                let input = jobs::RoomInput::RemoteMuted {
                    feed_id: feed_id.clone(),
                    kind: kind.to_owned(),
                    muted: muted.iter().any(|m| m == kind),
                    from: from.clone(),
                };
                self.room_input(sid, input);
            }
        }
        self.sync_data_peers(sid);
    }

    /// A participant of node `from` left: its feeds go, and the others here are told.
    fn remote_left(&mut self, sid: &str, uid: &str, from: &str) {
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        if room.remote.get(uid).is_none_or(|p| p.node != from) {
            return;
        }
        room.remote.remove(uid);
        let quiet = room.speakers.remove(Instant::now(), uid);
        let owned: Vec<String> = room
            .feeds
            .iter()
            .filter(|(_, f)| f.owner == uid && f.origin.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        let input = jobs::RoomInput::RemoteUnpublished(owned, Some(from.to_owned()));
        self.room_input(sid, input);
        let uid = uid.to_owned();
        self.broadcast(sid, &uid, Event::ParticipantLeft { uid: uid.clone() });
        self.tell_speakers(sid, quiet);
    }

    /// A participant of this node's connection rates otherwise now: the other nodes are told.
    pub(super) fn announce_quality(
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
    pub(super) fn announce_speech(&self, sid: &str, uid: &str, speaking: bool, loudness: u8) {
        let event = SessionEvent::Speech {
            uid: uid.to_owned(),
            speaking,
            loudness,
        };
        self.tell_cluster(sid, event, None);
    }

    /// Take a feed of another node: the relay gets a replica of each track through the edge,
    /// then this node's participants are told it is there.
    pub(super) fn import_feed(
        &mut self,
        sid: &str,
        info: FeedInfo,
        tracks: Vec<RemoteTrack>,
        origin: Origin,
    ) {
        let Some(link) = &self.cluster else {
            return;
        };
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        if room.feeds.contains_key(&info.feed_id) || tracks.is_empty() {
            return;
        }
        room.feeds.insert(
            info.feed_id.clone(),
            Feed {
                owner: info.uid.clone(),
                source: info.source,
                tracks: remote_tracks(&info, &tracks),
                published: false,
                origin: Some(origin.clone()),
            },
        );
        let edge = link.edge.clone();
        let peer = PeerNode {
            node: origin.node,
            addr: origin.edge,
        };
        let (rsid, ruid) = (Sid::from(sid), Uid::from(info.uid.as_str()));
        let sid = sid.to_owned();
        let feed_id = info.feed_id.clone();
        self.spawn_job(
            &sid.clone(),
            async move {
                for t in tracks {
                    edge.import(peer.clone(), &rsid, &ruid, t.description).await?;
                }
                Ok::<_, edge::EdgeError>(())
            },
            move |hub, imported| {
                if let Err(e) = imported {
                    tracing::warn!(%sid, %feed_id, error = %e, "a feed of another node was not imported");
                    hub.unpublish(&sid, &[feed_id]);
                    return;
                }
                let Some(feed) = hub.rooms.get_mut(&sid).and_then(|r| r.feeds.get_mut(&feed_id))
                else {
                    return;
                };
                feed.published = true;
                let info = feed.info(&feed_id);
                let owner = feed.owner.clone();
                hub.broadcast(&sid, &owner, Event::FeedPublished(info));
            },
        );
    }

    /// Node `node` stopped: its participants in this node's sessions are reconnecting (the
    /// others here are told, and they leave if not back within [`RESUME_WINDOW`]), its feeds
    /// go, and its records of these sessions are removed from Redis.
    pub(super) fn node_gone(&mut self, node: &str) {
        self.mark_node_gone(node);
        self.sync_all_data_peers();
    }

    fn mark_node_gone(&mut self, node: &str) {
        let now = Instant::now();
        let sids: Vec<String> = self.rooms.keys().cloned().collect();
        for sid in sids {
            let Some(room) = self.rooms.get_mut(&sid) else {
                continue;
            };
            let mut reconnecting = Vec::new();
            for (uid, p) in room.remote.iter_mut() {
                if p.node == node && p.gone_since.is_none() {
                    p.gone_since = Some(now);
                    reconnecting.push(uid.clone());
                }
            }
            let feeds: Vec<String> = room
                .feeds
                .iter()
                .filter(|(_, f)| f.origin.as_ref().is_some_and(|o| o.node == node))
                .map(|(id, _)| id.clone())
                .collect();
            // They no longer speak here until they are back.
            let quiet: Vec<_> = reconnecting
                .iter()
                .flat_map(|uid| room.speakers.remove(now, uid))
                .collect();
            self.tell_speakers(&sid, quiet);
            for uid in reconnecting {
                self.broadcast(
                    &sid,
                    &uid,
                    Event::ParticipantReconnecting { uid: uid.clone() },
                );
            }
            if !feeds.is_empty() {
                let input = jobs::RoomInput::RemoteUnpublished(feeds, Some(node.to_owned()));
                self.room_input(&sid, input);
            }
            if let Some(link) = &self.cluster {
                let directory = link.directory.clone();
                let (sid, node) = (sid.clone(), node.to_owned());
                let _ = link.writes.send(Box::pin(async move {
                    if let Err(e) = directory.remove_node_records(&sid, &node).await {
                        tracing::warn!(%sid, %node, error = %e, "a gone node's records stay");
                    }
                }));
            }
        }
    }

    /// A track of a feed of node `from` was muted or unmuted: the others here are told.
    pub(super) fn remote_muted(
        &mut self,
        sid: &str,
        feed_id: String,
        kind: String,
        muted: bool,
        from: &str,
    ) {
        let Some(feed) = self
            .rooms
            .get_mut(sid)
            .and_then(|r| r.feeds.get_mut(&feed_id))
            .filter(|f| f.origin.as_ref().is_some_and(|o| o.node == from))
        else {
            return;
        };
        let Some(track) = feed.tracks.iter_mut().find(|t| t.kind.as_str() == kind) else {
            return;
        };
        if track.muted == muted {
            return;
        }
        track.muted = muted;
        let (uid, published) = (feed.owner.clone(), feed.published);
        if published {
            let event = if muted {
                Event::FeedMuted {
                    feed_id,
                    uid: uid.clone(),
                    kind,
                }
            } else {
                Event::FeedUnmuted {
                    feed_id,
                    uid: uid.clone(),
                    kind,
                }
            };
            self.broadcast(sid, &uid, event);
        }
    }

    /// Of `feed_ids`, those that came from `node` (all of them for None).
    pub(super) fn feeds_of_origin(
        &self,
        sid: &str,
        feed_ids: Vec<String>,
        node: Option<&str>,
    ) -> Vec<String> {
        let Some(room) = self.rooms.get(sid) else {
            return Vec::new();
        };
        feed_ids
            .into_iter()
            .filter(|id| {
                room.feeds.get(id).is_some_and(|f| match node {
                    Some(n) => f.origin.as_ref().is_some_and(|o| o.node == n),
                    None => true,
                })
            })
            .collect()
    }

    /// A participant that went from this node to `node`: the others here see it there, and
    /// the feeds it publishes there (announced perhaps while it was still here) are asked for
    /// again.
    pub(super) fn now_remote(&mut self, sid: &str, uid: &str, node: &str, name: Option<String>) {
        self.follow_session(sid);
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        room.remote.insert(
            uid.to_owned(),
            RemotePeer {
                name,
                node: node.to_owned(),
                quality: None,
                gone_since: None,
                heard_at: Instant::now(),
            },
        );
        self.sync_data_peers(sid);
    }

    /// Participants of stopped nodes not back within [`RESUME_WINDOW`] leave.
    pub(super) fn expire_remote(&mut self, now: Instant) {
        let mut left = Vec::new();
        for (sid, room) in &mut self.rooms {
            room.remote.retain(|uid, p| {
                let expired = p
                    .gone_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= RESUME_WINDOW);
                if expired {
                    left.push((sid.clone(), uid.clone()));
                }
                !expired
            });
        }
        for (sid, uid) in left {
            self.broadcast(&sid, &uid, Event::ParticipantLeft { uid: uid.clone() });
        }
    }

    /// A join with a resume token this node does not know: look for it in Redis (its
    /// participant's node stopped, and the page moved here). Found, the participant joins
    /// again under its old uid; the job answers the join either way.
    pub(super) fn find_rejoin(
        &mut self,
        sid: &str,
        pending: PendingJoin,
        identity: crate::auth::Identity,
        token: String,
    ) -> Option<serde_json::Value> {
        let directory = self.cluster.as_ref()?.directory.clone();
        let sid = sid.to_owned();
        self.spawn_job(
            &sid.clone(),
            {
                let token = token.clone();
                async move { directory.resume(&token).await }
            },
            move |hub, found| {
                let (conn, id) = (pending.conn, pending.id);
                let result = match found {
                    Ok(Some((s, uid))) if s == sid => {
                        let mut pending = pending;
                        pending.resume = None;
                        pending.rejoin = Some(token);
                        let mut identity = identity;
                        identity.uid = Some(uid);
                        hub.join_session(&sid, pending, identity)
                    }
                    Ok(Some(_)) => Err((
                        ErrorCode::ResumeFailed,
                        "the resume token belongs to another session".into(),
                    )),
                    Ok(None) => Err((
                        ErrorCode::ResumeFailed,
                        "unknown or expired resume token".into(),
                    )),
                    // Not a refusal: the page tries again.
                    Err(e) => Err((
                        ErrorCode::Relay,
                        format!("the cluster could not be asked for the resume token: {e}"),
                    )),
                };
                if !(matches!(result, Ok(None)) && hub.busy(&sid)) {
                    joining_over(&mut hub.conns, conn);
                }
                hub.reply(conn, id, result);
            },
        );
        None
    }

    /// Keep a participant's resume token in Redis, so that it can join again on another
    /// node if this one stops.
    pub(super) fn record_resume(&self, sid: &str, uid: &str, token: &str) {
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
    pub(super) fn forget_resume(&self, token: &str) {
        let Some(link) = &self.cluster else {
            return;
        };
        let directory = link.directory.clone();
        let token = token.to_owned();
        let _ = link.writes.send(Box::pin(async move {
            let _ = directory.remove_resume(&token).await;
        }));
    }

    /// Where the first participant of `sid` on this node goes (a future for the session's
    /// job; None out of a cluster). The session's participants in a region (this node's, or
    /// the one their token names) share its node there, claimed atomically in Redis by the
    /// first instance to place it (the least filled node of the region with room), until
    /// that node is full. An edge-only node keeps its participants: it is where they enter
    /// the cloud. Redis unreachable, or no node of the region with room: here.
    pub(super) fn place(
        &self,
        sid: &str,
        region: Option<&str>,
    ) -> Option<impl Future<Output = Placed> + Send + 'static> {
        let link = self.cluster.as_ref()?;
        let (directory, me) = (link.directory.clone(), link.node.clone());
        let region = region.unwrap_or(&link.region).to_owned();
        let sid = sid.to_owned();
        Some(async move {
            let nodes = match directory.nodes().await {
                Ok(nodes) => nodes,
                Err(e) => {
                    tracing::warn!(%sid, error = %e, "placed here: the nodes are not known");
                    return Placed::Here;
                }
            };
            if !nodes.iter().any(|n| n.id == me && n.homes_sessions) {
                return Placed::Here;
            }
            // A session is placed in its region (the node reached's, or the token's); with
            // no node of that region with room, here (the session spans regions by the edges).
            let in_region = |n: &&crate::cluster::NodeInfo| n.region == region;
            let Some(candidate) = placement::choose(&nodes, &region).filter(in_region) else {
                return Placed::Here;
            };
            let candidate = candidate.id.clone();
            let holder = match directory
                .claim_session(&sid, &region, &candidate, &nodes)
                .await
            {
                Ok(holder) => holder,
                Err(e) => {
                    tracing::warn!(%sid, error = %e, "placed here: the session's node is not known");
                    return Placed::Here;
                }
            };
            match placement::place(&nodes, &region, Some(&holder)).filter(in_region) {
                Some(n) if n.id != me => Placed::There {
                    node: n.id.clone(),
                    url: ws_url(n),
                },
                _ => Placed::Here,
            }
        })
    }

    /// A join's placement is known: it goes on here, or the page is sent to the node.
    pub(super) fn placed(
        &mut self,
        sid: &str,
        pending: PendingJoin,
        identity: Identity,
        placed: Placed,
    ) {
        match placed {
            Placed::Here => {
                self.room_input(sid, jobs::RoomInput::Join(Box::new(pending), identity))
            }
            Placed::There { node, url } => {
                let (conn, id) = (pending.conn, pending.id);
                tracing::debug!(%sid, %node, "join sent on to the session's node");
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.joining = false;
                }
                self.send(conn, ServerMessage::moved(id, &node, url));
            }
        }
    }

    /// Keep this node's claims on the sessions it has participants of, and their start times
    /// (both lapse after [`crate::cluster::directory::SESSION_TTL`] otherwise: the next join
    /// of the region could place the session anew, and its usage would start a new record).
    pub(super) fn renew_claims(&self) {
        let Some(link) = &self.cluster else {
            return;
        };
        let sids: Vec<(String, i64)> = self
            .rooms
            .iter()
            .filter(|(_, r)| !r.peers.is_empty())
            .map(|(sid, r)| (sid.clone(), r.started_at))
            .collect();
        if sids.is_empty() {
            return;
        }
        let claims = link.homes_sessions;
        let (directory, me, region) = (
            link.directory.clone(),
            link.node.clone(),
            link.region.clone(),
        );
        let _ = link.writes.send(Box::pin(async move {
            for (sid, started_at) in sids {
                if claims {
                    let _ = directory.renew_session(&sid, &region, &me).await;
                }
                let _ = directory.renew_started(&sid, started_at).await;
                let _ = directory.enter_session(&sid, &me).await;
            }
        }));
    }

    /// The websocket URLs of the other live nodes, this node's region first: where a page
    /// goes on when this node stops.
    pub(super) fn other_servers(&self) -> Vec<String> {
        let Some(link) = &self.cluster else {
            return Vec::new();
        };
        let region = self
            .nodes
            .iter()
            .find(|n| n.id == link.node)
            .map(|n| n.region.clone());
        let mut others: Vec<&crate::cluster::NodeInfo> =
            self.nodes.iter().filter(|n| n.id != link.node).collect();
        others.sort_by_key(|n| (Some(&n.region) != region.as_ref(), n.load, n.id.clone()));
        others.into_iter().map(ws_url).collect()
    }

    /// The participants of `sid` on other nodes, as a joining participant sees them.
    pub(super) fn remote_participants(&self, sid: &str) -> Vec<ParticipantInfo> {
        self.rooms
            .get(sid)
            .map(|r| {
                r.remote
                    .iter()
                    .map(|(uid, p)| ParticipantInfo {
                        uid: uid.clone(),
                        name: p.name.clone(),
                        quality: p.quality,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `uid` is in `sid` on another node.
    pub(super) fn joined_elsewhere(&self, sid: &str, uid: &str) -> bool {
        self.rooms
            .get(sid)
            .is_some_and(|r| r.remote.contains_key(uid))
    }
}

/// A change to the records of a session in Redis: a participant or feed put (Some) or removed.
enum Record {
    Member(String, Option<MemberRecord>),
    Feed(String, Option<FeedRecord>),
}

/// The tracks of a feed of another node, as the hub keeps them.
fn remote_tracks(info: &FeedInfo, tracks: &[RemoteTrack]) -> Vec<Track> {
    tracks
        .iter()
        .map(|t| Track {
            kind: t.kind,
            codecs: t.codecs.clone(),
            active: true,
            muted: info.muted.iter().any(|m| m == t.kind.as_str()),
            description: Some(t.description.clone()),
        })
        .collect()
}

/// Where the first participant of a session on a node goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// This node.
    Here,
    /// Another node: the page joins there.
    There {
        /// Its id.
        node: String,
        /// Its websocket URL.
        url: String,
    },
}

/// A node's websocket URL, from its signalling URL.
fn ws_url(node: &crate::cluster::NodeInfo) -> String {
    let ws = match node.signalling.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", node.signalling.trim_start_matches("http://")),
    };
    format!("{}/ws", ws.trim_end_matches('/'))
}
