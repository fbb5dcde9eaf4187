//! Another process holding the account database's write lock (the CLI may run beside the
//! server) stalls nothing: a call in progress keeps getting its replies, new joins with a key
//! already used are accepted, and usage that could not be written meanwhile is written once
//! the lock is gone.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const HELD: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_elsewhere_stalls_no_call() {
    let srv = server("db-lock", Default::default()).await;
    let key = srv.key.info.key_id.clone();
    let mut alice = connect(&srv.url).await;
    join(&mut alice, &key, "locked", "alice").await;

    // Another connection to the file takes the write lock and keeps it for 3 s; the server
    // flushes usage every second meanwhile.
    let path = srv.store.path().to_owned();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE; UPDATE clients SET name = name;")
            .unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(HELD);
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let started = Instant::now();

    let mut slowest = Duration::ZERO;
    let mut joins = 0;
    let mut id = 10;
    while started.elapsed() < HELD - Duration::from_millis(300) {
        // The call goes on: a request and its reply.
        id += 1;
        let asked = Instant::now();
        send(
            &mut alice,
            json!({"type":"subscribe","id":id,"feed_id":"f-none"}),
        )
        .await;
        let (r, _) = reply(&mut alice).await;
        assert_eq!(r["error"]["code"], "no_such_feed", "{r}");
        slowest = slowest.max(asked.elapsed());
        // Someone else connects and joins with the same key.
        if id % 5 == 0 {
            let asked = Instant::now();
            let mut ws = connect(&srv.url).await;
            join(&mut ws, &key, "locked", &format!("guest-{id}")).await;
            slowest = slowest.max(asked.elapsed());
            joins += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    holder.join().unwrap();
    println!(
        "{joins} joins and {} requests while locked; slowest reply {slowest:?}",
        id - 10
    );
    assert!(joins >= 4, "{joins} joins");
    // SQLite's busy timeout is 2 s: a hub waiting on the database would show it here.
    assert!(
        slowest < Duration::from_millis(1000),
        "a reply took {slowest:?} while the database was locked"
    );

    // What could not be written during the lock is written after it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let report = srv.store.usage(&srv.key.info.cid, 0, i64::MAX).unwrap();
        if report
            .sessions
            .first()
            .is_some_and(|s| s.participant_minutes * 60.0 >= 3.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "usage not written: {report:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
