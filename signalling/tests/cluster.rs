//! The cluster's shared state against a real redis-server (started here on a unix socket):
//! two instances placing one new session at once agree on its node, a node that stops
//! renewing its record is gone within 2 s and its sessions move, a node that restarts at
//! once under its id is seen gone and back, and events cross instances, also after Redis
//! restarts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use signalling::cluster::directory::{Directory, HEARTBEAT, NODE_TTL};
use signalling::cluster::events::Events;
use signalling::cluster::node::NodeWatch;
use signalling::cluster::NodeInfo;

/// A redis-server of the test's own, on a unix socket in a fresh directory.
struct Redis {
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    fn start(name: &str) -> Redis {
        let dir =
            std::env::temp_dir().join(format!("webrtcai-redis-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis { dir, child: None };
        r.run();
        r
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn run(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(self.socket())
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        wait_for(&self.socket());
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Until redis-server takes connections on `path`. The socket file appears when it binds, a
/// moment before it listens: a client that connected in between was refused (seen once in a
/// full suite, right after a restart).
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn node(id: &str, region: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        region: region.into(),
        signalling: format!("http://{id}.example:8080"),
        edge: "127.0.0.1:7001".parse().unwrap(),
        media: "127.0.0.1".parse().unwrap(),
        capacity: 100,
        load: 0,
        homes_sessions: true,
    }
}

#[tokio::test]
async fn two_instances_placing_one_new_session_at_once_agree_on_its_node() {
    let redis = Redis::start("place");
    let (a, _) = Directory::connect(&redis.url()).await.unwrap();
    let (b, _) = Directory::connect(&redis.url()).await.unwrap();
    a.register(&node("eu-1", "eu")).await.unwrap();
    b.register(&node("eu-2", "eu")).await.unwrap();
    let alive = a.nodes().await.unwrap();
    assert_eq!(alive.len(), 2);
    let mut won = [0, 0];
    for i in 0..50 {
        let sid = format!("c/race-{i}");
        // Each instance would place it on its own node.
        let (x, y) = tokio::join!(
            a.claim_session(&sid, "eu", "eu-1", &alive),
            b.claim_session(&sid, "eu", "eu-2", &alive)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x, y, "both serve {sid} from one node");
        assert_eq!(b.session_node(&sid, "eu").await.unwrap(), Some(x.clone()));
        won[usize::from(x == "eu-2")] += 1;
    }
    println!("50 races: eu-1 won {}, eu-2 won {}", won[0], won[1]);
}

#[tokio::test]
async fn a_node_that_stops_is_gone_within_two_seconds_and_its_sessions_move() {
    let redis = Redis::start("lapse");
    let (dir, _) = Directory::connect(&redis.url()).await.unwrap();
    let (a, b) = (node("eu-1", "eu"), node("eu-2", "eu"));
    // eu-1 beats until it "dies"; eu-2 beats throughout.
    let dying = beat(dir.clone(), a.clone());
    let _living = beat(dir.clone(), b.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let alive = dir.nodes().await.unwrap();
    assert_eq!(
        dir.claim_session("c/room", "eu", "eu-1", &alive)
            .await
            .unwrap(),
        "eu-1"
    );
    assert!(dir.renew_session("c/room", "eu", "eu-1").await.unwrap());

    dying.abort();
    let stopped = Instant::now();
    let gone = loop {
        let ids: Vec<String> = dir
            .nodes()
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.id)
            .collect();
        if !ids.contains(&"eu-1".to_string()) {
            assert!(ids.contains(&"eu-2".to_string()), "the live node stays");
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(3),
            "eu-1 still listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("a stopped node left the directory {gone:?} after its heartbeat stopped");
    assert!(gone <= NODE_TTL + Duration::from_millis(100), "{gone:?}");
    assert!(gone < Duration::from_secs(2));

    // Its session goes to the node that asks next; the dead node cannot renew it.
    let alive = dir.nodes().await.unwrap();
    assert_eq!(
        dir.claim_session("c/room", "eu", "eu-2", &alive)
            .await
            .unwrap(),
        "eu-2"
    );
    assert!(!dir.renew_session("c/room", "eu", "eu-1").await.unwrap());
    // A node whose record lapsed while it ran on (a stall) learns so when it registers
    // again: the others took it for gone, and it must say again what it has.
    assert!(dir.register(&a).await.unwrap(), "registered after a lapse");
    assert!(!dir.register(&a).await.unwrap(), "a renewal");
    // A resume token is taken once, wherever the reconnect lands.
    dir.put_resume("tok", "c/room", "alice", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        dir.take_resume("tok").await.unwrap(),
        Some(("c/room".to_string(), "alice".to_string()))
    );
    assert_eq!(dir.take_resume("tok").await.unwrap(), None);
}

#[tokio::test]
async fn a_session_has_one_start_one_closer_and_its_node_claims_it_again_after_redis_lost_it() {
    let redis = Redis::start("start");
    let (a, _) = Directory::connect(&redis.url()).await.unwrap();
    let (b, _) = Directory::connect(&redis.url()).await.unwrap();
    // The first node to have the session sets its start; the next one, later, gets it.
    assert_eq!(a.session_started("c/s", 1000).await.unwrap(), 1000);
    assert_eq!(b.session_started("c/s", 1007).await.unwrap(), 1000);
    a.renew_started("c/s", 1000).await.unwrap();
    // The nodes with participants of it: the last to leave closes its usage record.
    a.enter_session("c/s", "eu-1").await.unwrap();
    b.enter_session("c/s", "eu-2").await.unwrap();
    let (left_a, left_b) = tokio::join!(
        a.leave_session("c/s", "eu-1"),
        b.leave_session("c/s", "eu-2")
    );
    assert_eq!(
        [left_a.unwrap(), left_b.unwrap()]
            .iter()
            .filter(|last| **last)
            .count(),
        1,
        "exactly one of two nodes leaving at once is the last"
    );
    a.enter_session("c/s", "eu-1").await.unwrap();
    let alive = vec![node("eu-1", "eu"), node("eu-2", "eu")];
    assert_eq!(
        a.claim_session("c/s", "eu", "eu-1", &alive).await.unwrap(),
        "eu-1"
    );
    // Redis loses everything: the node that has the session claims it again on renewal,
    // and another node cannot renew what it does not hold.
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
    assert_eq!(a.session_node("c/s", "eu").await.unwrap(), None);
    assert!(a.renew_session("c/s", "eu", "eu-1").await.unwrap());
    assert!(!b.renew_session("c/s", "eu", "eu-2").await.unwrap());
    assert_eq!(
        b.session_node("c/s", "eu").await.unwrap(),
        Some("eu-1".to_string())
    );
    // And its start time, as it had it.
    a.renew_started("c/s", 1000).await.unwrap();
    assert_eq!(b.session_started("c/s", 2000).await.unwrap(), 1000);
}

/// How many times Redis ran `command` so far (INFO commandstats).
async fn redis_calls(url: &str, command: &str) -> u64 {
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut con)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn watching_many_nodes_reads_their_records_only_when_the_set_changes() {
    let redis = Redis::start("watch");
    let (dir, _) = Directory::connect(&redis.url()).await.unwrap();
    let nodes: Vec<NodeInfo> = (0..50).map(|i| node(&format!("eu-{i}"), "eu")).collect();
    let beat_all = |dir: Directory, nodes: Vec<NodeInfo>| {
        tokio::spawn(async move {
            loop {
                for n in &nodes {
                    dir.register(n).await.unwrap();
                }
                tokio::time::sleep(HEARTBEAT).await;
            }
        })
    };
    let beating = beat_all(dir.clone(), nodes[1..].to_vec());
    let first_node = beat_all(dir.clone(), nodes[..1].to_vec());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut watching = signalling::cluster::node::watch(dir.clone(), "eu-1");
    let first = tokio::time::timeout(Duration::from_secs(3), watching.recv())
        .await
        .unwrap();
    assert!(matches!(first, Some(NodeWatch::Live(ref l)) if l.len() == 50));
    // (For its first second, a watcher reads at every look: Redis may have restarted empty.)
    tokio::time::sleep(signalling::cluster::node::REREGISTER_GRACE + Duration::from_millis(500))
        .await;
    // 2 s of looks, 8 of them, with the 50 beating: not one read of the records.
    let reads = redis_calls(&redis.url(), "hmget").await;
    let looks = redis_calls(&redis.url(), "get").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reads = redis_calls(&redis.url(), "hmget").await - reads;
    let looks = (redis_calls(&redis.url(), "get").await - looks) / 2;
    // A node stops: the records are read again, once, and it is gone.
    first_node.abort();
    let stopped = Instant::now();
    let before = redis_calls(&redis.url(), "hmget").await;
    let gone = loop {
        match tokio::time::timeout(Duration::from_secs(3), watching.recv()).await {
            Ok(Some(NodeWatch::Gone(id))) => break id,
            Ok(Some(_)) => {}
            other => panic!("no node gone: {other:?}"),
        }
    };
    let gone_after = stopped.elapsed();
    let reread = redis_calls(&redis.url(), "hmget").await - before;
    println!(
        "50 nodes beating: {looks} looks in 2 s read the records {reads} times; {gone} stopped, seen gone {gone_after:?} later, {reread} read"
    );
    assert_eq!(reads, 0);
    assert!(looks >= 6, "{looks} looks");
    assert_eq!(gone, "eu-0");
    assert_eq!(reread, 1);
    beating.abort();
}

/// Beat for `n` until aborted, as a running node does.
fn beat(d: Directory, n: NodeInfo) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            d.register(&n).await.unwrap();
            tokio::time::sleep(HEARTBEAT).await;
        }
    })
}

#[tokio::test]
async fn a_node_that_restarts_at_once_under_its_id_is_seen_gone_and_back() {
    let redis = Redis::start("restart");
    let (dir, _) = Directory::connect(&redis.url()).await.unwrap();
    let mut watching = signalling::cluster::node::watch(dir.clone(), "eu-1");
    let _living = beat(dir.clone(), node("eu-1", "eu"));
    let first_run = beat(dir.clone(), node("eu-2", "eu"));
    // Both seen alive.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watching.recv()).await {
            Ok(Some(NodeWatch::Live(nodes))) if nodes.len() == 2 => break,
            Ok(Some(_)) => {}
            _ => panic!("both nodes not seen alive"),
        }
    }
    // eu-2 is killed and starts again at once, well inside its record's time to live: its
    // sessions, participants and feeds died with the first run, and the others must know.
    first_run.abort();
    let killed = Instant::now();
    let (restarted, _) = Directory::connect(&redis.url()).await.unwrap();
    let second_run = tokio::spawn(async move {
        signalling::cluster::node::take_id(&restarted, "eu-2")
            .await
            .unwrap();
        let waited = killed.elapsed();
        (waited, beat(restarted, node("eu-2", "eu")))
    });
    let mut gone = None;
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watching.recv()).await {
            Ok(Some(NodeWatch::Gone(id))) => {
                assert_eq!(id, "eu-2");
                gone = Some(killed.elapsed());
            }
            Ok(Some(NodeWatch::Live(nodes))) if nodes.len() == 2 && gone.is_some() => break,
            Ok(Some(_)) => {}
            _ => panic!("eu-2's restart not seen: gone {gone:?}"),
        }
    }
    let back = killed.elapsed();
    let (waited, _beating) = second_run.await.unwrap();
    println!("eu-2 restarted: it waited {waited:?} for its old record to lapse, seen gone {gone:?} and back {back:?} after the kill");
    assert!(gone.unwrap() < Duration::from_secs(2));
    assert!(waited < NODE_TTL + Duration::from_secs(1), "{waited:?}");

    // A second process under a live node's id is refused: the record goes on being renewed.
    let (duplicate, _) = Directory::connect(&redis.url()).await.unwrap();
    let refused = signalling::cluster::node::take_id(&duplicate, "eu-1").await;
    assert!(
        matches!(refused, Err(signalling::cluster::ClusterError::NodeIdInUse(ref id)) if id == "eu-1"),
        "{refused:?}"
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Happened {
    Joined(String),
}

/// The next event from another node, within 5 s.
async fn next(
    events: &Events,
    pushed: &mut tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
) -> signalling::cluster::events::Envelope<Happened> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let push = tokio::time::timeout(left, pushed.recv())
            .await
            .expect("an event in time")
            .expect("connection open");
        if let Some(e) = events.read::<Happened>(push) {
            return e.unwrap();
        }
    }
}

