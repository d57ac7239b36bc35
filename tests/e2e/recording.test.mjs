#!/usr/bin/env node
// End-to-end test of recording started and stopped through the API, with real clients:
//   FFmpeg publishes over RTMP; POST /api/recordings {"stream"} records it (a second start is a
//   409), POST /api/recordings/stop finishes the file, which ffprobe reads (h264 + aac, about
//   as long as it was recorded). Three Chromium participants in a room (two H.264, one VP8): POST
//   {"room"} records each one's video and audio to files of their own, with a JSON manifest
//   of when each starts and ends — alice and bob from the start, bob leaving early, carol
//   joining later. ffprobe reads every track file, one stream of the right codec, about as
//   long as the manifest says. Bad requests get 4xx.
// Server config: recording.enabled with recording.streams = [] (nothing recorded unless asked).
// Runs itself inside shared/tools/netns-run unless it already is in one.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, results, runMain, sleep, waitFor,
} from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OVERALL_TIMEOUT_MS = 120_000;
const FFMPEG = process.env.FFMPEG || 'ffmpeg';
const FFPROBE = process.env.FFPROBE || 'ffprobe';

await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);
const { chromium } = await import('playwright-core');

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-rec-${process.pid}.log`);
let server = null;
let ffmpeg = null;
let browser = null;

async function finish(code) {
  if (code !== 0) {
    let log = '(no log)';
    try { log = fs.readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-40).join('\n'); } catch { /* none */ }
    console.log(`# server log (${logPath}):\n${log.replace(/^/gm, '#   ')}`);
  }
  if (ffmpeg && ffmpeg.exitCode === null) ffmpeg.kill('SIGKILL');
  if (server && server.exitCode === null) server.kill('SIGKILL');
  if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
  process.exit(code);
}
setTimeout(() => { console.log('not ok - overall timeout'); finish(1); }, OVERALL_TIMEOUT_MS - 5000).unref();

