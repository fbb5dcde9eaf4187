// The demo app: a conference page written only against the public SDK API.
import { WebRTCai } from '/sdk/webrtcai.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// The key comes from the page's address (?key=…): the server prints a development key and
// this URL on first start.
const client = WebRTCai.init({ key: params.get('key') || 'missing-key' });
let session = null;
let camera = null; // the webcam publication
let screen = null; // the screen publication

const status = (text) => ($('status').textContent = text);
const nameOf = (uid) => (uid === session.uid ? 'me' : session.participants.get(uid)?.name || uid);

// A tile per feed: its video, who it is, muted badges and a connection-quality dot.
function tile(feedId, uid, label) {
  const fig = document.createElement('figure');
  fig.className = 'tile';
  fig.id = `tile-${feedId}`;
  fig.dataset.uid = uid;
  const video = document.createElement('video');
  video.id = `video-${feedId}`;
  video.muted = true;
  video.playsInline = true;
  const cap = document.createElement('figcaption');
  cap.innerHTML = '<span class="name"></span><span class="badge mic">mic off</span><span class="badge cam">camera off</span><span class="q"></span>';
  cap.querySelector('.name').textContent = label;
  fig.append(video, cap);
  $('grid').append(fig);
  return fig;
}

function showMuted(fig, muted) {
  fig.classList.toggle('audio-muted', muted.includes('audio'));
  fig.classList.toggle('video-muted', muted.includes('video'));
}

function showQuality(uid, quality) {
  const tiles = uid === session.uid ? [$('tile-me'), $('quality')] : [...document.querySelectorAll(`.tile[data-uid="${CSS.escape(uid)}"]`)];
  for (const t of tiles) {
    const dot = t.classList.contains('q') ? t : t.querySelector('.q');
    if (!dot) continue;
    dot.className = `q${quality ? ` q-${quality}` : ''}`;
    dot.title = `connection: ${quality ?? 'not rated yet'}`;
  }
}

function showSpeaker() {
  for (const t of document.querySelectorAll('.tile')) t.classList.toggle('active', !!session.activeSpeaker && t.dataset.uid === session.activeSpeaker);
}

async function show(feed) {
  const fig = tile(feed.feedId, feed.uid, `${nameOf(feed.uid)} · ${feed.source}`);
  showMuted(fig, feed.muted);
  showQuality(feed.uid, session.participants.get(feed.uid)?.quality ?? null);
  showSpeaker();
  try {
    await session.subscribe(feed.feedId, fig.querySelector('video'));
  } catch (e) {
    fig.remove();
    // A feed that went away before it arrived needs no message.
    if (e.code !== 'feed_gone') status(`cannot show ${feed.feedId} (${e.code}): ${e.message}`);
  }
}

