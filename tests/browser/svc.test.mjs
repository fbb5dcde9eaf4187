// SVC from Chromium through the SDK: a webcam published as VP9 (and AV1) with three spatial and
// three temporal layers in one stream (L3T3_KEY), described by the dependency descriptor; the
// relay sends each subscriber the layers its element shows and its link carries, dropping the
// others.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, expectPlaying, until, inboundVideo as receiving, subscribeInto } from './harness.mjs';
import { startLinkServer, linkedBrowsers } from './link.mjs';

/** The publisher's one video encoding as getStats() reports it. */
async function sending(page) {
  return page.evaluate(async () => {
    const stats = await window.session.pc.getStats();
    let out = null;
    stats.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        const codec = s.codecId && stats.get(s.codecId);
        out = { width: s.frameWidth ?? 0, scalabilityMode: s.scalabilityMode, codec: codec?.mimeType, limitedBy: s.qualityLimitationReason };
      }
    });
    return out;
  });
}

for (const codec of ['VP9', 'AV1']) test(`a ${codec} SVC webcam: the whole picture to a large element, the low spatial layer to a small one`, async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, `svc-1-${codec}`, 'alice');
    const big = await joinPage(browser.context, server, `svc-1-${codec}`, 'bob');
    const small = await joinPage(browser.context, server, `svc-1-${codec}`, 'carol');
    const feed = await a.evaluate(async (codec) => {
      const v = document.createElement('video');
      document.body.append(v);
      const f = await window.session.publish({ source: 'webcam', target: v, codec, svc: 'L3T3_KEY' });
      return f.feedId;
    }, codec);
    const bigVideo = await subscribeInto(big, feed, {}, { adaptive: false });
    const smallVideo = await subscribeInto(small, feed, { width: '320px', height: '180px' }, {});
    await expectPlaying(big, bigVideo);
    await expectPlaying(small, smallVideo);
    const sent = await until(() => sending(a), (s) => s?.width === 1280, 15_000);
    console.log(`svc ${codec}: publisher ${JSON.stringify(sent)}`);
    assert.equal(sent.codec, `video/${codec}`);
    assert.equal(sent.scalabilityMode, 'L3T3_KEY');
    // The large element gets the top spatial layer, the small one the lowest.
    const whole = await until(() => receiving(big), (r) => r.width === 1280, 20_000);
    const low = await until(() => receiving(small), (r) => r.width === 320, 20_000);
    console.log(`svc ${codec}: large element ${JSON.stringify(whole)}, small element ${JSON.stringify(low)}`);
    // And go on decoding there, the small element for a fraction of the bytes: its frames
    // of the other layers were dropped, not sent.
    const [bigBefore, smallBefore] = [await receiving(big), await receiving(small)];
    await new Promise((r) => setTimeout(r, 3000));
    const [bigAfter, smallAfter] = [await receiving(big), await receiving(small)];
    const rate = (a, b) => ((b.bytesReceived - a.bytesReceived) * 8) / 3000;
    console.log(`svc ${codec}: over 3 s, large ${rate(bigBefore, bigAfter).toFixed(0)} kbit/s (${bigAfter.framesDecoded - bigBefore.framesDecoded} frames), small ${rate(smallBefore, smallAfter).toFixed(0)} kbit/s (${smallAfter.framesDecoded - smallBefore.framesDecoded} frames)`);
    // The whole picture is what the publisher sends now: Chromium drops its top spatial layer
    // when its encoder runs short of CPU (qualityLimitationReason 'cpu', seen on a loaded
    // machine), and then the large element rightly gets the 640 wide layer.
    const sentAfter = await sending(a);
    // What the relay wants for the large element: three pages encoding and decoding 720p SVC
    // on two loaded cores delay packets, a delay-based estimate can dip below what the top
    // layer needs, and the relay then rightly moves down for a while (seen in full suites:
    // 341 kbit/s to the large element). Where it targets the top spatial layer, the large
    // element must get it, within a keyframe's wait.
    const bigQuality = await big.evaluate(() => window.session.quality());
    const sub = bigQuality.subscriptions[0];
    const topSpatial = sub.target >= sub.layers - sub.temporalLayers;
    console.log(`svc ${codec}: publisher then ${JSON.stringify(sentAfter)}; large element: ${JSON.stringify(bigQuality)}`);
    assert.equal(smallAfter.width, 320);
    if (topSpatial) {
      const got = await until(() => receiving(big), (r) => r.width === sentAfter.width, 5000).catch(() => null);
      assert.ok(got, `the relay targets layer ${sub.target} of ${sub.layers} (current ${sub.current}) and the publisher sends ${sentAfter.width} wide (limited by ${sentAfter.limitedBy}), but the large element shows ${bigAfter.width}: ${JSON.stringify(bigQuality)}`);
    } else {
      console.log(`svc ${codec}: the relay moved the large element down to layer ${sub.target} (estimate ${bigQuality.estimateBps} bit/s); it got ${bigAfter.width} wide`);
      assert.ok(bigAfter.width > 0 && bigAfter.width <= sentAfter.width);
    }
    assert.ok(smallAfter.framesDecoded > smallBefore.framesDecoded + 30);
    // The small element's share of the bytes says its other layers were dropped only where
    // the large one got them over the same seconds (a large element moved down gets the
    // small one's layer, and as many bytes: 149 against 128 kbit/s in a full suite).
    if (topSpatial && bigBefore.width === sentAfter.width && bigAfter.width === sentAfter.width) {
      assert.ok(rate(smallBefore, smallAfter) < rate(bigBefore, bigAfter) / 2);
    }
  } finally {
    await browser.close();
    server.stop();
  }
});

