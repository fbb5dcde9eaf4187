//! The signalling state machine: sessions, participants, feeds and every participant's
//! negotiation, owned by one task that handles connection messages and relay events in order
//! (no locks). It never waits for the relay: relay calls run as jobs ([`jobs`]), one session
//! at a time, so a session whose relay core is busy holds up only itself.
//!
//! Negotiation is always server-offered, one offer outstanding per participant: requests that
//! change a participant's media (publish, subscribe, unsubscribe, a feed going away) mark
//! m-sections as new, and [`Hub::negotiate`] sends an offer when none is outstanding (or the
//! outstanding one's answer was refused). The reply to `publish`/`subscribe` is sent once the
//! answer that carries it has been applied.

pub mod cluster;
mod jobs;
mod join;
mod leave;
mod messages;
mod metering;
mod negotiation;
pub mod recording;
mod requests;
mod speakers;
mod whep;
pub mod whip;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use relay::ids::FeedId;
use relay::Control;
use tokio::sync::{mpsc, oneshot};

use crate::accounts::Accounts;
use crate::auth::{AuthError, Grants, Identity};
use crate::limits::JoinLimiter;
use crate::protocol::{ErrorCode, FeedInfo, ServerMessage, Source};
use crate::relay_link::RelayLink;
use crate::sdp::{Codec, Kind, Section};
use crate::ws;
pub use jobs::MAX_WAITING;
use metering::Meter;
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
    /// A session's relay calls are done; the rest of its request runs on the hub.
    Done(String, jobs::Done),
    /// A recording call is done.
    Recording(recording::RecordingDone),
    /// The admin API starts or stops a session's recording.
    AdminRecord(recording::AdminRecord),
    /// The server stops: finish every recording (everyone recorded is told), and answer once
    /// every file is finished, listed and metered.
    FinishRecordings(oneshot::Sender<()>),
    /// The relay's last counters of each session, read as the server stops; then as
    /// [`Input::FinishRecordings`].
    FinalUsage(
        Vec<(String, Vec<(relay::ids::Uid, ParticipantUsage)>)>,
        oneshot::Sender<()>,
    ),
    /// `/metrics` asks for the hub's figures.
    Metrics(oneshot::Sender<crate::metrics::HubMetrics>),
    /// Take no new session from now on (the server is about to stop).
    Drain,
    /// Another node's signalling told of a change to a session.
    Cluster(Box<crate::cluster::events::Envelope<cluster::SessionEvent>>),
    /// Redis is reachable again after it was not: what was recorded there may be lost.
    ClusterRecovered,
    /// Another node of the cluster stopped.
    NodeGone(String),
    /// The cluster's live nodes now.
    Nodes(Vec<crate::cluster::NodeInfo>),
    /// A WHIP request (an encoder publishing, or ending).
    Whip(whip::WhipRequest),
    /// The accounts thread checked (or refused) a WHIP request's token.
    WhipAuthenticated(Box<whip::WhipRequest>, Result<Identity, AuthError>),
}

/// How long the relay is given to report a session's last counters when the server stops.
const FINAL_USAGE_WAIT: Duration = Duration::from_secs(2);

/// How often a node renews its claims on the sessions it has participants of: well inside
/// their time to live.
const RENEW_CLAIMS: Duration = Duration::from_secs(10);

