// Data channels between Chromium pages through the relay: each page's SDK gets the relay's
// two channels (reliable and lossy) over its one peer connection, and `session.send` /
// the `data` event carry strings and binary to everyone else or to named participants.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, until, startProxy, waitEvent, freePort, scrape } from './harness.mjs';

/** Collect the `data` events of a page in window.received (binary as arrays of bytes), and
 * when its data channels opened, for a failure's report. */
async function collect(page) {
  await page.evaluate(() => {
    window.received = [];
    window.channelsAt = { collect: Date.now() };
    window.session.pc.addEventListener('datachannel', ({ channel }) => {
      window.channelsAt[channel.label] = Date.now();
    });
    window.session.on('data', ({ from, data, reliable }) => {
      window.received.push({ from, reliable, text: typeof data === 'string', data: typeof data === 'string' ? data : Array.from(data) });
    });
  });
}

const received = (page) => page.evaluate(() => window.received);

/** In a failure's report: a page's data channels as its browser counts them (messages the
 * channel delivered), and when they opened against when `collect` ran. */
const channelReport = (page) =>
  page.evaluate(async () => {
    const stats = [...(await window.session.pc.getStats()).values()].filter((s) => s.type === 'data-channel');
    return {
      sctp: window.session.pc.sctp?.state ?? null,
      at: window.channelsAt,
      sentAt: window.sentAt ?? null,
      channels: stats.map(({ label, state, messagesSent, messagesReceived }) => ({ label, state, messagesSent, messagesReceived })),
      received: window.received.length,
      errors: window.events.filter(({ ev }) => ev === 'error').map(({ v }) => v),
    };
  });

