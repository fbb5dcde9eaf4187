// @ts-check
// The session's connections: the websocket to the server (join, requests and their replies,
// reconnect and resume) and the media connection to its relay (ICE restarts, and a new one
// after moving to another server of a cluster).
import { WebRTCaiError, deferred } from './errors.js';
import { heartbeat } from './heartbeat.js';
import { reconcile, onEvent } from './events.js';
import { applyOffer } from './negotiation.js';
import { watchQuality } from './quality.js';
import { onDataChannel } from './data.js';
import { onTrack } from './subscription.js';

/** @typedef {import('./session.js').Session} Session */

const PROTOCOL_VERSION = 1;

/** @param {Session} session */
export function newPeerConnection(session) {
  session.pc = new RTCPeerConnection(/** @type {any} */ ({ ...session._ice, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require', encodedInsertableStreams: session.e2ee }));
  session.pc.ontrack = (ev) => onTrack(session, ev);
  session.pc.ondatachannel = (ev) => onDataChannel(session, ev.channel);
  session.pc.oniceconnectionstatechange = () => onIceState(session);
  session.pc.onconnectionstatechange = () => session._emit('connection-state', { state: session.pc.connectionState });
}

// Media recovers by itself: a failed (or long-disconnected) ICE connection asks the server
// for an ICE restart, which comes back as a new offer.
/** @param {Session} session */
function onIceState(session) {
  const state = session.pc.iceConnectionState;
  clearTimeout(session._iceTimer);
  if (state === 'failed') {
    restartIce(session);
  } else if (state === 'disconnected') {
    session._iceTimer = setTimeout(() => {
      if (session.pc.iceConnectionState === 'disconnected') restartIce(session);
    }, 2000);
  }
}

/** @param {Session} session */
export async function restartIce(session) {
  if (session._left || session._restarting) return;
  session._restarting = true;
  try {
    await session._request({ type: 'restart_ice' });
  } catch {
    // The websocket is down; the reconnect path restarts ICE if it is still needed.
  } finally {
    session._restarting = false;
  }
}

/** Connect (`resume`: again, as the participant its token names) and join; resolves with the
 * join reply.
 * @param {Session} session */
export async function connect(session, resume, url = session._url ?? session._client.url, placed = false) {
  const ws = new WebSocket(url);
  session._ws = ws;
  await new Promise((resolve, reject) => {
    // A network that drops packets without a word would leave the page waiting for the
    // system's own connect timeout (minutes): the request timeout bounds it.
    const timer = setTimeout(() => {
      ws.onopen = null;
      ws.onerror = null;
      ws.close();
      reject(new WebRTCaiError('connection_failed', `cannot reach ${url} within ${session._timeoutMs} ms`));
    }, session._timeoutMs);
    ws.onopen = () => {
      clearTimeout(timer);
      resolve(undefined);
    };
    ws.onerror = () => {
      clearTimeout(timer);
      reject(new WebRTCaiError('connection_failed', `cannot reach ${url}`));
    };
  });
  const heard = heartbeat(session, ws);
  ws.onmessage = (ev) => {
    heard();
    onMessage(session, ev.data);
  };
  // Until the join is answered a lost connection only fails the join (and what else waits on
  // this socket): whoever opened it decides what follows, the page or the reconnect loop.
  ws.onclose = () => rejectPending(session);
  const join = {
    type: 'join',
    v: PROTOCOL_VERSION,
    sid: session.sid,
    name: session._name ?? null,
    key: session._client.key ?? null,
    token: session._client.token ?? null,
    resume: resume ?? null,
    data: session._dataWanted,
    e2ee: session.e2ee,
    // Only when true: a server older than placement refuses fields it does not know.
    ...(placed ? { placed } : {}),
  };
  let snapshot;
  try {
    snapshot = await session._request(join);
  } catch (e) {
    // A refused or unanswered join leaves no connection behind (and no reconnect).
    clearTimeout(session._beatTimer);
    ws.onclose = null;
    ws.close();
    // In a cluster the session's participants of this region may share another node: the
    // server names it, and the join goes there (once: that node takes it).
    if (e instanceof WebRTCaiError && e.code === 'moved' && !placed) {
      const there = /** @type {{ url?: unknown } | undefined} */ (e.cause)?.url;
      if (typeof there === 'string') {
        try {
          return await connect(session, resume, there, true);
        } catch (e2) {
          // That node cannot be reached from here (a wrong public URL, a firewall): the
          // node reached takes the page after all.
          if (!(e2 instanceof WebRTCaiError && e2.code === 'connection_failed')) throw e2;
          return connect(session, resume, url, true);
        }
      }
    }
    throw e;
  }
  ws.onclose = () => onClose(session, ws);
  session.uid = snapshot.uid;
  session.activeSpeaker = snapshot.active_speaker ?? null;
  const can = snapshot.permissions ?? {};
  session.permissions = { publish: !!can.publish, subscribe: !!can.subscribe, publishData: !!can.publish_data, record: !!can.record };
  if (!resume) watchQuality(session);
  session._resume = snapshot.resume_token;
  // Joined through another server than before: the one before stopped, and this one has
  // other media servers behind it.
  // The server says so (`rejoined`); another URL than before says so too.
  const moved = !!snapshot.rejoined || (session._joinedUrl !== null && url !== session._joinedUrl);
  session._joinedUrl = url;
  session._url = url;
  session._servers = snapshot.servers ?? [];
  reconcile(session, snapshot, !!resume);
  if (moved) moveMedia(session);
  return snapshot;
}

// After moving to another server of the cluster: a new media connection to its relay, every
// feed this page sends published again (under the same id where the server keeps it), and
// every subscription whose feed is still there made again; the elements showing them
// stay and show the new tracks as they come.
/** @param {Session} session */
function moveMedia(session) {
  const old = session.pc;
  newPeerConnection(session);
  old.close();
  session._mids.clear();
  session._channels = { reliable: null, lossy: null };
  session._emit('connection-state', { state: session.pc.connectionState });
  for (const [feedId, pub] of [...session._published]) {
    pub.ready = deferred(session._timeoutMs, `publishing ${feedId} again did not complete within ${session._timeoutMs} ms`);
    pub.ready.promise.catch(() => {});
    const again = { type: 'publish', source: pub.source, audio: !!pub.tracks.audio, video: !!pub.tracks.video, simulcast: !!pub.simulcast, feed_id: feedId };
    session._request(again).then((r) => {
      if (r.feed_id === feedId) return;
      session._published.delete(feedId);
      session._published.set(r.feed_id, pub);
    }).catch((e) => session._emit('error', { code: e.code ?? 'publish_failed', message: `feed ${feedId} was not published again: ${e.message}` }));
  }
  for (const [feedId, sub] of [...session._subscribed]) {
    if (!session.feeds.has(feedId)) continue;
    sub._ready = deferred(session._timeoutMs, `subscribing to ${feedId} again did not complete within ${session._timeoutMs} ms`);
    sub._ready.promise.catch(() => {});
    session._request({ type: 'subscribe', feed_id: feedId })
      .catch((e) => session._emit('error', { code: e.code ?? 'connection_lost', message: `not subscribed to ${feedId} again: ${e.message}` }));
  }
}

// One request, one reply. Rejects at once when there is no open connection (a send on a
// closing websocket is silently dropped, and would wait for nothing), and with `timeout`
// when no reply comes in time.
/** @param {Session} session */
export function sendRequest(session, msg) {
  if (session._left) {
    return Promise.reject(new WebRTCaiError('not_joined', 'this session was left'));
  }
  if (!session._ws || session._ws.readyState !== WebSocket.OPEN) {
    return Promise.reject(new WebRTCaiError('connection_lost', 'not connected to the server (reconnecting)'));
  }
  const id = session._nextId++;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      session._pending.delete(id);
      reject(new WebRTCaiError('timeout', `no reply to ${msg.type} within ${session._timeoutMs} ms`));
    }, session._timeoutMs);
    const settle = (fn) => (v) => {
      clearTimeout(timer);
      fn(v);
    };
    session._pending.set(id, { resolve: settle(resolve), reject: settle(reject) });
    try {
      session._ws.send(JSON.stringify({ ...msg, id }));
    } catch (e) {
      session._pending.get(id)?.reject(new WebRTCaiError('connection_lost', String(e)));
      session._pending.delete(id);
    }
  });
}

