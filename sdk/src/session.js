// @ts-check
// A joined session: its state, and its API, each method handing the work to the module that
// does it (connection, publication, subscription, quality, data).
import { WebRTCaiError } from './errors.js';
import { Emitter } from './emitter.js';
import { listDevices } from './media.js';
import * as connection from './connection.js';
import * as publication from './publication.js';
import * as subscriptions from './subscription.js';
import * as quality from './quality.js';
import * as dataChannels from './data.js';

/** A joined session. Events: participant-joined, participant-left, participant-reconnecting,
 * participant-reconnected, feed-published,
 * feed-unpublished, feed-paused, feed-resumed, speaking, active-speaker, data, reconnecting,
 * reconnected, disconnected, error. */
export class Session extends Emitter {
  /** @param {{ iceServers: RTCIceServer[], iceTransportPolicy: RTCIceTransportPolicy }} [ice] */
  constructor(client, sid, name, data = true, e2ee = null, ice = { iceServers: [], iceTransportPolicy: 'all' }) {
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
    /** What this participant may do, from the join reply.
     * @type {{ publish: boolean, subscribe: boolean, publishData: boolean, record: boolean }} */
    this.permissions = null;
    this._client = client;
    this._name = name;
    /** TURN servers and transport policy for the media connection (join's options). */
    this._ice = ice;
    /** The websocket to the server (a new one at each reconnect).
     * @type {WebSocket} */
    this._ws = null;
    this._resume = null; // the resume token of the last join reply
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
    this._rttMs = null;
    this._qualityTimer = null;
    this._left = false;
    this._leaving = false;
    this._beatTimer = null; // the heartbeat of the current websocket (see heartbeat.js)
    this._iceTimer = null;
    this._restarting = false; // an ICE restart is being asked for
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
    /** The media connection (a new one after moving to another server of a cluster).
     * @type {RTCPeerConnection} */
    this.pc = null;
    connection.newPeerConnection(this);
    this._onDeviceChange = () => listDevices().then((devices) => this._emit('devices-changed', { devices }), () => {});
    navigator.mediaDevices?.addEventListener?.('devicechange', this._onDeviceChange);
  }

  /** The media connection's state (the RTCPeerConnection's `connectionState`): `connected`
   * while media can flow; `disconnected` or `failed` while it cannot, which the SDK repairs
   * with an ICE restart by itself. Independent of the websocket (`reconnecting`). */
  get connectionState() {
    return this.pc.connectionState;
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

  /** A summary of what this page sends and receives now, from the browser's statistics:
   * per published stream (each simulcast layer) and per subscribed track its bitrate (over
   * the time since the previous sample, at most a few seconds), resolution, frame rate and
   * loss; the round trip to the relay and the browser's uplink estimate; the connection
   * quality; each video subscription's layer (from the server); and the raw
   * `RTCStatsReport` as `raw`. */
  getStats() {
    return quality.getStats(this);
  }

  /** What the server sends this page: `estimateBps` (its downlink as the relay estimates it)
   * and per video subscription `{ feedId, layers, temporalLayers, target, current, switches,
   * paused, pauses }` (layers count from 0, the lowest; for SVC layer `l` is spatial layer
   * `floor(l / temporalLayers)` at temporal layer `l % temporalLayers`; `paused` is `hidden`,
   * `bandwidth` or null). */
  quality() {
    return quality.downlinkReport(this);
  }

  /** Publish the webcam (with microphone) or the screen; shows it muted in `target`, if given.
   * Rejects (and releases the camera) when the browser refuses the media, the server refuses
   * the feed, or publishing does not complete within the timeout once the media is there.
   * `codec` ('VP8', 'VP9', 'H264' or 'AV1') picks the video codec where the browser has it;
   * `svc` (a scalability mode such as 'L3T3_KEY', with VP9 or AV1) sends the layers in one
   * stream instead of simulcast, each subscriber then getting the layers it can show. */
  /** @param {import('../webrtcai.js').PublishOptions} [options] */
  publish(options) {
    return publication.publish(this, options);
  }

  /** Stop publishing a feed (a publish still under way rejects with `publish_failed`). */
  unpublish(feedId) {
    return publication.unpublish(this, feedId);
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
  subscribe(feedId, target, options) {
    return subscriptions.subscribe(this, feedId, target, options);
  }

  /** Stop receiving a feed (a subscribe still under way rejects with `subscription_state`);
   * its elements are emptied. */
  unsubscribe(feedId) {
    return subscriptions.unsubscribe(this, feedId);
  }

  /** The subscription to `feedId`, if this page has one. */
  subscription(feedId) {
    return this._subscribed.get(feedId) ?? null;
  }

  /** Play every subscribed feed's audio (and what comes later) on this output device, a
   * `speaker` of `WebRTCai.devices()`. Rejects with `device_not_found`, or `media_error`
   * where the browser cannot choose the output (no `setSinkId`). */
  setSpeaker(deviceId) {
    return subscriptions.setSpeaker(this, deviceId);
  }

  /** Start the audio the browser blocked (`canPlayAudio` false, after an `audio-playback`
   * event with `allowed: false`). Call it from a click or key handler: browsers allow audio
   * once the person has interacted with the page. Resolves once every subscription's audio
   * plays; rejects with `media_error` where the browser still refuses. */
  startAudio() {
    return subscriptions.startAudio(this);
  }

  /** The largest message `send` takes, in bytes (of a string: of its UTF-8), to everyone; a
   * message to named participants has room for their ids too. Null until the data channels
   * are negotiated. */
  get maxMessageSize() {
    return dataChannels.maxMessageSize(this);
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
   * @param {import('../webrtcai.js').SendOptions} [options] */
  send(data, options) {
    return dataChannels.send(this, data, options);
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

  // One request to the server, one reply (see connection.js).
  _request(msg) {
    return connection.sendRequest(this, msg);
  }

  _restartIce() {
    return connection.restartIce(this);
  }

  // Every publish and subscribe still waiting settles when the session ends.
  _abandon(code, reason) {
    const waiting = [...[...this._published.values()].map((x) => x.ready), ...[...this._subscribed.values()].map((x) => x._ready)];
    for (const ready of waiting) ready.reject(new WebRTCaiError(code, reason));
  }
}
