// Recording: a Chromium publisher's webcam and microphone recorded through the SDK into a
// WebM file that the real ffprobe and ffmpeg read back; allowed only where the key allows it;
// announced to everyone; listed, downloadable and metered; surviving an ICE restart; a
// directory that cannot be written refused with the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launch, joinPage, publishWebcam, waitEvent, until, ffmpegErrors } from './harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** ffprobe's view of a file: its streams' codecs and the container's duration. */
function probe(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name,codec_type,width,height:format=duration', '-of', 'json', file]);
  const j = JSON.parse(out.toString());
  return { streams: j.streams, duration: Number(j.format.duration) };
}

/** The finished recordings the CLI lists, once `count` are. */
async function listed(server, count, timeoutMs = 15000) {
  return until(
    async () => JSON.parse(server.admin('recording', 'list', '--cid', server.cid, '--json')),
    (all) => all.length >= count,
    timeoutMs,
  );
}

test('a key without recording is refused, whatever the token says', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'rec-refused', 'alice');
    const refused = await a.evaluate(() => window.session.startRecording().then(() => null, (e) => ({ code: e.code, message: e.message })));
    assert.equal(refused?.code, 'forbidden');
    assert.match(refused.message, /key does not allow recording/);
    // A token with the record grant, signed by the same key: still refused.
    const token = server.token('rec-refused', 'bob', 'publish,subscribe,record');
    const b = await joinPage(browser.context, server, 'rec-refused', 'bob', { token, key: undefined });
    const again = await b.evaluate(() => window.session.startRecording().then(() => null, (e) => e.code));
    assert.equal(again, 'forbidden');
    // The admin API refuses too: nobody joined with a key that allows recording.
    const r = await fetch(`${server.base}/admin/sessions/rec-refused/recording`, {
      method: 'POST',
      headers: { authorization: 'Bearer admin-secret', 'content-type': 'application/json' },
      body: JSON.stringify({ cid: server.cid, enable: true }),
    });
    assert.equal(r.status, 404, 'no admin secret configured: the API is off');
  } finally {
    await browser.close();
    server.stop();
  }
});

