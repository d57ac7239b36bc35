#!/usr/bin/env node
// End-to-end test of an onair room with four headless Chromium participants.
//
// Starts the server binary (ONAIR_BIN, default ../../target/release/onair), opens
// /room.html?room=e2e&name=P1..P4&autojoin=1 in four browser contexts and checks that everyone
// sees and hears everyone, that chat arrives, that a leave and a crashed tab are noticed, and
// that the server exits 0 on SIGTERM. Runs itself inside shared/tools/netns-run (a network
// namespace with loopback only) unless it already is in one. See README.md.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, results, sleep, waitFor,
} from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OVERALL_TIMEOUT_MS = 120_000;
const GRACE_SECS = 3;
const NAMES = ['P1', 'P2', 'P3', 'P4'];

await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);

const { chromium } = await import('playwright-core');

// ------------------------------------------------------------------ results

const { check, figure, summary } = results();
let server = null;
let serverExit = null;
let browser = null;
const logPath = path.join(os.tmpdir(), `onair-e2e-${process.pid}.log`);

function serverLogTail(lines = 60) {
  try {
    const text = fs.readFileSync(logPath, 'utf8').trimEnd().split('\n');
    return text.slice(-lines).join('\n');
  } catch {
    return '(no server log)';
  }
}

async function finish(code) {
  if (code !== 0) {
    console.log(`# server log (${logPath}), last lines:`);
    console.log(serverLogTail().replace(/^/gm, '#   '));
  }
  if (server && serverExit === null) server.kill('SIGKILL');
  if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
  process.exit(code);
}

const overall = setTimeout(() => {
  check('whole test within 120 s', false);
  summary();
  finish(1);
}, OVERALL_TIMEOUT_MS);

process.on('exit', () => {
  if (server && serverExit === null) server.kill('SIGKILL');
});

// ------------------------------------------------------------------ helpers


// Runs in every page before its scripts: notes when each remote video shows its first frame.
function initScript() {
  window.__e2e = { firstFrame: {} };
  const note = (ev) => {
    const v = ev.target;
    if (v instanceof HTMLVideoElement && v.dataset.trackId && v.videoWidth > 0
        && !(v.dataset.trackId in window.__e2e.firstFrame)) {
      window.__e2e.firstFrame[v.dataset.trackId] = performance.now();
    }
  };
  document.addEventListener('resize', note, true);
  document.addEventListener('loadeddata', note, true);
}

/** The camera tiles of a page: name, participant id, video track id, size, clock. */
function tilesOf(page) {
  return page.evaluate(() => [...document.querySelectorAll('.tile[data-participant-id][data-source="camera"]')].map((t) => {
    const v = t.querySelector('video');
    const s = v?.srcObject;
    return {
      name: t.dataset.name,
      pid: t.dataset.participantId,
      trackId: v?.dataset.trackId || null,
      width: v?.videoWidth || 0,
      height: v?.videoHeight || 0,
      time: v?.currentTime || 0,
      hasAudio: !!s?.getAudioTracks().length,
    };
  }));
}

/** inbound-rtp figures for each camera tile's video and audio, read from the subscriber pc. */
function inboundOf(page) {
  return page.evaluate(async () => {
    const pc = window.onairRoom?.subscriber;
    const out = {};
    if (!pc) return out;
    for (const t of document.querySelectorAll('.tile[data-participant-id][data-source="camera"]')) {
      const s = t.querySelector('video')?.srcObject;
      const vt = s?.getVideoTracks()[0];
      const at = s?.getAudioTracks()[0];
      const rec = {};
      for (const r of pc.getReceivers()) {
        if (!r.track || (r.track !== vt && r.track !== at)) continue;
        (await r.getStats()).forEach((x) => {
          if (x.type !== 'inbound-rtp') return;
          if (x.kind === 'video') {
            Object.assign(rec, { framesDecoded: x.framesDecoded ?? 0, fps: x.framesPerSecond ?? 0,
              frameWidth: x.frameWidth ?? 0, frameHeight: x.frameHeight ?? 0,
              videoLost: x.packetsLost ?? 0, videoReceived: x.packetsReceived ?? 0 });
          } else {
            Object.assign(rec, { energy: x.totalAudioEnergy ?? 0, level: x.audioLevel ?? 0,
              audioLost: x.packetsLost ?? 0, audioReceived: x.packetsReceived ?? 0 });
          }
        });
      }
      out[t.dataset.name] = rec;
    }
    return out;
  });
}

