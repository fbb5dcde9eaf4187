// Packet repair with real Chromium peers behind emulated links (tests/link): 5 % random loss
// and 50 ms delay each way on one participant's link for 30 s. With NACK and RTX the subscriber's
// video barely freezes; the same run with repair turned off (`--no-repair`) is run beside it
// and reported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { joinPage, publishWebcam, subscribe, expectPlaying, until, inboundVideo } from './harness.mjs';
import { createLink, startLinkServer, launchBehind } from './link.mjs';

const IMPAIRED = { loss: 0.05, delay_ms: 50 };
const RUN_MS = Number(process.env.REPAIR_RUN_MS) || 30_000;
const SETTLE_MS = 5_000;

/** The page's video streams as getStats() reports them: what it receives and what it sends. */
async function videoStats(page) {
  return page.evaluate(async () => {
    const out = {
      freezes: 0, freezeCount: 0, nacksSent: 0, retransmittedReceived: 0, packetsLost: 0,
      packetsReceived: 0, framesDecoded: 0, nacksReceived: 0, retransmittedSent: 0,
      jitterBufferDelay: 0, jitterBufferMinimumDelay: 0, jitterBufferEmittedCount: 0,
    };
    (await window.session.pc.getStats()).forEach((s) => {
      if (s.kind !== 'video') return;
      if (s.type === 'inbound-rtp') {
        out.freezes += s.totalFreezesDuration || 0;
        out.freezeCount += s.freezeCount || 0;
        out.nacksSent += s.nackCount || 0;
        out.retransmittedReceived += s.retransmittedPacketsReceived || 0;
        out.packetsLost += s.packetsLost || 0;
        out.packetsReceived += s.packetsReceived || 0;
        out.framesDecoded += s.framesDecoded || 0;
        out.jitterBufferDelay += s.jitterBufferDelay || 0;
        out.jitterBufferMinimumDelay += s.jitterBufferMinimumDelay || 0;
        out.jitterBufferEmittedCount += s.jitterBufferEmittedCount || 0;
      }
      if (s.type === 'outbound-rtp') {
        out.nacksReceived += s.nackCount || 0;
        out.retransmittedSent += s.retransmittedPacketsSent || 0;
      }
    });
    return out;
  });
}

/** The subscriber's mean jitter-buffer delay over the run, in milliseconds. */
function meanDelayMs(run) {
  const s = run.subscriber;
  return s.jitterBufferEmittedCount ? Math.round((1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount) : 0;
}

function delta(before, after) {
  return Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - before[k]]));
}

/** A call between a publisher and a subscriber, each behind a link of its own; once video plays,
 * `impaired` ('publisher' or 'subscriber') gets IMPAIRED in both directions. Returns what
 * changed on each side over RUN_MS from SETTLE_MS after that, and on the subscriber's side over
 * those first SETTLE_MS (`change`). */
async function impairedCall(impaired, repair, sid) {
  const server = await startLinkServer({ args: ['--stats-interval', '5', ...(repair ? [] : ['--no-repair'])] });
  const open = [];
  try {
    const pubLink = await createLink({ seed: 3 });
    open.push(pubLink);
    const subLink = await createLink({ seed: 4 });
    open.push(subLink);
    const pubBrowser = await launchBehind(pubLink, server);
    open.push(pubBrowser);
    const subBrowser = await launchBehind(subLink, server);
    open.push(subBrowser);
    const a = await joinPage(pubBrowser.context, server, sid, 'alice');
    const b = await joinPage(subBrowser.context, server, sid, 'bob');
    const feed = await publishWebcam(a);
    const video = await subscribe(b, feed);
    await expectPlaying(b, video, 20_000);
    // A settled call: the publisher starts its top layer only as its estimate grows, and
    // the subscriber's move up to it waits for a keyframe, which a lossy link would delay.
    await until(() => inboundVideo(b), (r) => r.width === 1280, 20_000);
    const link = impaired === 'publisher' ? pubLink : subLink;
    const subStart = await videoStats(b);
    await link.set({ up: IMPAIRED, down: IMPAIRED });
    // The moment the link turns bad is a change of its own, measured apart: the publisher's
    // Chromium cuts its estimate and turns its top layer off, the subscriber is moved to
    // another layer at its keyframe, and the jitter buffer grows to the repair time at most
    // about 100 ms a second.
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const [pubBefore, subBefore] = [await videoStats(a), await videoStats(b)];
    await new Promise((r) => setTimeout(r, RUN_MS));
    const [pubAfter, subAfter] = [await videoStats(a), await videoStats(b)];
    const linkStats = await link.stats();
    const result = {
      impaired,
      repair,
      publisher: delta(pubBefore, pubAfter),
      subscriber: delta(subBefore, subAfter),
      change: delta(subStart, subBefore),
      dropped: { up: linkStats.up.packets_dropped_loss, down: linkStats.down.packets_dropped_loss },
    };
    console.log(`repair: ${JSON.stringify(result)}`);
    return result;
  } finally {
    for (const o of open.reverse()) await o.close();
    server.stop();
  }
}