#[tokio::test]
async fn events_cross_instances_and_keep_crossing_after_redis_restarts() {
    let mut redis = Redis::start("events");
    let (a, mut pushed) = Directory::connect(&redis.url()).await.unwrap();
    let (b, _) = Directory::connect(&redis.url()).await.unwrap();
    let at_a = Events::new(a.clone(), "eu-1");
    let from_b = Events::new(b.clone(), "eu-2");
    at_a.follow("c/room").await.unwrap();

    // Its own events are skipped, the other instance's arrive.
    at_a.publish("c/room", Happened::Joined("self".into()))
        .await
        .unwrap();
    from_b
        .publish("c/room", Happened::Joined("bob".into()))
        .await
        .unwrap();
    let e = next(&at_a, &mut pushed).await;
    assert_eq!(
        (e.from.as_str(), e.event),
        ("eu-2", Happened::Joined("bob".into()))
    );

    // Redis restarts empty: both instances reconnect; A follows the session again by itself,
    // and a heartbeat registers the node again.
    redis.stop();
    let down = Instant::now();
    redis.run();
    let mut sent = false;
    let mut registered = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(sent && registered) {
        assert!(
            Instant::now() < deadline,
            "sent {sent}, registered {registered}"
        );
        if !registered {
            registered = a.register(&node("eu-1", "eu")).await.is_ok();
        }
        if !sent {
            // Published before A's connection subscribed again, it would be lost: try until
            // A's channel has a subscriber.
            let mut con = redis::Client::open(redis.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let subscribers: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("webrtcai:events:c/room")
                .query_async(&mut con)
                .await
                .unwrap();
            if subscribers.first().is_some_and(|s| s.1 > 0) {
                from_b
                    .publish("c/room", Happened::Joined("carol".into()))
                    .await
                    .unwrap();
                sent = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = next(&at_a, &mut pushed).await;
    assert_eq!(e.event, Happened::Joined("carol".into()));
    println!(
        "events crossed again {:?} after Redis went down",
        down.elapsed()
    );
    assert_eq!(a.nodes().await.unwrap().len(), 1);
}
