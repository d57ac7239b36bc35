#!/usr/bin/env node
// RTWebSocket (TC mapping) end to end, inside a loopback-only network namespace: FFmpeg
// publishes H.264 + AAC over RTMP; our Node client (web/rtws.js: the wire format, acks and the
// TC commands, byte for byte as ../shared/specs/rtwebsocket.md says) connects to
// ws://HOST/rtws/live and plays the stream: the flows the server opens, the sequence headers,
// the frames and their pacing. A second connection that sends a malformed message is closed
// with the reason, and the first plays on. Needs Node's WebSocket (`--experimental-websocket`
// on Node 20; the script re-runs itself with it).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { enterLoopbackNamespace, freeMediaPort, freeTcpPort, results, sleep, waitFor } from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OVERALL_TIMEOUT_MS = 90_000;
const FFMPEG = process.env.FFMPEG || 'ffmpeg';

if (typeof WebSocket === 'undefined') {
  const child = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', ...process.execArgv,
    fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
  await new Promise(() => {});
}
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);
const { RtwsConnection, TcPlayer } = await import('../../web/rtws.js');

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-rtws-${process.pid}.log`);
let server = null;
let ffmpeg = null;

async function finish(code) {
  if (code !== 0) {
    let log = '(no log)';
    try { log = fs.readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-30).join('\n'); } catch { /* none */ }
    console.log(`# server log (${logPath}):\n${log.replace(/^/gm, '#   ')}`);
  }
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
  const mediaFlows = a.p.flows.filter((f) => f.streamId === 1 && f.returnAssoc === 1);
  check('the server opened data, audio and video flows for stream 1, associated with the play flow',
    mediaFlows.length === 3 && a.p.flows.some((f) => f.streamId === 0 && f.returnAssoc === 0), JSON.stringify(a.p.flows));
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
  a.ws.close();
  return 0;
}

let code = 1;
try {
  code = await main();
} catch (e) {
  console.log(`not ok - ${e.stack || e}`);
}
const failed = summary();
await finish(failed === 0 && code === 0 ? 0 : code || 1);
