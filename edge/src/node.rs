//! The edge thread: one per node, owning every trunk of the node so that QUIC's congestion
//! control sees all of a trunk's traffic. It runs a single-threaded Tokio runtime; the cores
//! reach it through the relay's [`EdgePort`] (lock-free queues, as between cores) and the
//! control plane through an [`EdgeHandle`].
//!
//! Each trunk's media state is a sans-IO [`Tunnel`]; this module only moves bytes between
//! it, QUIC and the cores, and asks the relay to send feeds to the edge.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use relay::control::FeedDescription;
use relay::ids::{FeedId, Sid, Uid};
use relay::sfu::cross_core::{CrossCore, FeedRoute};
use relay::trunk::{EdgePort, TrunkCommand};
use relay::RelayHandle;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::NodeIdentity;
use crate::endpoint::{self, Local, Trunk};
use crate::frame::Control;
use crate::tunnel::{Tunnel, TunnelOutput, TunnelStats};
use crate::EdgeError;

/// How long a node waits before opening a trunk again after it broke or failed to open.
pub const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// How often the node looks whether each trunk keeps up with what it is given.
pub const CONGESTION_CHECK: Duration = Duration::from_millis(100);

/// How an edge runs.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The UDP address of its QUIC endpoint.
    pub bind: SocketAddr,
    /// Its certificate, key and the cluster's CA.
    pub identity: NodeIdentity,
    /// Its region.
    pub region: String,
}

/// Another node of the cluster, as placement knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNode {
    /// Its id.
    pub node: String,
    /// Its edge's QUIC address.
    pub addr: SocketAddr,
}

/// The state of one trunk, as [`EdgeHandle::stats`] gives it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrunkStats {
    /// The peer node.
    pub peer: String,
    /// Whether the trunk is up.
    pub up: bool,
    /// The tunnel's counters (media datagrams, NACKs, drops).
    pub tunnel: TunnelStats,
    /// The largest datagram the path takes now.
    pub max_datagram: Option<usize>,
    /// QUIC's round-trip estimate, milliseconds.
    pub rtt_ms: f64,
    /// QUIC's congestion window, bytes.
    pub cwnd: u64,
    /// UDP datagrams QUIC sent on the trunk (media, control and acknowledgements).
    pub udp_sent: u64,
    /// Their bytes.
    pub udp_bytes_sent: u64,
    /// Packets QUIC declared lost.
    pub lost_packets: u64,
    /// Media datagrams the trunk could not take (over the path's size, or closed).
    pub send_failed: u64,
    /// Messages for a core whose inbox was full.
    pub core_queue_full: u64,
    /// Data-channel messages for the peer dropped while its trunk was down.
    pub data_dropped: u64,
}

enum Request {
    Import {
        peer: PeerNode,
        sid: Sid,
        uid: Uid,
        feed: Box<FeedDescription>,
        reply: oneshot::Sender<Result<FeedRoute, EdgeError>>,
    },
    RemoveImport {
        sid: Sid,
        feed_id: FeedId,
        reply: oneshot::Sender<Result<(), EdgeError>>,
    },
    Stats {
        reply: oneshot::Sender<Vec<TrunkStats>>,
    },
    SessionPeers {
        sid: Sid,
        peers: Vec<PeerNode>,
    },
    Shutdown,
}

/// The control plane's handle to the edge thread. Cheap to clone.
#[derive(Clone)]
pub struct EdgeHandle {
    requests: mpsc::UnboundedSender<Request>,
    addr: SocketAddr,
    node: String,
}

