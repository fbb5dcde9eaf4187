// Usage metering: a call of known length and traffic produces matching usage; the figures
// survive a restart; killing the process mid-call loses at most one flush interval.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying } from './harness.mjs';

async function call(server, browser, sid) {
  const started = Date.now();
  const a = await joinPage(browser.context, server, sid, 'alice');
  const b = await joinPage(browser.context, server, sid, 'bob');
  const joined = Date.now();
  const feedA = await publishWebcam(a);
  const feedB = await publishWebcam(b);
  await waitEvent(a, 'feed-published');
  await waitEvent(b, 'feed-published');
  await expectPlaying(a, await subscribe(a, feedB));
  await expectPlaying(b, await subscribe(b, feedA));
  return { a, b, started, joined };
}

const usage = (server) => JSON.parse(server.admin('usage', '--cid', server.cid, '--json'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('a call is metered', async () => {
  const server = await startServer({ args: ['--usage-flush-secs', '1'] });
  const browser = await launch();
  try {
    const { a, b, joined } = await call(server, browser, 'meter-1');
    await sleep(4000);
    const stats = await a.evaluate(async () => {
      let sent = 0;
      (await window.session.pc.getStats()).forEach((s) => {
        if (s.type === 'transport') sent += s.bytesSent;
      });
      return sent;
    });
    await a.evaluate(() => window.session.leave());
    await b.evaluate(() => window.session.leave());
    const seconds = (Date.now() - joined) / 1000;
    await sleep(500);
    const report = usage(server);
    assert.equal(report.sessions.length, 1);
    const s = report.sessions[0];
    assert.equal(s.sid, 'meter-1');
    assert.ok(s.ended_at, 'the session is closed');
    assert.equal(s.peak_participants, 2);
    // Two participants for `seconds` (both joined within the first second; 15% tolerance).
    const ps = s.participant_minutes * 60;
    assert.ok(Math.abs(ps - 2 * seconds) < 0.15 * 2 * seconds + 1, `${ps} participant-seconds for 2 × ${seconds}`);
    // What alice's browser sent reached the relay (bytes in include both participants).
    assert.ok(s.bytes_in >= stats * 0.9, `relay received ${s.bytes_in}, alice sent ${stats}`);
    // Each receives one of the other's three simulcast layers, while the relay receives all
    // of them: out is a part of in (836 kB of 1955 kB in one run, as the subscribers started
    // on the lower layers), never more than twice it.
    assert.ok(s.bytes_out > 0.1 * s.bytes_in && s.bytes_out < 2 * s.bytes_in, JSON.stringify(s));
  } finally {
    await browser.close();
    server.stop();
  }
});

test('usage survives a restart and a kill loses at most one flush interval', async () => {
  const first = await startServer({ args: ['--usage-flush-secs', '1'] });
  const browser = await launch();
  try {
    const { started, joined } = await call(first, browser, 'meter-2');
    await sleep(3000);
    const elapsed = (Date.now() - joined) / 1000;
    const sinceStart = (Date.now() - started) / 1000;
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    const s = usage(first).sessions[0];
    const ps = s.participant_minutes * 60;
    // At most one flush interval and one tick (1.25 s) per participant is lost, with 0.25 s
    // for the write; never more than happened.
    assert.ok(ps >= 2 * (elapsed - 1) - 1, `${ps} participant-seconds after ${elapsed} s`);
    assert.ok(ps <= 2 * sinceStart, `${ps} participant-seconds within ${sinceStart} s`);
    assert.ok(s.bytes_in > 0);

    // A new process on the same database still reports them.
    const second = await startServer({ db: first.db, key: first.key, cid: first.cid });
    try {
      const again = usage(second).sessions[0];
      assert.equal(again.participant_minutes, s.participant_minutes);
      assert.equal(again.bytes_in, s.bytes_in);
    } finally {
      second.stop();
    }
  } finally {
    await browser.close();
  }
});
