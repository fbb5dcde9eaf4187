// @ts-check
import { WebRTCaiError } from './errors.js';

/** @typedef {import('./session.js').Session} Session */

/** End-to-end encryption. Every encoded frame is encrypted in the browser with AES-GCM under a
 * key derived from the session's passphrase (PBKDF2-SHA-256 over the session name), before
 * packetization, and decrypted after depacketization on the far side; the relay forwards what
 * it cannot read. What the relay must read stays in the clear: the RTP headers and payload
 * descriptors (added after the transform), and the first bytes of a VP8 frame (10 of a
 * keyframe: its frame tag and size, from which the relay tells keyframes and their size; 3 of
 * others) and an Opus frame's TOC byte. Those bytes are authenticated with the rest. A frame
 * becomes: clear bytes | ciphertext and tag | IV (12 random bytes) | clear count | 0xE2. */
const E2EE_ITERATIONS = 100000;
const E2EE_SALT = 'webrtcai-e2ee/';

async function e2eeKey(passphrase, sid) {
  const encoder = new TextEncoder();
  const material = await crypto.subtle.importKey('raw', encoder.encode(passphrase), 'PBKDF2', false, ['deriveKey']);
  return crypto.subtle.deriveKey(
    { name: 'PBKDF2', salt: encoder.encode(E2EE_SALT + sid), iterations: E2EE_ITERATIONS, hash: 'SHA-256' },
    material,
    { name: 'AES-GCM', length: 128 },
    false,
    ['encrypt', 'decrypt'],
  );
}

/** The worker that encrypts and decrypts the frames (each sender's and receiver's encoded
 * streams are handed to it), made from this function's source: the SDK stays one file. So it
 * uses nothing from outside itself but a worker's globals. */
function e2eeWorker() {
  const MAGIC = 0xe2;
  const scope = /** @type {any} */ (self); // a worker's global scope
  let key = null;
  let reportedAt = 0;
  let dropped = 0;
  // What the relay must read stays clear: a VP8 frame's tag (and a keyframe's size), an Opus
  // frame's TOC byte.
  const clearBytes = (frame, kind) => {
    if (kind === 'audio') return 1;
    const mime = (frame.getMetadata?.().mimeType ?? 'video/vp8').toLowerCase();
    if (mime === 'video/vp8') return frame.type === 'key' ? 10 : 3;
    return 0;
  };
  const encrypt = async (frame, controller, kind) => {
    const data = new Uint8Array(frame.data);
    if (data.length === 0) return controller.enqueue(frame);
    const n = Math.min(clearBytes(frame, kind), data.length);
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: data.subarray(0, n) }, key, data.subarray(n)));
    const out = new Uint8Array(n + sealed.length + 14);
    out.set(data.subarray(0, n), 0);
    out.set(sealed, n);
    out.set(iv, n + sealed.length);
    out[out.length - 2] = n;
    out[out.length - 1] = MAGIC;
    frame.data = out.buffer;
    controller.enqueue(frame);
  };
  const decrypt = async (frame, controller) => {
    const data = new Uint8Array(frame.data);
    if (data.length === 0) return controller.enqueue(frame);
    try {
      const n = data[data.length - 2];
      const end = data.length - 14;
      if (data.length < 14 + 16 || data[data.length - 1] !== MAGIC || n > end - 16) throw new Error('not an encrypted frame');
      const iv = data.subarray(end, end + 12);
      const plain = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv, additionalData: data.subarray(0, n) }, key, data.subarray(n, end)));
      const out = new Uint8Array(n + plain.length);
      out.set(data.subarray(0, n), 0);
      out.set(plain, n);
      frame.data = out.buffer;
      controller.enqueue(frame);
    } catch {
      // A frame this key cannot open (another passphrase, or not encrypted) is dropped: the
      // decoder never sees it. Told at most once a second.
      dropped += 1;
      const now = Date.now();
      if (now - reportedAt >= 1000) {
        reportedAt = now;
        scope.postMessage({ type: 'decrypt-failed', dropped });
      }
    }
  };
  // The key comes first (messages arrive in order), then a sender's or receiver's streams.
  scope.onmessage = ({ data: m }) => {
    if (m.key) key = m.key;
    if (!m.readable) return;
    const transform = m.operation === 'encrypt' ? (f, c) => encrypt(f, c, m.kind) : decrypt;
    m.readable.pipeThrough(new TransformStream({ transform })).pipeTo(m.writable);
  };
}

/** What a session joined with `e2ee` encrypts with: `{ worker }`, the worker holding the key
 * derived from the passphrase. Rejects with `invalid_options` without a passphrase, or where
 * the browser cannot encrypt frames. */
export async function startEncryption(e2ee, sid) {
  if (typeof e2ee.passphrase !== 'string' || e2ee.passphrase.length === 0) {
    throw new WebRTCaiError('invalid_options', 'e2ee needs a passphrase');
  }
  if (typeof RTCRtpSender === 'undefined' || !('createEncodedStreams' in RTCRtpSender.prototype) || !globalThis.crypto?.subtle) {
    throw new WebRTCaiError('invalid_options', 'this browser cannot encrypt frames (it needs RTCRtpSender.createEncodedStreams and WebCrypto: Chrome, Edge)');
  }
  const key = await e2eeKey(e2ee.passphrase, sid);
  const url = URL.createObjectURL(new Blob([`(${e2eeWorker.toString()})()`], { type: 'text/javascript' }));
  const worker = new Worker(url);
  URL.revokeObjectURL(url);
  worker.postMessage({ key });
  return { worker };
}

/** Frames the session's key could not open are told as an `error` (`decryption_failed`).
 * @param {Session} session */
export function reportDecryptFailures(session) {
  session._e2ee.worker.onmessage = (e) => {
    if (e.data?.type !== 'decrypt-failed') return;
    session._emit('error', { code: 'decryption_failed', message: `${e.data.dropped} frames could not be decrypted (another passphrase?) and were dropped` });
  };
}

// With end-to-end encryption, a transceiver's frames go through the worker: encrypted on
// the way out, decrypted on the way in; from before its first frame, for good. (The
// encoded streams, not RTCRtpScriptTransform: in Chromium a script transform set on a
// sender or receiver after another sender of the connection had its track carried no
// frames, and the media went out in the clear.)
/** @param {Session} session */
export function encryptTransceiver(session, tr, t) {
  if (!session._e2ee) return;
  const { sender, receiver } = /** @type {any} */ (tr);
  const worker = session._e2ee.worker;
  if (t.role === 'publish' && !sender._encrypted) {
    sender._encrypted = true;
    const { readable, writable } = sender.createEncodedStreams();
    worker.postMessage({ readable, writable, operation: 'encrypt', kind: t.kind }, [readable, writable]);
  } else if (t.role === 'subscribe' && !receiver._encrypted) {
    receiver._encrypted = true;
    const { readable, writable } = receiver.createEncodedStreams();
    worker.postMessage({ readable, writable, operation: 'decrypt', kind: t.kind }, [readable, writable]);
  }
}
