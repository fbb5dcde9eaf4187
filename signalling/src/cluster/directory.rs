//! The cluster's shared records in Redis: nodes (a heartbeat with a time to live), each
//! session's node per region (claimed atomically), and resume tokens.
//!
//! Every record has one key, so that every operation is a single-key command or script and
//! works unchanged on Redis Cluster; the nodes' three keys share a hash tag (`{nodes}`), so
//! their scripts run on one shard. A node's record lapses by a time on Redis's own clock, so
//! nodes whose clocks differ agree on who is alive. The connection is redis-rs's connection manager, which
//! reconnects by itself: a Redis that restarts, or is unreachable for a while, fails the
//! calls made meanwhile, and the next heartbeat registers the node again.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, PushInfo};
use tokio::sync::mpsc;

use super::{ClusterError, NodeInfo, PREFIX};

/// A node not heard from for this long is gone: its record lapses.
pub const NODE_TTL: Duration = Duration::from_millis(1500);

/// How often a node renews its record: well inside [`NODE_TTL`], so a late heartbeat or
/// two do not make a live node look dead.
pub const HEARTBEAT: Duration = Duration::from_millis(400);

/// How long a session's claim on a node holds without being renewed.
pub const SESSION_TTL: Duration = Duration::from_secs(30);

// The nodes' keys share one hash tag, so that the scripts that touch all three run on one
// shard of a Redis Cluster.

/// The live nodes: id → when its record lapses (Redis's clock, ms).
fn alive_key() -> String {
    format!("{PREFIX}{{nodes}}:alive")
}

/// Each node's last record: id → JSON.
fn records_key() -> String {
    format!("{PREFIX}{{nodes}}:records")
}

/// Counts changes to the set of live nodes: a node watching the others reads the records
/// only when it moved.
fn version_key() -> String {
    format!("{PREFIX}{{nodes}}:version")
}

/// Now on Redis's clock, in ms (every node's lapse is judged by the same clock).
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Register node `ARGV[2]` with record `ARGV[3]` for `ARGV[1]` ms; the set of live nodes
/// changed (the version moves) if it was not among them.
const REGISTER: &str = r"
local old = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
if not old or tonumber(old) <= now then
  redis.call('INCR', KEYS[3])
  return 1
end
return 0
";

/// The records of the live nodes.
const LIVE: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
if #ids == 0 then
  return {}
end
return redis.call('HMGET', KEYS[2], unpack(ids))
";

/// Take out the nodes whose records lapsed (the version moves); return them.
const REAP: &str = r"
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
  redis.call('INCR', KEYS[3])
end
return gone
";

/// Whether node `ARGV[1]` is alive.
const IS_ALIVE: &str = r"
local lapses = redis.call('ZSCORE', KEYS[1], ARGV[1])
if lapses and tonumber(lapses) > now then
  return 1
end
return 0
";

/// Take node `ARGV[1]` out now (the version moves if it was in).
const UNREGISTER: &str = r"
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('INCR', KEYS[3])
end
return 0
";

/// The node scripts, each behind Redis's clock.
struct NodeScripts {
    register: redis::Script,
    live: redis::Script,
    reap: redis::Script,
    is_alive: redis::Script,
    unregister: redis::Script,
}

static NODE_SCRIPTS: std::sync::LazyLock<NodeScripts> = std::sync::LazyLock::new(|| {
    let with_now = |body: &str| redis::Script::new(&format!("{NOW}{body}"));
    NodeScripts {
        register: with_now(REGISTER),
        live: with_now(LIVE),
        reap: with_now(REAP),
        is_alive: with_now(IS_ALIVE),
        unregister: with_now(UNREGISTER),
    }
});

