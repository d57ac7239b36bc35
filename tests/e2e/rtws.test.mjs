#!/usr/bin/env node
// RTWebSocket (TC mapping) end to end, inside a loopback-only network namespace: FFmpeg
// publishes H.264 + AAC over RTMP; our Node client (web/rtws.js: the wire format, acks and the
// TC commands, byte for byte as ../shared/specs/rtwebsocket.md says) connects to
// ws://HOST/rtws/live and plays the stream: the flows the server opens (and what they answer),
// the sequence headers, the frames and their pacing. A second connection that sends a malformed message is closed
// with the reason, and the first plays on. Needs Node's WebSocket (`--experimental-websocket`
// on Node 20; the script re-runs itself with it).
import { spawn } from 'node:child_process';
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

await withWebSocket(import.meta.url);
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);
const { RtwsConnection, TcPlayer } = await import('../../web/rtws.js');

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-rtws-${process.pid}.log`);
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

/** Connects and plays `name`; collects what arrives. */
function player(port, app, name) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/rtws/${app}`);
  const conn = new RtwsConnection(ws);
  const p = new TcPlayer(conn, { app });
  const got = { statuses: [], media: [], abandoned: 0, closed: null, errors: [] };
  p.onstatus = (info) => got.statuses.push(info?.code);
  p.onmedia = (m) => got.media.push({ ...m, at: performance.now(), body: m.body.slice(0, 8) });
  p.onabandon = (_, n) => { got.abandoned += n; };
  conn.onerror = (e) => got.errors.push(String(e));
  ws.addEventListener('close', (e) => { got.closed = { code: e.code, reason: e.reason }; });
  got.done = p.play(name).catch((e) => got.errors.push(String(e)));
  return { ws, conn, p, got };
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
  server = spawn(bin, [], {
    env: { ...process.env, ONAIR_HTTP_LISTEN: `127.0.0.1:${httpPort}`, ONAIR_MEDIA_PORT: String(await freeMediaPort()),
      ONAIR_RTMP_LISTEN: `127.0.0.1:${rtmpPort}`, ONAIR_TURN_ENABLED: 'false' },
    stdio: ['ignore', fs.openSync(logPath, 'w'), fs.openSync(logPath, 'a')],
  });
  const up = await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok, 15_000, 200);
  if (!check('server up', !!up)) return 1;
  ffmpeg = spawn(FFMPEG, ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', '30', '-pix_fmt', 'yuv420p',
    '-c:a', 'aac', '-ar', '48000', '-f', 'flv', `rtmp://127.0.0.1:${rtmpPort}/live/cam`], { stdio: 'ignore' });
  const live = await waitFor(async () => {
    const list = await (await fetch(`${base}/api/streams`)).json();
    return list.find((s) => s.name === 'live/cam' && s.tracks.length >= 2);
  }, 15_000, 300);
  if (!check('FFmpeg publishes live/cam over RTMP', !!live)) return 1;

  const a = player(httpPort, 'live', 'cam');
  await sleep(6000);
  const g = a.got;
  check('connect, createStream and play answered: NetStream.Play.Start', g.statuses.includes('NetStream.Play.Start') && g.errors.length === 0,
    JSON.stringify({ statuses: g.statuses, errors: g.errors }));
  // RFC 7425 §5.3, as the reference client routes them: every flow of the server answers our
  // control flow (0); the first is the server's control flow (stream 0), the stream's data,
  // audio and video flows name stream 1.
  const streamFlows = a.p.flows.filter((f) => f.streamId === 1 && f.returnAssoc === 0);
  check('the server opened its control flow and data, audio and video flows for stream 1, all answering our control flow',
    streamFlows.length === 3 && a.p.flows[0]?.streamId === 0 && a.p.flows.every((f) => f.returnAssoc === 0), JSON.stringify(a.p.flows));
  check('the stream hears NetStream.Play.Reset, then NetStream.Play.Start', g.statuses[0] === 'NetStream.Play.Reset'
    && g.statuses[1] === 'NetStream.Play.Start', JSON.stringify(g.statuses));
  const video = g.media.filter((m) => m.type === 9);
  const audio = g.media.filter((m) => m.type === 8);
  check('video: the AVC sequence header, then a keyframe, then frames',
    video.length > 100 && video[0].body[0] === 0x17 && video[0].body[1] === 0 && video[1].body[0] === 0x17 && video[1].body[1] === 1,
    `${video.length} video messages, first ${video.slice(0, 2).map((m) => Array.from(m.body.slice(0, 2))).join(' ')}`);
  check('audio: the AAC sequence header, then frames', audio.length > 150 && audio[0].body[0] === 0xaf && audio[0].body[1] === 0
    && audio[1].body[1] === 1, `${audio.length} audio messages`);
  const ts = video.slice(1).map((m) => m.timestamp);
  check('video timestamps only go forward', ts.every((t, i) => i === 0 || t >= ts[i - 1]), ts.slice(0, 10).join(','));
  // Pacing at steady state: arrival time minus media time, over the last 4 s. FFmpeg sends in
  // real time (-re), so a spread near zero means nothing queues up between it and the player.
  const steady = video.filter((m) => m.at - video[0].at > 2000).map((m) => m.at - m.timestamp);
  const spread = steady.length ? Math.max(...steady) - Math.min(...steady) : Infinity;
  check('steady state: frames arrive at their pace (arrival − media time varies < 300 ms)', spread < 300, `${spread.toFixed(0)} ms`);
  figure(`RTWebSocket TC play: ${video.length} video and ${audio.length} audio messages in 6 s, arrival − media time spread ${spread.toFixed(0)} ms over the last 4 s, ${g.abandoned} abandoned`);
  const readers = (await (await fetch(`${base}/api/streams`)).json()).find((s) => s.name === 'live/cam')?.readers;
  check('/api/streams counts the rtws reader', readers?.rtws === 1, JSON.stringify(readers));

  // A stream that is not live.
  const none = player(httpPort, 'live', 'nothing');
  await waitFor(() => none.got.statuses.length > 0, 5000, 100);
  check('play of a stream that is not live → NetStream.Play.StreamNotFound', none.got.statuses.includes('NetStream.Play.StreamNotFound'),
    JSON.stringify(none.got.statuses));
  none.ws.close();

  // Bad input on another connection: closed with the reason; the first plays on.
  const bad = new WebSocket(`ws://127.0.0.1:${httpPort}/rtws/live`);
  const closed = new Promise((resolve) => bad.addEventListener('close', (e) => resolve({ code: e.code, reason: e.reason })));
  await new Promise((resolve) => bad.addEventListener('open', resolve));
  bad.send(Uint8Array.of(0x1d, 0x81));
  const c = await Promise.race([closed, sleep(5000).then(() => null)]);
  check('a malformed vlu closes that connection with the reason', c?.code === 1002 && /truncated vlu/.test(c?.reason ?? ''),
    JSON.stringify(c));
  const before = g.media.length;
  await sleep(1000);
  check('the first player plays on', g.media.length > before + 30 && !g.closed, `${g.media.length - before} messages in 1 s`);

  // More bad input, each on its own connection: data on a flow never opened, an ack for bytes
  // never sent (a lying window), a message that never ends (what a "1 GB" length would be:
  // RTWebSocket has no length field, so it is fragments past the window and the size limit).
  const badCases = [
    ['data on an unknown flow', null, [Uint8Array.of(0x1d, 0x05, 0x01)], /unknown flow 5/],
    ['an ack of bytes never sent (a lying window)', 'connect', [Uint8Array.of(0x5a, 0x00, 0xff, 0xff, 0x7f, 0x10)], /ack of \d+ bytes/],
    ['a message that never ends', null, [Uint8Array.of(0x10, 0x00, 0x54, 0x43, 0x04, 0x00),
      ...Array.from({ length: 80 }, () => { const m = new Uint8Array(60_002); m[0] = 0x3d; m[1] = 0x00; return m; })], /beyond|more than/],
  ];
  for (const [what, before, msgs, re] of badCases) {
    let ws;
    if (before === 'connect') {
      // Connected and playing first: the server's flows exist, and the lie is about them.
      const p = player(httpPort, 'live', 'cam');
      await waitFor(() => p.got.media.length > 5, 5000, 100);
      ws = p.ws;
    } else {
      ws = new WebSocket(`ws://127.0.0.1:${httpPort}/rtws/live`);
      await new Promise((resolve) => ws.addEventListener('open', resolve));
    }
    const done = new Promise((resolve) => ws.addEventListener('close', (e) => resolve({ code: e.code, reason: e.reason })));
    for (const m of msgs) if (ws.readyState === 1) ws.send(m);
    const r = await Promise.race([done, sleep(5000).then(() => null)]);
    check(`${what}: that connection is closed with the reason`, r?.code === 1002 && re.test(r?.reason ?? ''), JSON.stringify(r));
  }
  const mid = g.media.length;
  await sleep(500);
  check('…and the first player still plays on', g.media.length > mid + 10 && !g.closed, `${g.media.length - mid} messages in 0.5 s`);
  a.ws.close();

  // onair's CMAF mapping, from our Node client (which pings before it opens its flow): a flow
  // per track, init first, then a fragment per frame stamped with the server's clock.
  const cm = cmafClient(httpPort, 'live', 'cam');
  await sleep(3000);
  const vflow = cm.flows.find((f) => f.kind === 'v');
  const aflow = cm.flows.find((f) => f.kind === 'a');
  check('CMAF: a video and an audio flow, associated with the request, their codecs in the metadata',
    /^avc1\.[0-9a-f]{6}$/.test(vflow?.codecs ?? '') && /^mp4a\.40\.2$/.test(aflow?.codecs ?? '') && cm.flows.every((f) => f.assoc === 0),
    JSON.stringify(cm.flows.map(({ kind, codecs, assoc }) => ({ kind, codecs, assoc }))));
  const vm = vflow?.messages ?? [];
  const box = (m, at) => String.fromCharCode(...m.subarray(at, at + 4));
  check('CMAF: the init segment (ftyp) first, then one moof+mdat per frame, the first a keyframe',
    vm.length > 60 && vm[0].type === 'i' && vm[0].box === 'ftyp' && vm.slice(1).every((m) => m.type === 'f' && m.box === 'moof') && vm[1].key,
    `${vm.length} messages: ${vm.slice(0, 3).map((m) => `${m.type}/${m.box}`).join(' ')}`);
  const transit = vm.slice(1).map((m) => m.transitMs).sort((x, y) => x - y);
  const medianTransit = transit[transit.length >> 1];
  check('CMAF: frames reach the client within 100 ms of reaching the server (median)', medianTransit < 100, `${medianTransit?.toFixed(1)} ms`);
  figure(`CMAF mapping (Node client): ${vm.length} video and ${aflow?.messages.length} audio messages in 3 s, server→client median ${medianTransit?.toFixed(1)} ms`);
  cm.ws.close();
  const cmNone = cmafClient(httpPort, 'live', 'nothing');
  await waitFor(() => cmNone.rejected, 5000, 100);
  check('CMAF: a stream that is not live → the request flow is refused with 404', cmNone.rejected?.code === 404,
    JSON.stringify(cmNone.rejected));
  cmNone.ws.close();

  // The plain-WebSocket fallback.
  const plain = new WebSocket(`ws://127.0.0.1:${httpPort}/ws/live/cam`);
  plain.binaryType = 'arraybuffer';
  const pm = [];
  plain.addEventListener('message', (e) => pm.push(typeof e.data === 'string' ? e.data : new Uint8Array(e.data)));
  await sleep(2000);
  plain.close();
  const tracksMsg = typeof pm[0] === 'string' ? JSON.parse(pm[0]) : null;
  const bins = pm.filter((m) => typeof m !== 'string');
  check('plain WebSocket: the track list, the inits, then fragments of both tracks',
    tracksMsg?.tracks?.length === 2 && bins.filter((m) => m[1] === 0x69).length === 2
    && bins.filter((m) => m[0] === 0x76 && m[1] === 0x66).length > 40 && bins.filter((m) => m[0] === 0x61 && m[1] === 0x66).length > 60,
    `${JSON.stringify(tracksMsg)}; ${bins.length} binary messages`);

  // Chromium: watch.html plays it into MSE over each transport, and with WebCodecs.
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const ctx = await browser.newContext();
  for (const [label, query] of [['MSE, RTWebSocket over WebSocketStream (the first choice)', 'via=rtws'],
    ['MSE, RTWebSocket over WebSocket', 'via=rtws&transport=rtws'], ['MSE, plain WebSocket', 'via=rtws&transport=plain']]) {
    const page = await ctx.newPage();
    const warnings = [];
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') warnings.push(m.text()); });
    await page.goto(`${base}/watch.html?stream=live/cam&autoplay=1&${query}`);
    const first = await waitFor(() => page.evaluate(() => (window.onairState?.status === 'playing' ? window.onairState.stats : null)), 15_000, 250);
    await sleep(3000);
    const st = await page.evaluate(() => ({ s: window.onairState, t: document.querySelector('video').currentTime }));
    const stats = st.s.stats ?? {};
    const advanced = first && st.t - (first.current_time ?? 0) > 2;
    check(`Chromium, ${label}: playing, frames decoded, currentTime advancing, latency reported`,
      !!first && advanced && stats.frames_decoded > 60 && stats.latency_s > 0 && stats.latency_s < 1.5,
      JSON.stringify({ status: st.s.status, error: st.s.error, stats, t: st.t, warnings: warnings.slice(0, 5) }));
    figure(`Chromium ${label}: transport ${stats.transport}, latency ${stats.latency_s?.toFixed(3)} s (buffer ${stats.buffer_s?.toFixed(3)} s), `
      + `${stats.frames_decoded} frames decoded, ${stats.dropped_frames} dropped, ${stats.jumps} jumps`);
    await page.close();
  }
  // WebCodecs: fed by the CMAF mapping (latency from the server's clock to the drawn picture),
  // and by the TC mapping (as from any RTMP-over-RTWebSocket server).
  for (const [label, query, cmaf] of [['WebCodecs over RTWebSocket (CMAF)', 'via=webcodecs', true],
    ['WebCodecs over RTWebSocket (TC)', 'via=webcodecs&mapping=tc', false]]) {
    const wc = await ctx.newPage();
    await wc.goto(`${base}/watch.html?stream=live/cam&autoplay=1&${query}`);
    const wcFirst = await waitFor(() => wc.evaluate(() => (window.onairState?.status === 'playing' ? window.onairState.stats : null)), 15_000, 250);
    await sleep(3000);
    const wcs = await wc.evaluate(() => window.onairState);
    const w = wcs.stats ?? {};
    check(`Chromium, ${label}: pictures decoded and drawn, sound played${cmaf ? ', latency reported' : ''}`,
      !!wcFirst && w.frames_drawn > 60 && w.frames_drawn > (wcFirst.frames_drawn ?? 0) + 45 && w.audio_played > 50 && w.width === 640
      && (!cmaf || (w.latency_s > 0 && w.latency_s < 1.5)),
      JSON.stringify({ status: wcs.status, error: wcs.error, stats: w }));
    figure(`Chromium ${label}: ${w.frames_decoded} decoded, ${w.frames_drawn} drawn, ${w.dropped_frames} dropped, ${w.audio_played} audio frames played `
      + `(${w.audio_late} late), latency ${w.latency_s == null ? 'n/a (TC has no server clock)' : `${w.latency_s.toFixed(3)} s`}, playout ${w.playout_delay_s} s after arrival`);
    await wc.close();
  }

  // Publishing over RTWebSocket: Chromium's camera through WebCodecs (H.264 + Opus) over the TC
  // mapping, where WebRTC would be blocked. The hub has it like any publish: our CMAF client
  // and Chromium's watch page play it back.
  const pubPage = await ctx.newPage();
  const pubWarnings = [];
  pubPage.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') pubWarnings.push(m.text()); });
  await pubPage.goto(`${base}/publish.html?stream=live/wc&via=rtws&autostart=1`);
  const published = await waitFor(async () => {
    const list = await (await fetch(`${base}/api/streams`)).json();
    const st = list.find((x) => x.name === 'live/wc');
    return st && st.tracks.some((t) => t.codec === 'h264' && t.width > 0) && st.tracks.some((t) => t.codec === 'opus') ? st : null;
  }, 20_000, 300);
  check('Chromium publishes over RTWebSocket (WebCodecs): the hub has live/wc from rtws with H.264 and Opus',
    published?.source === 'rtws', JSON.stringify({ published, page: await pubPage.evaluate(() => window.onairState), warnings: pubWarnings.slice(0, 5) }));
  if (published) {
    const back = cmafClient(httpPort, 'live', 'wc');
    await sleep(3000);
    const bv = back.flows.find((f) => f.kind === 'v')?.messages.filter((m) => m.type === 'f') ?? [];
    const ba = back.flows.find((f) => f.kind === 'a')?.messages.filter((m) => m.type === 'f') ?? [];
    back.ws.close();
    check('…our CMAF client plays it back: video and audio frames at their rates', bv.length > 45 && ba.length > 90,
      `${bv.length} video, ${ba.length} audio fragments in 3 s`);
    const watch = await ctx.newPage();
    await watch.goto(`${base}/watch.html?stream=live/wc&autoplay=1&via=rtws`);
    const seen = await waitFor(() => watch.evaluate(() => {
      const st = window.onairState;
      return st?.status === 'playing' && st.stats?.frames_decoded > 30 ? st.stats : null;
    }), 15_000, 250);
    check('…and Chromium watches it over RTWebSocket (MSE): frames decoded', !!seen,
      JSON.stringify(await watch.evaluate(() => window.onairState)));
    const ps = await pubPage.evaluate(() => window.onairState.stats);
    figure(`RTWebSocket publish from Chromium (WebCodecs): ${ps?.video} video frames (${ps?.keyframes} keyframes), ${ps?.audio} audio, `
      + `${ps?.dropped} dropped; played back ${bv.length} video / ${ba.length} audio fragments in 3 s; watch latency ${seen?.latency_s?.toFixed(3)} s`);
    await watch.close();
  }
  await pubPage.evaluate(() => document.querySelector('#stop').click());
  const gone = await waitFor(async () => !(await (await fetch(`${base}/api/streams`)).json()).some((x) => x.name === 'live/wc'), 5000, 200);
  check('Stop ends the RTWebSocket publish (the stream leaves the hub)', !!gone);
  await pubPage.close();
  return 0;
}

