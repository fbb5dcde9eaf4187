// A recording's audio and video in sync: an aiortc publisher whose video flashes white and
// whose audio beeps at the same instants, once a second, records itself; in the file (read
// with the real ffmpeg), each flash and its beep start within 80 ms of each other. Under 5%
// loss on its uplink the file still decodes without an error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, until, ffmpegErrors } from './harness.mjs';
import { createLink, startLinkServer } from './link.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const python = process.env.AIORTC_PYTHON || join(here, '..', 'aiortc', '.venv', 'bin', 'python');
const SECONDS = 8;

/** Run flash_beep.py (in `ns` if given) until it says RECORDED. */
async function recordFlashes(server, sid, ns = null, host = '127.0.0.1') {
  const wsUrl = server.base.replace('http', 'ws') + '/ws';
  const args = [join(here, '..', 'aiortc', 'flash_beep.py'), wsUrl, sid, server.cid, server.key, server.secret, String(SECONDS)];
  const [cmd, argv] = ns ? ['ip', ['netns', 'exec', ns, python, ...args]] : [python, args];
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, AIORTC_HOST: host } });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  try {
    await until(async () => out, (o) => o.includes('RECORDED'), 40000);
  } finally {
    child.kill('SIGKILL');
  }
}

/** The one recording the CLI lists, once it is finished. */
async function theRecording(server) {
  const [rec] = await until(
    async () => JSON.parse(server.admin('recording', 'list', '--cid', server.cid, '--json')),
    (all) => all.length === 1,
    15000,
  );
  return join(server.recordings, rec.path);
}

/** `[time, value]` of each frame (video: its mean luma) or 5 ms of audio (its RMS level, dB). */
function measure(file) {
  const dir = mkdtempSync(join(tmpdir(), 'webrtcai-sync-'));
  const v = join(dir, 'v.txt');
  const a = join(dir, 'a.txt');
  execFileSync('ffmpeg', ['-nostdin', '-v', 'error', '-i', file,
    '-map', '0:v', '-vf', `signalstats,metadata=mode=print:key=lavfi.signalstats.YAVG:file=${v}`, '-f', 'null', '-',
    '-map', '0:a', '-af', `asetnsamples=n=240:p=0,astats=metadata=1:reset=1,ametadata=mode=print:key=lavfi.astats.Overall.RMS_level:file=${a}`, '-f', 'null', '-']);
  const parse = (path) => {
    const rows = [];
    let t = null;
    for (const line of readFileSync(path, 'utf8').split('\n')) {
      const time = /pts_time:([\d.]+)/.exec(line);
      if (time) t = Number(time[1]);
      const value = /=(-?[\d.]+|-inf)$/.exec(line);
      if (value && t !== null) rows.push([t, value[1] === '-inf' ? -Infinity : Number(value[1])]);
    }
    return rows;
  };
  return { video: parse(v), audio: parse(a) };
}

/** The times at which the value rises past `threshold`. */
function onsets(rows, threshold) {
  const out = [];
  for (let i = 1; i < rows.length; i++) {
    if (rows[i][1] > threshold && rows[i - 1][1] <= threshold) out.push(rows[i][0]);
  }
  return out;
}

test('an aiortc publisher: each flash and its beep start within 80 ms in the file', async () => {
  const server = await startServer({ recording: true });
  try {
    await recordFlashes(server, 'rec-sync');
    const file = await theRecording(server);
    const { video, audio } = measure(file);
    const flashes = onsets(video, 120);
    const beeps = onsets(audio, -40);
    const offsets = flashes.map((f) => {
      const nearest = beeps.reduce((best, b) => (Math.abs(b - f) < Math.abs(best - f) ? b : best), Infinity);
      return Math.round((nearest - f) * 1000);
    });
    console.log(`flashes ${JSON.stringify(flashes)}; beep minus flash (ms): ${JSON.stringify(offsets)}`);
    assert.ok(flashes.length >= SECONDS - 2, `${flashes.length} flashes in ${SECONDS} s`);
    assert.ok(beeps.length >= SECONDS - 2, `${beeps.length} beeps in ${SECONDS} s`);
    for (const o of offsets) assert.ok(Math.abs(o) < 80, `a beep ${o} ms from its flash`);
    assert.equal(ffmpegErrors(file), '', 'ffmpeg -v error prints nothing');
  } finally {
    server.stop();
  }
});

test('under 5% loss on the publisher\'s uplink the recording still decodes without an error', async () => {
  const server = await startLinkServer({ recording: true });
  const link = await createLink({ up: { loss: 0.05 }, seed: 7 });
  try {
    await recordFlashes(server, 'rec-loss', link.ns, link.address);
    const file = await theRecording(server);
    const stats = await link.stats();
    const probe = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name:format=duration', '-of', 'json', file]).toString());
    console.log(`under 5% loss: ${JSON.stringify(probe)} ${JSON.stringify(stats)}`);
    assert.deepEqual(probe.streams.map((s) => s.codec_name).sort(), ['opus', 'vp8']);
    // The video from near the start: a keyframe lost on the way is asked for again.
    const firstVideo = Number(execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v', '-read_intervals', '%+#1', '-show_entries', 'frame=pts_time', '-of', 'csv=p=0', file]).toString());
    console.log(`under 5% loss: the video starts at ${firstVideo} s`);
    assert.ok(firstVideo < 2, `the video starts at ${firstVideo} s`);
    assert.ok(Math.abs(Number(probe.format.duration) - SECONDS) < 1, `lasts ${probe.format.duration} s`);
    assert.equal(ffmpegErrors(file), '', 'ffmpeg -v error prints nothing');
  } finally {
    await link.close();
    server.stop();
  }
});
