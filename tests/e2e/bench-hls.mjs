#!/usr/bin/env node
// LL-HLS blocking-reload benchmark: N clients (default 1000) each hold a blocking playlist
// request for the next part, as LL-HLS players do, for D seconds (default 20) while FFmpeg
// publishes 640x360 H.264 + AAC over RTMP. Reports:
//   - blocking answers served per CPU-second of the server (utime+stime from /proc);
//   - how far apart the N answers for the same part arrive (first to last), p50/p99/max;
//   - availability from ingest: answer arrival minus the part's end on the server's clock
//     (EXT-X-PROGRAM-DATE-TIME of its segment + the durations of its parts), p50/p99.
// Usage: ONAIR_BIN=target/release/onair ../shared/tools/netns-run node tests/e2e/bench-hls.mjs [N] [D]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { enterLoopbackNamespace, freeMediaPort, freeTcpPort, sleep, waitFor } from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const N = Number(process.argv[2] || 1000);
const D = Number(process.argv[3] || 20);
await enterLoopbackNamespace(import.meta.url, (D + 60) * 1000);

const bin = path.resolve(HERE, process.env.ONAIR_BIN || '../../target/release/onair');
const port = await freeTcpPort();
const rtmp = await freeTcpPort();
const server = spawn(bin, [], {
  env: { ...process.env, ONAIR_HTTP_LISTEN: `127.0.0.1:${port}`, ONAIR_MEDIA_PORT: String(await freeMediaPort()),
    ONAIR_RTMP_LISTEN: `127.0.0.1:${rtmp}`, ONAIR_TURN_ENABLED: 'false', RUST_LOG: 'warn' },
  stdio: ['ignore', 'ignore', 'inherit'],
});
const ffmpeg = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re', '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30',
  '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency',
  '-pix_fmt', 'yuv420p', '-g', '60', '-b:v', '1000k', '-c:a', 'aac', '-ar', '48000', '-f', 'flv', `rtmp://127.0.0.1:${rtmp}/live/bench`],
{ stdio: 'ignore' });
const stopAll = () => { ffmpeg.kill('SIGKILL'); server.kill('SIGKILL'); };
process.on('exit', stopAll);

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
function get(p) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body, at: Date.now() }));
    });
    req.on('error', reject);
  });
}
const cpu = () => fs.readFileSync(`/proc/${server.pid}/stat`, 'utf8').split(') ')[1].split(' ').slice(11, 13).map(Number).reduce((a, b) => a + b, 0);
const HZ = 100;

/** The preload hint, and each listed part's end on the server's wall clock. */
function parse(text) {
  const hint = text.match(/#EXT-X-PRELOAD-HINT:TYPE=PART,URI="[0-9a-f]+-(\d+)\.(\d+)\.m4s"/);
  const ends = new Map();
  let t = null;
  for (const line of text.split('\n')) {
    const pdt = line.match(/^#EXT-X-PROGRAM-DATE-TIME:(.+)$/);
    if (pdt) t = Date.parse(pdt[1]);
    const part = line.match(/^#EXT-X-PART:DURATION=([\d.]+),URI="[0-9a-f]+-(\d+)\.(\d+)\.m4s"/);
    if (part && t != null) {
      t += Number(part[1]) * 1000;
      ends.set(`${part[2]}.${part[3]}`, t);
    }
  }
  return { next: hint ? [Number(hint[1]), Number(hint[2])] : null, ends };
}

const dir = '/hls/live/bench';
const first = await waitFor(async () => {
  const r = await get(`${dir}/media.m3u8`).catch(() => null);
  return r?.status === 200 ? r : null;
}, 20_000, 300);
if (!first) {
  console.error('no playlist');
  process.exit(1);
}
await sleep(2000);

const answers = new Map(); // "msn.part" → [arrival times]
const avail = [];
let served = 0;
let errors = 0;
let running = true;
async function client() {
  let { next } = parse((await get(`${dir}/media.m3u8`)).body);
  while (running && next) {
    const [msn, part] = next;
    const r = await get(`${dir}/media.m3u8?_HLS_msn=${msn}&_HLS_part=${part}`).catch(() => null);
    if (!r || r.status !== 200) {
      errors += 1;
      await sleep(100);
      next = parse((await get(`${dir}/media.m3u8`)).body).next;
      continue;
    }
    served += 1;
    const p = parse(r.body);
    const key = `${msn}.${part}`;
    if (!answers.has(key)) answers.set(key, []);
    answers.get(key).push(r.at);
    const end = p.ends.get(key);
    if (end != null) avail.push(r.at - end);
    next = p.next;
  }
}
const c0 = cpu();
const t0 = Date.now();
const clients = Array.from({ length: N }, () => client());
await sleep(D * 1000);
running = false;
const c1 = cpu();
const secs = (Date.now() - t0) / 1000;
await Promise.race([Promise.all(clients), sleep(3000)]);

const q = (arr, p) => {
  const s = [...arr].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN;
};
const spreads = [...answers.values()].filter((a) => a.length > N / 2).map((a) => Math.max(...a) - Math.min(...a));
const cpuSecs = (c1 - c0) / HZ;
console.log(`clients ${N}, ${secs.toFixed(1)} s: ${served} blocking answers (${(served / secs).toFixed(0)}/s), ${errors} errors`);
console.log(`server CPU ${cpuSecs.toFixed(2)} s (${(100 * cpuSecs / secs).toFixed(0)} % of a core): ${(served / cpuSecs).toFixed(0)} answers per CPU-second`);
console.log(`answers for one part, first to last: p50 ${q(spreads, 0.5)} ms, p99 ${q(spreads, 0.99)} ms, max ${Math.max(...spreads)} ms (${spreads.length} parts)`);
console.log(`availability from ingest (answer − part end on the server clock): p50 ${q(avail, 0.5)} ms, p99 ${q(avail, 0.99)} ms`);
console.log(`server RSS ${(fs.readFileSync(`/proc/${server.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1] / 1024).toFixed(0)} MiB`);
stopAll();
process.exit(0);
