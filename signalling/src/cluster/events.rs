//! The events of a session that every signalling instance serving one of its participants
//! must see, over Redis pub/sub: one channel per session, each message a JSON envelope naming
//! the node it came from (so that an instance skips its own).

use redis::{PushInfo, PushKind, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::directory::Directory;
use super::{ClusterError, PREFIX};

fn channel(sid: &str) -> String {
    format!("{PREFIX}events:{sid}")
}

/// An event as it crosses Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The node whose signalling sent it.
    pub from: String,
    /// The session.
    pub sid: String,
    /// What happened.
    pub event: T,
}

/// Publishing and subscribing to sessions' events.
#[derive(Clone)]
pub struct Events {
    directory: Directory,
    node: String,
}

impl Events {
    /// Events sent as node `node`, through `directory`'s connection.
    pub fn new(directory: Directory, node: &str) -> Events {
        Events {
            directory,
            node: node.to_string(),
        }
    }

    /// Tell every instance following `sid`.
    pub async fn publish<T: Serialize>(&self, sid: &str, event: T) -> Result<(), ClusterError> {
        let envelope = Envelope {
            from: self.node.clone(),
            sid: sid.to_string(),
            event,
        };
        let json = serde_json::to_string(&envelope).expect("events serialise");
        let mut con = self.directory.connection();
        redis::cmd("PUBLISH")
            .arg(channel(sid))
            .arg(json)
            .query_async::<i64>(&mut con)
            .await?;
        Ok(())
    }

    /// Follow `sid`'s events (they arrive through [`Events::read`] on what
    /// [`Directory::connect`] returned).
    pub async fn follow(&self, sid: &str) -> Result<(), ClusterError> {
        let mut con = self.directory.connection();
        con.subscribe(channel(sid)).await?;
        Ok(())
    }

    /// Stop following `sid`.
    pub async fn unfollow(&self, sid: &str) -> Result<(), ClusterError> {
        let mut con = self.directory.connection();
        con.unsubscribe(channel(sid)).await?;
        Ok(())
    }

    /// The event a pushed message carries, unless it is not one (a subscription's
    /// confirmation, another kind of push) or this node sent it. A message that does not
    /// read is an error with the reason.
    pub fn read<T: DeserializeOwned>(
        &self,
        push: PushInfo,
    ) -> Option<Result<Envelope<T>, ClusterError>> {
        if push.kind != PushKind::Message {
            return None;
        }
        let [_, payload]: [Value; 2] = push.data.try_into().ok()?;
        let parsed = redis::from_redis_value::<String>(payload)
            .map_err(|e| e.to_string())
            .and_then(|json| serde_json::from_str::<Envelope<T>>(&json).map_err(|e| e.to_string()));
        match parsed {
            Ok(envelope) if envelope.from == self.node => None,
            Ok(envelope) => Some(Ok(envelope)),
            Err(reason) => Some(Err(ClusterError::Unreadable {
                key: "event".into(),
                reason,
            })),
        }
    }
}
