// Congestion feedback toward a publisher: the relay acknowledges every packet with its arrival
// time (transport-wide congestion control), so Chromium's send-side estimate ramps up on an
// unimpaired link instead of falling to 30 kbit/s, and a 1280x720 camera is sent at 1280x720.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, subscribe, expectPlaying, freePort, scrape } from './harness.mjs';
import { createLink, startLinkServer, launchBehind } from './link.mjs';

/** The publisher's video sender and its transport, as getStats() reports them: with
 * simulcast, the target and bytes of all its layers together, and the largest frame sent
 * (layers nobody receives are turned off, and report none). */
async function sending(page) {
  return page.evaluate(async () => {
    const out = { targetBitrate: 0, frameWidth: 0, frameHeight: 0, bytesSent: 0, layers: 0 };
    const report = await window.session.pc.getStats();
    // The transport's selected pair (a nominated pair is the fallback where it names none).
    let selected = null;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) selected = s.selectedCandidatePairId;
    });
    report.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out.layers += 1;
        out.targetBitrate += s.targetBitrate || 0;
        out.bytesSent += s.bytesSent || 0;
        // A layer turned off (dynacast) reports no frame size: it counts as 0, and must not
        // leave `undefined` behind for the next layer to be compared with.
        if ((s.frameWidth || 0) >= out.frameWidth) {
          Object.assign(out, {
            frameWidth: s.frameWidth || 0,
            frameHeight: s.frameHeight || 0,
            limitation: s.qualityLimitationReason,
          });
        }
      }
      const chosen = selected ? s.id === selected : s.nominated && s.state === 'succeeded';
      if (s.type === 'candidate-pair' && chosen && s.availableOutgoingBitrate !== undefined) {
        out.available = s.availableOutgoingBitrate;
        out.rttMs = Math.round((s.currentRoundTripTime ?? 0) * 1000);
        // A move to another pair (another of the relay's addresses, or TCP) shows here.
        out.pair = `${s.id} ${s.bytesReceived}`;
      }
      // What the relay's receiver reports say of the video: the worst layer's loss.
      if (s.type === 'remote-inbound-rtp' && s.kind === 'video') {
        out.lost = Math.max(out.lost ?? 0, s.packetsLost ?? 0);
      }
    });
    return out;
  });
}

const RAMP_LIMIT_MS = 10_000;
const TARGET = 1_500_000;

/** The relay's counters that say what it made of the publisher's packets: all it received,
 * those it dropped (by reason, only those that happened) and the transport-wide feedback it
 * sent. */
async function relayCounters(port) {
  const { text } = await scrape(port);
  const out = { dropped: {} };
  for (const line of text.split('\n')) {
    const m = /^webrtcai_relay_(dropped_total\{.*reason="([a-z_]+)".*\}|(twcc_feedback_sent|packets_received|ice_tcp_packets_received)_total\{.*\}) (\S+)$/.exec(line);
    if (!m || Number(m[4]) === 0) continue;
    const key = m[2] ? null : { twcc_feedback_sent: 'feedback', packets_received: 'received', ice_tcp_packets_received: 'tcp' }[m[3]];
    if (m[2]) out.dropped[m[2]] = (out.dropped[m[2]] ?? 0) + Number(m[4]);
    else out[key] = (out[key] ?? 0) + Number(m[4]);
  }
  return out;
}

test('a publisher ramps up to more than 1.5 Mbit/s within 10 s, at 1280x720', async () => {
  const metricsPort = await freePort();
  // A participant's move to a new address is logged (info): one shows up in a failure.
  const server = await startServer({ args: ['--metrics-http', `127.0.0.1:${metricsPort}`], log: `${process.env.RUST_LOG || 'warn'},relay::sfu::worker::ingress=info` });
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
      // And what the subscriber is sent: dynacast turns off the layers no one receives.
      const q = await b.evaluate(() => window.session.quality());
      const decoded = await b.evaluate(async () => {
        let n = 0;
        (await window.session.pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0; });
        return n;
      });
      samples.push({ t, ...s, subscriber: { estimate: q.estimateBps, layer: q.subscriptions[0]?.current, decoded }, relay: await relayCounters(metricsPort) });
      // Chromium sometimes reports no availableOutgoingBitrate at all (seen in a full suite,
      // the target at 3.15 Mbit/s from the first sample): then the target alone says it.
      if (reached === null && s.targetBitrate >= TARGET && (s.available === undefined || s.available >= TARGET)) reached = t;
      await new Promise((r) => setTimeout(r, 1000));
    }
    console.log(`congestion: ${JSON.stringify(samples)}`);
    // What the subscriber is sent: dynacast turns off the layers no one receives, and the
    // publisher's target then covers only the others.
    const quality = await b.evaluate(() => window.session.quality());
    console.log(`congestion: subscriber ${JSON.stringify(quality)}`);
    assert.ok(reached !== null && reached <= RAMP_LIMIT_MS,
      `targetBitrate and availableOutgoingBitrate pass ${TARGET} within ${RAMP_LIMIT_MS} ms: ${JSON.stringify(samples)}, subscriber ${JSON.stringify(quality)}`);
    // It stays there: no later sample falls back below the target. Chromium sometimes leaves
    // availableOutgoingBitrate out of a report (seen once in a full suite, the target at
    // 3.15 Mbit/s all along): a sample without it says nothing of a fall.
    for (const s of samples.filter((s) => s.t >= reached)) {
      assert.ok(s.targetBitrate >= TARGET && (s.available === undefined || s.available >= TARGET),
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

/** Video packet counts of a page: received and lost on its inbound streams (the subscriber),
 * and lost as the relay's receiver reports tell it (remote-inbound-rtp, the publisher; null
 * when no report came). */
async function rtpCounts(page) {
  return page.evaluate(async () => {
    const out = { packetsReceived: 0, packetsLost: 0, remoteLost: null, remoteFraction: null };
    (await window.session.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.packetsReceived += s.packetsReceived || 0;
        out.packetsLost += s.packetsLost || 0;
      }
      if (s.type === 'remote-inbound-rtp' && s.kind === 'video') {
        out.remoteLost = (out.remoteLost || 0) + (s.packetsLost || 0);
        out.remoteFraction = s.fractionLost;
      }
    });
    return out;
  });
}

