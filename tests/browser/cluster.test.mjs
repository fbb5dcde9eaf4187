// Two nodes of a cluster (each a webrtcai process: signalling, relay and edge) sharing a
// Redis: a page on each joins one session through the SDK; each sees the other join and
// publish, and decodes the other's video, which crosses the trunk between the nodes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying } from './harness.mjs';
import { startRedis, clusterDir, startNode, trunks, packetsSent } from './cluster.mjs';

test('pages on two nodes join one session and decode each other across the trunk', async () => {
  const redis = await startRedis();
  const dir = clusterDir(['a', 'b']);
  const nodeA = await startNode(redis, dir, 'a', 'eu');
  const nodeB = await startNode(redis, dir, 'b', 'us', nodeA);
  const browser = await launch();
  try {
    const alice = await joinPage(browser.context, nodeA, 'multi-1', 'alice');
    const bob = await joinPage(browser.context, nodeB, 'multi-1', 'bob');
    const joined = await waitEvent(alice, 'participant-joined');
    assert.equal(joined.name, 'bob');
    const seen = await bob.evaluate(() => [...window.session.participants.values()].map((p) => p.name));
    assert.deepEqual(seen, ['alice'], 'bob sees alice, who joined on the other node');

    const feedA = await publishWebcam(alice);
    const feedB = await publishWebcam(bob);
    assert.equal((await waitEvent(bob, 'feed-published')).feedId, feedA);
    assert.equal((await waitEvent(alice, 'feed-published')).feedId, feedB);
    const videoA = await subscribe(alice, feedB);
    const videoB = await subscribe(bob, feedA);
    const sa = await expectPlaying(alice, videoA);
    const sb = await expectPlaying(bob, videoB);
    console.log(`alice (node a) decodes bob's video ${sa.width} wide (${sa.framesDecoded} frames), bob (node b) alice's ${sb.width} wide (${sb.framesDecoded} frames)`);
    assert.ok(sa.width > 0 && sb.width > 0);

    // A second subscriber on node b: alice's feed still crosses the trunk once.
    const carol = await joinPage(browser.context, nodeB, 'multi-1', 'carol');
    const videoC = await subscribe(carol, feedA);
    await expectPlaying(carol, videoC);
    const before = (await trunks(nodeA)).find((t) => t.peer === 'b');
    const sentBefore = await packetsSent(alice);
    await new Promise((r) => setTimeout(r, 3000));
    const after = (await trunks(nodeA)).find((t) => t.peer === 'b');
    const sentAfter = await packetsSent(alice);
    const crossed = after.tunnel.datagrams_out - before.tunnel.datagrams_out;
    const sent = sentAfter - sentBefore;
    const perPacket = crossed / sent;
    console.log(`in 3 s alice sent ${sent} packets; ${crossed} datagrams crossed the trunk a→b for bob and carol ` +
      `(${perPacket.toFixed(3)} per packet; resent ${after.tunnel.resent}, largest datagram ${after.max_datagram} B, rtt ${after.rtt_ms.toFixed(2)} ms)`);
    // Two subscribers on b, one copy on the trunk: near 1, never near 2. Below 1 by the
    // packets the relay does not forward (Chromium's padding probes count as sent: 0.73-0.98
    // in runs here).
    assert.ok(perPacket > 0.5 && perPacket < 1.2, `${perPacket} datagrams per packet`);

    await bob.evaluate(() => window.session.leave());
    const left = await waitEvent(alice, 'participant-left');
    assert.ok(left.uid);
    assert.equal((await waitEvent(alice, 'feed-unpublished')).feedId, feedB);
  } finally {
    await browser.close();
    nodeA.stop();
    nodeB.stop();
    redis.stop();
  }
});

test('a node that stops: its participants are reconnecting for the others within 2 s, not gone', async () => {
  const redis = await startRedis();
  const dir = clusterDir(['a', 'b']);
  const nodeA = await startNode(redis, dir, 'a', 'eu');
  const nodeB = await startNode(redis, dir, 'b', 'eu', nodeA);
  const browser = await launch();
  try {
    const alice = await joinPage(browser.context, nodeA, 'multi-2', 'alice');
    const bob = await joinPage(browser.context, nodeB, 'multi-2', 'bob');
    const bobUid = await bob.evaluate(() => window.session.uid);
    await waitEvent(alice, 'participant-joined');
    const feedB = await publishWebcam(bob);
    assert.equal((await waitEvent(alice, 'feed-published')).feedId, feedB);
    await expectPlaying(alice, await subscribe(alice, feedB));

    const killed = Date.now();
    nodeB.stop();
    const reconnecting = await waitEvent(alice, 'participant-reconnecting', 5000);
    const noticed = Date.now() - killed;
    assert.equal(reconnecting.uid, bobUid);
    const gone = await waitEvent(alice, 'feed-unpublished', 5000);
    assert.equal(gone.feedId, feedB);
    const state = await alice.evaluate((uid) => ({
      participant: window.session.participants.get(uid),
      left: window.events.some((e) => e.ev === 'participant-left'),
    }), bobUid);
    console.log(`node b killed: alice saw bob reconnecting after ${noticed} ms, and his feed unpublished`);
    assert.ok(noticed < 2500, `${noticed} ms`);
    assert.equal(state.left, false, 'a reconnect, not a leave');
    assert.equal(state.participant.reconnecting, true);
  } finally {
    await browser.close();
    nodeA.stop();
    nodeB.stop();
    redis.stop();
  }
});
