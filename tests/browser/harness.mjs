// Shared set-up for the browser tests: the product binary and headless Chromium, all on
// 127.0.0.1. Run the tests inside a loopback-only network namespace (see scripts/test).
import { spawn, execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
];

/** A TCP port nothing listens on now, on `host`. */
export async function freePort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, host, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** Start `webrtcai` (the debug build, in CARGO_TARGET_DIR if set, unless WEBRTCAI_BIN is set) on a fresh database with one
 * client and a WEB_ONLY key for pages on 127.0.0.1 (one that allows recording with
 * `recording`), recordings in a fresh directory (`recordings`); resolves once /healthz answers. With `host`
 * (an address this namespace has, e.g. link.mjs's SERVER_HOST) HTTP and media bind there and the
 * key's domain is that address instead. The relay runs on one core unless `cores` says more. */
export async function startServer(opts = {}) {
  const targetDir = process.env.CARGO_TARGET_DIR || join(root, 'target');
  const bin = process.env.WEBRTCAI_BIN || join(targetDir, 'debug', 'webrtcai');
  const host = opts.host || '127.0.0.1';
  const db = opts.db || join(mkdtempSync(join(tmpdir(), 'webrtcai-db-')), 'accounts.db');
  const admin = (...args) => execFileSync(bin, ['--db', db, ...args], { env: { ...process.env, RUST_LOG: 'error' } }).toString();
  let { cid, key, secret } = opts;
  if (!key) {
    cid = JSON.parse(admin('client', 'create', '--name', 'browser-tests')).cid;
    const recording = opts.recording ? ['--recording'] : [];
    const created = JSON.parse(admin('key', 'create', '--cid', cid, '--domain', host, ...recording));
    key = created.key.key_id;
    secret = created.secret;
  }
  // `port`: where the server's address is not in this namespace (it runs behind `wrapper`).
  const port = opts.port || await freePort(host);
  const bind = host === '127.0.0.1' ? [] : ['--media-bind', host];
  const recordings = opts.recordings || join(mkdtempSync(join(tmpdir(), 'webrtcai-rec-')), 'recordings');
  // `tls`: { cert, key } PEM files: https and wss (the test trusts them itself).
  const tls = opts.tls ? ['--tls-cert', opts.tls.cert, '--tls-key', opts.tls.key] : [];
  const args = ['--db', db, '--http', `${host}:${port}`, ...bind, '--media-port', '0', '--cores', String(opts.cores ?? 1), '--no-pin', '--recordings-dir', recordings, ...tls, ...(opts.args || [])];
  // `wrapper`: a command that runs the server (its path and arguments appended), e.g. in a
  // namespace of its own.
  const [cmd, ...cmdArgs] = [...(opts.wrapper || []), bin, ...args];
  const child = spawn(cmd, cmdArgs, {
    // `log`: the server's log filter for one test that needs more than the run's.
    env: { ...process.env, RUST_LOG: opts.log || process.env.RUST_LOG || 'warn' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const base = `${opts.tls ? 'https' : 'http'}://${host}:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`${base}/healthz`);
      if (r.ok) {
        return {
          base,
          port,
          child,
          key,
          secret,
          cid,
          db,
          admin,
          recordings,
          /** A join token for `sid`, signed with the key. */
          token: (sid, uid, grants = 'publish,subscribe') =>
            admin('token', 'mint', '--key', key, '--sid', sid, '--uid', uid, '--grant', grants).trim(),
          stop: () => child.kill('SIGKILL'),
        };
      }
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error('webrtcai did not start');
}

/** A fresh headless Chromium with fake camera, microphone and screen. With `{ prompt: false }`
 * there is no fake permission prompt either, and Chromium denies camera and microphone as it
 * does for a person who says no. */
/** Delete the link devices (`lka-`, `lkb-`, `lva-`, `lvb-`, named by tests/browser/link.mjs
 * with its process id) that a test process which is gone left in this namespace: a browser
 * launched here would take one for a network of its own, move its calls onto it, and lose
 * them when the device goes (three full suites' publisher ramp test). */
function sweepStaleDevices() {
  let links;
  try {
    links = execFileSync('ip', ['-o', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  } catch {
    return; // no `ip` here: nothing of ours to sweep either
  }
  for (const [, dev, pid] of links.matchAll(/^\d+: (l(?:ka|kb|va|vb)-(\d+)-\d+)[@:]/gm)) {
    if (Number(pid) === process.pid) continue;
    try {
      process.kill(Number(pid), 0);
      continue; // its process lives: its test still uses it
    } catch (e) {
      if (e.code !== 'ESRCH') continue;
    }
    try {
      execFileSync('ip', ['link', 'del', dev], { stdio: 'ignore' });
    } catch {
      // gone meanwhile
    }
  }
}

export async function launch({ prompt = true, args = [] } = {}) {
  sweepStaleDevices();
  const dir = mkdtempSync(join(tmpdir(), 'webrtcai-chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [...(prompt ? CHROMIUM_FLAGS : CHROMIUM_FLAGS.filter((f) => f !== '--use-fake-ui-for-media-stream')), ...args],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Open the demo origin and join `sid` through the SDK with the server's key; events are
 * recorded in window.events. `init` is merged into the options of `WebRTCai.init` (e.g. a
 * websocket `url` through a {@link startProxy}, or `timeoutMs`), `joinOptions` into those of
 * `client.join` (e.g. `e2ee`). Every video element the test
 * adds is kept on screen (fixed at the top left, sized by its video): the SDK has the relay
 * pause a subscribed video that is off screen, and a page of 1280x720 videos one under the
 * other would have all but the first below the fold. */
export async function joinPage(context, server, sid, name, init = {}, joinOptions = {}) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[${name}] page error:`, e.message));
  if (process.env.PAGE_CONSOLE) page.on('console', (m) => console.error(`[${name}] ${m.type()}: ${m.text()}`));
  await page.goto(`${server.base}/`);
  const key = server.key;
  await page.evaluate(
    async ({ sid, name, key, init, joinOptions }) => {
      const { WebRTCai } = await import('/sdk/webrtcai.js');
      const style = document.createElement('style');
      style.textContent = 'video { position: fixed; top: 0; left: 0; }';
      document.head.append(style);
      window.events = [];
      const client = WebRTCai.init({ key, ...init });
      window.session = await client.join(sid, { name, ...joinOptions });
      for (const ev of ['participant-joined', 'participant-left', 'participant-reconnecting', 'participant-reconnected', 'feed-published', 'feed-unpublished', 'feed-paused', 'feed-resumed', 'speaking', 'active-speaker', 'reconnecting', 'reconnected', 'disconnected', 'recording-started', 'recording-stopped', 'feed-muted', 'feed-unmuted', 'connection-state', 'connection-quality', 'audio-playback', 'devices-changed', 'server-draining', 'error']) {
        window.session.on(ev, (v) => window.events.push({ ev, v, at: Date.now() }));
      }
    },
    { sid, name, key, init, joinOptions },
  );
  return page;
}

/** A TCP proxy on 127.0.0.1 in front of `targetPort`, to cut a page's websocket for real
 * (playwright's setOffline leaves an open websocket alone). `down()` resets every connection
 * through it and refuses new ones until `up()`. `blackhole()` stops forwarding on every
 * connection open now, both ways, without closing or resetting either side (what a network
 * that went away looks like: bytes held, nothing heard, not even a close); connections made
 * afterwards go through as usual. `accepted` counts the connections made through it. */
export async function startProxy(targetPort) {
  const sockets = new Set();
  const links = new Set();
  let refusing = false;
  let accepted = 0;
  const server = net.createServer((client) => {
    accepted += 1;
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    // Either side's close closes the other, until a black hole swallows the link.
    const link = { client, upstream, closeUpstream: () => upstream.destroy(), closeClient: () => client.destroy() };
    links.add(link);
    client.on('close', link.closeUpstream);
    upstream.on('close', link.closeClient);
    client.on('close', () => links.delete(link));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    get accepted() {
      return accepted;
    },
    down() {
      refusing = true;
      for (const s of sockets) s.resetAndDestroy();
    },
    up() {
      refusing = false;
    },
    blackhole() {
      for (const { client, upstream, closeUpstream, closeClient } of links) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
        // The server gives up on its side after a while; the page must not hear of it.
        client.off('close', closeUpstream);
        upstream.off('close', closeClient);
      }
      links.clear();
    },
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** Replace RTCPeerConnection.prototype.setRemoteDescription on the page with one that waits
 * until `window.releaseOffers()`; `window.heldOffers` counts the offers that arrived. Lets a
 * test keep a negotiation open for as long as it needs, through the browser's own API. */
export async function holdOffers(page) {
  await page.evaluate(() => {
    const original = RTCPeerConnection.prototype.setRemoteDescription;
    let release;
    const gate = new Promise((r) => (release = r));
    window.heldOffers = 0;
    window.releaseOffers = () => {
      RTCPeerConnection.prototype.setRemoteDescription = original;
      release();
    };
    RTCPeerConnection.prototype.setRemoteDescription = async function (...args) {
      if (args[0]?.type === 'offer') {
        window.heldOffers += 1;
        await gate;
      }
      return original.apply(this, args);
    };
  });
}

/** Publish the fake webcam into a new <video id="local">; returns the feed id. */
export async function publishWebcam(page) {
  return page.evaluate(async () => {
    const v = document.createElement('video');
    v.id = 'local';
    document.body.append(v);
    const feed = await window.session.publish({ source: 'webcam', target: v });
    return feed.feedId;
  });
}

/** Subscribe to `feedId` into a new <video id="remote-…">. */
export async function subscribe(page, feedId) {
  return page.evaluate(async (feedId) => {
    const v = document.createElement('video');
    v.id = `remote-${feedId}`;
    document.body.append(v);
    await window.session.subscribe(feedId, v);
    return v.id;
  }, feedId);
}

/** Wait until the page saw an event matching `pred` (a function source run in the page). */
export async function waitEvent(page, name, timeoutMs = 10000) {
  await page.waitForFunction((name) => window.events.some((e) => e.ev === name), name, { timeout: timeoutMs });
  return page.evaluate((name) => window.events.find((e) => e.ev === name).v, name);
}

/** Frames decoded so far for the video element's inbound stream, and its width. */
export async function videoState(page, videoId) {
  return page.evaluate(async (videoId) => {
    const v = document.getElementById(videoId);
    let framesDecoded = 0;
    const stats = await window.session.pc.getStats();
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') framesDecoded += s.framesDecoded || 0;
    });
    return { width: v.videoWidth, framesDecoded };
  }, videoId);
}

/** Poll `what` every 250 ms until `check` holds of its value (returned); throws with the last
 * value after `timeoutMs`, and what `explain` returns then (state that says why). */
export async function until(what, check, timeoutMs, explain = null) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await what();
    if (check(last)) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  const why = explain ? ` (${JSON.stringify(await explain().catch((e) => String(e)))})` : '';
  throw new Error(`not reached within ${timeoutMs} ms: ${JSON.stringify(last)}${why}`);
}

/** Resolve once the element shows decoded frames that keep growing. */
export async function expectPlaying(page, videoId, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let first = null;
  while (Date.now() < deadline) {
    const s = await videoState(page, videoId);
    if (s.width > 0 && s.framesDecoded > 0) {
      if (first === null) first = s.framesDecoded;
      else if (s.framesDecoded > first + 5) return s;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const s = await videoState(page, videoId);
  // What the relay says of the page's subscriptions (layer, pauses, estimate) and what the
  // page asked for, so that a failure in a full suite can be read from its output alone.
  const why = await page.evaluate(async () => {
    const out = { quality: null, keyFramesDecoded: 0, pliCount: 0, nackCount: 0, packetsLost: 0 };
    try {
      out.quality = await window.session.quality();
      (await window.session.pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') {
          for (const k of ['keyFramesDecoded', 'pliCount', 'nackCount', 'packetsLost']) out[k] += r[k] ?? 0;
        }
      });
    } catch (e) {
      out.error = String(e);
    }
    return out;
  }).catch((e) => ({ error: String(e) }));
  throw new Error(`${videoId} is not playing: ${JSON.stringify(s)}; ${JSON.stringify(why)}`);
}

/** What a page's video subscription decodes now, as getStats() says: frame width, frames
 * decoded, bytes received, and freezes (total seconds and count). */
export async function inboundVideo(page) {
  return page.evaluate(async () => {
    const out = { width: 0, framesDecoded: 0, bytesReceived: 0, freezes: 0, freezeCount: 0 };
    (await window.session.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        Object.assign(out, {
          width: s.frameWidth ?? 0,
          framesDecoded: s.framesDecoded ?? 0,
          bytesReceived: s.bytesReceived ?? 0,
          freezes: s.totalFreezesDuration ?? 0,
          freezeCount: s.freezeCount ?? 0,
        });
      }
    });
    return out;
  });
}

