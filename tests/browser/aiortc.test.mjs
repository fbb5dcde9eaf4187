// A third, independent peer: aiortc publishes a synthetic video track through the same
// protocol, and Chromium subscribes and decodes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, launch, joinPage, subscribe, expectPlaying } from './harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const python = process.env.AIORTC_PYTHON || join(here, '..', 'aiortc', '.venv', 'bin', 'python');

test('aiortc publishes, Chromium decodes', async () => {
  const server = await startServer();
  const browser = await launch();
  const wsUrl = server.base.replace('http', 'ws') + '/ws';
  // A server-side participant has no web origin: it joins with a token, not a WEB_ONLY key,
  // and mints it itself with PyJWT, as a customer's backend would (the example in docs/accounts.md).
  const child = spawn(python, [join(here, '..', 'aiortc', 'publisher.py'), wsUrl, 'aiortc-1', server.cid, server.key, server.secret], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const feedId = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('aiortc did not publish in 20 s')), 20000);
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const m = /PUBLISHED (\S+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      child.on('exit', (code) => reject(new Error(`aiortc exited with ${code}`)));
    });
    const page = await joinPage(browser.context, server, 'aiortc-1', 'viewer');
    const feeds = await page.evaluate(() => [...window.session.feeds.keys()]);
    assert.deepEqual(feeds, [feedId]);
    const video = await subscribe(page, feedId);
    const s = await expectPlaying(page, video);
    assert.equal(s.width, 320);
  } finally {
    child.kill('SIGKILL');
    await browser.close();
    server.stop();
  }
});