function probe(file) {
  const r = spawnSync(FFPROBE, ['-v', 'error', '-show_entries', 'stream=codec_name,codec_type:format=duration', '-of', 'json', file],
    { encoding: 'utf8' });
  try {
    const j = JSON.parse(r.stdout);
    return { codecs: j.streams.map((s) => s.codec_name).sort().join(','), duration: Number(j.format.duration), err: r.stderr.trim() };
  } catch {
    return { codecs: '', duration: 0, err: r.stderr.trim() };
  }
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
  const recDir = fs.mkdtempSync(path.join(os.tmpdir(), 'onair-rec-api-'));
  server = spawn(bin, [], {
    env: {
      ...process.env,
      ONAIR_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
      ONAIR_MEDIA_PORT: String(await freeMediaPort()),
      ONAIR_RTMP_LISTEN: `127.0.0.1:${rtmpPort}`,
      ONAIR_TURN_ENABLED: 'false',
      ONAIR_HLS_ENABLED: 'false',
      ONAIR_RECORDING_ENABLED: 'true',
      ONAIR_RECORDING_DIR: recDir,
      ONAIR_RECORDING_STREAMS: '[]',
    },
    stdio: ['ignore', fs.openSync(logPath, 'w'), fs.openSync(logPath, 'a')],
  });
  const up = await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok, 15_000, 200);
  if (!check('server up', !!up)) return 1;
  const api = async (p, body) => {
    const r = await fetch(`${base}/api/recordings${p}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, json, text };
  };

  // Bad requests first: nothing is live, nothing is recorded.
  for (const [p, body, want] of [
    ['', '{"stream":"live/none"}', 404], ['', '{}', 400], ['', 'not json', 400], ['', '{"stream":"a","room":"b"}', 400],
    ['', '{"room":"a/b"}', 400], ['', '{"stream":"../etc"}', 400], ['/stop', '{"stream":"live/none"}', 404],
    ['/stop', '{"room":"nothing"}', 404],
  ]) {
    const r = await api(p, body);
    check(`POST /api/recordings${p} ${body} → ${want}`, r.status === want && typeof r.json?.error === 'string', `${r.status} ${r.text}`);
  }

  // ---------------------------------------------------------------- a stream, by API
  ffmpeg = spawn(FFMPEG, ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-pix_fmt', 'yuv420p', '-g', '30',
    '-c:a', 'aac', '-ar', '48000', '-f', 'flv', `rtmp://127.0.0.1:${rtmpPort}/live/api`], { stdio: 'ignore' });
  const live = await waitFor(async () => {
    const s = await (await fetch(`${base}/api/streams`)).json();
    return s.find((x) => x.name === 'live/api' && x.tracks.length >= 2);
  }, 15_000, 200);
  if (!check('FFmpeg publishes live/api', !!live, JSON.stringify(await (await fetch(`${base}/api/streams`)).json()))) return 1;
  await sleep(1000);
  const started = await api('', '{"stream":"live/api"}');
  const t0 = Date.now();
  check('POST /api/recordings {"stream":"live/api"} → 201 recording', started.status === 201 && started.json?.state === 'recording', started.text);
  const again = await api('', '{"stream":"live/api"}');
  check('a second start of the same stream → 409', again.status === 409, `${again.status} ${again.text}`);
  await sleep(6000);
  const stopped = await api('/stop', '{"stream":"live/api"}');
  const recordedFor = (Date.now() - t0) / 1000;
  check('POST /api/recordings/stop → 200 stopped', stopped.status === 200 && stopped.json?.state === 'stopped', stopped.text);
  const rec = await waitFor(async () => {
    const list = await (await fetch(`${base}/api/recordings`)).json();
    return list.find((r) => r.stream === 'live/api' && r.state === 'done');
  }, 5_000, 200);
  if (check('the stream\'s file is listed done', !!rec, JSON.stringify(await (await fetch(`${base}/api/recordings`)).json()))) {
    const p = probe(path.join(recDir, rec.file));
    check(`ffprobe: h264 + aac, about the ${recordedFor.toFixed(1)} s between start and stop`,
      p.codecs === 'aac,h264' && Math.abs(p.duration - recordedFor) < 2, JSON.stringify(p));
    figure(`stream recording ${rec.file}: ${p.duration} s for ${recordedFor.toFixed(1)} s between the API calls`);
  }
  const stillLive = (await (await fetch(`${base}/api/streams`)).json()).some((x) => x.name === 'live/api');
  check('stopping the recording leaves the stream live', stillLive);
  ffmpeg.kill('SIGTERM');

  // ---------------------------------------------------------------- a room, by API
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  // alice and bob send H.264; carol her browser's own choice (VP8), recorded as vp08.
  const join = async (name, codec = 'h264') => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${base}/room.html?room=rec&name=${name}&autojoin=1${codec ? `&codec=${codec}` : ''}`);
    return { ctx, page };
  };
  const members = async () => (await (await fetch(`${base}/api/streams`)).json())
    .filter((s) => s.name.startsWith('rec/') && s.tracks.length === 2).map((s) => s.name).sort();
  const alice = await join('alice');
  const bob = await join('bob');
  const both = await waitFor(async () => ((await members()).length === 2 ? true : null), 20_000, 300);
  if (!check('alice and bob publish in room rec', !!both, JSON.stringify(await members()))) return 1;
  const roomStart = await api('', '{"room":"rec"}');
  check('POST /api/recordings {"room":"rec"} → 201 with both members and a manifest',
    roomStart.status === 201 && roomStart.json?.members?.length === 2 && /^room-rec-.*\.json$/.test(roomStart.json?.manifest ?? ''),
    roomStart.text);
  const roomAgain = await api('', '{"room":"rec"}');
  check('a second start of the same room → 409', roomAgain.status === 409, `${roomAgain.status} ${roomAgain.text}`);
  await sleep(4000);
  await bob.ctx.close(); // bob leaves: his files end early
  const carol = await join('carol', ''); // carol joins: her files start late
  await waitFor(async () => ((await members()).includes('rec/carol') ? true : null), 20_000, 300);
  await sleep(5000);
  const roomStop = await api('/stop', '{"room":"rec"}');
  check('POST /api/recordings/stop {"room":"rec"} → 200', roomStop.status === 200, roomStop.text);
  await alice.ctx.close();
  await carol.ctx.close();
  await sleep(500);

  const manifestFile = roomStart.json?.manifest;
  let manifest = null;
  try { manifest = JSON.parse(fs.readFileSync(path.join(recDir, manifestFile), 'utf8')); } catch { /* below */ }
  const dl = await fetch(`${base}/recordings/${manifestFile}`);
  check('the manifest downloads as JSON', dl.status === 200 && /application\/json/.test(dl.headers.get('content-type') || ''),
    `${dl.status} ${dl.headers.get('content-type')}`);
  const tracks = manifest?.tracks ?? [];
  const want = ['alice/audio', 'alice/video', 'bob/audio', 'bob/video', 'carol/audio', 'carol/video'];
  // A track can span several files: a new file begins when its codec configuration changes
  // (an H.264 publisher's new resolution, as a browser adapts to CPU or bandwidth).
  const have = [...new Set(tracks.map((t) => `${t.participant}/${t.kind}`))].sort();
  check('the manifest lists files for every participant track (alice, bob, carol × audio, video)',
    JSON.stringify(have) === JSON.stringify(want) && manifest.stopped_unix_ms > manifest.started_unix_ms
      && tracks.every((t) => t.codec),
    JSON.stringify(manifest));
  const files = (p, k) => tracks.filter((t) => t.participant === p && t.kind === k).sort((a, b) => a.start_ms - b.start_ms);
  const first = (p, k) => files(p, k)[0];
  const last = (p, k) => files(p, k).at(-1);
  const span = (t) => (t ? (t.end_ms - t.start_ms) / 1000 : 0);
  if (have.length === 6) {
    check('bob\'s files end before alice\'s; carol\'s start seconds after the recording began',
      last('bob', 'video').end_ms < last('alice', 'video').end_ms - 2000 && first('carol', 'video').start_ms > 3000
        && first('alice', 'video').start_ms < 1500,
      tracks.map((t) => `${t.participant}/${t.kind} ${t.start_ms}–${t.end_ms}`).join(', '));
    for (const t of tracks) {
      const p = probe(path.join(recDir, t.file));
      const codec = t.kind === 'audio' ? 'opus' : t.participant === 'carol' ? 'vp8' : 'h264';
      // FFmpeg decodes the whole file without an error. (WebRTC frames come at irregular
      // times: the null output keeps the input's time base and every frame, or it would
      // complain about frames that land in the same 1/fps slot.)
      const decode = spawnSync(FFMPEG, ['-v', 'error', '-i', path.join(recDir, t.file),
        '-enc_time_base:v', '1/90000', '-fps_mode', 'passthrough', '-f', 'null', '-'], { encoding: 'utf8' });
      check(`${t.file}: one ${codec} stream that FFmpeg decodes cleanly, ${p.duration} s, about the manifest's ${span(t).toFixed(1)} s`,
        p.codecs === codec && Math.abs(p.duration - span(t)) < 1.5 && decode.status === 0 && decode.stderr.trim() === '',
        JSON.stringify({ p, t, decode: decode.stderr.trim().slice(0, 300) }));
    }
    figure(`room recording: ${tracks.map((t) => `${t.participant}/${t.kind} ${(t.start_ms / 1000).toFixed(1)}–${(t.end_ms / 1000).toFixed(1)} s`).join(', ')}`);
  }
  return 0;
}

await runMain(main, summary, finish);