test('strings and binary reach everyone else, or only the participants named', async () => {
  const metricsPort = await freePort();
  const server = await startServer({ args: ['--metrics-http', `127.0.0.1:${metricsPort}`] });
  const browser = await launch();
  try {
    const pages = await Promise.all(['a', 'b', 'c'].map((n) => joinPage(browser.context, server, 'data-1', n)));
    const [a, b, c] = pages;
    for (const p of pages) await collect(p);
    const uids = await Promise.all(pages.map((p) => p.evaluate(() => window.session.uid)));
    await a.evaluate(async ([, ub]) => {
      window.sentAt = Date.now();
      await window.session.send('hello ✓');
      await window.session.send(new Uint8Array([1, 2, 3]));
      await window.session.send(new Uint8Array([9, 8, 7, 6]).buffer);
      await window.session.send(new Blob(['blob']));
      await window.session.send(new DataView(new Uint8Array([5, 5]).buffer));
      await window.session.send('');
      await window.session.send('only b', { to: [ub] });
      await window.session.send('lossy', { reliable: false });
    }, uids);
    // What the relay handed on and each browser's channels delivered, where one is missing.
    const explain = async () => ({
      relay: (await scrape(metricsPort)).text.split('\n').filter((l) => /^webrtcai_relay_data_/.test(l)).join('; '),
      pages: Object.fromEntries(await Promise.all(pages.map(async (p, i) => ['abc'[i], await channelReport(p)]))),
    });
    const gotB = await until(() => received(b), (r) => r.length >= 8, 10_000, explain);
    const gotC = await until(() => received(c), (r) => r.length >= 7, 10_000, explain);
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

/** In a page: message `i` of the ordered-delivery test, the same in every page. Even ones
 * are strings, odd ones bytes (as a typed array, an ArrayBuffer, a DataView or a Blob in
 * turn), of 1 B to 64 KiB, spread evenly over the orders of magnitude. */
const MESSAGES = `
  window.message = (i) => {
    const x = Math.imul(i + 1, 2654435761) >>> 0;
    const size = Math.max(1, Math.min(65536, Math.round(Math.exp(((x % 100000) / 100000) * Math.log(65536)))));
    if (i % 2 === 0) {
      const letters = 'abcdefghijklmnopqrstuvwxyz0123456789';
      const start = i % letters.length;
      return (letters.slice(start) + letters.repeat(Math.ceil(size / letters.length) + 1)).slice(0, size);
    }
    const bytes = new Uint8Array(size);
    for (let k = 0; k < size; k++) bytes[k] = (i + k * 7) & 255;
    return bytes;
  };
  window.asSent = (i, m) => {
    if (typeof m === 'string') return m;
    switch ((i >> 1) % 4) {
      case 0: return m;
      case 1: return m.buffer;
      case 2: return new DataView(m.buffer);
      default: return new Blob([m]);
    }
  };
`;

// A bound for the whole test: it hung twice in some hundred runs (node, the server and
// Chromium idle, the stall report below never coming), and a hang must fail, not stop the
// suite. At the bound the browser and the server are stopped, so that what waited on them
// ends and the file's process can exit.
test('10,000 reliable messages of 1 B to 64 KiB, strings and binary, arrive complete and in order', { timeout: 480_000 }, async (t) => {
  const metricsPort = await freePort();
  const server = await startServer({ args: ['--metrics-http', `127.0.0.1:${metricsPort}`] });
  // The relay's data counters: what it dropped, and how often it held the sender for b.
  const relayData = async () => {
    const { text } = await scrape(metricsPort);
    const of = (name) => Number(new RegExp(`^webrtcai_relay_data_${name}_total\\{core="0"\\} (\\S+)$`, 'm').exec(text)?.[1]);
    return { undeliverable: of('undeliverable'), heldForReceivers: of('held_for_receivers'), heldBack: of('held_back') };
  };
  // Every data, DTLS and drop counter, for a failure's message.
  const relayCounters = async () => (await scrape(metricsPort)).text.split('\n').filter((l) => /^webrtcai_relay_\S*(data|dtls|drop)/.test(l)).join('; ');
  const browser = await launch();
  t.signal.addEventListener('abort', () => {
    browser.close().catch(() => {});
    server.stop();
  });
  const COUNT = Number(process.env.DATA_MESSAGES) || 10_000;
  try {
    const [a, b] = await Promise.all(['a', 'b'].map((n) => joinPage(browser.context, server, 'data-2', n)));
    for (const p of [a, b]) await p.evaluate(MESSAGES);
    await b.evaluate(() => {
      window.check = { count: 0, bad: 0, bytes: 0, firstBad: null };
      window.session.on('data', ({ data }) => {
        const i = window.check.count++;
        const want = window.message(i);
        const same = typeof want === 'string' ? data === want : data instanceof Uint8Array && data.length === want.length && data.every((v, k) => v === want[k]);
        window.check.bytes += typeof data === 'string' ? data.length : data.length;
        if (!same) {
          window.check.bad++;
          window.check.firstBad ??= i;
        }
      });
    });
    // b's channels are open once a message of b's reaches a: a message finds only the
    // channels open when it arrives (docs/relay.md#data-channels), and b joined a moment ago.
    await a.evaluate(() => {
      window.bReady = new Promise((r) => window.session.on('data', ({ data }) => data === 'b ready' && r()));
    });
    await b.evaluate(() => window.session.send('b ready'));
    await a.evaluate(() => window.bReady);
    const started = Date.now();
    const sending = a.evaluate(async (count) => {
      let bytes = 0;
      window.progress = 0;
      for (let i = 0; i < count; i++) {
        const m = window.message(i);
        bytes += typeof m === 'string' ? m.length : m.length;
        await window.session.send(window.asSent(i, m));
        window.progress = i + 1;
      }
      return bytes;
    }, COUNT);
    // A send that never returns fails the test with what each side saw, rather than hanging;
    // a page that does not answer says so.
    const answer = (page, fn) => Promise.race([
      page.evaluate(fn).catch((e) => `no answer: ${e.message}`),
      new Promise((r) => setTimeout(() => r('no answer in 5 s'), 5_000).unref()),
    ]);
    const stuck = new Promise((_, reject) => {
      const timer = setTimeout(async () => {
        const at = await answer(a, () => ({ sent: window.progress, buffered: window.session._channels.reliable?.bufferedAmount, state: window.session._channels.reliable?.readyState }));
        const got = await answer(b, () => window.check);
        reject(new Error(`sending stalled: a ${JSON.stringify(at)}, b ${JSON.stringify(got)}, relay ${await relayCounters()}`));
      }, 180_000);
      sending.finally(() => clearTimeout(timer)).catch(() => {});
    });
    const sent = await Promise.race([sending, stuck]);
    const sentMs = Date.now() - started;
    // A receiver slower than the sender holds it back (relay.md#data-channels): nothing is
    // dropped on the way, however slow this machine is.
    const check = await until(() => b.evaluate(() => window.check), (c) => c.count >= COUNT, 240_000).catch(async (e) => {
      throw new Error(`${e.message}; relay: ${await relayCounters()}`);
    });
    const ms = Date.now() - started;
    const counters = await relayData();
    console.log(`data: ${COUNT} messages, ${(sent / 1e6).toFixed(1)} MB, sent in ${sentMs} ms, all received in ${ms} ms (${((8 * sent) / ms / 1000).toFixed(1)} Mbit/s); relay ${JSON.stringify(counters)}`);
    assert.equal(counters.undeliverable, 0);
    assert.equal(check.bad, 0, `first wrong message ${check.firstBad}`);
    assert.equal(check.bytes, sent);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await b.evaluate(() => window.check)).count, COUNT, 'no message twice');
  } finally {
    await browser.close();
    server.stop();
  }
});

test('the data channel carries on across an ICE restart and a websocket resume', async () => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'data-3', 'a', { url: proxy.url });
    const b = await joinPage(browser.context, server, 'data-3', 'b');
    await collect(b);
    const ufrag = () =>
      a.evaluate(async () => {
        let u = null;
        (await window.session.pc.getStats()).forEach((s) => {
          if (s.type === 'transport') u = s.iceLocalUsernameFragment;
        });
        return u;
      });
    const count = 300;
    const sending = a.evaluate(async (count) => {
      for (let i = 0; i < count; i++) {
        await window.session.send(String(i));
        await new Promise((r) => setTimeout(r, 20));
      }
    }, count);
    await new Promise((r) => setTimeout(r, 1000));
    const before = await ufrag();
    await a.evaluate(() => window.session._restartIce());
    await until(ufrag, (u) => u !== before, 10_000);
    // Then the sender's websocket goes down and comes back (resumed).
    proxy.down();
    await waitEvent(a, 'reconnecting');
    await new Promise((r) => setTimeout(r, 1000));
    proxy.up();
    await waitEvent(a, 'reconnected', 20_000);
    await sending;
    const got = await until(() => received(b), (r) => r.length >= count, 20_000);
    assert.deepEqual(got.map((m) => Number(m.data)), [...Array(count).keys()]);
    console.log(`data: ${count} messages in order across an ICE restart (${before} → ${await ufrag()}) and a websocket resume`);
  } finally {
    await browser.close();
    proxy.close();
    server.stop();
  }
});

