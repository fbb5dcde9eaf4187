//! Relay calls off the hub's task, one session at a time.
//!
//! A relay call waits on a core, and a core can be busy (a large fan-out, a burst of
//! handshakes). The hub never waits with it: what a request needs from the relay runs as a
//! job on its own task, and its result comes back as an input ([`Input::Done`]) that finishes
//! the request. While a session has a job out, its later inputs wait in that session's
//! backlog and are handled in order when the job is done, so each session still sees its
//! requests one after another with the relay's answers in between, and other sessions never
//! wait for it.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Instant;

use crate::auth::Identity;
use crate::protocol::{ErrorCode, Request};

use super::*;

/// Requests of one connection that may wait for its session's job; more are refused, so a
/// client cannot grow the hub's memory while its session's relay core is busy. Half a
/// connection's outgoing queue ([`ws::OUTGOING_QUEUE`]): the replies to what waited go out in
/// one burst when the job is done, and must not make the connection look too slow to read them.
pub const MAX_WAITING: usize = ws::OUTGOING_QUEUE / 2;

/// Inputs that may wait for one session's job in all: a session's participants together.
pub const MAX_WAITING_PER_SESSION: usize = 1024;

/// The rest of a request, run on the hub once its relay calls are done.
pub struct Done(Box<dyn FnOnce(&mut Hub) + Send>);

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Done")
    }
}

/// An input that concerns one session, handled only when that session has no job out.
#[derive(Debug)]
pub(super) enum RoomInput {
    /// A joined connection's request.
    Request {
        conn: ConnId,
        id: u64,
        request: Request,
    },
    /// A join whose credentials were good.
    Join(Box<PendingJoin>, Identity),
    /// A WHIP request whose token was good.
    Whip(Box<super::whip::WhipRequest>, Identity),
    /// The relay dropped a participant; its last counters.
    Dropped {
        uid: String,
        usage: ParticipantUsage,
    },
    /// A participant's resume window may have run out.
    Expire { uid: String },
    /// Usage is due to be written.
    Flush,
    /// The dominant speaker's video feeds changed: tell the relay.
    SpeakerFeeds(Vec<FeedId>),
    /// Another node published a feed: import it.
    RemoteFeed(Box<(FeedInfo, Vec<cluster::RemoteTrack>, cluster::Origin)>),
    /// Feeds of another node went: those of the node named, if one is (a feed published
    /// again through another node since stays).
    RemoteUnpublished(Vec<String>, Option<String>),
    /// A participant of this node joined again through another node.
    MovedAway { uid: String, node: String },
    /// A track of a feed of another node was muted or unmuted.
    RemoteMuted {
        feed_id: String,
        kind: String,
        muted: bool,
        from: String,
    },
    /// Everything node `from` has of the session.
    Roster {
        from: String,
        members: Vec<String>,
        feeds: Vec<(String, Vec<String>)>,
        /// When it came: participants heard joining since are newer than it.
        at: std::time::Instant,
    },
}

/// A session's job in flight and what waits behind it.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    running: bool,
    waiting: VecDeque<RoomInput>,
}

impl Hub {
    /// Run `work` (relay calls) off the hub, then `then` with its result on the hub. Every
    /// input for `sid` waits until `then` has run. One job per session at a time: an input
    /// starts at most one, and so may `then`.
    pub(super) fn spawn_job<T, W, F>(&mut self, sid: &str, work: W, then: F)
    where
        T: Send + 'static,
        W: Future<Output = T> + Send + 'static,
        F: FnOnce(&mut Hub, T) + Send + 'static,
    {
        let backlog = self.backlogs.entry(sid.to_owned()).or_default();
        debug_assert!(!backlog.running, "one job at a time for session {sid}");
        backlog.running = true;
        let inputs = self.inputs.clone();
        let sid = sid.to_owned();
        tokio::spawn(async move {
            let out = work.await;
            let done = Done(Box::new(move |hub: &mut Hub| then(hub, out)));
            // The hub may be gone (shutting down); then nothing waits for this.
            let _ = inputs.send(Input::Done(sid, done)).await;
        });
    }

    /// Whether `sid` has a job out (its inputs wait).
    pub(super) fn busy(&self, sid: &str) -> bool {
        self.backlogs.get(sid).is_some_and(|b| b.running)
    }

    /// Handle an input for `sid` now, or after the session's job if it has one out. Past
    /// [`MAX_WAITING`] waiting requests of its connection, or [`MAX_WAITING_PER_SESSION`] in
    /// all, a request or join is refused rather than queued.
    pub(super) fn room_input(&mut self, sid: &str, input: RoomInput) {
        let Some(backlog) = self.backlogs.get_mut(sid).filter(|b| b.running) else {
            self.handle_room_input(sid, input);
            return;
        };
        let refuse = match &input {
            RoomInput::Request { conn, id, .. } => Some((*conn, *id)),
            RoomInput::Join(pending, _) => Some((pending.conn, pending.id)),
            _ => None,
        };
        let full = |conn: ConnId| {
            backlog.waiting.len() >= MAX_WAITING_PER_SESSION
                || backlog
                    .waiting
                    .iter()
                    .filter(|i| match i {
                        RoomInput::Request { conn: c, .. } => *c == conn,
                        RoomInput::Join(pending, _) => pending.conn == conn,
                        _ => false,
                    })
                    .count()
                    >= MAX_WAITING
        };
        match refuse {
            Some((conn, id)) if full(conn) => {
                if matches!(input, RoomInput::Join(..)) {
                    joining_over(&mut self.conns, conn);
                }
                self.reply(
                    conn,
                    id,
                    Err((
                        ErrorCode::RateLimited,
                        "too many requests are waiting for the session's relay core; try again \
                         shortly"
                            .to_owned(),
                    )),
                );
            }
            _ => backlog.waiting.push_back(input),
        }
    }

