// The publish page: camera and microphone to /whip/NAME, with a preview, a codec choice,
// simulcast, status and a stats line. All media logic is in onair.js; this file only draws.
//
// ?stream=NAME (default live/demo), &autostart=1, &codec=h264|vp8|vp9|av1, &simulcast=1,
// &token=T (sent as Authorization: Bearer), &trickle=0 (candidates in the offer, no PATCH),
// &server=http://host:port (another onair server), &via=rtws (RTWebSocket: WebCodecs H.264 and
// Opus over the TC mapping, for networks that block WebRTC).
import { whipPublish } from './onair.js';
import { rtwsPublish } from './rtws-publish.js';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const server = (params.get('server') || '').replace(/\/+$/, '');
const NAME_RE = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** What the page is doing, for people and tests. */
const state = {
  page: 'publish',
  stream: params.get('stream') || 'live/demo',
  /** idle | starting | connecting | live | reconnecting | stopped | ended | error */
  status: 'idle',
  error: null,
  httpStatus: null,
  codec: params.get('codec') || '',
  simulcast: params.get('simulcast') === '1',
  /** whip | rtws */
  via: params.get('via') === 'rtws' ? 'rtws' : 'whip',
  resource: null,
  startedAt: null,
  liveAt: null,
  endReason: null,
  stats: null,
};
window.onairState = state;
window.onairSession = null;

let session = null;
let busy = false;
let statsTimer = null;

$('#stream').value = state.stream;
$('#codec').value = ['h264', 'vp8', 'vp9', 'av1'].includes(state.codec) ? state.codec : '';
$('#simulcast').checked = state.simulcast;
$('#via').value = state.via;
showLinks();
$('#via').addEventListener('change', () => {
  if (!session) {
    state.via = $('#via').value;
    showLinks();
  }
});

$('#stream').addEventListener('input', () => {
  if (!session) {
    state.stream = $('#stream').value.trim();
    showLinks();
  }
});
$('#publish-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  start();
});
$('#stop').addEventListener('click', () => stop());

if (params.get('autostart') === '1') start();

function setStatus(status, text) {
  state.status = status;
  const el = $('#status');
  el.dataset.state = status;
  el.textContent = text || status;
}

function showError(text) {
  state.error = text;
  $('#error').textContent = text || '';
  $('#error').hidden = !text;
}

function endpoint(kind, name) {
  return `${server || location.origin}/${kind}/${name.split('/').map(encodeURIComponent).join('/')}`;
}

/** A link to one of our pages with these parameters ('/' left as is: names are readable). */
function pageLink(page, query) {
  const q = new URLSearchParams(query);
  if (server) q.set('server', server);
  return `/${page}?${q.toString().replace(/%2F/gi, '/')}`;
}

function showLinks() {
  const name = state.stream;
  $('#stream-title').textContent = name;
  const watch = pageLink('watch.html', { stream: name, autoplay: '1' });
  $('#watch-link').href = watch;
  $('#watch-link').textContent = new URL(watch, location.href).href;
  $('#whep-url').textContent = endpoint('whep', name);
  $('#whip-url').textContent = endpoint('whip', name);
  $('#heading').textContent = state.via === 'rtws' ? 'Publish over RTWebSocket' : 'Publish over WHIP';
}

/** ws(s)://HOST/rtws/APP and KEY for stream APP/KEY. */
function rtwsTarget(name) {
  const [app, ...key] = name.split('/');
  // A publish token rides in the WebSocket URL's query (a browser's WebSocket sends no header).
  const token = params.get('token');
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  return [`${(server || location.origin).replace(/^http/, 'ws')}/rtws/${app}${query}`, key.join('/')];
}

function setControls(running) {
  $('#start').disabled = running;
  $('#stop').disabled = !running;
  for (const id of ['#stream', '#codec', '#simulcast', '#via']) $(id).disabled = running;
}

