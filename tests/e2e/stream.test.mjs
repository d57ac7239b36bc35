#!/usr/bin/env node
// End-to-end test of onair streams: WHIP and RTMP in, WHEP out, with real clients.
//
// Starts the server binary (ONAIR_BIN, default ../../target/release/onair) with its RTMP listener
// on 127.0.0.1:1935 and checks, in headless Chromium and FFmpeg:
//   (a) FFmpeg publishes H.264+AAC over RTMP; /watch.html plays it over WHEP (frames, audio energy)
//       and /api/streams lists it with one WHEP reader;
//   (e) bad requests get 4xx answers, CORS is answered, garbage on the RTMP port is dropped while
//       (a)'s viewer keeps playing;
//   (b) /publish.html publishes over WHIP, /watch.html plays it, and stopping it ends it;
//   (c) a room participant plays as ROOM/NAME;
//   (f) a browser's H.264 WHIP publish played back from the hub's frames (`via=hub`);
//   (g) a simulcast WHIP publish: a viewer with max_height=180 gets a smaller layer;
//   (h) the RTMP publisher is killed: the stream leaves /api/streams and its viewer sees the end;
//   (d) FFmpeg 9's WHIP muxer (imageio-ffmpeg) publishes and /watch.html plays it.
// Runs itself inside shared/tools/netns-run (a network namespace with loopback only) unless it
// already is in one. See README.md.
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, results, sleep, waitFor,
} from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OVERALL_TIMEOUT_MS = 150_000;
const RTMP_PORT = 1935;
const FFMPEG = process.env.FFMPEG || 'ffmpeg';

await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);

const { chromium } = await import('playwright-core');

// ------------------------------------------------------------------ results

const { check, figure, summary } = results();
let server = null;
let serverExit = null;
let browser = null;
/** FFmpeg (and other) child processes to stop at the end. */
const children = new Set();
const childLogs = [];
const logPath = path.join(os.tmpdir(), `onair-e2e-stream-${process.pid}.log`);
const ffLogPath = (name) => path.join(os.tmpdir(), `onair-e2e-stream-${process.pid}-${name}.log`);

function tail(file, lines = 60) {
  try {
    const text = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
    return text.slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function stopChildren() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}

async function finish(code) {
  if (code !== 0) {
    console.log(`# server log (${logPath}), last lines:`);
    console.log(tail(logPath).replace(/^/gm, '#   '));
    for (const file of childLogs) {
      console.log(`# ${file}, last lines:`);
      console.log(tail(file, 10).replace(/^/gm, '#   '));
    }
  }
  stopChildren();
  if (server && serverExit === null) server.kill('SIGKILL');
  if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
  process.exit(code);
}

const overall = setTimeout(() => {
  check(`whole test within ${OVERALL_TIMEOUT_MS / 1000} s`, false);
  summary();
  finish(1);
}, OVERALL_TIMEOUT_MS);

process.on('exit', () => {
  stopChildren();
  if (server && serverExit === null) server.kill('SIGKILL');
});

// ------------------------------------------------------------------ helpers


/** Start a child process whose output goes to a log file; it is killed at the end at the latest. */
function startChild(name, cmd, args) {
  const file = ffLogPath(name);
  const fd = fs.openSync(file, 'w');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  child.logFile = file;
  childLogs.push(file);
  child.startedAt = Date.now();
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  child.on('error', (e) => fs.appendFileSync(file, `\nspawn error: ${e.message}\n`));
  children.add(child);
  return child;
}

/** Ask a child to stop (SIGINT lets FFmpeg finish: its WHIP muxer sends DELETE), then kill it. */
async function stopChild(child, graceMs = 3000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGINT');
  const done = await Promise.race([child.exited, sleep(graceMs).then(() => null)]);
  if (!done) child.kill('SIGKILL');
  children.delete(child);
}

const running = (child) => child && child.exitCode === null && child.signalCode === null;

/** One raw HTTP request (node's http keeps the path as written: `..` and `//` reach the server). */
function rawRequest(base, method, pathname, { headers = {}, body } = {}) {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path: pathname, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    if (body != null) req.write(body);
    req.end();
  });
}

