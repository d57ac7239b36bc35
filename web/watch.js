// The watch page: plays /whep/NAME in a <video>, with status, a stats line and an unmute button.
// Opened before the stream is live it asks again every 2 s; when the stream ends it goes back to
// waiting for it. All media logic is in onair.js; this file only draws.
//
// ?stream=NAME (default live/demo), &autoplay=1, &muted=0 (start unmuted where the browser lets
// it), &token=T (Authorization: Bearer), &trickle=0 (candidates in the offer, no PATCH),
// &server=http://host:port (another onair server).
import { whepPlay } from './onair.js';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const server = (params.get('server') || '').replace(/\/+$/, '');
const NAME_RE = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;
const RETRY_NOT_LIVE_MS = 2000;
const RETRY_ERROR_MS = 5000;

/** What the page is doing, for people and tests. */
const state = {
  page: 'watch',
  stream: params.get('stream') || 'live/demo',
  /** idle | connecting | waiting (not live, retrying) | connected | playing | reconnecting |
   * ended (will retry) | stopped | error */
  status: 'idle',
  error: null,
  httpStatus: null,
  /** POST attempts so far, and how many of them were answered 404. */
  attempts: 0,
  notLive: 0,
  resource: null,
  connectedAt: null,
  firstFrameAt: null,
  width: 0,
  height: 0,
  muted: true,
  /** How many sessions ended by themselves, and the last one's reason. */
  ended: 0,
  endReason: null,
  stats: null,
};
window.onairState = state;
window.onairSession = null;

let session = null;
let wanted = false; // the user wants to watch: keep trying
let retryTimer = null;
let statsTimer = null;
const video = $('#video');

$('#stream').value = state.stream;
showLinks();
video.muted = params.get('muted') !== '0';
showMuted();

$('#stream').addEventListener('input', () => {
  if (!wanted) {
    state.stream = $('#stream').value.trim();
    showLinks();
  }
});
$('#watch-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  play();
});
$('#stop').addEventListener('click', () => stop());
$('#unmute').addEventListener('click', () => {
  video.muted = !video.muted;
  video.play().catch(() => {});
  showMuted();
});
video.addEventListener('volumechange', showMuted);
for (const type of ['loadeddata', 'resize', 'playing']) video.addEventListener(type, onFrame);

if (params.get('autoplay') === '1') play();

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

function showMuted() {
  state.muted = video.muted;
  $('#unmute').textContent = video.muted ? 'Unmute' : 'Mute';
  $('#unmute').classList.toggle('on', !video.muted);
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
  $('#whep-url').textContent = endpoint('whep', name);
  const pub = pageLink('publish.html', { stream: name });
  $('#publish-link').href = pub;
  $('#publish-link').textContent = new URL(pub, location.href).href;
}

function play() {
  const name = $('#stream').value.trim();
  if (!NAME_RE.test(name)) {
    showError('Stream names are segments of A-Z a-z 0-9 . _ - joined by /');
    return;
  }
  if (wanted && name === state.stream) return;
  stop(true);
  wanted = true;
  state.stream = name;
  showLinks();
  const q = new URLSearchParams(location.search);
  q.set('stream', name);
  history.replaceState(null, '', `?${q.toString().replace(/%2F/gi, '/')}`);
  $('#play').disabled = true;
  $('#stop').disabled = false;
  $('#stream').disabled = true;
  connect();
}

function retry(ms) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => {
    retryTimer = null;
    if (wanted && !session) connect();
  }, ms);
}