    /// Whether an input like `probe` (same kind and participant) already waits for `sid`: the
    /// periodic checks need not pile up behind a slow job.
    pub(super) fn waiting(&self, sid: &str, probe: impl Fn(&RoomInput) -> bool) -> bool {
        self.backlogs
            .get(sid)
            .is_some_and(|b| b.waiting.iter().any(probe))
    }

    /// A job is done: finish it, then handle what waited until one starts another job.
    pub(super) fn job_done(&mut self, sid: &str, done: Done) {
        if let Some(backlog) = self.backlogs.get_mut(sid) {
            backlog.running = false;
        }
        (done.0)(self);
        loop {
            let Some(backlog) = self.backlogs.get_mut(sid) else {
                return;
            };
            if backlog.running {
                return;
            }
            let Some(input) = backlog.waiting.pop_front() else {
                self.backlogs.remove(sid);
                return;
            };
            self.handle_room_input(sid, input);
        }
    }

    fn handle_room_input(&mut self, sid: &str, input: RoomInput) {
        match input {
            RoomInput::Request { conn, id, request } => {
                // The connection may have left (or resumed elsewhere) while this waited.
                let joined = self.conns.get(&conn).and_then(|c| c.joined.clone());
                let Some((_, uid)) = joined.filter(|(s, _)| s == sid) else {
                    self.reply(
                        conn,
                        id,
                        Err((ErrorCode::NotJoined, "join a session first".into())),
                    );
                    return;
                };
                // Every joined connection names a live participant (leave clears it); checked
                // here once so that the request handlers can rely on it.
                if self
                    .rooms
                    .get(sid)
                    .is_none_or(|r| !r.peers.contains_key(&uid))
                {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.joined = None;
                        c.unjoined_since = Instant::now();
                    }
                    self.reply(
                        conn,
                        id,
                        Err((
                            ErrorCode::NotJoined,
                            "the participant has left the session".into(),
                        )),
                    );
                    return;
                }
                let result = self.request(sid, &uid, conn, id, request);
                if let Ok(None) = result {
                    // A job finishes it: the reply and the offer come from there.
                    return;
                }
                // The reply goes out before the offer that carries the change, so the SDK
                // knows what a new m-section is for when the offer arrives.
                self.reply(conn, id, result);
                self.negotiate(sid, &uid);
            }
            RoomInput::Join(pending, identity) => {
                let (conn, id) = (pending.conn, pending.id);
                if !self.conns.contains_key(&conn) {
                    return; // closed while it waited
                }
                let result = self.join_session(sid, *pending, identity);
                if !(matches!(result, Ok(None)) && self.busy(sid)) {
                    // Answered here; else the job that adds it answers.
                    joining_over(&mut self.conns, conn);
                }
                self.reply(conn, id, result);
            }
            RoomInput::Dropped { uid, usage } => {
                // In a cluster, a page closes its media connection when it moves to another
                // node (its websocket here may not have been seen to go yet), which will
                // announce it: it stays until then, or until its resume window ends, with its
                // last counters. A page that closes without a leave (its tab) then leaves
                // after the resume window, as one whose network went.
                if self.cluster.is_some() {
                    if let Some(peer) = self.peer_mut(sid, &uid) {
                        peer.dropped = Some(usage);
                        peer.disconnected_at.get_or_insert_with(Instant::now);
                        if let Some(node) = peer.claimed_by.clone() {
                            self.moved_away(sid, &uid, &node);
                        }
                        return;
                    }
                }
                // The relay has forgotten it: its last counters come with the event.
                self.leave_with(sid, &uid, Some(usage), None);
            }
            RoomInput::Expire { uid } => {
                let now = Instant::now();
                let expired = self
                    .rooms
                    .get(sid)
                    .and_then(|r| r.peers.get(&uid))
                    .and_then(|p| p.disconnected_at)
                    .is_some_and(|t| now.saturating_duration_since(t) >= RESUME_WINDOW);
                if expired {
                    let usage = self.peer_mut(sid, &uid).and_then(|p| p.dropped.take());
                    self.leave_with(sid, &uid, usage, None);
                }
            }
            RoomInput::Whip(request, identity) => self.whip_in_session(sid, *request, identity),
            RoomInput::Flush => self.flush_usage(sid),
            RoomInput::RemoteFeed(feed) => {
                let (info, tracks, origin) = *feed;
                self.import_feed(sid, info, tracks, origin);
            }
            RoomInput::RemoteUnpublished(feed_ids, node) => {
                let feed_ids = self.feeds_of_origin(sid, feed_ids, node.as_deref());
                self.unpublish(sid, &feed_ids);
            }
            RoomInput::RemoteMuted {
                feed_id,
                kind,
                muted,
                from,
            } => self.remote_muted(sid, feed_id, kind, muted, &from),
            RoomInput::Roster {
                from,
                members,
                feeds,
                at,
            } => self.apply_roster(sid, from, members, feeds, at),
            RoomInput::MovedAway { uid, node } => {
                let gone = self
                    .rooms
                    .get(sid)
                    .and_then(|r| r.peers.get(&uid))
                    .is_some_and(|p| p.conn.is_none() || p.dropped.is_some());
                if gone {
                    self.moved_away(sid, &uid, &node);
                }
            }
            RoomInput::SpeakerFeeds(feeds) => {
                if !self.rooms.contains_key(sid) {
                    return;
                }
                let relay = self.relay.clone();
                let rsid = relay::ids::Sid::from(sid);
                self.spawn_job(
                    sid,
                    async move { relay.set_speaker_feeds(rsid.clone(), feeds).await },
                    |_, result| {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "speaker feeds not set");
                        }
                    },
                );
            }
        }
    }
}
