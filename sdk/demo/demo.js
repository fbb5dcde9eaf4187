// The demo app: uses only the public SDK API.
import { WebRTCai } from '/sdk/webrtcai.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// The key comes from the page's address (?key=…): the server prints a development key and
// this URL on first start.
const client = WebRTCai.init({ key: params.get('key') || 'missing-key' });
let session = null;

function tile(feedId, label) {
  const fig = document.createElement('figure');
  fig.id = `tile-${feedId}`;
  const video = document.createElement('video');
  video.id = `video-${feedId}`;
  const cap = document.createElement('figcaption');
  cap.textContent = label;
  fig.append(video, cap);
  $('grid').append(fig);
  return video;
}

async function show(feed) {
  const who = session.participants.get(feed.uid);
  const video = tile(feed.feedId, `${who?.name || feed.uid} · ${feed.source}`);
  try {
    await session.subscribe(feed.feedId, video);
  } catch (e) {
    $(`tile-${feed.feedId}`)?.remove();
    // A feed that went away before it arrived needs no message.
    if (e.code !== 'feed_gone') $('status').textContent = `cannot show ${feed.feedId} (${e.code}): ${e.message}`;
  }
}

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('join').disabled = true;
  $('status').textContent = 'joining…';
  try {
    session = await client.join($('room').value, { name: $('name').value || undefined });
  } catch (e) {
    $('status').textContent = `cannot join (${e.code}): ${e.message}`;
    $('join').disabled = false;
    return;
  }
  session.on('feed-published', (feed) => show(feed));
  session.on('feed-unpublished', ({ feedId }) => $(`tile-${feedId}`)?.remove());
  session.on('participant-joined', (p) => ($('status').textContent = `${p.name || p.uid} joined`));
  session.on('participant-left', (p) => ($('status').textContent = `${p.uid} left`));
  session.on('reconnecting', () => ($('status').textContent = 'reconnecting…'));
  session.on('reconnected', () => ($('status').textContent = 'connected'));
  session.on('disconnected', (d) => ($('status').textContent = `disconnected: ${d.reason}`));
  let camera = '';
  try {
    await session.publish({ source: 'webcam', target: 'me' });
  } catch (e) {
    // Without a camera (permission_denied, device_not_found, device_in_use…) the others can
    // still be watched.
    camera = ` without camera (${e.code})`;
  }
  for (const feed of session.feeds.values()) show(feed);
  $('status').textContent = `in ${session.sid} as ${session.uid}${camera}`;
  $('screen').disabled = false;
  $('leave').disabled = false;
});

$('screen').addEventListener('click', async () => {
  const video = tile('my-screen', 'my screen');
  video.muted = true;
  try {
    await session.publish({ source: 'screen', target: video });
  } catch (e) {
    $('tile-my-screen')?.remove();
    $('status').textContent = `cannot share the screen (${e.code}): ${e.message}`;
    return;
  }
  $('screen').disabled = true;
});

$('leave').addEventListener('click', async () => {
  await session.leave();
  location.reload();
});
