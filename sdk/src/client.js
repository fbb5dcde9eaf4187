// @ts-check
import { WebRTCaiError } from './errors.js';
import { Session } from './session.js';
import { connect } from './connection.js';
import { startEncryption, reportDecryptFailures } from './e2ee.js';

/** How long a request, a publish or a subscribe may take before it rejects with `timeout`,
 * unless `init({ timeoutMs })` says otherwise. Generous: on a working connection negotiation
 * takes well under a second; this bounds what a stalled server or network costs a page. */
const DEFAULT_TIMEOUT_MS = 15000;

// The websocket of the server this file was loaded from, where it was: `/sdk/webrtcai.js` on
// a WebRTC.ai server. Anywhere else (a bundle, a copy on another site) it says nothing of where
// the server is, and `init` needs `url`.
function defaultUrl() {
  const here = new URL(import.meta.url);
  if (!/^https?:$/.test(here.protocol) || here.pathname !== '/sdk/webrtcai.js') return null;
  const u = new URL('/ws', here);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}

export class Client {
  /** @param {import('../webrtcai.js').InitOptions} options */
  constructor({ key, token, url, timeoutMs } = {}) {
    if (!key && !token) throw new WebRTCaiError('invalid_credentials', 'init needs a key or a token');
    this.key = key;
    this.token = token;
    this.url = url || defaultUrl();
    if (!this.url) {
      throw new WebRTCaiError('invalid_options', 'init needs `url` (the server\'s websocket, e.g. wss://media.example.com/ws) where the SDK is not loaded from the server\'s /sdk/webrtcai.js (a bundle)');
    }
    this.timeoutMs = timeoutMs > 0 ? timeoutMs : DEFAULT_TIMEOUT_MS;
  }

  /** Join (and create if needed) the session `sid`. With `data` (the default) the data
   * channels open at once, so that `send` and the `data` event work from the start. */
  /** @param {string} sid
   * @param {import('../webrtcai.js').JoinOptions} [options] */
  async join(sid, { name, data = true, e2ee, iceServers, iceTransportPolicy } = {}) {
    const ice = iceOptions(iceServers, iceTransportPolicy);
    const encryption = e2ee ? await startEncryption(e2ee, sid) : null;
    const session = new Session(this, sid, name, data, encryption, ice);
    if (encryption) reportDecryptFailures(session);
    try {
      await connect(session, null);
    } catch (e) {
      encryption?.worker.terminate();
      throw e;
    }
    return session;
  }
}

/** The TURN servers and policy the media connection uses (checked here, so that a mistake is
 * an `invalid_options` rejection rather than the browser's exception later).
 * @param {RTCIceServer[] | undefined} iceServers
 * @param {RTCIceTransportPolicy | undefined} policy */
function iceOptions(iceServers = [], policy = 'all') {
  const isUrl = (/** @type {unknown} */ u) => typeof u === 'string' && /^(stun|stuns|turn|turns):/.test(u);
  const valid = Array.isArray(iceServers) && iceServers.every((s) =>
    s && (Array.isArray(s.urls) ? s.urls.length > 0 && s.urls.every(isUrl) : isUrl(s.urls)));
  if (!valid) {
    throw new WebRTCaiError('invalid_options', 'iceServers must be a list of { urls, username?, credential? } with stun:, turn: or turns: URLs');
  }
  if (policy !== 'all' && policy !== 'relay') {
    throw new WebRTCaiError('invalid_options', "iceTransportPolicy must be 'all' or 'relay'");
  }
  return { iceServers, iceTransportPolicy: policy };
}
