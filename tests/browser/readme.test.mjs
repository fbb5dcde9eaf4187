// README's "Get started", as a developer uses it: the ```html block, verbatim but for the
// server address and the key, on a page of the developer's own origin (another host and port
// than the server's), opened twice; each page shows the other's webcam.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, launch } from './harness.mjs';

const README = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'README.md');

/** The first ```html block of the "## Get started" section. */
function getStartedSnippet() {
  const section = readFileSync(README, 'utf8')
    .split(/^## /m)
    .find((s) => s.startsWith('Get started'));
  assert.ok(section, 'README has a "## Get started" section');
  const block = section.match(/^```html\n([\s\S]*?)^```/m);
  assert.ok(block, 'the Get started section has an ```html block');
  return block[1];
}

/** Replace the one occurrence of `placeholder`, so a changed README fails here rather than
 * running with the placeholder left in. */
function substitute(text, placeholder, value) {
  const parts = text.split(placeholder);
  assert.equal(parts.length, 2, `the snippet names ${placeholder} exactly once`);
  return parts.join(value);
}

test("README's Get started works from a page on another origin", { timeout: 60000 }, async () => {
  const server = await startServer();
  // The developer's key allows their own page's host.
  const key = JSON.parse(server.admin('key', 'create', '--cid', server.cid, '--domain', 'localhost')).key.key_id;
  let snippet = getStartedSnippet();
  snippet = substitute(snippet, 'http://127.0.0.1:8080', server.base);
  snippet = substitute(snippet, 'YOUR_WEB_KEY', key);
  const page = `<!doctype html>\n<html><head><meta charset="utf-8"><title>my app</title></head><body>\n${snippet}</body></html>\n`;
  const site = http.createServer((req, res) => {
    if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page);
    } else {
      res.writeHead(404).end();
    }
  });
  // Dual-stack where the namespace has IPv6, so `localhost` reaches it either way.
  await new Promise((resolve) => site.listen(0, resolve));
  const origin = `http://localhost:${site.address().port}`;
  assert.notEqual(new URL(origin).origin, new URL(server.base).origin);

  const browser = await launch();
  // The snippet keeps its session to itself: keep its peer connection for getStats().
  await browser.context.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    window.peerConnections = [];
    window.RTCPeerConnection = class extends Native {
      constructor(...args) {
        super(...args);
        window.peerConnections.push(this);
      }
    };
  });
  const log = [];
  try {
    const pages = [];
    for (const who of ['first', 'second']) {
      const p = await browser.context.newPage();
      p.on('console', (m) => log.push(`[${who}] ${m.type()}: ${m.text()}`));
      p.on('pageerror', (e) => log.push(`[${who}] page error: ${e.message}`));
      await p.goto(`${origin}/`);
      pages.push(p);
    }
    const decoded = (p) =>
      p.evaluate(async () => {
        let frames = 0;
        for (const pc of window.peerConnections) {
          (await pc.getStats()).forEach((s) => {
            if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
          });
        }
        const v = document.querySelector('#others video');
        return { frames, width: v?.videoWidth ?? 0, time: v?.currentTime ?? 0, me: document.getElementById('me').videoWidth };
      });
    for (const p of pages) {
      try {
        await p.waitForFunction(
          () => {
            const v = document.querySelector('#others video');
            return v && v.videoWidth > 0 && v.currentTime > 0 && document.getElementById('me').videoWidth > 0;
          },
          null,
          { timeout: 20000 },
        );
      } catch (e) {
        assert.fail(`the other's video does not play: ${e.message}\n${log.join('\n')}`);
      }
      const before = await decoded(p);
      await new Promise((r) => setTimeout(r, 1000));
      const after = await decoded(p);
      assert.ok(after.frames > before.frames && before.frames > 0, JSON.stringify({ before, after }));
      assert.ok(after.time > before.time, JSON.stringify({ before, after }));
    }
  } finally {
    await browser.close();
    site.close();
    server.stop();
  }
});
