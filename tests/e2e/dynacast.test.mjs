#!/usr/bin/env node
// Dynacast in real Chromium: a member publishing its camera with three simulcast layers (the
// room page, q/h/f) is told which layers anyone receives, and its SDK sets the others'
// encodings inactive. Read from the publisher's own getStats (frames encoded per RID):
//   - alone in the room, it encodes only its lowest layer (after the server's 5 s hold);
//   - a viewer with a large window joins: the top layer is encoded again within seconds and the
//     viewer decodes it;
//   - the viewer's window shrinks (its tile asks for 180p): the two upper layers stop again,
//     and the viewer keeps decoding the lowest one.
// Runs inside a loopback-only namespace (netns-run).
import os from 'node:os';
import path from 'node:path';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, logTail, onairBin, results, runMain,
  sleep, startOnair, waitFor,
} from './harness.mjs';

const OVERALL_TIMEOUT_MS = 150_000;
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-dynacast-${process.pid}.log`);
let server = null;
let browser = null;

async function finish(code) {
  if (code !== 0) {
    console.log(logTail(logPath));
  }
  await browser?.close().catch(() => {});
  if (server && server.exitCode === null) server.kill('SIGKILL');
  process.exit(code);
}
setTimeout(() => { console.log('not ok - overall timeout'); finish(1); }, OVERALL_TIMEOUT_MS - 5000).unref();

/** Frames encoded so far and the height, per simulcast RID, from the publisher's getStats. */
function encoded(page) {
  return page.evaluate(async () => {
    const pc = window.onairRoom?.publisher;
    if (!pc) return {};
    const out = {};
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video' && s.rid) {
        out[s.rid] = { frames: s.framesEncoded ?? 0, height: s.frameHeight ?? null };
      }
    });
    return out;
  });
}

/** Which RIDs encoded frames during `ms`, with their heights. */
async function encoding(page, ms = 2000) {
  const a = await encoded(page);
  await sleep(ms);
  const b = await encoded(page);
  const rids = Object.keys(b).filter((r) => b[r].frames > (a[r]?.frames ?? 0)).sort(order);
  return { rids, heights: Object.fromEntries(rids.map((r) => [r, b[r].height])) };
}
const order = (x, y) => 'qhf'.indexOf(x) - 'qhf'.indexOf(y);

/** The viewer's decoded video: frames so far and height. */
function decoded(page) {
  return page.evaluate(async () => {
    const pc = window.onairRoom?.subscriber;
    if (!pc) return null;
    let out = null;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') out = { frames: s.framesDecoded ?? 0, height: s.frameHeight ?? null };
    });
    return out;
  });
}

async function main() {
  const bin = onairBin();
  if (!bin) return 2;
  const httpPort = await freeTcpPort();
  const base = `http://127.0.0.1:${httpPort}`;
  let up;
  ({ proc: server, up } = await startOnair(bin, {
    ONAIR_HTTP_LISTEN: `127.0.0.1:${httpPort}`, ONAIR_MEDIA_PORT: String(await freeMediaPort()),
    ONAIR_TURN_ENABLED: 'false', RUST_LOG: 'info,sfu::dynacast=debug',
  }, logPath, httpPort));
  if (!check('server up', up)) return 1;
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const room = `dyn${process.pid}`;
  const open = async (name, query, viewport) => {
    const page = await (await browser.newContext({ viewport })).newPage();
    await page.goto(`${base}/room.html?room=${room}&name=${name}&autojoin=1${query}`);
    return page;
  };

  // The publisher alone: all three layers at first (Chromium starts them as its estimate
  // allows), then only q once the server's hold has passed.
  const pub = await open('P', '', { width: 960, height: 720 });
  const started = Date.now();
  const all = await waitFor(async () => ((await encoding(pub, 1000)).rids.length === 3 ? true : null), 15_000, 200);
  check('the publisher starts encoding its three layers', all === true);
  const alone = await waitFor(async () => {
    const e = await encoding(pub, 1500);
    return e.rids.join('') === 'q' ? e : null;
  }, 20_000, 200);
  figure(`alone in the room: encoding ${JSON.stringify(alone?.rids ?? (await encoding(pub)).rids)} `
    + `${((Date.now() - started) / 1000).toFixed(1)} s after the page opened`);
  check('alone, the publisher encodes only its lowest layer', alone != null);
  const told = await pub.evaluate(() => [...window.onairRoom.localTracks.values()].find((l) => l.kind === 'video')?.activeLayers);
  check('the SDK says which layers are active', JSON.stringify(told) === '["q"]', JSON.stringify(told));

  // A viewer with a large window (its tile asks for the full picture).
  const viewer = await open('V', '&video=0&audio=0', { width: 1600, height: 1200 });
  const joinedAt = Date.now();
  const back = await waitFor(async () => {
    const e = await encoding(pub, 500);
    return e.rids.includes('f') ? e : null;
  }, 15_000, 100);
  const backS = (Date.now() - joinedAt) / 1000;
  figure(`viewer joined: the top layer encoded again after ${backS.toFixed(1)} s (${JSON.stringify(back?.rids)})`);
  check('a viewer wanting the full picture brings the top layer back within 10 s', back != null && backS < 10);
  const topHeight = back?.heights.f;
  const seenTop = await waitFor(async () => {
    const d = await decoded(viewer);
    return d && topHeight && d.height === topHeight ? d : null;
  }, 15_000, 250);
  figure(`the viewer decodes ${seenTop?.height ?? (await decoded(viewer))?.height}p (the top layer: ${topHeight}p)`);
  check('the viewer decodes the top layer', seenTop != null);

  // The viewer's window shrinks: its tile asks for 180p, so h and f are not needed.
  await viewer.setViewportSize({ width: 320, height: 240 });
  const cap = await waitFor(() => viewer.evaluate(() => Object.values(window.onairLayerCaps ?? {})[0] ?? null), 5000, 100);
  figure(`the viewer's tile asks for max_height ${cap}`);
  const shrunkAt = Date.now();
  const low = await waitFor(async () => {
    const e = await encoding(pub, 1000);
    return e.rids.join('') === 'q' ? e : null;
  }, 20_000, 200);
  const lowS = (Date.now() - shrunkAt) / 1000;
  figure(`viewer at ${cap}p: only ${JSON.stringify(low?.rids)} encoded after ${lowS.toFixed(1)} s`);
  check('with only a small tile watching, the upper layers stop (after the hold)', low != null);
  const d0 = await decoded(viewer);
  await sleep(3000);
  const d1 = await decoded(viewer);
  const fps = d0 && d1 ? (d1.frames - d0.frames) / 3 : 0;
  figure(`the viewer meanwhile decodes ${fps.toFixed(1)} frames/s at ${d1?.height}p`);
  check('the viewer keeps decoding the lowest layer', fps >= 10 && d1?.height != null && d1.height <= 240, `${fps} fps at ${d1?.height}p`);
  return 0;
}

await runMain(main, summary, finish);