/** Subscribe to `feedId` into a new video element of CSS `style`, with the SDK's subscribe
 * `options`; returns the element's id. */
export async function subscribeInto(page, feedId, style = {}, options = {}) {
  return page.evaluate(
    async ({ feedId, style, options }) => {
      const v = document.createElement('video');
      v.id = `remote-${feedId}`;
      Object.assign(v.style, style);
      document.body.append(v);
      await window.session.subscribe(feedId, v, options);
      return v.id;
    },
    { feedId, style, options },
  );
}

/** What `ffmpeg -v error` prints decoding the whole of `file` (its errors go to stderr), and
 * its exit status when not 0: '' for a file that decodes clean. Frames are passed on at their
 * own times and in the file's own time base (milliseconds), as a player shows them
 * (`-fps_mode passthrough -enc_time_base:v -1`): ffmpeg's default conversion to a constant
 * frame rate complains ("non monotonically increasing dts") when a 30 fps video sits half a
 * frame off its grid (seen with frames at 17, 50, 84, 117 ms), and passthrough alone does when
 * two frames fall in one 1/30 s step (a camera's uneven frames, a VP9 key picture's layers
 * 1 ms apart); neither says anything of the file. `output` options go before the output. */
export function ffmpegErrors(file, output = []) {
  const r = spawnSync('ffmpeg', ['-nostdin', '-v', 'error', '-i', file, '-fps_mode', 'passthrough', '-enc_time_base:v', '-1', ...output, '-f', 'null', '-'], { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}${r.status === 0 ? '' : `(exit ${r.status ?? r.signal})`}`;
}

/** Read `/metrics` on 127.0.0.1:`port` once: `text`, and `sample(series)` the value of the
 * sample named exactly so (labels included, regex-escaped by the caller), NaN where absent. */
export async function scrape(port) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return { text, sample: (series) => Number(new RegExp(`^${series} (\\S+)$`, 'm').exec(text)?.[1]) };
}
