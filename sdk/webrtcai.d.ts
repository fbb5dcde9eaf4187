// Type definitions for the WebRTC.ai browser SDK (webrtcai.js).

export type Source = 'webcam' | 'screen';

/** Every `code` a WebRTCaiError can have. The server's: */
export type ServerErrorCode =
  /** Not JSON, unknown type, missing or wrong fields. */
  | 'invalid_message'
  /** Larger than the protocol's message limit (64 KiB). */
  | 'message_too_large'
  | 'unsupported_version'
  /** A request before joining, or after the participant left. */
  | 'not_joined'
  | 'already_joined'
  /** The resume window (20 s) passed; the session ends with `disconnected`. */
  | 'resume_failed'
  | 'no_such_feed'
  /** Subscribing to one's own feed. */
  | 'own_feed'
  /** Subscribing twice, unsubscribing what is not subscribed. */
  | 'subscription_state'
  /** The server refused the browser's answer. */
  | 'invalid_sdp'
  /** The media relay refused. */
  | 'relay'
  | 'nothing_to_publish'
  /** The key or token was refused (unknown, revoked, expired, wrong origin…); the message says which check failed. */
  | 'unauthorized'
  /** The token's grants (or the key) do not allow the request. */
  | 'forbidden'
  /** Too many joins from this key or address; the message gives the limit. */
  | 'rate_limited'
  /** Recording is permitted but this server has no recorder. */
  | 'recording_unavailable'
  /** The recording could not start or go on: its directory cannot be written, or the disk
   * is full (the message says which). */
  | 'recording_failed'
  /** Joining an end-to-end encrypted session without `e2ee`, or the other way round. */
  | 'e2ee_mismatch'
  /** In a cluster, the session's participants of this region are on another node. The SDK
   * joins there by itself; a page sees this only if that node sends it on again. */
  | 'moved'
  /** The server is draining (about to restart, or leaving its cluster) and takes no new
   * session; join through another server. */
  | 'draining';

/** The SDK's own: */
export type SdkErrorCode =
  | 'invalid_credentials'
  /** `init` without `url` where the SDK was not loaded from the server (a bundle); `e2ee`
   * without a passphrase or in a browser without RTCRtpScriptTransform; publishing H.264 or
   * AV1 end-to-end encrypted. */
  | 'invalid_options'
  | 'invalid_target'
  | 'invalid_source'
  | 'connection_failed'
  /** The websocket dropped, or was silent for 5 s, before the reply came (the SDK reconnects by itself). */
  | 'connection_lost'
  /** The browser could not send the feed, or it was unpublished before publishing completed. */
  | 'publish_failed'
  /** No reply, or publishing/subscribing not complete, within `timeoutMs`. */
  | 'timeout'
  /** The feed was unpublished before the subscription completed. */
  | 'feed_gone'
  /** Camera, microphone or screen refused by the person, the browser or a permissions policy. */
  | 'permission_denied'
  /** No such device, or none that fits the constraints. */
  | 'device_not_found'
  /** The device is there but cannot be read (another application holds it). */
  | 'device_in_use'
  /** Any other getUserMedia/getDisplayMedia failure, or a page that is not secure. */
  | 'media_error'
  /** `send` was given something other than a string, ArrayBuffer, typed array, DataView or Blob. */
  | 'invalid_data'
  /** No data channel: joined with `{ data: false }`, or it did not open within `timeoutMs`. */
  | 'data_unavailable';

export type ErrorCode = ServerErrorCode | SdkErrorCode;

/** Every promise of the SDK rejects with this. */
export class WebRTCaiError extends Error {
  readonly name: 'WebRTCaiError';
  readonly code: ErrorCode;
  /** The browser's error behind it (e.g. the DOMException of getUserMedia), if any. */
  readonly cause?: unknown;
}

export interface InitOptions {
  /** A WEB_ONLY API key. */
  key?: string;
  /** A JWT minted by your backend. */
  token?: string;
  /** The server's websocket, e.g. `wss://media.example.com/ws`. Needed where the SDK is part of
   * a bundle (or copied elsewhere); loaded from the server's `/sdk/webrtcai.js`, it defaults to
   * that server's `/ws`. */
  url?: string;
  /** How long a request may wait for its reply, and `publish`/`subscribe` for the negotiation
   * to complete (not counting the camera permission prompt), before rejecting with
   * `timeout`. Default 15000. */
  timeoutMs?: number;
}