/** The server's /api/streams, or null. */
async function apiStreams(base) {
  try {
    const res = await fetch(`${base}/api/streams`);
    return res.ok ? await res.json() : null;
  } catch {
    return null;
  }
}

const short = (s, n = 120) => (s.length > n ? `${s.slice(0, n)}…` : s).replace(/\s+/g, ' ').trim();

/** Figures of a watch page: its WHEP connection's inbound-rtp, the <video>, and onairState. */
function watchStats(page) {
  return page.evaluate(async () => {
    const v = document.querySelector('#video');
    const out = {
      status: window.onairState?.status,
      state: { ...window.onairState, stats: undefined },
      muted: v?.muted,
      time: v?.currentTime || 0,
      width: v?.videoWidth || 0,
      video: null,
      audio: null,
    };
    const pc = window.onairSession?.pc;
    if (!pc || pc.signalingState === 'closed') return out;
    (await pc.getStats()).forEach((x) => {
      if (x.type !== 'inbound-rtp') return;
      if (x.kind === 'video') {
        out.video = { framesDecoded: x.framesDecoded ?? 0, frameWidth: x.frameWidth ?? 0, frameHeight: x.frameHeight ?? 0,
          fps: x.framesPerSecond ?? 0, lost: x.packetsLost ?? 0, received: x.packetsReceived ?? 0 };
      } else if (x.kind === 'audio') {
        out.audio = { energy: x.totalAudioEnergy ?? 0, level: x.audioLevel ?? 0, received: x.packetsReceived ?? 0 };
      }
    });
    return out;
  });
}

/** A page's moment of first decoded frame (onairState.firstFrameAt) as an epoch time in ms. */
function firstFrameEpoch(page) {
  return page.evaluate(() => (window.onairState?.firstFrameAt != null
    ? performance.timeOrigin + window.onairState.firstFrameAt : null));
}

// ------------------------------------------------------------------ the test