/// `script` over the three node keys.
fn on_nodes(script: &'static redis::Script) -> redis::ScriptInvocation<'static> {
    let mut invocation = script.prepare_invoke();
    invocation
        .key(alive_key())
        .key(records_key())
        .key(version_key());
    invocation
}

fn session_key(sid: &str, region: &str) -> String {
    format!("{PREFIX}session:{sid}:region:{region}")
}

fn members_key(sid: &str) -> String {
    format!("{PREFIX}session:{sid}:members")
}

fn feeds_key(sid: &str) -> String {
    format!("{PREFIX}session:{sid}:feeds")
}

fn session_nodes_key(sid: &str) -> String {
    format!("{PREFIX}session:{sid}:nodes")
}

/// Take node `ARGV[1]` out of the session's nodes; how many are left.
const LEAVE_SESSION: &str = r"
redis.call('SREM', KEYS[1], ARGV[1])
return redis.call('SCARD', KEYS[1])
";

fn started_key(sid: &str) -> String {
    format!("{PREFIX}session:{sid}:started")
}

fn resume_key(token: &str) -> String {
    format!("{PREFIX}resume:{token}")
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Replace a claim held by `ARGV[1]` (or by nobody) with `ARGV[2]`; either way, return the
/// holder after.
const TAKE_OVER: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return ARGV[2]
end
return holder
";

/// Remove hash field `ARGV[1]` if its record (JSON) names node `ARGV[2]`: a record written
/// since by another node stays.
const REMOVE_IF_NODE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and cjson.decode(v).node == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// Extend a claim if `ARGV[1]` still holds it, or take it again if nobody does (Redis
/// restarted empty, or the node was cut off from it past the claim's time to live): the
/// session is still there.
const RENEW: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// The cluster's records, through one reconnecting connection. Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    con: ConnectionManager,
}

impl Directory {
    /// Connect to Redis at `url` (`redis://host:port`, `redis+unix:///path`). Pub/sub
    /// messages for the channels [`super::events`] subscribes to arrive on the returned
    /// receiver, also after a reconnection (the connection subscribes again by itself).
    pub async fn connect(
        url: &str,
    ) -> Result<(Directory, mpsc::UnboundedReceiver<PushInfo>), ClusterError> {
        // Pushed messages on the same connection need RESP3.
        let url = if url.contains("protocol=") {
            url.to_string()
        } else if url.contains('?') {
            format!("{url}&protocol=resp3")
        } else {
            format!("{url}?protocol=resp3")
        };
        let client = redis::Client::open(url)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(tx)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_max_delay(Duration::from_millis(500));
        let con = client.get_connection_manager_with_config(config).await?;
        Ok((Directory { con }, rx))
    }

    pub(crate) fn connection(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// Register `node`, or renew its record: it lapses after [`NODE_TTL`] without renewal.
    /// True where it was not among the live nodes (new, or lapsed: the others took it for
    /// gone, and it must say again what it has).
    pub async fn register(&self, node: &NodeInfo) -> Result<bool, ClusterError> {
        let json = serde_json::to_string(node).expect("a node record serialises");
        let mut con = self.con.clone();
        let added: i64 = on_nodes(&NODE_SCRIPTS.register)
            .arg(millis(NODE_TTL))
            .arg(&node.id)
            .arg(json)
            .invoke_async(&mut con)
            .await?;
        Ok(added == 1)
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        let _: String = redis::cmd("PING").query_async(&mut con).await?;
        Ok(())
    }

    /// Whether node `id`'s record is alive.
    pub async fn has_node(&self, id: &str) -> Result<bool, ClusterError> {
        let mut con = self.con.clone();
        let alive: i64 = on_nodes(&NODE_SCRIPTS.is_alive)
            .arg(id)
            .invoke_async(&mut con)
            .await?;
        Ok(alive == 1)
    }

    /// Take out the nodes whose records lapsed; their ids. Any node may do it: the first to
    /// look after a lapse does, and the others see the version move.
    pub async fn reap_nodes(&self) -> Result<Vec<String>, ClusterError> {
        let mut con = self.con.clone();
        Ok(on_nodes(&NODE_SCRIPTS.reap).invoke_async(&mut con).await?)
    }

    /// How often the set of live nodes has changed (0 after Redis started empty): the
    /// records need reading again only when it moved.
    pub async fn nodes_version(&self) -> Result<u64, ClusterError> {
        let mut con = self.con.clone();
        let version: Option<u64> = con.get(version_key()).await?;
        Ok(version.unwrap_or(0))
    }

    /// Redis's epoch: a random value the first node to ask after Redis started (empty) sets.
    /// Another epoch than before means Redis lost its records, and the nodes not listed may
    /// just not have registered again yet.
    pub async fn epoch(&self) -> Result<String, ClusterError> {
        let mut con = self.con.clone();
        let key = format!("{PREFIX}epoch");
        let fresh = format!("{:016x}", rand::random::<u64>());
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&fresh)
            .arg("NX")
            .query_async(&mut con)
            .await?;
        let epoch: Option<String> = con.get(&key).await?;
        Ok(epoch.unwrap_or(fresh))
    }

    /// Take a node out at once (it is shutting down), rather than after its record lapses.
    pub async fn unregister(&self, id: &str) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        let _: i64 = on_nodes(&NODE_SCRIPTS.unregister)
            .arg(id)
            .invoke_async(&mut con)
            .await?;
        Ok(())
    }

    /// The nodes alive now, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let mut con = self.con.clone();
        let records: Vec<Option<String>> =
            on_nodes(&NODE_SCRIPTS.live).invoke_async(&mut con).await?;
        let mut alive = Vec::with_capacity(records.len());
        for json in records.into_iter().flatten() {
            let node =
                serde_json::from_str::<NodeInfo>(&json).map_err(|e| ClusterError::Unreadable {
                    key: records_key(),
                    reason: e.to_string(),
                })?;
            alive.push(node);
        }
        alive.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(alive)
    }

    /// The node that `sid` lives on in `region`: `candidate` if the session has none there
    /// yet, or if the one it had is not among `alive`; otherwise the one it has. Atomic:
    /// instances placing the same session at once get the same answer.
    pub async fn claim_session(
        &self,
        sid: &str,
        region: &str,
        candidate: &str,
        alive: &[NodeInfo],
    ) -> Result<String, ClusterError> {
        let key = session_key(sid, region);
        let mut con = self.con.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(candidate)
            .arg("NX")
            .arg("PX")
            .arg(millis(SESSION_TTL))
            .query_async(&mut con)
            .await?;
        if set.is_some() {
            return Ok(candidate.to_string());
        }
        let holder: Option<String> = con.get(&key).await?;
        match holder {
            Some(h) if alive.iter().any(|n| n.id == h) => Ok(h),
            // Gone meanwhile, or held by a dead node: take it over unless another instance
            // did first.
            gone => Ok(redis::Script::new(TAKE_OVER)
                .key(&key)
                .arg(gone.unwrap_or_default())
                .arg(candidate)
                .arg(millis(SESSION_TTL))
                .invoke_async(&mut con)
                .await?),
        }
    }

    /// When `sid` started (Unix seconds): `now` if no node has it yet, else the time the
    /// first node that had it recorded. Atomic, like a claim; kept while a node renews it
    /// ([`Directory::renew_started`]), for [`SESSION_TTL`] after the last stops.
    pub async fn session_started(&self, sid: &str, now: i64) -> Result<i64, ClusterError> {
        let key = started_key(sid);
        let mut con = self.con.clone();
        let (started,): (Option<String>,) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(now)
            .arg("NX")
            .arg("PX")
            .arg(millis(SESSION_TTL))
            .ignore()
            .get(&key)
            .query_async(&mut con)
            .await?;
        let started = started.unwrap_or_else(|| now.to_string());
        started.parse().map_err(|_| ClusterError::Unreadable {
            key,
            reason: format!("{started:?} is not a time"),
        })
    }

    /// Node `node` has participants of `sid` (kept for [`SESSION_TTL`], renewed).
    pub async fn enter_session(&self, sid: &str, node: &str) -> Result<(), ClusterError> {
        let key = session_nodes_key(sid);
        let mut con = self.con.clone();
        redis::pipe()
            .atomic()
            .sadd(&key, node)
            .ignore()
            .pexpire(&key, millis(SESSION_TTL) as i64)
            .ignore()
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    /// Node `node` no longer has participants of `sid`: whether it was the last node that
    /// had (then it closes the session's usage record).
    pub async fn leave_session(&self, sid: &str, node: &str) -> Result<bool, ClusterError> {
        let mut con = self.con.clone();
        let left: i64 = redis::Script::new(LEAVE_SESSION)
            .key(session_nodes_key(sid))
            .arg(node)
            .invoke_async(&mut con)
            .await?;
        Ok(left == 0)
    }

    /// Keep `sid`'s start time (a node still has participants of it).
    pub async fn renew_started(&self, sid: &str, started_at: i64) -> Result<(), ClusterError> {
        let key = started_key(sid);
        let mut con = self.con.clone();
        // Set again where Redis lost it (restarted empty): the session still started then.
        redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(started_at)
            .arg("NX")
            .arg("PX")
            .arg(millis(SESSION_TTL))
            .ignore()
            .pexpire(&key, millis(SESSION_TTL) as i64)
            .ignore()
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    /// Extend `node`'s claim on `sid` in `region` (it still has participants there), or make
    /// it again where nobody holds it. False where another node holds it now.
    pub async fn renew_session(
        &self,
        sid: &str,
        region: &str,
        node: &str,
    ) -> Result<bool, ClusterError> {
        let mut con = self.con.clone();
        let renewed: i64 = redis::Script::new(RENEW)
            .key(session_key(sid, region))
            .arg(node)
            .arg(millis(SESSION_TTL))
            .invoke_async(&mut con)
            .await?;
        Ok(renewed == 1)
    }

    /// The node `sid` lives on in `region`, if claimed.
    pub async fn session_node(
        &self,
        sid: &str,
        region: &str,
    ) -> Result<Option<String>, ClusterError> {
        let mut con = self.con.clone();
        Ok(con.get(session_key(sid, region)).await?)
    }

    /// Record a participant of `sid` (`record`: JSON of the caller's choosing).
    pub async fn put_member(&self, sid: &str, uid: &str, record: &str) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        let _: () = con.hset(members_key(sid), uid, record).await?;
        Ok(())
    }

    /// Forget a participant of `sid`, if node `node` recorded it (a participant that moved
    /// to another node since is that node's now).
    pub async fn remove_member(
        &self,
        sid: &str,
        uid: &str,
        node: &str,
    ) -> Result<(), ClusterError> {
        self.remove_if_node(members_key(sid), uid, node).await
    }

    async fn remove_if_node(
        &self,
        key: String,
        field: &str,
        node: &str,
    ) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        let _: i64 = redis::Script::new(REMOVE_IF_NODE)
            .key(&key)
            .arg(field)
            .arg(node)
            .invoke_async(&mut con)
            .await?;
        Ok(())
    }

    /// Every participant record of `sid`, by uid.
    pub async fn members(&self, sid: &str) -> Result<Vec<(String, String)>, ClusterError> {
        let mut con = self.con.clone();
        Ok(con.hgetall(members_key(sid)).await?)
    }

    /// Record a feed of `sid`.
    pub async fn put_feed(
        &self,
        sid: &str,
        feed_id: &str,
        record: &str,
    ) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        let _: () = con.hset(feeds_key(sid), feed_id, record).await?;
        Ok(())
    }

    /// Forget a feed of `sid`, if node `node` recorded it.
    pub async fn remove_feed(
        &self,
        sid: &str,
        feed_id: &str,
        node: &str,
    ) -> Result<(), ClusterError> {
        self.remove_if_node(feeds_key(sid), feed_id, node).await
    }

    /// Every feed record of `sid`, by feed id.
    pub async fn feeds(&self, sid: &str) -> Result<Vec<(String, String)>, ClusterError> {
        let mut con = self.con.clone();
        Ok(con.hgetall(feeds_key(sid)).await?)
    }

    /// Forget the participants and feeds of `sid` that node `node` recorded (it is gone),
    /// leaving those recorded since by others (a participant that rejoined elsewhere).
    pub async fn remove_node_records(&self, sid: &str, node: &str) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        for key in [members_key(sid), feeds_key(sid)] {
            let fields: Vec<String> = con.hkeys(&key).await?;
            for field in fields {
                self.remove_if_node(key.clone(), &field, node).await?;
            }
        }
        Ok(())
    }

    /// Forget the participants and feeds of `sid` recorded by `node` that it no longer has
    /// (`members`, `feeds`): removals lost while Redis was unreachable.
    pub async fn prune_node_records(
        &self,
        sid: &str,
        node: &str,
        members: &[String],
        feeds: &[String],
    ) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        for (key, keep) in [(members_key(sid), members), (feeds_key(sid), feeds)] {
            let fields: Vec<String> = con.hkeys(&key).await?;
            for field in fields.into_iter().filter(|f| !keep.contains(f)) {
                self.remove_if_node(key.clone(), &field, node).await?;
            }
        }
        Ok(())
    }

    /// Keep a resume token for `ttl`: whichever instance a reconnect lands on finds the
    /// participant it resumes.
    pub async fn put_resume(
        &self,
        token: &str,
        sid: &str,
        uid: &str,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        let value = serde_json::to_string(&(sid, uid)).expect("strings serialise");
        let _: () = con.pset_ex(resume_key(token), value, millis(ttl)).await?;
        Ok(())
    }

    /// The participant a resume token stands for.
    pub async fn resume(&self, token: &str) -> Result<Option<(String, String)>, ClusterError> {
        let mut con = self.con.clone();
        let key = resume_key(token);
        let value: Option<String> = con.get(&key).await?;
        read_resume(key, value)
    }

    /// Forget a resume token (its participant left).
    pub async fn remove_resume(&self, token: &str) -> Result<(), ClusterError> {
        let mut con = self.con.clone();
        let _: () = con.del(resume_key(token)).await?;
        Ok(())
    }

    /// The participant a resume token stands for, taken (a token resumes once).
    pub async fn take_resume(&self, token: &str) -> Result<Option<(String, String)>, ClusterError> {
        let mut con = self.con.clone();
        let key = resume_key(token);
        let value: Option<String> = redis::cmd("GETDEL").arg(&key).query_async(&mut con).await?;
        read_resume(key, value)
    }
}

/// A resume record: the session and the participant.
fn read_resume(
    key: String,
    value: Option<String>,
) -> Result<Option<(String, String)>, ClusterError> {
    value
        .map(|v| {
            serde_json::from_str(&v).map_err(|e| ClusterError::Unreadable {
                key,
                reason: e.to_string(),
            })
        })
        .transpose()
}
