#!/usr/bin/env node
// The operator's side (issue 19), with real clients, inside a loopback-only namespace:
//   - a webhook receiver here (a plain Node HTTP server) verifies every event's Standard
//     Webhooks signature and timestamp, and the events of a scripted session come in order:
//     Chromium members join and publish, FFmpeg publishes over RTMP, the stream is recorded and
//     stopped, members are removed, the room ends;
//   - the receiver goes down for a while: the events of that time arrive once it is back;
//   - a second receiver that accepts connections and never answers is configured throughout:
//     the call goes on (the subscriber keeps decoding video);
//   - the admin API: refused without the admin grant; mutes a member's camera (the other
//     member stops receiving it, its owner's page says so), removes a member (its page says
//     it was removed), stops an RTMP publisher (FFmpeg ends), ends the room.
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, logTail, onairBin, results, runMain,
  sleep, startOnair, waitFor,
} from './harness.mjs';

const OVERALL_TIMEOUT_MS = 240_000;
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-admin-${process.pid}.log`);
const recDir = fs.mkdtempSync(path.join(os.tmpdir(), 'onair-e2e-admin-rec-'));
let server = null;
let browser = null;
let ffmpeg = null;
const closers = [];

async function finish(code) {
  if (code !== 0) console.log(logTail(logPath));
  await browser?.close().catch(() => {});
  for (const c of closers) { try { c(); } catch { /* closed */ } }
  if (ffmpeg && ffmpeg.exitCode === null) ffmpeg.kill('SIGKILL');
  if (server && server.exitCode === null) server.kill('SIGKILL');
  fs.rmSync(recDir, { recursive: true, force: true });
  process.exit(code);
}
setTimeout(() => { console.log('not ok - overall timeout'); finish(1); }, OVERALL_TIMEOUT_MS - 5000).unref();

// ------------------------------------------------------------------------ the receiver
const SECRET_BYTES = crypto.randomBytes(24);
const SECRET = `whsec_${SECRET_BYTES.toString('base64')}`;
const events = [];
const bad = [];
const seenIds = new Set();

/** Standard Webhooks verification, written here from the specification. */
function verify(headers, body) {
  const id = headers['webhook-id'];
  const ts = Number(headers['webhook-timestamp']);
  const sigs = String(headers['webhook-signature'] ?? '').split(' ');
  if (!id || !Number.isFinite(ts)) return 'missing headers';
  if (Math.abs(Date.now() / 1000 - ts) > 300) return `timestamp ${ts} too far from now`;
  const want = crypto.createHmac('sha256', SECRET_BYTES).update(`${id}.${ts}.${body}`).digest('base64');
  const ok = sigs.some((s) => {
    const [v, sig] = s.split(',');
    return v === 'v1' && sig?.length === want.length && crypto.timingSafeEqual(Buffer.from(sig), Buffer.from(want));
  });
  return ok ? null : 'bad signature';
}

function startReceiver(port) {
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const why = verify(req.headers, body);
      if (why) {
        bad.push(why);
        res.writeHead(400).end();
        return;
      }
      const ev = JSON.parse(body);
      // A retried delivery carries the same id: keep the first.
      if (!seenIds.has(ev.id)) {
        seenIds.add(ev.id);
        events.push({ ...ev, at: Date.now() });
      }
      res.writeHead(204).end();
    });
  });
  return new Promise((resolve) => srv.listen(port, '127.0.0.1', () => resolve(srv)));
}

const has = (pred) => events.find(pred);
const named = (name, pred = () => true) => events.filter((e) => e.event === name && pred(e));

async function main() {
  const bin = onairBin();
  const httpPort = await freeTcpPort();
  const rtmpPort = await freeTcpPort();
  const hookPort = await freeTcpPort();
  const deadPort = await freeTcpPort();
  const base = `http://127.0.0.1:${httpPort}`;
  let receiver = await startReceiver(hookPort);
  closers.push(() => receiver.close());
  // The receiver that never answers: it takes the connection and says nothing.
  const dead = net.createServer(() => {});
  await new Promise((r) => dead.listen(deadPort, '127.0.0.1', r));
  closers.push(() => dead.close());

  const key = execOnair(bin, ['keys', 'generate']);
  const keysEnv = { ONAIR_AUTH_KEYS: `{ main = "${key}" }` };
  const token = (...args) => execOnair(bin, ['token', ...args], keysEnv);
  let up;
  ({ proc: server, up } = await startOnair(bin, {
    ONAIR_HTTP_LISTEN: `127.0.0.1:${httpPort}`, ONAIR_MEDIA_PORT: String(await freeMediaPort()),
    ONAIR_TURN_ENABLED: 'false', ONAIR_RTMP_LISTEN: `127.0.0.1:${rtmpPort}`,
    ONAIR_RECORDING_ENABLED: 'true', ONAIR_RECORDING_DIR: recDir, ONAIR_RECORDING_STREAMS: '[]',
    ONAIR_WEBHOOKS_URLS: `["http://127.0.0.1:${hookPort}/hook", "http://127.0.0.1:${deadPort}/never"]`,
    ONAIR_WEBHOOKS_SECRET: SECRET, ONAIR_WEBHOOKS_TIMEOUT_MS: '2000',
    ...keysEnv,
  }, logPath, httpPort));
  if (!check('server up with webhooks configured', up)) return 1;

  const room = `ops${process.pid}`;
  const admin = token('--identity', 'ops', '--admin');
  const member = token('--room', room, '--identity', 'm');
  const api = async (method, p, tok, body) => {
    const r = await fetch(`${base}${p}`, {
      method, headers: { ...(tok ? { Authorization: `Bearer ${tok}` } : {}), ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    let json = null;
    try { json = await r.json(); } catch { /* no body */ }
    return { status: r.status, json };
  };

  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const open = async (name) => {
    const page = await (await browser.newContext({ viewport: { width: 960, height: 720 } })).newPage();
    const tok = token('--room', room, '--identity', name, '--name', name);
    await page.goto(`${base}/room.html?room=${room}&name=${name}&autojoin=1&token=${encodeURIComponent(tok)}`);
    return page;
  };
  const videoFrames = (page) => page.evaluate(async () => {
    let n = 0;
    (await window.onairRoom?.subscriber?.getStats())?.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded ?? 0;
    });
    return n;
  });

  const alice = await open('alice');
  await waitFor(() => alice.evaluate(() => window.onairRoom?.localTracks.size >= 2 || null), 20_000, 200);
  const bob = await open('bob');
  const bobSees = await waitFor(async () => ((await videoFrames(bob)) > 30 ? true : null), 20_000, 300);
  check('two Chromium members in the room, bob decoding alice\'s video (a never-answering receiver configured)', bobSees === true);
  // Media while one receiver never answers (its deliveries wait out their 2 s timeouts and
  // retries): bob's decoded frame rate over 5 s.
  const fpsStart = await videoFrames(bob);
  await sleep(5000);
  const fps = ((await videoFrames(bob)) - fpsStart) / 5;
  figure(`bob decodes ${fps.toFixed(1)} video frames/s while the second receiver never answers`);
  check('…and keeps decoding meanwhile (≥ 10 frames/s; 15.2 seen here)', fps >= 10, `${fps}`);

  // FFmpeg over RTMP, recorded by API.
  const pubTok = token('--identity', 'obs', '--publish-stream', 'live/ops');
  ffmpeg = spawn(process.env.FFMPEG || 'ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=15', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '30', '-c:a', 'aac',
    '-t', '120', '-f', 'flv', `rtmp://127.0.0.1:${rtmpPort}/live/ops?token=${pubTok}`], { stdio: 'ignore' });
  const ffExit = new Promise((r) => ffmpeg.on('exit', (c) => r(c)));
  await waitFor(() => has((e) => e.event === 'stream_started' && e.stream === 'live/ops') || null, 15_000, 200);
  await sleep(1500);
  const rec = await api('POST', '/api/recordings', admin, { stream: 'live/ops' });
  check('a recording starts by API (admin token)', rec.status === 201, JSON.stringify(rec));
  await sleep(4000);
  const stopRec = await api('POST', '/api/recordings/stop', admin, { stream: 'live/ops' });
  check('…and stops', stopRec.status === 200, JSON.stringify(stopRec));
  const finished = await waitFor(() => has((e) => e.event === 'recording_finished' && e.stream === 'live/ops') || null, 15_000, 200);
  check('recording_finished comes with the file, its size and length', !!finished && finished.bytes > 10_000
    && /\.mp4$/.test(finished.file) && finished.duration_s >= 3 && fs.existsSync(path.join(recDir, finished.file)), JSON.stringify(finished));

  // The home page lists what is live (with an admin token: the API is behind it).
  const home = await (await browser.newContext({ viewport: { width: 1100, height: 900 } })).newPage();
  await home.goto(`${base}/?token=${encodeURIComponent(admin)}`);
  const listed = await waitFor(() => home.evaluate(({ r }) => {
    const rooms = document.querySelector('#rooms')?.innerText ?? '';
    const streams = document.querySelector('#streams')?.innerText ?? '';
    return rooms.includes(r) && /2 participants/.test(rooms) && streams.includes('live/ops') ? { rooms, streams } : null;
  }, { r: room }), 15_000, 300);
  const shot = path.join(os.tmpdir(), `onair-home-${process.pid}.png`);
  await home.screenshot({ path: shot, fullPage: true });
  figure(`home page (screenshot ${shot}): rooms: ${listed?.rooms?.replace(/\n/g, ' | ')}; streams: ${listed?.streams?.replace(/\n/g, ' | ')}`);
  check('the home page lists the live room (2 participants) and the RTMP stream', !!listed);
  const anonHome = await (await browser.newContext()).newPage();
  await anonHome.goto(`${base}/`);
  const anonText = await waitFor(() => anonHome.evaluate(() => (/ADMIN_TOKEN/.test(document.querySelector('#live-status')?.innerText ?? '') ? true : null)), 10_000, 300);
  check('…and without a token says how to see it', anonText === true);

  // The admin API, refused without the grant.
  const tracks = await alice.evaluate(() => [...window.onairRoom.localTracks.values()].map((l) => ({ id: l.id, source: l.source })));
  const cam = tracks.find((t) => t.source === 'camera');
  const aliceId = await alice.evaluate(() => window.onairRoom.participantId);
  const bobId = await bob.evaluate(() => window.onairRoom.participantId);
  const refused = [
    (await api('POST', `/api/rooms/${room}/tracks/${cam.id}/mute`, null, { muted: true })).status,
    (await api('POST', `/api/rooms/${room}/tracks/${cam.id}/mute`, member, { muted: true })).status,
    (await api('DELETE', `/api/rooms/${room}/participants/${bobId}`, member)).status,
    (await api('DELETE', `/api/rooms/${room}`, member)).status,
  ];
  check('the admin API: 401 without a token, 403 with a member\'s', JSON.stringify(refused) === '[401,403,403,403]', JSON.stringify(refused));

  // Mute alice's camera: bob stops receiving it.
  const mute = await api('POST', `/api/rooms/${room}/tracks/${cam.id}/mute`, admin, { muted: true });
  await sleep(1500);
  const f0 = await videoFrames(bob);
  await sleep(3000);
  const f1 = await videoFrames(bob);
  const aliceNote = await waitFor(() => alice.evaluate(() => (/operator muted your camera/.test(document.body.innerText) ? true : null)), 5000, 200);
  figure(`muted by API: bob decoded ${f1 - f0} video frames in 3 s after the mute`);
  check('mute: the other member stops receiving the camera, its owner\'s page says the operator muted it',
    mute.status === 200 && f1 - f0 <= 2 && aliceNote === true, JSON.stringify({ mute, frames: f1 - f0, aliceNote }));
  // Unmuted by the operator; the SDK leaves the camera off until its user turns it on again.
  const unmute = await api('POST', `/api/rooms/${room}/tracks/${cam.id}/mute`, admin, { muted: false });
  await alice.evaluate(() => window.onairRoom.setMuted('camera', false));
  const f2 = await videoFrames(bob);
  const back = await waitFor(async () => ((await videoFrames(bob)) > f2 + 15 ? true : null), 10_000, 300);
  check('…unmuted (and turned on again by its user), it comes back', unmute.status === 200 && back === true);

  // The receiver goes down; what happens meanwhile arrives once it is back.
  await new Promise((r) => receiver.close(r));
  const carol = await open('carol');
  await waitFor(() => joinedPage(carol), 15_000, 200);
  const downAt = Date.now();
  await sleep(3000);
  check('(while the receiver is down, carol\'s join is not delivered)', !has((e) => e.event === 'participant_joined' && e.participant?.name === 'carol'));
  receiver = await startReceiver(hookPort);
  const carolEv = await waitFor(() => has((e) => e.event === 'participant_joined' && e.participant?.name === 'carol') || null, 30_000, 200);
  figure(`receiver down for 3 s: carol's participant_joined arrived ${carolEv ? ((carolEv.at - downAt) / 1000).toFixed(1) : '?'} s after it happened`);
  check('a receiver that was down gets the events of that time when it is back', !!carolEv);

  // Remove bob: its page says so; the others see it leave.
  const kick = await api('DELETE', `/api/rooms/${room}/participants/${bobId}`, admin);
  const bobOut = await waitFor(() => bob.evaluate(() => (/kicked/.test(document.body.innerText) ? true : null)), 10_000, 200);
  const aliceSawBobLeave = await waitFor(() => alice.evaluate((id) => (!window.onairRoom.participants.has(id) ? true : null), bobId), 10_000, 200);
  check('remove a participant: its page says it was removed, the others see it leave', kick.status === 200 && bobOut === true && aliceSawBobLeave === true,
    JSON.stringify({ kick, bobOut, aliceSawBobLeave }));

  // Change carol's grant: no more publishing.
  const g = await api('PATCH', `/api/rooms/${room}/participants/${await carol.evaluate(() => window.onairRoom.participantId)}`, admin, { publish: [] });
  check('change a participant\'s grant live', g.status === 200 && Array.isArray(g.json?.publish) && g.json.publish.length === 0, JSON.stringify(g));

  // Stop the RTMP publisher.
  const stop = await api('DELETE', '/api/streams/live/ops', admin);
  const ffCode = await Promise.race([ffExit, sleep(10_000).then(() => 'running')]);
  check('stop a publisher: FFmpeg\'s RTMP connection ends', stop.status === 200 && ffCode !== 'running', JSON.stringify({ stop, ffCode }));

  // End the room.
  const end = await api('DELETE', `/api/rooms/${room}`, admin);
  const finishedRoom = await waitFor(() => has((e) => e.event === 'room_finished' && e.room === room) || null, 15_000, 200);
  check('end the room: every member removed, room_finished sent', end.status === 200 && end.json?.removed === 2 && !!finishedRoom, JSON.stringify(end));

  // The events, in order, all signed.
  await sleep(1000);
  const order = (a, b) => {
    const i = events.findIndex(a);
    const j = events.findIndex(b);
    return i >= 0 && j >= 0 && i < j;
  };
  const isJoin = (n) => (e) => e.event === 'participant_joined' && e.participant?.name === n;
  const isLeft = (n) => (e) => e.event === 'participant_left' && e.participant?.name === n;
  figure(`events received: ${events.map((e) => e.event).join(', ')}`);
  check('every delivery verified (signature and timestamp)', bad.length === 0 && events.length > 10, JSON.stringify(bad.slice(0, 3)));
  check('room_started, then alice joins, then her tracks are published',
    order((e) => e.event === 'room_started' && e.room === room, isJoin('alice'))
    && order(isJoin('alice'), (e) => e.event === 'track_published' && e.participant?.name === 'alice')
    && named('track_published', (e) => e.participant?.name === 'alice').length === 2);
  check('stream_started (rtmp) before recording_finished before stream_ended',
    order((e) => e.event === 'stream_started' && e.stream === 'live/ops' && e.protocol === 'rtmp', (e) => e.event === 'recording_finished')
    && order((e) => e.event === 'recording_finished', (e) => e.event === 'stream_ended' && e.stream === 'live/ops'));
  check('bob\'s participant_left, then the room ends with alice and carol leaving before room_finished',
    order(isJoin('bob'), isLeft('bob')) && order(isLeft('alice'), (e) => e.event === 'room_finished')
    && order(isLeft('carol'), (e) => e.event === 'room_finished'));
  const metrics = await (await fetch(`${base}/metrics`, { headers: { Authorization: `Bearer ${admin}` } })).text();
  const delivered = Number(metrics.match(/onair_webhooks_total\{outcome="delivered"\} (\d+)/)?.[1]);
  figure(`/metrics: ${metrics.split('\n').filter((l) => l.startsWith('onair_webhooks_total')).join('; ')}`);
  check('/metrics counts deliveries', delivered >= events.length, `${delivered}`);
  return 0;
}

function joinedPage(page) {
  return page.evaluate(() => (window.onairRoom?.participantId ? true : null));
}

function execOnair(bin, args, env = {}) {
  return execFileSync(bin, args, { env: { ...process.env, ...env }, encoding: 'utf8' }).trim();
}

await runMain(main, summary, finish);
