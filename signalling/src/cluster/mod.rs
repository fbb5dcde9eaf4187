//! What several signalling instances and nodes share through Redis: which nodes are alive
//! ([`directory`]: a heartbeat with a time to live), where each session lives in each region
//! ([`placement`]: chosen by load, claimed atomically so that instances placing the same new
//! session at once agree), and the events every participant of a session must see wherever
//! it is connected ([`events`]: Redis pub/sub).
//!
//! Single-node mode uses none of this and needs no Redis.

pub mod directory;
pub mod events;
pub mod node;
pub mod placement;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Every key and channel of the cluster starts with this.
pub const PREFIX: &str = "webrtcai:";

/// A node of the cluster as it registers itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id (its certificate's name).
    pub id: String,
    /// Its region.
    pub region: String,
    /// Where browsers reach its signalling (`http://…` or `https://…`).
    pub signalling: String,
    /// Its edge's QUIC address.
    pub edge: SocketAddr,
    /// The address its relay puts in ICE candidates.
    pub media: IpAddr,
    /// Participants it takes at most.
    pub capacity: u32,
    /// Participants it has now.
    pub load: u32,
    /// It homes sessions; false for an edge-only node, which accepts participants near them
    /// and carries their media to the nodes that home their sessions.
    pub homes_sessions: bool,
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis could not be reached or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A record in Redis that does not read (another version, or written by hand).
    #[error("unreadable record {key}: {reason}")]
    Unreadable {
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// No node can take the participant.
    #[error("no node can take a participant in region {0}")]
    NoNode(String),
    /// Another running node has this node's id: its record goes on being renewed.
    #[error("node id {0} is in use by a running node")]
    NodeIdInUse(String),
}
