// Participants whose network drops every UDP packet: Chromium in a namespace whose UDP never
// reaches the server. With ICE-TCP (RFC 6544, RFC 4571) it publishes and plays through the
// relay over its passive TCP candidate, while a page on a working UDP path in the same session
// stays on UDP. With ICE-TCP off, through a real TURN server (Debian's coturn) over TCP, given
// in the SDK's join options.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { launch, joinPage, publishWebcam, subscribe, expectPlaying, until, freePort, scrape } from './harness.mjs';
import { createVethNamespace, startLinkServer, launchBehind, blockUdpFrom, SERVER_HOST } from './link.mjs';

/** The page's selected candidate pair: each side's protocol and type. */
const selectedPair = (page) =>
  page.evaluate(async () => {
    const report = await window.session.getStats();
    const stats = [...report.raw.values()];
    const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = transport && stats.find((s) => s.id === transport.selectedCandidatePairId);
    if (!pair) return null;
    const side = (id) => {
      const c = stats.find((s) => s.id === id);
      return { protocol: c.protocol, type: c.candidateType, tcpType: c.tcpType ?? null, relayProtocol: c.relayProtocol ?? null, address: c.address, port: c.port };
    };
    return { local: side(pair.localCandidateId), remote: side(pair.remoteCandidateId), state: pair.state };
  });

/** A Chromium in a namespace of its own whose UDP to this one is dropped (`behind`), and one
 * here with UDP (`here`), for pages of `server`; each thing made is pushed onto `open`. */
async function browsers(server, open) {
  const blocked = createVethNamespace();
  open.push(blocked);
  const unblock = blockUdpFrom(blocked.address);
  open.push({ close: async () => unblock() });
  const behind = await launchBehind(blocked, server);
  open.push(behind);
  const here = await launch({ args: [`--unsafely-treat-insecure-origin-as-secure=${server.base}`] });
  open.push(here);
  return { behind, here };
}

test('a browser whose UDP is blocked publishes and plays over ICE-TCP', async () => {
  const metricsPort = await freePort();
  const server = await startLinkServer({ args: ['--metrics-http', `127.0.0.1:${metricsPort}`] });
  const open = [server];
  try {
    const { behind, here } = await browsers(server, open);

    const alice = await joinPage(behind.context, server, 'ice-tcp', 'alice');
    const bob = await joinPage(here.context, server, 'ice-tcp', 'bob');
    const feedA = await publishWebcam(alice);
    const feedB = await publishWebcam(bob);
    // Each plays the other's video: alice's goes up her TCP connection and down bob's UDP,
    // bob's the other way.
    await expectPlaying(bob, await subscribe(bob, feedA), 30000);
    await expectPlaying(alice, await subscribe(alice, feedB), 30000);

    const pairA = await until(() => selectedPair(alice), (p) => p?.state === 'succeeded', 10000);
    const pairB = await until(() => selectedPair(bob), (p) => p?.state === 'succeeded', 10000);
    console.log(`alice's pair: ${JSON.stringify(pairA)}; bob's: ${JSON.stringify(pairB)}`);
    assert.equal(pairA.local.protocol, 'tcp');
    assert.equal(pairA.remote.protocol, 'tcp');
    assert.equal(pairA.remote.type, 'host');
    assert.equal(pairA.remote.tcpType, 'passive');
    assert.equal(pairB.local.protocol, 'udp');

    // The relay's counters: one connection carries alice's packets, and more keep coming.
    const before = await scrape(metricsPort);
    await new Promise((r) => setTimeout(r, 2000));
    const after = await scrape(metricsPort);
    const sum = (m, series) => [...m.text.matchAll(new RegExp(`^${series}\\{[^}]*\\} (\\S+)$`, 'gm'))].reduce((a, x) => a + Number(x[1]), 0);
    const open_ = sum(after, 'webrtcai_relay_ice_tcp_connections');
    const frames = sum(after, 'webrtcai_relay_ice_tcp_packets_received_total') - sum(before, 'webrtcai_relay_ice_tcp_packets_received_total');
    const dropped = sum(after, 'webrtcai_relay_ice_tcp_packets_dropped_total');
    console.log(`ICE-TCP: ${open_} connection(s) open, ${frames} packets in 2 s, ${dropped} dropped`);
    assert.ok(open_ >= 1, after.text.split('\n').filter((l) => l.includes('ice_tcp')).join('\n'));
    assert.ok(frames > 100, `${frames} packets over TCP in 2 s`);
    // Decoding goes on over TCP: frames keep arriving at bob from alice.
    const decoded = () => bob.evaluate(async () => {
      const stats = [...(await window.session.getStats()).raw.values()];
      return stats.filter((s) => s.type === 'inbound-rtp' && s.kind === 'video').reduce((a, s) => a + (s.framesDecoded ?? 0), 0);
    });
    const d0 = await decoded();
    await new Promise((r) => setTimeout(r, 2000));
    const d1 = await decoded();
    console.log(`bob decoded ${d1 - d0} frames of alice's in 2 s`);
    assert.ok(d1 - d0 > 20, `${d1 - d0} frames`);
  } finally {
    for (const o of open.reverse()) await o.close?.() ?? o.stop?.();
  }
});

