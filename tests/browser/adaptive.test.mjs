// Adaptive stream and pausing: the SDK tells the server how each subscribed video is shown. A
// subscriber whose element is 320x180 receives the 320x180 layer of a simulcast webcam on a
// link that would carry more; hiding the element pauses its video (`feed-paused`, nothing more
// decoded) and showing it resumes it. A link too narrow for even the lowest layer pauses the
// video too (reason `bandwidth`) while audio goes on, until the link widens. Dynacast: layers
// no subscriber receives are turned off at the publisher (its getStats() shows the encodings
// inactive) and on again when a subscriber's element grows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, until, inboundVideo as receiving, subscribeInto } from './harness.mjs';
import { startLinkServer, linkedBrowsers } from './link.mjs';

/** A downlink that carries audio but not audio and the lowest layer (about 100 kbit/s). */
const NARROW_KBIT = 80;
/** How long after the link widens the video may take to resume. */
const RESUME_MS = 20_000;

/** The events named `name` the page saw so far. */
async function seen(page, name) {
  return page.evaluate((name) => window.events.filter((e) => e.ev === name).map((e) => e.v), name);
}

test('a 320x180 element gets the 320x180 layer; hidden, its video is paused, then resumed', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const pub = await joinPage(browser.context, server, 'adaptive-1', 'pub');
    const small = await joinPage(browser.context, server, 'adaptive-1', 'small');
    const feed = await publishWebcam(pub);
    const id = await subscribeInto(small, feed, { width: '320px', height: '180px' });
    // On the 320x180 layer, and staying there (the link would carry the top one).
    const low = await until(() => receiving(small), (r) => r.width === 320 && r.framesDecoded > 30, 15_000);
    await new Promise((r) => setTimeout(r, 5000));
    const still = await receiving(small);
    console.log(`adaptive: 320x180 element ${JSON.stringify(low)} then ${JSON.stringify(still)}`);
    assert.equal(still.width, 320);
    assert.ok(still.framesDecoded > low.framesDecoded + 60, JSON.stringify(still));

    // Hidden: paused, for that reason, and nothing more arrives.
    await small.evaluate((id) => (document.getElementById(id).style.display = 'none'), id);
    await small.waitForFunction(() => window.events.some((e) => e.ev === 'feed-paused'), null, { timeout: 5000 });
    assert.deepEqual(await seen(small, 'feed-paused'), [{ feedId: feed, reason: 'hidden' }]);
    await new Promise((r) => setTimeout(r, 1000));
    const paused = await receiving(small);
    await new Promise((r) => setTimeout(r, 3000));
    const later = await receiving(small);
    console.log(`adaptive: hidden ${JSON.stringify(paused)} then ${JSON.stringify(later)}`);
    assert.equal(later.framesDecoded, paused.framesDecoded);
    // The page's own stats from the server say so too.
    const q = await small.evaluate(() => window.session.quality());
    console.log(`adaptive: quality while hidden ${JSON.stringify(q)}`);
    assert.deepEqual(
      q.subscriptions.map((s) => [s.feedId, s.layers, s.paused, s.pauses]),
      [[feed, 3, 'hidden', 1]],
    );
    assert.ok(later.bytesReceived - paused.bytesReceived < 20_000, `${later.bytesReceived - paused.bytesReceived} bytes while hidden`);

    // Shown again: resumed, and decoding within a few seconds.
    const shownAt = Date.now();
    await small.evaluate((id) => (document.getElementById(id).style.display = ''), id);
    await small.waitForFunction(() => window.events.some((e) => e.ev === 'feed-resumed'), null, { timeout: 5000 });
    const back = await until(() => receiving(small), (r) => r.framesDecoded > later.framesDecoded + 10, 5000);
    console.log(`adaptive: shown again, decoding after ${Date.now() - shownAt} ms: ${JSON.stringify(back)}`);
    assert.equal(back.width, 320);
    assert.deepEqual(await seen(small, 'feed-resumed'), [{ feedId: feed }]);
  } finally {
    await browser.close();
    server.stop();
  }
});

/** Bytes of audio and video a page received so far. */
async function received(page) {
  return page.evaluate(async () => {
    const out = { audio: 0, video: 0, framesDecoded: 0 };
    (await window.session.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp') out[s.kind] += s.bytesReceived;
      if (s.type === 'inbound-rtp' && s.kind === 'video') out.framesDecoded = s.framesDecoded ?? 0;
    });
    return out;
  });
}

