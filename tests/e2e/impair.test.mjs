#!/usr/bin/env node
// A subscriber on a bad path, in real Chromium: 10 % of datagrams lost, 80 ms of delay and
// 20 ms of jitter each way, on the subscriber's path only. The kernel here has no netem, so the
// path goes through onair-impair (testkit's user-space relay): the subscriber's browser runs in
// its own network namespace, joined to ours by a veth pair; onair listens on 198.51.100.1 and
// also advertises 198.51.100.3, where the relay listens and forwards to 198.51.100.1. nftables
// keep each client on its path: the subscriber's namespace cannot reach onair's media port
// directly, and nobody else can reach the relay. Over 30 s the subscriber's video must keep
// decoding (≥ 5 frames/s) and its audio stay continuous (concealed < 3 %: RED, NACK/RTX); the figures (frames/s, freezes,
// audio concealed, Chromium's round trip, the relay's counts) are printed. Runs inside a
// loopback-only namespace (netns-run); addresses are from a documentation range (198.51.100.0/24).
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, logTail, onairBin, results, runMain,
  startOnair, sleep, waitFor,
} from './harness.mjs';

const OVERALL_TIMEOUT_MS = 150_000;
const IMPAIRMENT = process.env.ONAIR_E2E_IMPAIRMENT || 'loss=10% delay=80ms jitter=20ms';
const MEASURE_S = 30;
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-impair-${process.pid}.log`);
let server = null;
let relay = null;
let browser = null;
let farBrowser = null;
let holder = null;

async function finish(code) {
  if (code !== 0) console.log(logTail(logPath));
  await browser?.close().catch(() => {});
  await farBrowser?.close().catch(() => {});
  if (server && server.exitCode === null) server.kill('SIGKILL');
  relay?.kill('SIGKILL');
  holder?.kill('SIGKILL');
  process.exit(code);
}
setTimeout(() => { console.log('not ok - overall timeout'); finish(1); }, OVERALL_TIMEOUT_MS - 5000).unref();

const sh = (cmd, args, input) => execFileSync(cmd, args, { input, stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'] }).toString();

/** The subscriber's audio and video from getStats, and its candidate pair's round trip. */
function inbound(page) {
  return page.evaluate(async () => {
    const out = { at: performance.now() };
    const stats = await window.onairRoom?.subscriber?.getStats();
    if (!stats) return out;
    let pairId = null;
    stats.forEach((x) => { if (x.type === 'transport' && x.selectedCandidatePairId) pairId = x.selectedCandidatePairId; });
    stats.forEach((x) => {
      if (x.type === 'candidate-pair' && x.id === pairId && x.currentRoundTripTime !== undefined) {
        out.rttMs = x.currentRoundTripTime * 1000;
      }
      if (x.type !== 'inbound-rtp') return;
      if (x.kind === 'video') {
        Object.assign(out, { frames: x.framesDecoded ?? 0, height: x.frameHeight ?? 0, freezes: x.totalFreezesDuration ?? 0,
          videoLost: x.packetsLost ?? 0, videoReceived: x.packetsReceived ?? 0, nacks: x.nackCount ?? 0 });
      } else {
        Object.assign(out, { samples: x.totalSamplesReceived ?? 0, concealed: x.concealedSamples ?? 0,
          audioLost: x.packetsLost ?? 0, audioReceived: x.packetsReceived ?? 0 });
      }
    });
    return out;
  });
}

async function main() {
  const bin = onairBin();
  if (!bin) return 2;
  const impairBin = path.resolve(process.env.ONAIR_IMPAIR_BIN || path.join(path.dirname(bin), 'onair-impair'));
  if (!fs.existsSync(impairBin)) {
    console.error(`error: ${impairBin} not found (cargo build -p testkit --bin onair-impair, or set ONAIR_IMPAIR_BIN)`);
    return 2;
  }
  // The far subscriber's namespace: 198.51.100.2 there; here 198.51.100.1 (onair) and .3 (the relay).
  holder = spawn('unshare', ['-n', 'sleep', '300'], { stdio: 'ignore' });
  await sleep(200);
  const pid = holder.pid;
  sh('ip', ['link', 'add', 'vA', 'type', 'veth', 'peer', 'name', 'vB']);
  sh('ip', ['link', 'set', 'vB', 'netns', String(pid)]);
  sh('ip', ['addr', 'add', '198.51.100.1/24', 'dev', 'vA']);
  sh('ip', ['addr', 'add', '198.51.100.3/24', 'dev', 'vA']);
  sh('ip', ['link', 'set', 'vA', 'up']);
  sh('nsenter', ['-t', String(pid), '-n', 'sh', '-c', 'ip link set lo up; ip addr add 198.51.100.2/24 dev vB; ip link set vB up']);

  const httpPort = await freeTcpPort();
  const mediaPort = await freeMediaPort();
  // Each client on its path: the far namespace reaches onair's media only through the relay,
  // and nobody else reaches the relay.
  sh('nft', ['-f', '-'], `table inet onair_impair {
    chain input {
      type filter hook input priority 0; policy accept;
      iifname "vA" ip daddr 198.51.100.1 udp dport ${mediaPort} drop
      iifname != "vA" ip daddr 198.51.100.3 udp dport ${mediaPort} drop
    }
  }`);
  ({ proc: server } = await startOnair(bin, {
    ONAIR_HTTP_LISTEN: `0.0.0.0:${httpPort}`, ONAIR_AUTH_ALLOW_ANONYMOUS: 'true', ONAIR_MEDIA_PORT: String(mediaPort), ONAIR_MEDIA_BIND: '198.51.100.1',
    // One shard: the impairing relay stands in front of one media port (a second shard's
    // port would be a way around it).
    ONAIR_MEDIA_SHARDS: '1',
    ONAIR_MEDIA_PUBLIC_IPS: '["198.51.100.1","198.51.100.3"]', ONAIR_MEDIA_ICE_TCP: 'false', ONAIR_TURN_ENABLED: 'false',
  }, logPath, httpPort));
  if (!check('server up on 198.51.100.1', server.exitCode === null)) return 1;

  relay = spawn(impairBin, ['--listen', `198.51.100.3:${mediaPort}`, '--server', `198.51.100.1:${mediaPort}`,
    '--up', IMPAIRMENT, '--down', IMPAIRMENT, '--seed', '17', '--for', '200'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: relay.stdout });
  const replies = [];
  lines.on('line', (l) => replies.push(l));
  const listening = await waitFor(() => replies.find((l) => l.startsWith('listening')), 5000);
  if (!check('the relay listens on 198.51.100.3', !!listening, String(listening))) return 1;
  const counts = async () => {
    const before = replies.length;
    relay.stdin.write('counts\n');
    const line = await waitFor(() => replies.slice(before).find((l) => l.startsWith('{')), 2000);
    return line ? JSON.parse(line) : null;
  };

  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const wrapper = path.join(os.tmpdir(), `chromium-in-ns-${process.pid}.sh`);
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec nsenter -t ${pid} -n ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  farBrowser = await chromium.launch({ executablePath: wrapper, args: CHROMIUM_ARGS });

  const room = `impair${process.pid}`;
  const viewport = { width: 960, height: 720 };
  const pub = await (await browser.newContext({ viewport })).newPage();
  await pub.goto(`http://127.0.0.1:${httpPort}/room.html?room=${room}&name=P&autojoin=1`);
  await waitFor(() => pub.evaluate(() => window.onairRoom?.localTracks.size >= 2), 15_000);
  const far = await (await farBrowser.newContext({ viewport })).newPage();
  await far.goto(`http://198.51.100.1:${httpPort}/room.html?room=${room}&name=F&autojoin=1&audio=0&video=0`);
  const playing = await waitFor(async () => {
    const s = await inbound(far);
    return s.frames > 10 && s.samples > 0 ? s : null;
  }, 30_000, 500);
  if (!check('the far subscriber plays through the relay', !!playing, JSON.stringify(await inbound(far)))) return 1;

  await sleep(5000); // past the start: the first keyframe, the jitter buffer settling
  const a = await inbound(far);
  const ca = await counts();
  await sleep(MEASURE_S * 1000);
  const b = await inbound(far);
  const cb = await counts();
  const secs = (b.at - a.at) / 1000;
  const fps = (b.frames - a.frames) / secs;
  const frozen = b.freezes - a.freezes;
  const samples = b.samples - a.samples;
  const concealedPct = samples > 0 ? (100 * (b.concealed - a.concealed)) / samples : null;
  const pct = (lost, got) => (lost + got > 0 ? (100 * lost) / (lost + got) : 0);
  const audioLoss = pct(b.audioLost - a.audioLost, b.audioReceived - a.audioReceived);
  const videoLoss = pct(b.videoLost - a.videoLost, b.videoReceived - a.videoReceived);
  const relayed = (d) => (cb && ca ? {
    passed: cb[d].passed - ca[d].passed, lost: cb[d].lost - ca[d].lost,
  } : null);
  const down = relayed('down');
  const up = relayed('up');
  figure(`path (${IMPAIRMENT}, each way): the relay dropped ${down?.lost} of ${down && down.passed + down.lost} datagrams to the subscriber `
    + `and ${up?.lost} of ${up && up.passed + up.lost} from it; Chromium's round trip ${b.rttMs?.toFixed(0)} ms`);
  figure(`over ${secs.toFixed(0)} s: video ${fps.toFixed(1)} frames/s at ${b.height}p, ${frozen.toFixed(2)} s frozen, `
    + `${videoLoss.toFixed(1)} % of video packets lost before any retransmission (${b.nacks - a.nacks} NACKs sent); `
    + `audio concealed ${concealedPct?.toFixed(2)} % with ${audioLoss.toFixed(1)} % of audio packets lost`);
  // 80 ms each way with ±20 ms of jitter: a sample may be as low as 120 ms (one was 141 ms in a
  // CI run); loopback alone is under 5 ms.
  check('the path is the relay\'s: Chromium measures a round trip of 120 ms or more', (b.rttMs ?? 0) >= 120, `${b.rttMs} ms`);
  check('the relay lost about a tenth downstream (5–15 %)', !!down && down.lost / (down.passed + down.lost) > 0.05
    && down.lost / (down.passed + down.lost) < 0.15, JSON.stringify(down));
  // "Keeps decoding" and no more: with a 150-180 ms round trip each lost packet costs a frame
  // at least that long: four runs on 2026-12-06 decoded 7.0-7.5 frames/s of the publisher's
  // 15, with 6.0-7.7 s frozen in 30 s (at a 1 ms round trip, loss.test.mjs decodes 15+).
  // The freezes are reported; getting them down is open work (issue 17).
  check('video keeps decoding (≥ 5 frames/s)', fps >= 5, `${fps.toFixed(1)} frames/s`);
  check('audio stays continuous (concealed < 3 %)', concealedPct !== null && concealedPct < 3, `${concealedPct} %`);
  return 0;
}

await runMain(main, summary, finish);
