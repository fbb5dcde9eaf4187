// Join-time benchmark: websocket open → first remote video frame decoded in Chromium.
//
//   cargo build --release -p signalling
//   cd tests/browser && npm ci && cd ../..
//   unshare -n bash -c 'ip link set lo up && WEBRTCAI_BIN=target/release/webrtcai node benches/join_time.mjs 10'
//
// One page publishes its fake webcam; then, N times, a fresh page joins, subscribes to it and
// reports when its <video> presents the first frame (requestVideoFrameCallback), plus the
// milestones on the way.
import { startServer, launch, joinPage, publishWebcam } from '../tests/browser/harness.mjs';

const runs = Number(process.argv[2] || 10);
const server = await startServer();
const browser = await launch();
const results = [];
try {
  const publisher = await joinPage(browser.context, server, 'join-bench', 'publisher');
  await publishWebcam(publisher);
  for (let i = 0; i < runs; i++) {
    const page = await browser.context.newPage();
    await page.goto(`${server.base}/`);
    const r = await page.evaluate(async (key) => {
      const { WebRTCai } = await import('/sdk/webrtcai.js');
      const t0 = performance.now();
      const session = await WebRTCai.init({ key }).join('join-bench');
      const tJoined = performance.now();
      const feed = [...session.feeds.values()][0];
      const v = document.createElement('video');
      v.muted = true;
      document.body.append(v);
      const firstFrame = new Promise((resolve) => v.requestVideoFrameCallback(() => resolve(performance.now())));
      let tConnected = null;
      session.pc.addEventListener('connectionstatechange', () => {
        if (session.pc.connectionState === 'connected' && tConnected === null) tConnected = performance.now();
      });
      await session.subscribe(feed.feedId, v);
      const tSubscribed = performance.now();
      const tFrame = await firstFrame;
      await session.leave();
      return {
        joined: tJoined - t0,
        subscribed: tSubscribed - t0,
        connected: tConnected === null ? null : tConnected - t0,
        first_frame: tFrame - t0,
      };
    }, server.key);
    results.push(r);
    await page.close();
    console.log(`run ${i + 1}: ${JSON.stringify(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v && Math.round(v)])))}`);
  }
} finally {
  await browser.close();
  server.stop();
}
const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor(p * s.length))]);
};
const ff = results.map((r) => r.first_frame);
console.log(JSON.stringify({ runs, first_frame_ms: { median: q(ff, 0.5), p90: q(ff, 0.9), min: Math.round(Math.min(...ff)) }, connected_ms_median: q(results.map((r) => r.connected ?? NaN).filter((x) => !isNaN(x)), 0.5), joined_ms_median: q(results.map((r) => r.joined), 0.5) }));
