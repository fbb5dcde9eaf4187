// @ts-check
// Connection quality and statistics: the page's own link rated as the relay rates the others,
// and the typed summary of `session.getStats()`.
import { WebRTCaiError } from './errors.js';
import { SILENCE_LIMIT_MS } from './heartbeat.js';

/** @typedef {import('./session.js').Session} Session */

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

// The local connection quality, rated every QUALITY_INTERVAL_MS from this page's own
// statistics by the rule the relay rates the others with (see `rateLink`).
/** @param {Session} session */
export function watchQuality(session) {
  clearInterval(session._qualityTimer);
  session._qualityTimer = setInterval(() => {
    if (session._left) {
      clearInterval(session._qualityTimer);
      return;
    }
    sample(session).catch(() => {});
  }, QUALITY_INTERVAL_MS);
}

/** @param {Session} session */
async function sample(session) {
  const report = await session.pc.getStats();
  const now = performance.now();
  const link = linkStats(report, session._linkPrev);
  session._linkPrev = link.totals;
  if (link.loss !== null) session._loss = session._loss === null ? link.loss : session._loss + LOSS_SMOOTHING * (link.loss - session._loss);
  const state = session.pc.connectionState;
  const lost = state === 'disconnected' || state === 'failed' || (link.silentFor !== null && link.silentFor >= SILENCE_LIMIT_MS);
  const rating = lost ? 'lost' : rateLink(link.rttMs, session._loss ?? 0, session._starved.size > 0);
  session._rttMs = link.rttMs;
  if (!session._statsPrev || now - session._statsPrev.at >= 1000) session._statsPrev = { at: now, report };
  setLocalQuality(session, rating, now);
  return report;
}

// A worse rating shows at once, a better one once it held QUALITY_IMPROVE_MS (at its worst
// over the wait), as the relay does for the others.
/** @param {Session} session */
function setLocalQuality(session, rating, now) {
  const old = session.connectionQuality;
  if (rating === old) {
    session._better = null;
    return;
  }
  if (old !== null && QUALITY_ORDER.indexOf(rating) > QUALITY_ORDER.indexOf(old)) {
    const held = session._better && QUALITY_ORDER.indexOf(session._better.rating) < QUALITY_ORDER.indexOf(rating) ? session._better.rating : rating;
    const since = session._better?.since ?? now;
    if (now - since < QUALITY_IMPROVE_MS) {
      session._better = { rating: held, since };
      return;
    }
    rating = held;
  }
  session._better = null;
  session.connectionQuality = rating;
  session._emit('connection-quality', { uid: session.uid, quality: rating });
}

/** @param {Session} session */
export async function getStats(session) {
  if (session._left) throw new WebRTCaiError('not_joined', 'this session was left');
  const prev = session._statsPrev;
  const [report, layers] = await Promise.all([
    sample(session),
    session.quality().then((q) => q.subscriptions, () => []),
  ]);
  return summarize(report, prev, performance.now(), session._mids, layers, {
    rttMs: session._rttMs ?? null,
    quality: session.connectionQuality,
  });
}

/** @param {Session} session */
export async function downlinkReport(session) {
  const q = await session._request({ type: 'quality' });
  return {
    estimateBps: q.estimate_bps,
    subscriptions: q.subscriptions.map((s) => ({
      feedId: s.feed_id, layers: s.layers, temporalLayers: s.temporal_layers ?? 1,
      target: s.target, current: s.current,
      switches: s.switches, paused: s.paused, pauses: s.pauses,
    })),
  };
}
