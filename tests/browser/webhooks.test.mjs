// Webhooks to a real HTTP receiver on this machine: a Chromium call's events arrive signed,
// in order, once each; while the receiver is down they wait, and arrive in order when it is
// back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';
import {
  startServer, freePort, scrape, launch, joinPage, publishWebcam, subscribe, expectPlaying, until,
} from './harness.mjs';

/** What a customer's receiver does: check the signature with the key's secret. */
function verify(secret, header, body) {
  const { t, v1 } = Object.fromEntries(header.split(',').map((kv) => kv.split('=')));
  const expected = createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');
  const fresh = Math.abs(Date.now() / 1000 - Number(t)) < 300;
  return fresh && expected.length === v1.length && timingSafeEqual(Buffer.from(expected), Buffer.from(v1));
}

/** A receiver on `port` that keeps every delivery; `answer` is its status. */
async function startReceiver(port, secret, got) {
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      got.push({
        at: Date.now(),
        key: req.headers['webrtcai-key'],
        verified: verify(secret, req.headers['webrtcai-signature'] ?? '', body),
        event: JSON.parse(body),
      });
      res.writeHead(204).end();
    });
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

const kinds = (got, sid) => got.filter((g) => g.event.session?.sid === sid).map((g) => g.event.event);

test('a call\'s events reach the client\'s webhook signed and in order, also after the receiver was down', async () => {
  const metricsPort = await freePort();
  const server = await startServer({ recording: true, args: ['--metrics-http', `127.0.0.1:${metricsPort}`] });
  const port = await freePort();
  const got = [];
  let receiver = await startReceiver(port, server.secret, got);
  const browser = await launch();
  try {
    // Refused settings say why.
    assert.throws(() => server.admin('client', 'webhook', '--cid', server.cid, '--url', 'ftp://x', '--key', server.key), /not an http/);
    assert.throws(() => server.admin('client', 'webhook', '--cid', server.cid, '--url', `http://127.0.0.1:${port}/`, '--key', 'wk_nope'), /no key wk_nope/);
    const set = JSON.parse(server.admin('client', 'webhook', '--cid', server.cid, '--url', `http://127.0.0.1:${port}/hooks`, '--key', server.key));
    assert.equal(set.url, `http://127.0.0.1:${port}/hooks`);

    const a = await joinPage(browser.context, server, 'hooks-1', 'alice');
    const feed = await publishWebcam(a);
    const b = await joinPage(browser.context, server, 'hooks-1', 'bob');
    await expectPlaying(b, await subscribe(b, feed));
    await a.evaluate(() => window.session.startRecording());
    await new Promise((r) => setTimeout(r, 2000));
    await a.evaluate(() => window.session.stopRecording());
    await b.evaluate(() => window.session.leave());
    await a.evaluate(() => window.session.leave());
    const all = await until(() => kinds(got, 'hooks-1'), (k) => k.includes('session_ended') && k.includes('recording_finished'), 15000);
    console.log(`webhooks: ${all.join(', ')}`);
    assert.equal(all[0], 'session_started');
    assert.equal(all.at(-1), 'session_ended');
    const at = (kind, pred = () => true) => got.findIndex((g) => g.event.event === kind && g.event.session?.sid === 'hooks-1' && pred(g.event));
    const named = (n) => (e) => e.participant?.name === n;
    assert.ok(at('participant_joined', named('alice')) < at('feed_published'));
    assert.ok(at('feed_published') < at('participant_joined', named('bob')));
    assert.ok(at('participant_joined', named('bob')) < at('participant_left', named('bob')));
    assert.ok(at('participant_left', named('bob')) < at('participant_left', named('alice')));
    assert.ok(at('feed_published') < at('feed_unpublished'));
    assert.equal(all.filter((k) => k === 'participant_joined').length, 2);
    assert.equal(all.filter((k) => k === 'participant_left').length, 2);
    const published = got[at('feed_published')].event;
    assert.equal(published.feed.feed_id, feed);
    assert.equal(published.cid, server.cid);
    const recorded = got.filter((g) => g.event.event === 'recording_finished');
    assert.ok(recorded.length >= 1 && recorded.every((g) => g.event.recording.duration_ms > 1000), JSON.stringify(recorded.map((g) => g.event)));
    assert.ok(got.every((g) => g.verified), 'every delivery carries a signature that verifies with the key\'s secret');
    assert.ok(got.every((g) => g.key === server.key));
    assert.ok(got.every((g) => g.event.dropped === 0));
    assert.equal(new Set(got.map((g) => g.event.id)).size, got.length, 'each event once');

    // The receiver goes down: the next session's events wait, then arrive in order.
    await receiver.close();
    const before = got.length;
    const c = await joinPage(browser.context, server, 'hooks-2', 'carol');
    await publishWebcam(c);
    await c.evaluate(() => window.session.leave());
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(got.length, before, 'nothing arrives while the receiver is down');
    const back = Date.now();
    receiver = await startReceiver(port, server.secret, got);
    const late = await until(() => kinds(got, 'hooks-2'), (k) => k.includes('session_ended'), 40000);
    const first = got.find((g) => g.event.session?.sid === 'hooks-2');
    console.log(`receiver back: hooks-2's ${late.length} events arrived ${first.at - back} ms after it was (${late.join(', ')})`);
    assert.deepEqual(late, ['session_started', 'participant_joined', 'feed_published', 'feed_unpublished', 'participant_left', 'session_ended']);
    assert.ok(got.slice(before).every((g) => g.verified && g.event.dropped === 0));
    // /metrics counts the deliveries, and the tries that failed while the receiver was down.
    const { text: metrics, sample } = await scrape(metricsPort);
    assert.equal(sample('webrtcai_signalling_webhooks_delivered_total'), got.length, metrics);
    assert.ok(sample('webrtcai_signalling_webhook_failed_tries_total') >= 1);
    assert.equal(sample('webrtcai_signalling_webhooks_lost_total'), 0);

    // Cleared: no more deliveries.
    assert.deepEqual(JSON.parse(server.admin('client', 'webhook', '--cid', server.cid, '--clear')), { cleared: true });
    await new Promise((r) => setTimeout(r, 2500)); // a client's webhook is read again every 2 s
    const count = got.length;
    const d = await joinPage(browser.context, server, 'hooks-3', 'dave');
    await d.evaluate(() => window.session.leave());
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(got.length, count);
  } finally {
    await browser.close();
    await receiver.close();
    server.stop();
  }
});
