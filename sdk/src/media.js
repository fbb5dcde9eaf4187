// @ts-check
// The page's media: capture of camera, microphone and screen, the devices there are, and the
// elements that show a stream.
import { WebRTCaiError, MEDIA_ERRORS } from './errors.js';

/** What `video: true` asks of the camera: 720p, which the relay's congestion feedback lets
 * the browser send at full resolution when the link allows it. */
export const DEFAULT_VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 } };

export async function capture(source, audio, video) {
  if (!navigator.mediaDevices) {
    throw new WebRTCaiError('media_error', 'camera and screen need a secure page (https:// or localhost)');
  }
  try {
    if (source === 'screen') return await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    return await navigator.mediaDevices.getUserMedia({ video: video === true ? DEFAULT_VIDEO : video, audio });
  } catch (/** @type {any} */ e) {
    const code = MEDIA_ERRORS[e?.name] ?? 'media_error';
    throw new WebRTCaiError(code, `${source === 'screen' ? 'getDisplayMedia' : 'getUserMedia'} failed: ${e?.name}: ${e?.message}`, { cause: e });
  }
}

/** The browser's media devices as the SDK names them. Labels are empty until the page has
 * been allowed a camera or microphone (the browser's privacy rule). */
const DEVICE_KINDS = { videoinput: 'camera', audioinput: 'microphone', audiooutput: 'speaker' };

export async function listDevices() {
  if (!globalThis.navigator?.mediaDevices?.enumerateDevices) return [];
  const all = await navigator.mediaDevices.enumerateDevices();
  return all
    .filter((d) => DEVICE_KINDS[d.kind] && d.deviceId)
    .map((d) => ({ kind: DEVICE_KINDS[d.kind], deviceId: d.deviceId, label: d.label, groupId: d.groupId }));
}

export function element(target) {
  const el = typeof target === 'string' ? document.getElementById(target) : target;
  if (!el || typeof el !== 'object' || !('srcObject' in el)) {
    throw new WebRTCaiError('invalid_target', 'target must be a <video> element or its id');
  }
  return el;
}

/** Show `stream` in `el`, muted: a local preview must not echo, and a remote feed's audio is
 * played by the subscription's own audio element (once, however many elements show it). */
export function show(el, stream) {
  el.srcObject = stream;
  el.autoplay = true;
  el.playsInline = true;
  el.muted = true;
  const p = el.play();
  if (p && p.catch) p.catch(() => {});
}
