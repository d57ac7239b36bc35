// What every end-to-end script here shares: the Chromium flags, running inside a loopback-only
// network namespace (re-executing itself under netns-run when not in one), and TAP-like
// results ("ok - …" / "not ok - …", figures as "# …", a closing "N passed, N failed").
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
];

/** True when this process sees no network interface but loopback. */
function loopbackOnly() {
  try {
    const lines = fs.readFileSync('/proc/self/net/dev', 'utf8').split('\n').slice(2);
    return lines.map((l) => l.split(':')[0].trim()).filter(Boolean).every((n) => n === 'lo');
  } catch {
    return false;
  }
}

function findNetnsRun() {
  const candidates = [
    process.env.NETNS_RUN,
    path.resolve(HERE, '../../../shared/tools/netns-run'), // repo/tests/e2e → shared beside repo
    path.resolve(HERE, '../../shared/tools/netns-run'), // shared inside the repo
  ].filter(Boolean);
  return candidates.find((p) => fs.existsSync(p)) || null;
}

/**
 * Returns when this process runs in a loopback-only namespace. Otherwise runs the script
 * (`scriptUrl`, its import.meta.url) again inside netns-run, exits with its status, and never
 * returns. `ONAIR_E2E_ALLOW_HOST_NET=1` skips this (with a warning).
 */
export async function enterLoopbackNamespace(scriptUrl, overallTimeoutMs) {
  if (loopbackOnly()) return;
  if (process.env.ONAIR_E2E_ALLOW_HOST_NET === '1') {
    console.log('# warning: not in a loopback-only namespace (ONAIR_E2E_ALLOW_HOST_NET=1)');
    return;
  }
  const netnsRun = findNetnsRun();
  if (!netnsRun) {
    console.error('error: not in a loopback-only network namespace and netns-run not found; '
      + 'set NETNS_RUN=/path/to/shared/tools/netns-run');
    process.exit(2);
  }
  console.log(`# re-running inside ${netnsRun}`);
  const child = spawn(netnsRun, [process.execPath, ...process.execArgv, fileURLToPath(scriptUrl), ...process.argv.slice(2)], {
    stdio: 'inherit',
  });
  const guard = setTimeout(() => child.kill('SIGKILL'), overallTimeoutMs + 15_000);
  child.on('exit', (code, signal) => {
    clearTimeout(guard);
    process.exit(code ?? (signal ? 1 : 0));
  });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
  await new Promise(() => {}); // wait for the child
}

/** Check results: `check(name, ok, info)` prints and records, `summary()` returns failures. */
export function results() {
  const list = [];
  return {
    check(name, ok, info = '') {
      list.push({ name, ok });
      console.log(`${ok ? 'ok' : 'not ok'} - ${name}${info ? ` (${info})` : ''}`);
      return ok;
    },
    figure(text) {
      console.log(`# ${text}`);
    },
    summary() {
      const passed = list.filter((r) => r.ok).length;
      const failed = list.length - passed;
      console.log(`${passed} passed, ${failed} failed`);
      return failed;
    },
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Whether `port` is free for both UDP and TCP on 127.0.0.1. */
async function portFree(port) {
  const udpFree = await new Promise((resolve) => {
    const udp = dgram.createSocket('udp4');
    udp.once('error', () => resolve(false));
    udp.bind(port, '127.0.0.1', () => udp.close(() => resolve(true)));
  });
  if (!udpFree) return false;
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * The first of `run` port numbers free for both UDP and TCP (WebRTC media and ICE-TCP share
 * each): media shard i takes `media.port + i`, and a server has one shard per core unless
 * `ONAIR_MEDIA_SHARDS` says otherwise.
 */
export async function freeMediaPort(run = 4) {
  for (let i = 0; i < 20; i++) {
    const udp = dgram.createSocket('udp4');
    const port = await new Promise((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(0, '127.0.0.1', () => resolve(udp.address().port));
    });
    await new Promise((resolve) => udp.close(resolve));
    if (port + run > 65536) continue;
    let free = true;
    for (let p = port; p < port + run && free; p++) free = await portFree(p);
    if (free) return port;
  }
  throw new Error('no free media port');
}

/** Poll `fn` until it returns a truthy value or `timeoutMs` passes; returns the last value. */
export async function waitFor(fn, timeoutMs, intervalMs = 100) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
    } catch (e) {
      last = undefined;
      if (Date.now() >= end) throw e;
    }
    if (last || Date.now() >= end) return last;
    await sleep(intervalMs);
  }
}

