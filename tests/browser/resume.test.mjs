// What happened in the session while a participant's websocket was down reaches it after the
// resume: the SDK compares the server's snapshot with what it knew and emits the events it
// missed, so session.participants and session.feeds are right again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying, startProxy } from './harness.mjs';

test('resume: leaves, unpublishes, joins and publishes during the outage are reconciled', { timeout: 60000 }, async () => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  const browser = await launch();
  try {
    const alice = await joinPage(browser.context, server, 'resume-1', 'alice');
    const carol = await joinPage(browser.context, server, 'resume-1', 'carol');
    const bob = await joinPage(browser.context, server, 'resume-1', 'bob', { url: proxy.url });
    const aliceUid = await alice.evaluate(() => window.session.uid);
    const carolUid = await carol.evaluate(() => window.session.uid);
    const aliceFeed = await publishWebcam(alice);
    await bob.waitForFunction((id) => window.session.feeds.has(id), aliceFeed);
    const aliceVideo = await subscribe(bob, aliceFeed);
    await expectPlaying(bob, aliceVideo);

    // Bob's websocket goes down (reset, and reconnects refused for now).
    proxy.down();
    await waitEvent(bob, 'reconnecting');
    const seenBefore = await bob.evaluate(() => window.events.length);

    // Meanwhile: alice leaves (her feed goes with her), carol shares her screen, dave joins.
    await alice.evaluate(() => window.session.leave());
    await carol.waitForFunction((uid) => !window.session.participants.has(uid), aliceUid);
    const carolScreen = await carol.evaluate(async () => {
      const v = document.createElement('video');
      document.body.append(v);
      return (await window.session.publish({ source: 'screen', target: v })).feedId;
    });
    const dave = await joinPage(browser.context, server, 'resume-1', 'dave');
    const daveUid = await dave.evaluate(() => window.session.uid);

    proxy.up();
    await waitEvent(bob, 'reconnected', 20000);
    // The missed events come with the resume (allow a moment for their handlers).
    await new Promise((r) => setTimeout(r, 500));
    const missed = await bob.evaluate((n) => window.events.slice(n).map((e) => ({ ev: e.ev, ...e.v })), seenBefore);
    const has = (ev, field, value) => missed.some((e) => e.ev === ev && e[field] === value);
    assert.ok(has('participant-left', 'uid', aliceUid), JSON.stringify(missed));
    assert.ok(has('feed-unpublished', 'feedId', aliceFeed), JSON.stringify(missed));
    assert.ok(has('participant-joined', 'uid', daveUid), JSON.stringify(missed));
    assert.equal(missed.find((e) => e.ev === 'participant-joined')?.name, 'dave');
    assert.ok(has('feed-published', 'feedId', carolScreen), JSON.stringify(missed));
    // Nothing invented: carol neither left nor joined again.
    assert.ok(!missed.some((e) => e.uid === carolUid && e.ev.startsWith('participant-')), JSON.stringify(missed));

    const state = await bob.evaluate(
      ({ aliceFeed, aliceVideo }) => ({
        participants: [...window.session.participants.keys()],
        feeds: [...window.session.feeds.keys()],
        aliceVideoCleared: document.getElementById(aliceVideo).srcObject === null,
      }),
      { aliceFeed, aliceVideo },
    );
    assert.deepEqual(new Set(state.participants), new Set([carolUid, daveUid]));
    assert.deepEqual(state.feeds, [carolScreen]);
    assert.equal(state.aliceVideoCleared, true);

    // The feed learnt from the snapshot is one bob can subscribe to.
    const screenVideo = await subscribe(bob, carolScreen);
    await expectPlaying(bob, screenVideo);
  } finally {
    await browser.close();
    proxy.close();
    server.stop();
  }
});
