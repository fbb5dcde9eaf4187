// Draining: the admin API's drain (or SIGTERM) takes the server out of rotation (/readyz 503),
// refuses new sessions with `draining` while the calls it has go on, and stops the process
// once they end, or when its drain timeout is up, with the sessions' usage records closed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying, until } from './harness.mjs';

const exited = (child) => new Promise((resolve) => {
  if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode ?? child.signalCode);
  else child.once('exit', (code, signal) => resolve(code ?? signal));
});
const usage = (server, sid) => JSON.parse(server.admin('usage', '--cid', server.cid, '--json')).sessions.filter((s) => s.sid === sid);
/** Join `sid` from `page` through the SDK; the error code if refused. */
const tryJoin = (page, server, sid) => page.evaluate(async ({ key, sid }) => {
  const { WebRTCai } = await import('/sdk/webrtcai.js');
  return WebRTCai.init({ key }).join(sid, { name: 'late' }).then((s) => { window.late = s; return 'joined'; }, (e) => e.code);
}, { key: server.key, sid });

test('a drained server takes no new session, lets its calls finish, then stops', async () => {
  const server = await startServer({ args: ['--admin-secret', 'drain-secret', '--usage-flush-secs', '60'] });
  const browser = await launch();
  try {
    assert.equal((await fetch(`${server.base}/readyz`)).status, 200);
    const a = await joinPage(browser.context, server, 'drain-1', 'alice');
    const b = await joinPage(browser.context, server, 'drain-1', 'bob');
    const feed = await publishWebcam(a);
    await waitEvent(b, 'feed-published');
    const video = await subscribe(b, feed);
    await expectPlaying(b, video);

    const r = await fetch(`${server.base}/admin/drain`, { method: 'POST', headers: { authorization: 'Bearer drain-secret' } });
    assert.equal(r.status, 202);
    await until(async () => (await fetch(`${server.base}/readyz`)).status, (s) => s === 503, 5000);
    assert.equal(await (await fetch(`${server.base}/readyz`)).text(), 'draining');
    // A new session is refused; the running call goes on, and takes a late joiner.
    const other = await browser.context.newPage();
    await other.goto(`${server.base}/`);
    assert.equal(await tryJoin(other, server, 'drain-2'), 'draining');
    assert.equal(await tryJoin(other, server, 'drain-1'), 'joined');
    await expectPlaying(b, video);
    assert.equal(server.child.exitCode, null, 'still running while the call goes on');

    // The last participants leave: the server stops by itself.
    const left = Date.now();
    await other.evaluate(() => window.late.leave());
    await b.evaluate(() => window.session.leave());
    await a.evaluate(() => window.session.leave());
    const code = await exited(server.child);
    console.log(`drain: the server stopped ${Date.now() - left} ms after the last leave (exit ${code})`);
    assert.equal(code, 0);
    const [record] = usage(server, 'drain-1');
    assert.ok(record?.ended_at, `the session's record is closed: ${JSON.stringify(record)}`);
    assert.ok(record.participant_minutes > 0);
  } finally {
    await browser.close();
    server.stop();
  }
});

test('SIGTERM with a call still running: the server stops after its drain timeout and closes the record', async () => {
  const server = await startServer({ args: ['--drain-timeout-secs', '2', '--usage-flush-secs', '60'] });
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'drain-3', 'alice');
    const b = await joinPage(browser.context, server, 'drain-3', 'bob');
    const feed = await publishWebcam(a);
    await waitEvent(b, 'feed-published');
    await expectPlaying(b, await subscribe(b, feed));
    const sent = Date.now();
    server.child.kill('SIGTERM');
    const code = await exited(server.child);
    const took = Date.now() - sent;
    console.log(`SIGTERM with two participants: stopped after ${took} ms (exit ${code})`);
    assert.equal(code, 0);
    assert.ok(took >= 1900 && took < 6000, `${took} ms`);
    const [record] = usage(server, 'drain-3');
    assert.ok(record?.ended_at, `the session's record is closed: ${JSON.stringify(record)}`);
    assert.ok(record.participant_minutes > 0, JSON.stringify(record));
    // The relay's counters at the stop are in it too (no flush came in the call's seconds).
    assert.ok(record.bytes_in > 100000 && record.bytes_out > 100000, JSON.stringify(record));
  } finally {
    await browser.close();
    server.stop();
  }
});
