// Devices: WebRTCai.devices() lists Chromium's fake cameras, microphones and speakers; a
// publisher switches camera, then microphone, without renegotiation, and the subscriber goes on
// decoding the same feed; a plugged device fires `devices-changed`; the subscriptions' audio
// goes to the chosen speaker.
//
// Chromium's second fake camera (fake_device_1) delivers Y16 (depth) frames, which its encoder
// drops: replaceTrack to it stops the video also between two plain RTCPeerConnections. The
// third (fake_device_2, MJPEG) is a camera as a browser sees one, so the test uses that.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, joinPage, subscribe, expectPlaying, waitEvent, until } from './harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** What the subscriber received and decoded so far. */
const received = (page) =>
  page.evaluate(async () => {
    const c = { decoded: 0, audioPackets: 0 };
    (await window.session.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') c.decoded += s.framesDecoded;
      if (s.type === 'inbound-rtp' && s.kind === 'audio') c.audioPackets += s.packetsReceived;
    });
    return c;
  });

test('devices are listed, a feed switches camera and microphone, a plugged device is told', async () => {
  const server = await startServer();
  const browser = await launch({ args: ['--use-fake-device-for-media-stream=device-count=3'] });
  try {
    const a = await joinPage(browser.context, server, 'devices', 'alice');
    const b = await joinPage(browser.context, server, 'devices', 'bob');
    const devices = await a.evaluate(async () => (await import('/sdk/webrtcai.js')).WebRTCai.devices());
    const of = (kind) => devices.filter((d) => d.kind === kind);
    console.log(`devices: ${of('camera').length} cameras, ${of('microphone').length} microphones, ${of('speaker').length} speakers`);
    assert.equal(of('camera').length, 3);
    assert.ok(of('microphone').length >= 2 && of('speaker').length >= 2);
    assert.ok(of('camera').every((d) => d.label.startsWith('fake_device_')), 'labels once the camera is allowed');

    // No preview element: publish takes none.
    const feedId = await a.evaluate(async () => {
      window.offers = 0;
      const apply = window.session.pc.setRemoteDescription.bind(window.session.pc);
      window.session.pc.setRemoteDescription = (d) => ((window.offers += d.type === 'offer' ? 1 : 0), apply(d));
      window.pub = await window.session.publish({ source: 'webcam' });
      return window.pub.feedId;
    });
    await waitEvent(b, 'feed-published');
    await expectPlaying(b, await subscribe(b, feedId));
    const cam0 = await a.evaluate(() => window.pub.devices.video);
    assert.equal(cam0, of('camera')[0].deviceId);
    const offersBefore = await a.evaluate(() => window.offers);

    const cam2 = of('camera')[2].deviceId;
    const t0 = Date.now();
    await a.evaluate((id) => window.pub.setDevice(id), cam2);
    const switched = await received(b);
    assert.equal(await a.evaluate(() => window.pub.devices.video), cam2);
    assert.equal(await a.evaluate(() => window.pub.stream.getVideoTracks()[0].label), 'fake_device_2');
    const after = await until(() => received(b), (c) => c.decoded >= switched.decoded + 20, 10000);
    console.log(`camera switched: ${after.decoded - switched.decoded} frames decoded ${Date.now() - t0} ms after`);
    await sleep(2000);
    const later = await received(b);
    assert.ok(later.decoded > after.decoded + 20, `decoding goes on on the new camera: ${JSON.stringify([after, later])}`);

    const micBefore = await a.evaluate(() => window.pub.devices.audio);
    const other = of('microphone').find((d) => d.deviceId !== micBefore && d.deviceId !== 'default');
    await a.evaluate((id) => window.pub.setDevice(id), other.deviceId);
    assert.equal(await a.evaluate(() => window.pub.devices.audio), other.deviceId);
    const m0 = await received(b);
    await sleep(2000);
    const m1 = await received(b);
    assert.ok(m1.audioPackets > m0.audioPackets + 50, `audio goes on on the new microphone: ${JSON.stringify([m0, m1])}`);
    assert.equal(await a.evaluate(() => window.offers), offersBefore, 'no renegotiation');
    assert.equal(await a.evaluate(() => window.pub.stream.getTracks().filter((t) => t.readyState === 'live').length), 2, 'the old tracks are stopped');

    // A muted video switches camera and stays muted: nothing is sent until unmute.
    await a.evaluate(() => window.pub.mute('video'));
    await a.evaluate((id) => window.pub.setDevice(id), of('camera')[0].deviceId);
    assert.deepEqual(await a.evaluate(() => window.pub.muted), { audio: false, video: true });
    const sending = await a.evaluate(() => window.session.pc.getSenders().filter((s) => s.track?.kind === 'video').length);
    assert.equal(sending, 0, 'the muted sender has no track');
    const u0 = await received(b);
    await a.evaluate(() => window.pub.unmute('video'));
    await until(() => received(b), (c) => c.decoded >= u0.decoded + 10, 10000);

    const missing = await a.evaluate(() => window.pub.setDevice('no-such-device').then(() => null, (e) => e.code));
    assert.equal(missing, 'device_not_found');

    // A device plugged in or out: the browser fires devicechange (a fake device cannot be
    // unplugged, so the test fires it as the browser would); the session tells the page.
    await a.evaluate(() => {
      window.session.on('devices-changed', (v) => window.events.push({ ev: 'devices-changed', v }));
      navigator.mediaDevices.dispatchEvent(new Event('devicechange'));
    });
    const changed = await waitEvent(a, 'devices-changed');
    assert.equal(changed.devices.filter((d) => d.kind === 'camera').length, 3);

    // The speaker: every subscription's audio element (the SDK's own) plays on it.
    const speaker = of('speaker').find((d) => d.deviceId !== 'default');
    const sinks = await b.evaluate(async (id) => {
      await window.session.setSpeaker(id);
      const bad = await window.session.setSpeaker('no-such-speaker').then(() => null, (e) => e.code);
      return { bad, sinks: [...window.session.feeds.keys()].map((f) => window.session.subscription(f)?._audio?.sinkId) };
    }, speaker.deviceId);
    assert.equal(sinks.bad, 'device_not_found');
    assert.deepEqual(sinks.sinks, [speaker.deviceId]);
  } finally {
    await browser.close();
    server.stop();
  }
});
