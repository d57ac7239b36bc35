#!/usr/bin/env node
// End-to-end test of onair's LL-HLS output with real clients:
//   FFmpeg publishes H.264+AAC over RTMP; the multivariant and media playlists appear with the
//   low-latency tags; blocking playlist reloads answer when their part appears (measured against
//   a request for the same part); ffprobe reads init + a segment; hls.js in Chromium plays the
//   stream in low-latency mode (frames decoded, live latency reported); bad requests get 4xx;
//   when FFmpeg stops, the playlist ends with EXT-X-ENDLIST; the same publish was recorded to a
//   fragmented MP4 that ffprobe reads whole (both tracks, the publish's length), and a second
//   server, on HTTPS, serves watch.html's LL-HLS over HTTP/2 and, killed with SIGKILL
//   mid-recording, leaves a file that still plays up to the kill.
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
const OVERALL_TIMEOUT_MS = 180_000;
const RTMP_PORT = 1935;
const FFMPEG = process.env.FFMPEG || 'ffmpeg';
const FFPROBE = process.env.FFPROBE || 'ffprobe';
const PART_MS = 200;

await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);
const { chromium } = await import('playwright-core');

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-hls-${process.pid}.log`);
const ffLog = path.join(os.tmpdir(), `onair-e2e-hls-${process.pid}-ffmpeg.log`);
let server = null;
let ffmpeg = null;
let browser = null;

// A media playlist's complete segments, each with the EXT-X-MAP before it: a playlist can end
// with a new map (a resolution change) whose first segment is not complete yet, so "the last
// map" and "the last segment" need not go together.
function segmentsWithMaps(playlist) {
  let map = null;
  const out = [];
  for (const l of playlist.split('\n')) {
    if (l.startsWith('#EXT-X-MAP:')) map = l.match(/URI="([^"]+)"/)?.[1] ?? null;
    else if (l && !l.startsWith('#')) out.push({ uri: l, map });
  }
  return out;
}

function tail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function finish(code) {
  if (code !== 0) {
    console.log(`# server log (${logPath}):\n${tail(logPath).replace(/^/gm, '#   ')}`);
    console.log(`# ffmpeg log:\n${tail(ffLog, 10).replace(/^/gm, '#   ')}`);
  }
  if (ffmpeg && ffmpeg.exitCode === null) ffmpeg.kill('SIGKILL');
  if (server && server.exitCode === null) server.kill('SIGKILL');
  if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
  process.exit(code);
}
setTimeout(() => { console.log('not ok - overall timeout'); finish(1); }, OVERALL_TIMEOUT_MS - 5000).unref();

async function get(url, opts = {}) {
  const t0 = performance.now();
  const res = await fetch(url, opts);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body, text: body.toString('utf8'), ms: performance.now() - t0, at: performance.now() };
}

