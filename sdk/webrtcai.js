// WebRTC.ai browser SDK (ES module). Types: webrtcai.d.ts next to this file.
//
//   const client = WebRTCai.init({ key: 'WEB_KEY…' });
//   const session = await client.join('my-room', { name: 'Ada' });
//   await session.publish({ source: 'webcam', target: 'me' });
//   session.on('feed-published', (feed) => session.subscribe(feed.feedId, videoElement));
//
// The SDK never creates UI: it only sets `srcObject` on the video elements it is given.

const PROTOCOL_VERSION = 1;

/** An error with a stable code (the server's codes, plus the SDK's own). */
export class WebRTCaiError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'WebRTCaiError';
    this.code = code;
  }
}

function element(target) {
  const el = typeof target === 'string' ? document.getElementById(target) : target;
  if (!el || typeof el !== 'object' || !('srcObject' in el)) {
    throw new WebRTCaiError('invalid_target', 'target must be a <video> element or its id');
  }
  return el;
}

function show(el, stream, muted) {
  el.srcObject = stream;
  el.autoplay = true;
  el.playsInline = true;
  if (muted) el.muted = true;
  const p = el.play();
  if (p && p.catch) p.catch(() => {});
}

function defaultUrl() {
  const u = new URL('/ws', import.meta.url);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
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

/** A joined session. Events: participant-joined, participant-left, feed-published,
 * feed-unpublished, reconnecting, reconnected, disconnected. */
class Session extends Emitter {
  constructor(client, sid, name) {
    super();
    this.sid = sid;
    this.uid = null;
    this.participants = new Map();
    this.feeds = new Map();
    this._client = client;
    this._name = name;
    this._nextId = 1;
    this._pending = new Map();
    this._offers = Promise.resolve();
    this._published = new Map(); // feed_id → { stream, tracks: {audio, video}, waiters }
    this._subscribed = new Map(); // feed_id → { stream, target, waiters }
    this._left = false;
    this._attempt = 0;
    this.pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc.ontrack = (ev) => this._onTrack(ev);
    this.pc.oniceconnectionstatechange = () => this._onIceState();
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

  async _open(resume) {
    const ws = new WebSocket(this._client.url);
    this._ws = ws;
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new WebRTCaiError('connection_failed', `cannot reach ${this._client.url}`));
    });
    ws.onmessage = (ev) => this._onMessage(ev.data);
    ws.onclose = () => this._onClose(ws);
    const join = {
      type: 'join',
      v: PROTOCOL_VERSION,
      sid: this.sid,
      name: this._name ?? null,
      key: this._client.key ?? null,
      token: this._client.token ?? null,
      resume: resume ?? null,
    };
    const snapshot = await this._request(join);
    this.uid = snapshot.uid;
    this._resume = snapshot.resume_token;
    for (const p of snapshot.participants) this.participants.set(p.uid, p);
    for (const f of snapshot.feeds) this.feeds.set(f.feed_id, this._feed(f));
    return snapshot;
  }

  _feed(f) {
    return { feedId: f.feed_id, uid: f.uid, source: f.source, kinds: f.kinds };
  }

  _request(msg) {
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      try {
        this._ws.send(JSON.stringify({ ...msg, id }));
      } catch (e) {
        this._pending.delete(id);
        reject(new WebRTCaiError('connection_lost', String(e)));
      }
    });
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
        this.participants.set(msg.uid, { uid: msg.uid, name: msg.name });
        this._emit('participant-joined', { uid: msg.uid, name: msg.name });
        break;
      case 'participant-left':
        this.participants.delete(msg.uid);
        this._emit('participant-left', { uid: msg.uid });
        break;
      case 'feed-published': {
        const feed = this._feed(msg);
        this.feeds.set(feed.feedId, feed);
        this._emit('feed-published', feed);
        break;
      }
      case 'feed-unpublished': {
        const sub = this._subscribed.get(msg.feed_id);
        if (sub && sub.target) sub.target.srcObject = null;
        this._subscribed.delete(msg.feed_id);
        this.feeds.delete(msg.feed_id);
        this._emit('feed-unpublished', { feedId: msg.feed_id, uid: msg.uid });
        break;
      }
    }
  }

  async _applyOffer(msg) {
    await this.pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    const transceivers = this.pc.getTransceivers();
    for (const t of msg.transceivers) {
      const tr = transceivers.find((x) => x.mid === t.mid);
      if (!tr || t.role === 'closed') continue;
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
    const result = await this._request({ type: 'answer', offer_id: msg.offer_id, sdp: answer.sdp });
    await this.pc.setLocalDescription(answer);
    for (const id of result.published) this._published.get(id)?.ready.resolve();
    for (const id of result.failed) {
      this._published.get(id)?.ready.reject(new WebRTCaiError('publish_failed', 'the browser refused to send this feed'));
    }
    for (const id of result.subscribed) this._subscribed.get(id)?.ready.resolve();
  }

  _onTrack(ev) {
    const stream = ev.streams[0];
    if (!stream) return;
    const sub = this._subscribed.get(stream.id);
    if (sub) {
      sub.stream = stream;
      if (sub.target) show(sub.target, stream, false);
    }
  }

  _onClose(ws) {
    if (ws !== this._ws || this._left) return;
    for (const p of this._pending.values()) p.reject(new WebRTCaiError('connection_lost', 'the connection to the server was lost'));
    this._pending.clear();
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
        this._emit('reconnected', {});
        const ice = this.pc.iceConnectionState;
        if (ice === 'failed' || ice === 'disconnected') this._restartIce();
        return;
      } catch (e) {
        if (e instanceof WebRTCaiError && e.code === 'resume_failed') {
          this._left = true;
          this._emit('disconnected', { reason: e.message });
          return;
        }
        if (this._attempt >= 12) {
          this._left = true;
          this._emit('disconnected', { reason: 'the server could not be reached' });
          return;
        }
      }
    }
  }

  /** Publish the webcam (with microphone) or the screen; shows it muted in `target`. */
  async publish({ source = 'webcam', target, audio = true, video = true } = {}) {
    const el = element(target);
    let stream;
    if (source === 'screen') {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      audio = false;
    } else if (source === 'webcam') {
      stream = await navigator.mediaDevices.getUserMedia({ video, audio });
    } else {
      throw new WebRTCaiError('invalid_source', "source must be 'webcam' or 'screen'");
    }
    show(el, stream, true);
    const tracks = {
      audio: stream.getAudioTracks()[0] || null,
      video: stream.getVideoTracks()[0] || null,
    };
    const ready = deferred();
    const { feed_id } = await this._request({
      type: 'publish',
      source,
      audio: !!tracks.audio,
      video: !!tracks.video,
    }).then((r) => {
      this._published.set(r.feed_id, { stream, tracks, ready, target: el });
      return r;
    });
    await ready.promise;
    const feed = { feedId: feed_id, uid: this.uid, source, stream, unpublish: () => this.unpublish(feed_id) };
    return feed;
  }

  /** Stop publishing a feed. */
  async unpublish(feedId) {
    const pub = this._published.get(feedId);
    await this._request({ type: 'unpublish', feed_id: feedId });
    if (pub) {
      pub.stream.getTracks().forEach((t) => t.stop());
      if (pub.target) pub.target.srcObject = null;
    }
    this._published.delete(feedId);
  }

  /** Receive a feed and play it in `target`. */
  async subscribe(feedId, target) {
    const el = element(target);
    const ready = deferred();
    this._subscribed.set(feedId, { target: el, ready, stream: null });
    try {
      await this._request({ type: 'subscribe', feed_id: feedId });
    } catch (e) {
      this._subscribed.delete(feedId);
      throw e;
    }
    await ready.promise;
    const sub = this._subscribed.get(feedId);
    return { feedId, stream: sub ? sub.stream : null };
  }

  /** Stop receiving a feed. */
  async unsubscribe(feedId) {
    await this._request({ type: 'unsubscribe', feed_id: feedId });
    const sub = this._subscribed.get(feedId);
    if (sub && sub.target) sub.target.srcObject = null;
    this._subscribed.delete(feedId);
  }

  /** Leave the session and release camera, microphone and connections. */
  async leave() {
    if (this._left) return;
    try {
      await this._request({ type: 'leave' });
    } catch {
      // Leaving anyway.
    }
    this._left = true;
    for (const pub of this._published.values()) pub.stream.getTracks().forEach((t) => t.stop());
    this.pc.close();
    this._ws.close();
  }
}

function deferred() {
  let resolve, reject;
  const promise = new Promise((a, b) => {
    resolve = a;
    reject = b;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

class Client {
  constructor({ key, token, url } = {}) {
    if (!key && !token) throw new WebRTCaiError('invalid_credentials', 'init needs a key or a token');
    this.key = key;
    this.token = token;
    this.url = url || defaultUrl();
  }

  /** Join (and create if needed) the session `sid`. */
  async join(sid, { name } = {}) {
    const session = new Session(this, sid, name);
    await session._open(null);
    return session;
  }
}

/** Entry point. */
export const WebRTCai = {
  init(options) {
    return new Client(options);
  },
};

export default WebRTCai;
