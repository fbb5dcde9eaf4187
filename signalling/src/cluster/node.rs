//! Joining a cluster: connect to Redis, keep this node's record alive, and give the hub its
//! link to the other nodes.

use std::sync::Arc;
use std::time::Duration;

use edge::node::EdgeHandle;
use relay::RelayHandle;
use tokio::sync::mpsc;

use super::directory::{Directory, HEARTBEAT, NODE_TTL};
use super::events::Events;
use super::{ClusterError, NodeInfo};
use crate::hub::cluster::ClusterLink;

/// Join the cluster whose Redis is at `url` as `node` (its load is filled in from `relay`
/// at each heartbeat, which runs for as long as the runtime does). Returns what
/// [`crate::start_hub`] takes.
pub async fn join(
    url: &str,
    node: NodeInfo,
    relay: RelayHandle,
    edge: EdgeHandle,
) -> Result<crate::Cluster, ClusterError> {
    let (directory, pushed) = Directory::connect(url).await?;
    take_id(&directory, &node.id).await?;
    let _: bool = directory.register(&node).await?;
    let (writes, to_write) = mpsc::unbounded_channel();
    tokio::spawn(crate::hub::cluster::run_writes(to_write));
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let link = ClusterLink {
        draining: draining.clone(),
        node: node.id.clone(),
        region: node.region.clone(),
        homes_sessions: node.homes_sessions,
        edge_addr: node.edge,
        edge,
        events: Events::new(directory.clone(), &node.id),
        directory: directory.clone(),
        writes,
    };
    let node = Arc::new(node);
    let (recovered_tx, recovered) = mpsc::unbounded_channel();
    let (gone_tx, gone) = mpsc::unbounded_channel();
    tokio::spawn(watch_nodes(directory.clone(), node.id.clone(), gone_tx));
    tokio::spawn(heartbeat(directory, node, relay, draining, recovered_tx));
    Ok(crate::Cluster {
        link,
        pushed,
        recovered,
        gone,
    })
}

/// Wait until a record under this node's id from an earlier run (killed, and started again
/// before the record lapsed) is gone, and seen gone by the other nodes: otherwise they would
/// take the new run for the old one, and never learn that its sessions, participants and
/// feeds died with it. A record that goes on being renewed belongs to another running node
/// under the same id, and is refused.
pub async fn take_id(directory: &Directory, id: &str) -> Result<(), ClusterError> {
    if !directory.has_node(id).await? {
        // It may have lapsed a moment ago: the others' looks since must see it missing.
        tokio::time::sleep(2 * WATCH_NODES).await;
        return Ok(());
    }
    tracing::info!(node = %id, "an earlier run's record is still alive; waiting for it to lapse");
    // It was last renewed before this run began, so it lapses within its time to live.
    let deadline = tokio::time::Instant::now() + NODE_TTL + HEARTBEAT;
    while directory.has_node(id).await? {
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::NodeIdInUse(id.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Missing for two of the others' looks, so each of them has seen it gone.
    tokio::time::sleep(2 * WATCH_NODES).await;
    Ok(())
}

/// After each time the connection to Redis drops (tell the returned sender), wait until
/// Redis answers again, then call `resync`: what the others said meanwhile was lost to this
/// node (its subscriptions were gone), so the hub follows its sessions again and has the
/// others say again what they have. Several drops before Redis is back make one call.
/// Stops when `resync` returns false (the hub is gone).
pub fn resync_when_back<F, Fut>(directory: Directory, resync: F) -> mpsc::UnboundedSender<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let (tx, mut lost) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while lost.recv().await.is_some() {
            while directory.ping().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            while lost.try_recv().is_ok() {}
            tracing::info!("connected to Redis again; asking for the sessions again");
            if !resync().await {
                return;
            }
        }
    });
    tx
}

/// Watch the other nodes as node `me` does: the live nodes whenever they change, and each
/// node that is gone.
pub fn watch(directory: Directory, me: &str) -> mpsc::UnboundedReceiver<NodeWatch> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(watch_nodes(directory, me.to_owned(), tx));
    rx
}

/// How often the node looks at which nodes are alive: a node whose record lapsed
/// ([`super::directory::NODE_TTL`] after its last heartbeat) is noticed within this.
pub const WATCH_NODES: Duration = Duration::from_millis(250);

