// WEB_ONLY keys from a real browser: the page on an allowed origin joins; the same page served
// under another host name is refused with the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './harness.mjs';

async function tryJoin(page, key) {
  return page.evaluate(async (key) => {
    const { WebRTCai } = await import('/sdk/webrtcai.js');
    try {
      const s = await WebRTCai.init({ key }).join('origin-room');
      return { ok: true, uid: s.uid };
    } catch (e) {
      return { ok: false, code: e.code, message: e.message };
    }
  }, key);
}

test('a key works on its domain and is refused elsewhere', async () => {
  const server = await startServer(); // its key allows 127.0.0.1
  const browser = await launch();
  try {
    const allowed = await browser.context.newPage();
    await allowed.goto(`${server.base}/`);
    const a = await tryJoin(allowed, server.key);
    assert.equal(a.ok, true, JSON.stringify(a));

    const foreign = await browser.context.newPage();
    await foreign.goto(`http://localhost:${server.port}/`);
    const f = await tryJoin(foreign, server.key);
    assert.equal(f.ok, false);
    assert.equal(f.code, 'unauthorized');
    assert.match(f.message, /origin http:\/\/localhost:\d+ is not an allowed domain/);

    server.admin('key', 'revoke', server.key);
    const again = await tryJoin(allowed, server.key);
    assert.equal(again.code, 'unauthorized');
    assert.match(again.message, /revoked/);
  } finally {
    await browser.close();
    server.stop();
  }
});
