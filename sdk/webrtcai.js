// @ts-check
// Checked by tsc against webrtcai.d.ts (npm run check): option names and calls agree.
// WebRTC.ai browser SDK (ES module). Types: webrtcai.d.ts next to this file.
//
//   const client = WebRTCai.init({ key: 'WEB_KEY…' });
//   const session = await client.join('my-room', { name: 'Ada' });
//   await session.publish({ source: 'webcam', target: 'me' });
//   session.on('feed-published', (feed) => session.subscribe(feed.feedId, videoElement));
//
// The SDK never creates UI: it only sets `srcObject` on the video elements it is given.

const PROTOCOL_VERSION = 1;

/** How long a request, a publish or a subscribe may take before it rejects with `timeout`,
 * unless `init({ timeoutMs })` says otherwise. Generous: on a working connection negotiation
 * takes well under a second; this bounds what a stalled server or network costs a page. */
const DEFAULT_TIMEOUT_MS = 15000;

/** The heartbeat. A connection whose network went away without a reset (Wi-Fi gone, a NAT or
 * proxy that forgot it, a laptop lid closed and opened) stays "open" for minutes, and a page
 * cannot see the server's websocket pings (the browser answers them by itself). So the SDK
 * sends a `ping` request every PING_INTERVAL_MS and takes SILENCE_LIMIT_MS without any message
 * from the server for a lost connection: it reconnects and resumes as after a reset. The same
 * numbers as the server's (signalling/src/ws.rs), which drops a connection silent for 5 s; the
 * limit is two and a half intervals so that one late reply is not a loss, and it leaves most of
 * the server's 20 s resume window for the reconnect. */
const PING_INTERVAL_MS = 2000;
const SILENCE_LIMIT_MS = 5000;

/** An error with a stable code (the server's codes, plus the SDK's own); `cause` holds the
 * browser's own error where there was one. */
export class WebRTCaiError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = 'WebRTCaiError';
    this.code = code;
  }
}

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

/** getUserMedia/getDisplayMedia failures by the DOMException's name, so a page can tell the
 * person what to do (allow the camera, plug one in, close the app that holds it) without
 * knowing browser error names. Anything else is `media_error`. */
const MEDIA_ERRORS = {
  NotAllowedError: 'permission_denied',
  SecurityError: 'permission_denied',
  NotFoundError: 'device_not_found',
  OverconstrainedError: 'device_not_found',
  NotReadableError: 'device_in_use',
};

/** What `video: true` asks of the camera: 720p, which the relay's congestion feedback lets
 * the browser send at full resolution when the link allows it. */
const DEFAULT_VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 } };

async function capture(source, audio, video) {
  if (!navigator.mediaDevices) {
    throw new WebRTCaiError('media_error', 'camera and screen need a secure page (https:// or localhost)');
  }
  try {
    if (source === 'screen') return await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    return await navigator.mediaDevices.getUserMedia({ video: video === true ? DEFAULT_VIDEO : video, audio });
  } catch (/** @type {any} */ e) {
    const code = MEDIA_ERRORS[e?.name] ?? 'media_error';
    throw new WebRTCaiError(code, `${source === 'screen' ? 'getDisplayMedia' : 'getUserMedia'} failed: ${e?.name}: ${e?.message}`, { cause: e });
  }
}

/** The browser's media devices as the SDK names them. Labels are empty until the page has
 * been allowed a camera or microphone (the browser's privacy rule). */
const DEVICE_KINDS = { videoinput: 'camera', audioinput: 'microphone', audiooutput: 'speaker' };

async function listDevices() {
  if (!globalThis.navigator?.mediaDevices?.enumerateDevices) return [];
  const all = await navigator.mediaDevices.enumerateDevices();
  return all
    .filter((d) => DEVICE_KINDS[d.kind] && d.deviceId)
    .map((d) => ({ kind: DEVICE_KINDS[d.kind], deviceId: d.deviceId, label: d.label, groupId: d.groupId }));
}

function element(target) {
  const el = typeof target === 'string' ? document.getElementById(target) : target;
  if (!el || typeof el !== 'object' || !('srcObject' in el)) {
    throw new WebRTCaiError('invalid_target', 'target must be a <video> element or its id');
  }
  return el;
}

/** Show `stream` in `el`, muted: a local preview must not echo, and a remote feed's audio is
 * played by the subscription's own audio element (once, however many elements show it). */
function show(el, stream) {
  el.srcObject = stream;
  el.autoplay = true;
  el.playsInline = true;
  el.muted = true;
  const p = el.play();
  if (p && p.catch) p.catch(() => {});
}

// The websocket of the server this file was loaded from, where it was: `/sdk/webrtcai.js` on
// a WebRTC.ai server. Anywhere else (a bundle, a copy on another site) it says nothing of where
// the server is, and `init` needs `url`.
function defaultUrl() {
  const here = new URL(import.meta.url);
  if (!/^https?:$/.test(here.protocol) || here.pathname !== '/sdk/webrtcai.js') return null;
  const u = new URL('/ws', here);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}

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
  const material = await crypto.subtle.importKey('raw', utf8.encode(passphrase), 'PBKDF2', false, ['deriveKey']);
  return crypto.subtle.deriveKey(
    { name: 'PBKDF2', salt: utf8.encode(E2EE_SALT + sid), iterations: E2EE_ITERATIONS, hash: 'SHA-256' },
    material,
    { name: 'AES-GCM', length: 128 },
    false,
    ['encrypt', 'decrypt'],
  );
}

/** The worker that encrypts and decrypts the frames (each sender's and receiver's encoded
 * streams are handed to it), made from this function's source: the SDK stays one file. */
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

/** Connection quality: how often the page rates its own, and the rule (the relay's, in
 * relay/src/sfu/link_quality.rs): `poor` from 8% loss, a 400 ms round trip, or a link too
 * narrow for a subscribed video's lowest layer; `good` from 2% loss or 200 ms; `lost` while
 * the media connection is down or nothing arrives. */
const QUALITY_INTERVAL_MS = 2000;
const QUALITY_IMPROVE_MS = 4000;
const QUALITY_ORDER = ['lost', 'poor', 'good', 'excellent'];
const LOSS_SMOOTHING = 0.4;

function rateLink(rttMs, loss, starved) {
  if (starved || loss >= 0.08 || (rttMs ?? 0) >= 400) return 'poor';
  if (loss >= 0.02 || (rttMs ?? 0) >= 200) return 'good';
  return 'excellent';
}

/** The round trip, the loss each way since `prev` (the worse of them), and how long nothing
 * has arrived, from a stats report; `totals` is what the next call compares with. */
function linkStats(report, prev) {
  let rttMs = null;
  let uplink = null;
  const totals = { received: 0, lost: 0, packets: 0, at: performance.now(), heardAt: prev?.heardAt ?? performance.now() };
  report.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && s.currentRoundTripTime !== undefined) {
      rttMs = s.currentRoundTripTime * 1000;
    } else if (s.type === 'remote-inbound-rtp' && s.fractionLost !== undefined) {
      // What the relay reports lost of what this page sends (before repairs).
      uplink = Math.max(uplink ?? 0, s.fractionLost);
    } else if (s.type === 'inbound-rtp') {
      totals.received += s.packetsReceived ?? 0;
      totals.lost += Math.max(0, s.packetsLost ?? 0);
    } else if (s.type === 'transport') {
      totals.packets += s.packetsReceived ?? 0;
    }
  });
  let downlink = null;
  if (prev) {
    const got = totals.received - prev.received;
    const lost = totals.lost - prev.lost;
    if (got + lost > 0) downlink = Math.max(0, lost) / (got + lost);
  }
  if (!prev || totals.packets !== prev.packets) totals.heardAt = totals.at;
  const loss = uplink === null && downlink === null ? null : Math.max(uplink ?? 0, downlink ?? 0);
  return { rttMs, loss, silentFor: prev ? totals.at - totals.heardAt : null, totals };
}

