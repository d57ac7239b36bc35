// The watch page: plays /whep/NAME in a <video>, with status, a stats line and an unmute button.
// Opened before the stream is live it asks again every 2 s; when the stream ends it goes back to
// waiting for it. All media logic is in onair.js; this file only draws.
//
// ?stream=NAME (default live/demo), &autoplay=1, &muted=0 (start unmuted where the browser lets
// it), &token=T (Authorization: Bearer for WHEP, ?token= for LL-HLS and the WebSocket players), &trickle=0 (candidates in the offer, no PATCH),
// &server=http://host:port (another onair server), &via=hls (LL-HLS instead of WHEP: hls.js where
// the browser has MSE, its own HLS otherwise; &hlsjs=URL loads hls.js from there instead of the
// jsDelivr CDN, for networks without it), &via=rtws (WebSocket into MSE: RTWebSocket over
// WebSocketStream, then over WebSocket, then a plain WebSocket; &transport=rtws|rtws-stream|plain
// to take one), &via=webcodecs (RTWebSocket's TC mapping decoded with WebCodecs onto a canvas),
// &target=S (the WebSocket players' target latency, default 0.2 s), &tuning=videoLifetime=1
// (the RTWebSocket server's tuning parameters).
import { whepPlay } from './onair.js';
import { LivePlayer } from './rtws-player.js';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const server = (params.get('server') || '').replace(/\/+$/, '');
const NAME_RE = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;
const RETRY_NOT_LIVE_MS = 2000;
// A 503 to a WHEP request: the stream is live and its media about to start.
const RETRY_STARTING_MS = 1000;
const RETRY_ERROR_MS = 5000;
const HLS_JS = params.get('hlsjs') || 'https://cdn.jsdelivr.net/npm/hls.js@1/dist/hls.min.js';

/** What the page is doing, for people and tests. */
const state = {
  page: 'watch',
  stream: params.get('stream') || 'live/demo',
  /** whep | hls | rtws (WebSocket, MSE) | webcodecs (RTWebSocket, WebCodecs) */
  via: ['hls', 'rtws', 'webcodecs'].includes(params.get('via')) ? params.get('via') : 'whep',
  /** The WebSocket players' transport: rtws-stream | rtws | plain. */
  transport: null,
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
$('#via').value = state.via;
showLinks();
$('#via').addEventListener('change', () => {
  if (!wanted) {
    state.via = $('#via').value;
    showLinks();
  }
});
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
  $('#hls-url').textContent = `${endpoint('hls', name)}/index.m3u8`;
  $('#rtws-url').textContent = `${endpoint('rtws', name.split('/')[0]).replace(/^http/, 'ws')} (play ${name.split('/').slice(1).join('/')})`;
  $('#heading').textContent = {
    hls: 'Watch over LL-HLS', rtws: 'Watch over WebSocket', webcodecs: 'Watch over RTWebSocket (WebCodecs)',
  }[state.via] || 'Watch over WHEP';
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
  state.via = $('#via').value;
  showLinks();
  const q = new URLSearchParams(location.search);
  q.set('stream', name);
  if (state.via !== 'whep') q.set('via', state.via);
  else if (q.get('via') !== 'hub') q.delete('via');
  history.replaceState(null, '', `?${q.toString().replace(/%2F/gi, '/')}`);
  $('#play').disabled = true;
  $('#stop').disabled = false;
  $('#stream').disabled = true;
  $('#via').disabled = true;
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
  if (state.via === 'hls') {
    connectHls();
    return;
  }
  if (state.via === 'rtws' || state.via === 'webcodecs') {
    connectRtws();
    return;
  }
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
    } else if (e.status === 503) {
      // Live, but its first media (or its second track) is still on the way: the server
      // says when to ask again (Retry-After: 1).
      state.notLive += 1;
      showError(null);
      setStatus('waiting', 'starting, trying again in 1 s');
      retry(RETRY_STARTING_MS);
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
  video.removeAttribute('src');
  video.hidden = false;
  $('#canvas').hidden = true;
  $('#placeholder').hidden = false;
  resetControls();
  if (!silent) setStatus('stopped', 'stopped');
}

function resetControls() {
  $('#play').disabled = false;
  $('#stop').disabled = true;
  $('#stream').disabled = false;
  $('#via').disabled = false;
}

const fmt = (v, unit = '', digits = 0) => (v == null || Number.isNaN(v) ? '–' : `${Number(v).toFixed(digits)}${unit}`);