test('a Chromium publisher recorded for 10 s plays back whole, through an ICE restart', async () => {
  const server = await startServer({ recording: true, args: ['--admin-secret', 'admin-secret', '--usage-flush-secs', '1'] });
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'rec-10s', 'alice');
    const b = await joinPage(browser.context, server, 'rec-10s', 'bob');
    const feed = await publishWebcam(a);
    await waitEvent(b, 'feed-published');
    // Let the simulcast layers come up, as in a call.
    await sleep(2000);
    const started = await b.evaluate(() => window.session.startRecording());
    const t0 = Date.now();
    assert.ok(started.startedAt > 0);
    // Everyone is told, the one who asked included.
    for (const p of [a, b]) {
      const ev = await waitEvent(p, 'recording-started');
      assert.equal(ev.by, await b.evaluate(() => window.session.uid));
    }
    // Whoever joins now is told too.
    const c = await joinPage(browser.context, server, 'rec-10s', 'carol');
    await waitEvent(c, 'recording-started');
    assert.ok(await c.evaluate(() => window.session.recording !== null));

    await sleep(4000);
    // The publisher's network changes: ICE restarts, the recording goes on.
    await a.evaluate(() => window.session._restartIce());
    await sleep(10000 - (Date.now() - t0));
    await b.evaluate(() => window.session.stopRecording());
    const recorded = (Date.now() - t0) / 1000;
    for (const p of [a, b, c]) await waitEvent(p, 'recording-stopped');

    const [rec] = await listed(server, 1);
    assert.equal(rec.sid, 'rec-10s');
    assert.equal(rec.feed_id, feed);
    assert.deepEqual([...rec.kinds].sort(), ['audio', 'video']);
    assert.equal(rec.error, null);
    const file = join(server.recordings, rec.path);
    assert.ok(rec.path.startsWith(`${server.cid}/rec-10s/`), rec.path);
    assert.equal(statSync(file).size, rec.bytes);

    const { streams, duration } = probe(file);
    const codecs = streams.map((s) => s.codec_name).sort();
    assert.deepEqual(codecs, ['opus', 'vp8'], JSON.stringify(streams));
    console.log(`recorded ${recorded.toFixed(2)} s, file ${duration.toFixed(3)} s (listed ${rec.duration_ms} ms), ${rec.bytes} bytes, ${JSON.stringify(streams)}`);
    assert.ok(Math.abs(duration - recorded) < 0.5, `the file lasts ${duration} s for ${recorded} s recorded`);
    const errors = ffmpegErrors(file);
    assert.equal(errors, '', `ffmpeg -v error says: ${errors}`);

    // Metered: the session's recording minutes are the file's.
    await until(
      async () => JSON.parse(server.admin('usage', '--cid', server.cid, '--json')).recording_minutes,
      (minutes) => Math.abs(minutes * 60000 - rec.duration_ms) < 1,
      5000,
    );

    // Listed and downloadable through the admin API, with ranges for players.
    const auth = { authorization: 'Bearer admin-secret' };
    const list = await (await fetch(`${server.base}/admin/recordings?cid=${server.cid}&sid=rec-10s`, { headers: auth })).json();
    assert.equal(list.length, 1);
    const download = await fetch(`${server.base}/admin/recordings/${list[0].id}/file`, { headers: auth });
    assert.equal(download.status, 200);
    assert.equal(download.headers.get('content-type'), 'video/webm');
    assert.equal((await download.arrayBuffer()).byteLength, rec.bytes);
    const part = await fetch(`${server.base}/admin/recordings/${list[0].id}/file`, { headers: { ...auth, range: 'bytes=0-99' } });
    assert.equal(part.status, 206);
    assert.equal((await part.arrayBuffer()).byteLength, 100);
    assert.equal((await fetch(`${server.base}/admin/recordings/${list[0].id}/file`)).status, 401);

    // The CLI starts it through the admin API, the admin API stops it; everyone is told.
    await a.evaluate(() => { window.events = []; });
    const on = JSON.parse(server.admin('recording', 'start', '--cid', server.cid, '--sid', 'rec-10s', '--server', server.base, '--admin-secret', 'admin-secret'));
    assert.equal(on.recording, true);
    assert.equal((await waitEvent(a, 'recording-started')).by, 'admin');
    await sleep(3000);
    const off = await fetch(`${server.base}/admin/sessions/rec-10s/recording`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ cid: server.cid, enable: false }),
    });
    assert.equal(off.status, 200, await off.clone().text());
    assert.equal((await waitEvent(a, 'recording-stopped')).by, 'admin');
    // A session that is not running: the CLI says so.
    assert.throws(
      () => server.admin('recording', 'start', '--cid', server.cid, '--sid', 'nobody-here', '--server', server.base, '--admin-secret', 'admin-secret'),
      /not_found: no session nobody-here/,
    );
    const two = await listed(server, 2);
    const second = join(server.recordings, two[1].path);
    assert.deepEqual(probe(second).streams.map((s) => s.codec_name).sort(), ['opus', 'vp8']);
    assert.equal(ffmpegErrors(second), '');
  } finally {
    await browser.close();
    server.stop();
  }
});