/** The typed summary of `session.getStats()`. */
function summarize(report, prev, now, mids, layers, link) {
  const before = prev?.report;
  const seconds = prev ? (now - prev.at) / 1000 : 0;
  const rate = (s) => {
    const old = before?.get(s.id);
    if (!old || seconds <= 0) return null;
    return Math.max(0, ((s.bytesSent ?? s.bytesReceived ?? 0) - (old.bytesSent ?? old.bytesReceived ?? 0)) * 8 / seconds);
  };
  let availableOutgoingBitrate = null;
  const publications = [];
  const subscriptions = [];
  report.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
      availableOutgoingBitrate = s.availableOutgoingBitrate ?? null;
    } else if (s.type === 'outbound-rtp') {
      const m = mids.get(s.mid);
      const remote = s.remoteId ? report.get(s.remoteId) : null;
      publications.push({
        feedId: m?.feedId ?? null, kind: s.kind, rid: s.rid ?? null, active: s.active ?? true,
        bitrate: rate(s), width: s.frameWidth ?? null, height: s.frameHeight ?? null, fps: s.framesPerSecond ?? null,
        packetsSent: s.packetsSent ?? 0, packetsLost: remote?.packetsLost ?? null, fractionLost: remote?.fractionLost ?? null,
        qualityLimitation: s.qualityLimitationReason ?? null,
      });
    } else if (s.type === 'inbound-rtp') {
      const m = mids.get(s.mid);
      const layer = s.kind === 'video' ? layers.find((l) => l.feedId === m?.feedId) ?? null : null;
      subscriptions.push({
        feedId: m?.feedId ?? null, kind: s.kind,
        bitrate: rate(s), width: s.frameWidth ?? null, height: s.frameHeight ?? null, fps: s.framesPerSecond ?? null,
        packetsReceived: s.packetsReceived ?? 0, packetsLost: s.packetsLost ?? 0,
        jitterMs: s.jitter !== undefined ? s.jitter * 1000 : null,
        freezes: s.freezeCount ?? null,
        layer: layer?.current ?? null, layers: layer?.layers ?? null, paused: layer?.paused ?? null,
      });
    }
  });
  return { rttMs: link.rttMs, availableOutgoingBitrate, quality: link.quality, publications, subscriptions, raw: report };
}

class Emitter {
  constructor() {
    this._handlers = new Map();
  }
  /** Listen for an event; returns a function that removes the listener. */
  on(name, fn) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(fn);
    return () => this.off(name, fn);
  }
  off(name, fn) {
    this._handlers.get(name)?.delete(fn);
  }
  _emit(name, value) {
    for (const fn of [...(this._handlers.get(name) || [])]) {
      try {
        fn(value);
      } catch (e) {
        console.error(e);
      }
    }
  }
}

/** A joined session. Events: participant-joined, participant-left, participant-reconnecting,
 * participant-reconnected, feed-published,
 * feed-unpublished, feed-paused, feed-resumed, speaking, active-speaker, data, reconnecting,
 * reconnected, disconnected, error. */
class Session extends Emitter {
  constructor(client, sid, name, data = true, e2ee = null) {
    super();
    /** Whether this page's media is end-to-end encrypted. */
    this.e2ee = !!e2ee;
    this._e2ee = e2ee; // { worker } that encrypts and decrypts the frames
    this.sid = sid;
    this.uid = null;
    this.participants = new Map();
    this.feeds = new Map();
    this.activeSpeaker = null;
    // { by, startedAt } while the session is recorded.
    this.recording = null;
    this._client = client;
    this._name = name;
    this._nextId = 1;
    this._pending = new Map();
    this._offers = Promise.resolve();
    this._published = new Map(); // feed_id → { stream, tracks: {audio, video}, ready, target }
    this._subscribed = new Map(); // feed_id → Subscription
    this._speaker = null; // the deviceId of setSpeaker, for audio elements made later
    this.canPlayAudio = true;
    /** This page's own connection quality (null until rated, about 2 s after joining). */
    this.connectionQuality = null;
    this._mids = new Map(); // mid → { feedId, role, kind }, from the offers
    this._starved = new Set(); // subscriptions paused for bandwidth
    this._loss = null;
    this._linkPrev = null;
    this._statsPrev = null;
    this._better = null;
    this._left = false;
    this._leaving = false;
    this._beatTimer = null; // the heartbeat of the current websocket (see _heartbeat)
    this._attempt = 0;
    this._timeoutMs = client.timeoutMs;
    this._dataWanted = data;
    this._channels = { reliable: null, lossy: null };
    this._channelWaiters = [];
    this._sendChains = { reliable: Promise.resolve(), lossy: Promise.resolve() };
    this._dataRefused = null;
    /** The websocket URL the page connects to next, the one it joined through, and the other
     * servers it may go on with when that one stops (from the join reply, in a cluster). */
    this._url = null;
    this._joinedUrl = null;
    this._servers = [];
    this._newPeerConnection();
    this._onDeviceChange = () => listDevices().then((devices) => this._emit('devices-changed', { devices }), () => {});
    navigator.mediaDevices?.addEventListener?.('devicechange', this._onDeviceChange);
  }

  _newPeerConnection() {
    this.pc = new RTCPeerConnection(/** @type {any} */ ({ iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require', encodedInsertableStreams: this.e2ee }));
    this.pc.ontrack = (ev) => this._onTrack(ev);
    this.pc.ondatachannel = (ev) => this._onDataChannel(ev.channel);
    this.pc.oniceconnectionstatechange = () => this._onIceState();
    this.pc.onconnectionstatechange = () => this._emit('connection-state', { state: this.pc.connectionState });
  }

  /** The media connection's state (the RTCPeerConnection's `connectionState`): `connected`
   * while media can flow; `disconnected` or `failed` while it cannot, which the SDK repairs
   * with an ICE restart by itself. Independent of the websocket (`reconnecting`). */
  get connectionState() {
    return this.pc.connectionState;
  }

  // Media recovers by itself: a failed (or long-disconnected) ICE connection asks the server
  // for an ICE restart, which comes back as a new offer.
  _onIceState() {
    const state = this.pc.iceConnectionState;
    clearTimeout(this._iceTimer);
    if (state === 'failed') {
      this._restartIce();
    } else if (state === 'disconnected') {
      this._iceTimer = setTimeout(() => {
        if (this.pc.iceConnectionState === 'disconnected') this._restartIce();
      }, 2000);
    }
  }

  async _restartIce() {
    if (this._left || this._restarting) return;
    this._restarting = true;
    try {
      await this._request({ type: 'restart_ice' });
    } catch {
      // The websocket is down; the reconnect path restarts ICE if it is still needed.
    } finally {
      this._restarting = false;
    }
  }

  async _open(resume, url = this._url ?? this._client.url) {
    const ws = new WebSocket(url);
    this._ws = ws;
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new WebRTCaiError('connection_failed', `cannot reach ${url}`));
    });
    const heard = this._heartbeat(ws);
    ws.onmessage = (ev) => {
      heard();
      this._onMessage(ev.data);
    };
    // Until the join is answered a lost connection only fails the join (and what else waits on
    // this socket): whoever opened it decides what follows, the page or the reconnect loop.
    ws.onclose = () => this._rejectPending();
    const join = {
      type: 'join',
      v: PROTOCOL_VERSION,
      sid: this.sid,
      name: this._name ?? null,
      key: this._client.key ?? null,
      token: this._client.token ?? null,
      resume: resume ?? null,
      data: this._dataWanted,
      e2ee: this.e2ee,
    };
    let snapshot;
    try {
      snapshot = await this._request(join);
    } catch (e) {
      // A refused or unanswered join leaves no connection behind (and no reconnect).
      clearTimeout(this._beatTimer);
      ws.onclose = null;
      ws.close();
      throw e;
    }
    ws.onclose = () => this._onClose(ws);
    this.uid = snapshot.uid;
    this.activeSpeaker = snapshot.active_speaker ?? null;
    const can = snapshot.permissions ?? {};
    this.permissions = { publish: !!can.publish, subscribe: !!can.subscribe, publishData: !!can.publish_data, record: !!can.record };
    if (!resume) this._watchQuality();
    this._resume = snapshot.resume_token;
    // Joined through another server than before: the one before stopped, and this one has
    // other media servers behind it.
    // The server says so (`rejoined`); another URL than before says so too.
    const moved = !!snapshot.rejoined || (this._joinedUrl !== null && url !== this._joinedUrl);
    this._joinedUrl = url;
    this._url = url;
    this._servers = snapshot.servers ?? [];
    this._reconcile(snapshot, !!resume);
    if (moved) this._moveMedia();
    return snapshot;
  }

