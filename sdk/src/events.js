// @ts-check
// What the server tells a page about the session: the join reply's snapshot of who and what is
// in it, and the events that follow, kept in the session's maps and told to the page.
import { WebRTCaiError } from './errors.js';
import { setLayers } from './publication.js';

/** @typedef {import('./session.js').Session} Session */

// The join reply lists who and what is in the session now. On a first join that fills the
// maps (no events: the page reads them); after a resume it is how the SDK learns what
// happened while its websocket was down, told as the events it missed, in the order the
// server would have sent them.
/** @param {Session} session */
export function reconcile(session, snapshot, resumed) {
  const participants = new Map(snapshot.participants.map((p) => [p.uid, { uid: p.uid, name: p.name, quality: p.quality ?? null }]));
  const feeds = new Map(snapshot.feeds.map((f) => [f.feed_id, feedInfo(f)]));
  if (!resumed) {
    participants.forEach((p, uid) => session.participants.set(uid, p));
    feeds.forEach((f, id) => session.feeds.set(id, f));
    return; // a recording already running is told by the event that follows the reply
  }
  const recording = snapshot.recording ?? null;
  if (recording && !session.recording) recordingStarted(session, recording);
  if (!recording && session.recording) recordingStopped(session, { by: null, reason: null });
  for (const [id, f] of [...session.feeds]) if (!feeds.has(id)) feedUnpublished(session, id, f.uid);
  for (const uid of [...session.participants.keys()]) if (!participants.has(uid)) participantLeft(session, uid);
  for (const [uid, p] of participants) {
    const known = session.participants.get(uid);
    if (!known) participantJoined(session, p);
    else if (p.quality && known.quality !== p.quality) remoteQuality(session, uid, p.quality);
  }
  for (const [id, f] of feeds) if (!session.feeds.has(id)) feedPublished(session, f);
}

/** A feed as the page sees it (FeedInfo), from the server's. */
function feedInfo(f) {
  return { feedId: f.feed_id, uid: f.uid, source: f.source, kinds: f.kinds, muted: f.muted ?? [] };
}

/** @param {Session} session */
export function onEvent(session, msg) {
  switch (msg.event) {
    case 'participant-joined':
      participantJoined(session, { uid: msg.uid, name: msg.name });
      break;
    case 'participant-left':
      participantLeft(session, msg.uid);
      break;
    case 'participant-reconnecting':
    case 'participant-reconnected': {
      const p = session.participants.get(msg.uid);
      if (!p) break;
      p.reconnecting = msg.event === 'participant-reconnecting';
      session._emit(msg.event, { uid: msg.uid });
      break;
    }
    case 'feed-published':
      feedPublished(session, feedInfo(msg));
      break;
    case 'feed-unpublished':
      feedUnpublished(session, msg.feed_id, msg.uid);
      break;
    case 'feed-paused':
      if (msg.reason === 'bandwidth') session._starved.add(msg.feed_id);
      session._emit('feed-paused', { feedId: msg.feed_id, reason: msg.reason });
      break;
    case 'connection-quality':
      remoteQuality(session, msg.uid, msg.quality);
      break;
    case 'feed-resumed':
      session._starved.delete(msg.feed_id);
      session._emit('feed-resumed', { feedId: msg.feed_id });
      break;
    case 'speaking':
      session._emit('speaking', { uid: msg.uid, speaking: msg.speaking });
      break;
    case 'active-speaker':
      session.activeSpeaker = msg.uid;
      session._emit('active-speaker', { uid: msg.uid });
      break;
    case 'data-refused':
      // The relay dropped what this page sent: it may not send data. Later sends reject.
      session._dataRefused = msg.reason;
      session._emit('error', { code: msg.code, message: msg.reason });
      break;
    case 'feed-muted':
    case 'feed-unmuted': {
      const feed = session.feeds.get(msg.feed_id);
      const on = msg.event === 'feed-muted';
      if (feed) feed.muted = on ? [...new Set([...feed.muted, msg.kind])] : feed.muted.filter((k) => k !== msg.kind);
      session._emit(msg.event, { feedId: msg.feed_id, uid: msg.uid, kind: msg.kind });
      break;
    }
    case 'recording-started':
      recordingStarted(session, msg);
      break;
    case 'recording-stopped':
      recordingStopped(session, msg);
      break;
    case 'feed-layers':
      setLayers(session, msg.feed_id, msg.active).catch((e) => console.error('feed-layers', e));
      break;
  }
}

/** @param {Session} session */
function recordingStarted(session, r) {
  session.recording = { by: r.by, startedAt: r.started_at };
  session._emit('recording-started', { ...session.recording });
}

/** @param {Session} session */
function recordingStopped(session, r) {
  session.recording = null;
  session._emit('recording-stopped', { by: r.by ?? null, reason: r.reason ?? null });
}

/** @param {Session} session */
function participantJoined(session, p) {
  const participant = { uid: p.uid, name: p.name, quality: p.quality ?? null, reconnecting: false };
  session.participants.set(p.uid, participant);
  session._emit('participant-joined', { ...participant });
}

/** @param {Session} session */
function remoteQuality(session, uid, quality) {
  const p = session.participants.get(uid);
  if (!p || p.quality === quality) return;
  p.quality = quality;
  session._emit('connection-quality', { uid, quality });
}

/** @param {Session} session */
function participantLeft(session, uid) {
  session.participants.delete(uid);
  session._emit('participant-left', { uid });
}

/** @param {Session} session */
function feedPublished(session, feed) {
  session.feeds.set(feed.feedId, feed);
  session._emit('feed-published', feed);
}

// The server has ended every subscription to the feed: a subscribe still waiting for it
// rejects, one that completed stops showing it.
/** @param {Session} session */
function feedUnpublished(session, feedId, uid) {
  const sub = session._subscribed.get(feedId);
  if (sub) {
    sub._ready.reject(new WebRTCaiError('feed_gone', `feed ${feedId} was unpublished`));
    sub._end();
    session._subscribed.delete(feedId);
  }
  session.feeds.delete(feedId);
  session._emit('feed-unpublished', { feedId, uid });
}