export interface JoinOptions {
  /** Display name shown to the others. */
  name?: string;
  /** Open the data channels at once (default `true`); `false` for a page that never sends
   * or receives data. */
  data?: boolean;
  /** End-to-end encryption: every frame is encrypted in the browser under a key derived from
   * the passphrase (share it outside WebRTC.ai), and the server forwards what it cannot
   * decode. Everyone in the session must join with it (else `e2ee_mismatch`); a page with
   * another passphrase decodes nothing and gets `error` with `decryption_failed`. An
   * encrypted session cannot be recorded. Video codecs: VP8 and VP9. */
  e2ee?: { passphrase: string };
  /** STUN and TURN servers for the media connection (default none: the relay is reached
   * directly, over UDP or, where UDP is blocked, ICE-TCP). A TURN server (coturn) helps a
   * network that lets only TLS on port 443 out: `turns:turn.example.com:443?transport=tcp`.
   * Invalid entries reject with `invalid_options`. */
  iceServers?: RTCIceServer[];
  /** `'relay'` sends media only through the TURN servers of `iceServers` (default `'all'`). */
  iceTransportPolicy?: 'all' | 'relay';
}

export interface SendOptions {
  /** The uids of the participants it is for (default: everyone else in the session). */
  to?: string | string[];
  /** `true` (default): ordered and retransmitted until it arrives. `false`: unordered and
   * never retransmitted, for what newer data replaces (cursors, game state). */
  reliable?: boolean;
}

/** How well a media connection works: `excellent` (no loss to speak of, a short round
 * trip), `good` (from 2% loss or a 200 ms round trip), `poor` (from 8% loss, a 400 ms round
 * trip, or a link too narrow for a subscribed video's lowest layer), `lost` (nothing
 * arrives). The relay rates each participant; a page rates itself from its own statistics by
 * the same rule. A worse rating shows at once, a better one once it held 4 s. */
export type ConnectionQuality = 'excellent' | 'good' | 'poor' | 'lost';

export interface Participant {
  uid: string;
  name?: string | null;
  /** As the relay rates it (null until rated, a few seconds after it connects). */
  quality?: ConnectionQuality | null;
  /** Its server stopped and it is expected back on another (between
   * `participant-reconnecting` and `participant-reconnected`, or its leave). */
  reconnecting?: boolean;
}

/** One stream this page sends (a simulcast layer each), in `getStats()`. */
export interface PublishedStreamStats {
  feedId: string | null;
  kind: 'audio' | 'video';
  /** The simulcast layer (`q`, `h`, `f`), null without simulcast. */
  rid: string | null;
  /** False while dynacast or mute turned the layer off. */
  active: boolean;
  /** Bits a second since the previous sample; null on the first. */
  bitrate: number | null;
  width: number | null;
  height: number | null;
  fps: number | null;
  packetsSent: number;
  /** Lost on the way to the relay, as the relay reports it. */
  packetsLost: number | null;
  fractionLost: number | null;
  /** Why the browser sends less than it could: `bandwidth`, `cpu`, `none`. */
  qualityLimitation: string | null;
}

/** One track this page receives, in `getStats()`. */
export interface SubscribedTrackStats {
  feedId: string | null;
  kind: 'audio' | 'video';
  bitrate: number | null;
  width: number | null;
  height: number | null;
  fps: number | null;
  packetsReceived: number;
  packetsLost: number;
  jitterMs: number | null;
  freezes: number | null;
  /** The video's layer now (0 the lowest) and how many there are, from the server. */
  layer: number | null;
  layers: number | null;
  paused: 'hidden' | 'bandwidth' | null;
}

/** What `session.getStats()` resolves with. */
export interface StatsSummary {
  /** The round trip to the relay, ms. */
  rttMs: number | null;
  /** The browser's estimate of its uplink, bits a second. */
  availableOutgoingBitrate: number | null;
  quality: ConnectionQuality | null;
  publications: PublishedStreamStats[];
  subscriptions: SubscribedTrackStats[];
  /** The browser's own report. */
  raw: RTCStatsReport;
}

export interface FeedInfo {
  feedId: string;
  uid: string;
  source: Source;
  kinds: Array<'audio' | 'video'>;
  /** Those of its tracks its publisher muted (nothing of them is sent). */
  muted: Array<'audio' | 'video'>;
}