/** The (msn, part) of the playlist's PRELOAD-HINT. */
function hint(playlist) {
  const m = playlist.match(/#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([0-9a-f]+)-(\d+)\.(\d+)\.m4s"/);
  return m ? { sid: m[1], msn: Number(m[2]), part: Number(m[3]) } : null;
}

async function main() {
  const bin = path.resolve(HERE, process.env.ONAIR_BIN || '../../target/release/onair');
  if (!fs.existsSync(bin)) {
    console.error(`error: server binary ${bin} not found (cargo build --release, or set ONAIR_BIN)`);
    return 2;
  }
  for (const tool of [FFMPEG, FFPROBE]) {
    if (spawnSync(tool, ['-hide_banner', '-version'], { stdio: 'ignore' }).status !== 0) {
      console.error(`error: ${tool} not found (apt-get install -y ffmpeg)`);
      return 2;
    }
  }
  const hlsJs = path.join(HERE, 'node_modules/hls.js/dist/hls.min.js');
  if (!fs.existsSync(hlsJs)) {
    console.error('error: hls.js missing (cd tests/e2e && npm ci)');
    return 2;
  }
  const httpPort = await freeTcpPort();
  const base = `http://127.0.0.1:${httpPort}`;
  const log = fs.openSync(logPath, 'w');
  const recDir = fs.mkdtempSync(path.join(os.tmpdir(), 'onair-rec-'));
  server = spawn(bin, [], {
    env: {
      ...process.env,
      ONAIR_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
      ONAIR_MEDIA_PORT: String(await freeMediaPort()),
      ONAIR_RTMP_LISTEN: `127.0.0.1:${RTMP_PORT}`,
      ONAIR_TURN_ENABLED: 'false',
      ONAIR_RECORDING_ENABLED: 'true',
      ONAIR_RECORDING_DIR: recDir,
      ONAIR_RECORDING_STREAMS: '["live/hls"]',
    },
    stdio: ['ignore', log, log],
  });
  const up = await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok, 15_000, 200);
  if (!check('server up', !!up)) return 1;

  const ff = fs.openSync(ffLog, 'w');
  const startedAt = Date.now();
  ffmpeg = spawn(FFMPEG, ['-hide_banner', '-loglevel', 'warning', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-profile:v', 'baseline', '-pix_fmt', 'yuv420p',
    '-g', '30', '-b:v', '1000k', '-c:a', 'aac', '-b:a', '96k', '-ar', '48000',
    '-f', 'flv', `rtmp://127.0.0.1:${RTMP_PORT}/live/hls`], { stdio: ['ignore', ff, ff] });

  const dir = `${base}/hls/live/hls`;
  // The multivariant playlist is held until the first segment exists.
  const main = await waitFor(async () => {
    const r = await get(`${dir}/index.m3u8`);
    return r.status === 200 ? r : null;
  }, 20_000, 300);
  if (!check('index.m3u8 answers 200', !!main)) return 1;
  figure(`FFmpeg start → multivariant playlist: ${Date.now() - startedAt} ms`);
  check('multivariant: CODECS avc1 + mp4a.40.2, RESOLUTION 640x360',
    /CODECS="avc1\.[0-9a-f]{6},mp4a\.40\.2"/.test(main.text) && main.text.includes('RESOLUTION=640x360'), main.text);
  check('CORS and a short cache on playlists',
    main.headers.get('access-control-allow-origin') === '*' && /max-age=1\b/.test(main.headers.get('cache-control') || ''),
    `${main.headers.get('access-control-allow-origin')} / ${main.headers.get('cache-control')}`);

  const media = await get(`${dir}/media.m3u8`);
  const tags = ['#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES', '#EXT-X-PART-INF:PART-TARGET=0.200', '#EXT-X-PART:',
    '#EXT-X-PRELOAD-HINT:TYPE=PART', '#EXT-X-MAP:URI=', '#EXT-X-PROGRAM-DATE-TIME:', 'INDEPENDENT=YES'];
  const missing = tags.filter((t) => !media.text.includes(t));
  check('media.m3u8 has the LL-HLS tags', missing.length === 0, missing.length ? `missing ${missing}\n${media.text}` : '');

  // Blocking reload: ask for the hinted part's playlist and for the part itself at once; the
  // playlist must come back within one part duration of the part.
  const gaps = [];
  const waits = [];
  let h = hint(media.text);
  for (let i = 0; i < 10 && h; i++) {
    const [pl, part] = await Promise.all([
      get(`${dir}/media.m3u8?_HLS_msn=${h.msn}&_HLS_part=${h.part}`),
      get(`${dir}/${h.sid}-${h.msn}.${h.part}.m4s`),
    ]);
    if (pl.status !== 200 || part.status !== 200) {
      check(`blocking request ${i}: 200 for playlist and part`, false, `${pl.status} ${part.status} ${pl.text.slice(0, 200)}`);
      break;
    }
    const uri = `${h.sid}-${h.msn}.${h.part}.m4s`;
    if (!pl.text.includes(uri)) {
      check(`blocking answer ${i} lists ${uri}`, false, pl.text);
      break;
    }
    gaps.push(Math.abs(pl.at - part.at));
    waits.push(pl.ms);
    h = hint(pl.text);
  }
  gaps.sort((a, b) => a - b);
  waits.sort((a, b) => a - b);
  check('10 blocking reloads answered, each within one part duration of its part',
    gaps.length === 10 && gaps[gaps.length - 1] < PART_MS, `gaps ${gaps.map((g) => g.toFixed(1)).join(', ')} ms`);
  figure(`blocking reload wait for the next part: median ${waits[5]?.toFixed(0)} ms, max ${waits[waits.length - 1]?.toFixed(0)} ms; `
    + `playlist vs part arrival: max ${gaps[gaps.length - 1]?.toFixed(1)} ms`);

  // ffprobe reads init + the first complete segment.
  const withSegment = await get(`${dir}/media.m3u8?_HLS_msn=0`);
  const first = withSegment.text.match(/#EXTINF:([\d.]+),\n([0-9a-f]+-\d+\.m4s)/);
  const mapUri = withSegment.text.match(/#EXT-X-MAP:URI="([^"]+)"/)?.[1];
  if (check('a blocking request for segment 0 lists it complete', !!first && !!mapUri, withSegment.text)) {
    const [init, seg] = await Promise.all([get(`${dir}/${mapUri}`), get(`${dir}/${first[2]}`)]);
    check('init and segment: video/mp4, immutable', init.status === 200 && seg.status === 200
      && /immutable/.test(seg.headers.get('cache-control') || ''), `${init.status} ${seg.status} ${seg.headers.get('cache-control')}`);
    const file = path.join(os.tmpdir(), `onair-hls-${process.pid}.mp4`);
    fs.writeFileSync(file, Buffer.concat([init.body, seg.body]));
    const probe = spawnSync(FFPROBE, ['-v', 'error', '-show_entries', 'stream=codec_name,width,height,sample_rate:format=duration',
      '-of', 'json', file], { encoding: 'utf8' });
    let info = null;
    try { info = JSON.parse(probe.stdout); } catch { /* below */ }
    const codecs = (info?.streams || []).map((s) => s.codec_name).sort().join(',');
    const dur = Number(info?.format?.duration);
    check('ffprobe: h264 640x360 + aac, duration ≈ the EXTINF',
      codecs === 'aac,h264' && info.streams.some((s) => s.width === 640 && s.height === 360) && Math.abs(dur - Number(first[1])) < 0.15,
      `${probe.stderr.trim()} ${JSON.stringify(info)}`);
    figure(`first segment: EXTINF ${first[1]} s, ffprobe ${dur} s, ${seg.body.length} bytes`);
  }

  // FFmpeg's own HLS client reads the playlists over HTTP (the plain-HLS view of the stream).
  const viaHls = spawnSync(FFPROBE, ['-v', 'error', '-show_entries', 'stream=codec_name', '-of', 'csv=p=0',
    `${dir}/index.m3u8`], { encoding: 'utf8', timeout: 20_000 });
  // (Streams are printed once per program and once at top level: compare the set.)
  const hlsCodecs = [...new Set(viaHls.stdout.split('\n').map((l) => l.replace(/,$/, '').trim()).filter(Boolean))].sort().join(',');
  check('ffprobe reads the stream through index.m3u8 (h264 + aac)', hlsCodecs === 'aac,h264', `${hlsCodecs} ${viaHls.stderr.trim().slice(0, 300)}`);

  // Bad input: clear 4xx, nothing held open.
  const bad = [
    ['media.m3u8?_HLS_msn=abc', 400], ['media.m3u8?_HLS_part=1', 400], ['media.m3u8?_HLS_msn=999999', 400],
    ['media.m3u8?_HLS_msn=1&_HLS_skip=maybe', 400], [`${h?.sid}-999999.0.m4s`, 404], [`${h?.sid}-0.999.m4s`, 404],
    ['00000000-1.m4s', 404],
  ];
  for (const [file, want] of bad) {
    const r = await get(`${dir}/${file}`);
    check(`GET ${file} → ${want} at once`, r.status === want && r.ms < 1000, `${r.status} in ${r.ms.toFixed(0)} ms: ${r.text.trim()}`);
  }
  for (const [url, want] of [[`${base}/hls/nope/none/index.m3u8`, 404], [`${base}/hls/live/../etc/index.m3u8`, [400, 404]]]) {
    const r = await get(url);
    const ok = Array.isArray(want) ? want.includes(r.status) : r.status === want;
    check(`GET ${url.replace(base, '')} → ${want}`, ok, `${r.status} ${r.text.trim()}`);
  }

  // hls.js in Chromium, low-latency mode.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const page = await browser.newPage();
  await page.route((url) => url.pathname === '/hls.min.js', (route) => route.fulfill({ path: hlsJs, contentType: 'text/javascript' }));
  await page.goto(`${base}/healthz`);
  await page.setContent('<video id="v" muted autoplay playsinline></video><script src="/hls.min.js"></script>');
  await page.waitForFunction(() => typeof window.Hls === 'function', null, { timeout: 10_000 });
  await page.evaluate((src) => {
    const v = document.getElementById('v');
    const hls = new window.Hls({ lowLatencyMode: true });
    window.hlsErrors = [];
    hls.on(window.Hls.Events.ERROR, (_, d) => window.hlsErrors.push(`${d.type}/${d.details}${d.fatal ? ' FATAL' : ''}`));
    hls.loadSource(src);
    hls.attachMedia(v);
    window.player = hls;
    v.play().catch(() => {});
  }, `${dir}/index.m3u8`);
  const played = await waitFor(() => page.evaluate(() => {
    const v = document.getElementById('v');
    const q = v.getVideoPlaybackQuality?.();
    return q && q.totalVideoFrames > 60 && v.currentTime > 1 ? { frames: q.totalVideoFrames, t: v.currentTime } : null;
  }), 30_000, 500);
  const state = await page.evaluate(() => ({
    latency: window.player?.latency, target: window.player?.targetLatency, ll: window.player?.lowLatencyMode,
    errors: window.hlsErrors, t: document.getElementById('v').currentTime,
  }));
  check('hls.js plays in Chromium (frames decoded, currentTime advancing)', !!played,
    JSON.stringify({ played, ...state }));
  if (played) {
    await sleep(3000);
    const later = await page.evaluate(() => ({ latency: window.player.latency, t: document.getElementById('v').currentTime,
      dropped: document.getElementById('v').getVideoPlaybackQuality().droppedVideoFrames }));
    check('hls.js keeps playing, low-latency mode on, live latency under 3 s', later.t > played.t + 2 && state.ll === true && later.latency < 3,
      JSON.stringify(later));
    figure(`hls.js live latency ${later.latency?.toFixed(2)} s (target ${state.target?.toFixed(2)} s), `
      + `${later.dropped} dropped frames, errors: ${state.errors.length ? state.errors.join(' ') : 'none'}`);
    // Seeking back in the window (hls.dvr_window_s makes it longer): the player goes to the
    // window's start and plays on from there, seconds behind live.
    const seek = await page.evaluate(async () => {
      const v = document.getElementById('v');
      const from = { start: v.seekable.start(0), end: v.seekable.end(0) };
      v.currentTime = from.start + 0.5;
      await new Promise((r) => setTimeout(r, 2500));
      return { ...from, t: v.currentTime, latency: window.player.latency, frames: v.getVideoPlaybackQuality().totalVideoFrames };
    });
    check('seeking back to the start of the window plays on from there', seek.end - seek.start > 5
      && seek.t > seek.start + 1 && seek.t < seek.start + 4 && seek.latency > 4, JSON.stringify(seek));
    figure(`window ${seek.start.toFixed(1)}–${seek.end.toFixed(1)} s: after a seek to its start, playing at ${seek.t.toFixed(1)} s, `
      + `${seek.latency.toFixed(1)} s behind live`);
  }

  // The watch page's LL-HLS mode (hls.js handed to it with &hlsjs=, no CDN in the namespace).
  const watch = await browser.newPage();
  await watch.route((url) => url.pathname === '/hls.min.js', (route) => route.fulfill({ path: hlsJs, contentType: 'text/javascript' }));
  await watch.goto(`${base}/watch.html?stream=live/hls&via=hls&autoplay=1&hlsjs=/hls.min.js`);
  const watched = await waitFor(() => watch.evaluate(() => {
    const st = window.onairState;
    return st?.status === 'playing' && st.stats?.frames_decoded > 30 ? { ...st.stats, w: st.width, h: st.height } : null;
  }), 30_000, 500);
  check('watch.html?via=hls plays the stream (hls.js, frames decoded)', !!watched,
    JSON.stringify(await watch.evaluate(() => window.onairState)));
  if (watched) figure(`watch.html LL-HLS: ${watched.w}x${watched.h}, latency ${watched.latency_s?.toFixed(2)} s, buffer ${watched.buffer_s?.toFixed(2)} s, ${watched.dropped_frames} dropped`);
  await watch.close();

  // Chromium publishes over WHIP with no codec chosen (its offer puts VP8 first); onair answers
  // with H.264, so the same stream plays as LL-HLS in hls.js.
  const pubPage = await browser.newPage();
  await pubPage.goto(`${base}/publish.html?stream=live/browser&autostart=1`);
  const webrtc = await waitFor(async () => {
    const r = await get(`${base}/hls/live/browser/index.m3u8`);
    return r.status === 200 ? r : null;
  }, 20_000, 500);
  check('WHIP publish (H.264): index.m3u8 with avc1 and opus', !!webrtc && /CODECS="avc1\.[0-9a-f]{6},opus"/.test(webrtc.text),
    webrtc?.text ?? (await get(`${base}/api/hls`)).text);
  if (webrtc) {
    const viewer = await browser.newPage();
    await viewer.route((url) => url.pathname === '/hls.min.js', (route) => route.fulfill({ path: hlsJs, contentType: 'text/javascript' }));
    await viewer.goto(`${base}/healthz`);
    await viewer.setContent('<video id="v" muted autoplay playsinline></video><script src="/hls.min.js"></script>');
    await viewer.waitForFunction(() => typeof window.Hls === 'function', null, { timeout: 10_000 });
    await viewer.evaluate((src) => {
      // As watch.html does: catch up after a stall (the source's resolution ramp starts new
      // init segments) instead of staying behind.
      const hls = new window.Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
      window.hlsErrors = [];
      hls.on(window.Hls.Events.ERROR, (_, d) => window.hlsErrors.push(`${d.type}/${d.details}${d.fatal ? ' FATAL' : ''} ${d.frag?.url ?? ''} ${d.response?.code ?? ''}`));
      hls.loadSource(src);
      hls.attachMedia(document.getElementById('v'));
      window.player = hls;
    }, `${base}/hls/live/browser/index.m3u8`);
    const playing = await waitFor(() => viewer.evaluate(() => {
      const v = document.getElementById('v');
      const q = v.getVideoPlaybackQuality?.();
      return q && q.totalVideoFrames > 30 && v.currentTime > 1
        ? { frames: q.totalVideoFrames, t: v.currentTime, latency: window.player.latency, w: v.videoWidth, h: v.videoHeight } : null;
    }), 30_000, 500);
    const errs = await viewer.evaluate(() => window.hlsErrors);
    check('WHIP H.264 publish plays as LL-HLS in hls.js', !!playing, playing ? JSON.stringify({ playing, errs })
      : `${JSON.stringify({ playing, errs })}\n${(await get(`${base}/hls/live/browser/media.m3u8`)).text}`);
    if (playing) {
      await sleep(4000);
      const later = await viewer.evaluate(() => ({ latency: window.player.latency, target: window.player.targetLatency,
        buffer: (() => { const v = document.getElementById('v'); return v.buffered.length ? v.buffered.end(v.buffered.length - 1) - v.currentTime : 0; })(),
        rate: document.getElementById('v').playbackRate,
        w: document.getElementById('v').videoWidth, h: document.getElementById('v').videoHeight }));
      figure(`WHIP → LL-HLS: ${playing.w}x${playing.h}, hls.js latency ${playing.latency?.toFixed(2)} s at first, `
        + `${later.latency?.toFixed(2)} s 4 s later (target ${later.target?.toFixed(2)} s, buffer ${later.buffer.toFixed(2)} s, ${later.w}x${later.h}, rate ${later.rate}), errors: ${errs.length ? errs.join(' ') : 'none'}`);
    }
    await viewer.close();
  }
  await pubPage.close();

  // Chromium publishes VP9, then AV1, over WHIP: packaged as vp09 / av01 in fMP4, and hls.js
  // plays them.
  for (const [codec, entry, codecs] of [['vp9', 'vp09', /CODECS="vp09\.00\.\d\d\.08,opus"/],
    ['av1', 'av01', /CODECS="av01\.0\.\d\d[MH]\.08,opus"/]]) {
    const pub = await browser.newPage();
    await pub.goto(`${base}/publish.html?stream=live/${codec}&autostart=1&codec=${codec}`);
    const index = await waitFor(async () => {
      const r = await get(`${base}/hls/live/${codec}/index.m3u8`);
      return r.status === 200 ? r : null;
    }, 20_000, 500);
    check(`WHIP publish (${codec.toUpperCase()}): index.m3u8 with ${entry} and opus`, !!index && codecs.test(index.text),
      index?.text ?? (await get(`${base}/api/hls`)).text);
    if (index) {
      const viewer = await browser.newPage();
      await viewer.route((url) => url.pathname === '/hls.min.js', (route) => route.fulfill({ path: hlsJs, contentType: 'text/javascript' }));
      await viewer.goto(`${base}/watch.html?stream=live/${codec}&via=hls&autoplay=1&hlsjs=/hls.min.js`);
      const played = await waitFor(() => viewer.evaluate(() => {
        const st = window.onairState;
        return st?.status === 'playing' && st.stats?.frames_decoded > 30 ? { ...st.stats, w: st.width, h: st.height } : null;
      }), 30_000, 500);
      check(`${codec.toUpperCase()} over LL-HLS plays in hls.js (watch.html, frames decoded)`, !!played,
        JSON.stringify(await viewer.evaluate(() => window.onairState)));
      const mediaText = (await get(`${base}/hls/live/${codec}/media.m3u8`)).text;
      const discontinuities = (mediaText.match(/#EXT-X-DISCONTINUITY\n/g) || []).length;
      if (played) figure(`WHIP ${codec.toUpperCase()} → LL-HLS: ${played.w}x${played.h}, latency ${played.latency_s?.toFixed(2)} s, `
        + `${played.dropped_frames} dropped, ${discontinuities} discontinuities in the playlist`);
      // VP9 carries its picture size in every keyframe: a browser's resolution ramp must not
      // start new init segments (discontinuities that stall players).
      if (codec === 'vp9') {
        check('VP9: the resolution ramp makes no discontinuity', discontinuities === 0,
          discontinuities ? mediaText.split('\n').filter((l) => !l.startsWith('#EXT-X-PART:')).join('\n') : '0');
      }
      await viewer.close();
    }
    await pub.close();
  }

  // A simulcast WHIP publish (H.264, as onair answers): the hub takes the highest layer being
  // sent, which the browser raises as its bandwidth estimate grows; hls.js plays it.
  const simPage = await browser.newPage();
  await simPage.goto(`${base}/publish.html?stream=live/sim&autostart=1&simulcast=1`);
  const simIndex = await waitFor(async () => {
    const r = await get(`${base}/hls/live/sim/index.m3u8`);
    return r.status === 200 ? r : null;
  }, 20_000, 500);
  check('simulcast WHIP publish: index.m3u8 answers', !!simIndex, simIndex ? '' : (await get(`${base}/api/hls`)).text);
  if (simIndex) {
    const viewer = await browser.newPage();
    await viewer.route((url) => url.pathname === '/hls.min.js', (route) => route.fulfill({ path: hlsJs, contentType: 'text/javascript' }));
    await viewer.goto(`${base}/watch.html?stream=live/sim&via=hls&autoplay=1&hlsjs=/hls.min.js`);
    const played = await waitFor(() => viewer.evaluate(() => {
      const st = window.onairState;
      return st?.status === 'playing' && st.stats?.frames_decoded > 30 ? { ...st.stats, w: st.width, h: st.height } : null;
    }), 30_000, 500);
    check('simulcast over LL-HLS plays in hls.js (watch.html, frames decoded)', !!played,
      JSON.stringify(await viewer.evaluate(() => window.onairState)));
    if (played) figure(`simulcast WHIP → LL-HLS: ${played.w}x${played.h} in hls.js, latency ${played.latency_s?.toFixed(2)} s`);
    await viewer.close();

    // One variant per simulcast layer (no transcoding): the multivariant playlist lists them,
    // top first, each media playlist reports the others (EXT-X-RENDITION-REPORT), and hls.js
    // switches between them.
    const ladder = await waitFor(async () => {
      const r = await get(`${base}/hls/live/sim/index.m3u8`);
      const v = [...r.text.matchAll(/#EXT-X-STREAM-INF:BANDWIDTH=(\d+)[^\n]*RESOLUTION=(\d+)x(\d+)\n([^\n]+)/g)]
        .map((m) => ({ bw: Number(m[1]), w: Number(m[2]), h: Number(m[3]), uri: m[4] }));
      return v.length >= 3 ? { v, text: r.text } : null;
    }, 20_000, 1000);
    const last = ladder ?? { v: [], text: (await get(`${base}/hls/live/sim/index.m3u8`)).text };
    check('simulcast: one variant per layer, the main (top) first, each smaller than the one before',
      last.v.length >= 3 && last.v[0].uri === 'media.m3u8' && last.v.every((x, i) => i === 0 || x.h < last.v[i - 1].h),
      last.text);
    if (ladder) {
      figure(`simulcast ladder: ${ladder.v.map((x) => `${x.w}x${x.h} ${Math.round(x.bw / 1000)}k ${x.uri}`).join(', ')}`);
      const media = (await get(`${base}/hls/live/sim/media.m3u8`)).text;
      const reports = [...media.matchAll(/#EXT-X-RENDITION-REPORT:URI="([^"]+)",LAST-MSN=(\d+),LAST-PART=(\d+)/g)].map((m) => m[1]);
      check('simulcast: the main media playlist reports the other renditions',
        ladder.v.slice(1).every((x) => reports.includes(x.uri)), media.split('\n').filter((l) => l.includes('RENDITION')).join('\n'));
      // The lowest variant's own segment: FFmpeg decodes it at its (smaller) size.
      const low = ladder.v.at(-1);
      const lowMedia = (await get(`${base}/hls/live/sim/${low.uri}`)).text;
      const { map, uri: seg } = segmentsWithMaps(lowMedia).at(-1) ?? {};
      if (check(`simulcast: ${low.uri} lists an init and a segment`, !!map && !!seg, lowMedia)) {
        const file = path.join(recDir, 'low.mp4');
        const body = async (u) => Buffer.from(await (await fetch(`${base}/hls/live/sim/${u}`)).arrayBuffer());
        fs.writeFileSync(file, Buffer.concat([await body(map), await body(seg)]));
        const p = spawnSync(FFPROBE, ['-v', 'error', '-select_streams', 'v', '-show_entries', 'stream=codec_name,width,height',
          '-of', 'csv=p=0', file], { encoding: 'utf8' }).stdout.trim();
        const dec = spawnSync(FFMPEG, ['-v', 'error', '-i', file, '-f', 'null', '-'], { encoding: 'utf8' }).stderr.trim();
        check(`simulcast: the lowest variant's segment is H.264 at ${low.w}x${low.h} and decodes cleanly`,
          p === `h264,${low.w},${low.h}` && dec === '', JSON.stringify({ p, dec }));
        fs.rmSync(file, { force: true });
      }
      // hls.js: play, then ask for the smallest level; the picture follows.
      const abr = await browser.newPage();
      await abr.route((url) => url.pathname === '/hls.min.js', (route) => route.fulfill({ path: hlsJs, contentType: 'text/javascript' }));
      await abr.goto(`${base}/healthz`);
      await abr.setContent('<video id="v" muted autoplay playsinline></video><script src="/hls.min.js"></script>');
      await abr.waitForFunction(() => typeof window.Hls === 'function', null, { timeout: 10_000 });
      await abr.evaluate((src) => {
        const hls = new window.Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
        window.hlsErrors = [];
        hls.on(window.Hls.Events.ERROR, (_, d) => window.hlsErrors.push(`${d.type}/${d.details}${d.fatal ? ' FATAL' : ''}`));
        hls.loadSource(src);
        hls.attachMedia(document.getElementById('v'));
        window.player = hls;
      }, `${base}/hls/live/sim/index.m3u8`);
      const started = await waitFor(() => abr.evaluate(() => {
        const v = document.getElementById('v');
        return v.currentTime > 1 && window.player.levels.length ? { levels: window.player.levels.map((l) => l.height) } : null;
      }), 20_000, 500);
      let switched = null;
      if (started) {
        const smallest = Math.min(...started.levels);
        await abr.evaluate((h) => { window.player.currentLevel = window.player.levels.findIndex((l) => l.height === h); }, smallest);
        switched = await waitFor(() => abr.evaluate((h) => {
          const v = document.getElementById('v');
          return v.videoHeight === h && !v.paused ? { h: v.videoHeight, w: v.videoWidth, t: v.currentTime } : null;
        }, smallest), 15_000, 300);
        const t0 = switched?.t ?? 0;
        await sleep(1500);
        const still = await abr.evaluate(() => document.getElementById('v').currentTime);
        switched = switched && still > t0 + 0.5 ? { ...switched, levels: started.levels } : null;
      }
      const errs = await abr.evaluate(() => window.hlsErrors);
      check('simulcast: hls.js sees every level, switches to the smallest, and plays on',
        !!switched && started.levels.length >= 3, JSON.stringify({ started, switched, errs }));
      if (switched) figure(`simulcast ABR: hls.js levels ${switched.levels.join('/')}p, switched to ${switched.w}x${switched.h}, errors: ${errs.length ? errs.join(' ') : 'none'}`);
      await abr.close();
    }
  }
  await simPage.close();

  // H.265 over enhanced RTMP, as OBS 30+ and FFmpeg 6.1+ send it (FFmpeg 9 from imageio-ffmpeg;
  // the system's FFmpeg 5.1 has no enhanced RTMP): packaged as hvc1, B-frames and all.
  const py9 = spawnSync('python3', ['-c', 'import imageio_ffmpeg;print(imageio_ffmpeg.get_ffmpeg_exe())'], { encoding: 'utf8' });
  const ff9 = py9.status === 0 ? py9.stdout.trim() : null;
  if (!ff9 || !fs.existsSync(ff9)) {
    const why = `imageio-ffmpeg not importable (pip install imageio-ffmpeg): ${(py9.stderr || '').trim().slice(0, 160)}`;
    if (process.env.CI === 'true') check('H.265 over enhanced RTMP', false, why);
    else console.log(`# skip - H.265 over enhanced RTMP: ${why}`);
  } else {
    const hevc = spawn(ff9, ['-hide_banner', '-loglevel', 'error', '-re',
      '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-c:v', 'libx265', '-preset', 'ultrafast', '-x265-params', 'log-level=error:keyint=30:min-keyint=30:bframes=2',
      '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-ar', '48000',
      '-f', 'flv', `rtmp://127.0.0.1:${RTMP_PORT}/live/hevc`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let hevcErr = '';
    hevc.stderr.on('data', (d) => { hevcErr += d; });
    const hevcIndex = await waitFor(async () => {
      const r = await get(`${base}/hls/live/hevc/index.m3u8`);
      return r.status === 200 ? r.text : null;
    }, 20_000, 500);
    check('H.265 (enhanced RTMP from FFmpeg 9): index.m3u8 with hvc1 + mp4a.40.2 at 640x360',
      /CODECS="hvc1\.[0-9A-Za-z.]+,mp4a\.40\.2"/.test(hevcIndex ?? '') && hevcIndex.includes('RESOLUTION=640x360'),
      hevcIndex ?? `${(await get(`${base}/api/hls`)).text} ${hevcErr.slice(0, 300)}`);
    if (hevcIndex) {
      // Two complete segments (libx265 may run slower than real time on a busy machine).
      const media = await waitFor(async () => {
        const t = (await get(`${base}/hls/live/hevc/media.m3u8`)).text;
        return t.split('\n').filter((l) => l && !l.startsWith('#')).length >= 2 ? t : null;
      }, 15_000, 500) ?? (await get(`${base}/hls/live/hevc/media.m3u8`)).text;
      const all = segmentsWithMaps(media);
      const map = all.at(-1)?.map;
      const segs = all.filter((x) => x.map === map).map((x) => x.uri);
      if (check('H.265: the media playlist has an init and segments', !!map && segs.length >= 2, media)) {
        const file = path.join(recDir, 'hevc.mp4');
        const body = async (u) => Buffer.from(await (await fetch(`${base}/hls/live/hevc/${u}`)).arrayBuffer());
        fs.writeFileSync(file, Buffer.concat([await body(map), ...(await Promise.all(segs.slice(-2).map(body)))]));
        const p = spawnSync(FFPROBE, ['-v', 'error', '-show_entries', 'stream=codec_name,codec_tag_string,width,height', '-of', 'csv=p=0', file],
          { encoding: 'utf8' }).stdout.trim().split('\n').sort().join(' ');
        const dec = spawnSync(FFMPEG, ['-v', 'error', '-i', file, '-f', 'null', '-'], { encoding: 'utf8' });
        const frames = spawnSync(FFPROBE, ['-v', 'error', '-select_streams', 'v', '-count_frames', '-show_entries', 'stream=nb_read_frames',
          '-of', 'csv=p=0', file], { encoding: 'utf8' }).stdout.trim();
        check('H.265: two segments are hvc1 640x360 + AAC that FFmpeg decodes without an error',
          p === 'aac,mp4a hevc,hvc1,640,360' && dec.stderr.trim() === '' && Number(frames) > 30,
          JSON.stringify({ p, frames, err: dec.stderr.trim().slice(0, 300) }));
        figure(`H.265 via enhanced RTMP: ${hevcIndex.match(/CODECS="([^"]+)"/)?.[1]}, ${frames} frames decoded from the last two segments`);
        fs.rmSync(file, { force: true });
      }
      // FFmpeg's HLS client, through the multivariant playlist.
      const viaHls = spawnSync(FFPROBE, ['-v', 'error', '-show_entries', 'stream=codec_name', '-of', 'csv=p=0',
        `${base}/hls/live/hevc/index.m3u8`], { encoding: 'utf8', timeout: 20_000 });
      const got = [...new Set(viaHls.stdout.split('\n').map((l) => l.replace(/,$/, '').trim()).filter(Boolean))].sort().join(',');
      check('H.265: ffprobe reads it through index.m3u8 (hevc + aac)', got === 'aac,hevc', `${got} ${viaHls.stderr.trim().slice(0, 300)}`);
    }
    hevc.kill('SIGTERM');
  }

  // An explicit VP8 choice stands (the SDK offers only VP8), and HLS says why it cannot package it.
  const vp8Page = await browser.newPage();
  await vp8Page.goto(`${base}/publish.html?stream=live/vp8&autostart=1&codec=vp8`);
  const vp8 = await waitFor(async () => {
    const list = JSON.parse((await get(`${base}/api/hls`)).text || '[]');
    return list.find((s) => s.name === 'live/vp8' && s.state === 'unavailable');
  }, 15_000, 300);
  const vp8Index = await get(`${base}/hls/live/vp8/index.m3u8`);
  check('publish.html?codec=vp8 stays VP8: /api/hls "HLS unavailable: VP8", index.m3u8 409',
    vp8?.error === 'HLS unavailable: VP8' && vp8Index.status === 409, `${JSON.stringify(vp8)} ${vp8Index.status} ${vp8Index.text.trim()}`);
  await vp8Page.close();

  // The publisher stops: the playlist ends.
  ffmpeg.kill('SIGTERM');
  const ended = await waitFor(async () => {
    const r = await get(`${dir}/media.m3u8`);
    return r.status === 200 && r.text.includes('#EXT-X-ENDLIST') ? r : null;
  }, 10_000, 300);
  check('after FFmpeg stops, media.m3u8 ends with EXT-X-ENDLIST', !!ended);
  const api = await get(`${base}/api/hls`);
  figure(`/api/hls: ${api.text.trim()}`);
  const ranFor = (Date.now() - startedAt) / 1000;

  // The recording of live/hls: listed, downloadable, whole.
  const rec = await waitFor(async () => {
    const list = JSON.parse((await get(`${base}/api/recordings`)).text || '[]');
    return list.find((r) => r.stream === 'live/hls' && r.state === 'done');
  }, 10_000, 300);
  if (check('the RTMP publish was recorded (/api/recordings: done)', !!rec, (await get(`${base}/api/recordings`)).text)) {
    const dl = await get(`${base}/recordings/${rec.file}`);
    const file = path.join(os.tmpdir(), `onair-rec-dl-${process.pid}.mp4`);
    fs.writeFileSync(file, dl.body);
    const p = probe(file);
    check(`ffprobe reads the downloaded recording: h264 + aac, about the ${ranFor.toFixed(0)} s FFmpeg ran`,
      p.codecs === 'aac,h264' && p.duration > ranFor - 4 && p.duration <= ranFor + 0.5 && dl.body.length === rec.bytes,
      `${JSON.stringify(p)}, ${dl.body.length} bytes downloaded, ${rec.bytes} recorded`);
    figure(`recording ${rec.file}: ${p.duration} s, ${rec.bytes} bytes (FFmpeg ran ${ranFor.toFixed(1)} s)`);
  }
  const badName = await get(`${base}/recordings/..%2Fetc%2Fpasswd`);
  check('GET /recordings/../etc/passwd → 400 or 404', [400, 404].includes(badName.status), `${badName.status}`);

  // A second server, on HTTPS: hls.js in Chromium fetches its LL-HLS over HTTP/2. Then it is
  // killed with SIGKILL mid-recording, and leaves a playable file up to the kill.
  const port2 = await freeTcpPort();
  const killDir = fs.mkdtempSync(path.join(os.tmpdir(), 'onair-rec-kill-'));
  const certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'onair-cert-'));
  const [cert, key] = [path.join(certDir, 'cert.pem'), path.join(certDir, 'key.pem')];
  const openssl = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
  if (!check('openssl made a test certificate', openssl.status === 0, openssl.status === 0 ? '' : openssl.stderr)) return 1;
  const victim = spawn(bin, [], {
    env: { ...process.env, ONAIR_HTTP_LISTEN: `127.0.0.1:${port2}`, ONAIR_MEDIA_PORT: String(await freeMediaPort()),
      ONAIR_HTTP_TLS_CERT: cert, ONAIR_HTTP_TLS_KEY: key, ONAIR_HLS_AAC_FROM_OPUS: 'true',
      ONAIR_RTMP_LISTEN: `127.0.0.1:${RTMP_PORT + 1}`, ONAIR_TURN_ENABLED: 'false',
      ONAIR_RECORDING_ENABLED: 'true', ONAIR_RECORDING_DIR: killDir },
    stdio: ['ignore', log, log],
  });
  const base2 = `https://127.0.0.1:${port2}`;
  const tlsContext = await browser.newContext({ ignoreHTTPSErrors: true });
  const tlsPage = await tlsContext.newPage();
  const tlsUp = await waitFor(async () => (await tlsPage.request.get(`${base2}/healthz`).catch(() => null))?.ok(), 15_000, 200);
  check('the second server answers over HTTPS', !!tlsUp);

  // hls.aac_from_opus (on for this server): a WHIP publish's Opus is served as AAC, for native
  // HLS players that take only AAC. Chromium decodes it in hls.js, and FFmpeg without an error.
  const aacPub = await tlsContext.newPage();
  await aacPub.goto(`${base2}/publish.html?stream=live/aac&autostart=1&codec=h264`);
  const aacIndex = await waitFor(async () => {
    const r = await tlsPage.request.get(`${base2}/hls/live/aac/index.m3u8`).catch(() => null);
    return r?.status() === 200 ? r.text() : null;
  }, 20_000, 500);
  check('aac_from_opus: a WHIP stream\'s index.m3u8 has avc1 and mp4a.40.2, not opus',
    /CODECS="avc1\.[0-9a-f]{6},mp4a\.40\.2"/.test(aacIndex ?? ''), aacIndex ?? 'no playlist');
  if (aacIndex) {
    const aacWatch = await tlsContext.newPage();
    await aacWatch.route((url) => url.pathname === '/hls.min.js', (route) => route.fulfill({ path: hlsJs, contentType: 'text/javascript' }));
    await aacWatch.goto(`${base2}/watch.html?stream=live/aac&via=hls&autoplay=1&hlsjs=/hls.min.js`);
    const heard = await waitFor(() => aacWatch.evaluate(() => {
      const v = document.querySelector('video');
      return window.onairState?.status === 'playing' && v?.webkitAudioDecodedByteCount > 20_000
        ? { audio_bytes: v.webkitAudioDecodedByteCount, latency: window.onairState.stats?.latency_s } : null;
    }), 20_000, 500);
    check('aac_from_opus: hls.js in Chromium plays it and decodes its audio', !!heard,
      JSON.stringify(await aacWatch.evaluate(() => ({ st: window.onairState, audio: document.querySelector('video')?.webkitAudioDecodedByteCount }))));
    // The AAC of the last complete segment, with its init segment, through FFmpeg's decoder.
    const media = await (await tlsPage.request.get(`${base2}/hls/live/aac/media.m3u8`)).text();
    const last = segmentsWithMaps(media).at(-1);
    if (check('aac_from_opus: the media playlist has an init and a segment', !!last?.map, media)) {
      const body = async (u) => Buffer.from(await (await tlsPage.request.get(`${base2}/hls/live/aac/${u}`)).body());
      const file = path.join(certDir, 'aac.mp4');
      fs.writeFileSync(file, Buffer.concat([await body(last.map), await body(last.uri)]));
      const dec = spawnSync(FFMPEG, ['-v', 'error', '-i', file, '-map', '0:a', '-f', 'null', '-'], { encoding: 'utf8' });
      const vol = spawnSync(FFMPEG, ['-hide_banner', '-nostats', '-i', file, '-map', '0:a', '-af', 'volumedetect', '-f', 'null', '-'],
        { encoding: 'utf8' });
      const p = spawnSync(FFPROBE, ['-v', 'error', '-select_streams', 'a', '-show_entries', 'stream=codec_name,profile,sample_rate',
        '-of', 'csv=p=0', file], { encoding: 'utf8' }).stdout.trim();
      // Chromium's fake microphone beeps: loud at its peaks, not silence.
      const peak = Number(vol.stderr.match(/max_volume: (-?[\d.]+) dB/)?.[1] ?? -999);
      const errors = dec.stderr.split('\n').filter((l) => l.trim());
      check('aac_from_opus: FFmpeg decodes the AAC-LC 48 kHz audio without an error, and it is not silence',
        p === 'aac,LC,48000' && errors.length === 0 && peak > -30, JSON.stringify({ p, peak, errors }));
      figure(`aac_from_opus: ${p}, peak ${peak} dB in the last segment; hls.js decoded ${heard?.audio_bytes} audio bytes, latency ${heard?.latency?.toFixed(2) ?? "not reported"} s`);
    }
    await aacWatch.close();
  }
  await aacPub.close();
  const killStart = Date.now();
  const ff2 = spawn(FFMPEG, ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-pix_fmt', 'yuv420p', '-g', '30',
    '-c:a', 'aac', '-ar', '48000', '-f', 'flv', `rtmp://127.0.0.1:${RTMP_PORT + 1}/live/kill`], { stdio: 'ignore' });
  await tlsPage.route((url) => url.pathname === '/hls.min.js', (route) => route.fulfill({ path: hlsJs, contentType: 'text/javascript' }));
  await tlsPage.goto(`${base2}/watch.html?stream=live/kill&via=hls&autoplay=1&hlsjs=/hls.min.js`);
  const overH2 = await waitFor(() => tlsPage.evaluate(() => {
    const st = window.onairState;
    const parts = performance.getEntriesByType('resource').filter((e) => e.name.includes('.m4s'));
    return st?.status === 'playing' && st.stats?.frames_decoded > 15 && parts.length > 3
      ? { protocols: [...new Set(parts.map((e) => e.nextHopProtocol))], parts: parts.length, latency: st.stats.latency_s } : null;
  }), 15_000, 300);
  check('HTTPS: watch.html plays LL-HLS, every part fetched over HTTP/2', overH2?.protocols.join() === 'h2',
    JSON.stringify(overH2 ?? await tlsPage.evaluate(() => window.onairState)));
  if (overH2) figure(`HTTPS/2: ${overH2.parts} parts over ${overH2.protocols}, latency ${overH2.latency?.toFixed(2)} s`);
  await tlsContext.close();
  const killAfter = 9;
  await sleep(Math.max(0, killAfter * 1000 - (Date.now() - killStart)));
  victim.kill('SIGKILL');
  await sleep(300);
  ff2.kill('SIGKILL');
  const partial = fs.readdirSync(killDir).filter((f) => f.startsWith('live_kill-') && f.endsWith('.mp4'));
  if (check('a file was being recorded when the server was killed', partial.length === 1, JSON.stringify(partial))) {
    const p = probe(path.join(killDir, partial[0]));
    check(`the killed server's recording still plays: h264 + aac, up to the kill (~${killAfter} s after FFmpeg started)`,
      p.codecs === 'aac,h264' && p.duration > killAfter - 3 && p.duration <= killAfter, JSON.stringify(p));
    figure(`killed at ${killAfter} s: the file plays ${p.duration} s`);
  }
  return 0;
}

function probe(file) {
  const r = spawnSync(FFPROBE, ['-v', 'error', '-show_entries', 'stream=codec_name:format=duration', '-of', 'json', file],
    { encoding: 'utf8' });
  try {
    const j = JSON.parse(r.stdout);
    return { codecs: j.streams.map((s) => s.codec_name).sort().join(','), duration: Number(j.format.duration), err: r.stderr.trim() };
  } catch {
    return { codecs: '', duration: 0, err: r.stderr.trim() };
  }
}

await runMain(main, summary, finish);