for (const impaired of ['subscriber', 'publisher']) {
  test(`5 % loss and 50 ms delay on the ${impaired}'s link: repaired`, async () => {
    const on = await impairedCall(impaired, true, `repair-${impaired}-on`);
    const off = await impairedCall(impaired, false, `repair-${impaired}-off`);
    console.log(`repair: ${impaired}'s link, ${RUN_MS} ms: freezes ${on.subscriber.freezes.toFixed(2)} s with repair, ` +
      `${off.subscriber.freezes.toFixed(2)} s without (${on.subscriber.freezeCount} and ${off.subscriber.freezeCount} freezes); ` +
      `frames decoded ${on.subscriber.framesDecoded} and ${off.subscriber.framesDecoded}; ` +
      `mean jitter-buffer delay ${meanDelayMs(on)} ms and ${meanDelayMs(off)} ms; ` +
      `in the ${SETTLE_MS} ms after the link changed, ${on.change.freezes.toFixed(2)} s with repair`);
    // The link did lose packets in both runs.
    assert.ok(on.dropped.up + on.dropped.down > 100, JSON.stringify(on));
    assert.ok(off.dropped.up + off.dropped.down > 100, JSON.stringify(off));
    assert.ok(on.subscriber.framesDecoded > 0, JSON.stringify(on));
    // The change itself: 0.26-0.78 s in six runs. On the publisher's link, most of it is the
    // move off the top layer Chromium turns off; the relay notices it stopped once the other
    // layers sent three frames without it. Measured with the 30 s that follow, it made those
    // fail their 1 s bound (1.08 s in CI, 1.80 s once here).
    assert.ok(on.change.freezes < 1.5, `froze ${on.change.freezes} s as the link changed: ${JSON.stringify(on)}`);
    if (impaired === 'subscriber') {
      // The subscriber's jitter buffer by itself holds about one of its round trips: a repair
      // that is lost too comes a round trip later and was a freeze (0.42-1.56 s in 2-6 freezes
      // over 30 s; without repair 15-28 s). While it asks for repairs the relay gives it a
      // minimum playout delay of two round trips and a frame: measured 0.25-0.29 s in 1 freeze
      // on 640x360, 0.25-0.66 s in 1-2 freezes on 1280x720 (a frame of more packets); once
      // the change is measured apart, 0.00-0.23 s in 0-1 freezes (three runs).
      assert.ok(on.subscriber.freezes < 1, `froze ${on.subscriber.freezes} s with repair: ${JSON.stringify(on)}`);
      const waited = on.subscriber.jitterBufferDelay / on.subscriber.jitterBufferEmittedCount;
      assert.ok(waited > 0.15, `frames waited ${waited} s on average: ${JSON.stringify(on)}`);
      // The subscriber asks, the relay answers from its cache on the subscriber's RTX stream.
      assert.ok(on.subscriber.nacksSent > 0, JSON.stringify(on));
      assert.ok(on.subscriber.retransmittedReceived > 0, JSON.stringify(on));
    } else {
      // Repairs from the publisher come a publisher's round trip late (two when the first
      // request or repair is lost). The subscriber's own jitter buffer is sized for its short
      // round trip to the relay, so the relay gives it a minimum playout delay of that repair
      // time while it repairs the feed: measured 0.23-0.32 s in 1 freeze over 30 s on 640x360,
      // 0.45-0.79 s in 1-3 freezes on 1280x720 (1.1-2.4 s in 4-9 freezes before the playout
      // delay; 22.6-28.6 s without repair), mostly at the change; measured apart from it,
      // 0.00 s in three runs.
      assert.ok(on.subscriber.freezes < 1, `froze ${on.subscriber.freezes} s with repair: ${JSON.stringify(on)}`);
      // The delay is the subscriber's: its frames waited that long on average (~220 ms with a
      // 100 ms round trip to the publisher; a few ms with the link clean).
      const waited = on.subscriber.jitterBufferDelay / on.subscriber.jitterBufferEmittedCount;
      assert.ok(waited > 0.1, `frames waited ${waited} s on average: ${JSON.stringify(on)}`);
      // Without repair the video stands still for long stretches, waiting for keyframes (a
      // freeze counts only once a frame comes after it, so the frames decoded say it too:
      // 54-383 against 552-590 with repair, in three runs with simulcast).
      // (Where the video without repair never moved again after its start, it counts no
      // freeze at all: 2 frames decoded and 0 s of freezes in one run.)
      assert.ok(on.subscriber.freezes < off.subscriber.freezes || off.subscriber.framesDecoded < on.subscriber.framesDecoded / 4,
        JSON.stringify({ on, off }));
      assert.ok(on.subscriber.framesDecoded > off.subscriber.framesDecoded, JSON.stringify({ on, off }));
      // Repairs reach the subscriber on the media stream, as the originals: nearly nothing
      // counts as lost there. (A subscriber's own repairs come on its RTX stream, which
      // getStats() does not count as received on the media stream.)
      assert.ok(on.subscriber.packetsLost <= on.subscriber.packetsReceived / 100, JSON.stringify(on));
      // The relay asks the publisher, whose repairs reach the subscriber as the originals.
      assert.ok(on.publisher.nacksReceived > 0, JSON.stringify(on));
      assert.ok(on.publisher.retransmittedSent > 0, JSON.stringify(on));
    }
    // Turned off, nothing is asked for or sent again.
    assert.equal(off.subscriber.nacksSent, 0, JSON.stringify(off));
    assert.equal(off.publisher.nacksReceived, 0, JSON.stringify(off));
    assert.equal(off.subscriber.retransmittedReceived, 0, JSON.stringify(off));
  });
}
