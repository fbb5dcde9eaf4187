//! The relay's side of the edge: the queues through which the cores and the edge thread
//! exchange packets, and the control plane's calls for feeds that cross trunks.
//!
//! To the cores the edge is one more core: its index ([`EdgePort::index`]) comes after
//! theirs, a feed's origin core hands it packets as it would another core with subscribers
//! (a sink), and a feed arriving over a trunk has a replica on each core of its session whose
//! origin is the edge. So the cores' forwarding, dynacast and keyframe requests work across
//! nodes unchanged; only the control plane below knows a route can lead off the machine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::Notify;

use crate::command::Command;
use crate::control::FeedDescription;
use crate::error::ControlError;
use crate::ids::{FeedId, FeedKey, SessionKey, Sid, Uid};
use crate::io::core::Peer;
use crate::relay::RelayHandle;
use crate::sfu::cross_core::{CrossCore, FeedRoute};

/// What the control plane tells the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrunkCommand {
    /// Core `core` has subscribers of the trunk feed `route` (`on`), or no longer.
    SetSink {
        /// The replica's route (its origin is the edge).
        route: FeedRoute,
        /// The core.
        core: usize,
        /// Whether it has subscribers now.
        on: bool,
    },
}

/// The control plane's link to the edge thread.
pub(crate) struct EdgeLink {
    pub(crate) index: usize,
    commands: Sender<TrunkCommand>,
    inbox: Sender<CrossCore>,
    notify: Arc<Notify>,
    /// Keys for the replicas of trunk feeds: each route is unique on the node.
    next_key: AtomicU64,
}

impl EdgeLink {
    fn command(&self, command: TrunkCommand) -> Result<(), ControlError> {
        self.commands
            .send(command)
            .map_err(|_| ControlError::CoreGone { core: self.index })?;
        self.notify.notify_one();
        Ok(())
    }
}

/// The edge thread's end of the queues: taken once from [`crate::Relay::take_edge_port`].
pub struct EdgePort {
    index: usize,
    inbox: Receiver<CrossCore>,
    commands: Receiver<TrunkCommand>,
    notify: Arc<Notify>,
    cores: Vec<Peer>,
}

impl std::fmt::Debug for EdgePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgePort")
            .field("index", &self.index)
            .field("cores", &self.cores.len())
            .finish()
    }
}

/// The queues between the cores and the edge, made before the cores start.
pub(crate) fn queues(index: usize, capacity: usize) -> (Peer, EdgeLink, EdgePort) {
    let (inbox_tx, inbox_rx) = crossbeam_channel::bounded(capacity);
    let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
    let notify = Arc::new(Notify::new());
    let peer = Peer {
        queue: inbox_tx.clone(),
        notify: notify.clone(),
    };
    let link = EdgeLink {
        index,
        commands: commands_tx,
        inbox: inbox_tx,
        notify: notify.clone(),
        next_key: AtomicU64::new(1),
    };
    let port = EdgePort {
        index,
        inbox: inbox_rx,
        commands: commands_rx,
        notify,
        cores: Vec::new(),
    };
    (peer, link, port)
}

impl EdgePort {
    pub(crate) fn set_cores(&mut self, cores: Vec<Peer>) {
        self.cores = cores;
    }

    /// The edge's index among the cores' peers: the `core` of every route whose origin is
    /// a trunk, and of the edge as a sink.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Woken when a core or the control plane queued something for the edge.
    pub fn notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// The next message from a core.
    pub fn try_recv(&self) -> Option<CrossCore> {
        self.inbox.try_recv().ok()
    }

    /// The next command from the control plane.
    pub fn try_command(&self) -> Option<TrunkCommand> {
        self.commands.try_recv().ok()
    }

    /// Hand `message` to core `core`. Err(true) when its inbox is full (the core is far
    /// behind: the message is dropped, as between cores), Err(false) when there is no such
    /// core.
    pub fn send_to_core(&self, core: usize, message: CrossCore) -> Result<(), bool> {
        let peer = self.cores.get(core).ok_or(false)?;
        match peer.queue.try_send(message) {
            Ok(()) => {
                peer.notify.notify_one();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(true),
            Err(TrySendError::Disconnected(_)) => Err(false),
        }
    }
}

impl RelayHandle {
    fn edge(&self) -> Result<&EdgeLink, ControlError> {
        self.inner.edge.as_ref().ok_or(ControlError::NoEdge)
    }

    /// The edge's index among the cores' peers, where the relay has an edge.
    pub fn edge_index(&self) -> Option<usize> {
        self.inner.edge.as_ref().map(|e| e.index)
    }