// Chromium's fake 720p camera makes only about 700 kbit/s of video even when its encoder may
// use 1.15 Mbit/s, so a 1 Mbit/s cap never fills and never limits (measured: no queue drops,
// targetBitrate 1.10-1.16 Mbit/s, above a cap that the link never reaches). 500 kbit/s is a cap
// the publisher does run into, so it shows the estimator settling under a real bottleneck.
const CAP_KBIT = 500;
const SETTLE_MS = 15_000;
const WINDOW_END_MS = 25_000;

test('behind a 500 kbit/s uplink the publisher settles below the cap, with under 2 % loss', async () => {
  const server = await startLinkServer();
  const open = [];
  try {
    // The publisher's link is capped browser -> server (tbf-like, 100 ms queue); the
    // subscriber has a link of its own without impairments.
    const upLink = await createLink({ up: { rate_kbit: CAP_KBIT } });
    open.push(upLink);
    const downLink = await createLink();
    open.push(downLink);
    const pub = await launchBehind(upLink, server);
    open.push(pub);
    const sub = await launchBehind(downLink, server);
    open.push(sub);
    const a = await joinPage(pub.context, server, 'cc-3', 'alice');
    const b = await joinPage(sub.context, server, 'cc-3', 'bob');
    const feed = await publishWebcam(a);
    const start = Date.now();
    const video = await subscribe(b, feed);
    await expectPlaying(b, video, 20_000);
    const samples = [];
    while (Date.now() - start < WINDOW_END_MS) {
      await new Promise((r) => setTimeout(r, 1000));
      const [send, remote, recv, link] = [await sending(a), await rtpCounts(a), await rtpCounts(b), (await upLink.stats()).up];
      samples.push({
        t: Date.now() - start,
        targetBitrate: send.targetBitrate,
        available: send.available,
        frameWidth: send.frameWidth,
        limitation: send.limitation,
        bytesSent: send.bytesSent,
        packetsReceived: recv.packetsReceived,
        packetsLost: recv.packetsLost,
        remoteLost: remote.remoteLost,
        remoteFraction: remote.remoteFraction,
        linkIn: link.packets_in,
        linkQueueDrops: link.packets_dropped_queue,
        linkBytes: link.bytes_forwarded,
      });
    }
    for (const s of samples) console.log(`congestion capped: ${JSON.stringify(s)}`);
    const settled = samples.filter((s) => s.t >= SETTLE_MS);
    const [first, last] = [settled[0], settled.at(-1)];
    const lost = last.packetsLost - first.packetsLost;
    const received = last.packetsReceived - first.packetsReceived;
    const loss = lost / (lost + received);
    const linkDrop = (last.linkQueueDrops - first.linkQueueDrops) / (last.linkIn - first.linkIn);
    const linkKbit = ((last.linkBytes - first.linkBytes) * 8) / (last.t - first.t);
    const videoKbit = ((last.bytesSent - first.bytesSent) * 8) / (last.t - first.t);
    console.log(`congestion capped: window ${first.t}..${last.t} ms: subscriber lost ${lost} of ${lost + received} video packets (${(loss * 100).toFixed(2)} %), ` +
      `publisher's remote-inbound-rtp lost ${last.remoteLost === null ? 'n/a' : last.remoteLost - first.remoteLost}, ` +
      `uplink queue dropped ${(linkDrop * 100).toFixed(2)} % of packets, carried ${linkKbit.toFixed(0)} kbit/s (video payload ${videoKbit.toFixed(0)} kbit/s)`);
    // The estimate moves around the bottleneck as a delay-based one does: on average it stays
    // under it, and what the sender puts on the link does not overflow the link's queue.
    const meanTarget = settled.reduce((sum, s) => sum + s.targetBitrate, 0) / settled.length;
    console.log(`congestion capped: mean targetBitrate ${meanTarget.toFixed(0)} over the window`);
    assert.ok(meanTarget < CAP_KBIT * 1000, `mean targetBitrate ${meanTarget} is not below the cap: ${JSON.stringify(samples)}`);
    assert.ok(linkDrop < 0.02, `the uplink queue dropped ${linkDrop}: ${JSON.stringify(samples)}`);
    assert.ok(received > 0, `the subscriber receives video: ${JSON.stringify(samples)}`);
    assert.ok(loss < 0.02, `loss ${loss} over ${first.t}..${last.t} ms: ${JSON.stringify(samples)}`);
  } finally {
    for (const o of open.reverse()) await o.close();
    server.stop();
  }
});
