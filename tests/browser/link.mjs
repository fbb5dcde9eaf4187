// Emulated network links for the browser tests: one participant (a Chromium, or any process)
// in a network namespace of its own, joined to the test's namespace by tests/link/linkem.py,
// which applies delay, jitter, loss and a rate cap per direction (the kernel has no netem).
//
//   test namespace (private, from `unshare -n`)        namespace linkem-PID-N
//   server on 198.19.0.1 (on lo)                       Chromium, host candidate 198.18.N.2
//   lka-PID-N  198.18.N.1  <== linkem.py ==>  lkb-PID-N  198.18.N.2, route 198.19.0.1 via it
//
// "up" is participant -> server, "down" is server -> participant. See tests/README.md.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import { startServer, CHROMIUM_FLAGS } from './harness.mjs';

const LINKEM = join(dirname(fileURLToPath(import.meta.url)), '..', 'link', 'linkem.py');

/** Where the server listens when participants reach it over emulated links (benchmarking range,
 * so it can never be a real host). */
export const SERVER_HOST = '198.19.0.1';

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/** Refuse to touch the machine's own network: everything here adds addresses and devices,
 * which belongs in the private, loopback-only namespace the suite runs in (scripts/test). Any
 * interface besides `lo` and this module's own links means this is not such a namespace. */
function requirePrivateNamespace() {
  const others = ip('-o', 'link', 'show')
    .split('\n')
    .map((line) => /^\d+: ([^:@]+)/.exec(line)?.[1])
    .filter((name) => name && name !== 'lo' && !name.startsWith('lka-') && !name.startsWith('lva-'));
  if (others.length > 0) {
    throw new Error(`link emulator: this network namespace has ${others.join(', ')}; run inside a private one, e.g. unshare -n bash -c 'ip link set lo up && node --test …'`);
  }
}

const open = new Set(); // links not closed yet, torn down on exit whatever happens
let serial = 0;
let serverAddressUsers = 0;

process.on('exit', () => {
  for (const link of open) link.closeSync();
});

/** Delete namespaces that earlier test processes left behind (killed before close()): their
 * names carry the pid, so a namespace whose process is gone is nobody's. */
function sweepStale() {
  for (const line of ip('netns', 'list').split('\n')) {
    const m = /^linkem-(\d+)-\d+/.exec(line);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (e) {
      if (e.code === 'ESRCH') ip('netns', 'del', m[0]);
    }
  }
}

/** A /24 in 198.18.0.0/16 that no device in this namespace uses yet. */
function freeSubnet() {
  const used = ip('-4', '-o', 'addr').toString();
  for (let n = 1; n < 255; n++) {
    if (!used.includes(`198.18.${n}.`)) return n;
  }
  throw new Error('no free 198.18.N.0/24 for another link');
}

/**
 * Create a namespace joined to this one by an emulated link and start linkem.py on it.
 * `up` and `down` are linkem parameters (delay_ms, jitter_ms, jitter_dist, reorder, loss,
 * rate_kbit, queue_ms, queue_bytes, burst_bytes); `seed` makes loss and jitter repeatable.
 * The namespace routes {@link SERVER_HOST} into the link, and each prefix of `routes` (another
 * namespace's address, reached through this one).
 */
export async function createLink({ up = {}, down = {}, seed = 1, routes = [] } = {}) {
  requirePrivateNamespace();
  sweepStale();
  const id = `${process.pid}-${++serial}`;
  const ns = `linkem-${id}`;
  const n = freeSubnet();
  const gateway = `198.18.${n}.1`;
  const address = `198.18.${n}.2`;
  ip('netns', 'add', ns);
  const link = new Link(ns, gateway, address);
  open.add(link);
  try {
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    await link.start([
      '--b-netns', `/run/netns/${ns}`,
      '--a-dev', `lka-${id}`.slice(0, 15),
      '--b-dev', `lkb-${id}`.slice(0, 15),
      '--a-addr', gateway,
      '--b-addr', address,
      '--b-route', `${SERVER_HOST}/32`,
      ...routes.flatMap((r) => ['--b-route', r]),
      '--seed', String(seed),
      '--up', JSON.stringify(up),
      '--down', JSON.stringify(down),
    ]);
  } catch (e) {
    await link.close();
    throw e;
  }
  return link;
}

/**
 * A namespace joined to this one by a plain veth pair (no emulation), for a service that the
 * test's namespace and, through it, the namespaces of {@link createLink} (given its address in
 * `routes`) reach: this namespace forwards between them. `spawn` runs a process in it; `close`
 * deletes it, and the veth pair with it.
 */
