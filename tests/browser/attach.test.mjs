// Subscriptions and their elements: a feed subscribed with no element still plays its audio;
// attached to two elements it shows in both, the larger deciding the layer; detached from the
// larger it drops to the smaller's layer, from both it is paused, attached again it resumes.
// A page whose audio the browser blocks (autoplay policy) is told, and startAudio from a
// click plays it.
import { test } from 'node:test';
import { createServer } from 'node:http';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, publishWebcam, waitEvent, until } from './harness.mjs';

/** The audio elements of the page that play a subscribed feed's audio: the test sees them by
 * HTMLMediaElement.play (the SDK makes its own, outside the document). */
function watchPlays(page) {
  return page.evaluate(() => {
    window.audioPlays = [];
    const play = HTMLMediaElement.prototype.play;
    HTMLMediaElement.prototype.play = function () {
      if (this instanceof HTMLAudioElement) window.audioPlays.push(this);
      return play.call(this);
    };
  });
}

/** Whether an audio element plays a live audio track: not paused and its time moving. */
async function audioPlaying(page) {
  const at = () => page.evaluate(() => window.audioPlays.map((a) => ({ paused: a.paused, t: a.currentTime, live: a.srcObject?.getAudioTracks().some((t) => t.readyState === 'live') ?? false })));
  const x = await at();
  await new Promise((r) => setTimeout(r, 1000));
  const y = await at();
  return y.some((e, i) => !e.paused && e.live && x[i] && e.t > x[i].t + 0.5);
}

const layer = (page) => page.evaluate(async () => (await window.session.quality()).subscriptions[0] ?? null);

test('a subscription plays audio with no element, shows in several, and pauses with none', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'attach', 'alice');
    const b = await joinPage(browser.context, server, 'attach', 'bob');
    await watchPlays(b);
    const feedId = await publishWebcam(a);
    await waitEvent(b, 'feed-published');
    await b.evaluate(async (id) => {
      window.sub = await window.session.subscribe(id);
    }, feedId);
    assert.ok(await audioPlaying(b), 'the audio plays with no element');
    assert.deepEqual(await b.evaluate(() => window.sub.elements.length), 0);
    // Nothing shows the video: adaptive stream pauses it.
    await until(() => layer(b), (q) => q?.paused === 'hidden', 10000);

    const sizes = await b.evaluate(() => {
      const make = (id, w, h, left) => {
        const v = document.createElement('video');
        v.id = id;
        Object.assign(v.style, { width: `${w}px`, height: `${h}px`, left: `${left}px` });
        document.body.append(v);
        return v;
      };
      window.sub.attach(make('small', 320, 180, 0));
      window.sub.attach('big');
      return window.sub.elements.map((v) => v.id);
    }).catch((e) => e.message);
    assert.match(String(sizes), /target must be a <video> element/, 'attach checks its element');
    await b.evaluate(() => {
      const v = document.createElement('video');
      v.id = 'big';
      Object.assign(v.style, { width: '1280px', height: '720px', left: '330px' });
      document.body.append(v);
      window.sub.attach(v);
    });
    assert.deepEqual(await b.evaluate(() => window.sub.elements.map((v) => v.id)), ['small', 'big']);
    const both = await until(
      () => b.evaluate(() => ['small', 'big'].map((id) => document.getElementById(id).videoWidth)),
      (w) => w.every((x) => x >= 1280),
      15000,
    );
    console.log(`attached twice: both show ${both[0]} wide`);
    const top = await until(() => layer(b), (q) => q?.paused === null && q.current === q.layers - 1, 15000);

    await b.evaluate(() => window.sub.detach('big'));
    assert.equal(await b.evaluate(() => document.getElementById('big').srcObject), null);
    const low = await until(() => layer(b), (q) => q.target === 0 && q.current === 0, 15000);
    console.log(`detached from the 1280x720 element: layer ${top.current} → ${low.current}`);

    await b.evaluate(() => window.sub.detach());
    await until(() => layer(b), (q) => q.paused === 'hidden', 10000);
    assert.ok(await audioPlaying(b), 'the audio goes on while no element shows the video');

    await b.evaluate(() => window.sub.attach('big'));
    await until(() => layer(b), (q) => q.paused === null && q.current === q.layers - 1, 15000);

    await b.evaluate(() => window.sub.unsubscribe());
    assert.equal(await b.evaluate(() => document.getElementById('big').srcObject), null);
    assert.equal(await b.evaluate(() => window.audioPlays.every((a) => a.paused)), true, 'unsubscribed, nothing plays');
  } finally {
    await browser.close();
    server.stop();
  }
});

// The page's own script subscribes when a feed appears, with no interaction yet. Playwright's
// evaluate (and waitForFunction) counts as a gesture, so the page is served whole and tells
// the test through its console until the person's click.
const AUTOPLAY_PAGE = `<!doctype html><button id="start">Start audio</button><script type="module">
const q = new URLSearchParams(location.search);
const { WebRTCai } = await import(q.get('server') + '/sdk/webrtcai.js');
window.events = [];
const session = await WebRTCai.init({ key: q.get('key') }).join('autoplay', { name: 'listener' });
window.session = session;
session.on('audio-playback', (v) => {
  window.events.push({ ev: 'audio-playback', v });
  console.log('audio-playback ' + v.allowed + ' ' + session.canPlayAudio);
});
console.log('joined');
session.on('feed-published', (f) => session.subscribe(f.feedId));
document.getElementById('start').onclick = () => session.startAudio().then(() => (window.started = 'ok'), (e) => (window.started = e.code));
</script>`;

test('audio the browser blocks is told, and startAudio from a click plays it', async () => {
  const server = await startServer();
  const browser = await launch({ args: ['--autoplay-policy=document-user-activation-required'] });
  let site = null;
  try {
    // The page from a site of its own (another port of 127.0.0.1, which the key allows).
    site = createServer((req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(AUTOPLAY_PAGE));
    await new Promise((r) => site.listen(0, '127.0.0.1', r));
    const listener = await browser.context.newPage();
    listener.on('pageerror', (e) => console.error('[listener] page error:', e.message));
    await listener.goto(`http://127.0.0.1:${site.address().port}/?key=${server.key}&server=${encodeURIComponent(server.base)}`);
    await listener.waitForEvent('console', { predicate: (m) => m.text() === 'joined', timeout: 10000 });
    const a = await joinPage(browser.context, server, 'autoplay', 'alice');
    const blocked = listener.waitForEvent('console', { predicate: (m) => m.text().startsWith('audio-playback'), timeout: 15000 });
    await publishWebcam(a);
    assert.equal((await blocked).text(), 'audio-playback false false', 'told, and canPlayAudio is false');
    await listener.click('#start');
    await listener.waitForFunction(() => window.started);
    assert.equal(await listener.evaluate(() => window.started), 'ok');
    assert.equal(await listener.evaluate(() => window.session.canPlayAudio), true);
    assert.deepEqual(await listener.evaluate(() => window.events.map((e) => e.v.allowed)), [false, true]);
  } finally {
    site?.close();
    await browser.close();
    server.stop();
  }
});