// A VP9 picture of three spatial layers is recorded as its top layer and, on key pictures,
// the lower ones it depends on, each a block 1 ms apart (every layer frame is shown, and a
// player shows the last); ffmpegErrors decodes at the file's own times and in its own time
// base, in which those frames stay apart.
for (const [codec, options, name, output] of [
  ['vp9', { codec: 'VP9', svc: 'L3T3_KEY' }, 'VP9 with three spatial layers', []],
  ['av1', { codec: 'AV1', simulcast: false }, 'AV1', []],
]) {
  test(`a Chromium publisher's ${name} is recorded and plays back`, async () => {
    const server = await startServer({ recording: true });
    const browser = await launch();
    try {
      const a = await joinPage(browser.context, server, `rec-${codec}`, 'alice');
      await a.evaluate(async (options) => {
        const v = document.createElement('video');
        document.body.append(v);
        await window.session.publish({ source: 'webcam', target: v, ...options });
      }, options);
      await sleep(1000);
      await a.evaluate(() => window.session.startRecording());
      const t0 = Date.now();
      await sleep(4000);
      await a.evaluate(() => window.session.stopRecording());
      const recorded = (Date.now() - t0) / 1000;
      const [rec] = await listed(server, 1);
      const file = join(server.recordings, rec.path);
      const { streams, duration } = probe(file);
      console.log(`${name}: recorded ${recorded.toFixed(2)} s, file ${duration.toFixed(3)} s, ${rec.bytes} bytes, ${JSON.stringify(streams)}`);
      assert.deepEqual(streams.map((s) => s.codec_name).sort(), [codec, 'opus'].sort(), JSON.stringify(streams));
      assert.ok(Math.abs(duration - recorded) < 0.5, `the file lasts ${duration} s for ${recorded} s recorded`);
      assert.equal(ffmpegErrors(file, output), '', 'ffmpeg -v error prints nothing');
      // The best layer: all but a key picture's lower layers are 1280x720.
      const widths = execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v', '-show_entries', 'frame=width', '-of', 'csv=p=0', file])
        .toString().trim().split('\n').map(Number);
      const full = widths.filter((w) => w === 1280).length;
      assert.ok(full >= widths.length * 0.9, `${full} of ${widths.length} frames 1280 wide`);
    } finally {
      await browser.close();
      server.stop();
    }
  });
}

test('a recording running when the server stops is finished, listed and metered', async () => {
  const server = await startServer({ recording: true, args: ['--usage-flush-secs', '1'] });
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'rec-stop', 'alice');
    await publishWebcam(a);
    await sleep(1000);
    await a.evaluate(() => window.session.startRecording());
    await sleep(5000);
    const exited = new Promise((resolve) => server.child.once('exit', (code, signal) => resolve({ code, signal })));
    server.child.kill('SIGINT');
    const stopped = await waitEvent(a, 'recording-stopped', 5000);
    assert.equal(stopped.reason, 'the server is shutting down');
    const how = await Promise.race([exited, sleep(20000).then(() => 'still running')]);
    assert.notEqual(how, 'still running', 'the server exits');
    const [rec] = JSON.parse(server.admin('recording', 'list', '--cid', server.cid, '--json'));
    assert.ok(rec, 'the file is listed');
    console.log(`stopped with the server: ${rec.duration_ms} ms, ${rec.bytes} bytes, exit ${JSON.stringify(how)}`);
    assert.ok(rec.duration_ms > 2000, `${rec.duration_ms} ms`);
    assert.equal(ffmpegErrors(join(server.recordings, rec.path)), '');
    const usage = JSON.parse(server.admin('usage', '--cid', server.cid, '--json'));
    assert.ok(Math.abs(usage.recording_minutes * 60000 - rec.duration_ms) < 1, JSON.stringify(usage));
  } finally {
    await browser.close();
    server.stop();
  }
});

test('a recordings directory that cannot be written is refused with the reason', async () => {
  const blocker = join(mkdtempSync(join(tmpdir(), 'webrtcai-rec-')), 'not-a-directory');
  writeFileSync(blocker, 'a file where the directory should be');
  const server = await startServer({ recording: true, recordings: blocker });
  const browser = await launch();
  try {
    const a = await joinPage(browser.context, server, 'rec-unwritable', 'alice');
    await publishWebcam(a);
    const refused = await a.evaluate(() => window.session.startRecording().then(() => null, (e) => ({ code: e.code, message: e.message })));
    assert.equal(refused?.code, 'recording_failed');
    assert.match(refused.message, /cannot create/);
    assert.ok(await a.evaluate(() => !window.events.some((e) => e.ev === 'recording-started')), 'nobody is told it records');
  } finally {
    await browser.close();
    server.stop();
  }
});
