// The link emulator itself (tests/link/linkem.py through link.mjs), measured with real UDP: a
// probe inside the participant's namespace sends to a socket in the test's namespace, across
// the emulated link. Delay, jitter (in order unless asked), seeded loss, the rate cap, the
// counters, and changing parameters while it runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { createLink } from './link.mjs';

const PROBE = join(dirname(fileURLToPath(import.meta.url)), 'link-probe.mjs');
const UDP_IP_HEADERS = 28;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Run link-probe.mjs in the link's namespace; resolves to its JSON report. */
function probe(link, opts, timeoutMs = 15000) {
  return new Promise((resolve, reject) => {
    const child = link.spawn(process.execPath, [PROBE, JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(out));
      else reject(new Error(`probe ${JSON.stringify(opts)} failed (${code ?? signal}): ${out}`));
    });
  });
}

/** A UDP socket on the link's test-namespace end that echoes, or only records arrivals. */
async function endpoint(link, { echo = false } = {}) {
  const sock = dgram.createSocket('udp4');
  const arrivals = [];
  sock.on('message', (msg, from) => {
    arrivals.push({ t: performance.now(), size: msg.length });
    if (echo) sock.send(msg, from.port, from.address);
  });
  await new Promise((r) => sock.bind(0, link.gateway, r));
  return { port: sock.address().port, arrivals, close: () => sock.close() };
}

