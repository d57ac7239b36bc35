#!/usr/bin/env node
// A subscriber on a link slower than the stream, in real Chromium: a publisher's 3-layer
// simulcast camera in a room, a subscriber on a clean link and one whose downlink is capped at
// 300 kbit/s (its own network namespace, joined by a veth pair shaped with tc tbf). onair's
// bandwidth estimate for each subscriber connection (TWCC) and its stream allocator must give
// the capped one a layer its link carries (frames keep coming, little freezing, audio intact)
// while the clean one keeps the top layer; once the cap is lifted the capped one climbs back.
// Then a cap under any video layer (100 kbit/s): the video is paused, the page says why, the
// audio goes on, and it all comes back when the cap is lifted. Figures from getStats (and the
// shaper's drop count) are printed. Runs inside a loopback-only namespace (netns-run) and only
// makes namespaces and addresses of its own (198.51.100.0/24, a documentation range).
// The server runs with rooms.bandwidth_allocation on.
//
// ONAIR_E2E_BWE_VIA=whep: the same with a simulcast WHIP publisher (publish.html) and WHEP
// viewers (watch.html) instead of a room. WHEP has no signalling, so under the lowest cap the
// check is that the video stops (the server pauses it) while the audio goes on, and comes back.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, results, runMain, sleep, waitFor,
} from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OVERALL_TIMEOUT_MS = 270_000;
const CAP = process.env.ONAIR_E2E_CAP || '300kbit';
const LOW_CAP = '100kbit';
const VIA_WHEP = process.env.ONAIR_E2E_BWE_VIA === 'whep';
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-bwe-${process.pid}.log`);
let server = null;
let browser = null;
let cappedBrowser = null;
let holder = null;

async function finish(code) {
  if (code !== 0) {
    let log = '(no log)';
    try { log = fs.readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-25).join('\n'); } catch { /* none */ }
    console.log(`# server log (${logPath}):\n${log.replace(/^/gm, '#   ')}`);
  }
  await browser?.close().catch(() => {});
  await cappedBrowser?.close().catch(() => {});
  if (server && server.exitCode === null) server.kill('SIGKILL');
  holder?.kill('SIGKILL');
  process.exit(code);
}
setTimeout(() => { console.log('not ok - overall timeout'); finish(1); }, OVERALL_TIMEOUT_MS - 5000).unref();

const sh = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/** The subscriber's view of the publisher's camera and microphone, from getStats. */
function inbound(page) {
  return page.evaluate(async () => {
    const pc = window.onairRoom?.subscriber ?? window.onairSession?.pc;
    const out = { at: performance.now() };
    if (!pc) return out;
    (await pc.getStats()).forEach((x) => {
      if (x.type !== 'inbound-rtp') return;
      if (x.kind === 'video') {
        Object.assign(out, { frames: x.framesDecoded ?? 0, height: x.frameHeight ?? 0, freezes: x.totalFreezesDuration ?? 0,
          videoLost: x.packetsLost ?? 0, keyframes: x.keyFramesDecoded ?? 0, plis: x.pliCount ?? 0,
          framesReceived: x.framesReceived ?? 0, framesDropped: x.framesDropped ?? 0, videoPackets: x.packetsReceived ?? 0,
          nacks: x.nackCount ?? 0, ssrc: x.ssrc });
      } else {
        Object.assign(out, { samples: x.totalSamplesReceived ?? 0, concealed: x.concealedSamples ?? 0, audioLost: x.packetsLost ?? 0 });
      }
    });
    return out;
  });
}

/** The height the publisher's encoder gives its top simulcast layer (`f`) now. */
function topLayerHeight(page) {
  return page.evaluate(async () => {
    const pc = window.onairRoom?.publisher ?? window.onairSession?.pc;
    let h = null;
    (await pc?.getStats())?.forEach((x) => {
      if (x.type === 'outbound-rtp' && x.kind === 'video' && x.rid === 'f') h = x.frameHeight ?? null;
    });
    return h;
  });
}

/** What changed between two getStats snapshots, per second where it is a rate. */
function between(a, b) {
  const secs = (b.at - a.at) / 1000;
  const samples = b.samples - a.samples;
  return {
    secs: Math.round(secs),
    fps: (b.frames - a.frames) / secs,
    height: b.height,
    frozenS: b.freezes - a.freezes,
    concealedPct: samples > 0 ? (100 * (b.concealed - a.concealed)) / samples : null,
  };
}