/** A camera, microphone or speaker, from `WebRTCai.devices()`. */
export interface Device {
  kind: 'camera' | 'microphone' | 'speaker';
  deviceId: string;
  /** Empty until the page has been allowed a camera or microphone (the browser's rule). */
  label: string;
  /** Devices of one piece of hardware (a headset's microphone and speaker) share it. */
  groupId: string;
}

export interface PublishOptions {
  source?: Source;
  /** The <video> element (or its id) that shows the local stream (muted); none where it is
   * not shown (publishing the microphone alone, say). */
  target?: HTMLVideoElement | string;
  /** The microphone: `true` (default), `false` for none, or constraints of your own (e.g.
   * `{ deviceId: { exact: id } }` for a microphone of `WebRTCai.devices()`). Webcam only. */
  audio?: boolean | MediaTrackConstraints;
  /** The camera: `true` (default) asks for 1280x720, `false` for none, or constraints of
   * your own (e.g. `{ width: { ideal: 640 }, height: { ideal: 360 } }`). Webcam only. */
  video?: boolean | MediaTrackConstraints;
  /** Send the video as three simulcast layers (a quarter, half and the whole resolution), so
   * that each subscriber can receive the one its link takes. Default: `true` for the webcam,
   * `false` for the screen. */
  simulcast?: boolean;
  /** The video codec, where the browser has it (default: the browser's first, VP8). */
  codec?: 'VP8' | 'VP9' | 'H264' | 'AV1';
  /** Send the layers in one stream (SVC) with this scalability mode, e.g. `'L3T3_KEY'`, with
   * `codec` VP9 or AV1; replaces simulcast. */
  svc?: string;
}

export interface PublishedFeed {
  feedId: string;
  uid: string;
  source: Source;
  stream: MediaStream;
  /** Which of its tracks are muted. */
  readonly muted: { audio: boolean; video: boolean };
  unpublish(): Promise<void>;
  /** Stop sending the feed's audio or video (nothing is sent, not silence or black frames;
   * the camera or microphone stays open for a quick unmute); the others get `feed-muted`.
   * Rejects with `no_such_feed` where the feed has no such track. */
  mute(kind: 'audio' | 'video'): Promise<void>;
  /** Send it again; the others get `feed-unmuted`. */
  unmute(kind: 'audio' | 'video'): Promise<void>;
  /** Switch to another camera or microphone (a `deviceId` of `WebRTCai.devices()`): the feed
   * goes on with the new device's track, without renegotiation, and the preview shows it; a
   * muted track stays muted. Rejects with `device_not_found` (no such camera or microphone),
   * `no_such_feed` (the feed has no track of that kind, or is a screen), or what `publish`
   * rejects with when the device cannot be opened. */
  setDevice(deviceId: string): Promise<void>;
  /** The deviceIds the feed's tracks come from now (null: no such track). */
  readonly devices: { audio: string | null; video: string | null };
}

/** A feed this page receives. Its video shows in the elements attached to it (muted); its
 * audio plays through an audio element of the SDK's own, once, whatever is attached. */
export interface Subscription {
  feedId: string;
  /** The feed's tracks, once they arrived. */
  readonly stream: MediaStream | null;
  /** The elements that show the video now. */
  readonly elements: HTMLVideoElement[];
  /** Show the video in this element too (a <video> or its id); returns the element. */
  attach(target: HTMLVideoElement | string): HTMLVideoElement;
  /** Stop showing it in this element, or in every element without an argument; the audio
   * goes on. With adaptive stream and no element left on screen the video is paused. */
  detach(target?: HTMLVideoElement | string): void;
  /** The audio's volume on this page, 0 to 1. */
  setVolume(volume: number): void;
  unsubscribe(): Promise<void>;
}

