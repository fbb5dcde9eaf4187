//! The signalling state machine: sessions, participants, feeds and every participant's
//! negotiation, owned by one task that handles connection messages and relay events in order
//! (no locks; each relay call is a short cross-thread round trip).
//!
//! Negotiation is always server-offered, one offer outstanding per participant: requests that
//! change a participant's media (publish, subscribe, unsubscribe, a feed going away) mark
//! m-sections as new, and [`Hub::negotiate`] sends an offer when none is outstanding (or the
//! outstanding one's answer was refused). The reply to `publish`/`subscribe` is sent once the
//! answer that carries it has been applied.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use relay::control::{
    FeedDescription, HeaderExtension, MediaKind, ParticipantConfig, SubscribeOptions,
};
use relay::ids::{FeedId, Sid, Ssrc, Uid};
use relay::RelayHandle;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::accounts::{Accounts, Credentials, UsageRecord};
use crate::auth::{AuthError, Grants, Identity};
use crate::limits::JoinLimiter;
use crate::protocol::{
    self, ErrorCode, Event, FeedInfo, ParticipantInfo, Request, ServerMessage, Source,
    TransceiverInfo,
};
use crate::sdp::{self, Codec, Kind, OfferParams, Role, Section};
use crate::store::UsageDelta;
use crate::ws;
use relay::sfu::participant::ParticipantUsage;

/// A websocket connection's id.
pub type ConnId = u64;

/// A connection that has not joined this long after it opened is closed.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Open websocket connections allowed from one address (an office behind one NAT has many).
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 200;

/// Longest key id a join may present (ours are ~20 characters).
const MAX_KEY_LEN: usize = 128;
/// Longest token a join may present.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// How long a participant whose websocket dropped stays in the session, waiting to resume.
pub const RESUME_WINDOW: Duration = Duration::from_secs(20);

/// What the hub reacts to.
#[derive(Debug)]
pub enum Input {
    /// A websocket connection opened; messages to it go through the handle.
    Connected(ConnId, ws::Handle, ConnMeta),
    /// A text message arrived.
    Message(ConnId, String),
    /// A message the transport refused (binary, or larger than the protocol allows).
    Refused(ConnId, ErrorCode, String),
    /// The connection closed.
    Disconnected(ConnId),
    /// Something the relay reported.
    Relay(relay::Event),
    /// The accounts thread authenticated (or refused) a join.
    Authenticated(Box<PendingJoin>, Result<Identity, AuthError>),
    /// Periodic housekeeping (resume windows).
    Tick(Instant),
}

/// A join waiting for its credentials to be checked off the hub's task.
#[derive(Debug)]
pub struct PendingJoin {
    conn: ConnId,
    id: u64,
    /// The session's public name.
    sid: String,
    name: Option<String>,
    resume: Option<String>,
}

/// What the HTTP upgrade told about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnMeta {
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// The peer's address.
    pub ip: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Negotiation {
    /// Not yet in an offer.
    New,
    /// In the outstanding offer.
    Offered,
    /// Answered.
    Active,
}

struct Entry {
    section: Section,
    state: Negotiation,
}

struct Peer {
    name: Option<String>,
    grants: Grants,
    conn: Option<ConnId>,
    disconnected_at: Option<Instant>,
    resume_token: String,
    ice_ufrag: String,
    ice_pwd: String,
    candidate: std::net::SocketAddr,
    entries: Vec<Entry>,
    next_mid: u32,
    session_id: u64,
    version: u64,
    next_offer: u64,
    outstanding: Option<u64>,
    /// The answer to the outstanding offer was refused. The offer stays answerable, but no
    /// longer holds back the next one: otherwise one bad answer would leave the participant
    /// without offers for good. Re-offering at once instead could loop with a client that
    /// keeps answering badly, so the next change (or ICE restart) supersedes it.
    answer_refused: bool,
    /// An ICE restart waits for the next offer.
    ice_restart: bool,
}

struct Track {
    kind: Kind,
    codecs: Vec<Codec>,
    active: bool,
}

struct Feed {
    owner: String,
    source: Source,
    tracks: Vec<Track>,
    published: bool,
}

impl Feed {
    fn info(&self, feed_id: &str) -> FeedInfo {
        FeedInfo {
            feed_id: feed_id.to_owned(),
            uid: self.owner.clone(),
            source: self.source,
            kinds: self
                .tracks
                .iter()
                .map(|t| t.kind.as_str().to_owned())
                .collect(),
        }
    }
}

