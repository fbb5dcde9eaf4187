// UDP traffic from inside an emulated link's namespace, for link.test.mjs (run as
// `ip netns exec NS node link-probe.mjs '{"mode": …}'`); prints one JSON line with what it saw.
//   ping:  `count` datagrams of `size` bytes every `intervalMs` to host:port, each carrying its
//          sequence number and send time; reports every echo (seq, rtt ms) in arrival order.
//   blast: `count` datagrams of `size` bytes to host:port, paced at `pps`; reports how many.
// Every loop is bounded: ping gives up `waitMs` after its last send.
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';

const opts = JSON.parse(process.argv[2]);
const sock = dgram.createSocket('udp4');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function datagram(seq) {
  const buf = Buffer.alloc(Math.max(12, opts.size || 64));
  buf.writeUInt32BE(seq, 0);
  buf.writeDoubleBE(performance.now(), 4);
  return buf;
}

async function ping() {
  const echoes = [];
  sock.on('message', (msg) => echoes.push([msg.readUInt32BE(0), performance.now() - msg.readDoubleBE(4)]));
  for (let seq = 0; seq < opts.count; seq++) {
    sock.send(datagram(seq), opts.port, opts.host);
    await sleep(opts.intervalMs);
  }
  const deadline = performance.now() + (opts.waitMs ?? 2000);
  while (echoes.length < opts.count && performance.now() < deadline) await sleep(5);
  return { sent: opts.count, echoes };
}

async function blast() {
  const start = performance.now();
  let sent = 0;
  // Send what the schedule owes every few ms: steady on average, in small bursts.
  while (sent < opts.count) {
    const due = Math.min(opts.count, Math.floor(((performance.now() - start) / 1000) * opts.pps) + 1);
    for (; sent < due; sent++) sock.send(datagram(sent), opts.port, opts.host);
    await sleep(2);
  }
  await sleep(50); // let the last sends leave the socket
  return { sent, ms: performance.now() - start };
}

const result = await (opts.mode === 'ping' ? ping() : blast());
sock.close();
console.log(JSON.stringify(result));
