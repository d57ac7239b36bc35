#!/usr/bin/env node
// A subscriber on a link slower than the stream, in real Chromium: a publisher's 3-layer
// simulcast camera in a room, a subscriber on a clean link and one whose downlink is capped at
// 300 kbit/s (its own network namespace, joined by a veth pair shaped with tc tbf). onair's
// bandwidth estimate for each subscriber connection (TWCC) and its stream allocator must give
// the capped one a layer its link carries (frames keep coming, little freezing, audio intact)
// while the clean one keeps the top layer; once the cap is lifted the capped one climbs back.
// Figures from getStats are printed. Runs inside a loopback-only namespace (netns-run) and only
// makes namespaces and addresses of its own (198.51.100.0/24, a documentation range).
//
// Not in .ci/run yet: it fails today, before the cap is even applied. With
// rooms.bandwidth_allocation on, str0m's estimate for a subscriber on a clean link falls to
// ~150 kbit/s within a second of joining and needs ~10 s to climb back, so both subscribers
// start on low layers (and the clean one froze 3 s). The estimate's start is the next thing
// to mend (issue 17).
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, results, runMain, sleep, waitFor,
} from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OVERALL_TIMEOUT_MS = 180_000;
const CAP = process.env.ONAIR_E2E_CAP || '300kbit';
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
    const pc = window.onairRoom?.subscriber;
    const out = { at: performance.now() };
    if (!pc) return out;
    (await pc.getStats()).forEach((x) => {
      if (x.type !== 'inbound-rtp') return;
      if (x.kind === 'video') {
        Object.assign(out, { frames: x.framesDecoded ?? 0, height: x.frameHeight ?? 0, freezes: x.totalFreezesDuration ?? 0,
          videoLost: x.packetsLost ?? 0 });
      } else {
        Object.assign(out, { samples: x.totalSamplesReceived ?? 0, concealed: x.concealedSamples ?? 0, audioLost: x.packetsLost ?? 0 });
      }
    });
    return out;
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
  const cap = () => sh('tc', ['qdisc', 'replace', 'dev', 'vA', 'root', 'tbf', 'rate', CAP, 'burst', '16kbit', 'latency', '400ms']);
  const uncap = () => sh('tc', ['qdisc', 'del', 'dev', 'vA', 'root']);

  const httpPort = await freeTcpPort();
  server = spawn(bin, [], {
    env: { ...process.env, ONAIR_HTTP_LISTEN: `0.0.0.0:${httpPort}`, ONAIR_MEDIA_PORT: String(await freeMediaPort()),
      ONAIR_MEDIA_BIND: '0.0.0.0', ONAIR_MEDIA_PUBLIC_IPS: '["198.51.100.1"]', ONAIR_TURN_ENABLED: 'false',
      ONAIR_ROOMS_BANDWIDTH_ALLOCATION: 'true',
      RUST_LOG: process.env.RUST_LOG || 'info,sfu::bandwidth=debug' },
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
  const viewport = { width: 1280, height: 800 };
  const pub = await (await browser.newContext({ viewport })).newPage();
  await pub.goto(`http://127.0.0.1:${httpPort}/room.html?room=${room}&name=P&autojoin=1`);
  await waitFor(() => pub.evaluate(() => window.onairRoom?.localTracks.size >= 2), 15_000);
  const clean = await (await browser.newContext({ viewport })).newPage();
  await clean.goto(`http://127.0.0.1:${httpPort}/room.html?room=${room}&name=C&autojoin=1&audio=0&video=0`);
  const capped = await (await cappedBrowser.newContext({ viewport })).newPage();
  await capped.goto(`http://198.51.100.1:${httpPort}/room.html?room=${room}&name=K&autojoin=1&audio=0&video=0`);
  const playing = await waitFor(async () => {
    const [c, k] = [await inbound(clean), await inbound(capped)];
    return c.height >= 720 && k.height >= 720 ? { c, k } : null;
  }, 30_000, 500);
  if (!check('both subscribers receive the 720p layer on clean links', !!playing,
    JSON.stringify({ clean: await inbound(clean), capped: await inbound(capped) }))) return 1;

  // The cap: 10 s to settle, then 20 s measured.
  cap();
  await sleep(10_000);
  const [c0, k0] = [await inbound(clean), await inbound(capped)];
  await sleep(20_000);
  const [c1, k1] = [await inbound(clean), await inbound(capped)];
  const k = between(k0, k1);
  const c = between(c0, c1);
  figure(`capped at ${CAP}: capped subscriber ${k.fps.toFixed(1)} frames/s at ${k.height}p, ${k.frozenS.toFixed(2)} s frozen in ${k.secs} s, `
    + `audio concealed ${k.concealedPct?.toFixed(2)} %; clean subscriber ${c.fps.toFixed(1)} frames/s at ${c.height}p`);
  check('under the cap the capped subscriber gets a lower layer', k.height > 0 && k.height < 720, `${k.height}p`);
  check('…and decodes ≥ 10 frames/s, frozen < 2 s in 20 s', k.fps >= 10 && k.frozenS < 2, JSON.stringify(k));
  check('…and its audio is concealed < 2 %', k.concealedPct !== null && k.concealedPct < 2, JSON.stringify(k));
  check('the clean subscriber keeps the 720p layer', c.height >= 720 && c.fps >= 20, JSON.stringify(c));

  // The cap lifted: back to the top layer within 15 s.
  uncap();
  const liftedAt = Date.now();
  const back = await waitFor(async () => ((await inbound(capped)).height >= 720 ? Date.now() - liftedAt : null), 15_000, 500);
  figure(`cap lifted: the capped subscriber back at 720p after ${back == null ? 'more than 15 s' : `${(back / 1000).toFixed(1)} s`}`);
  check('after the cap is lifted the capped subscriber is back at 720p within 15 s', back != null);
  return 0;
}

await runMain(main, summary, finish);
