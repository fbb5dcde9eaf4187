// WHIP (RFC 9725): a Chromium page that speaks only the RFC (an RTCPeerConnection, fetch, no
// SDK) publishes into a session with a bearer token; pages using the SDK see the encoder join
// and its feed published, and decode it; DELETE ends it. One encoder sends VP8 and one H.264
// and one VP8 under payload types of its own (the encoder's numbers, which the relay
// renumbers, as its extension ids). Requests
// the RFC says to refuse are refused with the right status.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, subscribe, waitEvent, expectPlaying, until } from './harness.mjs';

/** Publish the page's fake camera and microphone to `url` with `token`, preferring `codec`:
 * what any WHIP encoder does. Resolves to { status, location, offer, answer } once the media
 * connection is up (or to the refusal). */
function whipPublish(page, url, token, codec, renumber = null) {
  return page.evaluate(async ({ url, token, codec, renumber }) => {
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
    const pc = new RTCPeerConnection();
    window.whipPc = pc;
    for (const track of media.getTracks()) {
      const t = pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
      if (track.kind === 'video' && codec) {
        const codecs = RTCRtpSender.getCapabilities('video').codecs;
        t.setCodecPreferences([
          ...codecs.filter((c) => c.mimeType === `video/${codec}` && (codec !== 'H264' || /packetization-mode=1/.test(c.sdpFmtpLine ?? ''))),
          ...codecs.filter((c) => c.mimeType === 'video/rtx'),
        ]);
      }
    }
    const offer = await pc.createOffer();
    if (renumber) {
      // Payload types of the encoder's own choosing (as OBS's are): every use of each
      // number in the video section, rtx's apt included, takes the new one.
      const [head, video] = offer.sdp.split(/(?=m=video)/);
      let v = video;
      for (const [from, to] of Object.entries(renumber)) {
        v = v.replace(new RegExp(`(?<=[ :=])${from}(?=[ \r/])`, 'g'), String(to));
      }
      offer.sdp = head + v;
    }
    await pc.setLocalDescription(offer);
    const r = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
      body: offer.sdp,
    });
    const body = await r.text();
    if (r.status !== 201) return { status: r.status, body };
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    const start = Date.now();
    while (pc.connectionState !== 'connected' && Date.now() - start < 15000) await new Promise((x) => setTimeout(x, 100));
    return { status: r.status, location: r.headers.get('location'), type: r.headers.get('content-type'), offer: offer.sdp, answer: body, state: pc.connectionState };
  }, { url, token, codec, renumber });
}

/** Decoded video of `page`'s subscription element: codec and size. */
const decodedCodec = (page) => page.evaluate(async () => {
  const stats = [...(await window.session.getStats()).raw.values()];
  const inbound = stats.find((s) => s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0);
  return inbound && stats.find((s) => s.id === inbound.codecId)?.mimeType;
});

test('WHIP encoders publish VP8 and H.264 into a session, pages decode them, DELETE ends them', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const encoderPage = await browser.context.newPage();
    await encoderPage.goto(`${server.base}/healthz`);
    const viewer = await joinPage(browser.context, server, 'whip-1', 'viewer');
    const url = `${server.base}/whip/whip-1`;

    const encoders = [
      ['encoder-vp8', 'VP8', null],
      ['encoder-h264', 'H264', null],
      // VP8 as 120 and its RTX as 121: numbers the relay does not use, renumbered into its own.
      ['encoder-vp8-120', 'VP8', { 96: 120, 97: 121 }],
    ];
    for (const [uid, codec, renumber] of encoders) {
      const token = server.token('whip-1', uid, 'publish');
      const got = await whipPublish(encoderPage, url, token, codec, renumber);
      assert.equal(got.status, 201, got.body);
      assert.equal(got.type, 'application/sdp');
      assert.match(got.location, /^\/whip\/whip-1\/w-/);
      assert.equal(got.state, 'connected', `${codec} encoder's connection`);
      const offeredPt = new RegExp(`a=rtpmap:(\\d+) ${codec}/90000`).exec(got.offer)[1];
      const midId = /a=extmap:(\d+) urn:ietf:params:rtp-hdrext:sdes:mid/.exec(got.offer)?.[1];
      console.log(`${uid}: the encoder offered ${codec} as ${offeredPt} and its mid as extension ${midId}; answered ${/m=video \d+ \S+ ([\d ]+)/.exec(got.answer)[1]}`);
      assert.match(got.answer, new RegExp(`a=rtpmap:${offeredPt} ${codec}/90000`));
      assert.match(got.answer, /a=setup:passive/);

      const joined = await waitEvent(viewer, 'participant-joined', 10000);
      assert.equal(joined.uid, uid);
      const published = await waitEvent(viewer, 'feed-published', 10000);
      assert.equal(published.uid, uid);
      assert.deepEqual([...published.kinds].sort(), ['audio', 'video']);
      const video = await subscribe(viewer, published.feedId);
      const state = await expectPlaying(viewer, video, 20000);
      const mime = await until(() => decodedCodec(viewer), (m) => m === `video/${codec}`, 10000);
      console.log(`${uid}: the viewer decodes ${mime}, ${JSON.stringify(state)}`);

      // DELETE: the encoder leaves, its feed goes.
      const deleted = await encoderPage.evaluate(async ({ at, token }) => {
        const r = await fetch(at, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
        window.whipPc.close();
        window.whipPc.getSenders().forEach((s) => s.track?.stop());
        return r.status;
      }, { at: `${server.base}${got.location}`, token });
      assert.equal(deleted, 200);
      assert.equal((await waitEvent(viewer, 'feed-unpublished', 10000)).feedId, published.feedId);
      assert.equal((await waitEvent(viewer, 'participant-left', 10000)).uid, uid);
      await viewer.evaluate(() => { window.events = []; });
    }
  } finally {
    await browser.close();
    server.stop();
  }
});

