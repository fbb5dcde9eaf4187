// Two nodes of a cluster across an emulated backbone, in three namespaces: node A and alice's
// Chromium in the test's namespace; node B and bob's Chromium in a namespace of their own,
// joined to it by the link emulator with 40 ms each way and 1% loss; Redis in a third, joined
// to the test's namespace by a veth pair (node B reaches it across the backbone, through node
// A's namespace). Alice and bob join one session, each through the SDK on their own node, and
// decode each other's video, which crosses the trunk (QUIC over the impaired link), once
// however many subscribe on node B; losses on the trunk are repaired on the trunk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying, startServer, freePort, scrape } from './harness.mjs';
import { createLink, createVethNamespace, startLinkServer, launchBehind, SERVER_HOST } from './link.mjs';
import { clusterDir, trunks, packetsSent } from './cluster.mjs';
import { join } from 'node:path';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';

const root = join(import.meta.dirname, '..', '..');
const bin = process.env.WEBRTCAI_BIN || join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'debug', 'webrtcai');
const BACKBONE = { delay_ms: 40, loss: 0.01 };

test('pages on nodes 80 ms apart with 1% loss decode each other across the trunk', async () => {
  const open = [];
  try {
    // Redis in a namespace of its own; node B's namespace routes to it through the backbone.
    const redisNs = createVethNamespace();
    open.push(redisNs);
    const link = await createLink({ up: BACKBONE, down: BACKBONE, seed: 7, routes: [`${redisNs.address}/32`] });
    open.push(link);
    const redisPort = 20000 + Math.floor(Math.random() * 10000);
    const redisProc = redisNs.spawn('redis-server', ['--port', String(redisPort), '--bind', redisNs.address, '--protected-mode', 'no', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    open.push({ close: async () => redisProc.kill('SIGKILL') });
    const redisUrl = `redis://${redisNs.address}:${redisPort}`;
    await new Promise((r) => setTimeout(r, 300));
    const dir = clusterDir(['a', 'b']);
    // One account database and a key for pages of both nodes.
    const db = join(mkdtempSync(join(tmpdir(), 'webrtcai-db-')), 'accounts.db');
    const admin = (...args) => execFileSync(bin, ['--db', db, ...args], { env: { ...process.env, RUST_LOG: 'error' } }).toString();
    const cid = JSON.parse(admin('client', 'create', '--name', 'cluster')).cid;
    const key = JSON.parse(admin('key', 'create', '--cid', cid, '--domain', SERVER_HOST, '--domain', link.address)).key.key_id;
    const cluster = (id, region, host) => ['--node-id', id, '--region', region, '--cluster-dir', dir, '--edge-bind', `${host}:0`, '--admin-secret', 'cluster-test-secret'];

    const metricsPort = await freePort();
    const nodeA = await startLinkServer({ db, key, cid, args: ['--redis', redisUrl, ...cluster('a', 'eu', SERVER_HOST), '--metrics-http', `127.0.0.1:${metricsPort}`] });
    open.push({ close: async () => nodeA.stop() });
    const nodeB = await startServer({
      db, key, cid,
      host: link.address,
      port: 20000 + Math.floor(Math.random() * 10000),
      wrapper: ['ip', 'netns', 'exec', link.ns],
      args: ['--redis', redisUrl, ...cluster('b', 'us', link.address)],
    });
    open.push({ close: async () => nodeB.stop() });

    const here = await launch({ args: [`--unsafely-treat-insecure-origin-as-secure=${nodeA.base}`] });
    open.push(here);
    const there = await launchBehind(link, nodeB);
    open.push(there);
    const alice = await joinPage(here.context, nodeA, 'backbone-1', 'alice');
    const bob = await joinPage(there.context, nodeB, 'backbone-1', 'bob');
    assert.equal((await waitEvent(alice, 'participant-joined')).name, 'bob');
    const feedA = await publishWebcam(alice);
    const feedB = await publishWebcam(bob);
    assert.equal((await waitEvent(bob, 'feed-published', 15000)).feedId, feedA);
    assert.equal((await waitEvent(alice, 'feed-published', 15000)).feedId, feedB);
    const started = Date.now();
    const sa = await expectPlaying(alice, await subscribe(alice, feedB), 20000);
    const sb = await expectPlaying(bob, await subscribe(bob, feedA), 20000);
    const firstFrames = Date.now() - started;
    // A second subscriber of alice's feed on node B: still one copy on the trunk.
    const carol = await joinPage(there.context, nodeB, 'backbone-1', 'carol');
    await expectPlaying(carol, await subscribe(carol, feedA), 20000);
    await new Promise((r) => setTimeout(r, 2000));
    const before = (await trunks(nodeA)).find((x) => x.peer === 'b');
    const sentBefore = await packetsSent(alice);
    await new Promise((r) => setTimeout(r, 3000));
    const t = (await trunks(nodeA)).find((x) => x.peer === 'b');
    const sent = (await packetsSent(alice)) - sentBefore;
    const crossed = t.tunnel.datagrams_out - before.tunnel.datagrams_out;
    const counters = await link.stats();
    console.log(`across 40 ms + 1% loss each way: both decoding ${firstFrames} ms after subscribing ` +
      `(alice ${sa.width} wide, bob ${sb.width} wide); trunk rtt ${t.rtt_ms.toFixed(1)} ms, largest datagram ${t.max_datagram} B, ` +
      `a→b ${t.tunnel.datagrams_out} datagrams (${t.tunnel.resent} resent on NACK), b→a ${t.tunnel.datagrams_in} received ` +
      `(${t.tunnel.nacked} asked again); QUIC lost ${t.lost_packets} packets; the link dropped ${counters.up.packets_dropped_loss} up, ${counters.down.packets_dropped_loss} down`);
    console.log(`in 3 s alice sent ${sent} packets and ${crossed} datagrams crossed a→b for bob and carol on node B (${(crossed / sent).toFixed(3)} per packet)`);
    assert.ok(sa.width > 0 && sb.width > 0);
    // Node A's /metrics reports the trunk: up, bytes sent to b, its RTT.
    const { text: metrics, sample } = await scrape(metricsPort);
    assert.equal(sample('webrtcai_edge_trunks'), 1, metrics);
    assert.ok(sample('webrtcai_edge_sent_bytes_total\\{peer="b"\\}') > 100000, metrics);
    assert.ok(sample('webrtcai_edge_rtt_seconds\\{peer="b"\\}') > 0.07, metrics);
    // Node B is Redis's client from across the backbone.
    const clients = execFileSync('redis-cli', ['-h', redisNs.address, '-p', String(redisPort), 'client', 'list']).toString();
    assert.match(clients, new RegExp(`addr=${link.address.replaceAll('.', '\\.')}:`), clients);
    // One copy for two subscribers: near 1 (NACKed resends add about the loss), never near 2.
    assert.ok(crossed / sent > 0.5 && crossed / sent < 1.2, `${crossed} datagrams for ${sent} packets`);
    assert.ok(t.rtt_ms > 70, `rtt ${t.rtt_ms}`);
    assert.ok(t.max_datagram >= 1300, `datagrams of ${t.max_datagram} B`);
  } finally {
    for (const o of open.reverse()) await o.close();
  }
});
