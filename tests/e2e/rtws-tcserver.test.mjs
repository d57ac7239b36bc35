#!/usr/bin/env node
// onair's RTWebSocket TC client (web/rtws.js: TcPlayer, TcPublisher) against the reference
// server of the protocol's author (tcserver, from github.com/zenomt/rtmfp-cpp, built at test
// time: ONAIR_TCSERVER_BIN), inside a loopback-only network namespace:
// - FFmpeg publishes H.264 + AAC over RTMP to tcserver; TcPlayer plays it over RTWebSocket:
//   Play.Start, the sequence headers, a keyframe first, audio and video at their rates;
// - TcPublisher publishes those tags again to tcserver (NetStream.Publish.Start) and a second
//   TcPlayer plays them back from tcserver.
// Without ONAIR_TCSERVER_BIN it says so and exits 0 (.ci/run says whether it could build one).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  enterLoopbackNamespace, freeTcpPort, results, runMain, sleep, waitFor, withWebSocket,
} from './harness.mjs';

const OVERALL_TIMEOUT_MS = 90_000;
const FFMPEG = process.env.FFMPEG || 'ffmpeg';
const TCSERVER = process.env.ONAIR_TCSERVER_BIN;

if (!TCSERVER || !fs.existsSync(TCSERVER)) {
  console.log('# ONAIR_TCSERVER_BIN is not set (no reference tcserver was built): not run');
  process.exit(0);
}
await withWebSocket(import.meta.url);
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);
const { RtwsConnection, TcPlayer, TcPublisher } = await import('../../web/rtws.js');

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-tcserver-${process.pid}.log`);
let server = null;
let ffmpeg = null;
const sockets = [];

async function finish(code) {
  if (code !== 0) {
    let log = '(no log)';
    try { log = fs.readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-20).join('\n'); } catch { /* none */ }
    console.log(`# tcserver log (${logPath}):\n${log.replace(/^/gm, '#   ')}`);
  }
  for (const ws of sockets) { try { ws.close(); } catch { /* closed */ } }
  if (ffmpeg && ffmpeg.exitCode === null) ffmpeg.kill('SIGKILL');
  if (server && server.exitCode === null) server.kill('SIGKILL');
  process.exit(code);
}
setTimeout(() => { console.log('not ok - overall timeout'); finish(1); }, OVERALL_TIMEOUT_MS - 5000).unref();

function play(url, app, name) {
  const ws = new WebSocket(url);
  sockets.push(ws);
  const conn = new RtwsConnection(ws);
  const p = new TcPlayer(conn, { app });
  const got = { statuses: [], video: [], audio: [], errors: [] };
  p.onstatus = (info) => got.statuses.push(info?.code);
  p.onmedia = (m) => {
    if (m.type === 9) got.video.push({ ts: m.timestamp, body: m.body.slice() });
    if (m.type === 8) got.audio.push({ ts: m.timestamp, body: m.body.slice() });
  };
  conn.onerror = (e) => got.errors.push(String(e));
  p.play(name).catch((e) => got.errors.push(String(e)));
  return { p, got };
}

// FLV tag bodies: AVC sequence header 0x17 0x00, keyframe 0x17 0x01, inter 0x27 0x01; AAC
// sequence header 0xaf 0x00, frames 0xaf 0x01.
const isVideoConfig = (b) => b[0] === 0x17 && b[1] === 0;
const isKey = (b) => b[0] === 0x17 && b[1] === 1;
const isCoded = (b) => (b[0] === 0x17 || b[0] === 0x27) && b[1] === 1;

async function main() {
  const rtmpPort = await freeTcpPort();
  const wsPort = await freeTcpPort();
  const url = `ws://127.0.0.1:${wsPort}/`;
  server = spawn(TCSERVER, ['-b', `127.0.0.1:${rtmpPort}`, '-w', `127.0.0.1:${wsPort}`],
    { stdio: ['ignore', fs.openSync(logPath, 'w'), fs.openSync(logPath, 'a')] });
  await sleep(500);
  if (!check('tcserver runs', server.exitCode === null)) return 1;
  ffmpeg = spawn(FFMPEG, ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', '30', '-pix_fmt', 'yuv420p',
    '-c:a', 'aac', '-ar', '48000', '-f', 'flv', `rtmp://127.0.0.1:${rtmpPort}/live/cam`], { stdio: 'ignore' });
  await sleep(1500);

  const a = play(url, 'live', 'cam');
  await sleep(5000);
  const g = a.got;
  check('TcPlayer ← tcserver: NetStream.Play.Start', g.statuses.includes('NetStream.Play.Start') && g.errors.length === 0,
    JSON.stringify({ statuses: g.statuses, errors: g.errors }));
  const firstCoded = g.video.findIndex((m) => isCoded(m.body));
  check('TcPlayer ← tcserver: the AVC sequence header, then a keyframe first', g.video.length > 0 && isVideoConfig(g.video[0].body)
    && firstCoded > 0 && isKey(g.video[firstCoded].body), g.video.slice(0, 3).map((m) => Array.from(m.body.slice(0, 2))).join(' '));
  check('TcPlayer ← tcserver: video and audio at their rates (5 s)', g.video.length > 120 && g.audio.length > 190,
    `${g.video.length} video, ${g.audio.length} audio`);
  figure(`TcPlayer from tcserver: ${g.video.length} video, ${g.audio.length} audio messages in 5 s; statuses ${g.statuses.join(', ')}`);

  // TcPublisher → tcserver, played back by another TcPlayer.
  const ws = new WebSocket(url);
  sockets.push(ws);
  const pub = new TcPublisher(new RtwsConnection(ws), { app: 'live' });
  const statuses = [];
  pub.onstatus = (info) => statuses.push(info?.code);
  try {
    await pub.publish('again');
  } catch (e) {
    check('TcPublisher → tcserver: NetStream.Publish.Start', false, `${e} ${JSON.stringify(statuses)}`);
    return 1;
  }
  check('TcPublisher → tcserver: NetStream.Publish.Start', true);
  const vconf = g.video.find((m) => isVideoConfig(m.body));
  const aconf = g.audio.find((m) => m.body[1] === 0);
  const from = g.video.findIndex((m) => isKey(m.body));
  const t0 = g.video[from].ts;
  const frames = [...g.video.slice(from).filter((m) => isCoded(m.body)).map((m) => ({ ...m, v: true })),
    ...g.audio.filter((m) => m.body[1] === 1 && m.ts >= t0)].sort((x, y) => x.ts - y.ts);
  pub.video(0, vconf.body, true);
  pub.audio(0, aconf.body);
  const b = play(url, 'live', 'again');
  const wall0 = performance.now();
  for (const f of frames) {
    const wait = wall0 + (f.ts - t0) - performance.now();
    if (wait > 0) await sleep(wait);
    if (f.v) pub.video(f.ts - t0, f.body, isKey(f.body));
    else pub.audio(f.ts - t0, f.body);
  }
  await sleep(500);
  const bv = b.got.video.filter((m) => isCoded(m.body));
  check('TcPlayer ← tcserver ← TcPublisher: Play.Start, then video from a keyframe and audio', b.got.statuses.includes('NetStream.Play.Start')
    && bv.length > 60 && isKey(bv[0].body) && b.got.audio.length > 100, JSON.stringify({ statuses: b.got.statuses, video: bv.length,
    audio: b.got.audio.length, errors: b.got.errors }));
  figure(`TcPublisher → tcserver → TcPlayer: ${bv.length} video, ${b.got.audio.length} audio messages; publisher dropped ${pub.dropped}`);
  return 0;
}

await runMain(main, summary, finish);