/** Debian's coturn on SERVER_HOST, long-term credentials, plain TURN over UDP and TCP on
 * `port`, relaying from SERVER_HOST. Resolves once it listens. */
async function startCoturn(port, user, password) {
  const child = spawn('turnserver', [
    '-n', '--no-cli', '--no-tls', '--no-dtls', '--fingerprint', '--lt-cred-mech',
    `--user=${user}:${password}`, '--realm=webrtcai.test',
    `--listening-ip=${SERVER_HOST}`, `--listening-port=${port}`, `--relay-ip=${SERVER_HOST}`,
    '--min-port=49160', '--max-port=49200', '--log-file=stdout', '--simple-log', '--verbose',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  await until(async () => log, (l) => /Total General servers|listener opened on/i.test(l) || child.exitCode !== null, 10000)
    .catch(() => {});
  if (child.exitCode !== null) throw new Error(`coturn exited: ${log}`);
  await new Promise((r) => setTimeout(r, 300));
  return { log: () => log, close: async () => child.kill('SIGKILL') };
}

test('with ICE-TCP off, a browser whose UDP is blocked goes through coturn over TCP', async () => {
  const server = await startLinkServer({ args: ['--no-ice-tcp'] });
  const open = [server];
  try {
    const turnPort = await freePort(SERVER_HOST);
    const coturn = await startCoturn(turnPort, 'alice', 'turn-secret');
    open.push(coturn);
    const { behind, here } = await browsers(server, open);

    const turn = {
      iceServers: [{ urls: `turn:${SERVER_HOST}:${turnPort}?transport=tcp`, username: 'alice', credential: 'turn-secret' }],
      iceTransportPolicy: 'relay',
    };
    const alice = await joinPage(behind.context, server, 'turn', 'alice', {}, turn);
    const bob = await joinPage(here.context, server, 'turn', 'bob');
    const feedA = await publishWebcam(alice);
    const feedB = await publishWebcam(bob);
    try {
      await expectPlaying(bob, await subscribe(bob, feedA), 30000);
      await expectPlaying(alice, await subscribe(alice, feedB), 30000);
    } catch (e) {
      console.log(`coturn's log:\n${coturn.log().slice(-3000)}`);
      console.log('alice\'s candidates:', await alice.evaluate(async () => JSON.stringify([...(await window.session.getStats()).raw.values()].filter((s) => s.type.includes('candidate')).map((s) => ({ type: s.type, ct: s.candidateType, p: s.protocol, a: s.address, port: s.port, st: s.state, url: s.url })))));
      throw e;
    }
    const pair = await until(() => selectedPair(alice), (p) => p?.state === 'succeeded', 10000);
    console.log(`alice's pair: ${JSON.stringify(pair)}`);
    assert.equal(pair.local.type, 'relay');
    assert.equal(pair.local.relayProtocol, 'tcp');
    assert.equal(pair.local.address, SERVER_HOST);
    assert.equal(pair.remote.protocol, 'udp');
    // coturn's own account of it: an allocation for alice's user, with traffic.
    const log = coturn.log();
    assert.match(log, /ALLOCATE processed, success/, log.slice(-2000));
    assert.match(log, /user <alice>/, log.slice(-2000));
  } finally {
    for (const o of open.reverse()) await o.close?.() ?? o.stop?.();
  }
});