async function main() {
  const bin = path.resolve(HERE, process.env.ONAIR_BIN || '../../target/release/onair');
  if (!fs.existsSync(bin)) {
    console.error(`error: server binary ${bin} not found (cargo build --release, or set ONAIR_BIN)`);
    return 2;
  }
  // The capped subscriber's namespace, joined to ours by a veth pair: 198.51.100.1 here (onair
  // listens on it), 198.51.100.2 there.
  holder = spawn('unshare', ['-n', 'sleep', '600'], { stdio: 'ignore' });
  await sleep(200);
  const pid = holder.pid;
  sh('ip', ['link', 'add', 'vA', 'type', 'veth', 'peer', 'name', 'vB']);
  sh('ip', ['link', 'set', 'vB', 'netns', String(pid)]);
  sh('ip', ['addr', 'add', '198.51.100.1/24', 'dev', 'vA']);
  sh('ip', ['link', 'set', 'vA', 'up']);
  sh('nsenter', ['-t', String(pid), '-n', 'sh', '-c', 'ip link set lo up; ip addr add 198.51.100.2/24 dev vB; ip link set vB up']);
  const cap = (rate = CAP) => sh('tc', ['qdisc', 'replace', 'dev', 'vA', 'root', 'tbf', 'rate', rate, 'burst', '16kbit', 'latency', '400ms']);
  const uncap = () => sh('tc', ['qdisc', 'del', 'dev', 'vA', 'root']);

  const httpPort = await freeTcpPort();
  server = spawn(bin, [], {
    env: { ...process.env, ONAIR_HTTP_LISTEN: `0.0.0.0:${httpPort}`, ONAIR_AUTH_ALLOW_ANONYMOUS: 'true', ONAIR_MEDIA_PORT: String(await freeMediaPort()),
      ONAIR_MEDIA_BIND: '0.0.0.0', ONAIR_MEDIA_PUBLIC_IPS: '["198.51.100.1"]', ONAIR_TURN_ENABLED: 'false',
      ONAIR_ROOMS_BANDWIDTH_ALLOCATION: 'true',
      RUST_LOG: process.env.RUST_LOG || 'info,sfu::bandwidth=debug,sfu::media=debug' },
    stdio: ['ignore', fs.openSync(logPath, 'w'), fs.openSync(logPath, 'a')],
  });
  const up = await waitFor(async () => (await fetch(`http://127.0.0.1:${httpPort}/healthz`).catch(() => null))?.ok, 15_000, 200);
  if (!check('server up, listening on 198.51.100.1 too', !!up)) return 1;

  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  // The capped subscriber's browser runs in its namespace (Playwright talks to it over a pipe).
  const wrapper = path.join(os.tmpdir(), `chromium-in-ns-${process.pid}.sh`);
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec nsenter -t ${pid} -n ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  cappedBrowser = await chromium.launch({ executablePath: wrapper, args: CHROMIUM_ARGS });

  const room = `bwe${process.pid}`;
  // Tall enough that with three participants (two rows of tiles) each asks for the 720p layer.
  const viewport = { width: 1280, height: 1400 };
  const pub = await (await browser.newContext({ viewport })).newPage();
  const stream = `live/bwe${process.pid}`;
  let clean;
  let capped;
  if (VIA_WHEP) {
    await pub.goto(`http://127.0.0.1:${httpPort}/publish.html?stream=${stream}&simulcast=1&autostart=1`);
    await waitFor(() => pub.evaluate(() => window.onairState?.status === 'live'), 15_000);
    // The stream is live once its first packets came: give its layers a moment to be known.
    await waitFor(async () => (await fetch(`http://127.0.0.1:${httpPort}/api/streams`).then((r) => r.json()).catch(() => null))
      ?.some?.((x) => x.name === stream), 15_000, 500);
    await sleep(2000);
    clean = await (await browser.newContext({ viewport })).newPage();
    await clean.goto(`http://127.0.0.1:${httpPort}/watch.html?stream=${stream}&autoplay=1`);
    capped = await (await cappedBrowser.newContext({ viewport })).newPage();
    await capped.goto(`http://198.51.100.1:${httpPort}/watch.html?stream=${stream}&autoplay=1`);
  } else {
    await pub.goto(`http://127.0.0.1:${httpPort}/room.html?room=${room}&name=P&autojoin=1`);
    await waitFor(() => pub.evaluate(() => window.onairRoom?.localTracks.size >= 2), 15_000);
    clean = await (await browser.newContext({ viewport })).newPage();
    await clean.goto(`http://127.0.0.1:${httpPort}/room.html?room=${room}&name=C&autojoin=1&audio=0&video=0`);
    capped = await (await cappedBrowser.newContext({ viewport })).newPage();
    await capped.goto(`http://198.51.100.1:${httpPort}/room.html?room=${room}&name=K&autojoin=1&audio=0&video=0`);
  }
  const playing = await waitFor(async () => {
    const [c, k] = [await inbound(clean), await inbound(capped)];
    return c.height >= 720 && k.height >= 720 ? { c, k } : null;
  }, 30_000, 500);
  if (!check('both subscribers receive the 720p layer on clean links', !!playing,
    JSON.stringify({ clean: await inbound(clean), capped: await inbound(capped) }))) return 1;

  // The cap: 10 s to settle, then 20 s measured.
  cap();
  // ONAIR_E2E_DIAG=1: the shaper's queue every half second after the cap (how long the link
  // stays flooded).
  if (process.env.ONAIR_E2E_DIAG) {
    for (let i = 0; i < 20; i++) {
      const q = sh('tc', ['-s', 'qdisc', 'show', 'dev', 'vA']).match(/Sent (\d+) bytes (\d+) pkt \(dropped (\d+).*\n\s*backlog (\S+)/);
      console.log(`# diag t=${i * 0.5}s sent=${q?.[1]} pkts=${q?.[2]} dropped=${q?.[3]} backlog=${q?.[4]}`);
      await sleep(500);
    }
  }
  await sleep(10_000);
  const [c0, k0] = [await inbound(clean), await inbound(capped)];
  await sleep(20_000);
  const [c1, k1] = [await inbound(clean), await inbound(capped)];
  const shaped = sh('tc', ['-s', 'qdisc', 'show', 'dev', 'vA']).match(/Sent (\d+) bytes (\d+) pkt \(dropped (\d+)/);
  if (shaped) figure(`the cap's queue: ${shaped[2]} packets sent, ${shaped[3]} dropped`);
  const k = between(k0, k1);
  const c = between(c0, c1);
  figure(`capped at ${CAP}: capped subscriber ${k.fps.toFixed(1)} frames/s at ${k.height}p, ${k.frozenS.toFixed(2)} s frozen in ${k.secs} s, `
    + `audio concealed ${k.concealedPct?.toFixed(2)} %; clean subscriber ${c.fps.toFixed(1)} frames/s at ${c.height}p`);
  check('under the cap the capped subscriber gets a lower layer', k.height > 0 && k.height < 720, `${k.height}p`);
  check('…and decodes ≥ 10 frames/s, frozen < 2 s in 20 s', k.fps >= 10 && k.frozenS < 2, JSON.stringify(k));
  check('…and its audio is concealed < 2 %', k.concealedPct !== null && k.concealedPct < 2, JSON.stringify(k));
  // Its frame rate is the publisher's: three Chromiums on two cores encode 15-20 frames/s.
  check('the clean subscriber keeps the 720p layer, frozen < 2 s', c.height >= 720 && c.fps >= 10 && c.frozenS < 2, JSON.stringify(c));

  // The cap lifted: back to the top layer within 15 s (the issue's figure). Before VP8 picture
  // ids were renumbered across switches (sfu/vp8.rs), one run in three stayed at 360p for over
  // 30 s while the server sent the 720p layer; since, 7 of 7 runs climbed back in 6.1-9.6 s. The
  // wait goes on to 30 s so that a slow climb is measured, not only failed.
  uncap();
  const liftedAt = Date.now();
  // The top layer is what the publisher's encoder makes of it right now: with three Chromiums
  // on two cores it may scale it down (CPU adaptation), so the clean subscriber's height, and
  // the publisher's own figure for its top layer, are printed beside it when it is slow.
  const back = await waitFor(async () => ((await inbound(capped)).height >= 720 ? Date.now() - liftedAt : null), 30_000, 500);
  figure(`cap lifted: the capped subscriber back at 720p after ${back == null
    ? `more than 30 s (now ${JSON.stringify(await inbound(capped))}; the clean subscriber at ${(await inbound(clean)).height}p; `
      + `the publisher's top layer at ${await topLayerHeight(pub)}p)`
    : `${(back / 1000).toFixed(1)} s`}`);
  if (back == null) {
    // What the page and the server see two seconds apart: is video still arriving and being
    // decoded, and which layer does the server say it sends?
    const a = await inbound(capped);
    await sleep(2000);
    const b = await inbound(capped);
    figure(`the capped page 2 s apart: ${JSON.stringify(a)} → ${JSON.stringify(b)}`);
    const report = await fetch(`http://127.0.0.1:${httpPort}/api/rooms/${room}`).then((r) => r.json()).catch((e) => String(e));
    const k = report?.participants?.find?.((p) => p.name === 'K');
    figure(`the server's view of K: ${JSON.stringify(k?.subscriptions ?? report)}`);
  }
  check('after the cap is lifted the capped subscriber is back at 720p within 15 s', back != null && back <= 15_000,
    back == null ? 'more than 30 s' : `${(back / 1000).toFixed(1)} s`);

  // A cap under any video layer (the lowest is 100 kbit/s, audio ~60 kbit/s on the wire): the
  // video is paused, the page says why, the audio goes on.
  // A room member's page says why (`track_paused`); WHEP has no signalling, so for a viewer the
  // server's report (`/api/sessions`, its session is the one from 198.51.100.2) says when.
  const pauseNote = () => capped.evaluate(() => {
    const n = document.querySelector('.tile .paused-note:not([hidden])');
    return n ? n.textContent : null;
  });
  const viewerSession = async () => {
    const sessions = await fetch(`http://127.0.0.1:${httpPort}/api/sessions`).then((r) => r.json()).catch(() => []);
    return sessions.find?.((x) => x.role === 'whep'
      && x.connections?.some?.((c) => c.candidate?.remote?.startsWith('198.51.100.2:')));
  };
  const serverPaused = async () => (await viewerSession())?.subscriptions?.some?.((t) => t.kind === 'video' && t.paused) || null;
  cap(LOW_CAP);
  const cappedAt = Date.now();
  const waitMs = VIA_WHEP ? 25_000 : 20_000;
  const paused = await waitFor(VIA_WHEP ? serverPaused : pauseNote, waitMs, 500);
  const after = paused ? `${((Date.now() - cappedAt) / 1000).toFixed(1)} s` : `more than ${waitMs / 1000} s`;
  if (VIA_WHEP) {
    figure(`capped at ${LOW_CAP}: the server paused the viewer's video after ${after}`);
    if (!check(`under ${LOW_CAP} the server pauses the viewer's video`, !!paused)) return 1;
  } else {
    figure(`capped at ${LOW_CAP}: video paused after ${after}, the page says: ${paused}`);
    if (!check(`under ${LOW_CAP} the video is paused and the page says why`, !!paused && /paused/i.test(paused), String(paused))) return 1;
  }
  // From 4 s on: the pause came through the same full queue as the last video, and frames
  // already on their way (and retransmissions of them) still land first.
  await sleep(4000);
  const p0 = await inbound(capped);
  await sleep(15_000);
  const p = between(p0, await inbound(capped));
  figure(`paused: ${p.fps.toFixed(1)} frames/s, audio concealed ${p.concealedPct?.toFixed(2)} % over ${p.secs} s`);
  check('…and the audio stays continuous (concealed < 2 %)', p.concealedPct !== null && p.concealedPct < 2, JSON.stringify(p));
  check('…and no video is decoded', p.fps < 1, JSON.stringify(p));
  uncap();
  const resumedAt = Date.now();
  const resumed = await waitFor(async () => ((VIA_WHEP || !(await pauseNote()))
    && (await inbound(capped)).frames > p0.frames + 10) || null, 20_000, 500);
  figure(`cap lifted: video back after ${resumed ? `${((Date.now() - resumedAt) / 1000).toFixed(1)} s` : 'more than 20 s'}`);
  check(`after that cap is lifted the video comes back${VIA_WHEP ? '' : ' and the note goes'}`, !!resumed);
  if (VIA_WHEP) {
    const mine = await viewerSession();
    figure(`the server's view of the capped viewer: ${JSON.stringify(mine?.subscriptions?.map?.((t) => ({ kind: t.kind, layer: t.layer, red: t.red, paused: t.paused })))}`);
  }
  return 0;
}

await runMain(main, summary, finish);
