// A disk that fills up: a recording refused at the start where less than 64 MiB are free, and
// one that runs when the disk fills stopped, with everyone told why, its file kept with what
// it had. The server runs in a mount namespace of its own (`unshare -m`) whose recordings
// directory is a 72 MiB tmpfs; the test reaches that disk through `nsenter`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launch, joinPage, publishWebcam, waitEvent, until } from './harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MOUNT = `mount -t tmpfs -o size=72m tmpfs "$0" && exec "$@"`;

test('a full disk refuses a recording at the start and stops one at run time, telling why', async () => {
  const disk = mkdtempSync(join(tmpdir(), 'webrtcai-disk-'));
  const browser = await launch();
  let server;
  try {
    server = await startServer({
      recording: true,
      recordings: disk,
      wrapper: ['unshare', '-m', '--propagation', 'private', 'sh', '-c', MOUNT, disk],
    });
    // A command on the server's disk, in its mount namespace.
    const onDisk = (...cmd) => execFileSync('nsenter', ['-t', String(server.child.pid), '-m', ...cmd]).toString();
    const free = () => Number(onDisk('df', '-B1', '--output=avail', disk).split('\n')[1]);
    const a = await joinPage(browser.context, server, 'rec-disk', 'alice');
    const b = await joinPage(browser.context, server, 'rec-disk', 'bob');
    await publishWebcam(a);

    // 60 MiB taken: less than a recording needs to start.
    onDisk('fallocate', '-l', String(60 * 1024 * 1024), join(disk, 'taken'));
    const refused = await a.evaluate(() => window.session.startRecording().then(() => null, (e) => ({ code: e.code, message: e.message })));
    console.log(`with 60 MiB taken: ${JSON.stringify(refused)}`);
    assert.equal(refused?.code, 'recording_failed');
    assert.match(refused.message, /the disk is full: \d+ MiB free/);
    onDisk('rm', join(disk, 'taken'));

    // Room again: it starts; then the disk fills up under it.
    await a.evaluate(() => window.session.startRecording());
    await waitEvent(b, 'recording-started');
    // Frames reach the file some 2 s behind (the first sender reports, the interleaving).
    await sleep(5000);
    // Everything left (the recording goes on writing meanwhile: write until the disk refuses).
    spawnSync('nsenter', ['-t', String(server.child.pid), '-m', 'sh', '-c', `cat /dev/zero > '${join(disk, 'filler')}'`]);
    assert.ok(free() < 1024 * 1024, `the disk is full: ${free()} bytes free`);
    const stopped = await waitEvent(b, 'recording-stopped', 20000);
    console.log(`recording-stopped: ${JSON.stringify(stopped)}`);
    assert.equal(stopped.by, null, 'nobody asked');
    assert.match(stopped.reason, /No space left on device/);
    assert.equal(await a.evaluate(() => window.session.recording), null);

    const [rec] = await until(
      async () => JSON.parse(server.admin('recording', 'list', '--cid', server.cid, '--json')),
      (all) => all.length === 1,
      10000,
    );
    assert.match(rec.error, /No space left on device/);
    assert.ok(rec.duration_ms > 1000, `it kept what it had: ${rec.duration_ms} ms`);
    // What fitted is there to decode (without the cues and duration it had no room for).
    const r = spawnSync('nsenter', ['-t', String(server.child.pid), '-m', 'ffprobe', '-v', 'error', '-show_entries', 'stream=codec_name', '-of', 'csv=p=0', join(disk, rec.path)], { encoding: 'utf8' });
    console.log(`the cut file: ${rec.duration_ms} ms, ${rec.bytes} bytes, streams ${JSON.stringify(r.stdout)} ${JSON.stringify(r.stderr.slice(0, 300))}`);
    assert.match(r.stdout, /vp8/);
  } finally {
    await browser.close();
    server?.stop();
    rmSync(disk, { recursive: true, force: true });
  }
});
