#!/usr/bin/env node
// RTWebSocket TC interoperability, inside a loopback-only network namespace: the protocol
// author's reference client (tcconn.js with rtws.js, amf0.js and tcmessage.js, from the public
// rtwebsocket repository) against onair, in Node, driven through its own API:
// - it plays an FFmpeg RTMP publish: NetStream.Play.Reset then Play.Start on the stream, the
//   sequence headers, a keyframe first, audio and video at their rates; pause/resume and
//   receiveVideo(false) hold media back (video resumes at a keyframe); deleteStream lets go;
// - it publishes (the FLV tags it played, sent again in real time): NetStream.Publish.Start,
//   the hub has the stream, ffprobe reads it as LL-HLS, Chromium plays it over WHEP; another
//   reference player of it hears Play.UnpublishNotify then Play.Stop when the publish ends.
//
// The reference code is never part of this repository: ONAIR_RTWS_REFERENCE names a directory
// holding those four files (.ci/run fetches them at test time). Without it the same checks run
// against tests/e2e/tcconn-fixture.mjs, a stand-in written from the protocol's text, and the
// test says so in its first line of output. ONAIR_RTWS_REQUIRE_REFERENCE=1 makes a missing
// reference a failure.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, loadTcClient, results, runMain, sleep, waitFor,
  withWebSocket,
} from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OVERALL_TIMEOUT_MS = 150_000;
const FFMPEG = process.env.FFMPEG || 'ffmpeg';

await withWebSocket(import.meta.url);
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);

const { TCConnection, label, fixture } = await loadTcClient();
console.log(fixture
  ? `# THE REFERENCE CLIENT IS NOT AVAILABLE (ONAIR_RTWS_REFERENCE unset or incomplete): these checks run against ${label}`
  : `# client: ${label}`);
if (fixture && process.env.ONAIR_RTWS_REQUIRE_REFERENCE === '1') {
  console.log('not ok - the reference client is required (ONAIR_RTWS_REQUIRE_REFERENCE=1)');
  process.exit(1);
}

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-rtws-interop-${process.pid}.log`);
let server = null;
let ffmpeg = null;
let browser = null;
const conns = [];

async function finish(code) {
  if (code !== 0) {
    let log = '(no log)';
    try { log = fs.readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-30).join('\n'); } catch { /* none */ }
    console.log(`# server log (${logPath}):\n${log.replace(/^/gm, '#   ')}`);
  }
  for (const c of conns) { try { c.close(); } catch { /* closed */ } }
  await browser?.close().catch(() => {});
  if (ffmpeg && ffmpeg.exitCode === null) ffmpeg.kill('SIGKILL');
  if (server && server.exitCode === null) server.kill('SIGKILL');
  process.exit(code);
}
setTimeout(() => { console.log('not ok - overall timeout'); finish(1); }, OVERALL_TIMEOUT_MS - 5000).unref();

/** Connects, creates a stream and plays `name`, recording statuses and media. */
async function referencePlayer(url, name) {
  const conn = new TCConnection();
  conns.push(conn);
  const got = { conn: [], statuses: [], video: [], audio: [] };
  conn.onstatus = (e) => got.conn.push(e.info?.code);
  await conn.connect(url);
  const stream = await conn.createStream();
  stream.onstatus = (e) => got.statuses.push(e.info?.code);
  // The whole TC message (5-byte header, then the FLV tag body), kept to publish again.
  stream.onvideo = (h, m) => got.video.push({ at: performance.now(), ts: h.timestamp, config: !!h.isConfiguration,
    coded: !!h.isCodedFrame, key: h.frametype === 0x10, body: m.slice(5) });
  stream.onaudio = (h, m) => got.audio.push({ at: performance.now(), ts: h.timestamp, config: !!h.isConfiguration, body: m.slice(5) });
  stream.play(name);
  return { conn, stream, got };
}

const coded = (list) => list.filter((m) => m.coded);
const since = (list, t) => list.filter((m) => m.at >= t);

