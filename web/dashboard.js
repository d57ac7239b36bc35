// The quality dashboard: polls the server's reports once a second and draws, for every
// connection, its figures now and its bitrate, loss and round trip over the last two minutes.
// Plain canvas: the binary serves everything itself, no charting library from a CDN.

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const POLL_MS = 1000;
/** Points kept per series: two minutes at one a second. */
const KEEP = 120;

/** connection key → {t: [], in: [], out: [], loss: [], rtt: []} */
const series = new Map();
let polls = 0;
// For tests and for anyone poking at the page from the console.
window.onairDashboard = { series, get polls() { return polls; }, reports: null };

async function getJson(url) {
  const res = await fetch(url, { cache: 'no-store' });
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

async function poll() {
  try {
    const only = params.get('room');
    const status = await getJson('/api/rooms');
    const names = only ? [only] : (status?.rooms || []).map((r) => r.name).sort();
    const rooms = (await Promise.all(names.map((n) => getJson(`/api/rooms/${encodeURIComponent(n)}`)))).filter(Boolean);
    const sessions = only ? [] : (await getJson('/api/sessions')) || [];
    polls += 1;
    window.onairDashboard.reports = { rooms, sessions };
    render(rooms, sessions);
    setStatus('live', `updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    setStatus('error', e.message);
  }
  setTimeout(poll, POLL_MS);
}

function setStatus(state, text) {
  const el = $('#status');
  el.dataset.state = state === 'live' ? 'connected' : 'failed';
  el.textContent = text;
}

// ---------------------------------------------------------------- figures

/** Appends this poll's figures to the connection's series. `subs`: the participant's video
 *  subscriptions (a subscriber connection plots the layer each gets). */
function record(key, c, subs) {
  let s = series.get(key);
  if (!s) {
    s = { t: [], in: [], out: [], estimate: [], loss: [], rtt: [], layers: new Map() };
    series.set(key, s);
  }
  const loss = c.kind === 'publisher' ? c.loss_in_pct : c.loss_out_pct;
  s.t.push(Date.now());
  s.in.push(c.bitrate_in_bps / 1000);
  s.out.push(c.bitrate_out_bps / 1000);
  s.estimate.push(c.estimate_bps != null ? c.estimate_bps / 1000 : null);
  s.loss.push(loss ?? null);
  s.rtt.push(c.rtt_ms ?? null);
  if (c.kind === 'subscriber') {
    const now = new Map(subs.map((x, i) => [x.track_id ?? `#${i}`, x.paused ? -1 : x.layer ?? null]));
    for (const id of now.keys()) if (!s.layers.has(id)) s.layers.set(id, new Array(s.t.length - 1).fill(null));
    for (const [id, values] of s.layers) values.push(now.has(id) ? now.get(id) : null);
  }
  const trim = (a) => { while (a.length > KEEP) a.shift(); };
  for (const k of ['t', 'in', 'out', 'estimate', 'loss', 'rtt']) trim(s[k]);
  for (const [id, values] of s.layers) {
    trim(values);
    if (values.every((v) => v == null)) s.layers.delete(id);
  }
  return s;
}

const kbps = (bps) => (bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mbit/s` : `${Math.round(bps / 1000)} kbit/s`);
const num = (v, unit, digits = 0) => (v == null ? '–' : `${v.toFixed(digits)} ${unit}`);

function render(rooms, sessions) {
  const groups = $('#groups');
  const seen = new Set();
  const blocks = [];
  for (const r of rooms) blocks.push({ title: `Room ${r.name}${r.mode === 'p2p' ? ' (peer-to-peer)' : ''}`, people: r.participants });
  if (sessions.length) blocks.push({ title: 'WHIP and WHEP sessions', people: sessions });
  $('#empty').hidden = blocks.some((b) => b.people.length);
  groups.replaceChildren(...blocks.map((b) => {
    const sec = document.createElement('section');
    sec.className = 'dash-group';
    const h = document.createElement('h2');
    h.textContent = b.title;
    sec.append(h, ...b.people.map((p) => participantCard(p, seen)));
    return sec;
  }));
  for (const k of [...series.keys()]) if (!seen.has(k)) series.delete(k);
}

function participantCard(p, seen) {
  const card = document.createElement('article');
  card.className = 'dash-card';
  card.dataset.participantId = p.id;
  card.dataset.name = p.name;
  if (p.quality) card.dataset.quality = p.quality;
  const head = document.createElement('header');
  const title = document.createElement('strong');
  title.textContent = p.stream ? `${p.role} ${p.stream}` : p.name;
  const grade = document.createElement('span');
  grade.className = 'grade';
  grade.textContent = p.quality || 'measuring';
  head.append(title, grade);
  card.append(head);
  for (const c of p.connections) {
    const key = `${p.id}/${c.kind}`;
    seen.add(key);
    const s = record(key, c, p.subscriptions.filter((x) => x.kind === 'video'));
    card.append(connectionRow(c, s, key));
  }
  const lines = [];
  for (const t of p.tracks) {
    const layers = t.layers.map((l) => `${l.rid || 'single'}${l.height ? ` ${l.height}p` : ''} ${kbps(l.bitrate_bps)}${l.loss_pct != null ? ` ${l.loss_pct} % lost` : ''}`).join(', ');
    lines.push(`publishes ${t.source} ${t.codec || t.kind}${t.muted ? ' (muted)' : ''}: ${layers || 'no media yet'}`);
  }
  for (const s of p.subscriptions) {
    if (s.kind !== 'video') continue;
    const layer = s.paused ? 'paused' : s.layer != null ? `layer ${s.layer}` : 'no layer';
    const target = s.target_layer != null && s.target_layer !== s.layer ? ` → ${s.target_layer}` : '';
    lines.push(`receives video ${s.track_id ?? ''}: ${layer}${target}, ${kbps(s.bitrate_bps)}${s.loss_pct != null ? `, ${s.loss_pct} % lost` : ''}`);
  }
  if (lines.length) {
    const pre = document.createElement('pre');
    pre.className = 'dash-lines';
    pre.textContent = lines.join('\n');
    card.append(pre);
  }
  return card;
}

function connectionRow(c, s, key) {
  const row = document.createElement('div');
  row.className = 'dash-conn';
  row.dataset.key = key;
  row.dataset.kind = c.kind;
  const loss = c.kind === 'publisher' ? c.loss_in_pct : c.loss_out_pct;
  const cand = c.candidate ? `${c.candidate.protocol} ${c.candidate.remote_type} ${c.candidate.remote}` : 'no pair yet';
  const facts = document.createElement('dl');
  const items = [
    ['connection', `${c.kind} (${c.ice_state || 'not connected'})`],
    ['candidate', cand],
    ['round trip', num(c.rtt_ms, 'ms')],
    ['loss', num(loss, '%', 1)],
    ['jitter', num(c.jitter_ms, 'ms', 1)],
    ['in / out', `${kbps(c.bitrate_in_bps)} / ${kbps(c.bitrate_out_bps)}`],
    ['estimate', c.estimate_bps != null ? kbps(c.estimate_bps) : '–'],
    ['score', c.mos != null ? `${c.mos.toFixed(2)} (${c.quality})` : '–'],
  ];
  for (const [k, v] of items) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    facts.append(dt, dd);
  }
  const canvas = document.createElement('canvas');
  canvas.width = 420;
  canvas.height = s.layers.size ? 200 : 150;
  canvas.className = 'dash-plot';
  draw(canvas, s, c.kind === 'publisher' ? 'in' : 'out');
  row.append(facts, canvas);
  return row;
}

// ---------------------------------------------------------------- plots

const COLORS = { rate: '#4f8cff', estimate: '#8fb4ff', loss: '#e5484d', rtt: '#f5a524' };
const LAYER_COLORS = ['#30a46c', '#b794f6', '#4fd1c5', '#f687b3'];

/** x of point `j` of `n`: the newest at the right edge, one poll per step. */
const xAt = (w, n, j) => w - (n - 1 - j) * (w / (KEEP - 1));

/** One polyline of `values` (nulls break it) scaled to `max` inside the strip at `top`. */
function line(g, w, top, strip, values, max, color, dashed) {
  g.strokeStyle = color;
  g.lineWidth = 1.5;
  g.setLineDash(dashed ? [4, 3] : []);
  g.beginPath();
  let pen = false;
  values.forEach((v, j) => {
    if (v == null) {
      pen = false;
      return;
    }
    const x = xAt(w, values.length, j);
    const y = top + strip - 3 - (Math.max(0, v) / max) * (strip - 6);
    if (pen) g.lineTo(x, y);
    else g.moveTo(x, y);
    pen = true;
  });
  g.stroke();
  g.setLineDash([]);
}

/** Stacked strips over the same time axis: bitrate in the media's direction (and the
 *  estimate, dashed), loss, round trip, and for a subscriber the layer of each video it gets. */
function draw(canvas, s, dir) {
  const g = canvas.getContext('2d');
  const w = canvas.width;
  const h = canvas.height;
  g.fillStyle = '#181b22';
  g.fillRect(0, 0, w, h);
  const rows = s.layers.size ? 4 : 3;
  const strip = h / rows;
  g.font = '10px ui-monospace, monospace';
  const label = (text, color, i) => {
    g.fillStyle = color;
    g.fillText(text, 4, i * strip + 11);
  };
  const last = (values) => {
    const known = values.filter((v) => v != null);
    return known.length ? known[known.length - 1] : null;
  };
  const round = (v) => (v == null ? '–' : Math.round(v * 10) / 10);
  for (let i = 1; i <= rows; i++) {
    g.strokeStyle = '#2b303b';
    g.beginPath();
    g.moveTo(0, i * strip - 0.5);
    g.lineTo(w, i * strip - 0.5);
    g.stroke();
  }
  const known = (values) => values.filter((v) => v != null);
  const rateMax = Math.max(1, ...known(s[dir]), ...known(s.estimate)) * 1.15;
  line(g, w, 0, strip, s[dir], rateMax, COLORS.rate);
  line(g, w, 0, strip, s.estimate, rateMax, COLORS.estimate, true);
  const est = last(s.estimate);
  label(`${round(last(s[dir]))} kbit/s${est != null ? ` (estimate ${Math.round(est)})` : ''}`, COLORS.rate, 0);
  line(g, w, strip, strip, s.loss, Math.max(5, ...known(s.loss)) * 1.15, COLORS.loss);
  label(`${round(last(s.loss))} % lost`, COLORS.loss, 1);
  line(g, w, 2 * strip, strip, s.rtt, Math.max(1, ...known(s.rtt)) * 1.15, COLORS.rtt);
  label(`${round(last(s.rtt))} ms rtt`, COLORS.rtt, 2);
  if (rows === 4) {
    // Layers 0-2 (spatial or simulcast), paused drawn as -1 at the strip's floor.
    const parts = [];
    [...s.layers].forEach(([id, values], k) => {
      const color = LAYER_COLORS[k % LAYER_COLORS.length];
      line(g, w, 3 * strip, strip, values.map((v) => (v == null ? null : v + 1)), 3.3, color);
      const v = last(values);
      parts.push([`${id}: ${v == null ? '–' : v < 0 ? 'paused' : `layer ${v}`}`, color]);
    });
    let x = 4;
    for (const [text, color] of parts) {
      g.fillStyle = color;
      g.fillText(text, x, 3 * strip + 11);
      x += g.measureText(text).width + 10;
    }
  }
}

poll();
