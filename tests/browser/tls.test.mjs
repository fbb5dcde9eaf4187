// https and wss served by the server itself (rustls), and a renewed certificate read on
// SIGHUP: new connections get it at once, the call's websockets stay open, and a bad pair
// leaves the one in use.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { startServer, launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying, until } from './harness.mjs';

// The test's own self-signed certificates: trusted here, and by Chromium below.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

/** A self-signed certificate for 127.0.0.1 (openssl), as PEM files; its SHA-256 fingerprint. */
function certificate(dir, name) {
  const [cert, key] = [join(dir, `${name}.pem`), join(dir, `${name}.key`)];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`, '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert, key, fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 };
}

/** The fingerprint of the certificate a new TLS connection to `port` gets. */
function presented(port) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const fp = socket.getPeerX509Certificate().fingerprint256;
      socket.end();
      resolve(fp);
    });
    socket.on('error', reject);
  });
}

test('the server serves https and wss itself, and a certificate renewed on SIGHUP drops no connection', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'webrtcai-tls-'));
  const first = certificate(dir, 'first');
  const renewed = certificate(dir, 'renewed');
  const live = { cert: join(dir, 'live.pem'), key: join(dir, 'live.key') };
  copyFileSync(first.cert, live.cert);
  copyFileSync(first.key, live.key);
  const server = await startServer({ tls: live });
  const browser = await launch({ args: ['--ignore-certificate-errors'] });
  try {
    assert.ok(server.base.startsWith('https://'));
    assert.equal(await presented(server.port), first.fingerprint);
    const a = await joinPage(browser.context, server, 'tls-1', 'alice');
    const b = await joinPage(browser.context, server, 'tls-1', 'bob');
    assert.equal(await a.evaluate(() => window.session._ws.url.split(':')[0]), 'wss');
    const feed = await publishWebcam(a);
    await waitEvent(b, 'feed-published');
    const video = await subscribe(b, feed);
    await expectPlaying(b, video);

    // Renewed: the files change, SIGHUP, and the next handshake gets the new certificate.
    copyFileSync(renewed.cert, live.cert);
    copyFileSync(renewed.key, live.key);
    const sent = Date.now();
    server.child.kill('SIGHUP');
    await until(() => presented(server.port), (fp) => fp === renewed.fingerprint, 5000);
    console.log(`tls: renewed certificate presented ${Date.now() - sent} ms after SIGHUP`);

    // The call's websockets stayed open and still carry requests.
    const screen = await a.evaluate(async () => {
      const v = document.createElement('video');
      document.body.append(v);
      return (await window.session.publish({ source: 'screen', target: v })).feedId;
    });
    await b.waitForFunction((id) => window.events.some((e) => e.ev === 'feed-published' && e.v.feedId === id), screen);
    await expectPlaying(b, video);
    for (const page of [a, b]) {
      const seen = await page.evaluate(() => window.events.filter((e) => ['reconnecting', 'disconnected'].includes(e.ev)).length);
      assert.equal(seen, 0, 'no websocket dropped');
    }

    // A bad pair (the first key with the renewed certificate) is refused: the renewed stays.
    copyFileSync(first.key, live.key);
    server.child.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await presented(server.port), renewed.fingerprint);
    writeFileSync(live.cert, 'not a certificate');
    server.child.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await presented(server.port), renewed.fingerprint);
    assert.equal((await fetch(`${server.base}/healthz`)).status, 200);
  } finally {
    await browser.close();
    server.stop();
  }
});