test('limits: a message over the maximum is refused before it is sent; sending without publish_data is refused by the relay', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'data-4', 'a');
    const b = await joinPage(browser.context, server, 'data-4', 'b');
    // A participant whose token does not grant publish_data.
    const token = server.token(`data-4`, 'quiet', 'publish,subscribe');
    const q = await joinPage(browser.context, server, 'data-4', 'quiet', { token });
    for (const p of [a, b, q]) await collect(p);
    const max = await a.evaluate(() => window.session.maxMessageSize);
    assert.ok(max >= 64 * 1024, `maximum ${max}`);
    const tooLarge = await a.evaluate(async (max) => {
      try {
        await window.session.send(new Uint8Array(max + 1));
        return null;
      } catch (e) {
        return { code: e.code, message: e.message };
      }
    }, max);
    assert.equal(tooLarge?.code, 'message_too_large', JSON.stringify(tooLarge));
    await a.evaluate((max) => window.session.send(new Uint8Array(max).fill(7)), max);
    const atMax = await until(() => received(b), (r) => r.length === 1, 10_000);
    assert.equal(atMax[0].data.length, max);
    // The relay refuses what `quiet` sends: it hears why, and nobody gets it.
    await q.evaluate(() => {
      window.errors = [];
      window.session.on('error', (e) => window.errors.push(e));
    });
    await q.evaluate(() => window.session.send('may I?'));
    const errors = await until(() => q.evaluate(() => window.errors), (e) => e.length > 0, 10_000);
    assert.equal(errors[0].code, 'forbidden');
    assert.match(errors[0].message, /publish_data/);
    const later = await q.evaluate(() => window.session.send('again').then(() => null, (e) => e.code));
    assert.equal(later, 'forbidden');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await received(a)).length, 0);
    assert.equal((await received(b)).length, 1);
    console.log(`data: maximum message ${max} bytes; refused: ${errors[0].message}`);
  } finally {
    await browser.close();
    server.stop();
  }
});