/// A join waiting for its credentials to be checked off the hub's task.
#[derive(Debug)]
pub struct PendingJoin {
    conn: ConnId,
    id: u64,
    /// The session's public name.
    sid: String,
    name: Option<String>,
    resume: Option<String>,
    /// It asked for data channels.
    data: bool,
    /// Its media is end-to-end encrypted.
    e2ee: bool,
    /// It comes back from another node that stopped with this resume token (found in
    /// Redis): it takes its old uid, and the token is used up.
    rejoin: Option<String>,
    /// In a cluster: its node is settled (another node sent it here, or this one placed
    /// it here); no placement, no move.
    placed: bool,
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

/// The data-channel m-section of a participant that asked for data channels.
struct DataEntry {
    mid: String,
    state: Negotiation,
}

/// The mid of the data-channel section.
const DATA_MID: &str = "data";

struct Peer {
    name: Option<String>,
    grants: Grants,
    /// Its key allows recording.
    key_records: bool,
    conn: Option<ConnId>,
    disconnected_at: Option<Instant>,
    resume_token: String,
    ice_ufrag: String,
    ice_pwd: String,
    candidate: std::net::SocketAddr,
    /// The core's ICE-TCP address, where it listens for one.
    tcp_candidate: Option<std::net::SocketAddr>,
    entries: Vec<Entry>,
    /// Its data-channel section, first in every offer, if it asked for data channels.
    data: Option<DataEntry>,
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
    /// Its connection quality as the relay last rated it.
    quality: Option<relay::control::ConnectionQuality>,
    /// In a cluster, the relay dropped it after its websocket had gone (its page closed the
    /// media connection, perhaps to move to another node): its last counters, kept until it
    /// leaves or moves.
    dropped: Option<ParticipantUsage>,
    /// In a cluster, another node announced it joined there while this node still had its
    /// connections: it goes from here as soon as one of them is seen to end.
    claimed_by: Option<String>,
    /// A participant without a websocket (a WHIP encoder, a WHEP player).
    http: bool,
    /// For such a participant whose media has not connected yet: when it goes if it has not
    /// ([`HTTP_CONNECT_TIMEOUT`]).
    connect_by: Option<Instant>,
}

/// How long a WHIP encoder or WHEP player has to connect its media after its request was
/// answered: one that never does (its client gave up, or nothing gets through) would stay in
/// the session, metered, for good.
pub const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

struct Track {
    kind: Kind,
    codecs: Vec<Codec>,
    active: bool,
    /// Its publisher muted it.
    muted: bool,
    /// What the relay was told of it, once published (other nodes import it as it is).
    description: Option<relay::FeedDescription>,
}

struct Feed {
    owner: String,
    source: Source,
    tracks: Vec<Track>,
    published: bool,
    /// The node it comes from, for a feed published on another node of the cluster.
    origin: Option<cluster::Origin>,
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
            muted: self
                .tracks
                .iter()
                .filter(|t| t.muted)
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
    speakers: speakers::Speakers,
    /// Its recording, while it records.
    recording: Option<recording::RoomRecording>,
    /// Its media is end-to-end encrypted (set by its first join): it cannot be recorded.
    e2ee: bool,
    /// Its participants on other nodes of the cluster.
    remote: HashMap<String, cluster::RemotePeer>,
    /// The other nodes the edge was last told have participants of the session.
    data_peers: Vec<String>,
}

impl Room {
    /// A session of client `cid` that starts (or started, on another node) at `started_at`.
    fn new(cid: String, public_sid: String, started_at: i64, e2ee: bool) -> Room {
        Room {
            cid,
            public_sid,
            started_at,
            peers: HashMap::new(),
            feeds: HashMap::new(),
            meter: Meter::new(Instant::now()),
            speakers: Default::default(),
            recording: None,
            e2ee,
            remote: HashMap::new(),
            data_peers: Vec::new(),
        }
    }
}

impl Peer {
    /// A participant the relay has just added (`info`), on websocket `conn` (None: one
    /// without, a WHIP encoder), with a data-channel section where it asked for one.
    fn new(
        name: Option<String>,
        grants: Grants,
        key_records: bool,
        conn: Option<ConnId>,
        info: relay::ParticipantInfo,
        data: bool,
    ) -> Peer {
        Peer {
            name,
            grants,
            key_records,
            conn,
            disconnected_at: None,
            resume_token: random_id("r-") + &random_id(""),
            ice_ufrag: info.ice_ufrag,
            ice_pwd: info.ice_pwd,
            candidate: info.candidate,
            tcp_candidate: info.tcp_candidate,
            entries: Vec::new(),
            data: data.then(|| DataEntry {
                mid: DATA_MID.to_owned(),
                state: Negotiation::New,
            }),
            next_mid: 0,
            session_id: rand::rng().random::<u64>() >> 2,
            version: 1,
            next_offer: 1,
            outstanding: None,
            answer_refused: false,
            ice_restart: false,
            quality: None,
            dropped: None,
            claimed_by: None,
            http: conn.is_none(),
            connect_by: conn
                .is_none()
                .then(|| Instant::now() + HTTP_CONNECT_TIMEOUT),
        }
    }
}

struct Conn {
    tx: mpsc::Sender<String>,
    /// Taken when the hub closes the connection (it is gone once its task says so).
    close: Option<oneshot::Sender<ws::Close>>,
    /// When it opened, or last left a session: it has [`JOIN_TIMEOUT`] from then to join.
    unjoined_since: Instant,
    meta: ConnMeta,
    joined: Option<(String, String)>,
    /// A join is being authenticated.
    joining: bool,
}

/// The signalling state.
pub struct Hub {
    relay: RelayLink,
    accounts: Accounts,
    /// Each client's session events, to its webhook.
    webhooks: crate::webhooks::Webhooks,
    /// Files being recorded, by the relay's recording id: what each is listed and metered
    /// under when it is finished (possibly after its session ended).
    recorded_files: HashMap<u64, recording::FileMeta>,
    /// Who waits for every file to be finished (the server stops).
    finishing: Vec<oneshot::Sender<()>>,
    /// The hub's own input, for results that come back from other threads.
    inputs: mpsc::Sender<Input>,
    limiter: JoinLimiter,
    usage_flush: Duration,
    rooms: HashMap<String, Room>,
    conns: HashMap<ConnId, Conn>,
    /// Open connections per source address.
    per_address: HashMap<IpAddr, usize>,
    /// Connections whose queue was found full while sending; closed after the input.
    slow: std::cell::RefCell<Vec<ConnId>>,
    resume: HashMap<String, (String, String)>,
    /// Sessions with a relay job out, and their inputs waiting for it.
    backlogs: HashMap<String, jobs::Backlog>,
    /// Whether offers negotiate packet repair (NACK, RTX).
    repair: bool,
    /// The cluster this node is part of, if any.
    cluster: Option<cluster::ClusterLink>,
    /// The cluster's live nodes, for the servers a page may move to.
    nodes: Vec<crate::cluster::NodeInfo>,
    /// When this node last renewed its claims on its sessions.
    claims_renewed: Instant,
    /// Running counts for `/metrics`.
    counters: std::cell::RefCell<Counters>,
    /// No new session is taken: the server stops once its sessions end (or its time is up).
    draining: bool,
    /// WHIP encoders and WHEP players by resource id: their session and uid.
    whip_resources: HashMap<String, (String, String)>,
    /// The participants of the server that ran before this one, by their resume tokens'
    /// hashes: a page that resumes with one takes its place again (see [`RESTART_WINDOW`]).
    restored: HashMap<String, (String, String)>,
    /// Until when `restored` is good.
    restored_until: Instant,
}

/// How long a stopped server's participants may take their places again on the server that
/// starts next: a restart, and the SDK's reconnection attempts (it tries for about 40 s).
pub const RESTART_WINDOW: Duration = Duration::from_secs(120);

/// What the hub counts for `/metrics` (the rest it reads from its state when asked).
#[derive(Default)]
struct Counters {
    websockets_opened: u64,
    joins: u64,
    /// Error replies by code.
    errors: std::collections::BTreeMap<String, u64>,
}

/// A connection's join has been answered (or failed): it may send another.
fn joining_over(conns: &mut HashMap<ConnId, Conn>, conn: ConnId) {
    if let Some(c) = conns.get_mut(&conn) {
        c.joining = false;
    }
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
    /// that plus one tick. With `repair`, offers negotiate NACK and RTX for video.
    pub fn new(
        relay: RelayLink,
        accounts: Accounts,
        webhooks: crate::webhooks::Webhooks,
        inputs: mpsc::Sender<Input>,
        limiter: JoinLimiter,
        usage_flush: Duration,
        repair: bool,
    ) -> Self {
        Hub {
            relay,
            accounts,
            webhooks,
            inputs,
            limiter,
            usage_flush,
            rooms: HashMap::new(),
            recorded_files: HashMap::new(),
            finishing: Vec::new(),
            conns: HashMap::new(),
            per_address: HashMap::new(),
            slow: std::cell::RefCell::new(Vec::new()),
            resume: HashMap::new(),
            backlogs: HashMap::new(),
            repair,
            cluster: None,
            nodes: Vec::new(),
            claims_renewed: Instant::now(),
            counters: Default::default(),
            draining: false,
            whip_resources: HashMap::new(),
            restored: HashMap::new(),
            restored_until: Instant::now(),
        }
    }

    /// Take back the participants the server that ran before kept when it stopped
    /// ([`crate::store::Store::take_resume_tokens`]): for [`RESTART_WINDOW`] from now, a page
    /// that resumes with one of their tokens joins again under its old uid.
    pub fn with_restored(mut self, tokens: Vec<crate::store::ResumeToken>) -> Self {
        if !tokens.is_empty() {
            tracing::info!(
                participants = tokens.len(),
                "participants of the last run may come back"
            );
        }
        self.restored = tokens
            .into_iter()
            .map(|t| (t.token_hash, (t.sid, t.uid)))
            .collect();
        self.restored_until = Instant::now() + RESTART_WINDOW;
        self
    }

    /// The hub of one node of a cluster: sessions span the nodes where their participants
    /// are (see [`cluster`]).
    pub fn with_cluster(mut self, link: cluster::ClusterLink) -> Self {
        self.cluster = Some(link);
        self
    }

    /// Handle inputs until every sender is gone.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<Input>) {
        while let Some(input) = inputs.recv().await {
            self.handle(input);
        }
    }