struct Room {
    cid: String,
    public_sid: String,
    /// Unix seconds: identifies this run of the session in the usage records.
    started_at: i64,
    peers: HashMap<String, Peer>,
    feeds: HashMap<String, Feed>,
    meter: Meter,
}

/// Usage counted since the last flush to the database.
struct Meter {
    last_flush: Instant,
    pending: UsageDelta,
    peak: u32,
    /// The relay's cumulative counters per participant at the last flush.
    counters: HashMap<String, ParticipantUsage>,
    /// Up to when each participant's presence has been counted.
    metered_until: HashMap<String, Instant>,
}

impl Meter {
    fn new(now: Instant) -> Self {
        Meter {
            last_flush: now,
            pending: UsageDelta::default(),
            peak: 0,
            counters: HashMap::new(),
            metered_until: HashMap::new(),
        }
    }

    /// Account one participant's presence and traffic up to `now`.
    fn account(&mut self, now: Instant, uid: &str, usage: Option<ParticipantUsage>) {
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

struct Conn {
    tx: mpsc::Sender<String>,
    /// Taken when the hub closes the connection (it is gone once its task says so).
    close: Option<oneshot::Sender<ws::Close>>,
    connected_at: Instant,
    meta: ConnMeta,
    joined: Option<(String, String)>,
    /// A join is being authenticated.
    joining: bool,
}

/// The signalling state.
pub struct Hub {
    relay: RelayHandle,
    accounts: Accounts,
    /// The hub's own input, for results that come back from other threads.
    inputs: mpsc::Sender<Input>,
    limiter: JoinLimiter,
    usage_flush: Duration,
    fingerprint: String,
    rooms: HashMap<String, Room>,
    conns: HashMap<ConnId, Conn>,
    /// Open connections per source address.
    per_address: HashMap<IpAddr, usize>,
    /// Connections whose queue was found full while sending; closed after the input.
    slow: std::cell::RefCell<Vec<ConnId>>,
    resume: HashMap<String, (String, String)>,
}

fn relay_feed(feed_id: &str, kind: Kind) -> FeedId {
    FeedId::from(format!("{feed_id}/{}", kind.as_str()))
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::rng().random::<u64>() >> 16)
}

impl Hub {
    /// A hub in front of `relay`, authenticating joins through `accounts`; `inputs` is the
    /// sender of its own input channel (results from the accounts thread come back there).
    /// Usage is written every `usage_flush` (checked on each tick), so a crash loses at most
    /// that plus one tick.
    pub fn new(
        relay: RelayHandle,
        accounts: Accounts,
        inputs: mpsc::Sender<Input>,
        limiter: JoinLimiter,
        usage_flush: Duration,
    ) -> Self {
        Hub {
            fingerprint: relay.fingerprint().to_owned(),
            relay,
            accounts,
            inputs,
            limiter,
            usage_flush,
            rooms: HashMap::new(),
            conns: HashMap::new(),
            per_address: HashMap::new(),
            slow: std::cell::RefCell::new(Vec::new()),
            resume: HashMap::new(),
        }
    }

    /// Handle inputs until every sender is gone.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<Input>) {
        while let Some(input) = inputs.recv().await {
            self.handle(input).await;
        }
    }

    /// Handle one input.
    pub async fn handle(&mut self, input: Input) {
        self.handle_input(input).await;
        // Readers too slow to take what was sent to them are let go.
        let slow = std::mem::take(&mut *self.slow.borrow_mut());
        for conn in slow {
            self.close(
                conn,
                ws::code::POLICY,
                format!(
                    "too slow: more than {} messages waited to be read",
                    ws::OUTGOING_QUEUE
                ),
            );
        }
    }

    /// Close a connection with a reason; its task reports [`Input::Disconnected`] after.
    fn close(&mut self, conn: ConnId, code: u16, reason: String) {
        if let Some(close) = self.conns.get_mut(&conn).and_then(|c| c.close.take()) {
            tracing::info!(conn, code, %reason, "closing connection");
            let _ = close.send(ws::Close { code, reason });
        }
    }

