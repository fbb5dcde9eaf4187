// @ts-check
// The server's offers: every change to what the media connection carries (a publish, a
// subscribe, an ICE restart) comes as an offer from the server, which the page answers.
import { WebRTCaiError } from './errors.js';
import { encryptTransceiver } from './e2ee.js';

/** @typedef {import('./session.js').Session} Session */

/** @param {Session} session */
export async function applyOffer(session, msg) {
  for (const t of msg.transceivers) {
    if (t.role === 'publish' || t.role === 'subscribe') session._mids.set(t.mid, { feedId: t.feed_id, role: t.role, kind: t.kind });
    else session._mids.delete(t.mid);
  }
  await session.pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
  const transceivers = session.pc.getTransceivers();
  for (const t of msg.transceivers) {
    const tr = transceivers.find((x) => x.mid === t.mid);
    if (!tr || t.role === 'closed') continue;
    encryptTransceiver(session, tr, t);
    if (t.role === 'publish') {
      const pub = session._published.get(t.feed_id);
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
  const answer = await session.pc.createAnswer();
  // The server learns our ICE ufrag and certificate before any packet is sent.
  let result;
  try {
    result = await session._request({ type: 'answer', offer_id: msg.offer_id, sdp: answer.sdp });
  } catch (/** @type {any} */ e) {
    // A lost connection is recovered by the resume, which offers again; a refusal is final
    // for what this offer carried, so its publishes and subscribes fail with the reason.
    if (e.code !== 'connection_lost' && e.code !== 'timeout') {
      for (const t of msg.transceivers) {
        if (t.role === 'publish') session._published.get(t.feed_id)?.ready.reject(e);
        else session._subscribed.get(t.feed_id)?._ready.reject(e);
      }
      await session.pc.setRemoteDescription({ type: 'rollback' }).catch(() => {});
    }
    throw e;
  }
  await session.pc.setLocalDescription(answer);
  // The codec and the layers in one stream, as asked: a browser sends with the offer's
  // first codec unless the encoding names another.
  for (const t of msg.transceivers) {
    const pub = t.role === 'publish' && t.kind === 'video' && session._published.get(t.feed_id);
    const tr = (pub?.codec || pub?.svc) && transceivers.find((x) => x.mid === t.mid);
    if (!tr) continue;
    const params = tr.sender.getParameters();
    // `codec` and `scalabilityMode` are newer than TypeScript's DOM types.
    const enc = /** @type {any} */ (params.encodings?.[0]);
    if (!enc) continue;
    const codec = pub.codec && params.codecs?.find((c) => c.mimeType.toLowerCase() === `video/${pub.codec.toLowerCase()}`);
    if (codec) enc.codec = codec;
    if (pub.svc) enc.scalabilityMode = pub.svc;
    await tr.sender.setParameters(params).catch((e) => session._emit('error', { code: 'encoding_refused', message: e.message }));
  }
  for (const id of result.published) session._published.get(id)?.ready.resolve();
  for (const id of result.failed) {
    session._published.get(id)?.ready.reject(new WebRTCaiError('publish_failed', 'the browser refused to send this feed'));
  }
  for (const id of result.subscribed) session._subscribed.get(id)?._ready.resolve();
}
