#!/usr/bin/env node
// WebSocket streaming on a viewer link slower than the stream, inside a loopback-only network
// namespace: FFmpeg publishes ~2.5 Mbit/s of H.264 + AAC over RTMP, and the server's HTTP port
// sends to its players through a token bucket of NETNS_RATE (default 1mbit). Only that
// direction is capped (an HTB class on the server's port), so the publish itself is not.
//
// What must hold: latency stays bounded, audio keeps coming, and stale video is abandoned
// (RTWebSocket) or dropped to the next keyframe (the plain WebSocket's byte budget) rather
// than queued. Our Node client measures it from the server's clock in each CMAF fragment;
// Chromium plays the same through watch.html (MSE over RTWebSocket).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, results, runMain, sleep, waitFor, withWebSocket,
} from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OVERALL_TIMEOUT_MS = 150_000;
const FFMPEG = process.env.FFMPEG || 'ffmpeg';
const RATE = process.env.NETNS_RATE || '1mbit';
const RUN_MS = 14_000;

await withWebSocket(import.meta.url);
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);
const { RtwsConnection } = await import('../../web/rtws.js');

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-rtws-rate-${process.pid}.log`);
let server = null;
let ffmpeg = null;
let browser = null;

async function finish(code) {
  if (code !== 0) {
    let log = '(no log)';
    try { log = fs.readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-30).join('\n'); } catch { /* none */ }
    console.log(`# server log (${logPath}):\n${log.replace(/^/gm, '#   ')}`);
  }
  await browser?.close().catch(() => {});
  if (ffmpeg && ffmpeg.exitCode === null) ffmpeg.kill('SIGKILL');
  if (server && server.exitCode === null) server.kill('SIGKILL');
  process.exit(code);
}
setTimeout(() => { console.log('not ok - overall timeout'); finish(1); }, OVERALL_TIMEOUT_MS - 5000).unref();

/** Caps what leaves `port` at RATE, and nothing else (netns-run's NETNS_RATE caps all of lo). */
function capPort(port) {
  const tc = (...args) => spawnSync('tc', args, { encoding: 'utf8' });
  tc('qdisc', 'del', 'dev', 'lo', 'root');
  // A real link's MTU: loopback's 64 KiB packets never fit a token bucket of 4 KB, and TCP
  // over it stalls outright.
  const mtu = spawnSync('ip', ['link', 'set', 'lo', 'mtu', '1500'], { encoding: 'utf8' });
  if (mtu.status !== 0) return `ip link set lo mtu 1500: ${mtu.stderr.trim()}`;
  const steps = [
    ['qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '10'],
    ['class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '10gbit'],
    ['class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:20', 'htb', 'rate', RATE, 'ceil', RATE],
    ['qdisc', 'add', 'dev', 'lo', 'parent', '1:20', 'handle', '20:', 'tbf', 'rate', RATE, 'burst', '32kbit', 'latency', '400ms'],
    ['filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32', 'match', 'ip', 'sport', String(port), '0xffff', 'flowid', '1:20'],
  ];
  for (const s of steps) {
    const r = tc(...s);
    if (r.status !== 0) return `tc ${s.join(' ')}: ${r.stderr.trim()}`;
  }
  return null;
}

const pct = (xs, p) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
};

/** Fragments of one CMAF message: kind, arrival − server time (ms), keyframe. */
function fragmentOf(kind, m) {
  if (m[0] !== 0x66) return null;
  const us = Number(new DataView(m.buffer, m.byteOffset).getBigUint64(2));
  return { kind, key: m[1] === 1, transit: Date.now() - us / 1000, at: Date.now() };
}

/** Plays over RTWebSocket's CMAF mapping for `ms`: what arrived, what was abandoned. */
async function rtwsClient(port, ms) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/rtws/live`);
  const conn = new RtwsConnection(ws);
  const got = { frames: [], abandoned: { a: 0, v: 0 } };
  conn.onflow = (flow, meta) => {
    const kind = String.fromCharCode(meta[4]);
    return {
      onmessage: (m) => { const f = fragmentOf(kind, m); if (f) got.frames.push(f); },
      onabandon: (n) => { got.abandoned[kind] += n; },
    };
  };
  await conn.opened;
  conn.open(0, new TextEncoder().encode('CMAFcam'));
  await sleep(ms);
  got.bytes = conn.bytesIn;
  ws.close();
  return got;
}

/** Plays over the plain WebSocket for `ms`. */
async function plainClient(port, ms) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/live/cam`);
  ws.binaryType = 'arraybuffer';
  const got = { frames: [], bytes: 0 };
  ws.addEventListener('message', (e) => {
    if (typeof e.data === 'string') return;
    const m = new Uint8Array(e.data);
    got.bytes += m.length;
    const f = fragmentOf(String.fromCharCode(m[0]), m.subarray(1));
    if (f) got.frames.push(f);
  });
  await sleep(ms);
  ws.close();
  return got;
}