    async fn handle_input(&mut self, input: Input) {
        match input {
            Input::Connected(conn, handle, meta) => {
                let ip = meta.ip;
                let open = self.per_address.entry(ip).or_insert(0);
                *open += 1;
                let over = *open > MAX_CONNECTIONS_PER_ADDRESS;
                self.conns.insert(
                    conn,
                    Conn {
                        tx: handle.tx,
                        close: Some(handle.close),
                        connected_at: Instant::now(),
                        meta,
                        joined: None,
                        joining: false,
                    },
                );
                if over {
                    self.close(
                        conn,
                        ws::code::POLICY,
                        format!(
                            "too many connections from {ip}: the limit is {MAX_CONNECTIONS_PER_ADDRESS}"
                        ),
                    );
                }
            }
            Input::Message(conn, text) => self.message(conn, text).await,
            Input::Refused(conn, code, reason) => {
                self.send(conn, ServerMessage::error(None, code, reason));
            }
            Input::Disconnected(conn) => {
                let Some(c) = self.conns.remove(&conn) else {
                    return;
                };
                if let Some(open) = self.per_address.get_mut(&c.meta.ip) {
                    *open -= 1;
                    if *open == 0 {
                        self.per_address.remove(&c.meta.ip);
                    }
                }
                if let Some((sid, uid)) = c.joined {
                    if let Some(peer) = self.peer_mut(&sid, &uid) {
                        if peer.conn == Some(conn) {
                            peer.conn = None;
                            peer.disconnected_at = Some(Instant::now());
                        }
                    }
                }
            }
            Input::Relay(relay::Event::ParticipantDisconnected {
                sid,
                uid,
                reason,
                usage,
            }) => {
                tracing::info!(%sid, %uid, ?reason, "relay disconnected participant");
                // The relay has forgotten it: its last counters come with the event.
                self.leave_with(&sid.0, &uid.0, Some(usage)).await;
            }
            Input::Relay(_) => {}
            Input::Authenticated(pending, identity) => {
                let (conn, id) = (pending.conn, pending.id);
                let Some(c) = self.conns.get_mut(&conn) else {
                    // Closed while its credentials were checked.
                    return;
                };
                c.joining = false;
                let result = match identity {
                    Ok(identity) => self.finish_join(*pending, identity).await,
                    Err(e) => Err((ErrorCode::Unauthorized, e.to_string())),
                };
                self.reply(conn, id, result);
            }
            Input::Tick(now) => {
                let idle: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| {
                        c.joined.is_none()
                            && !c.joining
                            && now.saturating_duration_since(c.connected_at) >= JOIN_TIMEOUT
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for conn in idle {
                    self.close(
                        conn,
                        ws::code::POLICY,
                        format!("no join within {} s", JOIN_TIMEOUT.as_secs()),
                    );
                }
                let expired: Vec<(String, String)> = self
                    .rooms
                    .iter()
                    .flat_map(|(sid, room)| {
                        room.peers.iter().filter_map(move |(uid, p)| {
                            p.disconnected_at
                                .filter(|t| now.saturating_duration_since(*t) >= RESUME_WINDOW)
                                .map(|_| (sid.clone(), uid.clone()))
                        })
                    })
                    .collect();
                for (sid, uid) in expired {
                    self.leave(&sid, &uid).await;
                }
                let due: Vec<String> = self
                    .rooms
                    .iter()
                    .filter(|(_, r)| {
                        now.saturating_duration_since(r.meter.last_flush) >= self.usage_flush
                    })
                    .map(|(sid, _)| sid.clone())
                    .collect();
                for sid in due {
                    self.flush_usage(&sid, now, None).await;
                }
            }
        }
    }

    fn send(&self, conn: ConnId, msg: ServerMessage) {
        if let Some(c) = self.conns.get(&conn) {
            self.queue(conn, c, msg.to_text());
        }
    }

    /// Queue a message without waiting: a full queue marks the connection slow.
    fn queue(&self, conn: ConnId, c: &Conn, text: String) {
        if c.close.is_none() {
            return; // being closed
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = c.tx.try_send(text) {
            self.slow.borrow_mut().push(conn);
        }
    }

    fn send_to_peer(&self, sid: &str, uid: &str, msg: &ServerMessage) {
        let conn = self
            .rooms
            .get(sid)
            .and_then(|r| r.peers.get(uid))
            .and_then(|p| p.conn);
        if let Some((conn, c)) = conn.and_then(|id| Some((id, self.conns.get(&id)?))) {
            self.queue(conn, c, msg.to_text());
        }
    }

    fn broadcast(&self, sid: &str, except: &str, event: Event) {
        let msg = ServerMessage::Event(event);
        if let Some(room) = self.rooms.get(sid) {
            for uid in room.peers.keys().filter(|u| *u != except) {
                self.send_to_peer(sid, uid, &msg);
            }
        }
    }

    fn peer_mut(&mut self, sid: &str, uid: &str) -> Option<&mut Peer> {
        self.rooms.get_mut(sid)?.peers.get_mut(uid)
    }

    async fn message(&mut self, conn: ConnId, text: String) {
        if text.len() > protocol::MAX_MESSAGE {
            self.send(
                conn,
                ServerMessage::error(
                    protocol::request_id(&text),
                    ErrorCode::MessageTooLarge,
                    format!("messages are limited to {} bytes", protocol::MAX_MESSAGE),
                ),
            );
            return;
        }
        let request = match protocol::decode(&text) {
            Ok(r) => r,
            Err(reason) => {
                let id = protocol::request_id(&text);
                self.send(
                    conn,
                    ServerMessage::error(id, ErrorCode::InvalidMessage, reason),
                );
                return;
            }
        };
        let id = request.id();
        let joined = self.conns.get(&conn).and_then(|c| c.joined.clone());
        let result = match (request, joined) {
            (
                Request::Join {
                    v,
                    sid,
                    name,
                    key,
                    token,
                    resume,
                    ..
                },
                None,
            ) if !self.conns.get(&conn).is_some_and(|c| c.joining) => {
                self.join(conn, id, v, sid, name, key, token, resume)
            }
            (Request::Join { .. }, None) => Err((
                ErrorCode::AlreadyJoined,
                "this connection is joining already".into(),
            )),
            (Request::Ping { .. }, _) => Ok(Some(json!({}))),
            (Request::Join { .. }, Some(_)) => Err((
                ErrorCode::AlreadyJoined,
                "this connection has joined already".into(),
            )),
            (_, None) => Err((ErrorCode::NotJoined, "join a session first".into())),
            (request, Some((sid, uid))) => {
                // Every joined connection names a live participant (leave clears it); checked
                // here once so that the request handlers can rely on it.
                if self
                    .rooms
                    .get(&sid)
                    .is_none_or(|r| !r.peers.contains_key(&uid))
                {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.joined = None;
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
                let r = self.request(&sid, &uid, request).await;
                // The reply goes out before the offer that carries the change, so the SDK
                // knows what a new m-section is for when the offer arrives.
                self.reply(conn, id, r);
                self.negotiate(&sid, &uid);
                return;
            }
        };
        self.reply(conn, id, result);
    }

    fn reply(
        &self,
        conn: ConnId,
        id: u64,
        result: Result<Option<serde_json::Value>, (ErrorCode, String)>,
    ) {
        match result {
            Ok(Some(value)) => self.send(conn, ServerMessage::ok(id, value)),
            Ok(None) => {}
            Err((code, reason)) => self.send(conn, ServerMessage::error(Some(id), code, reason)),
        }
    }

    /// Check what a join can be checked for here, then hand its credentials to the accounts
    /// thread; the join goes on in [`Hub::finish_join`] when they come back.
    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        conn: ConnId,
        id: u64,
        v: u32,
        sid: String,
        name: Option<String>,
        key: Option<String>,
        token: Option<String>,
        resume: Option<String>,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
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
        });
        let inputs = self.inputs.clone();
        self.accounts.authenticate(credentials, move |identity| {
            // The hub may be gone (shutting down); then so is the connection.
            let _ = inputs.blocking_send(Input::Authenticated(pending, identity));
        });
        Ok(None)
    }

