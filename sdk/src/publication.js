// @ts-check
// Publishing: the page's camera, microphone or screen as a feed, its mute, its devices, and
// the simulcast layers the server says someone receives.
import { WebRTCaiError, deferred } from './errors.js';
import { DEFAULT_VIDEO, capture, element, listDevices, show } from './media.js';

/** @typedef {import('./session.js').Session} Session */

/** @param {Session} session
 * @param {import('../webrtcai.js').PublishOptions} [options] */
export async function publish(session, { source = 'webcam', target, audio = true, video = true, simulcast = source === 'webcam', codec, svc } = {}) {
  // Where it is shown, muted; nowhere for a publish without a target (audio only, say).
  const el = target === undefined ? null : element(target);
  if (source !== 'webcam' && source !== 'screen') {
    throw new WebRTCaiError('invalid_source', "source must be 'webcam' or 'screen'");
  }
  if (source === 'webcam' && !audio && !video) {
    throw new WebRTCaiError('nothing_to_publish', 'publish needs audio or video');
  }
  if (session._left) throw new WebRTCaiError('not_joined', 'this session was left');
  if (session.e2ee && (codec === 'H264' || codec === 'AV1')) {
    throw new WebRTCaiError('invalid_options', `${codec} cannot be end-to-end encrypted here (its packetizer reads the frame); use VP8 or VP9`);
  }
  const stream = await capture(source, audio, video);
  if (el) show(el, stream);
  const tracks = {
    audio: stream.getAudioTracks()[0] || null,
    video: stream.getVideoTracks()[0] || null,
  };
  const ready = deferred(session._timeoutMs, `publishing did not complete within ${session._timeoutMs} ms`);
  let feedId = null;
  const request = session._request({
    type: 'publish', source, audio: !!tracks.audio, video: !!tracks.video, simulcast: !!(simulcast && !svc && tracks.video),
  });
  try {
    feedId = (await Promise.race([request, ready.promise])).feed_id;
    session._published.set(feedId, { source, stream, tracks, ready, target: el, codec, svc, constraints: { audio, video }, simulcast: !!(simulcast && !svc && tracks.video) });
    await ready.promise;
  } catch (e) {
    stream.getTracks().forEach((t) => t.stop());
    if (el?.srcObject === stream) el.srcObject = null;
    // Nothing is left half-published on the server, also when its reply is still to come.
    if (feedId === null) {
      request.then((r) => session._request({ type: 'unpublish', feed_id: r.feed_id }), () => {}).catch(() => {});
    } else if (session._published.get(feedId)?.ready === ready) {
      session._published.delete(feedId);
      session._request({ type: 'unpublish', feed_id: feedId }).catch(() => {});
    }
    throw e;
  }
  const muted = { audio: false, video: false };
  return {
    feedId,
    uid: session.uid,
    source,
    stream,
    muted,
    unpublish: () => session.unpublish(feedId),
    mute: (kind) => setMuted(session, feedId, kind, true, muted),
    unmute: (kind) => setMuted(session, feedId, kind, false, muted),
    setDevice: (deviceId) => setDevice(session, feedId, deviceId),
    get devices() {
      const id = (t) => (t && t.readyState === 'live' ? t.getSettings().deviceId ?? null : null);
      return { audio: id(tracks.audio), video: id(tracks.video) };
    },
  };
}

// Switch a webcam feed's camera or microphone: the new device's track replaces the old one
// on the same sender (no renegotiation: the others see the same feed go on), and in the
// preview. A muted track stays muted, on the new device.
/** @param {Session} session */
async function setDevice(session, feedId, deviceId) {
  const pub = session._published.get(feedId);
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
  pub.senders[kind] ??= session.pc.getSenders().find((s) => s.track === old);
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
/** @param {Session} session */
async function setMuted(session, feedId, kind, mute, muted) {
  if (kind !== 'audio' && kind !== 'video') {
    throw new WebRTCaiError('invalid_target', `mute takes 'audio' or 'video', not ${kind}`);
  }
  const pub = session._published.get(feedId);
  const track = pub?.tracks[kind];
  if (!track) throw new WebRTCaiError('no_such_feed', `feed ${feedId} publishes no ${kind}`);
  pub.senders ??= {};
  pub.senders[kind] ??= session.pc.getSenders().find((s) => s.track === track);
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
  await session._request({ type: 'mute', feed_id: feedId, kind, muted: mute });
  muted[kind] = mute;
}

/** @param {Session} session */
export async function unpublish(session, feedId) {
  const pub = session._published.get(feedId);
  await session._request({ type: 'unpublish', feed_id: feedId });
  session._published.delete(feedId);
  if (pub) {
    pub.ready.reject(new WebRTCaiError('publish_failed', `feed ${feedId} was unpublished before publishing completed`));
    pub.stream.getTracks().forEach((t) => t.stop());
    if (pub.target) pub.target.srcObject = null;
  }
}

// Dynacast: the server says which simulcast layers of a published video some subscriber
// receives; the encoder stops spending time and uplink on the others.
/** @param {Session} session */
export async function setLayers(session, feedId, active) {
  const track = session._published.get(feedId)?.tracks.video;
  // A muted video's sender has no track: it is found by the one remembered at the mute.
  const sender = session._published.get(feedId)?.senders?.video ?? (track && session.pc.getSenders().find((s) => s.track === track));
  if (!sender) return;
  const params = sender.getParameters();
  if (!params.encodings || params.encodings.length < 2) return;
  const pub = session._published.get(feedId);
  if (pub?.muted?.video) {
    // Muted: every encoding stays off; these come back on when it is unmuted.
    pub.activeBefore = params.encodings.map((e) => !e.rid || active.includes(e.rid));
    return;
  }
  for (const e of params.encodings) if (e.rid) e.active = active.includes(e.rid);
  await sender.setParameters(params);
}