    /// Forward feed `route` to `core` too, or stop: through the feed's origin core, or, for a
    /// feed that comes over a trunk, by telling the edge.
    pub(crate) async fn set_sink(
        &self,
        route: FeedRoute,
        core: usize,
        on: bool,
    ) -> Result<(), ControlError> {
        match &self.inner.edge {
            Some(edge) if route.core == edge.index => {
                edge.command(TrunkCommand::SetSink { route, core, on })
            }
            _ => {
                self.run(route.core, |reply| Command::SetSink {
                    route,
                    core,
                    on,
                    reply,
                })
                .await
            }
        }
    }

    /// Ask for a keyframe of a feed that comes over a trunk (from its node, through the edge).
    pub(crate) fn trunk_keyframe_request(&self, route: FeedRoute) -> Result<(), ControlError> {
        let edge = self.edge()?;
        edge.inbox
            .try_send(CrossCore::KeyframeRequest {
                route,
                layer: None,
                bypass_limit: false,
            })
            .map_err(|_| ControlError::CoreGone { core: edge.index })?;
        edge.notify.notify_one();
        Ok(())
    }

    /// A feed of `sid` published by `uid` on another node, arriving through the edge: each
    /// core of the session gets a replica of it, and subscribing to it here works as for a
    /// local feed. Returns the replicas' route, which the edge's datagrams of the feed are
    /// handed to the cores with. Declaring it again updates its description.
    pub async fn add_trunk_feed(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed: FeedDescription,
    ) -> Result<FeedRoute, ControlError> {
        let edge = self.edge()?;
        let (_guard, layout) = self.lock_session(sid).await?;
        let route = match layout.feeds.get(&feed.feed_id) {
            Some(f) if f.route.core == edge.index => f.route,
            Some(_) => {
                return Err(ControlError::FeedOwnedByOther {
                    feed_id: feed.feed_id.clone(),
                })
            }
            None => {
                let key = edge.next_key.fetch_add(1, Ordering::Relaxed);
                FeedRoute {
                    core: edge.index,
                    session: SessionKey(key),
                    feed: FeedKey(key),
                }
            }
        };
        self.replicate(sid, &layout, uid, feed, route).await?;
        Ok(route)
    }

    /// A trunk feed ended (or its node left the session): its replicas and their
    /// subscriptions go. Returns its route, where it was here.
    pub async fn remove_trunk_feed(
        &self,
        sid: &Sid,
        feed_id: &FeedId,
    ) -> Result<Option<FeedRoute>, ControlError> {
        let edge = self.edge()?;
        let (_guard, layout) = self.lock_session(sid).await?;
        let Some(feed) = layout
            .feeds
            .get(feed_id)
            .filter(|f| f.route.core == edge.index)
        else {
            return Ok(None);
        };
        let route = feed.route;
        self.drop_replicas(&layout, route).await;
        self.update_layout(sid, |l| {
            l.feeds.remove(feed_id);
        });
        Ok(Some(route))
    }

    /// Another node wants feed `feed_id` of `sid` (`on`), or no longer: its origin core
    /// forwards it to the edge too, or stops. Returns the feed's route and description, or
    /// None where it is not published on this node (a trunk feed is not passed on to a
    /// third node: that node asks the publisher's).
    pub async fn trunk_sink(
        &self,
        sid: &Sid,
        feed_id: &FeedId,
        on: bool,
    ) -> Result<Option<(FeedRoute, FeedDescription)>, ControlError> {
        let edge = self.edge()?;
        let (_guard, layout) = self.lock_session(sid).await?;
        let Some(feed) = layout
            .feeds
            .get(feed_id)
            .filter(|f| f.route.core != edge.index)
        else {
            return Ok(None);
        };
        let route = feed.route;
        let description = feed.description.clone();
        self.set_sink(route, edge.index, on).await?;
        self.update_layout(sid, |l| {
            if let Some(f) = l.feeds.get_mut(feed_id) {
                if on {
                    f.sinks.insert(edge.index);
                } else {
                    f.sinks.remove(&edge.index);
                }
            }
        });
        Ok(Some((route, description)))
    }

    /// Feeds of `sid` published on this node (not those from trunks), with their publishers.
    pub fn local_feeds(&self, sid: &Sid) -> Vec<(Uid, FeedDescription)> {
        let edge = self.edge_index();
        let Ok(layout) = self.layout(sid) else {
            return Vec::new();
        };
        layout
            .feeds
            .values()
            .filter(|f| Some(f.route.core) != edge)
            .map(|f| (f.uid.clone(), f.description.clone()))
            .collect()
    }
}
