//! Joining a session: the checks done on the hub, the credentials checked off it, then
//! resume or a new participant.

use std::time::Instant;

use relay::control::{ParticipantConfig, ParticipantInfo as RelayParticipant};
use relay::ids::{Sid, Uid};
use serde_json::json;

use crate::accounts::Credentials;
use crate::auth::{AuthError, Identity};
use crate::protocol::{self, ErrorCode, Event, FeedInfo, ParticipantInfo, ServerMessage};

use super::jobs::RoomInput;
use super::*;

/// A join on its way through the relay.
struct Joined {
    conn: ConnId,
    id: u64,
    data: bool,
    e2ee: bool,
    /// It joined again after its node stopped, with this resume token.
    rejoin: Option<String>,
    uid: String,
    name: Option<String>,
    grants: crate::auth::Grants,
    key_records: bool,
    cid: String,
    public_sid: String,
}

/// What a join asks for besides the session and its credentials.
pub(super) struct JoinAsked {
    /// The protocol version the SDK speaks.
    pub(super) v: u32,
    pub(super) name: Option<String>,
    pub(super) resume: Option<String>,
    pub(super) data: bool,
    pub(super) e2ee: bool,
    pub(super) placed: bool,
}

impl Hub {
    /// Check what a join can be checked for here, then hand its credentials to the accounts
    /// thread; the join goes on in [`Hub::finish_join`] when they come back.
    pub(super) fn join(
        &mut self,
        conn: ConnId,
        id: u64,
        sid: String,
        key: Option<String>,
        token: Option<String>,
        asked: JoinAsked,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        let JoinAsked {
            v,
            name,
            resume,
            data,
            e2ee,
            placed,
        } = asked;
        if v != protocol::VERSION {
            return Err((
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {v} is not supported (this server speaks {})",
                    protocol::VERSION
                ),
            ));
        }
        if sid.is_empty() || sid.len() > 128 {
            return Err((
                ErrorCode::InvalidMessage,
                "sid must be 1 to 128 characters".into(),
            ));
        }
        let meta = self
            .conns
            .get(&conn)
            .map(|c| c.meta.clone())
            .ok_or((ErrorCode::NotJoined, "connection closed".to_owned()))?;
        if let Err(why) = self.limiter.check_address(Instant::now(), meta.ip) {
            return Err((ErrorCode::RateLimited, why));
        }
        if key.as_ref().is_some_and(|k| k.len() > MAX_KEY_LEN)
            || token.as_ref().is_some_and(|t| t.len() > MAX_TOKEN_LEN)
        {
            return Err((
                ErrorCode::Unauthorized,
                format!("keys are at most {MAX_KEY_LEN} characters and tokens {MAX_TOKEN_LEN}"),
            ));
        }
        let credentials = match (key, token) {
            (_, Some(token)) => Credentials::Token {
                token,
                sid: sid.clone(),
            },
            (Some(key_id), None) => Credentials::Key {
                key_id,
                origin: meta.origin,
            },
            (None, None) => {
                return Err((
                    ErrorCode::Unauthorized,
                    AuthError::MissingCredentials.to_string(),
                ))
            }
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.joining = true;
        }
        let pending = Box::new(PendingJoin {
            conn,
            id,
            sid,
            name,
            resume,
            data,
            e2ee,
            rejoin: None,
            placed,
        });
        let inputs = self.inputs.clone();
        self.accounts.authenticate(credentials, move |identity| {
            // The hub may be gone (shutting down); then so is the connection.
            let _ = inputs.blocking_send(Input::Authenticated(pending, identity));
        });
        Ok(None)
    }

    /// A join whose credentials are good: limited per key, then handled in its session's
    /// turn ([`Hub::join_session`]).
    pub(super) fn finish_join(
        &mut self,
        pending: Box<PendingJoin>,
        identity: Identity,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        // Limited per key, now that the key is known to be real: attempts with made-up keys
        // and other tenants' joins never count against it.
        if let Err(why) = self.limiter.check_key(Instant::now(), &identity.key_id) {
            return Err((ErrorCode::RateLimited, why));
        }
        // Session names are per client: the same name under two clients is two sessions.
        let sid = format!("{}/{}", identity.cid, pending.sid);
        self.room_input(&sid, RoomInput::Join(pending, identity));
        Ok(None)
    }

    /// Resume, or create the session if need be and add the participant (a job: the reply
    /// comes when the relay has done both).
    pub(super) fn join_session(
        &mut self,
        sid: &str,
        pending: PendingJoin,
        identity: Identity,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        let (mut pending, mut identity) = (pending, identity);
        if let Some(token) = pending
            .resume
            .clone()
            .filter(|t| !self.resume.contains_key(t))
        {
            if self.cluster.is_some() {
                // Perhaps a participant of another node that stopped: its token is in Redis.
                return Ok(self.find_rejoin(sid, pending, identity, token));
            }
            // Perhaps a participant of this server before it restarted.
            if let Some(uid) = self.restored_uid(sid, &token) {
                pending.resume = None;
                pending.rejoin = Some(token);
                identity.uid = Some(uid);
            }
        }
        let fresh = pending.resume.is_none() && pending.rejoin.is_none();
        // Draining, a new session is refused; in a cluster it is placed on another node
        // (below), unless another node already sent the page here.
        if self.draining
            && fresh
            && !self.rooms.contains_key(sid)
            && (self.cluster.is_none() || pending.placed)
        {
            return Err(draining());
        }
        let elsewhere = identity
            .region
            .as_deref()
            .is_some_and(|r| self.cluster.as_ref().is_some_and(|c| c.region != r));
        if fresh && !pending.placed && (!self.rooms.contains_key(sid) || elsewhere) {
            // The first participant of the session on this node, or one whose token names
            // another region: in a cluster, its node may be another.
            if let Some(place) = self.place(sid, identity.region.as_deref()) {
                let mut pending = pending;
                pending.placed = true;
                let sid = sid.to_owned();
                self.spawn_job(&sid.clone(), place, move |hub, placed| {
                    hub.placed(&sid, pending, identity, placed)
                });
                return Ok(None);
            }
        }
        let PendingJoin {
            conn,
            id,
            sid: public_sid,
            name,
            resume,
            data,
            e2ee,
            rejoin,
            placed: _,
        } = pending;
        if let Some(token) = resume {
            let Some((rsid, uid)) = self.resume.get(&token).cloned() else {
                return Err((
                    ErrorCode::ResumeFailed,
                    "unknown or expired resume token".into(),
                ));
            };
            if rsid != sid {
                return Err((
                    ErrorCode::ResumeFailed,
                    "the resume token belongs to another session".into(),
                ));
            }
            let Some(peer) = self.rooms.get_mut(sid).and_then(|r| r.peers.get_mut(&uid)) else {
                return Err((ErrorCode::ResumeFailed, "the participant has left".into()));
            };
            if peer.dropped.is_some() {
                return Err((
                    ErrorCode::ResumeFailed,
                    "the participant's media connection ended".into(),
                ));
            }
            let old = peer.conn.replace(conn);
            peer.disconnected_at = None;
            // A half-done negotiation is offered again on the new connection.
            peer.outstanding = None;
            peer.answer_refused = false;
            for e in &mut peer.entries {
                if e.state == Negotiation::Offered {
                    e.state = Negotiation::New;
                }
            }
            if let Some(d) = peer
                .data
                .as_mut()
                .filter(|d| d.state == Negotiation::Offered)
            {
                d.state = Negotiation::New;
            }
            if let Some(c) = old.and_then(|old| self.conns.get_mut(&old)) {
                c.joined = None;
            }
            if let Some(c) = self.conns.get_mut(&conn) {
                c.joined = Some((sid.to_owned(), uid.clone()));
            }
            let snapshot = self.snapshot(sid, &uid, &token);
            self.send(conn, ServerMessage::ok(id, snapshot));
            self.negotiate(sid, &uid);
            return Ok(None);
        }

        let exists = self.rooms.contains_key(sid);
        if let Some(room) = self.rooms.get(sid).filter(|r| r.e2ee != e2ee) {
            let reason = if room.e2ee {
                "this session is end-to-end encrypted: join it with the e2ee option"
            } else {
                "this session is not end-to-end encrypted: join it without the e2ee option"
            };
            return Err((ErrorCode::E2eeMismatch, reason.into()));
        }
        let uid = match identity.uid {
            Some(uid)
                if self
                    .rooms
                    .get(sid)
                    .is_some_and(|r| r.peers.contains_key(&uid))
                    || (rejoin.is_none() && self.joined_elsewhere(sid, &uid)) =>
            {
                return Err((
                    ErrorCode::AlreadyJoined,
                    format!("participant {uid} is already in the session"),
                ));
            }
            Some(uid) => uid,
            None => random_id("u-"),
        };
        let name = name.or(identity.name);
        let joined = Joined {
            conn,
            id,
            data,
            e2ee,
            rejoin,
            uid,
            name,
            grants: identity.grants,
            key_records: identity.key_records,
            cid: identity.cid,
            public_sid,
        };
        let relay = self.relay.clone();
        let (rsid, ruid) = (Sid::from(sid), Uid::from(joined.uid.as_str()));
        let publish_data = joined.grants.publish_data;
        // A session new to this node may have participants and feeds on other nodes.
        let remote = if exists { None } else { self.load_remote(sid) };
        self.spawn_job(
            sid,
            async move {
                if !exists {
                    match relay.create_session(rsid.clone(), None).await {
                        Ok(_) | Err(relay::ControlError::SessionExists { .. }) => {}
                        Err(e) => return (false, Err(e), None),
                    }
                }
                let remote = match remote {
                    Some(load) => Some(load.await),
                    None => None,
                };
                let config = ParticipantConfig {
                    publish_data,
                    ..Default::default()
                };
                let added = relay
                    .add_participant(rsid.clone(), ruid.clone(), config)
                    .await;
                (true, added, remote)
            },
            {
                let sid = sid.to_owned();
                move |hub, (created, added, remote)| {
                    hub.joined(&sid, joined, created, added, remote)
                }
            },
        );
        Ok(None)
    }

    /// The relay's part of a join is done: the participant is in, or the join fails.
    fn joined(
        &mut self,
        sid: &str,
        joined: Joined,
        session: bool,
        added: Result<RelayParticipant, relay::ControlError>,
        remote: Option<super::cluster::RemoteState>,
    ) {
        let Joined {
            conn,
            id,
            data,
            e2ee,
            rejoin,
            uid,
            name,
            grants,
            key_records,
            cid,
            public_sid,
        } = joined;
        joining_over(&mut self.conns, conn);
        // A session that started on no other node starts here.
        let starts = remote.as_ref().and_then(|r| r.started_at).is_none();
        if session && !self.rooms.contains_key(sid) {
            // In a cluster, when the session started on its first node: one usage record for
            // all of them.
            let started_at = remote
                .as_ref()
                .and_then(|r| r.started_at)
                .unwrap_or_else(super::recording::unix_now);
            self.rooms
                .insert(sid.to_owned(), Room::new(cid, public_sid, started_at, e2ee));
            self.follow_session(sid);
            if starts {
                self.webhook(sid, "session_started", json!({}));
            }
        }
        if let Some(remote) = remote {
            self.apply_remote(sid, remote);
        }
        let info = match added {
            Ok(info) if self.conns.contains_key(&conn) => info,
            Ok(_) => {
                // The connection closed while the relay added it: nobody holds its resume
                // token, so it goes again at once.
                let relay = self.relay.clone();
                let empty = self.rooms.get(sid).is_some_and(|r| r.peers.is_empty());
                let mut unfollowed = None;
                if empty {
                    unfollowed = self.unfollow_session(sid);
                    self.rooms.remove(sid);
                }
                let (rsid, ruid) = (Sid::from(sid), Uid::from(uid.as_str()));
                self.spawn_job(
                    sid,
                    async move {
                        if let Some(unfollowed) = unfollowed {
                            let _last_node: bool = unfollowed.await;
                        }
                        let _ = relay.remove_participant(rsid.clone(), ruid.clone()).await;
                        if empty {
                            let _ = relay.remove_session(rsid.clone()).await;
                        }
                    },
                    |_, ()| {},
                );
                return;
            }
            Err(e) => {
                self.reply(conn, id, Err((ErrorCode::Relay, e.to_string())));
                if self.rooms.get(sid).is_some_and(|r| r.peers.is_empty()) {
                    let unfollowed = self.unfollow_session(sid);
                    self.rooms.remove(sid);
                    let relay = self.relay.clone();
                    let rsid = Sid::from(sid);
                    self.spawn_job(
                        sid,
                        async move {
                            if let Some(unfollowed) = unfollowed {
                                let _last_node: bool = unfollowed.await;
                            }
                            let _ = relay.remove_session(rsid.clone()).await;
                        },
                        |_, ()| {},
                    );
                }
                return;
            }
        };
        let peer = Peer::new(name.clone(), grants, key_records, Some(conn), info, data);
        let token = peer.resume_token.clone();
        self.counters.borrow_mut().joins += 1;
        let room = self.rooms.get_mut(sid).expect("inserted above");
        // Back from a node that stopped: the others see it reconnect, not join.
        let moved = room.remote.remove(&uid).is_some();
        room.peers.insert(uid.clone(), peer);
        room.meter.metered_until.insert(uid.clone(), Instant::now());
        room.meter.peak = room.meter.peak.max(room.peers.len() as u32);
        self.resume
            .insert(token.clone(), (sid.to_owned(), uid.clone()));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.joined = Some((sid.to_owned(), uid.clone()));
        }
        if !moved {
            let participant = json!({ "participant": { "uid": uid, "name": name } });
            self.webhook(sid, "participant_joined", participant);
        }
        let event = if moved {
            Event::ParticipantReconnected { uid: uid.clone() }
        } else {
            Event::ParticipantJoined(ParticipantInfo {
                uid: uid.clone(),
                name: name.clone(),
                quality: None,
            })
        };
        self.broadcast(sid, &uid, event);
        self.announce_join(sid, &uid, name);
        self.record_resume(sid, &uid, &token);
        if moved {
            // What it published through its old node is gone with it; it publishes again here.
            let stale: Vec<String> = self.rooms[sid]
                .feeds
                .iter()
                .filter(|(_, f)| f.owner == uid && f.origin.is_some())
                .map(|(id, _)| id.clone())
                .collect();
            self.unpublish(sid, &stale);
        }
        let mut snapshot = self.snapshot(sid, &uid, &token);
        if let Some(old) = &rejoin {
            // Back after its node stopped: the page needs a media connection to this node,
            // and its old resume token is used up.
            snapshot["rejoined"] = serde_json::Value::Bool(true);
            self.forget_resume(old);
            self.restored.remove(&crate::store::ResumeToken::hash(old));
        }
        self.send(conn, ServerMessage::ok(id, snapshot));
        // Whoever joins a session that records is told so.
        if let Some((by, started_at)) = self.recording_since(sid) {
            self.send(
                conn,
                ServerMessage::Event(Event::RecordingStarted { by, started_at }),
            );
        }
        // Data channels connect at once, before anything is published or subscribed.
        self.negotiate(sid, &uid);
    }

    /// The uid a page of the server that ran before had in `sid`, if its resume token is one
    /// it kept and still good (used up once the join succeeds).
    fn restored_uid(&mut self, sid: &str, token: &str) -> Option<String> {
        if Instant::now() >= self.restored_until {
            self.restored.clear();
            return None;
        }
        let hash = crate::store::ResumeToken::hash(token);
        self.restored
            .get(&hash)
            .filter(|(s, _)| s == sid)
            .map(|(_, uid)| uid.clone())
    }

    /// The server stops: alone (a cluster keeps them in Redis), it keeps its participants'
    /// resume tokens in the database for [`RESTART_WINDOW`], so that their pages take their
    /// places again on the server that starts next.
    pub(super) fn keep_resume_tokens(&mut self) {
        if self.cluster.is_some() {
            return;
        }
        let tokens: Vec<crate::store::ResumeToken> = self
            .rooms
            .iter()
            .flat_map(|(sid, room)| {
                room.peers
                    .iter()
                    .filter(|(_, p)| !p.http)
                    .map(move |(uid, p)| crate::store::ResumeToken {
                        token_hash: crate::store::ResumeToken::hash(&p.resume_token),
                        sid: sid.clone(),
                        uid: uid.clone(),
                    })
            })
            .collect();
        if tokens.is_empty() {
            return;
        }
        let until = super::recording::unix_now() + RESTART_WINDOW.as_secs() as i64;
        tracing::info!(
            participants = tokens.len(),
            "keeping the participants' places for a restart"
        );
        self.accounts.save_resume_tokens(tokens, until);
    }

    pub(super) fn snapshot(&self, sid: &str, uid: &str, token: &str) -> serde_json::Value {
        let room = &self.rooms[sid];
        let participants: Vec<ParticipantInfo> = room
            .peers
            .iter()
            .filter(|(u, _)| *u != uid)
            .map(|(u, p)| ParticipantInfo {
                uid: u.clone(),
                name: p.name.clone(),
                quality: p.quality,
            })
            .chain(self.remote_participants(sid))
            .collect();
        let feeds: Vec<FeedInfo> = room
            .feeds
            .iter()
            .filter(|(_, f)| f.published && f.owner != uid)
            .map(|(id, f)| f.info(id))
            .collect();
        let public_sid = sid.split_once('/').map_or(sid, |(_, s)| s);
        json!({
            "uid": uid,
            "sid": public_sid,
            "participants": participants,
            "feeds": feeds,
            "active_speaker": room.speakers.active(),
            // What this participant may do, so that a page shows only the buttons that work.
            "permissions": room.peers.get(uid).map(|p| json!({
                "publish": p.grants.publish,
                "subscribe": p.grants.subscribe,
                "publish_data": p.grants.publish_data,
                "record": p.grants.record && !room.e2ee && self.relay.records(),
            })),
            "recording": self.recording_since(sid).map(|(by, started_at)| json!({
                "by": by,
                "started_at": started_at,
            })),
            "resume_token": token,
            // Where this page may go on when this server stops (other nodes, its region first).
            "servers": self.other_servers(),
        })
    }
}

/// The refusal of a new session by a draining server.
pub(super) fn draining() -> (ErrorCode, String) {
    (
        ErrorCode::Draining,
        "this server is draining (restarting, or leaving its cluster) and takes no new session: join on another".into(),
    )
}