export interface SessionEvents {
  'participant-joined': Participant;
  'participant-left': { uid: string };
  /** A participant's server stopped (a node of a cluster): its feeds are unpublished, and it
   * is expected back within 20 s (`participant-reconnected`), else it leaves. */
  'participant-reconnecting': { uid: string };
  /** A participant that was reconnecting is back; its feeds are published again. */
  'participant-reconnected': { uid: string };
  /** The server is about to stop (a restart, an upgrade). `moving`: in a cluster, the page
   * moves to another node now by itself (`reconnecting`, then `reconnected`; its feeds are
   * published again and its subscriptions made again). Otherwise the page reconnects once the
   * server is back, as the same participant. */
  'server-draining': { moving: boolean };
  'feed-published': FeedInfo;
  'feed-unpublished': { feedId: string; uid: string };
  /** The relay stopped sending this page a subscribed feed's video: `hidden` (its element is
   * hidden, off screen, or the page is in the background) or `bandwidth` (the link cannot
   * carry even its lowest layer after audio and the videos that come first). */
  'feed-paused': { feedId: string; reason: 'hidden' | 'bandwidth' };
  /** Its video is sent again (it shows from the next keyframe). */
  'feed-resumed': { feedId: string };
  /** A participant's connection quality changed: another's as the relay rates it, this
   * page's own (`uid` its own) from its statistics, every 2 s. Also
   * `session.participants.get(uid).quality` and `session.connectionQuality`. */
  'connection-quality': { uid: string; quality: ConnectionQuality };
  /** A participant (this page's own included) started or stopped speaking, from the level of
   * the audio it publishes. */
  speaking: { uid: string; speaking: boolean };
  /** The dominant speaker changed: the loudest of those speaking, who stays so until another
   * has been louder for 1.5 s (null: the last one left). Also `session.activeSpeaker`. */
  'active-speaker': { uid: string | null };
  /** A data-channel message from another participant: a string where it sent a string,
   * else its bytes; `reliable` says which channel it came on. */
  data: { from: string; data: string | Uint8Array; reliable: boolean };
  /** Something went wrong outside any promise: `forbidden` (the relay dropped data this
   * page sent: sending data is not granted; later sends reject), `data_lost` (a data
   * channel closed with data still buffered in this page), `encoding_refused`,
   * `decryption_failed` (end-to-end encrypted frames this page's passphrase cannot open were
   * dropped; at most once a second). */
  error: { code: ErrorCode | 'encoding_refused' | 'data_lost' | 'decryption_failed'; message: string };
  /** A publisher muted a track of a feed: nothing of it comes until `feed-unmuted`. Also in
   * `session.feeds.get(feedId).muted`. */
  'feed-muted': { feedId: string; uid: string; kind: 'audio' | 'video' };
  'feed-unmuted': { feedId: string; uid: string; kind: 'audio' | 'video' };
  /** The session is being recorded (sent to everyone, and to whoever joins while it is):
   * `by` is the uid that started it, or `admin`; `startedAt` Unix seconds. */
  'recording-started': { by: string; startedAt: number };
  /** The session is no longer recorded: stopped by `by` (a uid or `admin`), or on its own,
   * with a `reason` (a full disk). */
  'recording-stopped': { by: string | null; reason: string | null };
  /** The media connection's state changed (also `session.connectionState`): `connected`
   * while media can flow; `disconnected` or `failed` while it cannot (the SDK restarts ICE by
   * itself). Separate from the websocket's `reconnecting`. */
  'connection-state': { state: RTCPeerConnectionState };
  /** A camera, microphone or speaker was plugged in or out; the devices there are now. */
  'devices-changed': { devices: Device[] };
  /** `allowed: false`: the browser blocked a subscription's audio until the person interacts
   * with the page (autoplay policy); show a button that calls `session.startAudio()`.
   * `allowed: true`: it plays now. Also `session.canPlayAudio`. */
  'audio-playback': { allowed: boolean };
  /** The websocket dropped, or was silent for 5 s (the SDK pings every 2 s); resuming. */
  reconnecting: { attempt: number };
  reconnected: Record<string, never>;
  disconnected: { reason: string };
}

