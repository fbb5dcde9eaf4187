// The SDK as a package in a bundled app: esbuild resolves `@webrtcai/sdk` through the
// package's exports (sdk/ linked into the app's node_modules) and bundles a small app, served
// from an origin of its own; in Chromium the app publishes its webcam through the server named
// by `url`, and a page of the server's demo origin plays it. The same bundle without `url`
// cannot know where the server is, and says so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { startServer, launch, joinPage, subscribe, expectPlaying, waitEvent } from './harness.mjs';

const sdk = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'sdk');

const APP = `
import { WebRTCai, WebRTCaiError } from '@webrtcai/sdk';

window.withoutUrl = () => {
  try {
    WebRTCai.init({ key: 'wk_any' });
    return null;
  } catch (e) {
    return { code: e.code, isError: e instanceof WebRTCaiError };
  }
};

window.publishThrough = async (key, url) => {
  const session = await WebRTCai.init({ key, url }).join('bundled', { name: 'bundle' });
  const video = document.createElement('video');
  document.body.append(video);
  const feed = await session.publish({ source: 'webcam', target: video });
  window.session = session;
  return feed.feedId;
};
`;

test('a bundled app with the package publishes through the server its url names', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'webrtcai-bundle-'));
  mkdirSync(join(dir, 'node_modules', '@webrtcai'), { recursive: true });
  symlinkSync(sdk, join(dir, 'node_modules', '@webrtcai', 'sdk'));
  writeFileSync(join(dir, 'app.js'), APP);
  const result = await build({
    entryPoints: [join(dir, 'app.js')],
    bundle: true,
    format: 'esm',
    outfile: join(dir, 'bundle.js'),
    logLevel: 'silent',
    metafile: true,
  });
  const inputs = Object.keys(result.metafile.inputs);
  assert.ok(inputs.some((i) => i.endsWith('sdk/webrtcai.js')), `the SDK is in the bundle: ${inputs}`);
  const bundle = readFileSync(join(dir, 'bundle.js'));
  // The app's own origin: another port of 127.0.0.1, which the key's domain covers.
  const site = createServer((req, res) => {
    if (req.url === '/bundle.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      return res.end(bundle);
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><script type="module" src="/bundle.js"></script>');
  });
  await new Promise((r) => site.listen(0, '127.0.0.1', r));
  const server = await startServer();
  const browser = await launch();
  try {
    const app = await browser.context.newPage();
    await app.goto(`http://127.0.0.1:${site.address().port}/`);
    await app.waitForFunction(() => typeof window.publishThrough === 'function');
    assert.deepEqual(await app.evaluate(() => window.withoutUrl()), { code: 'invalid_options', isError: true });

    const viewer = await joinPage(browser.context, server, 'bundled', 'viewer');
    const wsUrl = `${server.base.replace('http', 'ws')}/ws`;
    const feedId = await app.evaluate(({ key, url }) => window.publishThrough(key, url), { key: server.key, url: wsUrl });
    const published = await waitEvent(viewer, 'feed-published');
    assert.equal(published.feedId, feedId);
    const s = await expectPlaying(viewer, await subscribe(viewer, feedId));
    console.log(`bundled app (${bundle.length} bytes): its webcam plays at ${s.width} wide`);
  } finally {
    await browser.close();
    server.stop();
    await new Promise((r) => site.close(r));
    rmSync(dir, { recursive: true, force: true });
  }
});
