// The room page: join form, self view, a tile per remote participant (and per screen share),
// controls and chat. All media logic is in onair.js; this file only draws.
import { Room } from './onair.js';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);

let room = null;
/** participant id → {el, video, stream, videoTrackId, audioTrackId} (source camera/microphone) */
const tiles = new Map();
/** screen track id → {el, video, participantId} */
const screenTiles = new Map();
let statsTimer = null;
let localScreen = null;

$('#join-room').value = params.get('room') || '';
$('#join-name').value = params.get('name') || localStorage.getItem('onair.name') || '';
$('#join-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  join($('#join-room').value.trim(), $('#join-name').value.trim());
});
if (params.get('autojoin') === '1' && params.get('room') && params.get('name')) {
  join(params.get('room'), params.get('name'));
}

function setStatus(state, text) {
  const el = $('#status');
  el.dataset.state = state;
  el.textContent = text || state;
}

async function join(roomName, name) {
  if (room) return;
  $('#join-error').hidden = true;
  $('#join-button').disabled = true;
  setStatus('connecting', 'connecting…');
  const r = new Room(params.get('url') || undefined, {
    room: roomName,
    name,
    autoSubscribe: params.get('auto_subscribe') !== '0',
    // `?relay=1`: media only through the server's TURN (what a client behind a strict NAT gets).
    iceTransportPolicy: params.get('relay') === '1' ? 'relay' : 'all',
    // `?mode=p2p`: a peer-to-peer room (media browser to browser; onair relays signalling and
    // gives STUN/TURN). The room's first member decides.
    mode: params.get('mode') || undefined,
    // `?token=…`: the access token when the server has keys (`onair token --room NAME`).
    token: params.get('token') || undefined,
  });
  room = r;
  window.onairRoom = r;
  wire(r);
  try {
    await r.join();
  } catch (e) {
    room = null;
    $('#join-button').disabled = false;
    $('#join-error').textContent = `Could not join: ${e.message}`;
    $('#join-error').hidden = false;
    setStatus('idle', 'not connected');
    return;
  }
  localStorage.setItem('onair.name', name);
  const keep = ['mode', 'relay'].filter((k) => params.get(k)).map((k) => `&${k}=${encodeURIComponent(params.get(k))}`).join('');
  history.replaceState(null, '', `?room=${encodeURIComponent(roomName)}&name=${encodeURIComponent(name)}${keep}`);
  $('#room-title').textContent = r.mode === 'p2p' ? `${r.roomName} (peer-to-peer)` : r.roomName;
  $('#self-name').textContent = `${name} (you)`;
  $('#join-view').hidden = true;
  $('#call-view').hidden = false;
  setStatus('connected', 'connected');
  for (const p of r.participants.values()) ensureTile(p.id, p.name);
  for (const t of r.tracks.values()) {
    if (t.subscribed) attachTrack(t);
    if (t.muted) showMuted(t, true);
  }
  await publish(r);
}

async function publish(r) {
  const wantAudio = params.get('audio') !== '0';
  const wantVideo = params.get('video') !== '0';
  const [mic, cam] = await Promise.allSettled([
    wantAudio ? r.publishMicrophone({ codec: params.get('audio_codec') || undefined, red: params.get('red') !== '0' }) : Promise.resolve(null),
    wantVideo ? r.publishCamera({
      simulcast: params.get('simulcast') !== '0',
      codec: params.get('codec') || undefined,
      scalabilityMode: params.get('svc') || undefined,
    }) : Promise.resolve(null),
  ]);
  if (mic.status === 'rejected') note(`Microphone: ${mic.reason.message}`);
  if (cam.status === 'rejected') note(`Camera: ${cam.reason.message}`);
  if (cam.value) {
    $('#self-video').srcObject = new MediaStream([cam.value.track]);
  }
  $('#mic').disabled = !mic.value;
  $('#camera').disabled = !cam.value;
}

