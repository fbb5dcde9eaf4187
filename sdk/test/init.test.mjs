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
