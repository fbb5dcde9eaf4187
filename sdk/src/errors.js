// @ts-check
// The SDK's errors: one class with a stable code, and the names it gives the browser's own.

/** An error with a stable code (the server's codes, plus the SDK's own); `cause` holds the
 * browser's own error where there was one. */
export class WebRTCaiError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = 'WebRTCaiError';
    this.code = code;
  }
}

/** getUserMedia/getDisplayMedia failures by the DOMException's name, so a page can tell the
 * person what to do (allow the camera, plug one in, close the app that holds it) without
 * knowing browser error names. Anything else is `media_error`. */
export const MEDIA_ERRORS = {
  NotAllowedError: 'permission_denied',
  SecurityError: 'permission_denied',
  NotFoundError: 'device_not_found',
  OverconstrainedError: 'device_not_found',
  NotReadableError: 'device_in_use',
};

/** A promise settled from outside, that rejects with `timeout` after `ms`. */
export function deferred(ms, message) {
  let resolve, reject;
  const promise = new Promise((a, b) => {
    resolve = a;
    reject = b;
  });
  promise.catch(() => {});
  const timer = setTimeout(() => reject(new WebRTCaiError('timeout', message)), ms);
  const done = (fn) => (v) => {
    clearTimeout(timer);
    fn(v);
  };
  return { promise, resolve: done(resolve), reject: done(reject) };
}