function say(from, text) {
  const li = document.createElement('li');
  const who = document.createElement('b');
  who.textContent = `${nameOf(from)}: `;
  li.append(who, text);
  $('messages').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

// The device pickers, filled from the devices there are (labelled once the camera is allowed).
async function listDevices() {
  const devices = await WebRTCai.devices();
  const fill = (select, kind, current) => {
    select.replaceChildren(
      ...devices.filter((d) => d.kind === kind).map((d, i) => {
        const o = document.createElement('option');
        o.value = d.deviceId;
        o.textContent = d.label || `${kind} ${i + 1}`;
        o.selected = d.deviceId === current;
        return o;
      }),
    );
    select.disabled = select.options.length < 2 && kind !== 'speaker';
  };
  fill($('camera-select'), 'camera', camera?.devices.video);
  fill($('mic-select'), 'microphone', camera?.devices.audio);
  fill($('speaker-select'), 'speaker', $('speaker-select').value);
  $('speaker-select').disabled = $('speaker-select').options.length === 0;
}

function listen() {
  session.on('feed-published', (feed) => show(feed));
  session.on('feed-unpublished', ({ feedId }) => $(`tile-${feedId}`)?.remove());
  for (const ev of ['feed-muted', 'feed-unmuted']) {
    session.on(ev, ({ feedId }) => {
      const fig = $(`tile-${feedId}`);
      if (fig) showMuted(fig, session.feeds.get(feedId)?.muted ?? []);
    });
  }
  session.on('participant-joined', (p) => status(`${p.name || p.uid} joined`));
  session.on('participant-left', (p) => status(`${p.uid} left`));
  session.on('speaking', ({ uid, speaking }) => {
    for (const t of document.querySelectorAll(`.tile[data-uid="${CSS.escape(uid)}"]`)) t.classList.toggle('speaking', speaking);
  });
  session.on('active-speaker', showSpeaker);
  session.on('connection-quality', ({ uid, quality }) => showQuality(uid, quality));
  session.on('data', ({ from, data }) => {
    try {
      const m = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
      if (m.type === 'chat' && typeof m.text === 'string') say(from, m.text);
    } catch {
      // Not a chat message of this app.
    }
  });
  session.on('recording-started', () => {
    $('rec').hidden = false;
    $('record').textContent = 'Stop recording';
    $('record').classList.add('on');
  });
  session.on('recording-stopped', ({ reason }) => {
    $('rec').hidden = true;
    $('record').textContent = 'Record';
    $('record').classList.remove('on');
    if (reason) status(`recording stopped: ${reason}`);
  });
  session.on('audio-playback', ({ allowed }) => ($('start-audio').hidden = allowed));
  session.on('devices-changed', () => listDevices());
  session.on('reconnecting', () => status('reconnecting…'));
  session.on('reconnected', () => status('connected'));
  session.on('disconnected', (d) => status(`disconnected: ${d.reason}`));
  session.on('error', (e) => status(`${e.code}: ${e.message}`));
}

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('join').disabled = true;
  status('joining…');
  const passphrase = $('passphrase').value;
  try {
    session = await client.join($('room').value, {
      name: $('name').value || undefined,
      e2ee: passphrase ? { passphrase } : undefined,
    });
  } catch (e) {
    status(`cannot join (${e.code}): ${e.message}`);
    $('join').disabled = false;
    return;
  }
  $('tile-me').dataset.uid = session.uid;
  listen();
  let note = '';
  try {
    camera = await session.publish({ source: 'webcam', target: 'me' });
    $('mic').disabled = false;
    $('camera').disabled = false;
  } catch (e) {
    // Without a camera (permission_denied, device_not_found, device_in_use…) the others can
    // still be watched.
    note = ` without camera (${e.code})`;
  }
  for (const feed of session.feeds.values()) show(feed);
  for (const p of session.participants.values()) if (p.quality) showQuality(p.uid, p.quality);
  if (session.recording) $('rec').hidden = false;
  status(`in ${session.sid} as ${session.uid}${note}${session.e2ee ? ', end-to-end encrypted' : ''}`);
  $('screen').disabled = false;
  $('leave').disabled = false;
  $('record').hidden = !session.permissions.record;
  $('chat-input').disabled = !session.permissions.publishData;
  $('send').disabled = !session.permissions.publishData;
  await listDevices();
});

$('mic').addEventListener('click', async () => {
  const muted = !camera.muted.audio;
  await (muted ? camera.mute('audio') : camera.unmute('audio'));
  $('mic').textContent = muted ? 'Unmute' : 'Mute';
  $('mic').classList.toggle('on', muted);
  $('tile-me').classList.toggle('audio-muted', muted);
});

$('camera').addEventListener('click', async () => {
  const muted = !camera.muted.video;
  await (muted ? camera.mute('video') : camera.unmute('video'));
  $('camera').textContent = muted ? 'Start video' : 'Stop video';
  $('camera').classList.toggle('on', muted);
  $('tile-me').classList.toggle('video-muted', muted);
});

for (const [select, apply] of [
  ['camera-select', (id) => camera?.setDevice(id)],
  ['mic-select', (id) => camera?.setDevice(id)],
  ['speaker-select', (id) => session.setSpeaker(id)],
]) {
  $(select).addEventListener('change', async (ev) => {
    try {
      await apply(ev.target.value);
    } catch (e) {
      status(`cannot switch (${e.code}): ${e.message}`);
    }
  });
}

$('screen').addEventListener('click', async () => {
  if (screen) {
    await screen.unpublish();
    $('tile-my-screen')?.remove();
    screen = null;
    $('screen').textContent = 'Share screen';
    $('screen').classList.remove('on');
    return;
  }
  const fig = tile('my-screen', session.uid, 'my screen');
  try {
    screen = await session.publish({ source: 'screen', target: fig.querySelector('video') });
  } catch (e) {
    fig.remove();
    status(`cannot share the screen (${e.code}): ${e.message}`);
    return;
  }
  $('screen').textContent = 'Stop sharing';
  $('screen').classList.add('on');
});

$('record').addEventListener('click', async () => {
  try {
    await (session.recording ? session.stopRecording() : session.startRecording());
  } catch (e) {
    status(`cannot record (${e.code}): ${e.message}`);
  }
});

$('start-audio').addEventListener('click', () => session.startAudio().catch((e) => status(`${e.code}: ${e.message}`)));

$('chat-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const text = $('chat-input').value.trim();
  if (!text) return;
  $('chat-input').value = '';
  try {
    await session.send(JSON.stringify({ type: 'chat', text }));
    say(session.uid, text);
  } catch (e) {
    status(`not sent (${e.code}): ${e.message}`);
  }
});

$('leave').addEventListener('click', async () => {
  await session.leave();
  location.reload();
});
