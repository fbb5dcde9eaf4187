// What the cluster tests share: a Redis of their own, a cluster CA with node certificates,
// nodes started on them, and their trunks' counters.
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { startServer } from './harness.mjs';

const root = join(import.meta.dirname, '..', '..');
const bin = process.env.WEBRTCAI_BIN || join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'debug', 'webrtcai');

/** The nodes' admin secret. */
export const ADMIN = 'cluster-test-secret';

/** The node's trunks, from its admin API. */
export async function trunks(node) {
  const r = await fetch(`${node.base}/admin/trunks`, { headers: { authorization: `Bearer ${ADMIN}` } });
  assert.equal(r.status, 200);
  return (await r.json()).trunks;
}

/** RTP packets a page has sent, audio and video, every layer, without retransmissions. */
export async function packetsSent(page) {
  return page.evaluate(async () => {
    let n = 0;
    (await window.session.pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp') n += (s.packetsSent || 0) - (s.retransmittedPacketsSent || 0);
    });
    return n;
  });
}

/** A redis-server of the test's own on a unix socket; `restart()` kills it and starts an
 * empty one on the same socket (what a Redis without persistence that restarts is). */
export async function startRedis({ tcp = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'webrtcai-redis-'));
  const socket = join(dir, 'redis.sock');
  // With `tcp`, also on a port of 127.0.0.1 (for a proxy in front of it).
  const port = tcp ? await freePort() : 0;
  let child = null;
  const run = async () => {
    rmSync(socket, { force: true });
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--unixsocket', socket, '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
    for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 50));
    if (!existsSync(socket)) throw new Error('redis-server did not start');
  };
  await run();
  return {
    url: `redis+unix://${socket}`,
    port,
    /** Kill it, run `during` (what happens while Redis is down), wait `downMs`, start it. */
    async restart(downMs = 0, during = null) {
      child.kill('SIGKILL');
      if (during) await during();
      await new Promise((r) => setTimeout(r, downMs));
      await run();
    },
    stop: () => { child.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }); },
  };
}

/** A cluster CA and the certificates of `nodes`, in a fresh directory. */
export function clusterDir(nodes) {
  const dir = mkdtempSync(join(tmpdir(), 'webrtcai-cluster-'));
  const run = (...args) => execFileSync(bin, [...args, '--dir', dir], { env: { ...process.env, RUST_LOG: 'error' } });
  run('cluster', 'init');
  for (const n of nodes) run('cluster', 'node', n);
  return dir;
}

/** Node `id` of the cluster: a server on `redis` in `region`; `first` (a server already
 * started) gives the shared account database and key; `extra`, more flags. */
export async function startNode(redis, dir, id, region, first = null, extra = []) {
  const shared = first ? { db: first.db, key: first.key, secret: first.secret, cid: first.cid } : {};
  return startServer({
    ...shared,
    args: ['--redis', redis.url, '--node-id', id, '--region', region, '--cluster-dir', dir, '--edge-bind', '127.0.0.1:0', '--admin-secret', ADMIN, ...extra],
  });
}

/** A TCP port of 127.0.0.1 that nothing listens on now. */
async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}