async function main() {
  const bin = path.resolve(HERE, process.env.ONAIR_BIN || '../../target/release/onair');
  if (!fs.existsSync(bin)) {
    console.error(`error: server binary ${bin} not found (build it: cargo build --release, or set ONAIR_BIN)`);
    return 2;
  }
  const ffmpegOk = spawnSync(FFMPEG, ['-hide_banner', '-version'], { stdio: 'ignore' }).status === 0;
  if (!ffmpegOk) {
    console.error(`error: ${FFMPEG} not found (apt-get install -y ffmpeg, or set FFMPEG)`);
    return 2;
  }
  const httpPort = await freeTcpPort();
  const mediaPort = await freeMediaPort();
  const base = `http://127.0.0.1:${httpPort}`;
  figure(`server ${bin}, http ${httpPort}, media ${mediaPort}, rtmp ${RTMP_PORT}, log ${logPath}`);

  const log = fs.openSync(logPath, 'w');
  server = spawn(bin, [], {
    env: {
      ...process.env,
      ONAIR_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
      ONAIR_MEDIA_PORT: String(mediaPort),
      // Two media shards whatever the machine: (b)'s two viewers land on both.
      ONAIR_MEDIA_SHARDS: '2',
      ONAIR_RTMP_LISTEN: `127.0.0.1:${RTMP_PORT}`,
    },
    stdio: ['ignore', log, log],
  });
  server.on('exit', (code, signal) => { serverExit = { code, signal }; });
  const t0 = Date.now();
  const up = await waitFor(async () => {
    if (serverExit) return 'exited';
    const res = await fetch(`${base}/watch.html`).catch(() => null);
    return res && res.status === 200 ? 'up' : null;
  }, 15_000, 200);
  if (!check('server serves /watch.html', up === 'up', up === 'exited' ? `server exited: ${JSON.stringify(serverExit)}` : `${Date.now() - t0} ms`)) return 1;
  const rtmpUp = await waitFor(() => new Promise((resolve) => {
    const s = net.connect(RTMP_PORT, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  }), 5000, 200);
  if (!check(`server listens for RTMP on 127.0.0.1:${RTMP_PORT}`, !!rtmpUp)) return 1;

  // Pages from the server, or (ONAIR_E2E_WEB=dir) from a directory, talking to the server with
  // &server= (cross-origin: CORS must let them): a way to try page and SDK changes without
  // rebuilding the binary that embeds web/.
  let pageBase = base;
  let pageQuery = '';
  if (process.env.ONAIR_E2E_WEB) {
    const dir = path.resolve(process.env.ONAIR_E2E_WEB);
    const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
    const web = http.createServer((req, res) => {
      const rel = new URL(req.url, 'http://x').pathname.replace(/^\/$/, '/index.html');
      const file = path.join(dir, path.normalize(rel));
      if (!file.startsWith(dir) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream' });
      res.end(fs.readFileSync(file));
    });
    await new Promise((resolve) => web.listen(0, '127.0.0.1', resolve));
    web.unref();
    pageBase = `http://127.0.0.1:${web.address().port}`;
    pageQuery = `&server=${encodeURIComponent(base)}`;
    figure(`pages from ${dir} at ${pageBase}`);
  }

  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const pageErrors = [];
  /** A page in its own browser context. */
  const openPage = async (label, urlPath) => {
    const context = await browser.newContext({ viewport: { width: 960, height: 600 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
    page.on('console', (m) => {
      // A watch page asks every 2 s while a stream is not live: its 404s are expected.
      if ((m.type() === 'error' || m.type() === 'warning') && !/favicon|status of 404/.test(m.text())) {
        console.log(`# ${label} console ${m.type()}: ${m.text()}`);
      }
    });
    const openedAt = Date.now();
    await page.goto(`${pageBase}${urlPath}${pageQuery}`);
    return { label, context, page, openedAt };
  };
  const stateOf = (p) => p.page.evaluate(() => ({ ...window.onairState, stats: undefined })).catch((e) => ({ error: e.message }));

  /** The watch page decodes video (framesDecoded rising over 2 s, optionally at `width`) and,
   * with `audio`, receives audio with energy. Returns false when no frame came at all. */
  async function checkPlays(w, { width, audio = false, firstWithinMs = 30_000 } = {}) {
    const first = await waitFor(async () => {
      const s = await watchStats(w.page);
      return s.video?.framesDecoded > 0 ? s : null;
    }, firstWithinMs, 100);
    if (!check(`${w.label}: video decodes`, !!first, first ? '' : `state ${JSON.stringify(await stateOf(w))}`)) return false;
    const a = await watchStats(w.page);
    await sleep(2000);
    const b = await watchStats(w.page);
    const va = a.video || {};
    const vb = b.video || {};
    check(`${w.label}: frames decoded rising`, (vb.framesDecoded ?? 0) > (va.framesDecoded ?? 0) && b.time > a.time,
      `framesDecoded ${va.framesDecoded}→${vb.framesDecoded}, currentTime ${a.time.toFixed(2)}→${b.time.toFixed(2)}, `
      + `${vb.frameWidth}x${vb.frameHeight} @ ${vb.fps ?? '?'} fps, status ${b.status}`);
    if (width) check(`${w.label}: frame width ${width}`, vb.frameWidth === width, `${vb.frameWidth}x${vb.frameHeight}`);
    if (audio) {
      // TESTING.md: Chromium counts energy only for audio that plays in an element. The page's
      // <video> plays muted (autoplay), and muted playback was seen to count none (Chromium 156,
      // against a mock server): if so, unmute it with the page's button and look again.
      let s = await waitFor(async () => {
        const x = await watchStats(w.page);
        return (x.audio?.energy ?? 0) > 0 ? x : null;
      }, 3000, 250);
      const mutedEnergy = !!s;
      if (!s) {
        await w.page.click('#unmute');
        s = await waitFor(async () => {
          const x = await watchStats(w.page);
          return (x.audio?.energy ?? 0) > 0 ? x : null;
        }, 6000, 250);
      }
      const last = s || await watchStats(w.page);
      check(`${w.label}: audio received with energy`, (last.audio?.energy ?? 0) > 0,
        `totalAudioEnergy ${(last.audio?.energy ?? 0).toPrecision(3)}, packets ${last.audio?.received ?? 0}, `
        + `${mutedEnergy ? 'while the element played muted' : `after unmuting (element muted: ${last.muted})`}`);
    }
    return true;
  }

  // An offer from Chromium, for the requests of (e) that should fail on the name, not the SDP.
  const offers = await (async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${pageBase}/index.html`);
    const o = await page.evaluate(async () => {
      const make = async (direction) => {
        const pc = new RTCPeerConnection();
        pc.addTransceiver('audio', { direction });
        pc.addTransceiver('video', { direction });
        const offer = await pc.createOffer();
        pc.close();
        return offer.sdp;
      };
      return { send: await make('sendonly'), recv: await make('recvonly') };
    });
    await ctx.close();
    return o;
  })();

  // ---------------------------------------------------------------- (a) RTMP in, WHEP out
  const ffArgs = (size) => ['-hide_banner', '-loglevel', 'warning', '-re',
    '-f', 'lavfi', '-i', `testsrc2=size=${size}:rate=30`,
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000'];
  const rtmp = startChild('rtmp', FFMPEG, [...ffArgs('1280x720'),
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-profile:v', 'baseline', '-pix_fmt', 'yuv420p',
    '-g', '60', '-b:v', '2500k', '-c:a', 'aac', '-b:a', '128k', '-ar', '48000',
    '-f', 'flv', `rtmp://127.0.0.1:${RTMP_PORT}/live/ffmpeg`]);
  // The viewer opens at once: until the publish is up the page is answered 404 and asks again.
  const viewerA = await openPage('watch live/ffmpeg', '/watch.html?stream=live/ffmpeg&autoplay=1');
  const listedA = await waitFor(async () => (await apiStreams(base))?.find((s) => s.name === 'live/ffmpeg'), 15_000, 200);
  figure(`(a) live/ffmpeg in /api/streams ${listedA ? `${Date.now() - rtmp.startedAt} ms after FFmpeg started` : 'never'}`);
  const playsA = await checkPlays(viewerA, { width: 1280, audio: true });
  if (playsA) {
    const firstAt = await firstFrameEpoch(viewerA.page);
    const st = await stateOf(viewerA);
    figure(`(a) FFmpeg start → first decoded frame in the watch page: ${firstAt ? Math.round(firstAt - rtmp.startedAt) : '?'} ms `
      + `(${st.notLive} POSTs answered 404 or 503 first; the page asks again after 2 s or 1 s)`);
  } else if (!running(rtmp)) {
    figure(`(a) FFmpeg exited ${rtmp.exitCode}: ${short(tail(rtmp.logFile, 5), 400)}`);
  }
  const apiA = await waitFor(async () => {
    const s = (await apiStreams(base))?.find((x) => x.name === 'live/ffmpeg');
    return s && s.source === 'rtmp' && s.readers?.whep === 1 ? s : null;
  }, 5000, 250);
  const seenA = apiA || (await apiStreams(base))?.find((x) => x.name === 'live/ffmpeg');
  check('(a) /api/streams lists live/ffmpeg, source rtmp, one whep reader', !!apiA, JSON.stringify(seenA ?? null));
  if (seenA) {
    figure(`(a) /api/streams: ${(seenA.tracks || []).map((t) => `${t.codec}${t.width ? ` ${t.width}x${t.height}` : ''}${t.sample_rate ? ` ${t.sample_rate} Hz/${t.channels}` : ''}`).join(', ')}; `
      + `${seenA.bitrate_kbps} kbit/s, up ${seenA.uptime_secs} s`);
  }

  // ---------------------------------------------------------------- (e) bad input
  const sdpHeaders = { 'content-type': 'application/sdp' };
  const r415 = await rawRequest(base, 'POST', '/whip/live/x', { headers: { 'content-type': 'text/plain' }, body: offers.send });
  check('(e) POST /whip with Content-Type text/plain → 415', r415.status === 415, `${r415.status} ${short(r415.text)}`);
  const garbage = await rawRequest(base, 'POST', '/whip/live/x', { headers: sdpHeaders, body: 'this is not SDP\r\n\u0000\u0001' });
  check('(e) POST /whip with garbage SDP → 400 with a text body, no server address in it',
    garbage.status === 400 && garbage.text.trim().length > 0 && !/PointerOffset|0x[0-9a-f]{6,}/.test(garbage.text),
    `${garbage.status} ${short(garbage.text)}`);
  for (const name of ['live/../x', 'live//x', 'x'.repeat(300)]) {
    const r = await rawRequest(base, 'POST', `/whip/${name}`, { headers: sdpHeaders, body: offers.send });
    check(`(e) POST /whip/${short(name, 20)} (${name.length} chars) → 400`, r.status === 400, `${r.status} ${short(r.text)}`);
  }
  const nope = await rawRequest(base, 'POST', '/whep/nope/none', { headers: sdpHeaders, body: offers.recv });
  check('(e) POST /whep/nope/none → 404', nope.status === 404, `${nope.status} ${short(nope.text)}`);
  const origin = 'http://example.test';
  const pre = await rawRequest(base, 'OPTIONS', '/whip/live/x', {
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,authorization' },
  });
  const acao = pre.headers['access-control-allow-origin'];
  check('(e) OPTIONS preflight on /whip/live/x → 200/204 with Access-Control-Allow-Origin',
    (pre.status === 200 || pre.status === 204) && (acao === '*' || acao === origin), `${pre.status}, allow-origin ${acao}`);
  // Expose-Headers matters on the answers a page reads; some CORS layers send it there only.
  const exposes = (h) => (h['access-control-expose-headers'] || '').toLowerCase().split(/\s*,\s*/).some((x) => x === 'location' || x === '*');
  let exposedOn = exposes(pre.headers) ? 'the preflight' : null;
  if (!exposedOn) {
    const cross = await rawRequest(base, 'POST', '/whep/nope/none', { headers: { ...sdpHeaders, origin }, body: offers.recv });
    if (exposes(cross.headers)) exposedOn = `a cross-origin POST (${cross.status}), not the preflight`;
  }
  check('(e) Access-Control-Expose-Headers includes Location', !!exposedOn,
    exposedOn || `preflight: ${pre.headers['access-control-expose-headers'] ?? 'none'}`);

  // Garbage on the RTMP port: the server drops that connection; the RTMP publish of (a) goes on.
  const junk = crypto.randomBytes(4096);
  if (junk[0] === 3) junk[0] = 0xfe; // never the RTMP version byte: the handshake must fail
  const closed = await new Promise((resolve) => {
    const started = Date.now();
    const s = net.connect(RTMP_PORT, '127.0.0.1', () => s.write(junk));
    const timer = setTimeout(() => { s.destroy(); resolve(null); }, 10_000);
    const done = (how) => { clearTimeout(timer); s.destroy(); resolve(`${how} after ${Date.now() - started} ms`); };
    s.on('end', () => done('FIN'));
    s.on('close', () => done('closed'));
    s.on('error', (e) => done(e.code || e.message));
    s.on('data', () => {}); // whatever the server answers first
  });
  check('(e) the server closes an RTMP connection that sends 4 KB of garbage', !!closed, closed || 'still open after 10 s');
  if (playsA) {
    const a = await watchStats(viewerA.page);
    await sleep(2000);
    const b = await watchStats(viewerA.page);
    check('(e) live/ffmpeg still plays after the garbage', (b.video?.framesDecoded ?? 0) > (a.video?.framesDecoded ?? 0) && running(rtmp),
      `framesDecoded ${a.video?.framesDecoded}→${b.video?.framesDecoded}, FFmpeg ${running(rtmp) ? 'running' : `exited ${rtmp.exitCode}`}`);
  }
  await viewerA.context.close(); // two cores: keep the load down for what follows

  // ---------------------------------------------------------------- (b) WHIP from the browser
  const pub = await openPage('publish live/browser', '/publish.html?stream=live/browser&autostart=1');
  const live = await waitFor(async () => {
    const s = await stateOf(pub);
    return s.status === 'live' || s.status === 'error' ? s : null;
  }, 20_000, 200);
  if (check('(b) publish.html is live over WHIP', live?.status === 'live',
    live ? `status ${live.status}${live.error ? `: ${live.error}` : ''}, resource ${live.resource}` : JSON.stringify(await stateOf(pub)))) {
    figure(`(b) publish page: answered and connected ${Math.round(live.liveAt - live.startedAt)} ms after start`);
    const viewerB = await openPage('watch live/browser', '/watch.html?stream=live/browser&autoplay=1');
    const playsB = await checkPlays(viewerB, { audio: true });
    // A second viewer goes to the other media shard (sessions take the shards in turn): it is
    // fed by the publisher's shard handing each packet over, and must play like the first.
    const viewerB2 = await openPage('watch live/browser (2)', '/watch.html?stream=live/browser&autoplay=1');
    await checkPlays(viewerB2, { audio: true });
    const shards = (await (await fetch(`${base}/api/rooms`)).json()).shards ?? [];
    check('(b) both media shards send to a viewer of live/browser',
      shards.length === 2 && shards.every((x) => x.rtp_out > 0 && x.peers >= 1),
      JSON.stringify(shards));
    await viewerB2.context.close();
    const pubStats = await pub.page.evaluate(() => window.onairState.stats);
    if (pubStats) {
      figure(`(b) publisher: ${pubStats.bitrate_kbps} kbit/s out, RTT ${pubStats.rtt_ms} ms, ${pubStats.local_candidate_type}→${pubStats.remote_candidate_type} ${pubStats.protocol}; `
        + `video ${pubStats.video?.codec} ${pubStats.video?.width}x${pubStats.video?.height}`);
    }
    const apiB = (await apiStreams(base))?.find((x) => x.name === 'live/browser');
    check('(b) /api/streams lists live/browser with source whip', apiB?.source === 'whip', JSON.stringify(apiB ?? null));
    // The publisher stops: the viewer notices, and the stream goes from the list.
    const stoppedAt = Date.now();
    await pub.page.click('#stop');
    const pubStopped = await waitFor(async () => (await stateOf(pub)).status === 'stopped', 5000, 100);
    check('(b) publish page stops', !!pubStopped, JSON.stringify(await stateOf(pub)));
    if (playsB) {
      const noticed = await waitFor(async () => {
        const s = await stateOf(viewerB);
        return ['ended', 'waiting', 'connecting'].includes(s.status) ? s : null;
      }, 20_000, 200);
      check('(b) watch page shows the stream ended or retrying', !!noticed,
        noticed ? `${noticed.status} after ${Date.now() - stoppedAt} ms (end reason ${noticed.endReason})` : JSON.stringify(await stateOf(viewerB)));
    }
    const gone = await waitFor(async () => {
      const list = await apiStreams(base);
      return list && !list.some((x) => x.name === 'live/browser');
    }, 10_000, 250);
    check('(b) /api/streams no longer lists live/browser', !!gone, gone ? `${Date.now() - stoppedAt} ms after stop` : 'still listed after 10 s');
    await viewerB.context.close();
  }
  await pub.context.close();

  // ---------------------------------------------------------------- (c) a room participant
  const alice = await openPage('room alice', '/room.html?room=e2ews&name=alice&autojoin=1');
  const published = await waitFor(() => alice.page.evaluate(() => window.onairRoom?.localTracks.size >= 2), 20_000, 200);
  if (check('(c) alice joined room e2ews and publishes', !!published)) {
    const viewerC = await openPage('watch e2ews/alice', '/watch.html?stream=e2ews/alice&autoplay=1');
    await checkPlays(viewerC);
    const apiC = (await apiStreams(base))?.find((x) => x.name === 'e2ews/alice');
    figure(`(c) /api/streams entry: ${JSON.stringify(apiC ?? null)}`);
    await viewerC.context.close();
  }
  await alice.page.evaluate(() => window.onairRoom?.leave()).catch(() => {});
  await alice.context.close();

  // ------------------------------------------ (f) a WebRTC source read back from the hub
  // The browser publishes H.264 over WHIP; the viewer asks for the hub's frames (`via=hub`):
  // the server reassembles the RTP into access units and packetizes them again, as HLS and
  // WebSocket players will read them.
  const pubF = await openPage('publish live/hub (h264)', '/publish.html?stream=live/hub&codec=h264&autostart=1');
  const liveF = await waitFor(async () => {
    const st = await stateOf(pubF);
    return st.status === 'live' || st.status === 'error' ? st : null;
  }, 20_000, 200);
  if (check('(f) publish.html is live over WHIP with H.264', liveF?.status === 'live', JSON.stringify(liveF ?? await stateOf(pubF)))) {
    const viewerF = await openPage('watch live/hub via the hub', '/watch.html?stream=live/hub&via=hub&autoplay=1');
    await checkPlays(viewerF, { audio: true });
    const apiF = (await apiStreams(base))?.find((x) => x.name === 'live/hub');
    check('(f) /api/streams: the WHIP stream carries frames in the hub (a hub reader, bitrate > 0)',
      (apiF?.readers?.whep ?? 0) >= 1 && (apiF?.bitrate_kbps ?? 0) > 0, JSON.stringify(apiF ?? null));
    await viewerF.context.close();
  }
  await pubF.context.close();

  // ---------------------------------------------- (g) simulcast over WHIP, a layer per viewer
  const pubG = await openPage('publish live/sim (simulcast)', '/publish.html?stream=live/sim&simulcast=1&autostart=1');
  const liveG = await waitFor(async () => {
    const st = await stateOf(pubG);
    return st.status === 'live' || st.status === 'error' ? st : null;
  }, 20_000, 200);
  if (check('(g) publish.html is live over WHIP with three simulcast layers', liveG?.status === 'live', JSON.stringify(liveG ?? await stateOf(pubG)))) {
    const small = await openPage('watch live/sim max_height=180', '/watch.html?stream=live/sim&max_height=180&autoplay=1');
    const big = await openPage('watch live/sim', '/watch.html?stream=live/sim&autoplay=1');
    await checkPlays(small);
    await checkPlays(big);
    // Chrome sends the top layer only once its bandwidth estimate allows: give it time.
    const heights = await waitFor(async () => {
      const a = (await watchStats(small.page)).video?.frameHeight ?? 0;
      const b = (await watchStats(big.page)).video?.frameHeight ?? 0;
      return a > 0 && b > a ? { a, b } : null;
    }, 20_000, 500);
    const a = (await watchStats(small.page)).video?.frameHeight;
    const b = (await watchStats(big.page)).video?.frameHeight;
    check('(g) the capped viewer gets a smaller layer than the uncapped one', !!heights && heights.a <= 180,
      heights ? `${heights.a}p (max_height=180) vs ${heights.b}p` : `${a}p vs ${b}p after 20 s`);
    await small.context.close();
    await big.context.close();
  }
  await pubG.context.close();

  // ---------------------------------------------------------------- (d) FFmpeg 9 over WHIP
  const py = spawnSync('python3', ['-c', 'import imageio_ffmpeg;print(imageio_ffmpeg.get_ffmpeg_exe())'], { encoding: 'utf8' });
  const ff9 = py.status === 0 ? py.stdout.trim() : null;
  if (!ff9 || !fs.existsSync(ff9)) {
    const why = `imageio-ffmpeg not importable (pip install imageio-ffmpeg): ${short(py.stderr || py.error?.message || '', 160)}`;
    if (process.env.CI === 'true') check('(d) FFmpeg 9 WHIP publish', false, why);
    else console.log(`# skip - (d) FFmpeg 9 WHIP publish: ${why}`);
  } else {
    const whip = startChild('whip', ff9, [...ffArgs('640x360'),
      '-c:v', 'libx264', '-profile:v', 'baseline', '-bf', '0', '-g', '60',
      '-c:a', 'libopus', '-ar', '48000', '-ac', '2',
      '-f', 'whip', `${base}/whip/live/ffwhip`]);
    const listedD = await waitFor(async () => (await apiStreams(base))?.find((s) => s.name === 'live/ffwhip') || !running(whip), 15_000, 200);
    if (!running(whip)) {
      check('(d) FFmpeg 9 publishes over WHIP', false, `exited ${whip.exitCode}: ${short(tail(whip.logFile, 6), 500)}`);
    } else {
      check('(d) FFmpeg 9 publishes over WHIP', !!listedD && listedD !== true,
        listedD && listedD !== true ? `source ${listedD.source}, ${Date.now() - whip.startedAt} ms` : 'not in /api/streams within 15 s');
      const viewerD = await openPage('watch live/ffwhip', '/watch.html?stream=live/ffwhip&autoplay=1');
      await checkPlays(viewerD, { width: 640 });
      await viewerD.context.close();
    }
    await stopChild(whip);
  }

  // ----------------------------------------- (h) the RTMP publisher dies: readers see the end
  if (running(rtmp)) {
    const viewerH = await openPage('watch live/ffmpeg (end)', '/watch.html?stream=live/ffmpeg&autoplay=1');
    const playingH = await waitFor(async () => (await stateOf(viewerH)).status === 'playing', 20_000, 200);
    if (check('(h) a viewer plays live/ffmpeg', !!playingH, JSON.stringify(await stateOf(viewerH)))) {
      // A viewer of a one-layer stream runs no bandwidth estimate and is answered without
      // transport-cc: the server's round trip and loss for it come from Chromium's RTCP
      // receiver reports.
      const whepConn = async () => {
        const all = await fetch(`${base}/api/sessions`).then((r) => r.json()).catch(() => []);
        const s = all.find?.((x) => x.role === 'whep' && x.stream === 'live/ffmpeg');
        return s?.connections?.[0] ?? null;
      };
      const reported = await waitFor(async () => {
        const c = await whepConn();
        return c && c.rtt_ms != null && c.loss_out_pct != null ? c : null;
      }, 10_000, 250);
      const c = reported ?? await whepConn();
      const answer = await viewerH.page.evaluate(() => window.onairSession?.pc?.remoteDescription?.sdp ?? null)
        .catch(() => null);
      check('(h) the viewer\'s answer has no transport-cc or abs-send-time (no estimate for one layer)',
        answer != null && !/transport-wide-cc|abs-send-time/.test(answer),
        answer == null ? 'no answer in the page' : (answer.match(/a=extmap:.*/g) ?? []).join(' | '));
      figure(`(h) the viewer's connection as the server reports it: round trip ${c?.rtt_ms} ms, `
        + `${c?.loss_out_pct} % lost, estimate ${c?.estimate_bps ?? 'none'}`);
      check('(h) the viewer (no estimate, no transport-cc) has a round trip and loss from its receiver reports',
        !!reported, JSON.stringify(c));
      const killedAt = Date.now();
      rtmp.kill('SIGKILL'); // no deleteStream, no FIN in order: the connection just dies mid-stream
      const unlisted = await waitFor(async () => !(await apiStreams(base))?.some((x) => x.name === 'live/ffmpeg'), 10_000, 200);
      check('(h) killed RTMP publisher: /api/streams drops live/ffmpeg', !!unlisted,
        unlisted ? `${Date.now() - killedAt} ms after the kill` : 'still listed after 10 s');
      const ended = await waitFor(async () => {
        const st = await stateOf(viewerH);
        return st.status !== 'playing' ? st : null;
      }, 15_000, 200);
      check('(h) the viewer sees the stream end', !!ended,
        ended ? `${ended.status} (${ended.endReason ?? 'no reason'}) ${Date.now() - killedAt} ms after the kill` : 'still playing after 15 s');
    }
    await viewerH.context.close();
  }

  check('no uncaught page errors', pageErrors.length === 0, pageErrors.join(' | '));
  await stopChild(rtmp);

  const termAt = Date.now();
  server.kill('SIGTERM');
  const exit = await waitFor(() => serverExit, 10_000, 100);
  figure(`server after SIGTERM: ${exit ? `code ${exit.code}, signal ${exit.signal}, ${Date.now() - termAt} ms` : 'still running after 10 s'}`);
  return 0;
}

let code;
try {
  code = await main();
} catch (e) {
  check(`no exception (${e.message.split('\n')[0]})`, false);
  console.log(e.stack);
  code = 1;
}
clearTimeout(overall);
const failed = summary();
await finish(code === 2 ? 2 : failed || code ? 1 : 0);