impl EdgeHandle {
    /// The edge's QUIC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, EdgeError> {
        let (tx, rx) = oneshot::channel();
        let gone = || EdgeError::Closed("the edge has stopped".into());
        self.requests.send(make(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Feed `feed` of `sid`, published by `uid` on node `peer`, may be subscribed to here:
    /// the relay gets a replica of it, and once a participant here subscribes, the feed
    /// comes over the trunk to `peer` (opened if need be).
    pub async fn import(
        &self,
        peer: PeerNode,
        sid: &Sid,
        uid: &Uid,
        feed: FeedDescription,
    ) -> Result<FeedRoute, EdgeError> {
        self.ask(|reply| Request::Import {
            peer,
            sid: sid.clone(),
            uid: uid.clone(),
            feed: Box::new(feed),
            reply,
        })
        .await?
    }

    /// The feed imported from another node ended: its replica and subscriptions go.
    pub async fn remove_import(&self, sid: &Sid, feed_id: &FeedId) -> Result<(), EdgeError> {
        self.ask(|reply| Request::RemoveImport {
            sid: sid.clone(),
            feed_id: feed_id.clone(),
            reply,
        })
        .await?
    }

    /// The other nodes with participants of `sid` now (none: forget the session): its
    /// data-channel messages from this node's participants go to them, over trunks opened
    /// for the purpose where no feed crosses.
    pub fn set_session_peers(&self, sid: &Sid, peers: Vec<PeerNode>) -> Result<(), EdgeError> {
        self.requests
            .send(Request::SessionPeers {
                sid: sid.clone(),
                peers,
            })
            .map_err(|_| EdgeError::Closed("the edge has stopped".into()))
    }

    /// Every trunk's state.
    pub async fn stats(&self) -> Result<Vec<TrunkStats>, EdgeError> {
        self.ask(|reply| Request::Stats { reply }).await
    }
}

/// A running edge: its thread.
pub struct Edge {
    handle: EdgeHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Edge {
    /// Start the edge thread: its QUIC endpoint on `config.bind`, exchanging packets with the
    /// relay's cores through `port`.
    pub fn start(
        config: EdgeConfig,
        port: EdgePort,
        relay: RelayHandle,
    ) -> Result<Edge, EdgeError> {
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let node = config.identity.node.clone();
        // "edge-<node>", within the 15 bytes a thread name takes: CPU per packet is read per
        // thread (/proc/self/task/*/schedstat) by the trunk benchmark.
        let thread_name: String = format!("edge-{node}").chars().take(15).collect();
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(EdgeError::Io(e)));
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, run(config, port, relay, requests_rx, ready_tx));
            })?;
        let addr = ready_rx
            .recv()
            .map_err(|_| EdgeError::Closed("the edge thread stopped while starting".into()))??;
        Ok(Edge {
            handle: EdgeHandle {
                requests: requests_tx,
                addr,
                node,
            },
            thread: Some(thread),
        })
    }

    /// The control handle.
    pub fn handle(&self) -> EdgeHandle {
        self.handle.clone()
    }

    fn stop(&mut self) {
        let _ = self.handle.requests.send(Request::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One trunk's place in the node, up or not.
struct Slot {
    tunnel: Tunnel,
    /// Where the peer is, where this node opens the trunk.
    addr: Option<SocketAddr>,
    connection: Option<quinn::Connection>,
    control: Option<mpsc::UnboundedSender<Control>>,
    connecting: bool,
    send_failed: u64,
    data_dropped: u64,
    /// Bytes of data-channel messages queued for the control stream and not written yet:
    /// past [`MAX_DATA_QUEUED`] more are dropped, so a slow trunk does not hold a flood.
    data_queued: Rc<std::cell::Cell<usize>>,
}

/// See [`Slot::data_queued`].
const MAX_DATA_QUEUED: usize = 4 * 1024 * 1024;

/// The bytes a data-channel message takes in the control queue.
fn data_bytes(message: &Control) -> usize {
    match message {
        Control::Data { delivered, .. } => delivered.len(),
        _ => 0,
    }
}

impl Slot {
    /// Hand a media datagram to QUIC (counted where the trunk is down or too small for it).
    fn send_datagram(&mut self, bytes: Bytes) {
        match &self.connection {
            Some(c) if c.send_datagram(bytes).is_ok() => {}
            _ => self.send_failed += 1,
        }
    }

    fn new() -> Slot {
        Slot {
            tunnel: Tunnel::new(),
            addr: None,
            connection: None,
            control: None,
            connecting: false,
            send_failed: 0,
            data_dropped: 0,
            data_queued: Rc::default(),
        }
    }
}

/// A feed of this node sent over trunks.
struct Export {
    sid: Sid,
    feed_id: FeedId,
    /// The peers it goes to, with the layers each wants.
    peers: HashMap<String, u8>,
}

struct Node {
    local: Local,
    endpoint: quinn::Endpoint,
    relay: RelayHandle,
    port: EdgePort,
    slots: HashMap<String, Slot>,
    /// The trunk each import (a replica's route) comes over.
    import_peer: HashMap<FeedRoute, String>,
    imports: HashMap<(Sid, FeedId), FeedRoute>,
    exports: HashMap<FeedRoute, Export>,
    /// The other nodes of each session with participants here: where its data-channel
    /// messages go.
    sessions: HashMap<Sid, Vec<String>>,
    core_queue_full: u64,
}

impl Node {
    /// Whether this node needs a trunk to `peer`: it imports a feed from it, or shares a
    /// session with it.
    fn wants(&self, peer: &str) -> bool {
        self.import_peer.values().any(|p| p == peer)
            || self
                .sessions
                .values()
                .any(|peers| peers.iter().any(|p| p == peer))
    }
}

type Shared = Rc<RefCell<Node>>;

async fn run(
    config: EdgeConfig,
    port: EdgePort,
    relay: RelayHandle,
    mut requests: mpsc::UnboundedReceiver<Request>,
    ready: std::sync::mpsc::Sender<Result<SocketAddr, EdgeError>>,
) {
    let endpoint = match endpoint::endpoint(config.bind, &config.identity) {
        Ok(e) => e,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let addr = match endpoint.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let notify = port.notify();
    let node: Shared = Rc::new(RefCell::new(Node {
        local: Local {
            node: config.identity.node.clone(),
            region: config.region,
        },
        endpoint: endpoint.clone(),
        relay,
        port,
        slots: HashMap::new(),
        import_peer: HashMap::new(),
        imports: HashMap::new(),
        exports: HashMap::new(),
        sessions: HashMap::new(),
        core_queue_full: 0,
    }));
    let _ = ready.send(Ok(addr));

    tokio::task::spawn_local(accept_loop(node.clone(), endpoint.clone()));
    tokio::task::spawn_local(cores_loop(node.clone(), notify));
    tokio::task::spawn_local(watch_congestion(node.clone()));
    while let Some(request) = requests.recv().await {
        match request {
            Request::Import {
                peer,
                sid,
                uid,
                feed,
                reply,
            } => {
                let node = node.clone();
                tokio::task::spawn_local(async move {
                    let _ = reply.send(import(&node, peer, sid, uid, *feed).await);
                });
            }
            Request::RemoveImport {
                sid,
                feed_id,
                reply,
            } => {
                let node = node.clone();
                tokio::task::spawn_local(async move {
                    let _ = reply.send(remove_import(&node, sid, feed_id).await);
                });
            }
            Request::Stats { reply } => {
                let _ = reply.send(stats(&node.borrow()));
            }
            Request::SessionPeers { sid, peers } => session_peers(&node, sid, peers),
            Request::Shutdown => break,
        }
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"node shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

fn stats(node: &Node) -> Vec<TrunkStats> {
    let mut out: Vec<TrunkStats> = node
        .slots
        .iter()
        .map(|(peer, slot)| {
            let quic = slot.connection.as_ref().map(|c| c.stats());
            TrunkStats {
                peer: peer.clone(),
                up: slot.connection.is_some(),
                tunnel: slot.tunnel.stats(),
                max_datagram: slot.connection.as_ref().and_then(|c| c.max_datagram_size()),
                rtt_ms: quic
                    .as_ref()
                    .map_or(0.0, |q| q.path.rtt.as_secs_f64() * 1000.0),
                cwnd: quic.as_ref().map_or(0, |q| q.path.cwnd),
                udp_sent: quic.as_ref().map_or(0, |q| q.udp_tx.datagrams),
                udp_bytes_sent: quic.as_ref().map_or(0, |q| q.udp_tx.bytes),
                lost_packets: quic.as_ref().map_or(0, |q| q.path.lost_packets),
                send_failed: slot.send_failed,
                core_queue_full: node.core_queue_full,
                data_dropped: slot.data_dropped,
            }
        })
        .collect();
    out.sort_by(|a, b| a.peer.cmp(&b.peer));
    out
}

async fn import(
    node: &Shared,
    peer: PeerNode,
    sid: Sid,
    uid: Uid,
    feed: FeedDescription,
) -> Result<FeedRoute, EdgeError> {
    crate::cluster::check_node_id(&peer.node)?;
    let relay = node.borrow().relay.clone();
    let feed_id = feed.feed_id.clone();
    let route = relay
        .add_trunk_feed(&sid, &uid, feed)
        .await
        .map_err(|e| EdgeError::Refused(e.to_string()))?;
    let connect = {
        let mut n = node.borrow_mut();
        n.import_peer.insert(route, peer.node.clone());
        n.imports.insert((sid.clone(), feed_id.clone()), route);
        let slot = n.slots.entry(peer.node.clone()).or_insert_with(Slot::new);
        slot.addr = Some(peer.addr);
        slot.tunnel.import(&sid, &feed_id, route);
        let connect = slot.connection.is_none() && !slot.connecting;
        if connect {
            slot.connecting = true;
        }
        connect
    };
    if connect {
        tokio::task::spawn_local(connect_loop(node.clone(), peer.node.clone()));
    }
    drain(node, &peer.node);
    Ok(route)
}

async fn remove_import(node: &Shared, sid: Sid, feed_id: FeedId) -> Result<(), EdgeError> {
    let relay = node.borrow().relay.clone();
    // The session may have gone from the relay already (its last participant here left):
    // the edge forgets the import all the same.
    let removed = relay.remove_trunk_feed(&sid, &feed_id).await;
    let peer = {
        let mut n = node.borrow_mut();
        let Some(route) = n.imports.remove(&(sid, feed_id)) else {
            return Ok(());
        };
        let Some(peer) = n.import_peer.remove(&route) else {
            return Ok(());
        };
        if let Some(slot) = n.slots.get_mut(&peer) {
            slot.tunnel.drop_import(route);
        }
        peer
    };
    drain(node, &peer);
    match removed {
        Ok(_) | Err(relay::ControlError::NoSuchSession { .. }) => Ok(()),
        Err(e) => Err(EdgeError::Refused(e.to_string())),
    }
}

/// The other nodes with participants of `sid`: trunks to them open where none is up.
fn session_peers(node: &Shared, sid: Sid, peers: Vec<PeerNode>) {
    let mut connect = Vec::new();
    {
        let mut n = node.borrow_mut();
        if peers.is_empty() {
            n.sessions.remove(&sid);
            return;
        }
        for peer in &peers {
            if crate::cluster::check_node_id(&peer.node).is_err() {
                continue;
            }
            let slot = n.slots.entry(peer.node.clone()).or_insert_with(Slot::new);
            slot.addr = Some(peer.addr);
            if slot.connection.is_none() && !slot.connecting {
                slot.connecting = true;
                connect.push(peer.node.clone());
            }
        }
        n.sessions
            .insert(sid, peers.into_iter().map(|p| p.node).collect());
    }
    for peer in connect {
        tokio::task::spawn_local(connect_loop(node.clone(), peer));
    }
}

/// Open the trunk to `peer`, again after each failure, while this node imports feeds from it
/// or shares a session with it.
async fn connect_loop(node: Shared, peer: String) {
    loop {
        let (endpoint, local, addr) = {
            let n = node.borrow();
            let wanted = n.wants(&peer);
            let Some(slot) = n.slots.get(&peer) else {
                return;
            };
            if slot.connection.is_some() || !wanted {
                drop(n);
                if let Some(slot) = node.borrow_mut().slots.get_mut(&peer) {
                    slot.connecting = false;
                }
                return;
            }
            let Some(addr) = slot.addr else {
                return;
            };
            (n.endpoint.clone(), n.local.clone(), addr)
        };
        match Trunk::connect(&endpoint, addr, &peer, &local).await {
            Ok(trunk) => {
                if let Some(slot) = node.borrow_mut().slots.get_mut(&peer) {
                    slot.connecting = false;
                }
                register(&node, trunk);
                return;
            }
            Err(e) => {
                tracing::warn!(peer, error = %e, "trunk not opened; trying again");
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
        }
    }
}

async fn accept_loop(node: Shared, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let node = node.clone();
        let local = node.borrow().local.clone();
        tokio::task::spawn_local(async move {
            match Trunk::accept(incoming, &local).await {
                Ok(trunk) => register(&node, trunk),
                Err(e) => tracing::warn!(error = %e, "trunk refused"),
            }
        });
    }
}

/// A trunk is up: it carries the peer's tunnel from now on. Where one is up already (both
/// nodes opened one at once), the one opened by the node with the lower id stays.
fn register(node: &Shared, trunk: Trunk) {
    let peer = trunk.peer.clone();
    let opened_here = trunk.opened_here;
    let (connection, mut sender, mut receiver) = trunk.split();
    {
        let mut n = node.borrow_mut();
        let local = n.local.node.clone();
        let slot = n.slots.entry(peer.clone()).or_insert_with(Slot::new);
        if let Some(old) = &slot.connection {
            let keep_new = (local < peer) == opened_here;
            if !keep_new {
                connection.close(quinn::VarInt::from_u32(0), b"a trunk is up already");
                return;
            }
            old.close(quinn::VarInt::from_u32(0), b"replaced");
        }
        let (control_tx, mut control_rx) = mpsc::unbounded_channel::<Control>();
        slot.connection = Some(connection.clone());
        slot.control = Some(control_tx);
        // What was asked on the last trunk is asked again on this one.
        slot.tunnel.reset();
        // A count of its own: what the last trunk's queue held is gone with it.
        slot.data_queued = Rc::default();
        let queued = slot.data_queued.clone();
        tokio::task::spawn_local(async move {
            while let Some(message) = control_rx.recv().await {
                if sender.send(&message).await.is_err() {
                    return;
                }
                queued.set(queued.get().saturating_sub(data_bytes(&message)));
            }
        });
    }
    tracing::info!(peer, "trunk up");
    drain(node, &peer);

    let id = connection.stable_id();
    let control_node = node.clone();
    let control_peer = peer.clone();
    tokio::task::spawn_local(async move {
        loop {
            match receiver.recv().await {
                Ok(message) => {
                    if let Some(slot) = control_node.borrow_mut().slots.get_mut(&control_peer) {
                        slot.tunnel.handle_control(message);
                    }
                    drain(&control_node, &control_peer);
                }
                Err(e) => {
                    broken(&control_node, &control_peer, id, &e.to_string());
                    return;
                }
            }
        }
    });
    let media_node = node.clone();
    tokio::task::spawn_local(async move {
        loop {
            match connection.read_datagram().await {
                Ok(bytes) => {
                    if let Some(slot) = media_node.borrow_mut().slots.get_mut(&peer) {
                        slot.tunnel.handle_datagram(&bytes, SystemTime::now());
                    }
                    drain(&media_node, &peer);
                }
                Err(e) => {
                    broken(&media_node, &peer, id, &e.to_string());
                    return;
                }
            }
        }
    });
}

/// The trunk `id` to `peer` ended: its feeds stop, and where this node imports from the peer
/// it opens the trunk again.
fn broken(node: &Shared, peer: &str, id: usize, reason: &str) {
    let reconnect = {
        let mut n = node.borrow_mut();
        let wanted = n.wants(peer);
        let Some(slot) = n.slots.get_mut(peer) else {
            return;
        };
        if slot.connection.as_ref().map(|c| c.stable_id()) != Some(id) {
            // An older trunk, replaced already.
            return;
        }
        tracing::warn!(peer, reason, "trunk down");
        slot.connection = None;
        slot.control = None;
        slot.data_queued = Rc::default();
        slot.tunnel.reset();
        let reconnect = wanted && slot.addr.is_some() && !slot.connecting;
        if reconnect {
            slot.connecting = true;
        }
        reconnect
    };
    drain(node, peer);
    if reconnect {
        let node = node.clone();
        let peer = peer.to_string();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(RECONNECT_AFTER).await;
            connect_loop(node, peer).await;
        });
    }
}

/// Carry out what the peer's tunnel asks.
fn drain(node: &Shared, peer: &str) {
    loop {
        let mut n = node.borrow_mut();
        let n = &mut *n;
        let Some(slot) = n.slots.get_mut(peer) else {
            return;
        };
        let Some(output) = slot.tunnel.poll_output() else {
            return;
        };
        match output {
            TunnelOutput::Control(message) => {
                // With the trunk down it is dropped: the next trunk starts over.
                if let Some(control) = &slot.control {
                    let bytes = data_bytes(&message);
                    if control.send(message).is_ok() {
                        slot.data_queued.set(slot.data_queued.get() + bytes);
                    }
                }
            }
            TunnelOutput::Datagram(bytes) => slot.send_datagram(bytes),
            TunnelOutput::ToCore { core, message } => {
                if n.port.send_to_core(core, message) == Err(true) {
                    n.core_queue_full += 1;
                }
            }
            TunnelOutput::Export { sid, feed_id } => {
                let relay = n.relay.clone();
                let node = node.clone();
                let peer = peer.to_string();
                tokio::task::spawn_local(async move {
                    let found = relay.trunk_sink(&sid, &feed_id, true).await.ok().flatten();
                    {
                        let mut n = node.borrow_mut();
                        if let Some((route, _)) = &found {
                            n.exports
                                .entry(*route)
                                .or_insert_with(|| Export {
                                    sid: sid.clone(),
                                    feed_id: feed_id.clone(),
                                    peers: HashMap::new(),
                                })
                                .peers
                                .insert(peer.clone(), 0);
                        }
                        if let Some(slot) = n.slots.get_mut(&peer) {
                            slot.tunnel.handle_exported(&sid, &feed_id, found);
                        }
                    }
                    drain(&node, &peer);
                });
            }
            TunnelOutput::Unexport { route } => {
                let Some(export) = n.exports.get_mut(&route) else {
                    continue;
                };
                export.peers.remove(peer);
                if export.peers.is_empty() {
                    let (sid, feed_id) = (export.sid.clone(), export.feed_id.clone());
                    n.exports.remove(&route);
                    let relay = n.relay.clone();
                    tokio::task::spawn_local(async move {
                        let _ = relay.trunk_sink(&sid, &feed_id, false).await;
                    });
                } else {
                    let mask = export.peers.values().fold(0, |a, m| a | m);
                    layers_wanted(&n.port, route, mask, &mut n.core_queue_full);
                }
            }
            TunnelOutput::Data(relayed) => {
                // To each core of the session here, whose participants it may be for.
                for core in n.relay.cores_of(&relayed.sid) {
                    let message = CrossCore::Data(relayed.clone());
                    if n.port.send_to_core(core, message) == Err(true) {
                        n.core_queue_full += 1;
                    }
                }
            }
            TunnelOutput::LayersWanted { route, mask } => {
                let Some(export) = n.exports.get_mut(&route) else {
                    continue;
                };
                export.peers.insert(peer.to_string(), mask);
                let mask = export.peers.values().fold(0, |a, m| a | m);
                layers_wanted(&n.port, route, mask, &mut n.core_queue_full);
            }
        }
    }
}

/// Tell each tunnel whether its trunk keeps up: QUIC holds datagrams the congestion window
/// has no room for in the send buffer (and drops the oldest when it is full), so a buffer
/// more than half full means the trunk carries less than it is given.
async fn watch_congestion(node: Shared) {
    let mut tick = tokio::time::interval(CONGESTION_CHECK);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for slot in node.borrow_mut().slots.values_mut() {
            if let Some(c) = &slot.connection {
                let keeping_up =
                    c.datagram_send_buffer_space() >= endpoint::DATAGRAM_SEND_BUFFER / 2;
                slot.tunnel.handle_trunk_state(now, keeping_up);
            }
        }
    }
}

/// Tell a feed's origin core the layers all trunks want of it together.
fn layers_wanted(port: &EdgePort, route: FeedRoute, mask: u8, full: &mut u64) {
    let message = CrossCore::LayersWanted {
        route,
        core: port.index(),
        mask,
    };
    if port.send_to_core(route.core, message) == Err(true) {
        *full += 1;
    }
}

/// Wait for the cores and the control plane, and hand what they queued to the tunnels.
async fn cores_loop(node: Shared, notify: std::sync::Arc<tokio::sync::Notify>) {
    loop {
        notify.notified().await;
        loop {
            let (message, command) = {
                let n = node.borrow();
                (n.port.try_recv(), n.port.try_command())
            };
            if message.is_none() && command.is_none() {
                break;
            }
            if let Some(message) = message {
                from_core(&node, message);
            }
            if let Some(TrunkCommand::SetSink { route, core, on }) = command {
                let peer = node.borrow().import_peer.get(&route).cloned();
                if let Some(peer) = peer {
                    if let Some(slot) = node.borrow_mut().slots.get_mut(&peer) {
                        slot.tunnel.set_sink(route, core, on);
                    }
                    drain(&node, &peer);
                }
            }
        }
    }
}

fn from_core(node: &Shared, message: CrossCore) {
    match message {
        CrossCore::Rtp { route, packet } => {
            // Per packet: one borrow, no copy of the peers' names; a trunk with anything
            // but datagrams to send (rare) is drained after.
            let mut rest = Vec::new();
            {
                let mut n = node.borrow_mut();
                let n = &mut *n;
                let Some(export) = n.exports.get(&route) else {
                    return;
                };
                for peer in export.peers.keys() {
                    let Some(slot) = n.slots.get_mut(peer) else {
                        continue;
                    };
                    slot.tunnel.handle_core(CrossCore::Rtp {
                        route,
                        packet: packet.clone(),
                    });
                    while let Some(bytes) = slot.tunnel.poll_datagram() {
                        slot.send_datagram(bytes);
                    }
                    if slot.tunnel.has_output() {
                        rest.push(peer.clone());
                    }
                }
            }
            for peer in rest {
                drain(node, &peer);
            }
        }
        CrossCore::KeyframeRequest { route, .. } | CrossCore::LayersWanted { route, .. } => {
            let peer = node.borrow().import_peer.get(&route).cloned();
            if let Some(peer) = peer {
                if let Some(slot) = node.borrow_mut().slots.get_mut(&peer) {
                    slot.tunnel.handle_core(message);
                }
                drain(node, &peer);
            }
        }
        CrossCore::Data(relayed) => {
            // A participant here sent it: to the session's other nodes.
            let peers = node.borrow().sessions.get(&relayed.sid).cloned();
            for peer in peers.unwrap_or_default() {
                {
                    let mut n = node.borrow_mut();
                    let n = &mut *n;
                    let Some(slot) = n.slots.get_mut(&peer) else {
                        continue;
                    };
                    if slot.control.is_none() || slot.data_queued.get() > MAX_DATA_QUEUED {
                        slot.data_dropped += 1;
                        continue;
                    }
                    slot.tunnel.send_data(&relayed);
                }
                drain(node, &peer);
            }
        }
        // A hold by a core's receivers stays on this node: the senders of other nodes are not
        // held back, and the bound on what waits for a receiver applies to their messages.
        CrossCore::DataHold { .. } => {}
    }
}
