// A third, independent peer: aiortc publishes a synthetic video track through the same
// protocol, and Chromium subscribes and decodes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, freePort, scrape, launch, joinPage, subscribe, expectPlaying, until } from './harness.mjs';

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

test('aiortc and Chromium exchange data-channel messages through the relay', async () => {
  const metricsPort = await freePort();
  const server = await startServer({ args: ['--metrics-http', `127.0.0.1:${metricsPort}`] });
  // The relay's data counters, for a failure's message.
  const relayData = async () => {
    const { text } = await scrape(metricsPort);
    return text.split('\n').filter((l) => /^webrtcai_relay_data_/.test(l)).join('; ');
  };
  const browser = await launch();
  const wsUrl = server.base.replace('http', 'ws') + '/ws';
  const COUNT = 500;
  const child = spawn(python, [join(here, '..', 'aiortc', 'data_peer.py'), wsUrl, 'aiortc-data', server.cid, server.key, server.secret, String(COUNT)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const line = (re, ms) =>
    until(async () => re.exec(out), (m) => m !== null, ms).catch(async (e) => {
      const counts = await relayData().catch((err) => `no counters: ${err.message}`);
      throw new Error(`aiortc: ${e.message}; it printed ${JSON.stringify(out)}; the relay: ${counts}`);
    });
  try {
    const page = await joinPage(browser.context, server, 'aiortc-data', 'chromium');
    await page.evaluate(() => {
      window.fromAiortc = { n: 0, wrong: 0 };
      const message = (i) => (i % 2 === 0 ? `text ${i}` : new Uint8Array(i).fill(i % 256));
      window.session.on('data', ({ data, reliable }) => {
        if (!reliable) return;
        const want = message(window.fromAiortc.n++);
        const same = typeof want === 'string' ? data === want : data.length === want.length && data.every((v) => v === want[0]);
        if (!same) window.fromAiortc.wrong++;
      });
    });
    const [, uid] = await line(/READY (\S+)/, 30_000);
    // The page sends aiortc the same series, to it by name.
    await page.evaluate(
      async ({ count, uid }) => {
        for (let i = 0; i < count; i++) {
          await window.session.send(i % 2 === 0 ? `text ${i}` : new Uint8Array(i).fill(i % 256), { to: [uid] });
        }
      },
      { count: COUNT, uid },
    );
    const [, n, wrong] = await line(/RECEIVED (\d+) (\d+)/, 30_000);
    assert.equal(Number(n), COUNT);
    assert.equal(Number(wrong), 0, 'aiortc read every message the page sent, in order');
    await line(/SENT (\d+)/, 30_000);
    const got = await until(() => page.evaluate(() => window.fromAiortc), (r) => r.n >= COUNT, 30_000, relayData);
    assert.equal(got.wrong, 0, 'the page read every message aiortc sent, in order');
    console.log(`aiortc data: ${COUNT} messages each way, in order`);
  } finally {
    child.kill('SIGKILL');
    await browser.close();
    server.stop();
  }
});
