// The demo app, used as a person would: two pages type a session name and press Join; each
// shows the other's webcam; one shares its screen and the other shows it too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './harness.mjs';

async function playing(page, selector) {
  await page.waitForFunction(
    (sel) => {
      const v = document.querySelector(sel);
      return v && v.videoWidth > 0 && v.currentTime > 0.2;
    },
    selector,
    { timeout: 15000 },
  );
}

test('demo app: join, see each other, share a screen', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const pages = [];
    for (const name of ['Ada', 'Grace']) {
      const page = await browser.context.newPage();
      await page.goto(`${server.base}/?key=${server.key}`);
      await page.fill('#room', 'demo-test');
      await page.fill('#name', name);
      await page.click('#join');
      await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('in '));
      pages.push(page);
    }
    const [ada, grace] = pages;
    await playing(ada, '#me');
    await playing(ada, '#grid figure:nth-child(2) video');
    await playing(grace, '#grid figure:nth-child(2) video');

    await ada.click('#screen');
    await grace.waitForFunction(() => document.querySelectorAll('#grid figure').length === 3, null, { timeout: 15000 });
    await playing(grace, '#grid figure:nth-child(3) video');
    const caption = await grace.textContent('#grid figure:nth-child(3) figcaption');
    assert.match(caption, /Ada · screen/);
    await grace.screenshot({ path: process.env.DEMO_SCREENSHOT || '/tmp/webrtcai-demo.png' });

    await ada.click('#leave');
    await grace.waitForFunction(() => document.querySelectorAll('#grid figure').length === 1, null, { timeout: 15000 });
  } finally {
    await browser.close();
    server.stop();
  }
});

test('demo app without a camera: joins anyway, as a viewer', { timeout: 60000 }, async () => {
  const server = await startServer();
  const withCamera = await launch();
  const denied = await launch({ prompt: false });
  try {
    const join = async (context, name) => {
      const page = await context.newPage();
      await page.goto(`${server.base}/?key=${server.key}`);
      await page.fill('#room', 'demo-denied');
      await page.fill('#name', name);
      await page.click('#join');
      await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('in '), null, { timeout: 15000 });
      return page;
    };
    await join(withCamera.context, 'Ada');
    const grace = await join(denied.context, 'Grace');
    assert.match(await grace.textContent('#status'), /without camera \(permission_denied\)/);
    // Ada's tile is there and subscribed. (Its media does not flow here: a page without camera
    // permission gathers no ICE candidate in a loopback-only namespace, having no default route.)
    await grace.waitForFunction(() => document.querySelector('#grid figure:nth-child(2) video')?.srcObject, null, { timeout: 15000 });
    assert.match(await grace.textContent('#grid figure:nth-child(2) figcaption'), /Ada · webcam/);
  } finally {
    await denied.close();
    await withCamera.close();
    server.stop();
  }
});

