// The websocket drops during a call: the SDK reconnects and resumes, media keeps flowing,
// the other participant sees no leave, and negotiation works again afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying } from './harness.mjs';

test('websocket cut: resume without a leave', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'reconnect-1', 'alice');
    const b = await joinPage(browser.context, server, 'reconnect-1', 'bob');
    const feedA = await publishWebcam(a);
    await waitEvent(b, 'feed-published');
    const videoB = await subscribe(b, feedA);
    await expectPlaying(b, videoB);

    // Cut bob's websocket (the server sees a dropped connection).
    await b.evaluate(() => window.session._ws.close());
    await waitEvent(b, 'reconnecting');
    await waitEvent(b, 'reconnected');
    const uidBefore = await b.evaluate(() => window.session.uid);
    assert.ok(uidBefore);

    // Media never stopped; alice saw no leave.
    await expectPlaying(b, videoB);
    await new Promise((r) => setTimeout(r, 1000));
    const leftSeen = await a.evaluate(() => window.events.some((e) => e.ev === 'participant-left'));
    assert.equal(leftSeen, false);

    // Negotiation still works: alice shares her screen, bob subscribes to it.
    const screen = await a.evaluate(async () => {
      const v = document.createElement('video');
      document.body.append(v);
      const feed = await window.session.publish({ source: 'screen', target: v });
      return feed.feedId;
    });
    await b.waitForFunction((id) => window.events.some((e) => e.ev === 'feed-published' && e.v.feedId === id), screen);
    const screenVideo = await subscribe(b, screen);
    const s = await expectPlaying(b, screenVideo);
    assert.ok(s.width > 0);
  } finally {
    await browser.close();
    server.stop();
  }
});

test('ICE restart: new credentials, media keeps flowing', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'restart-1', 'alice');
    const b = await joinPage(browser.context, server, 'restart-1', 'bob');
    const feedA = await publishWebcam(a);
    await waitEvent(b, 'feed-published');
    const videoB = await subscribe(b, feedA);
    await expectPlaying(b, videoB);
    const transport = () =>
      b.evaluate(async () => {
        const stats = await window.session.pc.getStats();
        let t = null;
        stats.forEach((s) => {
          if (s.type === 'transport') t = { ufrag: s.iceLocalUsernameFragment, changes: s.selectedCandidatePairChanges, state: s.iceState };
        });
        return t;
      });
    const before = await transport();
    await b.evaluate(() => window.session._restartIce());
    // Checks with the new credentials succeed: the browser selects a pair of the new
    // ICE generation.
    let after = before;
    for (let i = 0; i < 50 && !(after.ufrag !== before.ufrag && after.changes > before.changes && after.state === 'connected'); i++) {
      await new Promise((r) => setTimeout(r, 200));
      after = await transport();
    }
    assert.notEqual(after.ufrag, before.ufrag, JSON.stringify({ before, after }));
    assert.ok(after.changes > before.changes, JSON.stringify({ before, after }));
    assert.equal(after.state, 'connected');
    await expectPlaying(b, videoB);
  } finally {
    await browser.close();
    server.stop();
  }
});