async function connect() {
  if (!wanted || session) return;
  state.attempts += 1;
  if (state.status !== 'waiting' && state.status !== 'ended') setStatus('connecting', 'connecting…');
  let s;
  try {
    // `via=hub`: ask for the stream as the hub has it (frames repacketized), not forwarded RTP.
    // `max_height=N`: the simulcast/SVC layer no taller than N.
    const q = new URLSearchParams();
    if (params.get('via') === 'hub') q.set('via', 'hub');
    if (params.get('max_height')) q.set('max_height', params.get('max_height'));
    const query = q.toString() ? `?${q}` : '';
    s = await whepPlay(endpoint('whep', state.stream) + query, { token: params.get('token') || undefined, trickle: params.get('trickle') !== '0' });
  } catch (e) {
    if (!wanted) return;
    state.httpStatus = e.status ?? null;
    if (e.status === 404) {
      state.notLive += 1;
      showError(null);
      setStatus('waiting', 'not live yet, trying again every 2 s');
      retry(RETRY_NOT_LIVE_MS);
    } else if (e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429) {
      showError(e.message); // the request itself is wrong: asking again will not help
      setStatus('error', `refused (${e.status})`);
      wanted = false;
      resetControls();
    } else {
      showError(e.message);
      setStatus('error', `failed, trying again in ${RETRY_ERROR_MS / 1000} s`);
      retry(RETRY_ERROR_MS);
    }
    return;
  }
  if (!wanted) {
    s.stop();
    return;
  }
  session = s;
  window.onairSession = s;
  state.httpStatus = 201;
  state.resource = s.resource;
  state.connectedAt = null;
  state.firstFrameAt = null;
  state.width = 0;
  state.height = 0;
  state.stats = null;
  showError(null);
  setStatus('connecting', 'connecting…');
  s.on('state', ({ state: st }) => {
    if (s !== session) return;
    if (st === 'connected') {
      if (state.connectedAt == null) state.connectedAt = performance.now();
      setStatus(state.firstFrameAt != null ? 'playing' : 'connected', state.firstFrameAt != null ? 'playing' : 'connected, waiting for video');
    } else if (st === 'disconnected') {
      setStatus('reconnecting', 'connection interrupted…');
    }
  });
  s.on('ended', ({ reason }) => {
    if (s !== session) return;
    session = null;
    window.onairSession = null;
    clearInterval(statsTimer);
    statsTimer = null;
    video.srcObject = null;
    $('#placeholder').hidden = false;
    if (reason === 'stopped') return;
    state.ended += 1;
    state.endReason = reason;
    setStatus('ended', reason === 'no_media' ? 'stream ended, waiting for it to return' : `ended (${reason}), trying again`);
    retry(RETRY_NOT_LIVE_MS);
  });
  video.srcObject = s.mediaStream;
  video.play().catch((e) => {
    // Autoplay with sound refused: play muted, the button unmutes.
    if (e.name === 'NotAllowedError' && !video.muted) {
      video.muted = true;
      video.play().catch(() => {});
    }
  });
  if (s.state === 'connected') setStatus('connected', 'connected, waiting for video');
  clearInterval(statsTimer);
  statsTimer = setInterval(updateStats, 1000);
}

function onFrame() {
  if (!session || !video.videoWidth) return;
  state.width = video.videoWidth;
  state.height = video.videoHeight;
  $('#placeholder').hidden = true;
  if (state.firstFrameAt == null) {
    state.firstFrameAt = performance.now();
    setStatus('playing', 'playing');
  }
}

function stop(silent = false) {
  wanted = false;
  clearTimeout(retryTimer);
  retryTimer = null;
  clearInterval(statsTimer);
  statsTimer = null;
  const s = session;
  session = null;
  window.onairSession = null;
  s?.stop();
  video.srcObject = null;
  $('#placeholder').hidden = false;
  resetControls();
  if (!silent) setStatus('stopped', 'stopped');
}

function resetControls() {
  $('#play').disabled = false;
  $('#stop').disabled = true;
  $('#stream').disabled = false;
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
  const c = r.connection || {};
  const v = r.tracks.find((t) => t.direction === 'in' && t.kind === 'video');
  const a = r.tracks.find((t) => t.direction === 'in' && t.kind === 'audio');
  state.stats = {
    bitrate_kbps: c.bitrate_in_kbps ?? null,
    rtt_ms: c.rtt_ms ?? null,
    local_candidate_type: c.local_candidate_type ?? null,
    remote_candidate_type: c.remote_candidate_type ?? null,
    protocol: c.protocol ?? null,
    video: v ? {
      codec: v.codec, bitrate_kbps: v.bitrate_kbps, loss_pct: v.loss_pct, jitter_ms: v.jitter_ms,
      frames_decoded: v.frames_decoded, fps: v.fps, width: v.width, height: v.height,
    } : null,
    audio: a ? {
      codec: a.codec, bitrate_kbps: a.bitrate_kbps, loss_pct: a.loss_pct, jitter_ms: a.jitter_ms,
      total_audio_energy: a.total_audio_energy,
    } : null,
  };
  const lines = [`${fmt(c.bitrate_in_kbps, ' kbit/s')} in · RTT ${fmt(c.rtt_ms, ' ms')} · ${c.local_candidate_type || '?'}→${c.remote_candidate_type || '?'} ${c.protocol || ''}`.trim()];
  if (v) {
    lines.push(`video ${v.codec || '?'} ${v.width || '?'}×${v.height || '?'} @ ${fmt(v.fps, ' fps')} · ${fmt(v.bitrate_kbps, ' kbit/s')} · `
      + `${v.frames_decoded ?? 0} frames decoded`);
    lines.push(`  loss ${fmt(v.loss_pct, ' %', 1)} · jitter ${fmt(v.jitter_ms, ' ms')}`);
  }
  if (a) lines.push(`audio ${a.codec || '?'} · ${fmt(a.bitrate_kbps, ' kbit/s')} · loss ${fmt(a.loss_pct, ' %', 1)} · jitter ${fmt(a.jitter_ms, ' ms')}`);
  $('#stats').textContent = lines.join('\n');
}
