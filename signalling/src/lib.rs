//! WebRTC.ai signalling: the websocket protocol ([`protocol`]), SDP offer/answer ([`sdp`]),
//! the session state machine ([`hub`]) and the HTTP server that serves the SDK and demo app
//! ([`http`]). It drives a relay through [`relay_link::RelayLink`] (in this process, or in
//! another over the relay's control API) and never touches media.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod cluster;
pub use relay::config;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod relay_link;
pub mod sdp;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod webhooks;
pub mod whip;
pub mod ws;

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Start the hub on the current runtime: it takes relay events from `events`, authenticates
/// joins against the database of `store` (on threads of its own, with connections of their
/// own), and ticks; returns the sender that websocket connections feed. With `repair`, offers
/// negotiate packet repair (NACK and RTX). Fails when the database cannot be opened again.
pub fn start_hub(
    relay: relay_link::RelayLink,
    mut events: mpsc::Receiver<relay::Event>,
    store: std::sync::Arc<store::Store>,
    limits: limits::JoinLimits,
    usage_flush: Duration,
    repair: bool,
    cluster: Option<Cluster>,
) -> Result<mpsc::Sender<hub::Input>, store::StoreError> {
    let (tx, rx) = mpsc::channel(4096);
    let accounts = accounts::Accounts::start(store.path())?;
    let webhooks = webhooks::Webhooks::start(store.path())?;
    let mut hub = hub::Hub::new(
        relay,
        accounts,
        webhooks,
        tx.clone(),
        limits::JoinLimiter::new(limits),
        usage_flush,
        repair,
    );
    if cluster.is_none() {
        // The participants of the run before, if it stopped moments ago (a restart).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        hub = hub.with_restored(store.take_resume_tokens(now)?);
    }
    if let Some(Cluster {
        link,
        mut pushed,
        mut recovered,
        mut gone,
    }) = cluster
    {
        let gone_tx = tx.clone();
        tokio::spawn(async move {
            while let Some(change) = gone.recv().await {
                let input = match change {
                    cluster::node::NodeWatch::Gone(node) => hub::Input::NodeGone(node),
                    cluster::node::NodeWatch::Live(nodes) => hub::Input::Nodes(nodes),
                };
                if gone_tx.send(input).await.is_err() {
                    break;
                }
            }
        });
        let recovered_tx = tx.clone();
        tokio::spawn(async move {
            while recovered.recv().await.is_some() {
                if recovered_tx
                    .send(hub::Input::ClusterRecovered)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let events = link.events.clone();
        let lost = cluster::node::resync_when_back(link.directory.clone(), {
            let tx = tx.clone();
            move || {
                let tx = tx.clone();
                async move { tx.send(hub::Input::ClusterRecovered).await.is_ok() }
            }
        });
        hub = hub.with_cluster(link);
        let cluster_tx = tx.clone();
        tokio::spawn(async move {
            while let Some(push) = pushed.recv().await {
                if push.kind == redis::PushKind::Disconnection {
                    // Events sent meanwhile did not reach this node.
                    let _ = lost.send(());
                    continue;
                }
                match events.read::<hub::cluster::SessionEvent>(push) {
                    Some(Ok(envelope)) => {
                        let input = hub::Input::Cluster(Box::new(envelope));
                        if cluster_tx.send(input).await.is_err() {
                            break;
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "a session event did not read"),
                    None => {}
                }
            }
        });
    }
    tokio::spawn(hub.run(rx));
    let relay_tx = tx.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if relay_tx.send(hub::Input::Relay(e)).await.is_err() {
                break;
            }
        }
    });
    let tick_tx = tx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(tick_period(usage_flush));
        loop {
            tick.tick().await;
            if tick_tx
                .send(hub::Input::Tick(Instant::now()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Ok(tx)
}

/// What a hub needs to be one node of a cluster: its link, and the messages Redis pushes
/// (from [`cluster::directory::Directory::connect`]).
pub struct Cluster {
    /// The edge and the events.
    pub link: hub::cluster::ClusterLink,
    /// Pushed messages of the followed sessions.
    pub pushed: mpsc::UnboundedReceiver<redis::PushInfo>,
    /// Told when Redis is reachable again after it was not.
    pub recovered: mpsc::UnboundedReceiver<()>,
    /// Told of the live nodes, and of each node that stopped (its record lapsed).
    pub gone: mpsc::UnboundedReceiver<cluster::node::NodeWatch>,
}

/// How often the hub looks for work that is due (usage flushes, expired resume windows).
///
/// A flush falls due between two ticks and waits for the next one, so a crash loses up to the
/// flush interval plus one tick. With a tick as long as the interval, jitter alone made every
/// other 1 s flush wait a second tick: a quarter of the interval bounds the loss at 1.25×.
fn tick_period(usage_flush: Duration) -> Duration {
    (usage_flush / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_a_fraction_of_the_flush_interval() {
        assert_eq!(
            tick_period(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(tick_period(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(
            tick_period(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
    }
}
