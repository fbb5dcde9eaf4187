// A websocket that goes silent without closing (its network went away: bytes held, no reset,
// no close) is noticed by the SDK's own heartbeat: the page cannot see the server's websocket
// pings, so it pings with requests and takes 5 s without any message for a lost connection.
// It then reconnects and resumes as after a reset: media keeps flowing, nobody sees a leave,
// and requests work again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying, startProxy } from './harness.mjs';

const count = (page, name) => page.evaluate((name) => window.events.filter((e) => e.ev === name).length, name);

test('heartbeat: a black-holed websocket is noticed within 7 s and the session resumes', { timeout: 90000 }, async (t) => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  const browser = await launch();
  try {
    const alice = await joinPage(browser.context, server, 'heartbeat-1', 'alice');
    const bob = await joinPage(browser.context, server, 'heartbeat-1', 'bob', { url: proxy.url });
    const feedA = await publishWebcam(alice);
    const feedB = await publishWebcam(bob);
    await bob.waitForFunction((id) => window.session.feeds.has(id), feedA);
    await alice.waitForFunction((id) => window.session.feeds.has(id), feedB);
    const videoAtBob = await subscribe(bob, feedA);
    const videoAtAlice = await subscribe(alice, feedB);
    await expectPlaying(bob, videoAtBob);
    await expectPlaying(alice, videoAtAlice);

    // A healthy connection with nothing to say is kept: longer than the silence limit with no
    // request from the page, and neither page thinks its connection lost.
    await new Promise((r) => setTimeout(r, 6000));
    assert.equal(await count(bob, 'reconnecting'), 0);
    assert.equal(await count(alice, 'reconnecting'), 0);

    proxy.blackhole();
    const cut = Date.now();
    await waitEvent(bob, 'reconnecting', 10000);
    const noticed = Date.now() - cut;
    t.diagnostic(`reconnecting ${noticed} ms after the black hole`);
    assert.ok(noticed <= 7000, `reconnecting came ${noticed} ms after the black hole`);
    await waitEvent(bob, 'reconnected', 15000);
    assert.equal(await count(bob, 'reconnecting'), 1);
    assert.equal(await count(bob, 'disconnected'), 0);

    // Media never depended on the websocket; both sides still decode.
    await expectPlaying(bob, videoAtBob);
    await expectPlaying(alice, videoAtAlice);
    assert.equal(await count(alice, 'participant-left'), 0);
    assert.equal(await count(alice, 'feed-unpublished'), 0);

    // Requests work on the new connection: bob shares his screen, alice plays it, bob stops.
    const screen = await bob.evaluate(async () => {
      const v = document.createElement('video');
      document.body.append(v);
      return (await window.session.publish({ source: 'screen', target: v })).feedId;
    });
    await alice.waitForFunction((id) => window.session.feeds.has(id), screen);
    const screenAtAlice = await subscribe(alice, screen);
    await expectPlaying(alice, screenAtAlice);
    await bob.evaluate((id) => window.session.unpublish(id), screen);
    await alice.waitForFunction((id) => window.events.some((e) => e.ev === 'feed-unpublished' && e.v.feedId === id), screen);

    // Alice's connection was healthy throughout; bob's lost connection was the only one.
    assert.equal(await count(alice, 'reconnecting'), 0);
    assert.equal(await count(alice, 'participant-left'), 0);
    assert.equal(await count(bob, 'reconnecting'), 1);
  } finally {
    await browser.close();
    proxy.close();
    server.stop();
  }
});

test('heartbeat: a leave on a black-holed websocket ends once the connection counts as lost, without reconnecting', { timeout: 60000 }, async () => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  const browser = await launch();
  try {
    const alice = await joinPage(browser.context, server, 'heartbeat-2', 'alice');
    const bob = await joinPage(browser.context, server, 'heartbeat-2', 'bob', { url: proxy.url });
    const bobUid = await bob.evaluate(() => window.session.uid);
    await publishWebcam(bob);
    assert.equal(proxy.accepted, 1);

    proxy.blackhole();
    // The leave request goes into the black hole; the heartbeat ends the wait (a request
    // alone would wait for its 15 s timeout), and the page is not told of a reconnect.
    const elapsed = await bob.evaluate(async () => {
      const started = Date.now();
      await window.session.leave();
      return Date.now() - started;
    });
    assert.ok(elapsed <= 7000, `leave took ${elapsed} ms`);
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(await count(bob, 'reconnecting'), 0);
    assert.equal(proxy.accepted, 1, 'the SDK connected again after leaving');
    // The server never heard the leave: bob goes when its resume window (20 s) ends.
    await alice.waitForFunction((uid) => !window.session.participants.has(uid), bobUid, { timeout: 30000 });
  } finally {
    await browser.close();
    proxy.close();
    server.stop();
  }
});
