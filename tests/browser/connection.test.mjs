// Connection quality and statistics, with Chromium behind emulated links (tests/link): each
// page rates its own connection from its statistics, and the relay rates each participant for
// the others. A clean link is excellent; 15 % loss each way makes it poor for both views, and
// back once the loss goes; a link that carries nothing is lost, the media connection's state
// says so, and it comes back. getStats() summarises what is sent and received. A link that
// goes away with its devices leaves the relay no route to its page: what it sends there is
// refused, counted on /metrics, and the others' call goes on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { joinPage, publishWebcam, subscribe, expectPlaying, until, freePort, scrape, videoState } from './harness.mjs';
import { startLinkServer, linkedBrowsers } from './link.mjs';

/** How `page` sees `uid`: from the relay for another, its own rating for itself. */
const qualityOf = (page, uid) =>
  page.evaluate((uid) => (uid === window.session.uid ? window.session.connectionQuality : window.session.participants.get(uid)?.quality ?? null), uid);

test('connection quality follows the link, for oneself and for the others; getStats summarises', async () => {
  const server = await startLinkServer();
  const open = [server];
  try {
    const { links, browsers } = await linkedBrowsers(server, [11, 12], open);
    const a = await joinPage(browsers[0].context, server, 'quality', 'alice');
    const b = await joinPage(browsers[1].context, server, 'quality', 'bob');
    const alice = await a.evaluate(() => window.session.uid);
    const feed = await publishWebcam(a);
    await expectPlaying(b, await subscribe(b, feed));

    await until(() => Promise.all([qualityOf(a, alice), qualityOf(b, alice)]), (q) => q.every((x) => x === 'excellent'), 15000);
    assert.equal(await a.evaluate(() => window.session.connectionState), 'connected');

    // getStats: the subscriber's video and audio, the publisher's three layers and its audio.
    await new Promise((r) => setTimeout(r, 1500));
    const got = await b.evaluate(async () => {
      const s = await window.session.getStats();
      return { ...s, raw: s.raw.size };
    });
    const video = got.subscriptions.find((x) => x.kind === 'video');
    console.log(`subscriber: ${video.width}x${video.height} at ${video.fps} fps, ${Math.round(video.bitrate / 1000)} kbit/s, layer ${video.layer} of ${video.layers}, rtt ${got.rttMs} ms`);
    assert.equal(video.feedId, feed);
    assert.ok(video.width >= 640 && video.fps > 5 && video.bitrate > 100000, JSON.stringify(video));
    assert.equal(typeof video.layer, 'number');
    assert.ok(got.subscriptions.some((x) => x.kind === 'audio' && x.feedId === feed && x.bitrate > 5000));
    assert.ok(got.rttMs !== null && got.rttMs < 100 && got.raw > 10, JSON.stringify({ rtt: got.rttMs, raw: got.raw }));
    const sent = await a.evaluate(async () => {
      const s = await window.session.getStats();
      return { ...s, raw: null };
    });
    const layers = sent.publications.filter((x) => x.kind === 'video').map((x) => x.rid).sort();
    assert.deepEqual(layers, ['f', 'h', 'q']);
    assert.ok(sent.publications.every((x) => x.feedId === feed));
    assert.ok(sent.availableOutgoingBitrate > 0);

    // 15 % loss each way on alice's link.
    await links[0].set({ up: { loss: 0.15 }, down: { loss: 0.15 } });
    let t0 = Date.now();
    await until(() => Promise.all([qualityOf(a, alice), qualityOf(b, alice)]), (q) => q.every((x) => x === 'poor'), 15000);
    console.log(`15 % loss: poor for alice and bob after ${Date.now() - t0} ms`);
    // Bob's own link is clean: not poor (a moment of 'good' is his estimate settling while
    // alice's video to him loses packets upstream).
    const bobRated = await qualityOf(a, await b.evaluate(() => window.session.uid));
    assert.ok(['excellent', 'good'].includes(bobRated), `bob's own link is still clean, rated ${bobRated}`);

    await links[0].set({ up: { loss: 0 }, down: { loss: 0 } });
    t0 = Date.now();
    await until(() => Promise.all([qualityOf(a, alice), qualityOf(b, alice)]), (q) => q.every((x) => x === 'excellent'), 30000);
    console.log(`loss gone: excellent again after ${Date.now() - t0} ms`);

    // Nothing gets through: lost, and the media connection is down.
    await links[0].set({ up: { loss: 1 }, down: { loss: 1 } });
    t0 = Date.now();
    await until(() => Promise.all([qualityOf(a, alice), qualityOf(b, alice)]), (q) => q.every((x) => x === 'lost'), 20000);
    console.log(`link cut: lost for alice and bob after ${Date.now() - t0} ms`);
    // The relay rates the link lost from what it stops receiving; Chromium's ICE notices on
    // its own clock, a moment later or sooner.
    const states = await until(
      () => a.evaluate(() => window.events.filter((e) => e.ev === 'connection-state').map((e) => e.v.state)),
      (s) => s.includes('disconnected') || s.includes('failed'),
      10000,
    );
    console.log(`link cut: connection states ${states.join(' → ')} after ${Date.now() - t0} ms`);

    await links[0].set({ up: { loss: 0 }, down: { loss: 0 } });
    t0 = Date.now();
    await until(() => a.evaluate(() => window.session.connectionState), (s) => s === 'connected', 20000);
    await until(() => Promise.all([qualityOf(a, alice), qualityOf(b, alice)]), (q) => q.every((x) => x === 'excellent' || x === 'good'), 30000);
    console.log(`link back: connected and rated again after ${Date.now() - t0} ms`);
    const told = await b.evaluate((uid) => window.events.filter((e) => e.ev === 'connection-quality' && e.v.uid === uid).map((e) => e.v.quality), alice);
    console.log(`bob was told of alice: ${told.join(' → ')}`);
  } finally {
    for (const o of open.reverse()) await o.close?.() ?? o.stop?.();
  }
});

test('a participant whose network goes away: what the relay sends it is refused, counted, and the call goes on for the others', async () => {
  const metricsPort = await freePort();
  const server = await startLinkServer({ args: ['--metrics-http', `127.0.0.1:${metricsPort}`] });
  const open = [server];
  try {
    const { links, browsers } = await linkedBrowsers(server, [21, 22], open);
    const gone = await joinPage(browsers[0].context, server, 'vanish', 'gone');
    const pub = await joinPage(browsers[1].context, server, 'vanish', 'pub');
    const stays = await joinPage(browsers[1].context, server, 'vanish', 'stays');
    const feed = await publishWebcam(pub);
    await expectPlaying(gone, await subscribe(gone, feed));
    const staysVideo = await subscribe(stays, feed);
    await expectPlaying(stays, staysVideo);
    const notSent = async () => {
      const { text } = await scrape(metricsPort);
      return [...text.matchAll(/^webrtcai_relay_datagrams_not_sent_total\{core="\d+"\} (\S+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
    };
    assert.equal(await notSent(), 0, 'nothing refused while every network is there');
    // The link and its devices go: the relay's route to the page goes with them.
    await links[0].close();
    const refused = await until(notSent, (n) => n > 50, 10_000);
    console.log(`vanish: ${refused} datagrams refused within the first seconds`);
    // The others' call goes on.
    const before = await videoState(stays, staysVideo);
    await new Promise((r) => setTimeout(r, 2000));
    const after = await videoState(stays, staysVideo);
    assert.ok(after.framesDecoded > before.framesDecoded + 20, JSON.stringify({ before, after }));
  } finally {
    for (const o of open.reverse()) await (o.close?.() ?? o.stop?.());
  }
});
