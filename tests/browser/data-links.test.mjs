// Data channels behind emulated links (tests/link): a lossy link delays nothing but the
// messages it loses, reliable messages sent while a participant's connection is cut
// arrive, in order, once it is back, and a receiver behind a narrow link holds back a
// sender on another relay core instead of losing messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { freePort, joinPage, scrape, until } from './harness.mjs';
import { startLinkServer, linkedBrowsers } from './link.mjs';

/** Record every `data` event of the page with its arrival time: the payload is JSON
 * `{ seq, at }` (`at`: when it was sent, on the same machine's clock). */
async function record(page) {
  await page.evaluate(() => {
    window.got = [];
    window.session.on('data', ({ data, reliable }) => {
      const m = JSON.parse(data);
      window.got.push({ reliable, seq: m.seq, delay: Date.now() - m.at });
    });
  });
}

/** In the page: send `count` messages every `everyMs`, each reliable and lossy in turn when
 * `both`, else reliable; resolves with how many were sent, once all were handed over. */
function sendSeries(page, count, everyMs, both) {
  return page.evaluate(
    async ({ count, everyMs, both }) => {
      const pad = 'x'.repeat(150);
      const sends = [];
      for (let seq = 0; seq < count; seq++) {
        const body = () => JSON.stringify({ seq, at: Date.now(), pad });
        sends.push(window.session.send(body()));
        if (both) sends.push(window.session.send(body(), { reliable: false }));
        await new Promise((r) => setTimeout(r, everyMs));
      }
      await Promise.all(sends);
      return count;
    },
    { count, everyMs, both },
  );
}

const percentile = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];

test('10 % loss on the sender’s link: lossy messages arrive in part, reliable ones all, neither holds up the other', async () => {
  const server = await startLinkServer();
  const open = [];
  try {
    const { links, browsers } = await linkedBrowsers(server, [11, 12], open);
    const a = await joinPage(browsers[0].context, server, 'data-loss', 'a');
    const b = await joinPage(browsers[1].context, server, 'data-loss', 'b');
    await record(b);
    // Both data channels up before the link turns bad.
    await a.evaluate(() => window.session.send(JSON.stringify({ seq: -1, at: Date.now() })));
    await until(() => b.evaluate(() => window.got.length), (n) => n === 1, 10_000);
    await b.evaluate(() => (window.got = []));
    await links[0].set({ up: { loss: 0.1, delay_ms: 25 }, down: { loss: 0.1, delay_ms: 25 } });
    const count = 500;
    await sendSeries(a, count, 10, true);
    const got = await until(() => b.evaluate(() => window.got), (g) => g.filter((m) => m.reliable).length >= count, 30_000);
    await new Promise((r) => setTimeout(r, 1000));
    const all = await b.evaluate(() => window.got);
    const reliable = all.filter((m) => m.reliable);
    const lossy = all.filter((m) => !m.reliable);
    const stats = await links[0].stats();
    const summary = {
      reliable: reliable.length,
      lossy: lossy.length,
      reliableDelayMs: { p50: percentile(reliable.map((m) => m.delay), 0.5), p95: percentile(reliable.map((m) => m.delay), 0.95), max: Math.max(...reliable.map((m) => m.delay)) },
      lossyDelayMs: { p50: percentile(lossy.map((m) => m.delay), 0.5), p95: percentile(lossy.map((m) => m.delay), 0.95), max: Math.max(...lossy.map((m) => m.delay)) },
      droppedUp: stats.up.packets_dropped_loss,
    };
    console.log(`data-loss: ${JSON.stringify(summary)} (got ${got.length} when the last reliable came)`);
    assert.ok(summary.droppedUp > 50, 'the link lost packets');
    // Every reliable message, once, in order.
    assert.deepEqual(reliable.map((m) => m.seq), [...Array(count).keys()]);
    // Lossy ones in part: about what the link let through, never retransmitted.
    assert.ok(lossy.length >= 0.75 * count && lossy.length < count, `${lossy.length} of ${count} lossy messages`);
    assert.equal(new Set(lossy.map((m) => m.seq)).size, lossy.length, 'no lossy message twice');
    // A lost reliable message holds up those after it on its own channel only: the lossy
    // ones keep their link delay.
    assert.ok(summary.lossyDelayMs.p95 < 250, JSON.stringify(summary));
  } finally {
    for (const o of open.reverse()) await o.close();
    server.stop();
  }
});