/** @param {Session} session */
function rejectPending(session) {
  for (const p of session._pending.values()) p.reject(new WebRTCaiError('connection_lost', 'the connection to the server was lost'));
  session._pending.clear();
}

/** @param {Session} session */
function onMessage(session, text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    return;
  }
  if (msg.type === 'reply') {
    const p = session._pending.get(msg.id);
    if (!p) return;
    session._pending.delete(msg.id);
    if (msg.error) p.reject(new WebRTCaiError(msg.error.code, msg.error.reason, msg.error.url ? { cause: { url: msg.error.url } } : undefined));
    else p.resolve(msg.ok);
  } else if (msg.type === 'offer') {
    session._offers = session._offers.then(() => applyOffer(session, msg)).catch((e) => console.error('offer', e));
  } else if (msg.type === 'event' && msg.event === 'server-draining') {
    serverDraining(session, msg);
  } else if (msg.type === 'event') {
    onEvent(session, msg);
  }
}

// The server is about to stop. In a cluster the page moves to another node now, as the
// reconnect after a lost connection does (the node there takes it back from its resume token,
// and media moves with it); alone, the server restarts and the page reconnects once it is back.
/** @param {Session} session
 * @param {{ servers?: unknown }} msg */
function serverDraining(session, msg) {
  const servers = Array.isArray(msg.servers) ? msg.servers.filter((s) => typeof s === 'string') : [];
  session._emit('server-draining', { moving: servers.length > 0 });
  if (!servers.length || session._left) return;
  session._servers = servers;
  session._url = servers[0];
  // onClose goes on from here: `reconnecting`, then the join on the other node.
  session._ws?.close(1000, 'moving to another server');
}