    /// The rest of a join once its credentials are good: resume, or create the session if
    /// need be and add the participant.
    async fn finish_join(
        &mut self,
        pending: PendingJoin,
        identity: Identity,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        let PendingJoin {
            conn,
            id,
            sid,
            name,
            resume,
        } = pending;
        // Limited per key, now that the key is known to be real: attempts with made-up keys
        // and other tenants' joins never count against it.
        if let Err(why) = self.limiter.check_key(Instant::now(), &identity.key_id) {
            return Err((ErrorCode::RateLimited, why));
        }
        // Session names are per client: the same name under two clients is two sessions.
        let public_sid = sid;
        let sid = format!("{}/{public_sid}", identity.cid);
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
            let Some(peer) = self.rooms.get_mut(&sid).and_then(|r| r.peers.get_mut(&uid)) else {
                return Err((ErrorCode::ResumeFailed, "the participant has left".into()));
            };
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
            if let Some(c) = old.and_then(|old| self.conns.get_mut(&old)) {
                c.joined = None;
            }
            if let Some(c) = self.conns.get_mut(&conn) {
                c.joined = Some((sid.clone(), uid.clone()));
            }
            let snapshot = self.snapshot(&sid, &uid, &token);
            self.send(conn, ServerMessage::ok(id, snapshot));
            self.negotiate(&sid, &uid);
            return Ok(None);
        }

