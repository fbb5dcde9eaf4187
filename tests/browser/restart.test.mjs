// A single server restarted during a call (no cluster): it stops, keeping its participants'
// places; the SDK reconnects to the server that starts next, which gives each page its old
// uid back; the pages publish again (the same feed id) and subscribe again, and the video
// plays again within seconds. No usage is lost: the first run's record is closed with its
// traffic, and the second run's session has its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying, until } from './harness.mjs';

const exited = (child) => new Promise((resolve) => {
  if (child.exitCode !== null) resolve(child.exitCode);
  else child.once('exit', (code) => resolve(code));
});

const usage = (server, sid) => JSON.parse(server.admin('usage', '--cid', server.cid, '--json')).sessions.filter((s) => s.sid === sid);

test('a single server restarted during a call: the pages take their places again, media resumes within seconds, no usage is lost', async () => {
  const args = ['--drain-timeout-secs', '0', '--usage-flush-secs', '60'];
  const first = await startServer({ args });
  const browser = await launch();
  let second = null;
  try {
    const alice = await joinPage(browser.context, first, 'restart-1', 'alice');
    const bob = await joinPage(browser.context, first, 'restart-1', 'bob');
    const uids = await Promise.all([alice, bob].map((p) => p.evaluate(() => window.session.uid)));
    const feed = await publishWebcam(alice);
    await waitEvent(bob, 'feed-published');
    await expectPlaying(bob, await subscribe(bob, feed));
    await new Promise((r) => setTimeout(r, 1000));

    const stopped = Date.now();
    first.child.kill('SIGTERM');
    assert.equal(await exited(first.child), 0);
    const down = Date.now() - stopped;
    second = await startServer({ args, db: first.db, key: first.key, cid: first.cid, secret: first.secret, port: first.port });
    const up = Date.now() - stopped;

    // Both pages reconnect and are who they were.
    await Promise.all([alice, bob].map((p) => waitEvent(p, 'reconnected', 30000)));
    const again = await Promise.all([alice, bob].map((p) => p.evaluate(() => window.session.uid)));
    assert.deepEqual(again, uids);
    const disconnected = await Promise.all([alice, bob].map((p) => p.evaluate(() => window.events.some((e) => e.ev === 'disconnected'))));
    assert.deepEqual(disconnected, [false, false]);

    // Alice's feed is published again under its id; bob plays it (subscribing again where
    // the SDK had let the subscription go, as an app does on feed-published).
    await until(() => bob.evaluate((feed) => window.session.feeds.has(feed), feed), (x) => x, 20000);
    const resubscribed = await bob.evaluate((feed) => window.session._subscribed.has(feed), feed);
    const video = resubscribed ? `remote-${feed}` : await bob.evaluate(async (feed) => {
      const v = document.createElement('video');
      v.id = 'again';
      document.body.append(v);
      await window.session.subscribe(feed, v);
      return v.id;
    }, feed);
    const playing = await expectPlaying(bob, video, 20000);
    const gap = Date.now() - stopped;
    console.log(`restart: the first server stopped after ${down} ms, the second answered at ${up} ms; bob plays alice again at ${gap} ms (${resubscribed ? 'subscription kept by the SDK' : 'subscribed again'}), ${JSON.stringify(playing)}`);
    assert.ok(gap < 15000, `${gap} ms without video`);

    // The first run's record is closed with its traffic; the second run's, closed as it
    // stops, has its own.
    second.child.kill('SIGTERM');
    assert.equal(await exited(second.child), 0);
    const records = usage(second, 'restart-1');
    console.log(`usage records: ${JSON.stringify(records)}`);
    assert.equal(records.length, 2, JSON.stringify(records));
    for (const r of records) {
      assert.ok(r.ended_at && r.bytes_in > 50000 && r.participant_minutes > 0, JSON.stringify(records));
    }
  } finally {
    await browser.close();
    first.stop();
    second?.stop();
  }
});
