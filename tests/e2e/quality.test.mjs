#!/usr/bin/env node
// Quality you can see, in real Chromium: a publisher, a subscriber on a clean link, and one in
// its own network namespace (joined by a veth pair) whose downlink drops 20 % of UDP at random
// (nftables). The server's figures (GET /api/rooms/NAME) are checked against what the browsers
// themselves measure (getStats: round trip, packets lost), the room page's quality bars must
// show the lossy one as poor and the others as good or better, /metrics must carry the
// histograms, and the dashboard page must plot the figures. Then the loss is lifted (the grade
// recovers) and the lossy subscriber's link is cut (it is shown as lost). Runs inside a
// loopback-only namespace (netns-run) and only makes namespaces and addresses of its own
// (198.51.100.0/24, a documentation range).
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, logTail, onairBin, results, runMain,
  startOnair, sleep, waitFor,
} from './harness.mjs';

const OVERALL_TIMEOUT_MS = 180_000;
const LOSS_PCT = 20;
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-quality-${process.pid}.log`);
let server = null;
let browser = null;
let lossyBrowser = null;
let holder = null;

async function finish(code) {
  if (code !== 0) {
    console.log(logTail(logPath));
  }
  await browser?.close().catch(() => {});
  await lossyBrowser?.close().catch(() => {});
  if (server && server.exitCode === null) server.kill('SIGKILL');
  holder?.kill('SIGKILL');
  process.exit(code);
}
setTimeout(() => { console.log('not ok - overall timeout'); finish(1); }, OVERALL_TIMEOUT_MS - 5000).unref();

const sh = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/** A page's own measurements: video packets received and lost on its subscriber connection,
 *  and the round trip of its publisher connection's candidate pair (STUN checks). */
function browserStats(page) {
  return page.evaluate(async () => {
    const out = { received: 0, lost: 0, rttMs: null };
    const sub = window.onairRoom?.subscriber;
    (await sub?.getStats())?.forEach((x) => {
      if (x.type === 'inbound-rtp' && x.kind === 'video') {
        out.received += x.packetsReceived ?? 0;
        out.lost += x.packetsLost ?? 0;
      }
    });
    const pub = window.onairRoom?.publisher;
    (await pub?.getStats())?.forEach((x) => {
      if (x.type === 'candidate-pair' && x.nominated && x.currentRoundTripTime != null) out.rttMs = x.currentRoundTripTime * 1000;
    });
    return out;
  });
}

/** `data-quality` of each tile on a room page, by participant name; `self` for its own. */
function tileGrades(page) {
  return page.evaluate(() => {
    const out = { self: document.querySelector('#self-tile')?.dataset.quality ?? null };
    document.querySelectorAll('#grid .tile[data-source="camera"]').forEach((t) => { out[t.dataset.name] = t.dataset.quality ?? null; });
    return out;
  });
}

async function main() {
  const bin = onairBin();
  if (!bin) return 2;
  // The lossy subscriber's namespace: 198.51.100.1 here (onair listens on it), .2 there.
  holder = spawn('unshare', ['-n', 'sleep', '600'], { stdio: 'ignore' });
  await sleep(200);
  const pid = holder.pid;
  sh('ip', ['link', 'add', 'vA', 'type', 'veth', 'peer', 'name', 'vB']);
  sh('ip', ['link', 'set', 'vB', 'netns', String(pid)]);
  sh('ip', ['addr', 'add', '198.51.100.1/24', 'dev', 'vA']);
  sh('ip', ['link', 'set', 'vA', 'up']);
  sh('nsenter', ['-t', String(pid), '-n', 'sh', '-c', 'ip link set lo up; ip addr add 198.51.100.2/24 dev vB; ip link set vB up']);
  // Loss on the way to the lossy subscriber only (media, RTCP and STUN alike; its own packets
  // to us go through untouched, so its receiver reports tell the server what it lost).
  sh('nft', ['add', 'table', 'inet', 'onairq']);
  sh('nft', ['add', 'chain', 'inet', 'onairq', 'out', '{ type filter hook output priority 0; }']);
  const lose = () => sh('nft', ['add', 'rule', 'inet', 'onairq', 'out', 'oifname', 'vA', 'meta', 'l4proto', 'udp',
    'numgen', 'random', 'mod', '100', '<', String(LOSS_PCT), 'drop']);
  const noLoss = () => sh('nft', ['flush', 'chain', 'inet', 'onairq', 'out']);

  const httpPort = await freeTcpPort();
  const base = `http://127.0.0.1:${httpPort}`;
  let up;
  ({ proc: server, up } = await startOnair(bin, { ONAIR_HTTP_LISTEN: `0.0.0.0:${httpPort}`, ONAIR_AUTH_ALLOW_ANONYMOUS: 'true', ONAIR_MEDIA_PORT: String(await freeMediaPort()),
      ONAIR_MEDIA_BIND: '0.0.0.0', ONAIR_MEDIA_PUBLIC_IPS: '["198.51.100.1"]', ONAIR_TURN_ENABLED: 'false' }, logPath, httpPort));
  if (!check('server up', up)) return 1;

  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const wrapper = path.join(os.tmpdir(), `chromium-in-ns-q-${process.pid}.sh`);
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec nsenter -t ${pid} -n ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  lossyBrowser = await chromium.launch({ executablePath: wrapper, args: CHROMIUM_ARGS });

  const room = `q${process.pid}`;
  const viewport = { width: 960, height: 720 };
  // One layer, to spare the two cores: this test is about measuring, not about layers.
  const pub = await (await browser.newContext({ viewport })).newPage();
  await pub.goto(`${base}/room.html?room=${room}&name=P&autojoin=1&simulcast=0`);
  await waitFor(() => pub.evaluate(() => window.onairRoom?.localTracks.size >= 2), 15_000);
  const clean = await (await browser.newContext({ viewport })).newPage();
  await clean.goto(`${base}/room.html?room=${room}&name=C&autojoin=1&audio=0&video=0`);
  const lossy = await (await lossyBrowser.newContext({ viewport })).newPage();
  await lossy.goto(`http://198.51.100.1:${httpPort}/room.html?room=${room}&name=L&autojoin=1&audio=0&video=0`);
  const flowing = await waitFor(async () => ((await browserStats(lossy)).received > 200 && (await browserStats(clean)).received > 200) || null, 30_000, 500);
  if (!check('both subscribers receive the video', !!flowing)) return 1;

  lose();
  const l0 = await browserStats(lossy);
  // The grade needs a few reports to settle (it is held for 3), and the loss some packets.
  await sleep(12_000);
  const l1 = await browserStats(lossy);
  const report = await (await fetch(`${base}/api/rooms/${room}`)).json();
  const byName = Object.fromEntries(report.participants.map((p) => [p.name, p]));
  const conn = (name, kind) => byName[name]?.connections.find((c) => c.kind === kind);
  check('the room report lists the three participants', ['P', 'C', 'L'].every((n) => byName[n]), Object.keys(byName).join(','));

  const up1 = conn('P', 'publisher');
  figure(`publisher connection: ${JSON.stringify(up1)}`);
  check('the publisher connection: media in, a round trip, a udp host candidate',
    up1?.bitrate_in_bps > 100_000 && up1?.rtt_ms != null && up1?.candidate?.protocol === 'udp'
      && up1?.candidate?.remote_type === 'host', JSON.stringify(up1));
  const tracks = byName.P?.tracks || [];
  check('its two tracks, with codecs and bitrates', tracks.length === 2 && tracks.every((t) => t.codec && t.layers.some((l) => l.bitrate_bps > 0)),
    JSON.stringify(tracks));
  // The browser's own round trip for the same connection (its STUN checks); loopback, so both
  // are a few milliseconds: the server's must not be far off.
  const pubStats = await browserStats(pub);
  figure(`publisher round trip: server ${up1?.rtt_ms} ms, Chromium's candidate pair ${pubStats.rttMs?.toFixed(1)} ms`);
  check('the server\'s round trip agrees with Chromium\'s within 50 ms', up1?.rtt_ms != null && pubStats.rttMs != null
    && Math.abs(up1.rtt_ms - pubStats.rttMs) < 50);

  const browserLoss = (100 * (l1.lost - l0.lost)) / Math.max(1, (l1.received - l0.received) + (l1.lost - l0.lost));
  const down = conn('L', 'subscriber');
  const cleanDown = conn('C', 'subscriber');
  figure(`lossy subscriber: server says ${down?.loss_out_pct} % lost, Chromium counted ${browserLoss.toFixed(1)} % `
    + `(${l1.lost - l0.lost} of ${(l1.received - l0.received) + (l1.lost - l0.lost)} video packets; ${LOSS_PCT} % dropped, NACKs recover some)`);
  figure(`clean subscriber: ${cleanDown?.loss_out_pct} % lost, ${cleanDown?.bitrate_out_bps} bit/s out, rtt ${cleanDown?.rtt_ms} ms`);
  check('the server sees the lossy subscriber\'s loss (≥ 5 %)', down?.loss_out_pct >= 5, JSON.stringify(down));
  // Chromium counts a packet lost only until its retransmission arrives; the server's figure
  // is the receiver reports' fraction over each interval. Both see the drops.
  check('…and so does Chromium (≥ 3 %)', browserLoss >= 3, browserLoss.toFixed(1));
  check('the clean subscriber loses < 2 %', cleanDown?.loss_out_pct != null && cleanDown.loss_out_pct < 2, JSON.stringify(cleanDown));
  check('the grades: L poor, C and P good or excellent', byName.L?.quality === 'poor'
    && ['good', 'excellent'].includes(byName.C?.quality) && ['good', 'excellent'].includes(byName.P?.quality),
  `P ${byName.P?.quality}, C ${byName.C?.quality}, L ${byName.L?.quality}`);

  const seenByC = await tileGrades(clean);
  const seenByL = await tileGrades(lossy);
  const roomShot = path.join(os.tmpdir(), `onair-room-quality-${process.pid}.png`);
  await clean.screenshot({ path: roomShot });
  figure(`the clean subscriber's page shows ${JSON.stringify(seenByC)} (screenshot ${roomShot}); the lossy one's ${JSON.stringify(seenByL)}`);
  check('the room page shows L as poor and P as good or better', seenByC.L === 'poor' && ['good', 'excellent'].includes(seenByC.P));
  check('the lossy subscriber\'s page shows its own connection as poor', seenByL.self === 'poor');

  const metrics = await (await fetch(`${base}/metrics`)).text();
  const metric = (re) => Number(metrics.match(re)?.[1] ?? NaN);
  const rttCount = metric(/^onair_connection_rtt_ms_count (\d+)/m);
  const lossOver5 = metric(/^onair_connection_loss_percent_count (\d+)/m) - metric(/^onair_connection_loss_percent_bucket\{le="5"\} (\d+)/m);
  const poor = metric(/^onair_participants_by_quality\{quality="poor"\} (\d+)/m);
  figure(`/metrics: ${rttCount} round trips observed, ${lossOver5} loss figures above 5 %, ${poor} participant(s) poor`);
  check('/metrics has the histograms and the grade gauge', rttCount > 10 && lossOver5 >= 3 && poor === 1);

  // The dashboard: cards, figures and plots.
  const dash = await (await browser.newContext({ viewport: { width: 1280, height: 1600 } })).newPage();
  await dash.goto(`${base}/dashboard.html?room=${room}`);
  const plotted = await waitFor(() => dash.evaluate(() => (window.onairDashboard?.polls >= 6 ? true : null)), 20_000, 500);
  const d = await dash.evaluate(() => {
    const cards = [...document.querySelectorAll('.dash-card')].map((c) => ({ name: c.dataset.name, quality: c.dataset.quality }));
    const row = document.querySelector('.dash-card[data-name="L"] .dash-conn[data-kind="subscriber"]');
    const s = row && window.onairDashboard.series.get(row.dataset.key);
    // Red (loss) pixels in the lossy subscriber's plot: the loss strip was drawn.
    const canvas = row?.querySelector('canvas');
    let red = 0;
    if (canvas) {
      const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 0; i < px.length; i += 4) if (px[i] > 200 && px[i + 1] < 100 && px[i + 2] < 100) red += 1;
    }
    const layers = s ? [...s.layers.values()].map((v) => v.filter((x) => x != null).length) : [];
    return { cards, points: s?.loss.filter((v) => v != null).length ?? 0, maxLoss: s ? Math.max(...s.loss.filter((v) => v != null)) : null, red, layers };
  });
  const shot = path.join(os.tmpdir(), `onair-dashboard-${process.pid}.png`);
  await dash.screenshot({ path: shot, fullPage: true });
  figure(`dashboard: ${JSON.stringify(d)}; screenshot ${shot}`);
  check('the dashboard shows the three participants, L as poor', !!plotted && d.cards.length === 3
    && d.cards.find((c) => c.name === 'L')?.quality === 'poor');
  check('…and plots L\'s loss (points, and red drawn on its canvas)', d.points >= 5 && d.maxLoss >= 5 && d.red > 20, JSON.stringify(d));
  check('…and the layer of the video L receives', d.layers.length === 1 && d.layers[0] >= 5, JSON.stringify(d.layers));

  // The loss lifted: the grade recovers.
  noLoss();
  const liftedAt = Date.now();
  const recovered = await waitFor(async () => (['good', 'excellent'].includes((await tileGrades(clean)).L) ? Date.now() - liftedAt : null), 20_000, 500);
  figure(`loss lifted: L shown as good or better after ${recovered == null ? 'more than 20 s' : `${(recovered / 1000).toFixed(1)} s`}`);
  check('with the loss lifted L is shown as good or better within 20 s', recovered != null);

  // The link cut both ways: L is lost.
  sh('ip', ['link', 'set', 'vA', 'down']);
  const cutAt = Date.now();
  const lost = await waitFor(async () => ((await tileGrades(clean)).L === 'lost' ? Date.now() - cutAt : null), 25_000, 500);
  figure(`link cut: L shown as lost after ${lost == null ? 'more than 25 s' : `${(lost / 1000).toFixed(1)} s`}`);
  check('with its link cut L is shown as lost within 25 s', lost != null);
  return 0;
}

await runMain(main, summary, finish);