function wire(r) {
  r.on('participant_joined', ({ participant }) => ensureTile(participant.id, participant.name));
  r.on('participant_left', ({ participantId }) => removeParticipant(participantId));
  r.on('track', (t) => attachTrack(t.info));
  r.on('track_unpublished', ({ trackId, track }) => detachTrack(trackId, track));
  r.on('track_unsubscribed', ({ trackId, track }) => detachTrack(trackId, track));
  r.on('track_muted', ({ track, muted }) => track && showMuted(track, muted));
  r.on('track_paused', ({ track, paused, reason }) => track && showPaused(track, paused, reason));
  r.on('active_speakers', ({ speakers }) => showSpeakers(speakers));
  r.on('connection_quality', ({ participantId, quality, self }) => {
    const el = self ? $('#self-tile') : tiles.get(participantId)?.el;
    if (el) showQuality(el, quality);
  });
  r.on('chat', ({ name, from, data }) => addChatLine(name, data, from));
  // Local screen share ended (browser UI or the button): drop the preview.
  r.on('local_track_unpublished', ({ source }) => source === 'screen' && endLocalScreen());
  r.on('error', ({ code, message }) => note(`${code}: ${message}`));
  r.on('local_track_muted', ({ source, muted, byServer }) => {
    if (byServer) note(muted ? `The room's operator muted your ${source}.` : `The room's operator lets your ${source} be heard again: unmute it when you want.`);
  });
  r.on('reconnecting', () => setStatus('reconnecting', 'reconnecting…'));
  r.on('reconnected', () => setStatus('connected', 'connected'));
  r.on('connection_state', ({ pc, state }) => {
    if (state === 'failed' || state === 'disconnected') setStatus('reconnecting', `${pc} ${state}`);
    else if (state === 'connected' && r.state === 'connected') setStatus('connected', 'connected');
  });
  r.on('disconnected', ({ reason }) => {
    if (reason !== 'left') note(`Disconnected: ${reason}`);
    endCall(reason);
  });
}

// ---------------------------------------------------------------- tiles

function ensureTile(participantId, name) {
  let tile = tiles.get(participantId);
  if (tile) return tile;
  const el = document.createElement('div');
  el.className = 'tile';
  el.dataset.participantId = participantId;
  el.dataset.name = name;
  el.dataset.source = 'camera';
  el.innerHTML = `<video autoplay playsinline></video>
    <div class="avatar"></div>
    <div class="paused-note" hidden></div>
    <div class="label"><span class="quality" title="connection quality"><i></i><i></i><i></i></span><span class="name"></span><span class="mute-indicator" title="microphone muted">mic off</span></div>
    <button class="stats-toggle" type="button" title="stats">i</button>
    <pre class="stats-overlay" hidden></pre>`;
  el.querySelector('.name').textContent = name;
  el.querySelector('.avatar').textContent = (name[0] || '?').toUpperCase();
  const known = room?.participants.get(participantId)?.quality;
  if (known) showQuality(el, known);
  tile = { el, video: el.querySelector('video'), videoTrack: null, audioTrack: null, videoTrackId: null, audioTrackId: null };
  wireStatsToggle(el);
  tiles.set(participantId, tile);
  $('#grid').append(el);
  layout();
  return tile;
}

function makeScreenTile(track) {
  const owner = room.participants.get(track.participant_id);
  const el = document.createElement('div');
  el.className = 'tile screen';
  el.dataset.participantId = track.participant_id;
  el.dataset.name = owner?.name || '';
  el.dataset.source = 'screen';
  el.innerHTML = `<video autoplay playsinline></video>
    <div class="paused-note" hidden></div>
    <div class="label"><span class="name"></span></div>
    <button class="stats-toggle" type="button" title="stats">i</button>
    <pre class="stats-overlay" hidden></pre>`;
  el.querySelector('.name').textContent = `${owner?.name || '?'} (screen)`;
  wireStatsToggle(el);
  const tile = { el, video: el.querySelector('video'), videoTrack: null, audioTrack: null, videoTrackId: null, audioTrackId: null, participantId: track.participant_id };
  $('#grid').append(el);
  layout();
  return tile;
}

function screenTileOf(participantId) {
  for (const t of screenTiles.values()) if (t.participantId === participantId) return t;
  return null;
}

