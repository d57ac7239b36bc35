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

function record(key, c) {
  let s = series.get(key);
  if (!s) {
    s = { t: [], in: [], out: [], loss: [], rtt: [] };
    series.set(key, s);
  }
  const loss = c.kind === 'publisher' ? c.loss_in_pct : c.loss_out_pct;
  s.t.push(Date.now());
  s.in.push(c.bitrate_in_bps / 1000);
  s.out.push(c.bitrate_out_bps / 1000);
  s.loss.push(loss ?? null);
  s.rtt.push(c.rtt_ms ?? null);
  for (const k of Object.keys(s)) if (s[k].length > KEEP) s[k].shift();
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
    const s = record(key, c);
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
  canvas.height = 150;
  canvas.className = 'dash-plot';
  draw(canvas, s, c.kind === 'publisher' ? 'in' : 'out');
  row.append(facts, canvas);
  return row;
}

// ---------------------------------------------------------------- plots

const COLORS = { rate: '#4f8cff', loss: '#e5484d', rtt: '#f5a524' };

/** Three stacked strips over the same time axis: bitrate (the media direction), loss, RTT. */
function draw(canvas, s, dir) {
  const g = canvas.getContext('2d');
  const w = canvas.width;
  const h = canvas.height;
  g.fillStyle = '#181b22';
  g.fillRect(0, 0, w, h);
  const strip = h / 3;
  const strips = [
    [s[dir], COLORS.rate, 'kbit/s', 0],
    [s.loss, COLORS.loss, '% lost', 1],
    [s.rtt, COLORS.rtt, 'ms rtt', 2],
  ];
  g.font = '10px ui-monospace, monospace';
  for (const [values, color, unit, i] of strips) {
    const top = i * strip;
    g.strokeStyle = '#2b303b';
    g.beginPath();
    g.moveTo(0, top + strip - 0.5);
    g.lineTo(w, top + strip - 0.5);
    g.stroke();
    const known = values.filter((v) => v != null);
    const max = Math.max(unit === '% lost' ? 5 : 1, ...known) * 1.15;
    g.strokeStyle = color;
    g.lineWidth = 1.5;
    g.beginPath();
    let pen = false;
    values.forEach((v, j) => {
      if (v == null) {
        pen = false;
        return;
      }
      const x = w - (values.length - 1 - j) * (w / (KEEP - 1));
      const y = top + strip - 3 - (v / max) * (strip - 6);
      if (pen) g.lineTo(x, y);
      else g.moveTo(x, y);
      pen = true;
    });
    g.stroke();
    const last = known.length ? known[known.length - 1] : null;
    g.fillStyle = color;
    g.fillText(`${last == null ? '–' : Math.round(last * 10) / 10} ${unit}`, 4, top + 11);
  }
}

poll();
