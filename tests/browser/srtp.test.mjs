// The relay applies its own SRTP preference: Chromium lists AES_CM_128_HMAC_SHA1_80 first in
// its DTLS ClientHello, yet its transport to the relay must use SRTP_AEAD_AES_128_GCM (about five
// times cheaper per packet for the relay), both as publisher and as subscriber.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, subscribe, expectPlaying } from './harness.mjs';

/** The SRTP cipher and DTLS state of the page's transport, as getStats() reports them. */
async function transport(page) {
  return page.evaluate(async () => {
    const found = [];
    (await window.session.pc.getStats()).forEach((s) => {
      if (s.type === 'transport') found.push({ srtpCipher: s.srtpCipher, dtlsState: s.dtlsState });
    });
    return found;
  });
}

test('Chromium negotiates AES-GCM with the relay', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'srtp-1', 'alice');
    const b = await joinPage(browser.context, server, 'srtp-1', 'bob');
    const feed = await publishWebcam(a);
    const video = await subscribe(b, feed);
    await expectPlaying(b, video);
    for (const [name, page] of [['publisher', a], ['subscriber', b]]) {
      const t = await transport(page);
      assert.equal(t.length, 1, `${name}: one transport (bundled): ${JSON.stringify(t)}`);
      assert.equal(t[0].dtlsState, 'connected', name);
      assert.equal(t[0].srtpCipher, 'SRTP_AEAD_AES_128_GCM', `${name}: ${JSON.stringify(t)}`);
    }
  } finally {
    await browser.close();
    server.stop();
  }
});
