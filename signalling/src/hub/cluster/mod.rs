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
use crate::protocol::{Event, FeedInfo, ParticipantInfo};

use super::*;

mod announce;
mod data_peers;
mod failover;
mod incoming;
mod placement;

pub use placement::Placed;

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
    /// Set when the node drains: its heartbeat then says it homes no session.
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