/** Node 20 has WebSocket only behind a flag: without it, runs the script (`scriptUrl`, its
 * import.meta.url) again with the flag, exits with its status, and never returns. */
export async function withWebSocket(scriptUrl) {
  if (typeof WebSocket !== 'undefined') return;
  const child = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', ...process.execArgv,
    fileURLToPath(scriptUrl), ...process.argv.slice(2)], { stdio: 'inherit' });
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
  await new Promise(() => {});
}

/** Runs a test's `main` (it returns 0 or an exit code; a throw is a failed check), prints the
 * summary, and ends through `finish(code)`: 0 only when main returned 0 and no check failed. */
export async function runMain(main, summary, finish) {
  let code = 1;
  try {
    code = await main();
  } catch (e) {
    console.log(`not ok - ${e.stack || e}`);
  }
  const failed = summary();
  await finish(failed === 0 && code === 0 ? 0 : code || 1);
}

/** The server binary to test: `$ONAIR_BIN`, else the release build. Prints why and returns
 * null when it is not there. */
export function onairBin() {
  const bin = path.resolve(HERE, process.env.ONAIR_BIN || '../../target/release/onair');
  if (fs.existsSync(bin)) return bin;
  console.error(`error: server binary ${bin} not found (cargo build --release, or set ONAIR_BIN)`);
  return null;
}

/** Starts `bin` with `env` added to ours, its output into `logPath`; returns the process and
 * whether `/healthz` on `httpPort` answered within 15 s. */
export async function startOnair(bin, env, logPath, httpPort) {
  const proc = spawn(bin, [], {
    // (The tests' own ONAIR_RTWS_* variables are not server configuration.)
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ONAIR_RTWS_'))),
      RUST_LOG: process.env.RUST_LOG || 'info', ...env },
    stdio: ['ignore', fs.openSync(logPath, 'w'), fs.openSync(logPath, 'a')],
  });
  const up = await waitFor(async () => (await fetch(`http://127.0.0.1:${httpPort}/healthz`).catch(() => null))?.ok, 15_000, 200);
  return { proc, up: !!up };
}

/** The last `lines` lines of a server log, indented as TAP comments, for a failure. */
export function logTail(logPath, lines = 25) {
  let log = '(no log)';
  try { log = fs.readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n'); } catch { /* none */ }
  return `# server log (${logPath}):\n${log.replace(/^/gm, '#   ')}`;
}

const TC_REFERENCE_FILES = ['amf0.js', 'tcmessage.js', 'rtws.js', 'tcconn.js'];

/** The RTWebSocket TC client: the protocol author's reference (tcconn.js and its three
 * companions, from the directory ONAIR_RTWS_REFERENCE names; fetched at test time, never
 * committed), or else tests/e2e/tcconn-fixture.mjs (`fixture: true`). */
export async function loadTcClient() {
  const dir = process.env.ONAIR_RTWS_REFERENCE;
  if (dir && TC_REFERENCE_FILES.every((f) => fs.existsSync(path.join(dir, f)))) {
    // Browser scripts defining globals; rtws.js reads window.performance.
    globalThis.window ??= globalThis;
    for (const f of TC_REFERENCE_FILES) {
      vm.runInThisContext(fs.readFileSync(path.join(dir, f), 'utf8'), { filename: path.join(dir, f) });
    }
    const rev = fs.existsSync(path.join(dir, 'REVISION')) ? fs.readFileSync(path.join(dir, 'REVISION'), 'utf8').trim() : 'unknown revision';
    return { TCConnection: globalThis.com_zenomt_TCConnection, label: `the reference client (tcconn.js, ${rev}, from ${dir})` };
  }
  const { TCConnection } = await import('./tcconn-fixture.mjs');
  return { TCConnection, fixture: true, label: 'tests/e2e/tcconn-fixture.mjs (written from the spec\'s text)' };
}
