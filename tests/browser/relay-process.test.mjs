// Signalling and the relay in two processes: `webrtcai --relay-control` drives the `relay`
// binary over its authenticated control API. A call goes through the other process's
// cores, a recording is written by it, and a cut control connection is opened again on the
// next request while the call goes on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import {
  startServer, startProxy, freePort, launch, joinPage, publishWebcam, subscribe, waitEvent, expectPlaying, until,
} from './harness.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR || join(root, 'target');

/** One request to a relay's control API (after its hello); resolves with the `ok` value. */
async function control(port, token, request) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buffer = '';
    socket.on('error', reject);
    socket.on('data', (d) => {
      buffer += d;
      for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
        const line = JSON.parse(buffer.slice(0, i));
        buffer = buffer.slice(i + 1);
        if (line.id === 0 && line.error) reject(new Error(JSON.stringify(line.error)));
        if (line.id === 1) {
          socket.destroy();
          if (line.error) reject(new Error(JSON.stringify(line.error)));
          else resolve(line.ok);
        }
      }
    });
    socket.write(`${JSON.stringify({ id: 0, op: 'hello', token })}\n${JSON.stringify({ id: 1, ...request })}\n`);
  });
}

/** The `relay` binary with its control API on a fresh port behind `token`. */
async function startRelay(token, recordings) {
  const port = await freePort();
  const child = spawn(join(targetDir, 'debug', 'relay'), [
    '--port', '0', '--cores', '1', '--no-pin', '--control', `127.0.0.1:${port}`,
    '--control-token', token, '--recordings-dir', recordings, '--stats-interval', '0',
  ], { env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' }, stdio: ['ignore', 'inherit', 'inherit'] });
  await until(
    () => control(port, token, { op: 'info' }).catch((e) => String(e)),
    (info) => info?.cores?.length === 1,
    10000,
  );
  return { port, child, stop: () => child.kill('SIGKILL') };
}

const forwarded = async (relay, token) =>
  (await control(relay.port, token, { op: 'stats' })).reduce((n, core) => n + core.rtp_forwarded, 0);

test('signalling drives a relay in another process: a call and a recording through it, and a cut control connection opened again', async () => {
  const token = randomBytes(16).toString('hex');
  const recordings = join(mkdtempSync(join(tmpdir(), 'webrtcai-rec-')), 'recordings');
  const relay = await startRelay(token, recordings);
  const proxy = await startProxy(relay.port);
  const server = await startServer({
    recording: true,
    recordings,
    args: ['--relay-control', `127.0.0.1:${proxy.port}`, '--relay-control-token', token],
  });
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'split-1', 'alice');
    const b = await joinPage(browser.context, server, 'split-1', 'bob');
    const feedA = await publishWebcam(a);
    await waitEvent(b, 'feed-published');
    const videoB = await subscribe(b, feedA);
    await expectPlaying(b, videoB);
    // The media went through the relay process's core.
    const before = await forwarded(relay, token);
    assert.ok(before > 10, `the relay process forwarded ${before} packets`);

    // The control connection is cut: the relay keeps the call, and the next request opens
    // a new connection.
    assert.equal(proxy.accepted, 1);
    proxy.down();
    await new Promise((r) => setTimeout(r, 500));
    proxy.up();
    await expectPlaying(b, videoB);
    const feedB = await publishWebcam(b);
    await waitEvent(a, 'feed-published');
    const videoA = await subscribe(a, feedB);
    await expectPlaying(a, videoA);
    assert.equal(proxy.accepted, 2);
    // A participant who joins after the cut is set up through the new connection.
    const c = await joinPage(browser.context, server, 'split-1', 'carol');
    const videoC = await subscribe(c, feedA);
    await expectPlaying(c, videoC);
    const after = await forwarded(relay, token);
    assert.ok(after > before, `forwarded ${before} then ${after}`);

    // A recording is written by the relay process; signalling lists it when the relay's
    // event says the file is finished, an event that comes through the new connection.
    await a.evaluate(() => window.session.startRecording());
    await waitEvent(b, 'recording-started');
    await new Promise((r) => setTimeout(r, 3000));
    await a.evaluate(() => window.session.stopRecording());
    await waitEvent(b, 'recording-stopped');
    const listed = await until(
      async () => JSON.parse(server.admin('recording', 'list', '--cid', server.cid, '--json')),
      (all) => all.length >= 2,
      10000,
    );
    for (const r of listed) {
      assert.equal(r.error ?? null, null);
      assert.ok(r.duration_ms > 1500, `a recording of ${r.duration_ms} ms`);
      const probe = spawnSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_type', '-of', 'csv=p=0', join(recordings, r.path)], { encoding: 'utf8' });
      assert.match(probe.stdout, /video/, `ffprobe of ${r.path}: ${probe.stdout}${probe.stderr}`);
    }
    console.log(`relay process: forwarded ${before} packets before the cut, ${after} after; control connections ${proxy.accepted}; recordings ${listed.map((r) => `${r.duration_ms} ms`).join(', ')}`);
  } finally {
    await browser.close();
    server.stop();
    proxy.close();
    relay.stop();
  }
});

test('signalling refuses to start with a relay that refuses its token, and says why', async () => {
  const token = randomBytes(16).toString('hex');
  const recordings = join(mkdtempSync(join(tmpdir(), 'webrtcai-rec-')), 'recordings');
  const relay = await startRelay(token, recordings);
  try {
    const db = join(mkdtempSync(join(tmpdir(), 'webrtcai-db-')), 'accounts.db');
    const bin = process.env.WEBRTCAI_BIN || join(targetDir, 'debug', 'webrtcai');
    const run = (t) => spawnSync(bin, [
      '--db', db, '--http', '127.0.0.1:0', '--relay-control', `127.0.0.1:${relay.port}`, '--relay-control-token', t,
    ], { encoding: 'utf8', timeout: 10000, env: { ...process.env, RUST_LOG: 'error' } });
    const wrong = run('not-the-token');
    assert.notEqual(wrong.status, 0);
    assert.match(wrong.stderr, /reaching the relay's control API at 127\.0\.0\.1:\d+/);
    assert.match(wrong.stderr, /unauthorized/);
    const closed = spawnSync(bin, ['--db', db, '--relay-control', '127.0.0.1:1'], { encoding: 'utf8', timeout: 10000, env: { ...process.env, RUST_LOG: 'error' } });
    assert.notEqual(closed.status, 0);
    assert.match(closed.stderr, /reaching the relay's control API at 127\.0\.0\.1:1/);
    const clustered = spawnSync(bin, ['--db', db, '--relay-control', `127.0.0.1:${relay.port}`, '--redis', 'redis://127.0.0.1:1'], { encoding: 'utf8', timeout: 10000 });
    assert.notEqual(clustered.status, 0);
    assert.match(clustered.stderr, /cannot be used with/);
  } finally {
    relay.stop();
  }
});