export function createVethNamespace() {
  requirePrivateNamespace();
  sweepStale();
  const id = `${process.pid}-${++serial}`;
  const ns = `linkem-${id}`;
  const n = freeSubnet();
  const gateway = `198.18.${n}.1`;
  const address = `198.18.${n}.2`;
  const [a, b] = [`lva-${id}`.slice(0, 15), `lvb-${id}`.slice(0, 15)];
  ip('netns', 'add', ns);
  const peer = {
    ns,
    gateway,
    address,
    spawn: (cmd, args = [], opts = {}) => spawn('ip', ['netns', 'exec', ns, cmd, ...args], opts),
    closeSync() {
      open.delete(peer);
      // The pair goes now, from this side: left to the namespace's deletion, this end (with
      // its 198.18.N.1) stayed here for a minute or more, and a later test's Chromium took it
      // for a network of its own, moved its call onto it and lost the call for seconds when
      // the device went.
      for (const args of [['link', 'del', a], ['netns', 'del', ns]]) {
        try {
          ip(...args);
        } catch {
          // already gone
        }
      }
    },
    async close() {
      peer.closeSync();
    },
  };
  open.add(peer);
  try {
    ip('link', 'add', a, 'type', 'veth', 'peer', 'name', b, 'netns', ns);
    ip('addr', 'add', `${gateway}/24`, 'dev', a);
    ip('link', 'set', a, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'addr', 'add', `${address}/24`, 'dev', b);
    ip('-n', ns, 'link', 'set', b, 'up');
    ip('-n', ns, 'route', 'add', 'default', 'via', gateway);
    // Only this (private) namespace forwards: the setting is per namespace.
    writeFileSync('/proc/sys/net/ipv4/ip_forward', '1');
  } catch (e) {
    peer.closeSync();
    throw e;
  }
  return peer;
}

/**
 * Drop every UDP packet that comes from `address` into this namespace, silently, as a firewall
 * that lets only TCP out would: a policy rule that blackholes them, placed before the lookup of
 * local addresses (which the kernel consults first by default, so the local table's rule moves
 * behind it). Returns what undoes it. The kernel has no netfilter modules for this (no
 * iptables here) and no tc actions; policy routing is built in.
 */
export function blockUdpFrom(address) {
  requirePrivateNamespace();
  const rules = ip('rule', 'show');
  const moved = /^0:\s+from all lookup local/m.test(rules);
  ip('rule', 'add', 'pref', '10', 'from', address, 'ipproto', 'udp', 'blackhole');
  if (moved) {
    ip('rule', 'add', 'pref', '20', 'lookup', 'local');
    ip('rule', 'del', 'pref', '0');
  }
  return () => {
    ip('rule', 'del', 'pref', '10');
    if (moved) {
      ip('rule', 'add', 'pref', '0', 'lookup', 'local');
      ip('rule', 'del', 'pref', '20');
    }
  };
}

class Link {
  constructor(ns, gateway, address) {
    /** Name of the participant's namespace (`ip netns exec NAME …`). */
    this.ns = ns;
    /** The test namespace's end of the link. */
    this.gateway = gateway;
    /** The participant's address: what the server sees, and Chromium's host candidate. */
    this.address = address;
    this.child = null;
    this.pending = new Map();
    this.nextId = 0;
    this.stderr = '';
    this.closed = false;
  }