async function main() {
  const bin = path.resolve(HERE, process.env.ONAIR_BIN || '../../target/release/onair');
  if (!fs.existsSync(bin)) {
    console.error(`error: server binary ${bin} not found (cargo build --release, or set ONAIR_BIN)`);
    return 2;
  }
  const httpPort = await freeTcpPort();
  const rtmpPort = await freeTcpPort();
  const base = `http://127.0.0.1:${httpPort}`;
  const wsUrl = `ws://127.0.0.1:${httpPort}/rtws/live`;
  // (The test's own ONAIR_RTWS_* variables are not server configuration.)
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ONAIR_RTWS_') && k !== 'ONAIR_TCSERVER_BIN'));
  server = spawn(bin, [], {
    env: { ...env, ONAIR_HTTP_LISTEN: `127.0.0.1:${httpPort}`, ONAIR_MEDIA_PORT: String(await freeMediaPort()),
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

  // ------------------------------------------------------------------ the client plays
  let a;
  try {
    a = await referencePlayer(wsUrl, 'cam');
  } catch (e) {
    check('connect and createStream answered', false, String(e?.stack ?? e));
    return 1;
  }
  check('connect and createStream answered (the app from the URL, "rtws/live", is live)', true);
  await sleep(5000);
  const g = a.got;
  check('the stream hears NetStream.Play.Reset then NetStream.Play.Start', g.statuses[0] === 'NetStream.Play.Reset'
    && g.statuses[1] === 'NetStream.Play.Start', JSON.stringify({ stream: g.statuses, connection: g.conn }));
  const v = g.video;
  const firstCoded = v.findIndex((m) => m.coded);
  check('video: the sequence header first, then a keyframe first of the frames', v[0]?.config && firstCoded > 0 && v[firstCoded].key,
    JSON.stringify(v.slice(0, 3).map(({ ts, config, coded: c, key }) => ({ ts, config, coded: c, key }))));
  check('video: more than 120 frames in 5 s (30 fps)', coded(v).length > 120, `${coded(v).length}`);
  check('audio: the AAC sequence header first, then frames (more than 190 in 5 s)', g.audio[0]?.config
    && g.audio.slice(1).filter((m) => !m.config).length > 190, `${g.audio.length} audio messages`);
  const ts = coded(v).map((m) => m.ts);
  check('video timestamps only go forward', ts.length > 0 && ts.every((t, i) => i === 0 || t >= ts[i - 1]), ts.slice(0, 8).join(','));
  figure(`play: ${coded(v).length} video frames and ${g.audio.length} audio messages in 5 s; statuses ${g.statuses.join(', ')}`);

  // pause / resume: nothing while paused (after what was in flight), video resumes at a keyframe.
  a.stream.pause();
  await sleep(300);
  const pausedAt = performance.now();
  await sleep(1000);
  const duringPause = since(coded(v), pausedAt).length + since(g.audio, pausedAt).length;
  a.stream.resume();
  const resumedAt = performance.now();
  await sleep(1500);
  const afterResume = since(coded(v), resumedAt);
  check('pause: no media while paused; resume: video again, from a keyframe', duringPause === 0 && afterResume.length > 15
    && afterResume[0].key, `${duringPause} messages while paused; ${afterResume.length} frames after, first key ${afterResume[0]?.key}`);
  a.stream.receiveVideo(false);
  await sleep(300);
  const noVideoAt = performance.now();
  await sleep(1000);
  check('receiveVideo(false): audio goes on, video stops', since(coded(v), noVideoAt).length === 0
    && since(g.audio, noVideoAt).length > 30, `${since(coded(v), noVideoAt).length} video, ${since(g.audio, noVideoAt).length} audio in 1 s`);
  a.stream.receiveVideo(true);
  await sleep(1500);

  // ------------------------------------------------------------------ the client publishes
  const pub = new TCConnection();
  conns.push(pub);
  await pub.connect(wsUrl);
  const ps = await pub.createStream();
  const pubStatuses = [];
  ps.onstatus = (e) => pubStatuses.push(e.info?.code);
  ps.publish('ref');
  const started = await waitFor(() => pubStatuses.includes('NetStream.Publish.Start'), 5000, 50);
  if (!check('publish: the stream hears NetStream.Publish.Start', !!started, JSON.stringify(pubStatuses))) return 1;
  // What it played, sent again in real time from the first keyframe, looped.
  const vconf = v.find((m) => m.config);
  const aconf = g.audio.find((m) => m.config);
  const start = v.indexOf(v.find((m) => m.coded && m.key));
  const t0 = v[start].ts;
  const frames = [...v.slice(start).filter((m) => m.coded).map((m) => ({ ...m, kind: 'v' })),
    ...g.audio.filter((m) => !m.config && m.ts >= t0).map((m) => ({ ...m, kind: 'a' }))].sort((x, y) => x.ts - y.ts);
  const span = frames[frames.length - 1].ts - t0 + 33;
  let publishing = true;
  const sender = (async () => {
    ps.sendVideo(undefined, 0, vconf.body);
    ps.sendAudio(undefined, 0, aconf.body);
    const wall0 = performance.now();
    for (let loop = 0; publishing; loop++) {
      for (const f of frames) {
        if (!publishing) return;
        const due = loop * span + f.ts - t0;
        const wait = wall0 + due - performance.now();
        if (wait > 0) await sleep(wait);
        if (f.kind === 'v') ps.sendVideo(undefined, due, f.body);
        else ps.sendAudio(undefined, due, f.body);
      }
      // A new loop starts at a keyframe: the decoder takes it as a fresh start.
    }
  })();
  const listed = await waitFor(async () => {
    const s = (await (await fetch(`${base}/api/streams`)).json()).find((x) => x.name === 'live/ref');
    return s && s.tracks.some((t) => t.codec === 'h264') && s.tracks.some((t) => t.codec === 'aac') ? s : null;
  }, 10_000, 300);
  check('publish: the hub has live/ref from rtws with H.264 and AAC', listed?.source === 'rtws', JSON.stringify(listed));

  // LL-HLS: the playlist gets segments and ffprobe reads the stream through it.
  const dir = `${base}/hls/live/ref`;
  const segment = await waitFor(async () => {
    const r = await fetch(`${dir}/media.m3u8`).catch(() => null);
    const text = r?.ok ? await r.text() : '';
    return /#EXTINF/.test(text) ? text : null;
  }, 20_000, 500);
  check('publish → LL-HLS: media.m3u8 lists a complete segment', !!segment);
  const probe = spawnSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name', '-of', 'csv=p=0', `${dir}/index.m3u8`],
    { encoding: 'utf8', timeout: 20_000 });
  // (Streams are printed once per program and once at top level: compare the set.)
  const codecs = [...new Set(probe.stdout.split('\n').map((l) => l.replace(/,$/, '').trim()).filter(Boolean))].sort().join(',');
  check('publish → LL-HLS: ffprobe reads h264 + aac through index.m3u8', codecs === 'aac,h264', `${codecs} ${probe.stderr.trim().slice(0, 300)}`);

  // WHEP: Chromium's watch page decodes its video and hears its audio (the AAC's Opus twin).
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${base}/watch.html?stream=live/ref&autoplay=1`);
  const whep = await waitFor(() => page.evaluate(async () => {
    const pc = window.onairSession?.pc;
    if (!pc) return null;
    const out = {};
    (await pc.getStats()).forEach((x) => { if (x.type === 'inbound-rtp') out[x.kind] = x; });
    return out.video?.framesDecoded > 30 && out.audio?.packetsReceived > 50
      ? { frames: out.video.framesDecoded, width: out.video.frameWidth, audioPackets: out.audio.packetsReceived } : null;
  }), 20_000, 500);
  check('publish → WHEP: Chromium decodes its video and receives its audio', !!whep && whep.width === 640, JSON.stringify(whep));
  figure(`publish: Publish.Start, then ${listed?.tracks?.map((t) => t.codec).join('+')} in the hub; WHEP in Chromium: ${JSON.stringify(whep)}`);

  // Another player of live/ref hears the publish end: UnpublishNotify, then Play.Stop.
  const b = await referencePlayer(wsUrl, 'ref');
  const bPlaying = await waitFor(() => coded(b.got.video).length > 10, 5000, 100);
  check('a second client plays live/ref', !!bPlaying, JSON.stringify(b.got.statuses));
  publishing = false;
  await sender;
  ps.deleteStream();
  const ended = await waitFor(() => b.got.statuses.includes('NetStream.Play.Stop'), 5000, 100);
  const tail = b.got.statuses.slice(-2);
  check('publish ends (deleteStream): the player hears Play.UnpublishNotify then Play.Stop', !!ended
    && tail[0] === 'NetStream.Play.UnpublishNotify' && tail[1] === 'NetStream.Play.Stop', JSON.stringify(b.got.statuses));
  const gone = await waitFor(async () => !(await (await fetch(`${base}/api/streams`)).json()).some((x) => x.name === 'live/ref'), 5000, 200);
  check('…and live/ref leaves the hub', !!gone);

  // deleteStream on the first player: onair lets its reader go.
  a.stream.deleteStream();
  const released = await waitFor(async () => {
    const s = (await (await fetch(`${base}/api/streams`)).json()).find((x) => x.name === 'live/cam');
    return s && !s.readers?.rtws ? s : null;
  }, 5000, 200);
  check('play: deleteStream ends the play (no rtws reader left on live/cam)', !!released);
  return 0;
}

await runMain(main, summary, finish);