test('a link too narrow for the lowest layer pauses the video, keeps the audio, and resumes when it widens', async () => {
  const server = await startLinkServer();
  const open = [];
  try {
    const { links, browsers } = await linkedBrowsers(server, [1, 2], open);
    const [pub, sub] = await Promise.all(browsers.map((b, i) => joinPage(b.context, server, 'adaptive-2', `p${i}`)));
    const feed = await publishWebcam(pub);
    await subscribeInto(sub, feed, {});
    await until(() => received(sub), (r) => r.framesDecoded > 30, 20_000);
    // Narrower than audio and the lowest layer together.
    await links[1].set({ down: { rate_kbit: NARROW_KBIT } });
    const cappedAt = Date.now();
    await sub.waitForFunction(() => window.events.some((e) => e.ev === 'feed-paused'), null, { timeout: 20_000 });
    console.log(`adaptive: paused ${Date.now() - cappedAt} ms after the cap`);
    assert.deepEqual(await seen(sub, 'feed-paused'), [{ feedId: feed, reason: 'bandwidth' }]);
    // Paused: the audio goes on, the video stops (what was queued drains first).
    await new Promise((r) => setTimeout(r, 3000));
    const a = await received(sub);
    await new Promise((r) => setTimeout(r, 5000));
    const b = await received(sub);
    console.log(`adaptive: over 5 s paused, audio ${b.audio - a.audio} B, video ${b.video - a.video} B (probes), frames decoded ${a.framesDecoded} then ${b.framesDecoded}`);
    assert.ok(b.audio - a.audio > 6_000, `audio ${b.audio - a.audio} B in 5 s`);
    assert.equal(b.framesDecoded, a.framesDecoded, 'no video frame while paused');
    const q = await sub.evaluate(() => window.session.quality());
    console.log(`adaptive: quality while paused ${JSON.stringify(q)}`);
    assert.equal(q.subscriptions[0].paused, 'bandwidth');
    assert.ok(q.estimateBps < NARROW_KBIT * 1000 * 2, `estimate ${q.estimateBps}`);
    // The cap lifted: resumed (not before), and decoding again.
    assert.deepEqual(await seen(sub, 'feed-resumed'), [], 'not resumed while the link is narrow');
    await links[1].set({ down: { rate_kbit: 0 } });
    const liftedAt = Date.now();
    await sub.waitForFunction(() => window.events.some((e) => e.ev === 'feed-resumed'), null, { timeout: RESUME_MS });
    const resumed = Date.now() - liftedAt;
    await until(() => received(sub), (r) => r.framesDecoded > b.framesDecoded + 30, 10_000);
    console.log(`adaptive: resumed ${resumed} ms after the cap was lifted, decoding after ${Date.now() - liftedAt} ms`);
  } finally {
    for (const x of open.reverse()) await x.close();
    server.stop();
  }
});

/** Whether each of the publisher's video encodings is active, by rid, as getStats() says. */
async function encodingsActive(page) {
  return page.evaluate(async () => {
    const out = {};
    (await window.session.pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video' && s.rid) {
        out[s.rid] = { active: s.active, width: s.frameWidth ?? 0, limitation: s.qualityLimitationReason };
      }
    });
    return out;
  });
}

// Video alone (no audio to bring feedback): the relay keeps looking, and probing, while the
// video is paused, so that it learns when the link widens.
test('video alone, paused on a link too narrow for it, resumes when the link widens', async () => {
  const server = await startLinkServer();
  const open = [];
  try {
    const { links, browsers } = await linkedBrowsers(server, [1, 2], open);
    const [pub, sub] = await Promise.all(browsers.map((b, i) => joinPage(b.context, server, 'adaptive-4', `p${i}`)));
    const feed = await pub.evaluate(async () => {
      const v = document.createElement('video');
      document.body.append(v);
      return (await window.session.publish({ source: 'webcam', audio: false, target: v })).feedId;
    });
    await subscribeInto(sub, feed, {});
    await until(() => received(sub), (r) => r.framesDecoded > 30, 20_000);
    await links[1].set({ down: { rate_kbit: NARROW_KBIT } });
    await sub.waitForFunction(() => window.events.some((e) => e.ev === 'feed-paused'), null, { timeout: 20_000 });
    assert.deepEqual(await seen(sub, 'feed-paused'), [{ feedId: feed, reason: 'bandwidth' }]);
    await new Promise((r) => setTimeout(r, 3000));
    const paused = await received(sub);
    assert.equal(paused.audio, 0, 'no audio');
    assert.deepEqual(await seen(sub, 'feed-resumed'), [], 'not resumed while the link is narrow');
    await links[1].set({ down: { rate_kbit: 0 } });
    const liftedAt = Date.now();
    await sub.waitForFunction(() => window.events.some((e) => e.ev === 'feed-resumed'), null, { timeout: RESUME_MS });
    const resumed = Date.now() - liftedAt;
    await until(() => received(sub), (r) => r.framesDecoded > paused.framesDecoded + 30, 10_000);
    console.log(`adaptive: video alone resumed ${resumed} ms after the cap was lifted, decoding after ${Date.now() - liftedAt} ms`);
  } finally {
    for (const x of open.reverse()) await x.close();
    server.stop();
  }
});

test('layers nobody receives are turned off at the publisher, and on again when a subscriber wants one', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const pub = await joinPage(browser.context, server, 'adaptive-3', 'pub');
    const small = await joinPage(browser.context, server, 'adaptive-3', 'small');
    const feed = await publishWebcam(pub);
    const id = await subscribeInto(small, feed, { width: '320px', height: '180px' });
    await until(() => receiving(small), (r) => r.width === 320 && r.framesDecoded > 30, 15_000);
    // Only the 320x180 layer is received: the publisher's other encodings go inactive.
    const start = Date.now();
    const off = await until(() => encodingsActive(pub), (e) => e.q?.active && e.h?.active === false && e.f?.active === false, 15_000);
    console.log(`adaptive: encodings ${JSON.stringify(off)} ${Date.now() - start} ms after the subscriber was on the low layer`);
    // The element grows to 1280x720: the top layer is turned on and received.
    const grownAt = Date.now();
    await small.evaluate((id) => Object.assign(document.getElementById(id).style, { width: '1280px', height: '720px' }), id);
    const on = await until(() => encodingsActive(pub), (e) => e.f?.active, 10_000);
    const big = await until(() => receiving(small), (r) => r.width === 1280, 20_000,
      async () => ({ quality: await small.evaluate(() => window.session.quality()), publisher: await encodingsActive(pub) }));
    console.log(`adaptive: top encoding on after ${Date.now() - grownAt} ms (${JSON.stringify(on)}), received ${JSON.stringify(big)}`);
  } finally {
    await browser.close();
    server.stop();
  }
});
