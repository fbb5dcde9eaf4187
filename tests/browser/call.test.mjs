// Two Chromium pages in one session: each publishes its fake webcam and subscribes to the
// other; both play decoded frames; one leaves and the other is told.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying } from './harness.mjs';

test('two browsers see each other, then one leaves', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'call-1', 'alice');
    const b = await joinPage(browser.context, server, 'call-1', 'bob');
    const joined = await waitEvent(a, 'participant-joined');
    assert.equal(joined.name, 'bob');

    const feedA = await publishWebcam(a);
    const feedB = await publishWebcam(b);
    const seenByB = await waitEvent(b, 'feed-published');
    assert.equal(seenByB.feedId, feedA);
    const seenByA = await waitEvent(a, 'feed-published');
    assert.equal(seenByA.feedId, feedB);
    assert.deepEqual([...seenByA.kinds].sort(), ['audio', 'video']);

    const videoA = await subscribe(a, feedB);
    const videoB = await subscribe(b, feedA);
    const sa = await expectPlaying(a, videoA);
    const sb = await expectPlaying(b, videoB);
    assert.ok(sa.width > 0 && sb.width > 0);

    await b.evaluate(() => window.session.leave());
    const left = await waitEvent(a, 'participant-left');
    const gone = await waitEvent(a, 'feed-unpublished');
    assert.equal(gone.feedId, feedB);
    assert.ok(left.uid);
  } finally {
    await browser.close();
    server.stop();
  }
});
