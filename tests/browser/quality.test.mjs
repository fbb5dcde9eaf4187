// Quality per subscriber: three Chromium subscribers of one simulcast webcam, one of them
// behind a 400 kbit/s downlink. The relay estimates each subscriber's link from its
// transport-wide feedback and sends each the best layer that fits: the capped one gets the low
// layer without freezing while the others get 1280x720; when the cap is lifted, it is back on
// the full resolution within 15 s. Layer changes are counted: no flapping on a steady link.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { joinPage, publishWebcam, subscribe, expectPlaying, inboundVideo as receiving } from './harness.mjs';
import { startLinkServer, linkedBrowsers } from './link.mjs';

const CAP_KBIT = 400;
const SETTLE_MS = Number(process.env.QUALITY_SETTLE_MS) || 20_000;
const WATCH_MS = Number(process.env.QUALITY_WATCH_MS) || 20_000;
const RECOVER_MS = 15_000;

/** Sample the pages' widths once a second for `ms`; returns the samples and, per page, how
 * often the width changed. */
async function watch(pages, ms) {
  const samples = [];
  const start = Date.now();
  while (Date.now() - start < ms) {
    samples.push({ t: Date.now() - start, got: await Promise.all(pages.map(receiving)) });
    await new Promise((r) => setTimeout(r, 1000));
  }
  const changes = pages.map((_, i) => samples.slice(1).filter((s, k) => s.got[i].width !== samples[k].got[i].width).length);
  return { samples, changes };
}

test('a subscriber behind 400 kbit/s gets the low layer, the others 1280x720, and it recovers', async () => {
  const server = await startLinkServer({ args: ['--stats-interval', '5'] });
  const open = [];
  try {
    const { links, browsers } = await linkedBrowsers(server, [1, 2, 3, 4], open);
    const [pub, ...subs] = await Promise.all(browsers.map((b, i) => joinPage(b.context, server, 'quality-1', `p${i}`)));
    const capped = links[3];
    await capped.set({ down: { rate_kbit: CAP_KBIT } });
    const feed = await publishWebcam(pub);
    const videos = [];
    for (const s of subs) videos.push(await subscribe(s, feed));
    for (let i = 0; i < subs.length; i++) await expectPlaying(subs[i], videos[i], 20_000);
    await new Promise((r) => setTimeout(r, SETTLE_MS));

    // Steady: the capped subscriber on the low layer without freezing, the others on the top.
    const before = await Promise.all(subs.map(receiving));
    const steady = await watch(subs, WATCH_MS);
    const after = await Promise.all(subs.map(receiving));
    console.log(`quality: steady ${JSON.stringify(steady)}`);
    const last = steady.samples.at(-1).got;
    assert.equal(last[0].width, 1280, JSON.stringify(steady));
    assert.equal(last[1].width, 1280, JSON.stringify(steady));
    assert.ok(last[2].width <= 640, `capped subscriber at ${last[2].width}: ${JSON.stringify(steady)}`);
    const frozen = after[2].freezes - before[2].freezes;
    const decoded = after[2].framesDecoded - before[2].framesDecoded;
    console.log(`quality: capped subscriber froze ${frozen.toFixed(2)} s, decoded ${decoded} frames in ${WATCH_MS} ms`);
    assert.ok(frozen < 0.5, `the capped subscriber froze ${frozen} s`);
    assert.ok(decoded > (WATCH_MS / 1000) * 10, `the capped subscriber decoded ${decoded} frames`);
    // No flapping: at most a few changes over the steady stretch.
    assert.ok(steady.changes.every((n) => n <= 2), `layer changes ${steady.changes}`);

    // The cap is lifted: back on the top layer within 15 s.
    await capped.set({ down: { rate_kbit: 0 } });
    const lifted = Date.now();
    let recovered = null;
    const trail = [];
    while (Date.now() - lifted < RECOVER_MS + 5_000) {
      const r = await receiving(subs[2]);
      trail.push({ t: Date.now() - lifted, width: r.width });
      if (r.width === 1280) {
        recovered = Date.now() - lifted;
        break;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    console.log(`quality: recovered to 1280 after ${recovered} ms: ${JSON.stringify(trail)}`);
    assert.ok(recovered !== null && recovered <= RECOVER_MS, `not back on 1280 within ${RECOVER_MS} ms: ${JSON.stringify(trail)}`);
  } finally {
    for (const o of open.reverse()) await o.close();
    server.stop();
  }
});