  // After moving to another server of the cluster: a new media connection to its relay, every
  // feed this page sends published again (under the same id where the server keeps it), and
  // every subscription whose feed is still there made again; the elements showing them
  // stay and show the new tracks as they come.
  _moveMedia() {
    const old = this.pc;
    this._newPeerConnection();
    old.close();
    this._mids.clear();
    this._channels = { reliable: null, lossy: null };
    this._emit('connection-state', { state: this.pc.connectionState });
    for (const [feedId, pub] of [...this._published]) {
      pub.ready = deferred(this._timeoutMs, `publishing ${feedId} again did not complete within ${this._timeoutMs} ms`);
      pub.ready.promise.catch(() => {});
      const again = { type: 'publish', source: pub.source, audio: !!pub.tracks.audio, video: !!pub.tracks.video, simulcast: !!pub.simulcast, feed_id: feedId };
      this._request(again).then((r) => {
        if (r.feed_id === feedId) return;
        this._published.delete(feedId);
        this._published.set(r.feed_id, pub);
      }).catch((e) => this._emit('error', { code: e.code ?? 'publish_failed', message: `feed ${feedId} was not published again: ${e.message}` }));
    }
    for (const [feedId, sub] of [...this._subscribed]) {
      if (!this.feeds.has(feedId)) continue;
      sub._ready = deferred(this._timeoutMs, `subscribing to ${feedId} again did not complete within ${this._timeoutMs} ms`);
      sub._ready.promise.catch(() => {});
      this._request({ type: 'subscribe', feed_id: feedId })
        .catch((e) => this._emit('error', { code: e.code ?? 'connection_lost', message: `not subscribed to ${feedId} again: ${e.message}` }));
    }
  }

  // The join reply lists who and what is in the session now. On a first join that fills the
  // maps (no events: the page reads them); after a resume it is how the SDK learns what
  // happened while its websocket was down, told as the events it missed, in the order the
  // server would have sent them.
  _reconcile(snapshot, resumed) {
    const participants = new Map(snapshot.participants.map((p) => [p.uid, { uid: p.uid, name: p.name, quality: p.quality ?? null }]));
    const feeds = new Map(snapshot.feeds.map((f) => [f.feed_id, this._feed(f)]));
    if (!resumed) {
      participants.forEach((p, uid) => this.participants.set(uid, p));
      feeds.forEach((f, id) => this.feeds.set(id, f));
      return; // a recording already running is told by the event that follows the reply
    }
    const recording = snapshot.recording ?? null;
    if (recording && !this.recording) this._recordingStarted(recording);
    if (!recording && this.recording) this._recordingStopped({ by: null, reason: null });
    for (const [id, f] of [...this.feeds]) if (!feeds.has(id)) this._feedUnpublished(id, f.uid);
    for (const uid of [...this.participants.keys()]) if (!participants.has(uid)) this._participantLeft(uid);
    for (const [uid, p] of participants) {
      const known = this.participants.get(uid);
      if (!known) this._participantJoined(p);
      else if (p.quality && known.quality !== p.quality) this._remoteQuality(uid, p.quality);
    }
    for (const [id, f] of feeds) if (!this.feeds.has(id)) this._feedPublished(f);
  }

  _feed(f) {
    return { feedId: f.feed_id, uid: f.uid, source: f.source, kinds: f.kinds, muted: f.muted ?? [] };
  }