/** Stats once nothing is queued or in flight any more (bounded by `timeoutMs`). */
async function settled(link, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await link.stats();
    const busy = s.up.queued_packets + s.up.in_flight + s.down.queued_packets + s.down.in_flight;
    if (busy === 0 || Date.now() > deadline) return s;
    await sleep(20);
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const inversions = (seqs) => seqs.filter((s, i) => i > 0 && s < seqs[i - 1]).length;

test('delay: the echo RTT is the sum of both one-way delays, set while it runs', async () => {
  const link = await createLink();
  const echo = await endpoint(link, { echo: true });
  try {
    const clean = await probe(link, { mode: 'ping', host: link.gateway, port: echo.port, count: 10, intervalMs: 20 });
    const before = clean.echoes.map(([, rtt]) => rtt);
    await link.set({ up: { delay_ms: 30 }, down: { delay_ms: 20 } });
    const slow = await probe(link, { mode: 'ping', host: link.gateway, port: echo.port, count: 20, intervalMs: 25 });
    const after = slow.echoes.map(([, rtt]) => rtt);
    console.log(`link delay: clean median ${median(before).toFixed(2)} ms; 30+20 ms: min ${Math.min(...after).toFixed(2)} median ${median(after).toFixed(2)} max ${Math.max(...after).toFixed(2)} ms`);
    assert.equal(clean.echoes.length, 10);
    assert.equal(slow.echoes.length, 20);
    assert.ok(median(before) < 10, `clean RTT ${median(before)}`);
    assert.ok(Math.min(...after) >= 49.5, `never faster than the delay: ${after}`);
    assert.ok(median(after) <= 62, `median RTT near 50 ms: ${after}`);
  } finally {
    echo.close();
    await link.close();
  }
});

test('jitter: delivery stays in order unless reorder is asked for', async () => {
  const link = await createLink({ up: { delay_ms: 30, jitter_ms: 20 } });
  const echo = await endpoint(link, { echo: true });
  try {
    const ping = { mode: 'ping', host: link.gateway, port: echo.port, count: 150, intervalMs: 2 };
    const fifo = await probe(link, ping);
    const rtts = fifo.echoes.map(([, rtt]) => rtt);
    await link.set({ up: { reorder: true } });
    const shuffled = await probe(link, ping);
    console.log(`link jitter 30±20 ms: FIFO RTT ${Math.min(...rtts).toFixed(1)}..${Math.max(...rtts).toFixed(1)} ms, ${inversions(fifo.echoes.map(([s]) => s))} inversions; reorder: ${inversions(shuffled.echoes.map(([s]) => s))} inversions of ${shuffled.echoes.length}`);
    assert.equal(fifo.echoes.length, 150);
    assert.equal(inversions(fifo.echoes.map(([s]) => s)), 0);
    assert.ok(Math.min(...rtts) >= 9.5, `delay - jitter is the floor: ${Math.min(...rtts)}`);
    assert.ok(Math.max(...rtts) - Math.min(...rtts) >= 10, `jitter shows: ${rtts}`);
    assert.equal(shuffled.echoes.length, 150);
    assert.ok(inversions(shuffled.echoes.map(([s]) => s)) > 0, 'reorder lets packets overtake');
  } finally {
    echo.close();
    await link.close();
  }
});

/** Send 2000 datagrams up a link with 10 % loss and seed 7; returns what arrived and the stats. */
async function lossyRun() {
  const link = await createLink({ up: { loss: 0.1 }, seed: 7 });
  const sink = await endpoint(link);
  try {
    const sent = await probe(link, { mode: 'blast', host: link.gateway, port: sink.port, count: 2000, pps: 2000, size: 100 });
    const stats = await settled(link);
    await sleep(50);
    return { sent: sent.sent, received: sink.arrivals.length, stats };
  } finally {
    sink.close();
    await link.close();
  }
}

test('loss: about the configured ratio over 2000 packets, repeatable by seed, all counted', async () => {
  const first = await lossyRun();
  const again = await lossyRun();
  const { up, down } = first.stats;
  const ratio = up.packets_dropped_loss / up.packets_in;
  console.log(`link loss 0.1: sent ${first.sent}, received ${first.received}, dropped ${up.packets_dropped_loss} (${ratio.toFixed(4)}); same seed again: dropped ${again.stats.up.packets_dropped_loss}; stats ${JSON.stringify(up)}`);
  assert.equal(up.packets_in, 2000);
  assert.equal(up.bytes_in, 2000 * (100 + UDP_IP_HEADERS));
  assert.equal(up.packets_forwarded + up.packets_dropped_loss, up.packets_in);
  assert.equal(up.bytes_forwarded + up.bytes_dropped_loss, up.bytes_in);
  assert.equal(up.packets_forwarded, first.received);
  assert.equal(up.packets_dropped_queue, 0);
  assert.equal(down.packets_in, 0, 'nothing else crosses the link');
  // 3 standard deviations of a binomial(2000, 0.1) ratio is 0.020.
  assert.ok(Math.abs(ratio - 0.1) < 0.02, `loss ratio ${ratio}`);
  assert.equal(again.stats.up.packets_dropped_loss, up.packets_dropped_loss, 'same seed, same losses');
});

test('rate: a 400 kbit/s cap holds throughput at the cap and tail-drops the excess', async () => {
  const link = await createLink({ up: { rate_kbit: 400, queue_ms: 100 } });
  const sink = await endpoint(link);
  try {
    // 1028-byte IP packets at 100/s: 822 kbit/s offered for 3 s, twice the cap.
    const sent = await probe(link, { mode: 'blast', host: link.gateway, port: sink.port, count: 300, pps: 100, size: 1000 });
    const { up } = await settled(link);
    await sleep(50);
    const a = sink.arrivals;
    // From the 10th arrival on the queue is full and the cap alone paces delivery.
    const bits = (a.length - 10) * a[0].size * 8 + (a.length - 10) * UDP_IP_HEADERS * 8;
    const kbit = bits / (a.at(-1).t - a[9].t);
    console.log(`link rate 400 kbit/s: offered ${(((sent.sent * (1000 + UDP_IP_HEADERS) * 8) / sent.ms)).toFixed(0)} kbit/s, delivered ${kbit.toFixed(1)} kbit/s; forwarded ${up.packets_forwarded}, queue drops ${up.packets_dropped_queue} of ${up.packets_in}`);
    assert.equal(up.packets_in, 300);
    assert.equal(up.packets_forwarded + up.packets_dropped_queue, up.packets_in);
    assert.equal(up.packets_forwarded, a.length);
    assert.ok(up.packets_dropped_queue > 100, `the excess is dropped: ${up.packets_dropped_queue}`);
    assert.ok(kbit > 360 && kbit < 420, `delivered ${kbit} kbit/s`);

    // Lifting the cap while it runs: the same burst now goes through whole.
    await link.set({ up: { rate_kbit: 0 } });
    a.length = 0;
    await probe(link, { mode: 'blast', host: link.gateway, port: sink.port, count: 100, pps: 1000, size: 1000 });
    const lifted = await settled(link);
    await sleep(50);
    assert.equal(a.length, 100);
    assert.equal(lifted.up.packets_dropped_queue, up.packets_dropped_queue);
  } finally {
    sink.close();
    await link.close();
  }
});