/** @param {Session} session */
function onClose(session, ws) {
  if (ws !== session._ws || session._left) return;
  clearTimeout(session._beatTimer);
  rejectPending(session);
  // A leave under way goes ahead without the server (which ends the participant after its
  // resume window); there is nothing to reconnect for.
  if (session._leaving) return;
  session._emit('reconnecting', { attempt: session._attempt + 1 });
  reconnect(session);
}

/** @param {Session} session */
async function reconnect(session) {
  while (!session._left) {
    session._attempt += 1;
    const base = Math.min(5000, 250 * 2 ** (session._attempt - 1));
    await new Promise((r) => setTimeout(r, base / 2 + Math.random() * base / 2));
    try {
      await connect(session, session._resume);
      session._attempt = 0;
      // A view reported while the connection was down is reported again.
      for (const sub of session._subscribed.values()) sub._view?.report();
      session._emit('reconnected', {});
      const ice = session.pc.iceConnectionState;
      if (ice === 'failed' || ice === 'disconnected') restartIce(session);
      return;
    } catch (e) {
      // The server cannot be reached (it stopped, or its machine did): go on with another
      // of the cluster (they take turns), which takes the participant back from the resume
      // token.
      if (e instanceof WebRTCaiError && e.code === 'connection_failed' && session._servers.length) {
        session._url = session._servers[(session._attempt - 1) % session._servers.length];
      }
      if (e instanceof WebRTCaiError && e.code === 'resume_failed') {
        session._left = true;
        session._abandon('connection_lost', e.message);
        session._emit('disconnected', { reason: e.message });
        return;
      }
      if (session._attempt >= 12) {
        session._left = true;
        session._abandon('connection_lost', 'the server could not be reached');
        session._emit('disconnected', { reason: 'the server could not be reached' });
        return;
      }
    }
  }
}
