// Camera, microphone and screen failures reach the page as WebRTCaiErrors with a stable code
// (the browser's error kept as `cause`), once from a real denial and once for every
// DOMException name the SDK tells apart, thrown by the page's own getUserMedia.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage } from './harness.mjs';

/** publish() on the page; how it failed. */
function tryPublish(page, source) {
  return page.evaluate(async (source) => {
    const { WebRTCaiError } = await import('/sdk/webrtcai.js');
    const v = document.createElement('video');
    document.body.append(v);
    try {
      await window.session.publish({ source, target: v });
      return { ok: true };
    } catch (e) {
      return {
        isError: e instanceof WebRTCaiError,
        code: e.code,
        message: e.message,
        causeName: e.cause?.name,
        causeIsThrown: window.thrown !== undefined && e.cause === window.thrown,
        shown: v.srcObject !== null,
      };
    }
  }, source);
}

test('a real permission denial is permission_denied', { timeout: 60000 }, async () => {
  const server = await startServer();
  const browser = await launch({ prompt: false });
  try {
    const page = await joinPage(browser.context, server, 'media-errors-1', 'ada');
    const r = await tryPublish(page, 'webcam');
    assert.deepEqual([r.isError, r.code, r.causeName], [true, 'permission_denied', 'NotAllowedError'], JSON.stringify(r));
  } finally {
    await browser.close();
    server.stop();
  }
});

test('getUserMedia and getDisplayMedia errors map to stable codes', { timeout: 60000 }, async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const page = await joinPage(browser.context, server, 'media-errors-2', 'ada');
    const other = await joinPage(browser.context, server, 'media-errors-2', 'grace');
    for (const [source, name, code] of [
      ['webcam', 'NotAllowedError', 'permission_denied'],
      ['webcam', 'SecurityError', 'permission_denied'],
      ['webcam', 'NotFoundError', 'device_not_found'],
      ['webcam', 'OverconstrainedError', 'device_not_found'],
      ['webcam', 'NotReadableError', 'device_in_use'],
      ['webcam', 'AbortError', 'media_error'],
      ['screen', 'NotAllowedError', 'permission_denied'],
      ['screen', 'NotReadableError', 'device_in_use'],
    ]) {
      await page.evaluate(
        ({ source, name }) => {
          const fail = async () => {
            // Chromium's own class for constraint failures; a DOMException for the rest.
            window.thrown = name === 'OverconstrainedError' ? new OverconstrainedError('width', 'no camera that wide') : new DOMException(`fake ${name}`, name);
            throw window.thrown;
          };
          if (source === 'screen') navigator.mediaDevices.getDisplayMedia = fail;
          else navigator.mediaDevices.getUserMedia = fail;
        },
        { source, name },
      );
      const r = await tryPublish(page, source);
      assert.deepEqual([r.isError, r.code, r.causeName, r.causeIsThrown], [true, code, name, true], `${source} ${name}: ${JSON.stringify(r)}`);
      assert.match(r.message, new RegExp(name));
    }
    // None of it reached the server: the other participant heard of no feed.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await other.evaluate(() => window.events.filter((e) => e.ev === 'feed-published').length), 0);
  } finally {
    await browser.close();
    server.stop();
  }
});