  /** Start linkem.py and wait for its ready line. */
  async start(args) {
    const child = spawn(process.env.PYTHON || 'python3', [LINKEM, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    child.stderr.on('data', (d) => {
      this.stderr += d;
      process.stderr.write(`[linkem ${this.ns}] ${d}`);
    });
    child.stdin.on('error', () => {}); // it may be gone already; exit below tells the story
    const exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (e) => resolve({ code: e.message }));
    });
    this.exited = exited;
    const lines = createInterface({ input: child.stdout });
    const ready = new Promise((resolve, reject) => {
      lines.on('line', (line) => {
        const msg = JSON.parse(line);
        if (msg.ready) return resolve(msg);
        const waiter = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        if (!waiter) return;
        if (msg.ok) waiter.resolve(msg);
        else waiter.reject(new Error(`linkem: ${msg.error}`));
      });
      exited.then(({ code, signal }) => {
        const err = new Error(`linkem exited (${code ?? signal}): ${this.stderr.trim()}`);
        for (const w of this.pending.values()) w.reject(err);
        this.pending.clear();
        reject(err);
      });
    });
    await withTimeout(ready, 5000, 'linkem did not get ready');
  }

  async request(msg) {
    if (this.closed) throw new Error('link is closed');
    const id = ++this.nextId;
    const reply = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.child.stdin.write(`${JSON.stringify({ ...msg, id })}\n`);
    return withTimeout(reply, 5000, `linkem did not answer ${msg.cmd}`);
  }

  /** Change parameters while it runs: `{ up: {...}, down: {...} }`; fields not given stay.
   * Resolves to the parameters now in force. */
  async set(params) {
    return (await this.request({ cmd: 'set', ...params })).params;
  }

  /** Counters per direction: packets_/bytes_ in, forwarded, dropped_loss, dropped_queue, and
   * write_errors, queued_packets, queued_bytes, in_flight. */
  async stats() {
    return (await this.request({ cmd: 'stats' })).stats;
  }

  /** Spawn `cmd` inside the participant's namespace. */
  spawn(cmd, args = [], opts = {}) {
    return spawn('ip', ['netns', 'exec', this.ns, cmd, ...args], opts);
  }

  /** Stop linkem (its devices go with it) and delete the namespace. Safe to call twice. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.stdin.end(); // EOF is linkem's cue to exit
      const gone = await Promise.race([this.exited.then(() => true), sleep(2000).then(() => false)]);
      if (!gone) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    this.removeNamespace();
  }

  /** What close() does, synchronously, for process exit. */
  closeSync() {
    this.closed = true;
    if (this.child && this.child.exitCode === null) this.child.kill('SIGKILL');
    this.removeNamespace();
  }

  removeNamespace() {
    open.delete(this);
    try {
      ip('netns', 'del', this.ns);
    } catch {
      // already gone
    }
  }
}

/**
 * {@link startServer} on {@link SERVER_HOST}: HTTP and media bound there, the key's domain
 * set to it. The address goes on `lo` for as long as a server uses it.
 */
export async function startLinkServer(opts = {}) {
  requirePrivateNamespace();
  if (serverAddressUsers++ === 0 && !ip('-4', '-o', 'addr', 'show', 'dev', 'lo').includes(` ${SERVER_HOST}/`)) {
    ip('addr', 'add', `${SERVER_HOST}/32`, 'dev', 'lo');
  }
  const release = () => {
    if (--serverAddressUsers === 0) {
      try {
        ip('addr', 'del', `${SERVER_HOST}/32`, 'dev', 'lo');
      } catch {
        // already gone
      }
    }
  };
  let server;
  try {
    server = await startServer({ ...opts, host: SERVER_HOST });
  } catch (e) {
    release();
    throw e;
  }
  const stop = server.stop;
  let stopped = false;
  server.stop = () => {
    stop();
    if (!stopped) release();
    stopped = true;
  };
  return server;
}

/**
 * A fresh headless Chromium inside `link`'s namespace, for pages of `server` (one from
 * {@link startLinkServer}). Playwright talks to it over a pipe, so it only needs a wrapper that
 * enters the namespace. Flags are the harness's, less --allow-loopback-in-peer-connection (the
 * host candidate is the link address) and plus the server's origin as a secure one (getUserMedia
 * needs a secure context, and the page is plain http on a non-loopback address).
 */
export async function launchBehind(link, server) {
  const dir = mkdtempSync(join(tmpdir(), 'webrtcai-linked-chromium-'));
  const wrapper = join(dir, 'chromium');
  const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec '${link.ns}' '${chromiumPath}' "$@"\n`, { mode: 0o755 });
  const args = [
    ...CHROMIUM_FLAGS.filter((f) => f !== '--allow-loopback-in-peer-connection'),
    `--unsafely-treat-insecure-origin-as-secure=${server.base}`,
  ];
  let context;
  try {
    context = await chromium.launchPersistentContext(join(dir, 'profile'), { executablePath: wrapper, headless: true, args });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    context,
    async close() {
      await context.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One link per seed and a Chromium behind each, for pages of `server`. Everything made is
 * pushed onto `open` as soon as it exists (close it in reverse, whatever happens). */
export async function linkedBrowsers(server, seeds, open) {
  const links = [];
  for (const seed of seeds) {
    const link = await createLink({ seed });
    open.push(link);
    links.push(link);
  }
  const browsers = [];
  for (const link of links) {
    const b = await launchBehind(link, server);
    open.push(b);
    browsers.push(b);
  }
  return { links, browsers };
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
    }),
  ]);
}