/// How long after Redis lost its records the nodes not listed yet are still taken for alive:
/// two heartbeats and a look.
pub const REREGISTER_GRACE: Duration =
    Duration::from_millis(2 * HEARTBEAT.as_millis() as u64 + WATCH_NODES.as_millis() as u64);

/// What the node learns of the others.
#[derive(Debug, Clone)]
pub enum NodeWatch {
    /// The live nodes, this one included, whenever the set changes.
    Live(Vec<NodeInfo>),
    /// A node whose record lapsed since the last look.
    Gone(String),
}

/// Tell (`gone`) of the live nodes when they change, and of each node whose record lapsed.
async fn watch_nodes(directory: Directory, me: String, gone: mpsc::UnboundedSender<NodeWatch>) {
    let mut alive: std::collections::BTreeSet<String> = Default::default();
    let mut told: Option<Vec<NodeInfo>> = None;
    let mut tick = tokio::time::interval(WATCH_NODES);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Until then a node missing from the list may just not have registered again yet.
    let mut trust_from = tokio::time::Instant::now();
    let mut epoch = None;
    let mut version = None;
    loop {
        tick.tick().await;
        // Redis unreachable: nothing is known to have died.
        let Ok(now_epoch) = directory.epoch().await else {
            continue;
        };
        if epoch.as_ref() != Some(&now_epoch) {
            // Redis started empty (or this node just started): the others register again
            // within a heartbeat or two.
            trust_from = tokio::time::Instant::now() + REREGISTER_GRACE;
            epoch = Some(now_epoch);
            // A new Redis counts from 0 again: its version says nothing of the old one's.
            version = None;
        }
        // The first to look after a lapse takes the node out, and the version moves; the
        // records are read only when it did (a few bytes a look otherwise, however many
        // nodes there are).
        if directory.reap_nodes().await.is_err() {
            continue;
        }
        let Ok(now_version) = directory.nodes_version().await else {
            continue;
        };
        // In the grace after Redis started empty, look every time: nodes register again
        // without the version telling who did not.
        let trusted = tokio::time::Instant::now() >= trust_from;
        if trusted && version == Some(now_version) {
            continue;
        }
        let Ok(nodes) = directory.nodes().await else {
            continue;
        };
        if trusted {
            version = Some(now_version);
        }
        let ids = |list: &[NodeInfo]| list.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        if told.as_deref().map(ids) != Some(ids(&nodes)) {
            told = Some(nodes.clone());
            if gone.send(NodeWatch::Live(nodes.clone())).is_err() {
                return;
            }
        }
        let now: std::collections::BTreeSet<String> = nodes
            .iter()
            .map(|n| n.id.clone())
            .filter(|id| *id != me)
            .collect();
        if tokio::time::Instant::now() < trust_from {
            alive.extend(now);
            continue;
        }
        for lost in alive.difference(&now) {
            tracing::warn!(node = %lost, "node gone");
            if gone.send(NodeWatch::Gone(lost.clone())).is_err() {
                return;
            }
        }
        alive = now;
    }
}

/// Renew the node's record every [`HEARTBEAT`], with its participants as its load. A Redis
/// that is gone fails the renewal; the next one after it is back registers the node again,
/// and the hub is told (`recovered`) so that it records its sessions again.
async fn heartbeat(
    directory: Directory,
    node: Arc<NodeInfo>,
    relay: RelayHandle,
    draining: Arc<std::sync::atomic::AtomicBool>,
    recovered: mpsc::UnboundedSender<()>,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let mut record = (*node).clone();
        // Draining, the node says it homes no session, so that others place none here.
        record.homes_sessions &= !draining.load(std::sync::atomic::Ordering::Relaxed);
        if let Ok(Ok(stats)) = tokio::time::timeout(Duration::from_millis(200), relay.stats()).await
        {
            record.load = stats.iter().map(|s| s.participants as u32).sum();
        }
        match directory.register(&record).await {
            Ok(lapsed) if failing || lapsed => {
                // Redis was lost, or this node's record lapsed (a stall longer than its time
                // to live): the others took it for gone and dropped what it has.
                tracing::info!(node = %node.id, lapsed, "registered with Redis again");
                failing = false;
                let _ = recovered.send(());
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!(node = %node.id, error = %e, "heartbeat failed; calls go on");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
