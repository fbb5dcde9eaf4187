// Congestion feedback toward a publisher: the relay acknowledges every packet with its arrival
// time (transport-wide congestion control), so Chromium's send-side estimate ramps up on an
// unimpaired link instead of falling to 30 kbit/s, and a 1280x720 camera is sent at 1280x720.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, subscribe, expectPlaying } from './harness.mjs';

/** The publisher's video sender and its transport, as getStats() reports them. */
async function sending(page) {
  return page.evaluate(async () => {
    const out = {};
    (await window.session.pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        Object.assign(out, {
          targetBitrate: s.targetBitrate,
          frameWidth: s.frameWidth,
          frameHeight: s.frameHeight,
          limitation: s.qualityLimitationReason,
          bytesSent: s.bytesSent,
        });
      }
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        out.available = s.availableOutgoingBitrate;
      }
    });
    return out;
  });
}

const RAMP_LIMIT_MS = 10_000;
const TARGET = 1_500_000;

test('a publisher ramps up to more than 1.5 Mbit/s within 10 s, at 1280x720', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'cc-1', 'alice');
    const b = await joinPage(browser.context, server, 'cc-1', 'bob');
    const feed = await publishWebcam(a);
    const start = Date.now();
    const video = await subscribe(b, feed);
    await expectPlaying(b, video);
    const samples = [];
    let reached = null;
    while (Date.now() - start < RAMP_LIMIT_MS + (Number(process.env.CC_EXTRA_MS) || 5_000)) {
      const s = await sending(a);
      const t = Date.now() - start;
      samples.push({ t, ...s });
      if (reached === null && s.targetBitrate >= TARGET && s.available >= TARGET) reached = t;
      await new Promise((r) => setTimeout(r, 1000));
    }
    console.log(`congestion: ${JSON.stringify(samples)}`);
    assert.ok(reached !== null && reached <= RAMP_LIMIT_MS,
      `targetBitrate and availableOutgoingBitrate pass ${TARGET} within ${RAMP_LIMIT_MS} ms: ${JSON.stringify(samples)}`);
    // It stays there: no later sample falls back below the target.
    for (const s of samples.filter((s) => s.t >= reached)) {
      assert.ok(s.targetBitrate >= TARGET && s.available >= TARGET,
        `fell below ${TARGET} at ${s.t} ms: ${JSON.stringify(samples)}`);
    }
    // The 1280x720 camera is sent at 1280x720, limited by nothing.
    const last = samples.at(-1);
    assert.equal(last.frameWidth, 1280, JSON.stringify(samples));
    assert.equal(last.frameHeight, 720, JSON.stringify(samples));
    assert.equal(last.limitation, 'none', JSON.stringify(samples));
  } finally {
    await browser.close();
    server.stop();
  }
});

test('the capture size is configurable: video constraints go to getUserMedia', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'cc-2', 'alice');
    const settings = await a.evaluate(async () => {
      const v = document.createElement('video');
      document.body.append(v);
      const feed = await window.session.publish({
        source: 'webcam', target: v, video: { width: { exact: 640 }, height: { exact: 360 } },
      });
      return feed.stream.getVideoTracks()[0].getSettings();
    });
    assert.equal(settings.width, 640, JSON.stringify(settings));
    assert.equal(settings.height, 360, JSON.stringify(settings));
  } finally {
    await browser.close();
    server.stop();
  }
});
