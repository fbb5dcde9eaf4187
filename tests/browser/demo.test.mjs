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
