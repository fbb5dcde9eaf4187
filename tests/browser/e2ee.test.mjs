// End-to-end encryption: pages that join with one passphrase see and hear each other through
// the relay, with simulcast (VP8) and SVC (VP9) layers switching as the element grows; a page
// with another passphrase receives the packets and decodes none of them (the relay forwards
// what it cannot read); a page without encryption cannot join; the session cannot be recorded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, waitEvent, until } from './harness.mjs';

const E2EE = { e2ee: { passphrase: 'correct horse battery staple' } };

/** Decoded video width, frames decoded and packets received for `feedId` on the page. */
const receiving = (page) =>
  page.evaluate(async () => {
    const out = { width: 0, decoded: 0, packets: 0, audioPackets: 0 };
    (await window.session.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.width = Math.max(out.width, s.frameWidth ?? 0);
        out.decoded += s.framesDecoded ?? 0;
        out.packets += s.packetsReceived ?? 0;
      }
      if (s.type === 'inbound-rtp' && s.kind === 'audio') out.audioPackets += s.packetsReceived ?? 0;
    });
    return out;
  });

/** Subscribe to `feedId` in a `width`x`height` element; resize with window.resize(id, w, h). */
const subscribeSized = (page, feedId, width, height) =>
  page.evaluate(
    async ({ feedId, width, height }) => {
      const v = document.createElement('video');
      v.id = `v-${feedId}`;
      Object.assign(v.style, { width: `${width}px`, height: `${height}px` });
      document.body.append(v);
      await window.session.subscribe(feedId, v);
    },
    { feedId, width, height },
  );

const resize = (page, feedId, width, height) =>
  page.evaluate(({ feedId, width, height }) => Object.assign(document.getElementById(`v-${feedId}`).style, { width: `${width}px`, height: `${height}px` }), { feedId, width, height });

test('an encrypted session plays for those with the passphrase only, and cannot be recorded', async () => {
  const server = await startServer({ recording: true });
  const browser = await launch();
  try {
    const alice = await joinPage(browser.context, server, 'secret', 'alice', {}, E2EE);
    const bob = await joinPage(browser.context, server, 'secret', 'bob', {}, E2EE);
    assert.equal(await alice.evaluate(() => window.session.e2ee), true);
    const vp8 = await alice.evaluate(async () => (await window.session.publish({ source: 'webcam' })).feedId);
    await waitEvent(bob, 'feed-published');

    // Simulcast: the small element gets the lowest layer, the large one the top.
    await subscribeSized(bob, vp8, 320, 180);
    const small = await until(() => receiving(bob), (r) => r.width > 0 && r.decoded > 20, 15000);
    assert.equal(small.width, 320, JSON.stringify(small));
    await resize(bob, vp8, 1280, 720);
    const large = await until(() => receiving(bob), (r) => r.width === 1280, 15000);
    const more = await until(() => receiving(bob), (r) => r.decoded > large.decoded + 20, 10000);
    assert.ok(more.audioPackets > 50, 'the audio arrives');
    console.log(`VP8 simulcast, encrypted: 320 wide in a 320x180 element, 1280 in a 1280x720 one (${more.decoded} frames decoded)`);

    // Another passphrase: the packets come, nothing decodes, and the page is told.
    const eve = await joinPage(browser.context, server, 'secret', 'eve', {}, { e2ee: { passphrase: 'guess' } });
    await subscribeSized(eve, vp8, 1280, 720);
    const failed = await waitEvent(eve, 'error', 15000);
    assert.equal(failed.code, 'decryption_failed');
    await new Promise((r) => setTimeout(r, 3000));
    const eveGot = await receiving(eve);
    console.log(`another passphrase: ${eveGot.packets} video packets received, ${eveGot.decoded} frames decoded`);
    assert.ok(eveGot.packets > 100, JSON.stringify(eveGot));
    assert.equal(eveGot.decoded, 0);

    // Without encryption: refused.
    const plain = await joinPage(browser.context, server, 'secret', 'mallory').catch((e) => e.message);
    assert.match(String(plain), /e2ee/);
    const outside = await alice.evaluate(async () => {
      const { WebRTCai } = await import('/sdk/webrtcai.js');
      const client = WebRTCai.init({ key: window.session._client.key });
      const refused = await client.join('secret', { name: 'mallory' }).then(() => null, (e) => e.code);
      const h264 = await window.session.publish({ source: 'webcam', codec: 'H264' }).then(() => null, (e) => e.code);
      const recording = await window.session.startRecording().then(() => null, (e) => ({ code: e.code, message: e.message }));
      return { refused, h264, recording };
    });
    assert.equal(outside.refused, 'e2ee_mismatch');
    assert.equal(outside.h264, 'invalid_options');
    assert.equal(outside.recording.code, 'forbidden');
    assert.match(outside.recording.message, /end-to-end encrypted/);

  } finally {
    await browser.close();
    server.stop();
  }
});

test('VP9 SVC, encrypted: the layers of one stream switch as the element grows', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const alice = await joinPage(browser.context, server, 'secret-svc', 'alice', {}, E2EE);
    const bob = await joinPage(browser.context, server, 'secret-svc', 'bob', {}, E2EE);
    const vp9 = await bob.evaluate(async () => (await window.session.publish({ source: 'webcam', codec: 'VP9', svc: 'L3T3_KEY', audio: false })).feedId);
    await until(() => alice.evaluate((id) => window.session.feeds.has(id), vp9), (x) => x, 10000);
    await subscribeSized(alice, vp9, 320, 180);
    const svcSmall = await until(() => receiving(alice), (r) => r.width > 0 && r.decoded > 20, 15000);
    await resize(alice, vp9, 1280, 720);
    const svcLarge = await until(() => receiving(alice), (r) => r.width === 1280, 15000, () => alice.evaluate(async () => (await window.session.quality()).subscriptions));
    await until(() => receiving(alice), (r) => r.decoded > svcLarge.decoded + 20, 10000);
    console.log(`VP9 SVC, encrypted: ${svcSmall.width} wide in the small element, ${svcLarge.width} in the large one`);
    assert.equal(svcSmall.width, 320);
  } finally {
    await browser.close();
    server.stop();
  }
});