async function start() {
  if (session || busy) return;
  const name = $('#stream').value.trim();
  if (!NAME_RE.test(name)) {
    showError('Stream names are segments of A-Z a-z 0-9 . _ - joined by /');
    return;
  }
  busy = true;
  setControls(true);
  showError(null);
  Object.assign(state, {
    stream: name,
    codec: $('#codec').value,
    simulcast: $('#simulcast').checked,
    via: $('#via').value,
    httpStatus: null,
    resource: null,
    startedAt: performance.now(),
    liveAt: null,
    endReason: null,
    stats: null,
  });
  showLinks();
  rememberInUrl();
  setStatus('starting', 'opening camera…');
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 } },
      audio: true,
    });
  } catch (e) {
    fail(`Camera/microphone: ${e.message}`);
    return;
  }
  $('#preview').srcObject = media;
  $('#placeholder').hidden = true;
  setStatus('starting', 'offering…');
  try {
    session = state.via === 'rtws'
      ? await rtwsPublish(...rtwsTarget(name), media, { stopTracks: true })
      : await whipPublish(endpoint('whip', name), media, {
        codec: state.codec || undefined,
        simulcast: state.simulcast,
        token: params.get('token') || undefined,
        trickle: params.get('trickle') !== '0',
        stopTracks: true,
      });
  } catch (e) {
    media.getTracks().forEach((t) => t.stop());
    state.httpStatus = e.status ?? null;
    fail(e.message);
    return;
  }
  busy = false;
  window.onairSession = session;
  state.resource = session.resource;
  setStatus('connecting', 'connecting…');
  const s = session;
  s.on('state', ({ state: st }) => {
    if (s !== session) return;
    if (st === 'connected') {
      if (state.liveAt == null) state.liveAt = performance.now();
      setStatus('live', 'live');
    } else if (st === 'disconnected') {
      setStatus('reconnecting', 'connection interrupted…');
    }
  });
  s.on('error', ({ message }) => console.warn('onair:', message));
  s.on('ended', ({ reason }) => {
    if (s !== session) return;
    state.endReason = reason;
    finish(reason === 'stopped' ? 'stopped' : 'ended', reason === 'stopped' ? 'stopped' : `ended (${reason})`);
  });
  if (s.state === 'connected') {
    state.liveAt ??= performance.now();
    setStatus('live', 'live');
  }
  clearInterval(statsTimer);
  statsTimer = setInterval(updateStats, 1000);
}

function fail(message) {
  busy = false;
  finish('error', 'error');
  showError(message);
}

async function stop() {
  const s = session;
  if (!s) return;
  setStatus('stopped', 'stopping…');
  await s.stop(); // its `ended` event resets the page
}

function finish(status, text) {
  clearInterval(statsTimer);
  statsTimer = null;
  session = null;
  window.onairSession = null;
  const preview = $('#preview');
  preview.srcObject?.getTracks().forEach((t) => t.stop());
  preview.srcObject = null;
  $('#placeholder').hidden = false;
  setControls(false);
  setStatus(status, text);
}

function rememberInUrl() {
  const q = new URLSearchParams(location.search);
  q.set('stream', state.stream);
  if (state.codec) q.set('codec', state.codec);
  else q.delete('codec');
  if (state.simulcast) q.set('simulcast', '1');
  else q.delete('simulcast');
  if (state.via === 'rtws') q.set('via', 'rtws');
  else q.delete('via');
  history.replaceState(null, '', `?${q.toString().replace(/%2F/gi, '/')}`);
}

const fmt = (v, unit = '', digits = 0) => (v == null || Number.isNaN(v) ? '–' : `${Number(v).toFixed(digits)}${unit}`);

async function updateStats() {
  const s = session;
  if (!s) return;
  let r;
  try {
    r = await s.stats();
  } catch {
    return;
  }
  if (s !== session) return;
  if (s.rtws) {
    state.stats = r;
    $('#stats').textContent = `RTWebSocket · ${r.video} video frames (${r.keyframes} keyframes), ${r.audio} audio · `
      + `${r.dropped} dropped, ${r.skipped} skipped · ${fmt(r.queued_bytes / 1024, ' KiB', 0)} waiting`;
    return;
  }
  const c = r.connection || {};
  const video = r.tracks.find((t) => t.direction === 'out' && t.kind === 'video');
  const audio = r.tracks.find((t) => t.direction === 'out' && t.kind === 'audio');
  state.stats = {
    bitrate_kbps: c.bitrate_out_kbps ?? null,
    rtt_ms: c.rtt_ms ?? video?.rtt_ms ?? null,
    local_candidate_type: c.local_candidate_type ?? null,
    remote_candidate_type: c.remote_candidate_type ?? null,
    protocol: c.protocol ?? null,
    video: video ? { codec: video.codec, bitrate_kbps: video.bitrate_kbps, width: video.width, height: video.height, fps: video.fps, layers: video.layers?.length ?? 1 } : null,
    audio: audio ? { codec: audio.codec, bitrate_kbps: audio.bitrate_kbps } : null,
  };
  const lines = [
    `${fmt(c.bitrate_out_kbps, ' kbit/s')} out · RTT ${fmt(state.stats.rtt_ms, ' ms')} · ${c.local_candidate_type || '?'}→${c.remote_candidate_type || '?'} ${c.protocol || ''}`.trim(),
  ];
  if (video) {
    lines.push(`video ${video.codec || '?'} ${video.width || '?'}×${video.height || '?'} @ ${fmt(video.fps, ' fps')} · ${fmt(video.bitrate_kbps, ' kbit/s')}`
      + (video.layers ? ` · layers ${video.layers.map((l) => `${l.rid}:${l.height || 0}p`).join(' ')}` : ''));
  }
  if (audio) lines.push(`audio ${audio.codec || '?'} · ${fmt(audio.bitrate_kbps, ' kbit/s')}`);
  $('#stats').textContent = lines.join('\n');
}
