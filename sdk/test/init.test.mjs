// The package's own tests, under node's test runner: what needs no browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebRTCai, WebRTCaiError } from '../webrtcai.js';

test('init needs a key or a token', () => {
  assert.throws(() => WebRTCai.init({}), (e) => e instanceof WebRTCaiError && e.code === 'invalid_credentials');
});

test('loaded from anywhere but the server (a bundle, here a file), init needs the url', () => {
  assert.throws(
    () => WebRTCai.init({ key: 'wk_test' }),
    (e) => e instanceof WebRTCaiError && e.code === 'invalid_options' && /needs `url`/.test(e.message),
  );
  const client = WebRTCai.init({ key: 'wk_test', url: 'wss://media.example.com/ws' });
  assert.equal(client.url, 'wss://media.example.com/ws');
});

test('devices() resolves to none where there are no media devices', async () => {
  assert.deepEqual(await WebRTCai.devices(), []);
});

test('e2ee without a passphrase, or where frames cannot be encrypted, rejects before connecting', async () => {
  const client = WebRTCai.init({ key: 'wk_test', url: 'ws://127.0.0.1:9/ws' });
  for (const e2ee of [{}, { passphrase: '' }, { passphrase: 42 }]) {
    await assert.rejects(client.join('s', { e2ee }), (e) => e instanceof WebRTCaiError && e.code === 'invalid_options' && /passphrase/.test(e.message));
  }
  // Node has WebCrypto but no RTCRtpSender, or one without the encoded streams the SDK needs.
  await assert.rejects(client.join('s', { e2ee: { passphrase: 'p' } }), (e) => e.code === 'invalid_options' && /createEncodedStreams/.test(e.message));
  globalThis.RTCRtpSender = class {};
  try {
    await assert.rejects(client.join('s', { e2ee: { passphrase: 'p' } }), (e) => e.code === 'invalid_options' && /createEncodedStreams/.test(e.message));
  } finally {
    delete globalThis.RTCRtpSender;
  }
});

test('iceServers that are not STUN or TURN servers, or an unknown policy, reject before connecting', async () => {
  const client = WebRTCai.init({ key: 'wk_test', url: 'ws://127.0.0.1:9/ws' });
  const bad = [
    { iceServers: 'turn:turn.example.com' },
    { iceServers: [{}] },
    { iceServers: [{ urls: [] }] },
    { iceServers: [{ urls: 'https://turn.example.com' }] },
    { iceServers: [{ urls: ['turn:a.example.com', 42] }] },
  ];
  for (const options of bad) {
    await assert.rejects(client.join('s', options), (e) => e instanceof WebRTCaiError && e.code === 'invalid_options' && /iceServers/.test(e.message), JSON.stringify(options));
  }
  await assert.rejects(client.join('s', { iceTransportPolicy: 'none' }), (e) => e.code === 'invalid_options' && /iceTransportPolicy/.test(e.message));
  // Valid options get as far as the websocket (nothing listens on port 9).
  await assert.rejects(
    client.join('s', { iceServers: [{ urls: ['turn:a.example.com:3478?transport=tcp', 'turns:a.example.com:443'], username: 'u', credential: 'p' }], iceTransportPolicy: 'relay' }),
    (e) => e.code !== 'invalid_options',
  );
});