export interface Session {
  readonly sid: string;
  readonly uid: string;
  readonly participants: Map<string, Participant>;
  readonly feeds: Map<string, FeedInfo>;
  /** The dominant speaker's uid, if anyone has spoken yet. */
  readonly activeSpeaker: string | null;
  /** While the session is recorded: who started it and when (Unix seconds). */
  readonly recording: { by: string; startedAt: number } | null;
  readonly pc: RTCPeerConnection;
  /** Whether this page's media is end-to-end encrypted (joined with `e2ee`). */
  readonly e2ee: boolean;
  /** The media connection's state (the RTCPeerConnection's). */
  readonly connectionState: RTCPeerConnectionState;
  /** What this participant may do (its key, or its token's grants): `record` is false where
   * the key does not allow recording, the server does not record, or the session is
   * end-to-end encrypted. */
  readonly permissions: { publish: boolean; subscribe: boolean; publishData: boolean; record: boolean };
  /** This page's own connection quality (null until rated, 2 s after joining). */
  readonly connectionQuality: ConnectionQuality | null;
  /** A summary of what this page sends and receives, and the raw report. */
  getStats(): Promise<StatsSummary>;
  /** False while the browser blocks the subscriptions' audio (see `startAudio`). */
  readonly canPlayAudio: boolean;
  /** Rejects with `permission_denied`, `device_not_found`, `device_in_use` or `media_error`
   * when the browser gives no media, `publish_failed` or a server code when the feed is
   * refused, `timeout` after `timeoutMs`; the camera is released then. */
  publish(options: PublishOptions): Promise<PublishedFeed>;
  unpublish(feedId: string): Promise<void>;
  /** What the server sends this page: its downlink estimate and, per video subscription, the
   * layer it should be on and the one it is on (0 the lowest), switches and pauses. With SVC
   * a layer is a spatial layer at one of its temporal layers: layer `l` is spatial layer
   * `Math.floor(l / temporalLayers)` at temporal layer `l % temporalLayers`. */
  quality(): Promise<{
    estimateBps: number | null;
    subscriptions: {
      feedId: string;
      layers: number;
      /** 1 for simulcast, where each layer is a stream. */
      temporalLayers: number;
      target: number;
      current: number | null;
      switches: number;
      paused: 'hidden' | 'bandwidth' | null;
      pauses: number;
    }[];
  }>;
  /** Receive a feed: its video shown in `target` (more elements with `attach`; none yet with
   * `null` or nothing), its audio played by the SDK. Rejects with `feed_gone` when the feed
   * is unpublished first, `timeout` after `timeoutMs`. With `adaptive` (default `true`), the
   * layer sent is no larger than the largest element on screen needs (where the page sets
   * their width or height) and no video is sent while none is on screen. */
  subscribe(
    feedId: string,
    target?: HTMLVideoElement | string | null,
    options?: { adaptive?: boolean },
  ): Promise<Subscription>;
  /** Stop receiving a feed; its elements are emptied. */
  unsubscribe(feedId: string): Promise<void>;
  /** This page's subscription to a feed, if any. */
  subscription(feedId: string): Subscription | null;
  /** Play the subscriptions' audio on this speaker (a `deviceId` of `WebRTCai.devices()`).
   * Rejects with `device_not_found`, or `media_error` where the browser has no `setSinkId`. */
  setSpeaker(deviceId: string): Promise<void>;
  /** Start audio the browser blocked (`audio-playback` with `allowed: false`): call it from a
   * click or key handler. Rejects with `media_error` where the browser still refuses. */
  startAudio(): Promise<void>;
  /** The largest message `send` takes to everyone, in bytes (a string's UTF-8); null until
   * the data channels are negotiated. */
  readonly maxMessageSize: number | null;
  /** Send a message on the data channels to everyone else, or to `to`. Resolves once it is
   * handed to the connection (after waiting while more than 1 MiB is buffered: the
   * back-pressure); rejects with `message_too_large`, `forbidden`, `invalid_data`,
   * `data_unavailable`, `connection_lost` or `not_joined`. */
  send(data: string | ArrayBuffer | ArrayBufferView | Blob, options?: SendOptions): Promise<void>;
  /** Record the session on the server: each published feed (and each published later) into
   * a WebM file of its own. Needs a key that allows recording and, with a token, its `record`
   * grant; everyone gets `recording-started`. Rejects with `forbidden`,
   * `recording_unavailable` or `recording_failed`. */
  startRecording(): Promise<{ startedAt: number }>;
  /** Stop recording; everyone gets `recording-stopped`. */
  stopRecording(): Promise<void>;
  leave(): Promise<void>;
  on<K extends keyof SessionEvents>(event: K, handler: (value: SessionEvents[K]) => void): () => void;
  off<K extends keyof SessionEvents>(event: K, handler: (value: SessionEvents[K]) => void): void;
}

export interface Client {
  join(sid: string, options?: JoinOptions): Promise<Session>;
}

export declare const WebRTCai: {
  init(options: InitOptions): Client;
  /** The cameras, microphones and speakers there are. */
  devices(): Promise<Device[]>;
};

export default WebRTCai;
