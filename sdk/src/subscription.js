// @ts-check
// Receiving: the subscriptions to other participants' feeds, the elements that show them, the
// audio the SDK plays for them, and how their video is shown (adaptive stream).
import { WebRTCaiError, deferred } from './errors.js';
import { element, listDevices, show } from './media.js';

/** @typedef {import('./session.js').Session} Session */

/** @param {Session} session
 * @param {string} feedId
 * @param {HTMLVideoElement | string | null} [target]
 * @param {{ adaptive?: boolean }} [options] */
export async function subscribe(session, feedId, target = null, { adaptive = true } = {}) {
  const el = target === null || target === undefined ? null : element(target);
  if (session._subscribed.has(feedId)) {
    throw new WebRTCaiError('subscription_state', `already subscribed (or subscribing) to ${feedId}`);
  }
  const sub = new Subscription(session, feedId, deferred(session._timeoutMs, `subscribing to ${feedId} did not complete within ${session._timeoutMs} ms`));
  if (el) sub.attach(el);
  session._subscribed.set(feedId, sub);
  const request = session._request({ type: 'subscribe', feed_id: feedId });
  try {
    await Promise.race([request, sub._ready.promise]);
    await sub._ready.promise;
  } catch (e) {
    if (session._subscribed.get(feedId) === sub) {
      session._subscribed.delete(feedId);
      sub._end();
      // A subscription the server made but the page gave up on is ended there too.
      request.then(() => session._request({ type: 'unsubscribe', feed_id: feedId }), () => {}).catch(() => {});
    }
    throw e;
  }
  if (adaptive && session.feeds.get(feedId)?.kinds.includes('video') && session._subscribed.get(feedId) === sub) {
    sub._view = new ViewReporter(session, feedId, sub._elements);
  }
  return sub;
}

/** @param {Session} session */
export async function unsubscribe(session, feedId) {
  await session._request({ type: 'unsubscribe', feed_id: feedId });
  const sub = session._subscribed.get(feedId);
  session._subscribed.delete(feedId);
  if (sub) {
    sub._ready.reject(new WebRTCaiError('subscription_state', `unsubscribed from ${feedId} before the subscription completed`));
    sub._end();
  }
}

// A subscribed feed's tracks arrive in a stream named after the feed.
/** @param {Session} session */
export function onTrack(session, ev) {
  const stream = ev.streams[0];
  if (!stream) return;
  session._subscribed.get(stream.id)?._received(stream);
}

/** @param {Session} session */
export async function setSpeaker(session, deviceId) {
  if (typeof HTMLMediaElement === 'undefined' || !('setSinkId' in HTMLMediaElement.prototype)) {
    throw new WebRTCaiError('media_error', 'this browser cannot choose the audio output (no setSinkId)');
  }
  const known = (await listDevices()).some((d) => d.kind === 'speaker' && d.deviceId === deviceId);
  if (!known) throw new WebRTCaiError('device_not_found', `no speaker ${deviceId}`);
  session._speaker = deviceId;
  for (const sub of session._subscribed.values()) await sub._sink();
}

// A subscription's audio could not start: the page has not been interacted with yet and
// the browser blocks audio that plays by itself.
/** @param {Session} session */
function audioBlocked(session) {
  if (!session.canPlayAudio) return;
  session.canPlayAudio = false;
  session._emit('audio-playback', { allowed: false });
}

/** @param {Session} session */
export async function startAudio(session) {
  try {
    await Promise.all([...session._subscribed.values()].map((sub) => sub._play()));
  } catch (/** @type {any} */ e) {
    throw new WebRTCaiError('media_error', `the browser refused to play audio: ${e?.name}: ${e?.message}`, { cause: e });
  }
  if (!session.canPlayAudio) {
    session.canPlayAudio = true;
    session._emit('audio-playback', { allowed: true });
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
        if (e?.name === 'NotAllowedError') audioBlocked(this._session);
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