function attachTrack(track) {
  if (!track?.mediaTrack) return;
  const isScreen = track.source === 'screen' || track.source === 'screen_audio';
  let tile;
  if (isScreen) {
    tile = screenTileOf(track.participant_id);
    if (!tile) {
      tile = makeScreenTile(track);
      screenTiles.set(track.id, tile);
    } else if (track.source === 'screen') {
      for (const [id, t] of screenTiles) if (t === tile) screenTiles.delete(id);
      screenTiles.set(track.id, tile);
    }
  } else {
    const p = room.participants.get(track.participant_id);
    if (!p) return;
    tile = ensureTile(p.id, p.name);
  }
  if (track.kind === 'video') {
    tile.videoTrack = track.mediaTrack;
    tile.videoTrackId = track.id;
    tile.video.dataset.trackId = track.id;
    tile.el.classList.toggle('video-off', !!track.muted);
    chooseLayer(tile, track);
  } else {
    tile.audioTrack = track.mediaTrack;
    tile.audioTrackId = track.id;
    tile.video.dataset.audioTrackId = track.id;
    tile.el.dataset.audioMuted = String(!!track.muted);
  }
  play(tile);
}

function detachTrack(trackId, track) {
  const candidates = [...tiles.values(), ...screenTiles.values()];
  for (const tile of candidates) {
    if (tile.videoTrackId === trackId) {
      tile.videoTrack = null;
      tile.videoTrackId = null;
      delete tile.video.dataset.trackId;
    } else if (tile.audioTrackId === trackId) {
      tile.audioTrack = null;
      tile.audioTrackId = null;
      delete tile.video.dataset.audioTrackId;
    } else {
      continue;
    }
    play(tile);
  }
  if (track?.source === 'screen' || screenTiles.has(trackId)) {
    const tile = screenTiles.get(trackId);
    if (tile) {
      tile.el.remove();
      screenTiles.delete(trackId);
      layout();
    }
  }
}

function play(tile) {
  const tracks = [tile.videoTrack, tile.audioTrack].filter(Boolean);
  const current = tile.video.srcObject ? tile.video.srcObject.getTracks() : [];
  if (tracks.length === current.length && tracks.every((t) => current.includes(t))) return;
  tile.video.srcObject = tracks.length ? new MediaStream(tracks) : null;
  tile.el.classList.toggle('no-video', !tile.videoTrack);
  if (tracks.length) {
    tile.video.play().catch((e) => {
      if (e.name === 'NotAllowedError') $('#unlock-audio').hidden = false;
    });
  }
}

$('#unlock-audio').addEventListener('click', () => {
  for (const t of [...tiles.values(), ...screenTiles.values()]) t.video.play().catch(() => {});
  $('#unlock-audio').hidden = true;
});

function showMuted(track, muted) {
  const tile = track.source === 'screen' ? screenTiles.get(track.id) : tiles.get(track.participant_id);
  if (!tile) return;
  if (track.kind === 'audio') tile.el.dataset.audioMuted = String(!!muted);
  else tile.el.classList.toggle('video-off', !!muted);
}

/** The server paused (or resumed) a video for this page: say why on its tile. */
/** Outlines the tiles of whoever speaks now; the loudest gets `data-speaking="loudest"`. */
function showSpeakers(speakers) {
  const els = [$('#self-tile'), ...[...tiles.values()].map((t) => t.el)];
  for (const el of els) delete el.dataset.speaking;
  speakers.forEach((s, i) => {
    const el = s.self ? $('#self-tile') : tiles.get(s.participantId)?.el;
    if (el) el.dataset.speaking = i === 0 ? 'loudest' : 'yes';
  });
}

/** The server's grade of a participant's network, as bars on its tile (and a word to hover). */
function showQuality(el, quality) {
  el.dataset.quality = quality;
  const q = el.querySelector('.quality');
  if (q) q.title = `connection: ${quality}`;
}

function showPaused(track, paused, reason) {
  const tile = track.source === 'screen' ? screenTiles.get(track.id) : tiles.get(track.participant_id);
  const note = tile?.el.querySelector('.paused-note');
  if (!note) return;
  note.textContent = reason === 'bandwidth'
    ? 'Video paused: your connection is too slow for it right now (audio continues)'
    : 'Video paused';
  note.hidden = !paused;
  tile.el.classList.toggle('video-paused', !!paused);
}