        if !self.rooms.contains_key(&sid) {
            match self
                .relay
                .create_session(Sid::from(sid.as_str()), None)
                .await
            {
                Ok(_) | Err(relay::ControlError::SessionExists { .. }) => {}
                Err(e) => return Err((ErrorCode::Relay, e.to_string())),
            }
            self.rooms.insert(
                sid.clone(),
                Room {
                    cid: identity.cid.clone(),
                    public_sid: public_sid.clone(),
                    started_at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0),
                    peers: HashMap::new(),
                    feeds: HashMap::new(),
                    meter: Meter::new(Instant::now()),
                },
            );
        }
        let uid = match identity.uid {
            Some(uid)
                if self
                    .rooms
                    .get(&sid)
                    .is_some_and(|r| r.peers.contains_key(&uid)) =>
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
        let info = self
            .relay
            .add_participant(
                &Sid::from(sid.as_str()),
                &Uid::from(uid.as_str()),
                ParticipantConfig::default(),
            )
            .await
            .map_err(|e| (ErrorCode::Relay, e.to_string()))?;
        let token = random_id("r-") + &random_id("");
        let peer = Peer {
            name: name.clone(),
            grants: identity.grants,
            conn: Some(conn),
            disconnected_at: None,
            resume_token: token.clone(),
            ice_ufrag: info.ice_ufrag,
            ice_pwd: info.ice_pwd,
            candidate: info.candidate,
            entries: Vec::new(),
            next_mid: 0,
            session_id: rand::rng().random::<u64>() >> 2,
            version: 1,
            next_offer: 1,
            outstanding: None,
            answer_refused: false,
            ice_restart: false,
        };
        let room = self.rooms.get_mut(&sid).expect("inserted above");
        room.peers.insert(uid.clone(), peer);
        room.meter.metered_until.insert(uid.clone(), Instant::now());
        room.meter.peak = room.meter.peak.max(room.peers.len() as u32);
        self.resume
            .insert(token.clone(), (sid.clone(), uid.clone()));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.joined = Some((sid.clone(), uid.clone()));
        }
        self.broadcast(
            &sid,
            &uid,
            Event::ParticipantJoined(ParticipantInfo {
                uid: uid.clone(),
                name,
            }),
        );
        Ok(Some(self.snapshot(&sid, &uid, &token)))
    }

    fn snapshot(&self, sid: &str, uid: &str, token: &str) -> serde_json::Value {
        let room = &self.rooms[sid];
        let participants: Vec<ParticipantInfo> = room
            .peers
            .iter()
            .filter(|(u, _)| *u != uid)
            .map(|(u, p)| ParticipantInfo {
                uid: u.clone(),
                name: p.name.clone(),
            })
            .collect();
        let feeds: Vec<FeedInfo> = room
            .feeds
            .iter()
            .filter(|(_, f)| f.published && f.owner != uid)
            .map(|(id, f)| f.info(id))
            .collect();
        let public_sid = sid.split_once('/').map_or(sid, |(_, s)| s);
        json!({ "uid": uid, "sid": public_sid, "participants": participants, "feeds": feeds, "resume_token": token })
    }

    async fn request(
        &mut self,
        sid: &str,
        uid: &str,
        request: Request,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        match request {
            Request::Join { .. } => Err((
                ErrorCode::AlreadyJoined,
                "this connection has joined already".into(),
            )),
            // Answered before a request reaches here.
            Request::Ping { .. } => Ok(Some(json!({}))),
            Request::Publish {
                source,
                audio,
                video,
                ..
            } => {
                if !self.rooms[sid].peers[uid].grants.publish {
                    return Err((
                        ErrorCode::Forbidden,
                        "this participant may not publish (no publish grant)".into(),
                    ));
                }
                if !audio && !video {
                    return Err((
                        ErrorCode::NothingToPublish,
                        "publish needs audio or video".into(),
                    ));
                }
                let feed_id = random_id("f-");
                let kinds: Vec<Kind> = [(video, Kind::Video), (audio, Kind::Audio)]
                    .into_iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, k)| k)
                    .collect();
                let room = self.rooms.get_mut(sid).expect("joined room");
                room.feeds.insert(
                    feed_id.clone(),
                    Feed {
                        owner: uid.to_owned(),
                        source,
                        tracks: kinds
                            .iter()
                            .map(|k| Track {
                                kind: *k,
                                codecs: Vec::new(),
                                active: false,
                            })
                            .collect(),
                        published: false,
                    },
                );
                let peer = room.peers.get_mut(uid).expect("joined peer");
                for kind in kinds {
                    let mid = peer.next_mid.to_string();
                    peer.next_mid += 1;
                    peer.entries.push(Entry {
                        section: Section {
                            mid,
                            kind,
                            role: Role::Publish {
                                feed_id: feed_id.clone(),
                            },
                        },
                        state: Negotiation::New,
                    });
                }
                Ok(Some(json!({ "feed_id": feed_id })))
            }
            Request::Subscribe { feed_id, .. } => {
                let room = self.rooms.get(sid).expect("joined room");
                if !room.peers[uid].grants.subscribe {
                    return Err((
                        ErrorCode::Forbidden,
                        "this participant may not subscribe (no subscribe grant)".into(),
                    ));
                }
                let Some(feed) = room.feeds.get(&feed_id).filter(|f| f.published) else {
                    return Err((
                        ErrorCode::NoSuchFeed,
                        format!("no feed {feed_id} in this session"),
                    ));
                };
                if feed.owner == uid {
                    return Err((
                        ErrorCode::OwnFeed,
                        "a participant cannot subscribe to its own feed".into(),
                    ));
                }
                let peer = &room.peers[uid];
                let already = peer.entries.iter().any(|e| {
                    matches!(&e.section.role, Role::Subscribe { feed_id: f, .. } if *f == feed_id)
                });
                if already {
                    return Err((
                        ErrorCode::SubscriptionState,
                        format!("already subscribed to {feed_id}"),
                    ));
                }
                let tracks: Vec<(Kind, Vec<Codec>)> = feed
                    .tracks
                    .iter()
                    .filter(|t| t.active)
                    .map(|t| (t.kind, t.codecs.clone()))
                    .collect();
                let mut next_mid = peer.next_mid;
                let mut sections = Vec::new();
                for (kind, codecs) in tracks {
                    let mid = next_mid.to_string();
                    next_mid += 1;
                    let info = self
                        .relay
                        .subscribe(
                            &Sid::from(sid),
                            &Uid::from(uid),
                            &relay_feed(&feed_id, kind),
                            SubscribeOptions {
                                mid: Some(mid.clone()),
                            },
                        )
                        .await
                        .map_err(|e| (ErrorCode::Relay, e.to_string()))?;
                    sections.push(Section {
                        mid,
                        kind,
                        role: Role::Subscribe {
                            feed_id: feed_id.clone(),
                            ssrc: info.ssrc.0,
                            codecs,
                        },
                    });
                }
                let mids: Vec<String> = sections.iter().map(|s| s.mid.clone()).collect();
                let peer = self.peer_mut(sid, uid).expect("joined peer");
                peer.next_mid = next_mid;
                peer.entries
                    .extend(sections.into_iter().map(|section| Entry {
                        section,
                        state: Negotiation::New,
                    }));
                Ok(Some(json!({ "feed_id": feed_id, "mids": mids })))
            }
            Request::Unsubscribe { feed_id, .. } => {
                let peer = self.peer_mut(sid, uid).expect("joined peer");
                let mut found = false;
                for e in &mut peer.entries {
                    if matches!(&e.section.role, Role::Subscribe { feed_id: f, .. } if *f == feed_id)
                    {
                        e.section.role = Role::Closed;
                        e.state = Negotiation::New;
                        found = true;
                    }
                }
                if !found {
                    return Err((
                        ErrorCode::SubscriptionState,
                        format!("not subscribed to {feed_id}"),
                    ));
                }
                for kind in [Kind::Audio, Kind::Video] {
                    let _ = self
                        .relay
                        .unsubscribe(
                            &Sid::from(sid),
                            &Uid::from(uid),
                            &relay_feed(&feed_id, kind),
                        )
                        .await;
                }
                Ok(Some(json!({ "feed_id": feed_id })))
            }
            Request::Unpublish { feed_id, .. } => {
                let owned = self
                    .rooms
                    .get(sid)
                    .and_then(|r| r.feeds.get(&feed_id))
                    .map(|f| f.owner == uid);
                match owned {
                    None => Err((
                        ErrorCode::NoSuchFeed,
                        format!("no feed {feed_id} in this session"),
                    )),
                    Some(false) => Err((
                        ErrorCode::NoSuchFeed,
                        format!("feed {feed_id} is not yours"),
                    )),
                    Some(true) => {
                        self.unpublish(sid, &feed_id).await;
                        Ok(Some(json!({ "feed_id": feed_id })))
                    }
                }
            }
            Request::Answer { offer_id, sdp, .. } => self.answer(sid, uid, offer_id, &sdp).await,
            Request::RestartIce { .. } => {
                let info = self
                    .relay
                    .restart_ice(&Sid::from(sid), &Uid::from(uid))
                    .await
                    .map_err(|e| (ErrorCode::Relay, e.to_string()))?;
                let peer = self.peer_mut(sid, uid).expect("joined peer");
                peer.ice_ufrag = info.ice_ufrag;
                peer.ice_pwd = info.ice_pwd;
                peer.ice_restart = true;
                Ok(Some(json!({})))
            }
            Request::Record { .. } => {
                if !self.rooms[sid].peers[uid].grants.record {
                    return Err((
                        ErrorCode::Forbidden,
                        "recording is not permitted: the key does not allow recording, or the \
                         token has no record grant"
                            .into(),
                    ));
                }
                Err((
                    ErrorCode::RecordingUnavailable,
                    "recording is permitted but no recorder runs on this server".into(),
                ))
            }
            Request::Leave { .. } => {
                self.leave(sid, uid).await;
                Ok(Some(json!({})))
            }
        }
    }

    /// Send an offer if the participant has changes and none is outstanding.
    fn negotiate(&mut self, sid: &str, uid: &str) {
        let fingerprint = self.fingerprint.clone();
        let Some(peer) = self.peer_mut(sid, uid) else {
            return;
        };
        if (peer.outstanding.is_some() && !peer.answer_refused)
            || peer.conn.is_none()
            || !(peer.ice_restart || peer.entries.iter().any(|e| e.state == Negotiation::New))
        {
            return;
        }
        peer.ice_restart = false;
        peer.answer_refused = false;
        for e in &mut peer.entries {
            if e.state == Negotiation::New {
                e.state = Negotiation::Offered;
            }
        }
        peer.version += 1;
        let offer_id = peer.next_offer;
        peer.next_offer += 1;
        peer.outstanding = Some(offer_id);
        let sections: Vec<Section> = peer.entries.iter().map(|e| e.section.clone()).collect();
        let text = sdp::offer(
            &OfferParams {
                session_id: peer.session_id,
                version: peer.version,
                ice_ufrag: &peer.ice_ufrag,
                ice_pwd: &peer.ice_pwd,
                fingerprint: &fingerprint,
                candidate: peer.candidate,
            },
            &sections,
        );
        let transceivers = sections
            .iter()
            .map(|s| {
                let (role, feed_id) = match &s.role {
                    Role::Publish { feed_id } => ("publish", Some(feed_id.clone())),
                    Role::Subscribe { feed_id, .. } => ("subscribe", Some(feed_id.clone())),
                    Role::Closed => ("closed", None),
                };
                TransceiverInfo {
                    mid: s.mid.clone(),
                    kind: s.kind.as_str().into(),
                    role: role.into(),
                    feed_id,
                }
            })
            .collect();
        self.send_to_peer(
            sid,
            uid,
            &ServerMessage::Offer {
                offer_id,
                sdp: text,
                transceivers,
            },
        );
    }

    async fn answer(
        &mut self,
        sid: &str,
        uid: &str,
        offer_id: u64,
        text: &str,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        if self.rooms[sid].peers[uid].outstanding != Some(offer_id) {
            return Err((
                ErrorCode::InvalidSdp,
                format!("offer {offer_id} is not the outstanding offer"),
            ));
        }
        let result = self.apply_answer(sid, uid, text).await;
        if result.is_err() {
            if let Some(peer) = self.peer_mut(sid, uid) {
                peer.answer_refused = true;
            }
        }
        result
    }

    /// Check an answer to the outstanding offer and apply it; an error changes nothing.
    async fn apply_answer(
        &mut self,
        sid: &str,
        uid: &str,
        text: &str,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        let peer = &self.rooms[sid].peers[uid];
        let answer = sdp::parse_answer(text).map_err(|e| (ErrorCode::InvalidSdp, e.to_string()))?;
        for e in peer
            .entries
            .iter()
            .filter(|e| e.state == Negotiation::Offered)
        {
            if !answer.sections.iter().any(|a| a.mid == e.section.mid) {
                return Err((
                    ErrorCode::InvalidSdp,
                    format!("the answer has no m-section for mid {}", e.section.mid),
                ));
            }
        }
        let (rsid, ruid) = (Sid::from(sid), Uid::from(uid));
        self.relay
            .update_participant(
                &rsid,
                &ruid,
                ParticipantConfig {
                    remote_ufrag: Some(answer.ice_ufrag.clone()),
                    remote_fingerprint: Some(answer.fingerprint.clone()),
                },
            )
            .await
            .map_err(|e| (ErrorCode::InvalidSdp, e.to_string()))?;

        // Apply each offered section.
        let offered: Vec<Section> = peer
            .entries
            .iter()
            .filter(|e| e.state == Negotiation::Offered)
            .map(|e| e.section.clone())
            .collect();
        let mut failed_publish = Vec::new();
        for section in &offered {
            let a = answer
                .sections
                .iter()
                .find(|a| a.mid == section.mid)
                .expect("checked above");
            match &section.role {
                Role::Publish { feed_id } => {
                    let (Some(ssrc), false, Some(first)) = (a.ssrc, a.rejected, a.codecs.first())
                    else {
                        failed_publish.push(feed_id.clone());
                        continue;
                    };
                    let description = FeedDescription {
                        feed_id: relay_feed(feed_id, section.kind),
                        kind: match section.kind {
                            Kind::Audio => MediaKind::Audio,
                            Kind::Video => MediaKind::Video,
                        },
                        ssrc: Ssrc(ssrc),
                        clock_rate: first.clock_rate,
                        payload_types: a.codecs.iter().map(|c| c.pt).collect(),
                        header_extensions: a
                            .extensions
                            .iter()
                            .map(|(id, uri)| HeaderExtension {
                                id: *id,
                                uri: uri.clone(),
                            })
                            .collect(),
                    };
                    if let Err(e) = self.relay.publish(&rsid, &ruid, description).await {
                        tracing::warn!(%feed_id, "relay refused a feed: {e}");
                        failed_publish.push(feed_id.clone());
                        continue;
                    }
                    if let Some(track) = self
                        .rooms
                        .get_mut(sid)
                        .and_then(|r| r.feeds.get_mut(feed_id))
                        .and_then(|f| f.tracks.iter_mut().find(|t| t.kind == section.kind))
                    {
                        track.codecs = a.codecs.clone();
                        track.active = true;
                    }
                }
                Role::Subscribe { feed_id, .. } => {
                    if !a.rejected {
                        let _ = self
                            .relay
                            .request_keyframe(&rsid, &relay_feed(feed_id, section.kind))
                            .await;
                    }
                }
                Role::Closed => {}
            }
        }
        let peer = self.peer_mut(sid, uid).expect("joined peer");
        for e in &mut peer.entries {
            if e.state == Negotiation::Offered {
                e.state = Negotiation::Active;
            }
        }
        peer.outstanding = None;
        peer.answer_refused = false;
        let mut published = Vec::new();
        let mut subscribed = Vec::new();
        for section in &offered {
            match &section.role {
                Role::Publish { feed_id }
                    if !failed_publish.contains(feed_id) && !published.contains(feed_id) =>
                {
                    published.push(feed_id.clone());
                }
                Role::Subscribe { feed_id, .. } if !subscribed.contains(feed_id) => {
                    subscribed.push(feed_id.clone());
                }
                _ => {}
            }
        }
        failed_publish.dedup();
        for feed_id in &failed_publish {
            self.unpublish(sid, feed_id).await;
        }
        for feed_id in &published {
            let info = self
                .rooms
                .get_mut(sid)
                .and_then(|r| r.feeds.get_mut(feed_id))
                .and_then(|f| {
                    let ready = f.tracks.iter().all(|t| t.active) && !f.published;
                    ready.then(|| {
                        f.published = true;
                        f.info(feed_id)
                    })
                });
            if let Some(info) = info {
                self.broadcast(sid, uid, Event::FeedPublished(info));
            }
        }
        Ok(Some(json!({
            "published": published,
            "failed": failed_publish,
            "subscribed": subscribed,
        })))
    }

    /// Remove a feed: from the relay, from its publisher's connection, from every subscriber.
    async fn unpublish(&mut self, sid: &str, feed_id: &str) {
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
    async fn leave(&mut self, sid: &str, uid: &str) {
        self.leave_with(sid, uid, None).await;
    }

    /// Remove a participant; `last_usage` are its final counters when the relay already
    /// dropped it (else they are read from the relay first).
    async fn leave_with(&mut self, sid: &str, uid: &str, last_usage: Option<ParticipantUsage>) {
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

    /// Write a session's usage since the last flush (and close its record when it ended).
    async fn flush_usage(&mut self, sid: &str, now: Instant, ended: Option<i64>) {
        let usage = self
            .relay
            .session_usage(&Sid::from(sid))
            .await
            .unwrap_or_default();
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