/** Checks and figures for one client's run. Frames are counted by the server's time (the
 * first 3 s, the start and its GOP burst, and the last 3 s, which may still be on the way,
 * left out), so a delay is not mistaken for a loss. */
function judge(label, got, { abandonedVideo, maxAudioMs, maxVideoMs }) {
  const srv = (f) => f.at - f.transit;
  const t0 = got.frames[0] ? srv(got.frames[0]) : 0;
  const from = t0 + 3000;
  const to = t0 + RUN_MS - 3000;
  const secs = (to - from) / 1000;
  const inWindow = got.frames.filter((f) => srv(f) >= from && srv(f) < to);
  const audio = inWindow.filter((f) => f.kind === 'a');
  const video = inWindow.filter((f) => f.kind === 'v');
  // AAC at 48 kHz: 46.9 frames a second.
  const audioRate = audio.length / secs;
  const videoRate = video.length / secs;
  const aMax = Math.max(...audio.map((f) => f.transit));
  const vMax = Math.max(...video.map((f) => f.transit));
  const p50 = (xs) => pct(xs.map((f) => f.transit), 0.5).toFixed(0);
  check(`${label}: audio keeps coming (≥ 90 % of 46.9 frames/s), delay bounded (max < ${maxAudioMs} ms)`,
    audioRate > 0.9 * 46.9 && aMax < maxAudioMs, `${audioRate.toFixed(1)} frames/s, p50 ${p50(audio)} ms, max ${aMax.toFixed(0)} ms`);
  check(`${label}: video delay stays bounded (max < ${maxVideoMs} ms) instead of growing`,
    video.length > 0 && vMax < maxVideoMs, `${video.length} frames, max ${vMax.toFixed(0)} ms`);
  check(`${label}: stale video is dropped, not queued (fewer than the 30 frames/s published${abandonedVideo ? ', abandoned by the server' : ''})`,
    videoRate < 27 && (!abandonedVideo || got.abandoned.v > 0), `${videoRate.toFixed(1)} frames/s${abandonedVideo ? `, ${got.abandoned.v} abandoned` : ''}`);
  figure(`${label} at ${RATE}: audio ${audioRate.toFixed(1)} frames/s, delay p50 ${p50(audio)} / max ${aMax.toFixed(0)} ms; `
    + `video ${videoRate.toFixed(1)} of 30 frames/s, delay p50 ${p50(video)} / max ${vMax.toFixed(0)} ms`
    + `${got.abandoned ? `, ${got.abandoned.v} video / ${got.abandoned.a} audio abandoned` : ''}; ${(got.bytes * 8 / RUN_MS).toFixed(0)} kbit/s received`);
}

