// Muting: a publisher mutes its video, then its audio; the others are told, and nothing of a
// muted track is sent (getStats on both sides), while the other track goes on; unmuted, it
// plays again. Whoever joins meanwhile sees the track muted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, subscribe, expectPlaying, waitEvent, until } from './harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Media bytes of each kind this page has sent (all simulcast encodings; payload only, so not
 * the padding Chromium sends to keep its bandwidth estimate up), video frames it encoded, and
 * what it received. */
const counts = (page) =>
  page.evaluate(async () => {
    const c = { sentVideo: 0, sentAudio: 0, encoded: 0, gotVideo: 0, gotAudio: 0, decoded: 0 };
    (await window.session.pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp') {
        c[s.kind === 'video' ? 'sentVideo' : 'sentAudio'] += s.bytesSent;
        if (s.kind === 'video') c.encoded += s.framesEncoded;
      }
      if (s.type === 'inbound-rtp') {
        c[s.kind === 'video' ? 'gotVideo' : 'gotAudio'] += s.packetsReceived;
        if (s.kind === 'video') c.decoded += s.framesDecoded;
      }
    });
    return c;
  });

test('a muted track is not sent, the others are told, and it plays again unmuted', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'mute', 'alice');
    const b = await joinPage(browser.context, server, 'mute', 'bob');
    const feedId = await a.evaluate(async () => {
      const v = document.createElement('video');
      document.body.append(v);
      window.pub = await window.session.publish({ source: 'webcam', target: v });
      return window.pub.feedId;
    });
    await waitEvent(b, 'feed-published');
    await expectPlaying(b, await subscribe(b, feedId));
    const invalid = await a.evaluate(() => window.pub.mute('both').then(() => null, (e) => e.code));
    assert.equal(invalid, 'invalid_target');

    await a.evaluate(() => window.pub.mute('video'));
    const muted = await waitEvent(b, 'feed-muted');
    assert.deepEqual(muted, { feedId, uid: await a.evaluate(() => window.session.uid), kind: 'video' });
    assert.deepEqual(await b.evaluate((id) => window.session.feeds.get(id).muted, feedId), ['video']);
    assert.deepEqual(await a.evaluate(() => window.pub.muted), { audio: false, video: true });
    await sleep(1000);
    const before = { a: await counts(a), b: await counts(b) };
    await sleep(2000);
    const after = { a: await counts(a), b: await counts(b) };
    console.log(`muted video, over 2 s: sent video ${after.a.sentVideo - before.a.sentVideo} B (${after.a.encoded - before.a.encoded} frames), audio ${after.a.sentAudio - before.a.sentAudio} B; received video ${after.b.gotVideo - before.b.gotVideo} packets, audio ${after.b.gotAudio - before.b.gotAudio}`);
    assert.equal(after.a.encoded, before.a.encoded, 'no video encoded while muted');
    assert.equal(after.a.sentVideo, before.a.sentVideo, 'no video sent while muted');
    assert.equal(after.b.gotVideo, before.b.gotVideo, 'no video received while muted');
    assert.ok(after.b.gotAudio > before.b.gotAudio + 50, 'the audio goes on');

    // Whoever joins now sees it muted.
    const c = await joinPage(browser.context, server, 'mute', 'carol');
    assert.deepEqual(await c.evaluate((id) => window.session.feeds.get(id).muted, feedId), ['video']);

    const t0 = Date.now();
    await a.evaluate(() => window.pub.unmute('video'));
    await waitEvent(b, 'feed-unmuted');
    const decoded = after.b.decoded;
    await until(() => counts(b), (x) => x.decoded > decoded + 10, 10000);
    console.log(`unmuted: decoding again after ${Date.now() - t0} ms`);

    // The audio muted: nothing of it is sent.
    await a.evaluate(() => window.pub.mute('audio'));
    await sleep(1000);
    const x = await counts(a);
    await sleep(2000);
    const y = await counts(a);
    assert.equal(y.sentAudio, x.sentAudio, 'no audio sent while muted');
    assert.ok(y.sentVideo > x.sentVideo, 'the video goes on');
  } finally {
    await browser.close();
    server.stop();
  }
});