    /// Handle one input. Never waits: what needs the relay goes on in a job.
    pub fn handle(&mut self, input: Input) {
        self.handle_input(input);
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

    fn handle_input(&mut self, input: Input) {
        match input {
            Input::Connected(conn, handle, meta) => {
                self.counters.borrow_mut().websockets_opened += 1;
                let ip = meta.ip;
                let open = self.per_address.entry(ip).or_insert(0);
                *open += 1;
                let over = *open > MAX_CONNECTIONS_PER_ADDRESS;
                self.conns.insert(
                    conn,
                    Conn {
                        tx: handle.tx,
                        close: Some(handle.close),
                        unjoined_since: Instant::now(),
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
            Input::Message(conn, text) => self.message(conn, text),
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
                    let mut moved = None;
                    if let Some(peer) = self.peer_mut(&sid, &uid) {
                        if peer.conn == Some(conn) {
                            peer.conn = None;
                            peer.disconnected_at = Some(Instant::now());
                            moved = peer.claimed_by.clone();
                        }
                    }
                    if let Some(node) = moved {
                        self.room_input(&sid, jobs::RoomInput::MovedAway { uid, node });
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
                self.room_input(
                    &sid.0,
                    jobs::RoomInput::Dropped {
                        uid: uid.0.clone(),
                        usage,
                    },
                );
            }
            Input::Relay(relay::Event::ParticipantConnected { sid, uid, .. }) => {
                if let Some(peer) = self.peer_mut(&sid.0, &uid.0) {
                    peer.connect_by = None;
                }
            }
            Input::Relay(relay::Event::SubscriptionPaused {
                sid,
                uid,
                feed_id,
                paused,
            }) => {
                // Only a subscription's video is paused: its id is the feed's with "/video".
                let Some(feed_id) = feed_id.0.strip_suffix("/video").map(str::to_owned) else {
                    return;
                };
                let event = match paused {
                    Some(reason) => crate::protocol::Event::FeedPaused { feed_id, reason },
                    None => crate::protocol::Event::FeedResumed { feed_id },
                };
                self.send_to_peer(&sid.0, &uid.0, &ServerMessage::Event(event));
            }
            Input::Relay(relay::Event::FeedLayers {
                sid,
                uid,
                feed_id,
                active,
            }) => {
                let Some(feed_id) = feed_id.0.strip_suffix("/video").map(str::to_owned) else {
                    return;
                };
                let event = crate::protocol::Event::FeedLayers { feed_id, active };
                self.send_to_peer(&sid.0, &uid.0, &ServerMessage::Event(event));
            }
            Input::Relay(relay::Event::Speech {
                sid,
                uid,
                speaking,
                loudness,
                ..
            }) => {
                let Some(room) = self.rooms.get_mut(&sid.0) else {
                    return;
                };
                if !room.peers.contains_key(&uid.0) {
                    return;
                }
                let changes =
                    room.speakers
                        .handle_report(Instant::now(), &uid.0, speaking, loudness);
                self.tell_speakers(&sid.0, changes);
                self.announce_speech(&sid.0, &uid.0, speaking, loudness);
            }
            Input::Relay(relay::Event::RecordingFinished {
                recording, file, ..
            }) => self.file_finished(recording, file),
            Input::Relay(relay::Event::RecordingDropped {
                sid,
                recording,
                packets,
            }) => {
                tracing::warn!(%sid, recording, packets, "the recorder fell behind and lost packets");
            }
            Input::Relay(relay::Event::ConnectionQuality {
                sid,
                uid,
                quality,
                rtt_ms,
                loss_percent,
            }) => {
                tracing::debug!(%sid, %uid, ?quality, ?rtt_ms, loss_percent, "connection quality");
                let Some(peer) = self.peer_mut(&sid.0, &uid.0) else {
                    return;
                };
                peer.quality = Some(quality);
                // The participant rates its own connection from its browser's statistics.
                let event = crate::protocol::Event::ConnectionQuality {
                    uid: uid.0.clone(),
                    quality,
                };
                self.broadcast(&sid.0, &uid.0, event);
                self.announce_quality(&sid.0, &uid.0, quality);
            }
            Input::Relay(relay::Event::DataRefused { sid, uid, reason }) => {
                let event = crate::protocol::Event::DataRefused {
                    code: ErrorCode::Forbidden,
                    reason,
                };
                self.send_to_peer(&sid.0, &uid.0, &ServerMessage::Event(event));
            }
            Input::Done(sid, done) => self.job_done(&sid, done),
            Input::Recording(done) => self.recording_done(done),
            Input::AdminRecord(r) => self.admin_record(r),
            Input::FinishRecordings(done) => {
                // The server stops: the relay's last counters of every session are read off
                // the hub first, so that no traffic since the last flush goes unmetered.
                let sids: Vec<String> = self.rooms.keys().cloned().collect();
                let relay = self.relay.clone();
                let inputs = self.inputs.clone();
                tokio::spawn(async move {
                    // All at once, under one deadline: a stuck core must not hold the stop
                    // for each of its sessions in turn.
                    let reads = sids.into_iter().map(|sid| {
                        let relay = relay.clone();
                        async move {
                            let read = relay.session_usage(relay::ids::Sid::from(sid.as_str()));
                            let got = tokio::time::timeout(FINAL_USAGE_WAIT, read).await;
                            (sid, got.ok().and_then(Result::ok).unwrap_or_default())
                        }
                    });
                    let usage = futures::future::join_all(reads).await;
                    let _ = inputs.send(Input::FinalUsage(usage, done)).await;
                });
            }
            Input::FinalUsage(usage, done) => {
                // Its participants' time and traffic are written, and alone (not in a
                // cluster, where the sessions may go on elsewhere) its sessions' records close.
                let now = Instant::now();
                let ended = self.cluster.is_none().then(recording::unix_now);
                let sids: Vec<String> = self.rooms.keys().cloned().collect();
                for sid in sids {
                    let last = usage
                        .iter()
                        .find(|(s, _)| *s == sid)
                        .map_or(&[][..], |(_, u)| u.as_slice());
                    self.write_usage(&sid, now, last, ended);
                }
                self.keep_resume_tokens();
                self.finish_recordings(done)
            }
            Input::Metrics(reply) => {
                let _ = reply.send(self.metrics());
            }
            Input::Drain => {
                if !self.draining {
                    tracing::info!("draining: no new sessions");
                    // Every page is told: in a cluster it moves to another node now (so the
                    // node empties and stops early); alone, it knows to expect a restart.
                    let event = ServerMessage::Event(crate::protocol::Event::ServerDraining {
                        servers: self.other_servers(),
                    });
                    for room in self.rooms.values() {
                        for p in room.peers.values() {
                            if let Some((conn, c)) =
                                p.conn.and_then(|id| Some((id, self.conns.get(&id)?)))
                            {
                                self.queue(conn, c, event.to_text());
                            }
                        }
                    }
                }
                self.draining = true;
                if let Some(link) = &self.cluster {
                    link.draining
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Input::Cluster(envelope) => self.cluster_event(*envelope),
            Input::ClusterRecovered => self.cluster_recovered(),
            Input::NodeGone(node) => self.node_gone(&node),
            Input::Nodes(nodes) => {
                self.nodes = nodes;
                // A node's edge address may be known only now.
                self.sync_all_data_peers();
            }
            Input::Relay(_) => {}
            Input::Whip(request) => self.whip(request),
            Input::WhipAuthenticated(request, identity) => {
                self.whip_authenticated(*request, identity)
            }
            Input::Authenticated(pending, identity) => {
                let (conn, id) = (pending.conn, pending.id);
                if !self.conns.contains_key(&conn) {
                    // Closed while its credentials were checked.
                    return;
                }
                // Still joining until the session has taken it (or it failed).
                let result = match identity {
                    Ok(identity) => self.finish_join(pending, identity),
                    Err(e) => Err((ErrorCode::Unauthorized, e.to_string())),
                };
                if result.is_err() {
                    joining_over(&mut self.conns, conn);
                }
                self.reply(conn, id, result);
            }
            Input::Tick(now) => {
                let idle: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| {
                        c.joined.is_none()
                            && !c.joining
                            && now.saturating_duration_since(c.unjoined_since) >= JOIN_TIMEOUT
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
                // A WHIP encoder or WHEP player that never connected goes, as one whose resume
                // window is over.
                for room in self.rooms.values_mut() {
                    for p in room.peers.values_mut() {
                        if p.connect_by.is_some_and(|t| now >= t) {
                            tracing::info!("a WHIP or WHEP participant never connected its media");
                            p.connect_by = None;
                            p.disconnected_at = Some(now.checked_sub(RESUME_WINDOW).unwrap_or(now));
                        }
                    }
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
                self.expire_remote(now);
                if now.saturating_duration_since(self.claims_renewed) >= RENEW_CLAIMS {
                    self.claims_renewed = now;
                    self.renew_claims();
                    // A safety net: the edge's data peers again where a change was missed.
                    self.sync_all_data_peers();
                }
                for (sid, uid) in expired {
                    let queued = self.waiting(
                        &sid,
                        |i| matches!(i, jobs::RoomInput::Expire { uid: u } if *u == uid),
                    );
                    if !queued {
                        self.room_input(&sid, jobs::RoomInput::Expire { uid });
                    }
                }
                let usage_flush = self.usage_flush;
                let due: Vec<String> = self
                    .rooms
                    .iter_mut()
                    .filter(|(_, r)| {
                        now.saturating_duration_since(r.meter.last_flush) >= usage_flush
                    })
                    .map(|(sid, r)| {
                        // Not due again while this one waits or runs.
                        r.meter.last_flush = now;
                        sid.clone()
                    })
                    .collect();
                for sid in due {
                    self.room_input(&sid, jobs::RoomInput::Flush);
                }
            }
        }
    }
}