async function main() {
  const bin = path.resolve(HERE, process.env.ONAIR_BIN || '../../target/release/onair');
  if (!fs.existsSync(bin)) {
    console.error(`error: server binary ${bin} not found (cargo build --release, or set ONAIR_BIN)`);
    return 2;
  }
  const httpPort = await freeTcpPort();
  const rtmpPort = await freeTcpPort();
  const base = `http://127.0.0.1:${httpPort}`;
  const capErr = capPort(httpPort);
  if (!check(`the server's HTTP port is capped at ${RATE}, the RTMP publish is not`, !capErr, capErr ?? '')) return 1;
  server = spawn(bin, [], {
    env: { ...process.env, ONAIR_HTTP_LISTEN: `127.0.0.1:${httpPort}`, ONAIR_MEDIA_PORT: String(await freeMediaPort()),
      ONAIR_RTMP_LISTEN: `127.0.0.1:${rtmpPort}`, ONAIR_TURN_ENABLED: 'false', ONAIR_HLS_ENABLED: 'false' },
    stdio: ['ignore', fs.openSync(logPath, 'w'), fs.openSync(logPath, 'a')],
  });
  const up = await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok, 15_000, 200);
  if (!check('server up', !!up)) return 1;
  ffmpeg = spawn(FFMPEG, ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '30', '-pix_fmt', 'yuv420p',
    '-b:v', '2500k', '-maxrate', '2500k', '-bufsize', '2500k',
    '-c:a', 'aac', '-b:a', '96k', '-ar', '48000', '-f', 'flv', `rtmp://127.0.0.1:${rtmpPort}/live/cam`], { stdio: 'ignore' });
  const live = await waitFor(async () => {
    const list = await (await fetch(`${base}/api/streams`)).json();
    return list.find((s) => s.name === 'live/cam' && s.tracks.length >= 2);
  }, 15_000, 300);
  if (!check('FFmpeg publishes live/cam over RTMP', !!live)) return 1;
  await sleep(2000);
  const inKbps = (await (await fetch(`${base}/api/streams`)).json()).find((s) => s.name === 'live/cam')?.bitrate_kbps;
  if (inKbps) figure(`the stream's bitrate as published: ${inKbps} kbit/s`);

  // RTWebSocket interleaves audio fragments ahead of video and abandons video past its 2 s
  // deadline. The plain WebSocket sends whole messages: audio can wait behind a keyframe
  // (~100 KB here, most of a second at 1 Mbit/s) and the byte budget, so its bound is looser.
  judge('RTWebSocket (CMAF)', await rtwsClient(httpPort, RUN_MS), { abandonedVideo: true, maxAudioMs: 1000, maxVideoMs: 2500 });
  judge('plain WebSocket (byte budget)', await plainClient(httpPort, RUN_MS), { abandonedVideo: false, maxAudioMs: 3500, maxVideoMs: 3500 });

  // Chromium: MSE over RTWebSocket on the same link.
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const page = await browser.newPage();
  await page.goto(`${base}/watch.html?stream=live/cam&autoplay=1&via=rtws&transport=rtws`);
  const first = await waitFor(() => page.evaluate(() => (window.onairState?.status === 'playing' ? 1 : null)), 20_000, 250);
  const sample = () => page.evaluate(() => {
    const v = document.querySelector('video');
    return { t: v.currentTime, audio: v.webkitAudioDecodedByteCount, stats: window.onairState.stats, status: window.onairState.status };
  });
  const a = first ? await sample() : null;
  const lat = [];
  for (let i = 0; i < 8 && first; i++) {
    await sleep(1000);
    const s = await sample();
    if (s.stats?.latency_s != null) lat.push(s.stats.latency_s);
  }
  const b = first ? await sample() : null;
  check('Chromium over RTWebSocket on the capped link: plays on, audio decoded throughout, latency bounded (max < 3 s)',
    !!a && b.t - a.t > 5 && b.audio - a.audio > 50_000 && lat.length > 4 && Math.max(...lat) < 3,
    JSON.stringify({ a, b, lat, state: first ? undefined : await page.evaluate(() => ({ s: window.onairState, buffered: [...Array(document.querySelector('video').buffered.length).keys()].map((i) => [document.querySelector('video').buffered.start(i), document.querySelector('video').buffered.end(i)]), rs: document.querySelector('video').readyState, t: document.querySelector('video').currentTime })) }));
  figure(`Chromium MSE over RTWebSocket at ${RATE}: latency ${lat.map((x) => x.toFixed(2)).join(' ')} s; `
    + `${b?.stats?.frames_decoded} frames decoded, ${b?.stats?.abandoned} abandoned by the server, ${b?.stats?.gap_jumps} gap jumps`);
  return 0;
}

await runMain(main, summary, finish);