test('WHIP refuses what RFC 9725 and the token say to refuse', async () => {
  const server = await startServer();
  try {
    const url = `${server.base}/whip/whip-2`;
    const post = (headers, body = 'v=0\r\n') => fetch(url, { method: 'POST', headers, body });
    const token = server.token('whip-2', 'enc', 'publish');
    const r1 = await post({ 'content-type': 'application/sdp' });
    assert.equal(r1.status, 401);
    assert.equal(r1.headers.get('www-authenticate'), 'Bearer');
    assert.equal((await post({ 'content-type': 'text/plain', authorization: `Bearer ${token}` })).status, 415);
    const bad = await post({ 'content-type': 'application/sdp', authorization: `Bearer ${token}` }, 'not sdp');
    assert.equal(bad.status, 400);
    console.log(`garbage offer: ${await bad.text()}`);
    const forged = await post({ 'content-type': 'application/sdp', authorization: `Bearer ${token}x` });
    assert.equal(forged.status, 401);
    const otherSession = await fetch(`${server.base}/whip/whip-3`, { method: 'POST', headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` }, body: 'v=0' });
    assert.equal(otherSession.status, 401, 'a token for another session');
    const viewerOnly = server.token('whip-2', 'viewer', 'subscribe');
    const forbidden = await post({ 'content-type': 'application/sdp', authorization: `Bearer ${viewerOnly}` }, 'v=0\r\n');
    assert.equal(forbidden.status, 403, await forbidden.text());
    const gone = await fetch(`${url}/w-nothing`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
    assert.equal(gone.status, 404);
    const patch = await fetch(`${url}/w-nothing`, { method: 'PATCH', headers: { 'content-type': 'application/trickle-ice-sdpfrag' }, body: 'a=end-of-candidates' });
    assert.equal(patch.status, 405);
    const preflight = await fetch(url, { method: 'OPTIONS', headers: { origin: 'https://encoder.example', 'access-control-request-method': 'POST' } });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-origin'), '*');
    assert.match(preflight.headers.get('access-control-allow-headers'), /authorization/);
  } finally {
    server.stop();
  }
});

/** Play feed `feedId` on `page` over WHEP, as any WHEP player: receive-only transceivers,
 * the offer posted with `token`, VP8, its RTX and opus renumbered to payload types of the
 * player's own choice (`free`, unused in the offer) so that the relay must write them.
 * Resolves to the outcome. */
function whepPlay(page, url, token) {
  return page.evaluate(async ({ url, token }) => {
    const pc = new RTCPeerConnection();
    window.whepPc = pc;
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    document.body.append(video);
    pc.ontrack = (ev) => { video.srcObject = ev.streams[0] ?? new MediaStream([ev.track]); };
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const offer = await pc.createOffer();
    const renumber = (section, pairs) => {
      let s = section;
      for (const [from, to] of pairs) s = s.replace(new RegExp(`(?<=[ :=])${from}(?=[ \\r/])`, 'g'), String(to));
      return s;
    };
    // Numbers no codec of the offer has.
    const used = new Set([...offer.sdp.matchAll(/a=rtpmap:(\d+)/g)].map((m) => Number(m[1])));
    const free = [];
    for (let pt = 35; free.length < 3 && pt < 128; pt++) if (!used.has(pt) && (pt < 64 || pt > 95)) free.push(pt);
    const [head, videoSection, audioSection] = offer.sdp.split(/(?=m=)/);
    offer.sdp = head + renumber(videoSection, [[96, free[0]], [97, free[1]]]) + renumber(audioSection, [[111, free[2]]]);
    await pc.setLocalDescription(offer);
    const r = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
      body: offer.sdp,
    });
    const body = await r.text();
    if (r.status !== 201) return { status: r.status, body };
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    return { status: r.status, location: r.headers.get('location'), offer: offer.sdp, answer: body, free };
  }, { url, token });
}

/** What the WHEP page receives: decoded video frames and size, audio packets, codecs. */
const whepStats = (page) => page.evaluate(async () => {
  const stats = [...(await window.whepPc.getStats()).values()];
  const video = stats.find((s) => s.type === 'inbound-rtp' && s.kind === 'video');
  const audio = stats.find((s) => s.type === 'inbound-rtp' && s.kind === 'audio');
  const codec = (s) => s && stats.find((c) => c.id === s.codecId);
  return {
    frames: video?.framesDecoded ?? 0,
    width: video?.frameWidth ?? 0,
    videoCodec: codec(video) && `${codec(video).mimeType}/${codec(video).payloadType}`,
    audioPackets: audio?.packetsReceived ?? 0,
    audioCodec: codec(audio) && `${codec(audio).mimeType}/${codec(audio).payloadType}`,
    state: window.whepPc.connectionState,
  };
});

test('a WHEP player plays a page\'s feed in its own payload types, and leaves when the feed goes', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const publisher = await joinPage(browser.context, server, 'whep-1', 'alice');
    const feedId = await publisher.evaluate(async () => {
      window.pub = await window.session.publish({ source: 'webcam' });
      return window.pub.feedId;
    });
    const playerPage = await browser.context.newPage();
    await playerPage.goto(`${server.base}/healthz`);
    const url = `${server.base}/whep/whep-1/${feedId}`;
    const got = await whepPlay(playerPage, url, server.token('whep-1', 'player', 'subscribe'));
    assert.equal(got.status, 201, got.body);
    assert.match(got.location, new RegExp(`^/whep/whep-1/${feedId}/w-`));
    const [vp8, rtx, opus] = got.free;
    console.log(`the player took VP8 as ${vp8}, its RTX as ${rtx}, opus as ${opus}`);
    assert.match(got.answer, new RegExp(`m=video \\d+ UDP/TLS/RTP/SAVPF ${vp8} ${rtx}\r\n`));
    assert.match(got.answer, /a=sendonly/);
    assert.equal((await waitEvent(publisher, 'participant-joined', 10000)).uid, 'player');
    const s = await until(() => whepStats(playerPage), (x) => x.frames > 20 && x.audioPackets > 50, 20000,
      () => whepStats(playerPage));
    console.log(`WHEP player: ${JSON.stringify(s)}`);
    assert.equal(s.videoCodec, `video/VP8/${vp8}`);
    assert.equal(s.audioCodec, `audio/opus/${opus}`);
    assert.ok(s.width >= 320, JSON.stringify(s));

    // Refusals: another session's token, no subscribe grant, a feed that is not there.
    const refused = async (u, token) => (await fetch(u, { method: 'POST', headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` }, body: got.offer })).status;
    assert.equal(await refused(url, server.token('whep-1', 'p2', 'publish')), 403);
    assert.equal(await refused(`${server.base}/whep/whep-1/f-none`, server.token('whep-1', 'p3', 'subscribe')), 404);
    assert.equal(await refused(`${server.base}/whep/whep-2/${feedId}`, server.token('whep-1', 'p4', 'subscribe')), 401);

    // The feed goes: the player leaves.
    await publisher.evaluate(() => window.pub.unpublish());
    assert.equal((await waitEvent(publisher, 'participant-left', 10000)).uid, 'player');
  } finally {
    await browser.close();
    server.stop();
  }
});
