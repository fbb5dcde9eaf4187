// A disk that fills up: a recording refused at the start where less than 64 MiB are free, and
// one that runs when the disk fills stopped, with everyone told why, its file kept with what
// it had. The recordings directory is a small tmpfs mounted for the test, which needs a mount
// namespace of the test's own (scripts/test runs the browser tests under `unshare -n -m`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launch, joinPage, publishWebcam, waitEvent, until, ffmpegErrors } from './harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Refuse to mount anything in the machine's own mount namespace. */
function requirePrivateMounts() {
  if (readlinkSync('/proc/self/ns/mnt') === readlinkSync('/proc/1/ns/mnt')) {
    throw new Error("this test mounts a tmpfs: run it in a mount namespace of its own, e.g. unshare -n -m bash -c 'ip link set lo up && node --test …'");
  }
}

/** Bytes free under `dir`. */
const free = (dir) => Number(execFileSync('df', ['-B1', '--output=avail', dir]).toString().split('\n')[1]);

test('a full disk refuses a recording at the start and stops one at run time, telling why', async () => {
  requirePrivateMounts();
  const disk = mkdtempSync(join(tmpdir(), 'webrtcai-disk-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=72m', 'tmpfs', disk]);
  let server;
  const browser = await launch();
  try {
    server = await startServer({ recording: true, recordings: join(disk, 'recordings') });
    const a = await joinPage(browser.context, server, 'rec-disk', 'alice');
    const b = await joinPage(browser.context, server, 'rec-disk', 'bob');
    await publishWebcam(a);

    // 60 MiB taken: less than a recording needs to start.
    execFileSync('fallocate', ['-l', String(60 * 1024 * 1024), join(disk, 'taken')]);
    const refused = await a.evaluate(() => window.session.startRecording().then(() => null, (e) => ({ code: e.code, message: e.message })));
    assert.equal(refused?.code, 'recording_failed');
    assert.match(refused.message, /the disk is full: \d+ MiB free/);
    rmSync(join(disk, 'taken'));

    // Room again: it starts; then the disk fills up under it.
    await a.evaluate(() => window.session.startRecording());
    await waitEvent(b, 'recording-started');
    await sleep(2000);
    execFileSync('fallocate', ['-l', String(free(disk)), join(disk, 'filler')]);
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
    // What is in the file decodes (it lacks the cues and duration it could not write).
    const errors = ffmpegErrors(join(server.recordings, rec.path));
    console.log(`the cut file, decoded: ${JSON.stringify(errors.slice(0, 300))}`);
  } finally {
    await browser.close();
    server?.stop();
    await sleep(200);
    execFileSync('umount', [disk]);
    rmSync(disk, { recursive: true, force: true });
  }
});