function removeParticipant(participantId) {
  tiles.get(participantId)?.el.remove();
  tiles.delete(participantId);
  for (const [id, t] of screenTiles) {
    if (t.participantId === participantId) {
      t.el.remove();
      screenTiles.delete(id);
    }
  }
  layout();
}

/** Ask for the layer that fits the tile: fewer pixels for small tiles. Simulcast and SVC
 * tracks both have layers (an SVC track's are only known to the server), and a cap on a
 * single-layer track changes nothing, so every video track gets one. */
function chooseLayer(tile, track) {
  if (track.kind !== 'video' || !room) return;
  const h = tile.el.clientHeight * (window.devicePixelRatio || 1);
  const want = h <= 200 ? 180 : h <= 400 ? 360 : null;
  if (tile.maxHeight === want) return;
  tile.maxHeight = want;
  // What each track was asked for, for tests and for anyone debugging layer choice.
  (window.onairLayerCaps ??= {})[track.id] = want;
  if (want == null) room.subscribe([track.id]);
  else room.setMaxHeight(track.id, want);
}

function layout() {
  const n = tiles.size + screenTiles.size + 1;
  const cols = Math.ceil(Math.sqrt(n));
  $('#grid').style.setProperty('--cols', String(cols));
}

let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const tile of [...tiles.values(), ...screenTiles.values()]) {
      const t = room?.tracks.get(tile.videoTrackId);
      if (t) chooseLayer(tile, t);
    }
  }, 500);
});

// ---------------------------------------------------------------- controls

$('#mic').addEventListener('click', () => {
  const mic = room?.localTracks.get('microphone');
  if (!mic) return;
  room.setMuted(mic, !mic.muted);
  $('#mic').textContent = mic.muted ? 'Unmute mic' : 'Mute mic';
  $('#mic').classList.toggle('off', mic.muted);
  $('#self-tile').dataset.audioMuted = String(mic.muted);
});

$('#camera').addEventListener('click', () => {
  const cam = room?.localTracks.get('camera');
  if (!cam) return;
  room.setMuted(cam, !cam.muted);
  $('#camera').textContent = cam.muted ? 'Camera on' : 'Camera off';
  $('#camera').classList.toggle('off', cam.muted);
  $('#self-tile').classList.toggle('video-off', cam.muted);
});

$('#screen').addEventListener('click', async () => {
  if (!room) return;
  const btn = $('#screen');
  if (room.localTracks.has('screen')) {
    await room.unpublish('screen').catch((e) => note(`Stop sharing: ${e.message}`));
    return;
  }
  btn.disabled = true;
  try {
    localScreen = await room.publishScreen();
    btn.textContent = 'Stop sharing';
    showLocalScreen(localScreen.track);
  } catch (e) {
    if (e.name !== 'NotAllowedError') note(`Share screen: ${e.message}`);
  } finally {
    btn.disabled = false;
  }
});

function showLocalScreen(track) {
  const el = document.createElement('div');
  el.className = 'selfview screen';
  el.id = 'self-screen';
  el.innerHTML = '<video autoplay playsinline muted></video><div class="label"><span class="name">Your screen</span></div>';
  el.querySelector('video').srcObject = new MediaStream([track]);
  $('#self-tile').after(el);
  layout();
}

function endLocalScreen() {
  $('#self-screen')?.remove();
  $('#screen').textContent = 'Share screen';
  localScreen = null;
}

$('#leave').addEventListener('click', () => room?.leave());

$('#stats').addEventListener('click', () => {
  const overlays = [...document.querySelectorAll('.stats-overlay')];
  const show = overlays.some((o) => o.hidden);
  for (const o of overlays) o.hidden = !show;
  $('#stats').classList.toggle('on', show);
  updateStatsLoop();
});

function wireStatsToggle(el) {
  el.querySelector('.stats-toggle').addEventListener('click', () => {
    const o = el.querySelector('.stats-overlay');
    o.hidden = !o.hidden;
    updateStatsLoop();
  });
}
wireStatsToggle($('#self-tile'));

