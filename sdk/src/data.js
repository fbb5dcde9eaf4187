// @ts-check
import { WebRTCaiError } from './errors.js';

/** @typedef {import('./session.js').Session} Session */

/** Data channels. The relay opens two to every page that joins with data (the default): a
 * reliable one (ordered, retransmitted) and a lossy one (unordered, never retransmitted). Each
 * message carries a small envelope: to whom (as sent) or from whom (as delivered), and whether
 * the page sent a string. */
const DATA_LABELS = { reliable: 'reliable', lossy: 'lossy' };
const ENVELOPE_VERSION = 1;
const ENVELOPE_TEXT = 1;
/** Back-pressure: a send waits while more than this is buffered on its channel, until the
 * buffer drains to the low mark. */
const DATA_HIGH_WATER = 1024 * 1024;
const DATA_LOW_WATER = 256 * 1024;
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** The envelope of a message as the page sends it. */
function addressed(text, targets, payload) {
  const ids = targets.map((t) => utf8.encode(String(t)));
  const out = new Uint8Array(4 + ids.reduce((n, id) => n + 2 + id.length, 0) + payload.length);
  const view = new DataView(out.buffer);
  out[0] = ENVELOPE_VERSION;
  out[1] = text ? ENVELOPE_TEXT : 0;
  view.setUint16(2, ids.length);
  let at = 4;
  for (const id of ids) {
    view.setUint16(at, id.length);
    out.set(id, at + 2);
    at += 2 + id.length;
  }
  out.set(payload, at);
  return out;
}

/** A delivered message's sender, kind and bytes; null when it does not read. */
function delivered(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 4 || bytes[0] !== ENVELOPE_VERSION) return null;
  const len = new DataView(buffer).getUint16(2);
  if (4 + len > bytes.length) return null;
  return {
    from: fromUtf8.decode(bytes.subarray(4, 4 + len)),
    text: (bytes[1] & ENVELOPE_TEXT) !== 0,
    payload: bytes.subarray(4 + len),
  };
}

async function bytesOf(data) {
  if (typeof data === 'string') return { text: true, payload: utf8.encode(data) };
  if (data instanceof ArrayBuffer) return { text: false, payload: new Uint8Array(data) };
  if (ArrayBuffer.isView(data)) return { text: false, payload: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  if (typeof Blob !== 'undefined' && data instanceof Blob) return { text: false, payload: new Uint8Array(await data.arrayBuffer()) };
  throw new WebRTCaiError('invalid_data', 'send takes a string, an ArrayBuffer, a typed array, a DataView or a Blob');
}

/** @param {Session} session */
export function onDataChannel(session, channel) {
  const kind = Object.keys(DATA_LABELS).find((k) => DATA_LABELS[k] === channel.label);
  if (!kind) return;
  channel.binaryType = 'arraybuffer';
  channel.bufferedAmountLowThreshold = DATA_LOW_WATER;
  channel.onmessage = (ev) => {
    const m = typeof ev.data === 'string' ? null : delivered(ev.data);
    if (!m) return;
    session._emit('data', { from: m.from, data: m.text ? fromUtf8.decode(m.payload) : m.payload, reliable: kind === 'reliable' });
  };
  channel.onclose = () => {
    if (session._channels[kind] === channel) session._channels[kind] = null;
    // What was still buffered never left this page.
    if (channel.bufferedAmount > 0 && !session._left) {
      session._emit('error', { code: 'data_lost', message: `${channel.bufferedAmount} bytes of ${kind} data were not sent before the channel closed` });
    }
  };
  const opened = () => {
    session._channels[kind] = channel;
    for (const w of [...session._channelWaiters]) w();
  };
  if (channel.readyState === 'open') opened();
  else channel.addEventListener('open', opened, { once: true });
}

// The relay's channel of `kind` once it is open; rejects when it does not open in time.
/** @param {Session} session */
function openChannel(session, kind) {
  const ready = () => session._channels[kind]?.readyState === 'open';
  if (ready()) return Promise.resolve(session._channels[kind]);
  if (!session._dataWanted) return Promise.reject(new WebRTCaiError('data_unavailable', 'this session was joined with { data: false }'));
  return new Promise((resolve, reject) => {
    const done = () => {
      if (!ready()) return;
      clearTimeout(timer);
      session._channelWaiters = session._channelWaiters.filter((w) => w !== done);
      resolve(session._channels[kind]);
    };
    const timer = setTimeout(() => {
      session._channelWaiters = session._channelWaiters.filter((w) => w !== done);
      reject(new WebRTCaiError('data_unavailable', `the ${kind} data channel did not open within ${session._timeoutMs} ms`));
    }, session._timeoutMs);
    session._channelWaiters.push(done);
  });
}

/** @param {Session} session */
export function maxMessageSize(session) {
  const max = session.pc.sctp?.maxMessageSize;
  if (!max) return null;
  return Math.min(max, Number.MAX_SAFE_INTEGER) - 4 - utf8.encode(session.uid ?? '').length;
}

/** @param {Session} session
 * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
 * @param {import('../webrtcai.js').SendOptions} [options] */
export function send(session, data, { to, reliable = true } = {}) {
  if (session._left) return Promise.reject(new WebRTCaiError('not_joined', 'this session was left'));
  if (session._dataRefused) return Promise.reject(new WebRTCaiError('forbidden', session._dataRefused));
  const kind = reliable ? 'reliable' : 'lossy';
  const targets = to === undefined || to === null ? [] : Array.isArray(to) ? to : [to];
  // Chained per channel, so that sends leave in the order they were made, whatever their
  // kind of data takes to read.
  const job = session._sendChains[kind].then(async () => {
    if (to !== undefined && to !== null && targets.length === 0) return;
    const { text, payload } = await bytesOf(data);
    const envelope = addressed(text, targets, payload);
    const channel = await openChannel(session, kind);
    const max = session.pc.sctp?.maxMessageSize ?? 65536;
    const deliveredSize = 4 + utf8.encode(session.uid ?? '').length + payload.length;
    if (envelope.length > max || deliveredSize > max) {
      throw new WebRTCaiError('message_too_large', `a message of ${payload.length} bytes is over the ${session.maxMessageSize} the data channel takes`);
    }
    if (channel.bufferedAmount > DATA_HIGH_WATER) {
      await new Promise((resolve, reject) => {
        const low = () => {
          channel.removeEventListener('close', closed);
          resolve();
        };
        const closed = () => {
          channel.removeEventListener('bufferedamountlow', low);
          reject(new WebRTCaiError('connection_lost', `the ${kind} data channel closed`));
        };
        channel.addEventListener('bufferedamountlow', low, { once: true });
        channel.addEventListener('close', closed, { once: true });
      });
    }
    if (channel.readyState !== 'open') throw new WebRTCaiError('connection_lost', `the ${kind} data channel closed`);
    channel.send(envelope);
  });
  session._sendChains[kind] = job.catch(() => {});
  return job;
}
