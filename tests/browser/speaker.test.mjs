// Active speaker: pages publish the fake microphone (Chromium's beeps), one of them muted. The
// relay reads each publisher's audio level from the audio-level header extension; signalling
// picks the dominant speaker. Every page hears `speaking` for the beeping ones, never for the
// muted one, and `active-speaker` names a beeping one; muting that one moves it to the other.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, until } from './harness.mjs';

/** Publish the fake microphone only, muted or not. */
async function publishMic(page, muted) {
  return page.evaluate(async (muted) => {
    const feed = await window.session.publish({ source: 'webcam', video: false });
    feed.stream.getAudioTracks()[0].enabled = !muted;
    window.mic = feed.stream.getAudioTracks()[0];
    return window.session.uid;
  }, muted);
}

/** The speaking and active-speaker events a page saw. */
async function speech(page) {
  return page.evaluate(() => window.events.filter((e) => e.ev === 'speaking' || e.ev === 'active-speaker'));
}

/** Who speaks now by the page's events: uid → speaking. */
function speakingNow(events) {
  const now = {};
  for (const e of events) if (e.ev === 'speaking') now[e.v.uid] = e.v.speaking;
  return now;
}

function activeNow(events) {
  return events.filter((e) => e.ev === 'active-speaker').at(-1)?.v.uid;
}

test('the beeping publishers speak, the muted one never; the dominant speaker follows a mute', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const [a, b, c, watcher] = await Promise.all(['a', 'b', 'c', 'watcher'].map((n) => joinPage(browser.context, server, 'speaker-1', n)));
    const ua = await publishMic(a, false);
    const ub = await publishMic(b, false);
    const uc = await publishMic(c, true);
    // Both beeping ones speak, on the watcher's page and on their own.
    const seen = await until(() => speech(watcher), (ev) => speakingNow(ev)[ua] && speakingNow(ev)[ub] && activeNow(ev), 15_000);
    const first = activeNow(seen);
    console.log(`speaker: a=${ua} b=${ub} c=${uc}, dominant ${first}; ${JSON.stringify(seen.map((e) => e.v))}`);
    assert.ok(first === ua || first === ub, `dominant speaker ${first}`);
    assert.ok((await speech(a)).some((e) => e.ev === 'speaking' && e.v.uid === ua), "a's own page hears it speak");
    // Some seconds on: the muted one never spoke, and the dominant speaker held.
    await new Promise((r) => setTimeout(r, 5000));
    const steady = await speech(watcher);
    assert.ok(!steady.some((e) => e.v.uid === uc), `the muted publisher was named: ${JSON.stringify(steady.map((e) => e.v))}`);
    const switches = steady.filter((e) => e.ev === 'active-speaker').length;
    console.log(`speaker: over ${steady.length} events, ${switches} dominant-speaker changes`);
    // Two as loud as each other do not take turns: the first choice, and at most one change.
    assert.ok(switches <= 2, `${switches} dominant-speaker events: ${JSON.stringify(steady.map((e) => e.v))}`);
    // The dominant one mutes: it stops speaking and the other takes over.
    const [dominantPage, otherUid] = first === ua ? [a, ub] : [b, ua];
    const mutedAt = Date.now();
    await dominantPage.evaluate(() => (window.mic.enabled = false));
    const after = await until(() => speech(watcher), (ev) => speakingNow(ev)[first] === false && activeNow(ev) === otherUid, 10_000);
    console.log(`speaker: ${Date.now() - mutedAt} ms after the mute, dominant ${activeNow(after)}`);
    assert.ok(!after.some((e) => e.v.uid === uc), 'the muted publisher was never named');
  } finally {
    await browser.close();
    server.stop();
  }
});