function endCall(reason) {
  clearInterval(statsTimer);
  statsTimer = null;
  for (const id of [...tiles.keys()]) removeParticipant(id);
  endLocalScreen();
  $('#self-video').srcObject = null;
  $('#call-view').hidden = true;
  $('#join-view').hidden = false;
  $('#join-button').disabled = false;
  setStatus('idle', reason === 'left' ? 'left the room' : `disconnected (${reason})`);
  room = null;
}

// ---------------------------------------------------------------- stats overlay

function updateStatsLoop() {
  const anyShown = [...document.querySelectorAll('.stats-overlay')].some((o) => !o.hidden);
  if (anyShown && !statsTimer) {
    statsTimer = setInterval(updateStats, 1000);
    updateStats();
  } else if (!anyShown && statsTimer) {
    clearInterval(statsTimer);
    statsTimer = null;
  }
}

const fmt = (v, unit = '', digits = 0) => (v == null || Number.isNaN(v) ? '–' : `${Number(v).toFixed(digits)}${unit}`);

function connLine(c) {
  if (!c) return 'no connection';
  return `RTT ${fmt(c.rtt_ms, ' ms')} · ${c.local_candidate_type || '?'}→${c.remote_candidate_type || '?'} ${c.protocol || ''}`;
}

function trackLines(s) {
  if (!s) return [];
  if (s.kind === 'video') {
    return [
      `video ${s.width || '?'}×${s.height || '?'} @ ${fmt(s.fps, ' fps')} · ${fmt(s.bitrate_kbps, ' kbit/s')} ${s.codec || ''}`,
      `  loss ${fmt(s.loss_pct, ' %', 1)} · jitter ${fmt(s.jitter_ms, ' ms')}`,
    ];
  }
  return [`audio ${fmt(s.bitrate_kbps, ' kbit/s')} ${s.codec || ''} · loss ${fmt(s.loss_pct, ' %', 1)} · jitter ${fmt(s.jitter_ms, ' ms')}`];
}

async function updateStats() {
  const r = room;
  if (!r) return;
  let s;
  try {
    s = await r.stats();
  } catch {
    return;
  }
  if (r !== room) return;
  const byId = new Map(s.tracks.filter((t) => t.track_id).map((t) => [t.track_id, t]));
  const remoteTiles = [...tiles.values(), ...screenTiles.values()];
  for (const tile of remoteTiles) {
    const o = tile.el.querySelector('.stats-overlay');
    if (o.hidden) continue;
    o.textContent = [
      ...trackLines(byId.get(tile.videoTrackId)),
      ...trackLines(byId.get(tile.audioTrackId)),
      connLine(s.connections.subscriber),
    ].join('\n');
  }
  const self = $('#self-tile .stats-overlay');
  if (!self.hidden) {
    const out = s.tracks.filter((t) => t.direction === 'out');
    const lines = [];
    for (const t of out) {
      lines.push(...trackLines(t).map((l) => `${t.source || ''} ${l}`.trim()));
      if (t.layers) {
        lines.push(`  layers ${t.layers.map((l) => `${l.rid}:${l.height || 0}p ${fmt(l.bitrate_kbps, 'k')}`).join(' ')}`);
      }
    }
    lines.push(connLine(s.connections.publisher));
    self.textContent = lines.join('\n');
  }
}

// ---------------------------------------------------------------- chat

$('#chat-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('#chat-input');
  const text = input.value.trim();
  if (!text || !room) return;
  try {
    room.sendChat(text);
  } catch (e) {
    note(e.message);
    return;
  }
  addChatLine(room.name, text, room.participantId, true);
  input.value = '';
});

function addChatLine(name, text, from, mine = false) {
  const line = document.createElement('div');
  line.className = mine ? 'chat-line mine' : 'chat-line';
  if (from) line.dataset.from = from;
  const who = document.createElement('span');
  who.className = 'chat-name';
  who.textContent = name || from || '?';
  const what = document.createElement('span');
  what.className = 'chat-text';
  what.textContent = typeof text === 'string' ? text : JSON.stringify(text);
  line.append(who, what);
  const log = $('#chat-log');
  log.append(line);
  log.scrollTop = log.scrollHeight;
}

function note(text) {
  const line = document.createElement('div');
  line.className = 'chat-note';
  line.textContent = text;
  $('#chat-log').append(line);
}
