// Every publish and subscribe settles: it completes, or rejects with a WebRTCaiError whose
// code says why (the feed went away, the server refused the answer, nothing happened in time).
// Negotiation is held open through the browser's own API (setRemoteDescription waits), which
// is what a slow or stuck browser or server looks like to the SDK.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, subscribe, expectPlaying, holdOffers } from './harness.mjs';

/** Start `call` (a function source run in the page, returning a promise) and report how it
 * settled within `ms`: { ok }, { code, name, isError }, or { pending: true }. */
async function settled(page, call, ms) {
  return page.evaluate(
    async ({ call, ms }) => {
      const { WebRTCaiError } = await import('/sdk/webrtcai.js');
      const started = Date.now();
      const outcome = (0, eval)(call)().then(
        () => ({ ok: true }),
        (e) => ({ code: e.code, name: e.name, message: e.message, isError: e instanceof WebRTCaiError }),
      );
      const pending = new Promise((r) => setTimeout(() => r({ pending: true }), ms));
      return { ...(await Promise.race([outcome, pending])), elapsed: Date.now() - started };
    },
    { call: call.toString(), ms },
  );
}

test('a subscribe whose feed is unpublished first rejects with feed_gone', { timeout: 60000 }, async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const alice = await joinPage(browser.context, server, 'settle-1', 'alice');
    const bob = await joinPage(browser.context, server, 'settle-1', 'bob');
    const feed = await publishWebcam(alice);
    await bob.waitForFunction((id) => window.session.feeds.has(id), feed);
    await holdOffers(bob);
    await bob.evaluate((feed) => {
      const v = document.createElement('video');
      v.id = 'held';
      document.body.append(v);
      window.subscribing = window.session.subscribe(feed, v);
      window.subscribing.catch(() => {});
    }, feed);
    // The server has answered the subscribe and sent its offer; the browser is still on it.
    await bob.waitForFunction(() => window.heldOffers > 0);
    await alice.evaluate((feed) => window.session.unpublish(feed), feed);
    const r = await settled(bob, () => window.subscribing, 5000);
    assert.deepEqual([r.code, r.isError], ['feed_gone', true], JSON.stringify(r));
    assert.equal(await bob.evaluate((feed) => window.session.feeds.has(feed), feed), false);
  } finally {
    await browser.close();
    server.stop();
  }
});

test('publish and subscribe reject with timeout when negotiation does not complete', { timeout: 60000 }, async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const alice = await joinPage(browser.context, server, 'settle-2', 'alice');
    const bob = await joinPage(browser.context, server, 'settle-2', 'bob', { timeoutMs: 2000 });
    const feed = await publishWebcam(alice);
    await bob.waitForFunction((id) => window.session.feeds.has(id), feed);
    await holdOffers(bob);

    const sub = await settled(
      bob,
      () => {
        const v = document.createElement('video');
        document.body.append(v);
        return window.session.subscribe(window.session.feeds.keys().next().value, v);
      },
      8000,
    );
    assert.deepEqual([sub.code, sub.isError], ['timeout', true], JSON.stringify(sub));
    assert.ok(sub.elapsed >= 1900 && sub.elapsed < 6000, JSON.stringify(sub));

    const pub = await settled(
      bob,
      () => {
        const v = document.createElement('video');
        v.id = 'mine';
        document.body.append(v);
        window.mine = v;
        return window.session.publish({ source: 'webcam', target: v });
      },
      8000,
    );
    assert.deepEqual([pub.code, pub.isError], ['timeout', true], JSON.stringify(pub));
    // A publish that failed gives the camera back.
    assert.equal(await bob.evaluate(() => window.mine.srcObject), null);

    // Nothing half-done was left on the server: once the browser catches up, alice never
    // hears of bob's feed, and bob can subscribe again.
    await bob.evaluate(() => window.releaseOffers());
    await new Promise((r) => setTimeout(r, 1500));
    const published = await alice.evaluate(() => window.events.filter((e) => e.ev === 'feed-published').length);
    assert.equal(published, 0);
    const video = await subscribe(bob, feed);
    await expectPlaying(bob, video);
  } finally {
    await browser.close();
    server.stop();
  }
});

test('an answer the server refuses fails the publish with its code', { timeout: 60000 }, async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const alice = await joinPage(browser.context, server, 'settle-3', 'alice');
    // The browser's answer loses its DTLS fingerprint on the way: the server must refuse it.
    await alice.evaluate(() => {
      const original = RTCPeerConnection.prototype.createAnswer;
      window.spoilAnswers = true;
      RTCPeerConnection.prototype.createAnswer = async function (...args) {
        const answer = await original.apply(this, args);
        if (!window.spoilAnswers) return answer;
        return { type: answer.type, sdp: answer.sdp.replace(/^a=fingerprint:.*\r\n/gm, '') };
      };
    });
    const r = await settled(
      alice,
      () => {
        const v = document.createElement('video');
        document.body.append(v);
        return window.session.publish({ source: 'webcam', target: v });
      },
      8000,
    );
    assert.deepEqual([r.code, r.isError], ['invalid_sdp', true], JSON.stringify(r));
    assert.ok(r.elapsed < 5000, JSON.stringify(r));
    // The next publish, with a good answer, goes through.
    await alice.evaluate(() => (window.spoilAnswers = false));
    await publishWebcam(alice);
  } finally {
    await browser.close();
    server.stop();
  }
});

test('after the only subscribed feed goes away, a new subscription completes', { timeout: 60000 }, async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const alice = await joinPage(browser.context, server, 'settle-4', 'alice');
    const bob = await joinPage(browser.context, server, 'settle-4', 'bob', { timeoutMs: 5000 });
    const first = await publishWebcam(alice);
    await bob.waitForFunction((id) => window.session.feeds.has(id), first);
    await expectPlaying(bob, await subscribe(bob, first));
    await alice.evaluate((id) => window.session.unpublish(id), first);
    await bob.waitForFunction((id) => !window.session.feeds.has(id), first);
    const second = await alice.evaluate(async () => {
      const v = document.createElement('video');
      document.body.append(v);
      return (await window.session.publish({ source: 'screen', target: v })).feedId;
    });
    await bob.waitForFunction((id) => window.session.feeds.has(id), second);
    await expectPlaying(bob, await subscribe(bob, second));
  } finally {
    await browser.close();
    server.stop();
  }
});
