#!/usr/bin/env node
// Benchmark (not a test): server CPU for one RTMP stream (720p30 H.264 + AAC, `-c copy` from a
// file made first) with 0, 1 and 4 WHEP viewers in headless Chromium. The server's CPU comes
// from /proc/PID/stat over a 20 s window per step; the browsers' CPU is not counted. Runs inside
// the loopback-only namespace like the tests. Bounded: about 2 minutes.
//   ONAIR_BIN=target/release/onair node tests/e2e/bench-rtmp-whep.mjs
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace } from './harness.mjs';

await enterLoopbackNamespace(import.meta.url, 240_000);
const { chromium } = await import('playwright-core');

const WINDOW_S = Number(process.env.WINDOW_S || 20);
const bin = path.resolve(process.env.ONAIR_BIN || 'target/release/onair');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'onair-bench-'));
const src = path.join(tmp, 'src.flv');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hz = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
const cpuTicks = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
};

spawnSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30',
  '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-ac', '2', '-t', '10',
  '-c:v', 'libx264', '-preset', 'veryfast', '-profile:v', 'baseline', '-pix_fmt', 'yuv420p', '-g', '60', '-b:v', '2500k',
  '-c:a', 'aac', '-b:a', '128k', '-ar', '48000', '-f', 'flv', src], { stdio: 'inherit' });

const server = spawn(bin, [], {
  env: { ...process.env, ONAIR_HTTP_LISTEN: '127.0.0.1:18081', ONAIR_MEDIA_PORT: '18501', ONAIR_RTMP_LISTEN: '127.0.0.1:11936', RUST_LOG: 'warn' },
  stdio: 'ignore',
});
await sleep(500);
const ff = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re', '-stream_loop', '-1', '-i', src, '-c', 'copy',
  '-f', 'flv', 'rtmp://127.0.0.1:11936/live/bench'], { stdio: 'ignore' });
await sleep(3000);

const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
const pages = [];
const results = [];
for (const viewers of [0, 1, 4]) {
  while (pages.length < viewers) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto('http://127.0.0.1:18081/watch.html?stream=live/bench&autoplay=1');
    pages.push(page);
  }
  await sleep(4000); // connected and decoding
  const playing = await Promise.all(pages.map((p) => p.evaluate(() => window.onairState?.status)));
  const c0 = cpuTicks(server.pid);
  await sleep(WINDOW_S * 1000);
  const cpu = (cpuTicks(server.pid) - c0) / hz;
  const r = { viewers, playing: playing.filter((s) => s === 'playing').length, seconds: WINDOW_S,
    server_cpu_s: +cpu.toFixed(2), server_core_fraction: +(cpu / WINDOW_S).toFixed(4) };
  results.push(r);
  console.log(JSON.stringify(r));
}
await browser.close();
ff.kill('SIGKILL');
server.kill('SIGTERM');
fs.rmSync(tmp, { recursive: true, force: true });
const [none, one, four] = results;
console.log(JSON.stringify({
  ingest_and_transcode_core_fraction: none.server_core_fraction,
  first_whep_viewer_core_fraction: +(one.server_core_fraction - none.server_core_fraction).toFixed(4),
  per_viewer_core_fraction_1_to_4: +((four.server_core_fraction - one.server_core_fraction) / 3).toFixed(4),
}));
process.exit(0);
