// @ts-check

/** @typedef {import('./session.js').Session} Session */

/** The heartbeat. A connection whose network went away without a reset (Wi-Fi gone, a NAT or
 * proxy that forgot it, a laptop lid closed and opened) stays "open" for minutes, and a page
 * cannot see the server's websocket pings (the browser answers them by itself). So the SDK
 * sends a `ping` request every PING_INTERVAL_MS and takes SILENCE_LIMIT_MS without any message
 * from the server for a lost connection: it reconnects and resumes as after a reset. The same
 * numbers as the server's (signalling/src/ws.rs), which drops a connection silent for 5 s; the
 * limit is two and a half intervals so that one late reply is not a loss, and it leaves most of
 * the server's 20 s resume window for the reconnect. */
const PING_INTERVAL_MS = 2000;
export const SILENCE_LIMIT_MS = 5000;

// Ping on `ws` until it is replaced, closed or the session ends; returns what its message
// handler calls for every message. The connection counts as lost once SILENCE_LIMIT_MS
// passed without a message while a ping of ours was waiting: a page whose timers were held
// back (a background tab) pinged late, and must not take its own lateness for the server's
// silence. Pings take ids from the requests' counter, so that a ping's reply is never taken
// for a request's (it matches nothing pending and is dropped), and have no timer of their own.
/** @param {Session} session */
export function heartbeat(session, ws) {
  clearTimeout(session._beatTimer);
  let heardAt = performance.now();
  let pingedAt = heardAt;
  const beat = () => {
    if (ws !== session._ws || session._left || ws.readyState !== WebSocket.OPEN) return;
    const now = performance.now();
    if (pingedAt > heardAt && now - heardAt >= SILENCE_LIMIT_MS) {
      silent(ws);
      return;
    }
    if (now - pingedAt >= PING_INTERVAL_MS) {
      pingedAt = now;
      try {
        ws.send(JSON.stringify({ type: 'ping', id: session._nextId++ }));
      } catch {
        // Closing: its close event ends the heartbeat.
      }
    }
    const due = pingedAt > heardAt ? Math.min(pingedAt + PING_INTERVAL_MS, heardAt + SILENCE_LIMIT_MS) : pingedAt + PING_INTERVAL_MS;
    session._beatTimer = setTimeout(beat, Math.max(0, due - now));
  };
  session._beatTimer = setTimeout(beat, PING_INTERVAL_MS);
  return () => {
    heardAt = performance.now();
  };
}

// A connection that fell silent is closed here and handled as if it had closed: a close
// on a dead network completes only when the browser gives up on it, much later.
function silent(ws) {
  const closed = ws.onclose;
  ws.onclose = null;
  ws.onmessage = null;
  ws.close();
  closed?.();
}