async function updateStats() {
  const s = session;
  if (!s) return;
  if (s.hls !== undefined) {
    updateHlsStats(s);
    return;
  }
  if (s.rtws) {
    updateRtwsStats(s);
    return;
  }
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

// ------------------------------------------------------------------ LL-HLS

/** Loads hls.js once (a classic script: it sets window.Hls). */
let hlsJsLoading = null;
function loadHlsJs() {
  if (window.Hls) return Promise.resolve(window.Hls);
  hlsJsLoading ??= new Promise((resolve, reject) => {
    const el = document.createElement('script');
    el.src = HLS_JS;
    el.onload = () => (window.Hls ? resolve(window.Hls) : reject(new Error('hls.js did not load')));
    el.onerror = () => reject(new Error(`could not load hls.js from ${HLS_JS}`));
    document.head.append(el);
  }).catch((e) => {
    hlsJsLoading = null;
    throw e;
  });
  return hlsJsLoading;
}

/** Plays NAME's LL-HLS: hls.js in low-latency mode where there is MSE, native HLS otherwise. */
async function connectHls() {
  state.attempts += 1;
  if (state.status !== 'waiting' && state.status !== 'ended') setStatus('connecting', 'loading the playlist…');
  // A playback token rides in the query; the server carries it on to every URI it lists.
  const token = params.get('token');
  const url = `${endpoint('hls', state.stream)}/index.m3u8${token ? `?token=${encodeURIComponent(token)}` : ''}`;
  // The server holds this answer until the stream has a segment; 404 means not live.
  let res;
  try {
    res = await fetch(url);
  } catch (e) {
    showError(e.message);
    setStatus('error', `failed, trying again in ${RETRY_ERROR_MS / 1000} s`);
    retry(RETRY_ERROR_MS);
    return;
  }
  if (!wanted || session) return;
  state.httpStatus = res.status;
  if (res.status === 404 || res.status === 503) {
    state.notLive += 1;
    showError(null);
    setStatus('waiting', 'not live yet, trying again every 2 s');
    retry(RETRY_NOT_LIVE_MS);
    return;
  }
  if (!res.ok) {
    showError((await res.text()).trim() || `HTTP ${res.status}`); // 409: "HLS unavailable: VP8"
    setStatus('error', `refused (${res.status})`);
    wanted = false;
    resetControls();
    return;
  }
  const native = video.canPlayType('application/vnd.apple.mpegurl') !== '';
  let Hls = null;
  if (window.MediaSource || window.ManagedMediaSource) {
    try {
      Hls = await loadHlsJs();
    } catch (e) {
      if (!native) {
        showError(e.message);
        setStatus('error', 'no hls.js');
        wanted = false;
        resetControls();
        return;
      }
    }
  }
  if (!wanted || session) return;
  const s = {
    hls: null,
    resource: url,
    stop() {
      this.hls?.destroy();
      video.removeAttribute('src');
      video.load();
    },
  };
  session = s;
  window.onairSession = s;
  state.resource = url;
  state.firstFrameAt = null;
  state.stats = null;
  showError(null);
  const ended = (reason) => {
    if (s !== session) return;
    session = null;
    window.onairSession = null;
    clearInterval(statsTimer);
    statsTimer = null;
    s.stop();
    $('#placeholder').hidden = false;
    state.ended += 1;
    state.endReason = reason;
    setStatus('ended', reason === 'ended' ? 'stream ended, waiting for it to return' : `${reason}, trying again`);
    retry(RETRY_NOT_LIVE_MS);
  };
  video.addEventListener('ended', () => ended('ended'), { once: true });
  if (Hls && Hls.isSupported()) {
    // maxLiveSyncPlaybackRate: after a stall (a WebRTC source changing resolution starts a new
    // init segment, a discontinuity), play up to 1.5x until back at the target latency instead
    // of staying seconds behind for good.
    s.hls = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
    s.hls.on(Hls.Events.ERROR, (_, d) => {
      if (d.fatal) ended(`${d.type}: ${d.details}`);
    });
    s.hls.loadSource(url);
    s.hls.attachMedia(video);
  } else {
    video.src = url; // Safari, iOS: the browser's own (LL-)HLS
  }
  setStatus('connected', 'connected, waiting for video');
  video.play().catch((e) => {
    if (e.name === 'NotAllowedError' && !video.muted) {
      video.muted = true;
      video.play().catch(() => {});
    }
  });
  clearInterval(statsTimer);
  statsTimer = setInterval(updateStats, 1000);
}

function updateHlsStats(s) {
  const q = video.getVideoPlaybackQuality?.();
  const b = video.buffered;
  const buffer = b.length ? b.end(b.length - 1) - video.currentTime : 0;
  const latency = s.hls ? s.hls.latency : null;
  const level = s.hls?.levels?.[s.hls.currentLevel];
  state.stats = {
    latency_s: latency,
    buffer_s: buffer,
    frames_decoded: q?.totalVideoFrames ?? null,
    dropped_frames: q?.droppedVideoFrames ?? null,
    bitrate_kbps: level ? level.bitrate / 1000 : null,
    player: s.hls ? 'hls.js' : 'native',
  };
  $('#stats').textContent = [
    `LL-HLS (${state.stats.player}) · latency ${fmt(latency, ' s', 2)} · buffer ${fmt(buffer, ' s', 2)}`,
    `video ${video.videoWidth || '?'}×${video.videoHeight || '?'} · ${q?.totalVideoFrames ?? 0} frames decoded · ${q?.droppedVideoFrames ?? 0} dropped`
      + (level ? ` · ${fmt(level.bitrate / 1000, ' kbit/s')}` : ''),
  ].join('\n');
}

// ------------------------------------------------------------------ WebSocket (RTWebSocket)

/** Plays NAME over WebSocket: MSE fed with CMAF (via=rtws) or WebCodecs fed with TC. */
async function connectRtws() {
  state.attempts += 1;
  if (state.status !== 'waiting' && state.status !== 'ended') setStatus('connecting', 'connecting…');
  const webcodecs = state.via === 'webcodecs';
  const canvas = $('#canvas');
  const p = new LivePlayer(video, {
    server: server || location.origin,
    stream: state.stream,
    mode: webcodecs ? 'webcodecs' : 'mse',
    canvas,
    targetLatency: Number(params.get('target')) || 0.2,
    transports: params.get('transport') ? params.get('transport').split(',') : undefined,
    tuning: params.get('tuning') || undefined,
    mapping: params.get('mapping') || undefined,
    token: params.get('token') || undefined,
  });
  const s = { rtws: p, resource: state.stream, stop: () => p.stop() };
  session = s;
  window.onairSession = s;
  state.firstFrameAt = null;
  state.stats = null;
  try {
    state.transport = await p.start();
  } catch (e) {
    if (s !== session) return;
    session = null;
    window.onairSession = null;
    p.stop();
    if (e.notLive) {
      state.notLive += 1;
      showError(null);
      setStatus('waiting', 'not live yet, trying again every 2 s');
      retry(RETRY_NOT_LIVE_MS);
    } else {
      showError(`${e.message} (tried ${p.tried.map((t) => t.transport).join(', ')})`);
      setStatus('error', `failed, trying again in ${RETRY_ERROR_MS / 1000} s`);
      retry(RETRY_ERROR_MS);
    }
    return;
  }
  if (s !== session) {
    p.stop();
    return;
  }
  showError(null);
  canvas.hidden = !webcodecs;
  video.hidden = webcodecs;
  p.onended = (reason) => {
    if (s !== session) return;
    session = null;
    window.onairSession = null;
    clearInterval(statsTimer);
    statsTimer = null;
    p.stop();
    canvas.hidden = true;
    video.hidden = false;
    $('#placeholder').hidden = false;
    state.ended += 1;
    state.endReason = reason;
    setStatus('ended', `${reason}, waiting for it to return`);
    retry(RETRY_NOT_LIVE_MS);
  };
  if (state.firstFrameAt == null) setStatus('connected', `connected over ${state.transport}, waiting for video`);
  clearInterval(statsTimer);
  statsTimer = setInterval(updateStats, 1000);
}

function updateRtwsStats(s) {
  const st = s.rtws.stats();
  state.stats = st;
  if (st.mode === 'webcodecs' && st.frames_drawn > 0 && state.firstFrameAt == null) {
    state.firstFrameAt = performance.now();
    state.width = st.width;
    state.height = st.height;
    $('#placeholder').hidden = true;
    setStatus('playing', 'playing');
  }
  const lines = [
    `${st.transport} · ${st.mode} · latency ${st.latency_s == null ? 'n/a' : fmt(st.latency_s, ' s', 2)} · buffer ${fmt(st.buffer_s, ' s', 2)}`
      + (st.playback_rate ? ` · rate ${fmt(st.playback_rate, '', 2)}` : ''),
    `video ${st.width || '?'}×${st.height || '?'} · ${st.frames_decoded ?? 0} frames decoded · ${st.dropped_frames ?? 0} dropped`
      + ` · ${st.abandoned} abandoned by the server`,
  ];
  $('#stats').textContent = lines.join('\n');
}