/** A Node client of the CMAF mapping: opens the request flow and records what comes. */
function cmafClient(port, app, key) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/rtws/${app}`);
  const conn = new RtwsConnection(ws);
  const out = { ws, flows: [], rejected: null };
  conn.onexception = (flow, code, text) => { out.rejected = { flow, code, text }; };
  conn.onflow = (flow, meta, assoc) => {
    const f = { flow, assoc, kind: String.fromCharCode(meta[4]), codecs: new TextDecoder().decode(meta.subarray(5)), messages: [] };
    out.flows.push(f);
    return {
      onmessage: (m) => {
        if (m[0] === 0x69) {
          f.messages.push({ type: 'i', box: String.fromCharCode(...m.subarray(2 + m[1] + 4, 2 + m[1] + 8)) });
        } else {
          const us = Number(new DataView(m.buffer, m.byteOffset).getBigUint64(2));
          f.messages.push({ type: 'f', key: m[1] === 1, box: String.fromCharCode(...m.subarray(14, 18)), transitMs: Date.now() - us / 1000 });
        }
      },
    };
  };
  // A ping first (the spec allows any order): the server picks the mapping at the first flow.
  conn.opened.then(() => {
    conn.ping(Uint8Array.of(1, 2, 3));
    conn.open(0, new TextEncoder().encode(`CMAF${key}`));
  });
  return out;
}

await runMain(main, summary, finish);
