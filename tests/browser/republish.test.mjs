// A publisher turning its camera off and on again and again in one call. Each publish is a
// new transceiver, so the browser sends with new SSRCs (its simulcast layers, their RTX, its
// microphone); the relay keeps SRTP state for at most 64 of a participant's SSRCs, and it must
// forget the old ones', or after some ten publishes the new ones are refused as replays.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, subscribe, expectPlaying, freePort, scrape } from './harness.mjs';

const ROUNDS = 20;

test(`a camera published ${ROUNDS} times in one call plays every time`, { timeout: 300_000 }, async () => {
  const metricsPort = await freePort();
  const server = await startServer({ args: ['--metrics-http', `127.0.0.1:${metricsPort}`] });
  const browser = await launch();
  const replays = async () => {
    const { text } = await scrape(metricsPort);
    const lines = text.split('\n').filter((l) => /^webrtcai_relay_dropped_total\{.*reason="srtp_replay"/.test(l));
    return lines.reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
  };
  try {
    const alice = await joinPage(browser.context, server, 'republish-1', 'alice');
    const bob = await joinPage(browser.context, server, 'republish-1', 'bob');
    const ssrcs = new Set();
    for (let round = 0; round < ROUNDS; round++) {
      const feed = await alice.evaluate(async () => (await window.session.publish({ source: 'webcam' })).feedId);
      const video = await subscribe(bob, feed);
      try {
        await expectPlaying(bob, video, 15_000);
      } catch (e) {
        // What the publisher sent of each layer: one not sent is waited for in vain.
        const layers = await alice.evaluate(async () => {
          const out = [];
          (await window.session.pc.getStats()).forEach((r) => {
            if (r.type === 'outbound-rtp' && r.kind === 'video' && r.packetsSent > 0) {
              out.push({ rid: r.rid, ssrc: r.ssrc, active: r.active, framesEncoded: r.framesEncoded, keyFramesEncoded: r.keyFramesEncoded, pliCount: r.pliCount, frameWidth: r.frameWidth, limitation: r.qualityLimitationReason });
            }
          });
          return out;
        });
        throw new Error(`round ${round} (${ssrcs.size} SSRCs sent before, ${await replays()} packets refused as replays): ${e.message}; the publisher's layers: ${JSON.stringify(layers)}`);
      }
      // What the page sent with in this round, from its own statistics.
      const sent = await alice.evaluate(async () => {
        const out = [];
        (await window.session.pc.getStats()).forEach((r) => {
          if (r.type === 'outbound-rtp' && r.packetsSent > 0) out.push(r.ssrc, ...(r.rtxSsrc && r.retransmittedPacketsSent > 0 ? [r.rtxSsrc] : []));
        });
        return out;
      });
      sent.forEach((s) => ssrcs.add(s));
      await bob.evaluate((id) => document.getElementById(id)?.remove(), video);
      await alice.evaluate((id) => window.session.unpublish(id), feed);
    }
    console.log(`republish: ${ssrcs.size} SSRCs over ${ROUNDS} publishes`);
    assert.ok(ssrcs.size > 64, `only ${ssrcs.size} SSRCs were used: the test did not pass the relay's bound`);
    assert.equal(await replays(), 0);
  } finally {
    await browser.close();
    server.stop();
  }
});