test('reliable messages sent while the sender’s connection is cut arrive in order once it is back', async () => {
  const server = await startLinkServer();
  const open = [];
  try {
    const { links, browsers } = await linkedBrowsers(server, [13, 14], open);
    const a = await joinPage(browsers[0].context, server, 'data-cut', 'a');
    const b = await joinPage(browsers[1].context, server, 'data-cut', 'b');
    await record(b);
    const iceOf = (page) =>
      page.evaluate(async () => {
        let t = null;
        (await window.session.pc.getStats()).forEach((s) => {
          if (s.type === 'transport') t = { ufrag: s.iceLocalUsernameFragment, state: s.iceState };
        });
        return t;
      });
    const iceBefore = await iceOf(a);
    await a.evaluate(() => (window.events.length = 0));
    const count = 400;
    const sending = sendSeries(a, count, 20, false);
    // 2 s in, the link goes dead both ways for 7 s: the websocket falls silent (the SDK
    // reconnects and resumes when it is back), and ICE disconnects (the SDK restarts it).
    await new Promise((r) => setTimeout(r, 2000));
    const cutAt = Date.now();
    await links[0].set({ up: { loss: 1 }, down: { loss: 1 } });
    await new Promise((r) => setTimeout(r, 7000));
    await links[0].set({ up: { loss: 0 }, down: { loss: 0 } });
    await sending;
    const got = await until(() => b.evaluate(() => window.got), (g) => g.length >= count, 60_000);
    const backMs = Date.now() - cutAt - 7000;
    const events = await a.evaluate(() => window.events.map((e) => e.ev));
    const ice = { before: iceBefore, after: await iceOf(a) };
    const late = got.filter((m) => m.delay > 1000).length;
    console.log(`data-cut: ${got.length} of ${count} after a 7 s cut, the last ${backMs} ms after it ended; ${late} held over the cut; sender's events ${JSON.stringify(events)}, ICE ${JSON.stringify(ice)}`);
    await new Promise((r) => setTimeout(r, 500));
    const all = await b.evaluate(() => window.got);
    assert.deepEqual(all.map((m) => m.seq), [...Array(count).keys()], 'every message once, in order');
    assert.ok(late > 100, 'messages were held over the cut');
    assert.ok(events.includes('reconnected'), `the websocket resumed: ${JSON.stringify(events)}`);
  } finally {
    for (const o of open.reverse()) await o.close();
    server.stop();
  }
});

test('a receiver behind a narrow link holds back a sender on another relay core: every message arrives, in order', { timeout: 120_000 }, async () => {
  const metricsPort = await freePort();
  // Two relay cores, and a session spreads to the second at its second participant.
  const server = await startLinkServer({ cores: 2, args: ['--spread-after', '1', '--metrics-http', `127.0.0.1:${metricsPort}`] });
  const open = [];
  const perCore = async (name) => {
    const { sample } = await scrape(metricsPort);
    return [0, 1].map((c) => sample(`webrtcai_relay_${name}{core="${c}"}`));
  };
  try {
    const { links, browsers } = await linkedBrowsers(server, [15, 16], open);
    const a = await joinPage(browsers[0].context, server, 'data-slow', 'a');
    const aCore = (await until(() => perCore('participants'), (n) => n.includes(1), 10_000)).indexOf(1);
    const b = await joinPage(browsers[1].context, server, 'data-slow', 'b');
    await until(() => perCore('participants'), (n) => n[0] === 1 && n[1] === 1, 10_000);
    await record(b);
    await a.evaluate(() => window.session.send(JSON.stringify({ seq: -1, at: Date.now() })));
    await until(() => b.evaluate(() => window.got.length), (n) => n === 1, 10_000);
    await b.evaluate(() => (window.got = []));
    // b receives at 8 Mbit/s; a may send 4 MiB/s, several times b's rate. Without the hold b's
    // core would queue what b cannot take, and drop copies once 8 MiB wait
    // (docs/relay.md#data-channels): 10 MB are more than b takes while a sends them unheld.
    await links[1].set({ down: { rate_kbit: 8000 } });
    const count = 640;
    const started = Date.now();
    const sent = await a.evaluate(async (count) => {
      const pad = 'x'.repeat(16_000);
      let bytes = 0;
      for (let seq = 0; seq < count; seq++) {
        const m = JSON.stringify({ seq, at: Date.now(), pad });
        bytes += m.length;
        await window.session.send(m);
      }
      return bytes;
    }, count);
    const sentMs = Date.now() - started;
    await until(() => b.evaluate(() => window.got.length), (n) => n >= count, 60_000).catch(async (e) => {
      throw new Error(`${e.message}; relay undeliverable ${await perCore('data_undeliverable_total')}, held ${await perCore('data_held_for_receivers_total')}`);
    });
    const ms = Date.now() - started;
    const held = await perCore('data_held_for_receivers_total');
    const undeliverable = await perCore('data_undeliverable_total');
    console.log(`data-slow: ${count} messages, ${(sent / 1e6).toFixed(1)} MB, a on core ${aCore}, sent in ${sentMs} ms, received in ${ms} ms (${((8 * sent) / ms / 1000).toFixed(1)} Mbit/s); held for receivers ${JSON.stringify(held)}, undeliverable ${JSON.stringify(undeliverable)}`);
    await new Promise((r) => setTimeout(r, 500));
    const all = await b.evaluate(() => window.got);
    assert.deepEqual(all.map((m) => m.seq), [...Array(count).keys()], 'every message once, in order');
    assert.deepEqual(undeliverable, [0, 0]);
    // The sender waited, on its own core, for the receiver on the other.
    assert.ok(held[aCore] > 0, `a was held back: ${JSON.stringify(held)}`);
  } finally {
    for (const o of open.reverse()) await o.close();
    server.stop();
  }
});