const namesWithTile = (page) => page.evaluate(() => [...new Set(
  [...document.querySelectorAll('.tile[data-participant-id]')].map((t) => t.dataset.name))]);

// ------------------------------------------------------------------ the test

async function main() {
  const bin = path.resolve(HERE, process.env.ONAIR_BIN || '../../target/release/onair');
  if (!fs.existsSync(bin)) {
    console.error(`error: server binary ${bin} not found (build it: cargo build --release, or set ONAIR_BIN)`);
    return 2;
  }
  const httpPort = await freeTcpPort();
  const mediaPort = await freeMediaPort();
  const base = `http://127.0.0.1:${httpPort}`;
  figure(`server ${bin}, http ${httpPort}, media ${mediaPort}, log ${logPath}`);

  // (a) the server, and HTTP answering
  const log = fs.openSync(logPath, 'w');
  server = spawn(bin, [], {
    env: {
      ...process.env,
      ONAIR_ROOMS_RECONNECT_GRACE_SECS: String(GRACE_SECS),
      ONAIR_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
      ONAIR_MEDIA_PORT: String(mediaPort),
    },
    stdio: ['ignore', log, log],
  });
  const exited = new Promise((resolve) => server.on('exit', (code, signal) => {
    serverExit = { code, signal };
    resolve(serverExit);
  }));
  const t0 = Date.now();
  const up = await waitFor(async () => {
    if (serverExit) return 'exited';
    const res = await fetch(`${base}/room.html`).catch(() => null);
    return res && res.status === 200 ? 'up' : null;
  }, 15_000, 200);
  if (!check('server serves /room.html', up === 'up', up === 'exited' ? `server exited: ${JSON.stringify(serverExit)}` : `${Date.now() - t0} ms`)) return 1;

  // Pages from the server, or (ONAIR_E2E_WEB=dir) from a directory, talking to the server's /rtc:
  // a way to try SDK changes without rebuilding the binary that embeds web/.
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
    pageQuery = `&url=${encodeURIComponent(`ws://127.0.0.1:${httpPort}/rtc`)}`;
    figure(`pages from ${dir} at ${pageBase}`);
  }
  // Extra room.html parameters, e.g. ONAIR_E2E_QUERY='codec=vp9&svc=L3T3_KEY'.
  if (process.env.ONAIR_E2E_QUERY) pageQuery += `&${process.env.ONAIR_E2E_QUERY}`;

  // (b) four participants, each in its own browser context
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const pageErrors = [];
  const peers = [];
  // The SVC run uses small pages, so that tiles are under 200 px and ask for 180p: four VP9 SVC
  // encoders on two cores drop to 270p or 360p under CPU, which a 360p cap would not thin, and
  // the thinning check would have nothing to observe (it failed a clean CI run that way).
  const viewport = process.env.ONAIR_E2E_EXPECT_THINNED ? { width: 640, height: 400 } : { width: 960, height: 600 };
  for (const name of NAMES) {
    const context = await browser.newContext({ viewport });
    const page = await context.newPage();
    await page.addInitScript(initScript);
    page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
    page.on('console', (m) => {
      if ((m.type() === 'error' || m.type() === 'warning') && !/favicon/.test(m.text())) {
        console.log(`# ${name} console ${m.type()}: ${m.text()}`);
      }
    });
    peers.push({ name, context, page, crashed: false });
  }
  const open = async (p) => {
    p.opened = Date.now();
    await p.page.goto(`${pageBase}/room.html?room=e2e&name=${p.name}&autojoin=1${pageQuery}`);
  };
  // P3 goes first and publishes before the others come, so its tracks hold the first m-lines
  // (the BUNDLE tag) of everyone's subscriber connection; its crash in (f) then exercises the
  // server's renegotiation when those go away. The other three join at once.
  await open(peers[2]);
  await waitFor(() => peers[2].page.evaluate(() => window.onairRoom?.localTracks.size >= 2), 15_000);
  await Promise.all(peers.filter((p) => p.name !== 'P3').map(open));

  // (c) everyone plays the other three: video frames and audio energy
  const joined = await Promise.all(peers.map((p) => waitFor(() => p.page.evaluate(
    () => window.onairRoom?.state === 'connected' && window.onairRoom.participantId), 15_000)));
  peers.forEach((p, i) => { p.pid = joined[i]; });
  check('all four joined', joined.every(Boolean), peers.map((p) => `${p.name}=${p.pid}`).join(' '));

  const mediaOk = await Promise.all(peers.map(async (p) => {
    const others = NAMES.filter((n) => n !== p.name);
    const tiles = await waitFor(async () => {
      const t = await tilesOf(p.page);
      const ready = others.every((n) => t.some((x) => x.name === n && x.trackId && x.width > 0 && x.hasAudio));
      return ready ? t : null;
    }, 45_000, 250);
    p.readyAt = Date.now();
    if (!tiles) {
      const seen = await tilesOf(p.page).catch(() => []);
      return check(`${p.name} shows video+audio of ${others.join(',')}`, false, `saw ${JSON.stringify(seen)}`);
    }
    check(`${p.name} shows video+audio of ${others.join(',')}`, true);
    const first = await p.page.evaluate(() => window.__e2e.firstFrame);
    const ttff = tiles.filter((t) => others.includes(t.name)).map((t) => `${t.name} ${first[t.trackId] != null ? Math.round(first[t.trackId]) : '?'} ms`);
    const note = p.name === 'P3' ? ' (P3 loaded first and waited for the others)' : '';
    figure(`${p.name}: first decoded frame after page load: ${ttff.join(', ')}; all three after ${p.readyAt - p.opened} ms${note}`);
    return true;
  }));
  if (!mediaOk.every(Boolean)) return 1;

  // Playing: currentTime advances, framesDecoded grows, audio has energy.
  await Promise.all(peers.map(async (p) => {
    const others = NAMES.filter((n) => n !== p.name);
    const [tiles1, in1] = await Promise.all([tilesOf(p.page), inboundOf(p.page)]);
    await sleep(2000);
    const energyReady = await waitFor(async () => {
      const s = await inboundOf(p.page);
      return others.every((n) => (s[n]?.energy ?? 0) > 0 || (s[n]?.level ?? 0) > 0) ? s : null;
    }, 10_000, 500);
    const [tiles2, in2] = await Promise.all([tilesOf(p.page), inboundOf(p.page)]);
    for (const n of others) {
      const a = tiles1.find((t) => t.name === n);
      const b = tiles2.find((t) => t.name === n);
      const va = in1[n] || {};
      const vb = in2[n] || {};
      check(`${p.name} plays ${n}`, a && b && b.time > a.time && vb.framesDecoded > (va.framesDecoded ?? 0),
        `${b?.width}x${b?.height}, currentTime ${a?.time.toFixed(2)}→${b?.time.toFixed(2)}, `
        + `framesDecoded ${va.framesDecoded}→${vb.framesDecoded}, ${vb.fps ?? '?'} fps`);
      const e = (energyReady || in2)[n] || {};
      check(`${p.name} hears ${n}`, (e.energy ?? 0) > 0 || (e.level ?? 0) > 0,
        `totalAudioEnergy ${(e.energy ?? 0).toFixed(4)}, audioLevel ${(e.level ?? 0).toFixed(4)}, packets ${e.audioReceived ?? 0}`);
    }
  }));

  // Figures from the SDK's stats helper.
  const statsOf = new Map();
  for (const p of peers) {
    const s = await p.page.evaluate(() => window.onairRoom.stats()).catch((e) => ({ error: e.message }));
    statsOf.set(p.name, s);
    if (s.error) {
      figure(`${p.name}: stats() failed: ${s.error}`);
      continue;
    }
    const sub = s.connections.subscriber || {};
    const pub = s.connections.publisher || {};
    const inVideo = s.tracks.filter((t) => t.direction === 'in' && t.kind === 'video');
    const out = s.tracks.filter((t) => t.direction === 'out');
    // ONAIR_E2E_EXPECT_CODECS=H264,PCMU: every received track is in one of these codecs.
    const wantCodecs = (process.env.ONAIR_E2E_EXPECT_CODECS || '').split(',').filter(Boolean).map((c) => c.toLowerCase());
    if (wantCodecs.length) {
      const got = s.tracks.filter((t) => t.direction === 'in').map((t) => t.codec || '?');
      check(`${p.name} receives ${wantCodecs.join('/')}`, got.length > 0 && got.every((c) => wantCodecs.includes(c.toLowerCase())),
        got.join(', '));
    }
    // ONAIR_E2E_EXPECT_PROTOCOL=tcp (with NETNS_BLOCK_UDP=1) proves the call rode ICE-TCP.
    const wantProto = process.env.ONAIR_E2E_EXPECT_PROTOCOL;
    if (wantProto) {
      check(`${p.name} media over ${wantProto} both ways`, sub.protocol === wantProto && pub.protocol === wantProto,
        `subscriber ${sub.protocol}, publisher ${pub.protocol}`);
    }
    // ONAIR_E2E_EXPECT_CANDIDATE=relay (with ?relay=1) proves the call went through onair's TURN.
    // Chromium sometimes labels the selected local candidate of a relayed path peer-reflexive
    // (prflx, learnt from the SFU's binding response) rather than relay; it then still reports
    // its relayProtocol, which only relayed candidates have. With ?relay=1 that is the same
    // TURN path, so a prflx candidate with a relay protocol counts as relay. (Seen in 1 CI run
    // of several; why the label differs is not understood yet.)
    const wantCand = process.env.ONAIR_E2E_EXPECT_CANDIDATE;
    if (wantCand) {
      const kind = (s) => (wantCand === 'relay' && s.local_candidate_type === 'prflx' && s.relay_protocol ? 'relay' : s.local_candidate_type);
      check(`${p.name} media via ${wantCand} candidates both ways`,
        kind(sub) === wantCand && kind(pub) === wantCand,
        `subscriber ${sub.local_candidate_type}${sub.relay_protocol ? ` (relay protocol ${sub.relay_protocol})` : ''}, `
        + `publisher ${pub.local_candidate_type}${pub.relay_protocol ? ` (relay protocol ${pub.relay_protocol})` : ''}`);
    }
    // ONAIR_E2E_EXPECT_RELAY_PROTOCOL=tcp: the browser reached TURN over TCP (UDP blocked).
    const wantRelayProto = process.env.ONAIR_E2E_EXPECT_RELAY_PROTOCOL;
    if (wantRelayProto) {
      check(`${p.name} reaches TURN over ${wantRelayProto}`,
        sub.relay_protocol === wantRelayProto && pub.relay_protocol === wantRelayProto,
        `subscriber ${sub.relay_protocol}, publisher ${pub.relay_protocol}`);
    }
    figure(`${p.name}: in ${sub.bitrate_in_kbps} kbit/s via ${sub.local_candidate_type}/${sub.remote_candidate_type} ${sub.protocol}${sub.relay_protocol ? ` (TURN over ${sub.relay_protocol})` : ''}, RTT ${sub.rtt_ms} ms; `
      + `out ${pub.bitrate_out_kbps} kbit/s via ${pub.local_candidate_type}/${pub.remote_candidate_type} ${pub.protocol}`);
    figure(`${p.name}: received video ${inVideo.map((t) => `${t.track_id} ${t.width}x${t.height}@${t.fps} ${t.bitrate_kbps}k loss ${t.loss_pct}% jitter ${t.jitter_ms} ms`).join('; ')}`);
    figure(`${p.name}: sent ${out.map((t) => `${t.source} ${t.bitrate_kbps}k${t.layers ? ` [${t.layers.map((l) => `${l.rid} ${l.height || 0}p ${l.bitrate_kbps}k ${l.key_frames ?? '?'} keyframes ${l.pli_count ?? '?'} PLIs`).join(', ')}]` : ''}`).join('; ')}`);
  }
  if (process.env.ONAIR_E2E_EXPECT_CANDIDATE === 'relay') {
    // Relayed media for the SFU is handed over inside the server, and counted.
    const metrics = await (await fetch(`${base}/metrics`)).text();
    const num = (name) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(metrics)?.[1] ?? NaN);
    const inProcess = num('onair_turn_in_process_packets_total');
    const allocations = num('onair_turn_allocations_total');
    check('TURN relayed the call to the SFU in-process', inProcess > 1000 && allocations >= 8,
      `${allocations} allocations, ${inProcess} packets handed over, ${num('onair_turn_to_client_packets_total')} relayed back`);
  }
  // ONAIR_E2E_EXPECT_THINNED=1 (with SVC): the SFU forwards only the spatial layers a tile asks
  // for (room.js records each track's cap in window.onairLayerCaps), so a subscriber whose cap
  // is below what the publisher encodes on top receives no more than its cap. Four VP9 SVC
  // encoders on two cores lower their resolution to the CPU from moment to moment: a publisher
  // already encoding at or under the cap has nothing to thin, so only the tracks whose publisher
  // encodes above the cap count. The snapshots are taken a moment apart, so most (not all) of
  // those must be within their cap; without thinning none would be.
  if (process.env.ONAIR_E2E_EXPECT_THINNED) {
    let thinned = 0;
    let expected = 0;
    const sentTop = new Map();
    for (const [, s] of statsOf) {
      const cam = s.tracks?.find((t) => t.direction === 'out' && t.source === 'camera');
      if (cam) sentTop.set(cam.track_id, cam.height);
    }
    for (const p of peers) {
      const s = statsOf.get(p.name);
      const caps = await p.page.evaluate(() => window.onairLayerCaps || {}).catch(() => ({}));
      const vids = (s?.tracks || []).filter((t) => t.direction === 'in' && t.kind === 'video');
      const rows = vids.map((t) => `${t.height}/${sentTop.get(t.track_id) ?? '?'} (cap ${caps[t.track_id] ?? 'none'})`);
      figure(`${p.name}: received/sent video height ${rows.join(', ')}`);
      for (const t of vids) {
        const cap = caps[t.track_id];
        const top = sentTop.get(t.track_id);
        if (cap == null || !top || top <= cap) continue;
        expected += 1;
        if (t.height && t.height <= cap) thinned += 1;
      }
    }
    check('received SVC tracks are thinned to their tile\'s cap where the publisher encodes above it',
      expected > 0 && thinned * 3 >= expected * 2,
      expected > 0 ? `${thinned} of ${expected}` : 'no publisher encoded above its viewers\' caps: nothing to observe');
  }

  // (d) chat from P1 reaches P2..P4 with P1's name
  const text = `hello from P1 ${Math.random().toString(36).slice(2, 8)}`;
  const [p1, p2, p3, p4] = peers;
  await p1.page.fill('#chat-input', text);
  const sentAt = Date.now();
  await p1.page.press('#chat-input', 'Enter');
  await Promise.all([p2, p3, p4].map(async (p) => {
    const got = await waitFor(() => p.page.evaluate((t) => [...document.querySelectorAll('.chat-line')]
      .some((l) => l.querySelector('.chat-name')?.textContent === 'P1' && l.textContent.includes(t)), text), 5000);
    check(`${p.name} got P1's chat line`, !!got, got ? `${Date.now() - sentAt} ms` : 'not within 5 s');
  }));

  // (d2) P1 mutes its microphone: the others' tiles for P1 say so; unmuting clears it.
  for (const muted of [true, false]) {
    const at = Date.now();
    await p1.page.click('#mic');
    await Promise.all([p2, p3, p4].map(async (p) => {
      const seen = await waitFor(() => p.page.evaluate((want) => {
        const tile = document.querySelector('.tile[data-name="P1"]:not(.screen)');
        return tile?.dataset.audioMuted === String(want);
      }, muted), 5000);
      check(`${p.name} sees P1 ${muted ? 'muted' : 'unmuted'}`, !!seen, seen ? `${Date.now() - at} ms` : 'not within 5 s');
    }));
  }

  // (d3) P2 shares its screen: a second video track, a screen tile that plays at the others.
  const sharedAt = Date.now();
  await p2.page.click('#screen');
  await Promise.all([p1, p3, p4].map(async (p) => {
    const playing = await waitFor(() => p.page.evaluate(async () => {
      const v = document.querySelector('.tile.screen video');
      if (!v || !v.videoWidth) return false;
      const t0 = v.currentTime;
      await new Promise((r) => setTimeout(r, 300));
      return v.currentTime > t0 ? `${v.videoWidth}x${v.videoHeight}` : false;
    }), 15_000, 300);
    check(`${p.name} plays P2's screen share`, !!playing, playing ? `${playing}, ${Date.now() - sharedAt} ms` : 'no playing screen tile within 15 s');
  }));
  await p2.page.click('#screen'); // stop sharing
  await Promise.all([p1, p3, p4].map(async (p) => {
    const gone = await waitFor(() => p.page.evaluate(() => !document.querySelector('.tile.screen')), 5000);
    check(`${p.name} drops P2's screen tile when sharing stops`, !!gone);
  }));

  // (e) P4 leaves with the button: gone from P1..P3 within 5 s
  const leftAt = Date.now();
  await p4.page.click('#leave');
  await Promise.all([p1, p2, p3].map(async (p) => {
    const gone = await waitFor(async () => !(await namesWithTile(p.page)).includes('P4'), 5000);
    check(`${p.name} drops P4 after leave`, !!gone, gone ? `${Date.now() - leftAt} ms` : 'still there after 5 s');
  }));

  // (f) P3's renderer crashes (no leave is sent): gone from P1, P2 within 15 s
  const crashedAt = Date.now();
  p3.page.on('crash', () => { p3.crashed = true; });
  const cdp = await p3.context.newCDPSession(p3.page);
  await Promise.race([cdp.send('Page.crash').catch(() => {}), sleep(2000)]);
  if (!await waitFor(() => p3.crashed, 3000)) {
    await p3.page.goto('chrome://crash', { timeout: 3000 }).catch(() => {});
  }
  if (p3.crashed) {
    figure('P3: renderer crashed');
  } else {
    figure('P3: the renderer did not crash; closing its context instead');
    await p3.context.close();
  }
  await Promise.all([p1, p2].map(async (p) => {
    const gone = await waitFor(async () => !(await namesWithTile(p.page)).includes('P3'), 15_000, 200);
    check(`${p.name} drops P3 after its tab died`, !!gone, gone ? `${Date.now() - crashedAt} ms (grace ${GRACE_SECS} s)` : 'still there after 15 s');
  }));

  // The two left must still be in the call, each with the other's tile.
  for (const [p, other] of [[p1, 'P2'], [p2, 'P1']]) {
    const state = await p.page.evaluate(() => window.onairRoom?.state).catch(() => null);
    const names = await namesWithTile(p.page).catch(() => []);
    check(`${p.name} still in the call with ${other}`, state === 'connected' && names.includes(other),
      `state ${state}, tiles ${names.join(',') || 'none'}`);
  }

  check('no uncaught page errors', pageErrors.length === 0, pageErrors.join(' | '));

  // (g) SIGTERM: the server exits 0
  const termAt = Date.now();
  server.kill('SIGTERM');
  const exit = await Promise.race([exited, sleep(10_000).then(() => null)]);
  check('server exits 0 on SIGTERM', exit?.code === 0,
    exit ? `code ${exit.code}, signal ${exit.signal}, ${Date.now() - termAt} ms` : 'still running after 10 s');
  const told = await Promise.all([p1, p2].map((p) => p.page.textContent('#status').catch(() => '?')));
  figure(`after shutdown, P1/P2 status: ${told.join(' / ')}`);
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
