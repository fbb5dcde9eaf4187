// Data channels between Chromium pages through the relay: each page's SDK gets the relay's
// two channels (reliable and lossy) over its one peer connection, and `session.send` /
// the `data` event carry strings and binary to everyone else or to named participants.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, until } from './harness.mjs';

/** Collect the `data` events of a page in window.received (binary as arrays of bytes). */
async function collect(page) {
  await page.evaluate(() => {
    window.received = [];
    window.session.on('data', ({ from, data, reliable }) => {
      window.received.push({ from, reliable, text: typeof data === 'string', data: typeof data === 'string' ? data : Array.from(data) });
    });
  });
}

const received = (page) => page.evaluate(() => window.received);

test('strings and binary reach everyone else, or only the participants named', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const pages = await Promise.all(['a', 'b', 'c'].map((n) => joinPage(browser.context, server, 'data-1', n)));
    const [a, b, c] = pages;
    for (const p of pages) await collect(p);
    const uids = await Promise.all(pages.map((p) => p.evaluate(() => window.session.uid)));
    await a.evaluate(async ([, ub]) => {
      await window.session.send('hello ✓');
      await window.session.send(new Uint8Array([1, 2, 3]));
      await window.session.send(new Uint8Array([9, 8, 7, 6]).buffer);
      await window.session.send(new Blob(['blob']));
      await window.session.send(new DataView(new Uint8Array([5, 5]).buffer));
      await window.session.send('');
      await window.session.send('only b', { to: [ub] });
      await window.session.send('lossy', { reliable: false });
    }, uids);
    const gotB = await until(() => received(b), (r) => r.length >= 8, 10_000);
    const gotC = await until(() => received(c), (r) => r.length >= 7, 10_000);
    await new Promise((r) => setTimeout(r, 500));
    const from = uids[0];
    const expectC = [
      { from, reliable: true, text: true, data: 'hello ✓' },
      { from, reliable: true, text: false, data: [1, 2, 3] },
      { from, reliable: true, text: false, data: [9, 8, 7, 6] },
      { from, reliable: true, text: false, data: [...Buffer.from('blob')] },
      { from, reliable: true, text: false, data: [5, 5] },
      { from, reliable: true, text: true, data: '' },
      { from, reliable: false, text: true, data: 'lossy' },
    ];
    assert.deepEqual(await received(c), expectC, 'c gets everything but what was only for b');
    const expectB = [...expectC.slice(0, 6), { from, reliable: true, text: true, data: 'only b' }, expectC[6]];
    assert.deepEqual(await received(b), expectB);
    assert.deepEqual(await received(a), [], 'a sender never receives its own message');
    console.log(`data: b got ${gotB.length}, c got ${gotC.length}`);
  } finally {
    await browser.close();
    server.stop();
  }
});