test('a VP9 SVC subscriber behind 600 kbit/s gets a lower spatial layer, another the whole picture', async () => {
  const server = await startLinkServer();
  const open = [];
  try {
    const { links, browsers } = await linkedBrowsers(server, [1, 2, 3], open);
    const [pub, free, capped] = await Promise.all(browsers.map((b, i) => joinPage(b.context, server, 'svc-2', `p${i}`)));
    // A queue of 400 ms (30 kB), as a home link's buffer holds: with the default 100 ms
    // (7.5 kB), the keyframe of the two lower spatial layers (15-25 kB), paced at 2.5 times
    // the estimate, lost its tail at every request, and the video froze 3-9 s in some runs.
    await links[2].set({ down: { rate_kbit: 600, queue_ms: 400 } });
    const feed = await pub.evaluate(async () => {
      const v = document.createElement('video');
      document.body.append(v);
      const f = await window.session.publish({ source: 'webcam', target: v, codec: 'VP9', svc: 'L3T3_KEY' });
      return f.feedId;
    });
    const videos = [await subscribeInto(free, feed, {}, { adaptive: false }), await subscribeInto(capped, feed, {}, { adaptive: false })];
    await expectPlaying(free, videos[0], 20_000);
    await expectPlaying(capped, videos[1], 20_000);
    // The free one on the top spatial layer; the capped one below it, decoding, not frozen.
    const whole = await until(() => receiving(free), (r) => r.width === 1280, 20_000);
    const lower = await until(() => receiving(capped), (r) => r.width > 0 && r.width <= 640, 20_000);
    // Settled: its first seconds, sent at the starting 1 Mbit/s guess, lose what the link
    // drops, keyframes included (a freeze of 3.2 s once counted in the window below).
    await new Promise((r) => setTimeout(r, 5_000));
    const before = await receiving(capped);
    await new Promise((r) => setTimeout(r, 10_000));
    // The width most of five readings over a second give: one picture of a higher layer (a
    // keyframe's) must not decide.
    const readings = [];
    for (let i = 0; i < 5; i++) {
      readings.push(await receiving(capped));
      await new Promise((r) => setTimeout(r, 200));
    }
    const widths = readings.map((r) => r.width).sort((x, y) => x - y);
    const after = { ...readings.at(-1), width: widths[2], widths };
    const q = await capped.evaluate(() => window.session.quality());
    console.log(`svc: free ${JSON.stringify(whole)}, capped ${JSON.stringify(lower)} then ${JSON.stringify(after)}, quality ${JSON.stringify(q)}`);
    assert.ok(after.width > 0 && after.width <= 640, `capped at ${after.width}`);
    assert.ok(after.framesDecoded - before.framesDecoded > 100, `decoded ${after.framesDecoded - before.framesDecoded} frames in 10 s`);
  } finally {
    for (const o of open.reverse()) await o.close();
    server.stop();
  }
});

test('a VP9 SVC subscriber behind 120 kbit/s gets the lowest spatial layer at a lower frame rate, not a paused video', async () => {
  const server = await startLinkServer();
  const open = [];
  try {
    const { links, browsers } = await linkedBrowsers(server, [1, 2], open);
    const [pub, capped] = await Promise.all(browsers.map((b, i) => joinPage(b.context, server, 'svc-3', `p${i}`)));
    // Its lowest spatial layer at the full frame rate takes 100-165 kbit/s, at a quarter of it
    // 45-70 kbit/s. The queue holds 400 ms (6 kB): with the default 100 ms, 1.5 kB at this
    // rate, a keyframe's second packet is already dropped.
    await links[1].set({ down: { rate_kbit: 120, queue_ms: 400 } });
    const feed = await pub.evaluate(async () => {
      const v = document.createElement('video');
      document.body.append(v);
      const f = await window.session.publish({ source: 'webcam', audio: false, target: v, codec: 'VP9', svc: 'L3T3_KEY' });
      return f.feedId;
    });
    // (No microphone: what the link carries is the video's alone.)
    const video = await subscribeInto(capped, feed, {}, { adaptive: false });
    await expectPlaying(capped, video, 20_000);
    // Settled on a temporal layer below the top of the lowest spatial layer (layer l is
    // spatial layer l / temporalLayers at temporal layer l % temporalLayers).
    const quality = () => capped.evaluate(() => window.session.quality());
    const settled = await until(quality, (q) => {
      const s = q.subscriptions[0];
      return s && s.temporalLayers === 3 && s.current !== null && s.current < s.temporalLayers - 1 && !s.paused;
    }, 30_000);
    const before = await receiving(capped);
    const pausesBefore = settled.subscriptions[0].pauses;
    await new Promise((r) => setTimeout(r, 10_000));
    const after = await receiving(capped);
    const q = await quality();
    const fps = (after.framesDecoded - before.framesDecoded) / 10;
    const kbps = ((after.bytesReceived - before.bytesReceived) * 8) / 10_000;
    console.log(`svc 120: settled ${JSON.stringify(settled)}; over 10 s ${after.width} wide at ${fps} fps, ${kbps.toFixed(0)} kbit/s; then ${JSON.stringify(q)}`);
    assert.ok(after.width > 0 && after.width <= 640, `${after.width} wide`);
    // Decoding all along (what the link loses is repaired or waits for a keyframe, which
    // costs frames: 5.6 to 7.4 a second in three runs), never paused.
    assert.ok(fps >= 2, `${fps} frames a second`);
    assert.equal(q.subscriptions[0].pauses, pausesBefore, JSON.stringify(q));
    assert.equal(q.subscriptions[0].paused, null, JSON.stringify(q));
  } finally {
    for (const o of open.reverse()) await o.close();
    server.stop();
  }
});