// Four people in the demo, as they would use it: chat, mute, the camera picker, recording,
// the active speaker and connection quality shown on the tiles; one of them on a phone-sized
// screen. The desktop page's screenshot is the README's (DEMO_CALL_SCREENSHOT).
test('demo app: a four-person call with chat, mute, devices, recording and quality', { timeout: 180000 }, async () => {
  const server = await startServer({ recording: true });
  const browser = await launch({ args: ['--use-fake-device-for-media-stream=device-count=3'] });
  try {
    const people = ['Ada', 'Grace', 'Linus', 'Margaret'];
    const pages = {};
    for (const name of people) {
      const page = await browser.context.newPage();
      if (name === 'Margaret') await page.setViewportSize({ width: 390, height: 844 });
      else await page.setViewportSize({ width: 1280, height: 800 });
      await page.goto(`${server.base}/?key=${server.key}`);
      await page.fill('#room', 'demo-four');
      await page.fill('#name', name);
      await page.click('#join');
      await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('in '), null, { timeout: 20000 });
      pages[name] = page;
    }
    const { Ada: ada, Grace: grace, Margaret: phone } = pages;
    // Everyone sees the three others play.
    for (const page of Object.values(pages)) {
      await page.waitForFunction(
        () => [...document.querySelectorAll('#grid .tile video')].filter((v) => v.videoWidth > 0 && v.currentTime > 0.2).length === 4,
        null,
        { timeout: 30000 },
      );
    }

    // Chat over the data channel.
    await ada.fill('#chat-input', 'hello from Ada');
    await ada.press('#chat-input', 'Enter');
    for (const page of [grace, phone]) {
      await page.waitForFunction(() => document.getElementById('messages').textContent.includes('Ada: hello from Ada'), null, { timeout: 10000 });
    }

    // Ada mutes her microphone and stops her video: her tiles say so at the others'.
    const adaTile = (page) => page.$eval('#grid', (g) => [...g.querySelectorAll('.tile')].find((t) => t.textContent.includes('Ada · webcam'))?.className ?? '');
    await ada.click('#mic');
    await grace.waitForFunction(() => [...document.querySelectorAll('.tile')].some((t) => t.textContent.includes('Ada · webcam') && t.classList.contains('audio-muted')), null, { timeout: 10000 });
    await ada.click('#camera');
    await grace.waitForFunction(() => [...document.querySelectorAll('.tile')].some((t) => t.textContent.includes('Ada · webcam') && t.classList.contains('video-muted')), null, { timeout: 10000 });
    await ada.click('#mic');
    await ada.click('#camera');
    await grace.waitForFunction(() => [...document.querySelectorAll('.tile')].some((t) => t.textContent.includes('Ada · webcam') && !t.classList.contains('audio-muted') && !t.classList.contains('video-muted')), null, { timeout: 10000 });
    assert.doesNotMatch(await adaTile(grace), /muted/);

    // The camera picker lists the three fake cameras; picking the third switches to it.
    const cameras = await ada.$$eval('#camera-select option', (os) => os.map((o) => o.textContent));
    assert.deepEqual(cameras, ['fake_device_0', 'fake_device_1', 'fake_device_2']);
    await ada.selectOption('#camera-select', { label: 'fake_device_2' });
    await ada.waitForFunction(() => document.getElementById('me').srcObject?.getVideoTracks()[0]?.label === 'fake_device_2', null, { timeout: 10000 });

    // Recording, where the key allows it: everyone sees the REC badge.
    assert.equal(await ada.isVisible('#record'), true);
    await ada.click('#record');
    for (const page of Object.values(pages)) await page.waitForSelector('#rec', { state: 'visible', timeout: 10000 });
    await ada.click('#record');
    for (const page of Object.values(pages)) await page.waitForSelector('#rec', { state: 'hidden', timeout: 10000 });

    // Connection quality on every tile, and an active speaker (the fake microphones beep).
    for (const page of Object.values(pages)) {
      await page.waitForFunction(() => document.querySelectorAll('#grid .tile .q-excellent, #grid .tile .q-good').length === 4, null, { timeout: 20000 });
      await page.waitForFunction(() => document.querySelector('#grid .tile.active'), null, { timeout: 20000 });
    }

    // The phone: nothing wider than the screen, two tiles a row, the controls and chat on it.
    const fit = await phone.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      tiles: [...document.querySelectorAll('#grid .tile')].map((t) => Math.round(t.getBoundingClientRect().width)),
      controls: ['mic', 'camera', 'screen', 'leave', 'chat-input'].map((id) => document.getElementById(id).getBoundingClientRect().right),
    }));
    console.log(`phone (390 wide): page ${fit.scroll} wide, tiles ${fit.tiles.join(', ')} wide, controls end at ${fit.controls.map(Math.round).join(', ')}`);
    assert.ok(fit.scroll <= 390, `no sideways scrolling: ${fit.scroll}`);
    assert.ok(fit.tiles.every((w) => w >= 150 && w <= 195), JSON.stringify(fit.tiles));
    assert.ok(fit.controls.every((r) => r <= 390), JSON.stringify(fit.controls));

    await new Promise((r) => setTimeout(r, 1000));
    await grace.screenshot({ path: process.env.DEMO_CALL_SCREENSHOT || '/tmp/webrtcai-demo-call.png' });
  } finally {
    await browser.close();
    server.stop();
  }
});