  // One request, one reply. Rejects at once when there is no open connection (a send on a
  // closing websocket is silently dropped, and would wait for nothing), and with `timeout`
  // when no reply comes in time.
  _request(msg) {
    if (this._left) {
      return Promise.reject(new WebRTCaiError('not_joined', 'this session was left'));
    }
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new WebRTCaiError('connection_lost', 'not connected to the server (reconnecting)'));
    }
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new WebRTCaiError('timeout', `no reply to ${msg.type} within ${this._timeoutMs} ms`));
      }, this._timeoutMs);
      const settle = (fn) => (v) => {
        clearTimeout(timer);
        fn(v);
      };
      this._pending.set(id, { resolve: settle(resolve), reject: settle(reject) });
      try {
        this._ws.send(JSON.stringify({ ...msg, id }));
      } catch (e) {
        this._pending.get(id)?.reject(new WebRTCaiError('connection_lost', String(e)));
        this._pending.delete(id);
      }
    });
  }

  // Ping on `ws` until it is replaced, closed or the session ends; returns what its message
  // handler calls for every message. The connection counts as lost once SILENCE_LIMIT_MS
  // passed without a message while a ping of ours was waiting: a page whose timers were held
  // back (a background tab) pinged late, and must not take its own lateness for the server's
  // silence. Pings take ids from the requests' counter, so that a ping's reply is never taken
  // for a request's (it matches nothing pending and is dropped), and have no timer of their own.
  _heartbeat(ws) {
    clearTimeout(this._beatTimer);
    let heardAt = performance.now();
    let pingedAt = heardAt;
    const beat = () => {
      if (ws !== this._ws || this._left || ws.readyState !== WebSocket.OPEN) return;
      const now = performance.now();
      if (pingedAt > heardAt && now - heardAt >= SILENCE_LIMIT_MS) {
        this._silent(ws);
        return;
      }
      if (now - pingedAt >= PING_INTERVAL_MS) {
        pingedAt = now;
        try {
          ws.send(JSON.stringify({ type: 'ping', id: this._nextId++ }));
        } catch {
          // Closing: its close event ends the heartbeat.
        }
      }
      const due = pingedAt > heardAt ? Math.min(pingedAt + PING_INTERVAL_MS, heardAt + SILENCE_LIMIT_MS) : pingedAt + PING_INTERVAL_MS;
      this._beatTimer = setTimeout(beat, Math.max(0, due - now));
    };
    this._beatTimer = setTimeout(beat, PING_INTERVAL_MS);
    return () => {
      heardAt = performance.now();
    };
  }

  // A connection that fell silent is closed here and handled as if it had closed: a close
  // on a dead network completes only when the browser gives up on it, much later.
  _silent(ws) {
    const closed = ws.onclose;
    ws.onclose = null;
    ws.onmessage = null;
    ws.close();
    closed?.();
  }

  _rejectPending() {
    for (const p of this._pending.values()) p.reject(new WebRTCaiError('connection_lost', 'the connection to the server was lost'));
    this._pending.clear();
  }

  _onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.type === 'reply') {
      const p = this._pending.get(msg.id);
      if (!p) return;
      this._pending.delete(msg.id);
      if (msg.error) p.reject(new WebRTCaiError(msg.error.code, msg.error.reason));
      else p.resolve(msg.ok);
    } else if (msg.type === 'offer') {
      this._offers = this._offers.then(() => this._applyOffer(msg)).catch((e) => console.error('offer', e));
    } else if (msg.type === 'event') {
      this._onEvent(msg);
    }
  }

  _onEvent(msg) {
    switch (msg.event) {
      case 'participant-joined':
        this._participantJoined({ uid: msg.uid, name: msg.name });
        break;
      case 'participant-left':
        this._participantLeft(msg.uid);
        break;
      case 'participant-reconnecting':
      case 'participant-reconnected': {
        const p = this.participants.get(msg.uid);
        if (!p) break;
        p.reconnecting = msg.event === 'participant-reconnecting';
        this._emit(msg.event, { uid: msg.uid });
        break;
      }
      case 'feed-published':
        this._feedPublished(this._feed(msg));
        break;
      case 'feed-unpublished':
        this._feedUnpublished(msg.feed_id, msg.uid);
        break;
      case 'feed-paused':
        if (msg.reason === 'bandwidth') this._starved.add(msg.feed_id);
        this._emit('feed-paused', { feedId: msg.feed_id, reason: msg.reason });
        break;
      case 'connection-quality':
        this._remoteQuality(msg.uid, msg.quality);
        break;
      case 'feed-resumed':
        this._starved.delete(msg.feed_id);
        this._emit('feed-resumed', { feedId: msg.feed_id });
        break;
      case 'speaking':
        this._emit('speaking', { uid: msg.uid, speaking: msg.speaking });
        break;
      case 'active-speaker':
        this.activeSpeaker = msg.uid;
        this._emit('active-speaker', { uid: msg.uid });
        break;
      case 'data-refused':
        // The relay dropped what this page sent: it may not send data. Later sends reject.
        this._dataRefused = msg.reason;
        this._emit('error', { code: msg.code, message: msg.reason });
        break;
      case 'feed-muted':
      case 'feed-unmuted': {
        const feed = this.feeds.get(msg.feed_id);
        const on = msg.event === 'feed-muted';
        if (feed) feed.muted = on ? [...new Set([...feed.muted, msg.kind])] : feed.muted.filter((k) => k !== msg.kind);
        this._emit(msg.event, { feedId: msg.feed_id, uid: msg.uid, kind: msg.kind });
        break;
      }
      case 'recording-started':
        this._recordingStarted(msg);
        break;
      case 'recording-stopped':
        this._recordingStopped(msg);
        break;
      case 'feed-layers':
        this._setLayers(msg.feed_id, msg.active).catch((e) => console.error('feed-layers', e));
        break;
    }
  }

  _recordingStarted(r) {
    this.recording = { by: r.by, startedAt: r.started_at };
    this._emit('recording-started', { ...this.recording });
  }

  _recordingStopped(r) {
    this.recording = null;
    this._emit('recording-stopped', { by: r.by ?? null, reason: r.reason ?? null });
  }

  /** Record the session: every published feed (and every feed published later) into a WebM
   * file of its own, on the server. Needs a key that allows recording (and, with a token, its
   * `record` grant); everyone in the session gets `recording-started`. Resolves with when it
   * started; rejects with `forbidden`, `recording_unavailable` or `recording_failed`. */
  async startRecording() {
    const r = await this._request({ type: 'record', enable: true });
    return { startedAt: r.started_at };
  }

  /** Stop recording the session; everyone gets `recording-stopped`. */
  async stopRecording() {
    await this._request({ type: 'record', enable: false });
  }

  // Dynacast: the server says which simulcast layers of a published video some subscriber
  // receives; the encoder stops spending time and uplink on the others.
  async _setLayers(feedId, active) {
    const track = this._published.get(feedId)?.tracks.video;
    // A muted video's sender has no track: it is found by the one remembered at the mute.
    const sender = this._published.get(feedId)?.senders?.video ?? (track && this.pc.getSenders().find((s) => s.track === track));
    if (!sender) return;
    const params = sender.getParameters();
    if (!params.encodings || params.encodings.length < 2) return;
    const pub = this._published.get(feedId);
    if (pub?.muted?.video) {
      // Muted: every encoding stays off; these come back on when it is unmuted.
      pub.activeBefore = params.encodings.map((e) => !e.rid || active.includes(e.rid));
      return;
    }
    for (const e of params.encodings) if (e.rid) e.active = active.includes(e.rid);
    await sender.setParameters(params);
  }

  _participantJoined(p) {
    const participant = { uid: p.uid, name: p.name, quality: p.quality ?? null, reconnecting: false };
    this.participants.set(p.uid, participant);
    this._emit('participant-joined', { ...participant });
  }

  _remoteQuality(uid, quality) {
    const p = this.participants.get(uid);
    if (!p || p.quality === quality) return;
    p.quality = quality;
    this._emit('connection-quality', { uid, quality });
  }

  // The local connection quality, rated every QUALITY_INTERVAL_MS from this page's own
  // statistics by the rule the relay rates the others with (see `rateLink`).
  _watchQuality() {
    clearInterval(this._qualityTimer);
    this._qualityTimer = setInterval(() => {
      if (this._left) {
        clearInterval(this._qualityTimer);
        return;
      }
      this._sample().catch(() => {});
    }, QUALITY_INTERVAL_MS);
  }

  async _sample() {
    const report = await this.pc.getStats();
    const now = performance.now();
    const link = linkStats(report, this._linkPrev);
    this._linkPrev = link.totals;
    if (link.loss !== null) this._loss = this._loss === null ? link.loss : this._loss + LOSS_SMOOTHING * (link.loss - this._loss);
    const state = this.pc.connectionState;
    const lost = state === 'disconnected' || state === 'failed' || (link.silentFor !== null && link.silentFor >= SILENCE_LIMIT_MS);
    const rating = lost ? 'lost' : rateLink(link.rttMs, this._loss ?? 0, this._starved.size > 0);
    this._rttMs = link.rttMs;
    if (!this._statsPrev || now - this._statsPrev.at >= 1000) this._statsPrev = { at: now, report };
    this._setLocalQuality(rating, now);
    return report;
  }

  // A worse rating shows at once, a better one once it held QUALITY_IMPROVE_MS (at its worst
  // over the wait), as the relay does for the others.
  _setLocalQuality(rating, now) {
    const old = this.connectionQuality;
    if (rating === old) {
      this._better = null;
      return;
    }
    if (old !== null && QUALITY_ORDER.indexOf(rating) > QUALITY_ORDER.indexOf(old)) {
      const held = this._better && QUALITY_ORDER.indexOf(this._better.rating) < QUALITY_ORDER.indexOf(rating) ? this._better.rating : rating;
      const since = this._better?.since ?? now;
      if (now - since < QUALITY_IMPROVE_MS) {
        this._better = { rating: held, since };
        return;
      }
      rating = held;
    }
    this._better = null;
    this.connectionQuality = rating;
    this._emit('connection-quality', { uid: this.uid, quality: rating });
  }

  /** A summary of what this page sends and receives now, from the browser's statistics:
   * per published stream (each simulcast layer) and per subscribed track its bitrate (over
   * the time since the previous sample, at most a few seconds), resolution, frame rate and
   * loss; the round trip to the relay and the browser's uplink estimate; the connection
   * quality; each video subscription's layer (from the server); and the raw
   * `RTCStatsReport` as `raw`. */
  async getStats() {
    if (this._left) throw new WebRTCaiError('not_joined', 'this session was left');
    const prev = this._statsPrev;
    const [report, layers] = await Promise.all([
      this._sample(),
      this.quality().then((q) => q.subscriptions, () => []),
    ]);
    return summarize(report, prev, performance.now(), this._mids, layers, {
      rttMs: this._rttMs ?? null,
      quality: this.connectionQuality,
    });
  }

  _participantLeft(uid) {
    this.participants.delete(uid);
    this._emit('participant-left', { uid });
  }

  _feedPublished(feed) {
    this.feeds.set(feed.feedId, feed);
    this._emit('feed-published', feed);
  }

  // The server has ended every subscription to the feed: a subscribe still waiting for it
  // rejects, one that completed stops showing it.
  _feedUnpublished(feedId, uid) {
    const sub = this._subscribed.get(feedId);
    if (sub) {
      sub._ready.reject(new WebRTCaiError('feed_gone', `feed ${feedId} was unpublished`));
      sub._end();
      this._subscribed.delete(feedId);
    }
    this.feeds.delete(feedId);
    this._emit('feed-unpublished', { feedId, uid });
  }

  async _applyOffer(msg) {
    for (const t of msg.transceivers) {
      if (t.role === 'publish' || t.role === 'subscribe') this._mids.set(t.mid, { feedId: t.feed_id, role: t.role, kind: t.kind });
      else this._mids.delete(t.mid);
    }
    await this.pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    const transceivers = this.pc.getTransceivers();
    for (const t of msg.transceivers) {
      const tr = transceivers.find((x) => x.mid === t.mid);
      if (!tr || t.role === 'closed') continue;
      this._encrypt(tr, t);
      if (t.role === 'publish') {
        const pub = this._published.get(t.feed_id);
        const track = pub && pub.tracks[t.kind];
        if (track) {
          tr.direction = 'sendonly';
          await tr.sender.replaceTrack(track);
          tr.sender.setStreams && tr.sender.setStreams(pub.stream);
        } else {
          tr.direction = 'inactive';
        }
      } else if (t.role === 'subscribe') {
        tr.direction = 'recvonly';
      }
    }
    const answer = await this.pc.createAnswer();
    // The server learns our ICE ufrag and certificate before any packet is sent.
    let result;
    try {
      result = await this._request({ type: 'answer', offer_id: msg.offer_id, sdp: answer.sdp });
    } catch (/** @type {any} */ e) {
      // A lost connection is recovered by the resume, which offers again; a refusal is final
      // for what this offer carried, so its publishes and subscribes fail with the reason.
      if (e.code !== 'connection_lost' && e.code !== 'timeout') {
        for (const t of msg.transceivers) {
          if (t.role === 'publish') this._published.get(t.feed_id)?.ready.reject(e);
          else this._subscribed.get(t.feed_id)?._ready.reject(e);
        }
        await this.pc.setRemoteDescription({ type: 'rollback' }).catch(() => {});
      }
      throw e;
    }
    await this.pc.setLocalDescription(answer);
    // The codec and the layers in one stream, as asked: a browser sends with the offer's
    // first codec unless the encoding names another.
    for (const t of msg.transceivers) {
      const pub = t.role === 'publish' && t.kind === 'video' && this._published.get(t.feed_id);
      const tr = (pub?.codec || pub?.svc) && transceivers.find((x) => x.mid === t.mid);
      if (!tr) continue;
      const params = tr.sender.getParameters();
      // `codec` and `scalabilityMode` are newer than TypeScript's DOM types.
      const enc = /** @type {any} */ (params.encodings?.[0]);
      if (!enc) continue;
      const codec = pub.codec && params.codecs?.find((c) => c.mimeType.toLowerCase() === `video/${pub.codec.toLowerCase()}`);
      if (codec) enc.codec = codec;
      if (pub.svc) enc.scalabilityMode = pub.svc;
      await tr.sender.setParameters(params).catch((e) => this._emit('error', { code: 'encoding_refused', message: e.message }));
    }
    for (const id of result.published) this._published.get(id)?.ready.resolve();
    for (const id of result.failed) {
      this._published.get(id)?.ready.reject(new WebRTCaiError('publish_failed', 'the browser refused to send this feed'));
    }
    for (const id of result.subscribed) this._subscribed.get(id)?._ready.resolve();
  }

  // With end-to-end encryption, a transceiver's frames go through the worker: encrypted on
  // the way out, decrypted on the way in; from before its first frame, for good. (The
  // encoded streams, not RTCRtpScriptTransform: in Chromium a script transform set on a
  // sender or receiver after another sender of the connection had its track carried no
  // frames, and the media went out in the clear.)
  _encrypt(tr, t) {
    if (!this._e2ee) return;
    const { sender, receiver } = /** @type {any} */ (tr);
    const worker = this._e2ee.worker;
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

  _onTrack(ev) {
    const stream = ev.streams[0];
    if (!stream) return;
    this._subscribed.get(stream.id)?._received(stream);
  }

  // Every publish and subscribe still waiting settles when the session ends.
  _abandon(code, reason) {
    const waiting = [...[...this._published.values()].map((x) => x.ready), ...[...this._subscribed.values()].map((x) => x._ready)];
    for (const ready of waiting) ready.reject(new WebRTCaiError(code, reason));
  }

  _onClose(ws) {
    if (ws !== this._ws || this._left) return;
    clearTimeout(this._beatTimer);
    this._rejectPending();
    // A leave under way goes ahead without the server (which ends the participant after its
    // resume window); there is nothing to reconnect for.
    if (this._leaving) return;
    this._emit('reconnecting', { attempt: this._attempt + 1 });
    this._reconnect();
  }

  async _reconnect() {
    while (!this._left) {
      this._attempt += 1;
      const base = Math.min(5000, 250 * 2 ** (this._attempt - 1));
      await new Promise((r) => setTimeout(r, base / 2 + Math.random() * base / 2));
      try {
        await this._open(this._resume);
        this._attempt = 0;
        // A view reported while the connection was down is reported again.
        for (const sub of this._subscribed.values()) sub._view?.report();
        this._emit('reconnected', {});
        const ice = this.pc.iceConnectionState;
        if (ice === 'failed' || ice === 'disconnected') this._restartIce();
        return;
      } catch (e) {
        // The server cannot be reached (it stopped, or its machine did): go on with another
        // of the cluster (they take turns), which takes the participant back from the resume
        // token.
        if (e instanceof WebRTCaiError && e.code === 'connection_failed' && this._servers.length) {
          this._url = this._servers[(this._attempt - 1) % this._servers.length];
        }
        if (e instanceof WebRTCaiError && e.code === 'resume_failed') {
          this._left = true;
          this._abandon('connection_lost', e.message);
          this._emit('disconnected', { reason: e.message });
          return;
        }
        if (this._attempt >= 12) {
          this._left = true;
          this._abandon('connection_lost', 'the server could not be reached');
          this._emit('disconnected', { reason: 'the server could not be reached' });
          return;
        }
      }
    }
  }

  /** Publish the webcam (with microphone) or the screen; shows it muted in `target`, if given.
   * Rejects (and releases the camera) when the browser refuses the media, the server refuses
   * the feed, or publishing does not complete within the timeout once the media is there.
   * `codec` ('VP8', 'VP9', 'H264' or 'AV1') picks the video codec where the browser has it;
   * `svc` (a scalability mode such as 'L3T3_KEY', with VP9 or AV1) sends the layers in one
   * stream instead of simulcast, each subscriber then getting the layers it can show. */
  /** @param {import('./webrtcai.js').PublishOptions} [options] */
  async publish({ source = 'webcam', target, audio = true, video = true, simulcast = source === 'webcam', codec, svc } = {}) {
    // Where it is shown, muted; nowhere for a publish without a target (audio only, say).
    const el = target === undefined ? null : element(target);
    if (source !== 'webcam' && source !== 'screen') {
      throw new WebRTCaiError('invalid_source', "source must be 'webcam' or 'screen'");
    }
    if (source === 'webcam' && !audio && !video) {
      throw new WebRTCaiError('nothing_to_publish', 'publish needs audio or video');
    }
    if (this._left) throw new WebRTCaiError('not_joined', 'this session was left');
    if (this.e2ee && (codec === 'H264' || codec === 'AV1')) {
      throw new WebRTCaiError('invalid_options', `${codec} cannot be end-to-end encrypted here (its packetizer reads the frame); use VP8 or VP9`);
    }
    const stream = await capture(source, audio, video);
    if (el) show(el, stream);
    const tracks = {
      audio: stream.getAudioTracks()[0] || null,
      video: stream.getVideoTracks()[0] || null,
    };
    const ready = deferred(this._timeoutMs, `publishing did not complete within ${this._timeoutMs} ms`);
    let feedId = null;
    const request = this._request({
      type: 'publish', source, audio: !!tracks.audio, video: !!tracks.video, simulcast: !!(simulcast && !svc && tracks.video),
    });
    try {
      feedId = (await Promise.race([request, ready.promise])).feed_id;
      this._published.set(feedId, { source, stream, tracks, ready, target: el, codec, svc, constraints: { audio, video }, simulcast: !!(simulcast && !svc && tracks.video) });
      await ready.promise;
    } catch (e) {
      stream.getTracks().forEach((t) => t.stop());
      if (el?.srcObject === stream) el.srcObject = null;
      // Nothing is left half-published on the server, also when its reply is still to come.
      if (feedId === null) {
        request.then((r) => this._request({ type: 'unpublish', feed_id: r.feed_id }), () => {}).catch(() => {});
      } else if (this._published.get(feedId)?.ready === ready) {
        this._published.delete(feedId);
        this._request({ type: 'unpublish', feed_id: feedId }).catch(() => {});
      }
      throw e;
    }
    const muted = { audio: false, video: false };
    return {
      feedId,
      uid: this.uid,
      source,
      stream,
      muted,
      unpublish: () => this.unpublish(feedId),
      mute: (kind) => this._mute(feedId, kind, true, muted),
      unmute: (kind) => this._mute(feedId, kind, false, muted),
      setDevice: (deviceId) => this._setDevice(feedId, deviceId),
      get devices() {
        const id = (t) => (t && t.readyState === 'live' ? t.getSettings().deviceId ?? null : null);
        return { audio: id(tracks.audio), video: id(tracks.video) };
      },
    };
  }

  // Switch a webcam feed's camera or microphone: the new device's track replaces the old one
  // on the same sender (no renegotiation: the others see the same feed go on), and in the
  // preview. A muted track stays muted, on the new device.
  async _setDevice(feedId, deviceId) {
    const pub = this._published.get(feedId);
    if (!pub) throw new WebRTCaiError('no_such_feed', `feed ${feedId} is not published by this page`);
    const device = (await listDevices()).find((d) => d.deviceId === deviceId && d.kind !== 'speaker');
    if (!device) throw new WebRTCaiError('device_not_found', `no camera or microphone ${deviceId}`);
    const kind = device.kind === 'camera' ? 'video' : 'audio';
    const old = pub.tracks[kind];
    if (!old || pub.source !== 'webcam') throw new WebRTCaiError('no_such_feed', `feed ${feedId} publishes no ${device.kind}`);
    if (old.readyState === 'live' && old.getSettings().deviceId === deviceId) return;
    const asked = pub.constraints[kind];
    const base = asked === true || asked === undefined ? (kind === 'video' ? DEFAULT_VIDEO : {}) : asked;
    const constraints = { ...base, deviceId: { exact: deviceId } };
    const open = () => capture('webcam', kind === 'audio' ? constraints : false, kind === 'video' ? constraints : false);
    let stream;
    try {
      stream = await open();
    } catch (e) {
      // Some systems open one camera (or microphone) at a time: free the old one and try again.
      if (!(e instanceof WebRTCaiError) || e.code !== 'device_in_use') throw e;
      old.stop();
      stream = await open();
    }
    const track = kind === 'video' ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
    pub.senders ??= {};
    pub.senders[kind] ??= this.pc.getSenders().find((s) => s.track === old);
    const sender = pub.senders[kind];
    try {
      if (sender && !pub.muted?.[kind]) await sender.replaceTrack(track);
    } catch (/** @type {any} */ e) {
      track.stop();
      throw new WebRTCaiError('media_error', `the browser would not send the new ${device.kind}: ${e?.name}: ${e?.message}`, { cause: e });
    }
    pub.tracks[kind] = track;
    pub.stream.removeTrack(old);
    pub.stream.addTrack(track);
    old.stop();
    if (pub.target) show(pub.target, pub.stream);
  }

  // Mute: the sender stops sending the track (replaceTrack(null): no packets, not black
  // frames), then the others are told; unmute: the track again (its encoder starts with a
  // keyframe), then the others are told.
  async _mute(feedId, kind, mute, muted) {
    if (kind !== 'audio' && kind !== 'video') {
      throw new WebRTCaiError('invalid_target', `mute takes 'audio' or 'video', not ${kind}`);
    }
    const pub = this._published.get(feedId);
    const track = pub?.tracks[kind];
    if (!track) throw new WebRTCaiError('no_such_feed', `feed ${feedId} publishes no ${kind}`);
    pub.senders ??= {};
    pub.senders[kind] ??= this.pc.getSenders().find((s) => s.track === track);
    const sender = pub.senders[kind];
    if (sender) {
      await sender.replaceTrack(mute ? null : track);
      // With no track Chromium still fills the link with retransmitted padding to keep its
      // bandwidth estimate; with every encoding inactive it sends nothing.
      const params = sender.getParameters();
      if (params.encodings?.length) {
        if (mute) {
          pub.activeBefore = params.encodings.map((e) => e.active);
          for (const e of params.encodings) e.active = false;
        } else {
          params.encodings.forEach((e, i) => (e.active = pub.activeBefore?.[i] ?? true));
          pub.activeBefore = null;
        }
        await sender.setParameters(params).catch(() => {});
      }
    }
    pub.muted = { ...pub.muted, [kind]: mute };
    await this._request({ type: 'mute', feed_id: feedId, kind, muted: mute });
    muted[kind] = mute;
  }

  /** Stop publishing a feed (a publish still under way rejects with `publish_failed`). */
  async unpublish(feedId) {
    const pub = this._published.get(feedId);
    await this._request({ type: 'unpublish', feed_id: feedId });
    this._published.delete(feedId);
    if (pub) {
      pub.ready.reject(new WebRTCaiError('publish_failed', `feed ${feedId} was unpublished before publishing completed`));
      pub.stream.getTracks().forEach((t) => t.stop());
      if (pub.target) pub.target.srcObject = null;
    }
  }

  /** Receive a feed: its video shown in `target` (a <video> or its id; more with
   * `attach`, none for now with `null`), its audio played by the SDK. Rejects with
   * `feed_gone` when the feed is unpublished first, and with `timeout` when the subscription
   * does not complete in time. With `adaptive` (the default) the SDK tells the server how the
   * feed's elements show the video: no larger layer than the largest needs is sent, and no
   * video while none is on screen (all hidden, off screen, detached, or the page is in the
   * background: `feed-paused` with reason `hidden`, then `feed-resumed`). */
  /** @param {string} feedId
   * @param {HTMLVideoElement | string | null} [target]
   * @param {{ adaptive?: boolean }} [options] */
  async subscribe(feedId, target = null, { adaptive = true } = {}) {
    const el = target === null || target === undefined ? null : element(target);
    if (this._subscribed.has(feedId)) {
      throw new WebRTCaiError('subscription_state', `already subscribed (or subscribing) to ${feedId}`);
    }
    const sub = new Subscription(this, feedId, deferred(this._timeoutMs, `subscribing to ${feedId} did not complete within ${this._timeoutMs} ms`));
    if (el) sub.attach(el);
    this._subscribed.set(feedId, sub);
    const request = this._request({ type: 'subscribe', feed_id: feedId });
    try {
      await Promise.race([request, sub._ready.promise]);
      await sub._ready.promise;
    } catch (e) {
      if (this._subscribed.get(feedId) === sub) {
        this._subscribed.delete(feedId);
        sub._end();
        // A subscription the server made but the page gave up on is ended there too.
        request.then(() => this._request({ type: 'unsubscribe', feed_id: feedId }), () => {}).catch(() => {});
      }
      throw e;
    }
    if (adaptive && this.feeds.get(feedId)?.kinds.includes('video') && this._subscribed.get(feedId) === sub) {
      sub._view = new ViewReporter(this, feedId, sub._elements);
    }
    return sub;
  }

  /** Stop receiving a feed (a subscribe still under way rejects with `subscription_state`);
   * its elements are emptied. */
  async unsubscribe(feedId) {
    await this._request({ type: 'unsubscribe', feed_id: feedId });
    const sub = this._subscribed.get(feedId);
    this._subscribed.delete(feedId);
    if (sub) {
      sub._ready.reject(new WebRTCaiError('subscription_state', `unsubscribed from ${feedId} before the subscription completed`));
      sub._end();
    }
  }

  /** The subscription to `feedId`, if this page has one. */
  subscription(feedId) {
    return this._subscribed.get(feedId) ?? null;
  }

  /** Play every subscribed feed's audio (and what comes later) on this output device, a
   * `speaker` of `WebRTCai.devices()`. Rejects with `device_not_found`, or `media_error`
   * where the browser cannot choose the output (no `setSinkId`). */
  async setSpeaker(deviceId) {
    if (typeof HTMLMediaElement === 'undefined' || !('setSinkId' in HTMLMediaElement.prototype)) {
      throw new WebRTCaiError('media_error', 'this browser cannot choose the audio output (no setSinkId)');
    }
    const known = (await listDevices()).some((d) => d.kind === 'speaker' && d.deviceId === deviceId);
    if (!known) throw new WebRTCaiError('device_not_found', `no speaker ${deviceId}`);
    this._speaker = deviceId;
    for (const sub of this._subscribed.values()) await sub._sink();
  }

  // A subscription's audio could not start: the page has not been interacted with yet and
  // the browser blocks audio that plays by itself.
  _audioBlocked() {
    if (!this.canPlayAudio) return;
    this.canPlayAudio = false;
    this._emit('audio-playback', { allowed: false });
  }

  /** Start the audio the browser blocked (`canPlayAudio` false, after an `audio-playback`
   * event with `allowed: false`). Call it from a click or key handler: browsers allow audio
   * once the person has interacted with the page. Resolves once every subscription's audio
   * plays; rejects with `media_error` where the browser still refuses. */
  async startAudio() {
    try {
      await Promise.all([...this._subscribed.values()].map((sub) => sub._play()));
    } catch (/** @type {any} */ e) {
      throw new WebRTCaiError('media_error', `the browser refused to play audio: ${e?.name}: ${e?.message}`, { cause: e });
    }
    if (!this.canPlayAudio) {
      this.canPlayAudio = true;
      this._emit('audio-playback', { allowed: true });
    }
  }

  /** What the server sends this page: `estimateBps` (its downlink as the relay estimates it)
   * and per video subscription `{ feedId, layers, temporalLayers, target, current, switches,
   * paused, pauses }` (layers count from 0, the lowest; for SVC layer `l` is spatial layer
   * `floor(l / temporalLayers)` at temporal layer `l % temporalLayers`; `paused` is `hidden`,
   * `bandwidth` or null). */
  async quality() {
    const q = await this._request({ type: 'quality' });
    return {
      estimateBps: q.estimate_bps,
      subscriptions: q.subscriptions.map((s) => ({
        feedId: s.feed_id, layers: s.layers, temporalLayers: s.temporal_layers ?? 1,
        target: s.target, current: s.current,
        switches: s.switches, paused: s.paused, pauses: s.pauses,
      })),
    };
  }

  _onDataChannel(channel) {
    const kind = Object.keys(DATA_LABELS).find((k) => DATA_LABELS[k] === channel.label);
    if (!kind) return;
    channel.binaryType = 'arraybuffer';
    channel.bufferedAmountLowThreshold = DATA_LOW_WATER;
    channel.onmessage = (ev) => {
      const m = typeof ev.data === 'string' ? null : delivered(ev.data);
      if (!m) return;
      this._emit('data', { from: m.from, data: m.text ? fromUtf8.decode(m.payload) : m.payload, reliable: kind === 'reliable' });
    };
    channel.onclose = () => {
      if (this._channels[kind] === channel) this._channels[kind] = null;
      // What was still buffered never left this page.
      if (channel.bufferedAmount > 0 && !this._left) {
        this._emit('error', { code: 'data_lost', message: `${channel.bufferedAmount} bytes of ${kind} data were not sent before the channel closed` });
      }
    };
    const opened = () => {
      this._channels[kind] = channel;
      for (const w of [...this._channelWaiters]) w();
    };
    if (channel.readyState === 'open') opened();
    else channel.addEventListener('open', opened, { once: true });
  }

  // The relay's channel of `kind` once it is open; rejects when it does not open in time.
  _channel(kind) {
    const ready = () => this._channels[kind]?.readyState === 'open';
    if (ready()) return Promise.resolve(this._channels[kind]);
    if (!this._dataWanted) return Promise.reject(new WebRTCaiError('data_unavailable', 'this session was joined with { data: false }'));
    return new Promise((resolve, reject) => {
      const done = () => {
        if (!ready()) return;
        clearTimeout(timer);
        this._channelWaiters = this._channelWaiters.filter((w) => w !== done);
        resolve(this._channels[kind]);
      };
      const timer = setTimeout(() => {
        this._channelWaiters = this._channelWaiters.filter((w) => w !== done);
        reject(new WebRTCaiError('data_unavailable', `the ${kind} data channel did not open within ${this._timeoutMs} ms`));
      }, this._timeoutMs);
      this._channelWaiters.push(done);
    });
  }

  /** The largest message `send` takes, in bytes (of a string: of its UTF-8), to everyone; a
   * message to named participants has room for their ids too. Null until the data channels
   * are negotiated. */
  get maxMessageSize() {
    const max = this.pc.sctp?.maxMessageSize;
    if (!max) return null;
    return Math.min(max, Number.MAX_SAFE_INTEGER) - 4 - utf8.encode(this.uid ?? '').length;
  }

  /** Send `data` (a string, an ArrayBuffer, a typed array, a DataView or a Blob) to everyone
   * else in the session, or to the participants whose uids `to` lists. A sender never gets its
   * own message. `reliable` (the default): ordered, and retransmitted until it arrives, also
   * across an ICE restart; `reliable: false`: unordered and never retransmitted, for what
   * newer data replaces (cursors, game state). Sends leave in the order they were made.
   * Resolves once the message is handed to the connection; while more than 1 MiB waits on
   * its channel (a receiver or the relay's rate limit slows it) it waits first, which is the
   * back-pressure a page can await. Rejects with `message_too_large` (over
   * `maxMessageSize`), `forbidden` (the participant may not send data), `invalid_data`,
   * `data_unavailable` (no data channel within `timeoutMs`), `connection_lost` (the channel
   * closed before the message could leave) or `not_joined`. */
  /** @param {string | ArrayBuffer | ArrayBufferView | Blob} data
   * @param {import('./webrtcai.js').SendOptions} [options] */
  send(data, { to, reliable = true } = {}) {
    if (this._left) return Promise.reject(new WebRTCaiError('not_joined', 'this session was left'));
    if (this._dataRefused) return Promise.reject(new WebRTCaiError('forbidden', this._dataRefused));
    const kind = reliable ? 'reliable' : 'lossy';
    const targets = to === undefined || to === null ? [] : Array.isArray(to) ? to : [to];
    // Chained per channel, so that sends leave in the order they were made, whatever their
    // kind of data takes to read.
    const job = this._sendChains[kind].then(async () => {
      if (to !== undefined && to !== null && targets.length === 0) return;
      const { text, payload } = await bytesOf(data);
      const envelope = addressed(text, targets, payload);
      const channel = await this._channel(kind);
      const max = this.pc.sctp?.maxMessageSize ?? 65536;
      const deliveredSize = 4 + utf8.encode(this.uid ?? '').length + payload.length;
      if (envelope.length > max || deliveredSize > max) {
        throw new WebRTCaiError('message_too_large', `a message of ${payload.length} bytes is over the ${this.maxMessageSize} the data channel takes`);
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
    this._sendChains[kind] = job.catch(() => {});
    return job;
  }

  /** Leave the session and release camera, microphone and connections. */
  async leave() {
    if (this._left) return;
    this._leaving = true;
    try {
      await this._request({ type: 'leave' });
    } catch {
      // Leaving anyway.
    }
    this._left = true;
    clearTimeout(this._beatTimer);
    this._abandon('not_joined', 'this session was left');
    for (const pub of this._published.values()) pub.stream.getTracks().forEach((t) => t.stop());
    navigator.mediaDevices?.removeEventListener?.('devicechange', this._onDeviceChange);
    this.pc.close();
    this._e2ee?.worker.terminate();
    this._ws.close();
  }
}

/** A feed this page receives: shown in the elements attached to it (each muted), its audio
 * played by an audio element of the SDK's own (so that it plays once, also with no element
 * or several). */
class Subscription {
  constructor(session, feedId, ready) {
    this.feedId = feedId;
    /** The feed's tracks once they arrive. */
    this.stream = null;
    this._session = session;
    this._ready = ready;
    this._elements = new Set();
    this._audio = null;
    this._volume = 1;
    this._view = null;
    this._ended = false;
  }

  /** The elements showing the feed now. */
  get elements() {
    return [...this._elements];
  }

  /** Show the feed's video in `target` too (a <video> or its id). */
  attach(target) {
    const el = element(target);
    if (this._ended) throw new WebRTCaiError('subscription_state', `not subscribed to ${this.feedId}`);
    if (this._elements.has(el)) return el;
    this._elements.add(el);
    if (this.stream) show(el, this.stream);
    this._view?.add(el);
    return el;
  }

  /** Stop showing the feed in `target`, or in every element without one; its audio goes on.
   * With adaptive stream on and no element left on screen, the server pauses the video. */
  detach(target) {
    const els = target === undefined || target === null ? [...this._elements] : [element(target)];
    for (const el of els) {
      if (!this._elements.delete(el)) continue;
      this._view?.remove(el);
      if (el.srcObject === this.stream) el.srcObject = null;
    }
  }

  /** The audio's volume, 0 to 1 (1 by default); 0 silences it on this page only. */
  setVolume(volume) {
    this._volume = Math.min(1, Math.max(0, Number(volume) || 0));
    if (this._audio) this._audio.volume = this._volume;
  }

  unsubscribe() {
    return this._session.unsubscribe(this.feedId);
  }

  // The browser's stream for the feed arrived (once per track: audio and video each).
  _received(stream) {
    if (this._ended) return;
    this.stream = stream;
    for (const el of this._elements) if (el.srcObject !== stream) show(el, stream);
    if (this._audio && this._audio.srcObject !== stream && stream.getAudioTracks().length) {
      // A new stream for the same feed (the page moved to another server).
      this._audio.srcObject = stream;
      this._play().catch(() => {});
    }
    if (stream.getAudioTracks().length && !this._audio) {
      this._audio = new Audio();
      this._audio.autoplay = true;
      this._audio.volume = this._volume;
      this._audio.srcObject = stream;
      this._sink().catch(() => {});
      this._play().catch((e) => {
        if (e?.name === 'NotAllowedError') this._session._audioBlocked();
      });
    }
  }

  _play() {
    return this._audio ? this._audio.play() : Promise.resolve();
  }

  async _sink() {
    const id = this._session._speaker;
    const audio = /** @type {any} */ (this._audio);
    if (!audio || id === null || audio.sinkId === id) return;
    try {
      await audio.setSinkId(id);
    } catch (/** @type {any} */ e) {
      throw new WebRTCaiError('device_not_found', `cannot play on speaker ${id}: ${e?.name}: ${e?.message}`, { cause: e });
    }
  }

  // The subscription is over: nothing shows or plays it any more.
  _end() {
    this._ended = true;
    this._view?.stop();
    this.detach();
    if (this._audio) {
      this._audio.pause();
      this._audio.srcObject = null;
      this._audio = null;
    }
  }
}

/** How long a change in how a video is shown settles before it is reported: a resize or a
 * scroll reports once, not per frame. Hiding waits longer, so that scrolling past a video or
 * switching tabs for a moment does not cost a keyframe to come back. */
const VIEW_SETTLE_MS = 100;
const HIDE_SETTLE_MS = 500;

/** Adaptive stream: reports how a subscribed feed's video elements show it (`set_view`), from
 * their sizes (ResizeObserver), whether they are on screen (IntersectionObserver) and whether
 * the page is visible. The largest element on screen decides; with none, the video is
 * hidden. A size counts only where the page sets it: an element sized by its own video (no
 * CSS width or height) would otherwise shrink the video it shows to its first frames' size
 * and keep it there, so with one such element on screen no size is reported. */
class ViewReporter {
  constructor(session, feedId, elements) {
    this._session = session;
    this._feedId = feedId;
    this._onScreen = new Map(); // element → whether it intersects the viewport
    this._sent = null; // the view the server has, as JSON
    this._timer = null;
    this._resize = new ResizeObserver(() => this._changed());
    this._intersection = new IntersectionObserver((entries) => {
      for (const e of entries) if (this._onScreen.has(e.target)) this._onScreen.set(e.target, e.isIntersecting);
      this._changed();
    });
    this._onVisibility = () => this._changed();
    document.addEventListener('visibilitychange', this._onVisibility);
    for (const el of elements) this.add(el);
    this._changed();
  }

  add(el) {
    if (this._stopped || this._onScreen.has(el)) return;
    this._onScreen.set(el, true);
    this._resize.observe(el);
    this._intersection.observe(el);
    this._changed();
  }

  remove(el) {
    if (!this._onScreen.delete(el)) return;
    this._resize.unobserve(el);
    this._intersection.unobserve(el);
    this._changed();
  }

  view() {
    const shown = document.visibilityState === 'hidden' ? [] : [...this._onScreen].filter(([el, on]) => on && el.isConnected && el.clientWidth > 0 && el.clientHeight > 0).map(([el]) => el);
    if (shown.length === 0) return { hidden: true };
    const view = { hidden: false };
    if (shown.every(sizedByPage)) {
      const dpr = window.devicePixelRatio || 1;
      view.width = Math.max(1, ...shown.map((el) => Math.round(el.clientWidth * dpr)));
      view.height = Math.max(1, ...shown.map((el) => Math.round(el.clientHeight * dpr)));
    }
    return view;
  }

  _changed() {
    if (this._stopped) return;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.report(), this.view().hidden ? HIDE_SETTLE_MS : VIEW_SETTLE_MS);
  }

  /** Send the view where the server does not have it (again after a reconnect). */
  report() {
    if (this._stopped) return;
    const view = this.view();
    const text = JSON.stringify(view);
    if (text === this._sent) return;
    this._sent = text;
    this._session._request({ type: 'set_view', feed_id: this._feedId, ...view }).catch(() => {
      // Not delivered (the connection dropped): sent again once it is back.
      if (this._sent === text) this._sent = null;
    });
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._timer);
    this._resize.disconnect();
    this._intersection.disconnect();
    document.removeEventListener('visibilitychange', this._onVisibility);
  }
}

/** Whether the page gives the element a width or a height (CSS Typed OM tells a computed
 * `auto` from a set size); where the browser cannot tell, it is taken as not set. */
function sizedByPage(el) {
  if (!el.computedStyleMap) return false;
  const style = el.computedStyleMap();
  const set = (p) => String(style.get(p)) !== 'auto';
  return set('width') || set('height');
}

/** A promise settled from outside, that rejects with `timeout` after `ms`. */
function deferred(ms, message) {
  let resolve, reject;
  const promise = new Promise((a, b) => {
    resolve = a;
    reject = b;
  });
  promise.catch(() => {});
  const timer = setTimeout(() => reject(new WebRTCaiError('timeout', message)), ms);
  const done = (fn) => (v) => {
    clearTimeout(timer);
    fn(v);
  };
  return { promise, resolve: done(resolve), reject: done(reject) };
}

class Client {
  /** @param {import('./webrtcai.js').InitOptions} options */
  constructor({ key, token, url, timeoutMs } = {}) {
    if (!key && !token) throw new WebRTCaiError('invalid_credentials', 'init needs a key or a token');
    this.key = key;
    this.token = token;
    this.url = url || defaultUrl();
    if (!this.url) {
      throw new WebRTCaiError('invalid_options', 'init needs `url` (the server\'s websocket, e.g. wss://media.example.com/ws) where the SDK is not loaded from the server\'s /sdk/webrtcai.js (a bundle)');
    }
    this.timeoutMs = timeoutMs > 0 ? timeoutMs : DEFAULT_TIMEOUT_MS;
  }

  /** Join (and create if needed) the session `sid`. With `data` (the default) the data
   * channels open at once, so that `send` and the `data` event work from the start. */
  /** @param {string} sid
   * @param {import('./webrtcai.js').JoinOptions} [options] */
  async join(sid, { name, data = true, e2ee } = {}) {
    let encryption = null;
    if (e2ee) {
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
      encryption = { worker };
    }
    const session = new Session(this, sid, name, data, encryption);
    if (encryption) {
      encryption.worker.onmessage = (e) => {
        if (e.data?.type !== 'decrypt-failed') return;
        session._emit('error', { code: 'decryption_failed', message: `${e.data.dropped} frames could not be decrypted (another passphrase?) and were dropped` });
      };
    }
    try {
      await session._open(null);
    } catch (e) {
      encryption?.worker.terminate();
      throw e;
    }
    return session;
  }
}

/** Entry point. */
export const WebRTCai = {
  init(options) {
    return new Client(options);
  },
  /** The cameras, microphones and speakers there are: `{ kind, deviceId, label, groupId }`
   * with kind `camera`, `microphone` or `speaker`. Labels are empty until the page has been
   * allowed a camera or microphone. */
  devices() {
    return listDevices();
  },
};

export default WebRTCai;
