#!/usr/bin/env node
// Access tokens in real Chromium and FFmpeg (issue 18: rooms, WHIP/WHEP, RTMP). onair runs with a
// key (`onair keys generate`); tokens come from `onair token`:
//   - a member with a token joins the room and publishes; one without, with an expired token,
//     with a forged one, or with another room's is refused, and the page says why;
//   - a subscribe-only token (--publish none) receives the others' video, but its camera is
//     refused;
//   - WHIP/WHEP: 401 (with WWW-Authenticate) without a token, 403 with a token for another
//     name, and publish.html/watch.html with the right tokens publish and play;
//   - the HTTP API: /api/* and /metrics need an admin token, /api/ice-servers any valid one;
//   - FFmpeg publishing over RTMP is refused without a token and publishes with one in the
//     stream key (`rtmp://host/live/name?token=…`);
//   - that stream over LL-HLS: 401 without a token, 403 with another stream's; hls.js in
//     Chromium plays the signed URL (`index.m3u8?token=…`), every URI the playlists list
//     carrying the token on; the /ws/ player is refused without one;
//   - an RTWebSocket TC client (the reference tcconn.js when ONAIR_RTWS_REFERENCE names it)
//     plays it with the token as a `connect` argument, and is refused without one;
//   - listening beyond loopback with no key is refused at startup, unless anonymous access is
//     allowed explicitly.
// Runs inside a loopback-only namespace (netns-run).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, loadTcClient, logTail, onairBin, results,
  runMain, startOnair, waitFor, withWebSocket,
} from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

const OVERALL_TIMEOUT_MS = 210_000;
await withWebSocket(import.meta.url);
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-auth-${process.pid}.log`);
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

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** A JWT signed here (for what `onair token` will not make: expired, forged). */
function jwt(claims, keyB64url, kid = 'main') {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid }));
  const body = b64url(JSON.stringify(claims));
  const sig = crypto.createHmac('sha256', Buffer.from(keyB64url, 'base64url')).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(sig)}`;
}

/** The text the room page shows for a failed join, or null once it joined. */
function joinOutcome(page) {
  return page.evaluate(() => {
    const err = document.querySelector('#join-error');
    if (err && !err.hidden && err.textContent) return { error: err.textContent };
    if (window.onairRoom?.state === 'joined' || window.onairRoom?.participantId) return { joined: true };
    return null;
  });
}

async function main() {
  const bin = onairBin();
  if (!bin) return 2;

  // Startup: beyond loopback with no key is refused, with a message saying what to do.
  const refused = spawnSync(bin, [], {
    env: { ...process.env, ONAIR_HTTP_LISTEN: `0.0.0.0:${await freeTcpPort()}`, ONAIR_TURN_ENABLED: 'false' },
    timeout: 10_000, encoding: 'utf8',
  });
  const out = `${refused.stdout}${refused.stderr}`;
  const said = out.split('\n').find((l) => /^Error:/.test(l)) ?? out.trim().split('\n').slice(-1)[0];
  figure(`listening on 0.0.0.0 with no key: exit ${refused.status}: ${said}`);
  check('listening beyond loopback without a key is refused at startup, saying how to fix it',
    refused.status !== 0 && /auth\.keys/.test(said) && /ALLOW_ANONYMOUS/.test(said), said);

  const key = execFileSync(bin, ['keys', 'generate'], { encoding: 'utf8' }).trim();
  check('onair keys generate prints a 32-byte base64url key', Buffer.from(key, 'base64url').length === 32, key.length);
  const keysEnv = { ONAIR_AUTH_KEYS: `{ main = "${key}" }` };
  const token = (...args) => execFileSync(bin, ['token', ...args], { encoding: 'utf8', env: { ...process.env, ...keysEnv } }).trim();

  const httpPort = await freeTcpPort();
  const rtmpPort = await freeTcpPort();
  const base = `http://127.0.0.1:${httpPort}`;
  let up;
  ({ proc: server, up } = await startOnair(bin, {
    ONAIR_HTTP_LISTEN: `127.0.0.1:${httpPort}`, ONAIR_MEDIA_PORT: String(await freeMediaPort()),
    ONAIR_TURN_ENABLED: 'false', ONAIR_RTMP_LISTEN: `127.0.0.1:${rtmpPort}`, ...keysEnv,
  }, logPath, httpPort));
  if (!check('server up with a key', up)) return 1;

  const room = `auth${process.pid}`;
  const full = token('--room', room, '--identity', 'alice');
  const viewerOnly = token('--room', room, '--identity', 'bob', '--publish', 'none');
  const otherRoom = token('--room', 'elsewhere', '--identity', 'eve');
  const now = Math.floor(Date.now() / 1000);
  const expired = jwt({ sub: 'eve', exp: now - 3600, room: { room } }, key);
  const forged = jwt({ sub: 'eve', exp: now + 3600, room: { room } }, b64url(crypto.randomBytes(32)));

  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const open = async (name, tok, extra = '') => {
    const page = await (await browser.newContext({ viewport: { width: 960, height: 720 } })).newPage();
    const t = tok ? `&token=${encodeURIComponent(tok)}` : '';
    await page.goto(`${base}/room.html?room=${room}&name=${name}&autojoin=1${t}${extra}`);
    return page;
  };

  const alice = await open('alice', full);
  const aliceIn = await waitFor(() => joinOutcome(alice), 15_000, 200);
  check('a member with a token joins', aliceIn?.joined === true, JSON.stringify(aliceIn));
  const published = await waitFor(() => alice.evaluate(() => window.onairRoom?.localTracks.size >= 2 || null), 20_000, 200);
  check('…and publishes camera and microphone', published === true);

  for (const [what, tok, want] of [
    ['no token', null, /access token is required/],
    ['an expired token', expired, /expired/],
    ['a token signed with another key', forged, /signature/],
    ['a token for another room', otherRoom, /does not grant room/],
  ]) {
    const page = await open('eve', tok);
    const out = await waitFor(() => joinOutcome(page), 15_000, 200);
    figure(`join with ${what}: ${JSON.stringify(out)}`);
    check(`a join with ${what} is refused and the page says why`, !!out?.error && want.test(out.error), JSON.stringify(out));
    await page.context().close();
  }

  // Subscribe-only: receives alice's video, its own camera is refused.
  const bob = await open('bob', viewerOnly);
  const bobIn = await waitFor(() => joinOutcome(bob), 15_000, 200);
  check('a subscribe-only member joins', bobIn?.joined === true, JSON.stringify(bobIn));
  const frames = await waitFor(() => bob.evaluate(async () => {
    let n = 0;
    (await window.onairRoom?.subscriber?.getStats())?.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.framesDecoded ?? 0;
    });
    return n > 10 ? n : null;
  }), 20_000, 300);
  check('…receives the others\' video', frames != null, `${frames} frames decoded`);
  const refusal = await waitFor(() => bob.evaluate(() => {
    const text = document.body.innerText;
    return /does not grant publishing/.test(text) ? text.match(/[^\n]*does not grant publishing[^\n]*/)[0] : null;
  }), 15_000, 300);
  figure(`bob's page: ${refusal}`);
  check('…and its camera and microphone are refused, the page saying why', refusal != null);
  const bobTracks = await alice.evaluate(() => [...window.onairRoom.tracks.values()].filter((t) => t.participant_id !== window.onairRoom.participantId).length);
  check('…so the room has no track of bob\'s', bobTracks === 0, `${bobTracks}`);

  // WHIP/WHEP.
  const post = async (kind, name, tok) => {
    const headers = { 'Content-Type': 'application/sdp' };
    if (tok) headers.Authorization = `Bearer ${tok}`;
    const r = await fetch(`${base}/${kind}/${name}`, { method: 'POST', headers, body: 'v=0\r\n' });
    return { status: r.status, auth: r.headers.get('www-authenticate'), text: (await r.text()).trim() };
  };
  const pubTok = token('--identity', 'cam', '--publish-stream', 'live/auth');
  const playTok = token('--identity', 'tv', '--play-stream', 'live/*');
  const noTok = await post('whip', 'live/auth', null);
  figure(`WHIP without a token: ${JSON.stringify(noTok)}`);
  check('WHIP without a token: 401 with WWW-Authenticate', noTok.status === 401 && /Bearer/.test(noTok.auth ?? ''), JSON.stringify(noTok));
  const wrong = await post('whip', 'live/other', pubTok);
  check('WHIP of another name: 403', wrong.status === 403, JSON.stringify(wrong));
  const playAsPub = await post('whip', 'live/auth', playTok);
  check('WHIP with a play-only token: 403', playAsPub.status === 403, JSON.stringify(playAsPub));
  const whepNo = await post('whep', 'live/auth', null);
  check('WHEP without a token: 401', whepNo.status === 401, JSON.stringify(whepNo));

  const pub = await (await browser.newContext()).newPage();
  await pub.goto(`${base}/publish.html?stream=live/auth&autostart=1&token=${encodeURIComponent(pubTok)}`);
  const live = await waitFor(() => pub.evaluate(() => (window.onairState?.status === 'live' ? true : null)), 20_000, 200);
  check('publish.html with a publish token goes live over WHIP', live === true,
    JSON.stringify(await pub.evaluate(() => ({ ...window.onairState, stats: undefined }))));
  const watch = async (tok) => {
    const page = await (await browser.newContext()).newPage();
    const t = tok ? `&token=${encodeURIComponent(tok)}` : '';
    await page.goto(`${base}/watch.html?stream=live/auth&autoplay=1${t}`);
    return page;
  };
  const tv = await watch(playTok);
  const playing = await waitFor(() => tv.evaluate(() => (window.onairState?.status === 'playing' ? true : null)), 20_000, 200);
  check('watch.html with a play token plays over WHEP', playing === true,
    JSON.stringify(await tv.evaluate(() => ({ ...window.onairState, stats: undefined }))));
  const anon = await watch(null);
  const anonStatus = await waitFor(() => anon.evaluate(() => window.onairState?.httpStatus ?? null), 10_000, 200);
  check('watch.html without a token gets 401', anonStatus === 401, `${anonStatus}`);

  // The operator's HTTP API: an admin token.
  const admin = token('--identity', 'ops', '--admin');
  const get = async (p, tok) => (await fetch(`${base}${p}`, { headers: tok ? { Authorization: `Bearer ${tok}` } : {} })).status;
  const api = {
    rooms: [await get('/api/rooms', null), await get('/api/rooms', full), await get('/api/rooms', admin)],
    metrics: [await get('/metrics', null), await get('/metrics', full), await get('/metrics', admin)],
    sessions: [await get('/api/sessions', null), await get('/api/sessions', admin)],
    ice: [await get('/api/ice-servers', null), await get('/api/ice-servers', full)],
    healthz: await get('/healthz', null),
  };
  figure(`HTTP API statuses: ${JSON.stringify(api)}`);
  check('/api/rooms and /metrics: 401 without a token, 403 with a member\'s, 200 with an admin token',
    JSON.stringify(api.rooms) === '[401,403,200]' && JSON.stringify(api.metrics) === '[401,403,200]'
    && JSON.stringify(api.sessions) === '[401,200]', JSON.stringify(api));
  check('/api/ice-servers (TURN credentials): 401 without a token, 200 with any valid one; /healthz open',
    JSON.stringify(api.ice) === '[401,200]' && api.healthz === 200, JSON.stringify(api));

  // RTMP, as FFmpeg and OBS carry a token: in the stream key's query.
  const listed = async (name) => ((await (await fetch(`${base}/api/streams`, { headers: { Authorization: `Bearer ${admin}` } })).json()) ?? []).some((x) => x.name === name);
  const ffmpeg = (url) => {
    const p = spawn(process.env.FFMPEG || 'ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re',
      '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=15', '-c:v', 'libx264', '-preset', 'ultrafast',
      '-tune', 'zerolatency', '-g', '30', '-t', '120', '-f', 'flv', url], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    const exited = new Promise((r) => p.on('exit', (code) => r(code)));
    return { p, exited, err: () => err.trim().split('\n').slice(-1)[0] ?? '' };
  };
  const rtmpTok = token('--identity', 'obs', '--publish-stream', 'live/rtmp-ok');
  const bad = ffmpeg(`rtmp://127.0.0.1:${rtmpPort}/live/rtmp-no`);
  const badCode = await Promise.race([bad.exited, new Promise((r) => setTimeout(() => r('running'), 10_000))]);
  figure(`FFmpeg RTMP without a token: exit ${badCode}: ${bad.err()}`);
  check('FFmpeg publishing over RTMP without a token is refused (FFmpeg stops; the stream is not listed)',
    badCode !== 'running' && badCode !== 0 && !(await listed('live/rtmp-no')), `${badCode}`);
  bad.p.kill('SIGKILL');
  const good = ffmpeg(`rtmp://127.0.0.1:${rtmpPort}/live/rtmp-ok?token=${rtmpTok}`);
  const on = await waitFor(() => listed('live/rtmp-ok').then((x) => x || null), 15_000, 300);
  check('FFmpeg with the token in the stream key publishes (listed as live/rtmp-ok, the token not in the name)',
    on === true, good.err());
  const other = ffmpeg(`rtmp://127.0.0.1:${rtmpPort}/live/rtmp-other?token=${rtmpTok}`);
  const otherCode = await Promise.race([other.exited, new Promise((r) => setTimeout(() => r('running'), 10_000))]);
  check('…and that token does not publish another name', otherCode !== 'running' && !(await listed('live/rtmp-other')), `${otherCode}`);
  other.p.kill('SIGKILL');

  // Playing that stream: LL-HLS with a signed URL, the /ws/ player, a TC client.
  const watchTok = token('--identity', 'viewer', '--play-stream', 'live/rtmp-ok');
  const elseTok = token('--identity', 'viewer', '--play-stream', 'live/elsewhere');
  const hlsUrl = `${base}/hls/live/rtmp-ok/index.m3u8`;
  const status = async (u) => (await fetch(u)).status;
  const hlsStatus = [await status(hlsUrl), await status(`${hlsUrl}?token=${elseTok}`)];
  const signed = await fetch(`${hlsUrl}?token=${watchTok}`);
  const multivariant = await signed.text();
  const mediaUri = multivariant.split('\n').find((l) => l && !l.startsWith('#')) ?? '';
  const mediaUrl = new URL(mediaUri, hlsUrl);
  const mediaText = mediaUri ? await (await fetch(mediaUrl)).text() : '';
  const uris = [...mediaText.matchAll(/URI="([^"]+)"/g)].map((m) => m[1])
    .concat(mediaText.split('\n').filter((l) => l && !l.startsWith('#')));
  const bare = uris.filter((u) => !u.endsWith(`?token=${watchTok}`));
  const segStatus = uris.length ? [await status(new URL(uris.at(-1).split('?')[0], mediaUrl)), await status(new URL(uris.at(-1), mediaUrl))] : [];
  figure(`LL-HLS: index.m3u8 ${hlsStatus[0]} without a token, ${hlsStatus[1]} with another stream's, ${signed.status} signed; `
    + `${uris.length} URIs in the media playlist, ${bare.length} without the token; a part ${segStatus.join(' unsigned, ')} signed; `
    + `Cache-Control ${signed.headers.get('cache-control')}`);
  check('LL-HLS: 401 without a token, 403 with another stream\'s, 200 with the play token',
    JSON.stringify(hlsStatus) === '[401,403]' && signed.status === 200, JSON.stringify(hlsStatus));
  check('…every URI the playlists list carries the token (media playlist, init, parts, segments, hint), and a part without it is 401',
    mediaUri.endsWith(`?token=${watchTok}`) && uris.length > 3 && bare.length === 0 && JSON.stringify(segStatus) === '[401,200]',
    JSON.stringify({ mediaUri, bare: bare.slice(0, 3), segStatus }));
  check('…and a playlist naming a viewer\'s token is not for shared caches', /private/.test(signed.headers.get('cache-control') ?? ''));

  const hlsJs = path.join(HERE, 'node_modules/hls.js/dist/hls.min.js');
  const hlsPage = async (url) => {
    const page = await (await browser.newContext()).newPage();
    await page.route((u) => u.pathname === '/hls.min.js', (route) => route.fulfill({ path: hlsJs, contentType: 'text/javascript' }));
    await page.goto(`${base}/healthz`);
    await page.addScriptTag({ url: '/hls.min.js' });
    await page.evaluate((src) => {
      const v = document.createElement('video');
      v.muted = true;
      document.body.append(v);
      window.hlsErrors = [];
      const hls = new window.Hls({ lowLatencyMode: true });
      hls.on(window.Hls.Events.ERROR, (_, d) => window.hlsErrors.push(`${d.details}${d.fatal ? ' FATAL' : ''} ${d.response?.code ?? ''}`));
      hls.loadSource(src);
      hls.attachMedia(v);
      v.play().catch(() => {});
      window.probe = () => ({ t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, errs: window.hlsErrors });
    }, url);
    return page;
  };
  const viewer = await hlsPage(`${hlsUrl}?token=${watchTok}`);
  const played = await waitFor(() => viewer.evaluate(() => { const p = window.probe(); return p.frames > 10 && p.t > 1 ? p : null; }), 25_000, 300);
  check('hls.js in Chromium plays the signed LL-HLS URL (frames decoded)', !!played,
    JSON.stringify(played ?? await viewer.evaluate(() => window.probe())));
  if (played) figure(`hls.js with a signed URL: ${played.frames} frames, t=${played.t.toFixed(1)} s, errors: ${played.errs.join('; ') || 'none'}`);
  const unsigned = await hlsPage(hlsUrl);
  const hlsRefusal = await waitFor(() => unsigned.evaluate(() => window.hlsErrors.find((e) => /FATAL/.test(e)) ?? null), 15_000, 300);
  check('hls.js without a token is refused (a fatal 401)', /401/.test(hlsRefusal ?? ''), `${hlsRefusal}`);

  const wsOutcome = (url) => new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    const t = setTimeout(() => { ws.close(); resolve('timeout'); }, 8000);
    ws.onmessage = () => { clearTimeout(t); ws.close(); resolve('media'); };
    ws.onerror = () => { clearTimeout(t); resolve('refused'); };
  });
  const wsPlain = [await wsOutcome(`ws://127.0.0.1:${httpPort}/ws/live/rtmp-ok`),
    await wsOutcome(`ws://127.0.0.1:${httpPort}/ws/live/rtmp-ok?token=${watchTok}`)];
  check('the /ws/ player: refused without a token, media with it', JSON.stringify(wsPlain) === '["refused","media"]', JSON.stringify(wsPlain));

  const { TCConnection, label } = await loadTcClient();
  figure(`TC client: ${label}`);
  const tcPlay = async (...args) => {
    const conn = new TCConnection();
    conn.onstatus = () => {}; // (the reference client logs statuses nobody handles)
    const seen = [];
    try {
      await conn.connect(`ws://127.0.0.1:${httpPort}/rtws/live`, {}, ...args);
      const stream = await conn.createStream();
      stream.onstatus = (e) => seen.push(`${e.info?.code}: ${e.info?.description ?? ''}`);
      stream.play('rtmp-ok');
      return await waitFor(() => seen.find((x) => /Play\.(Start|Failed)/.test(x)) ?? null, 8000, 100);
    } finally {
      conn.close();
    }
  };
  const tcWith = await tcPlay(watchTok);
  const tcWithout = await tcPlay();
  const tcOther = await tcPlay(elseTok);
  figure(`TC play with the token as a connect argument: ${tcWith}; without: ${tcWithout}; another stream's: ${tcOther}`);
  check('a TC client with its token in connect plays (NetStream.Play.Start)', /Play\.Start/.test(tcWith ?? ''), `${tcWith}`);
  check('…without a token it is refused, saying why (NetStream.Play.Failed)', /Play\.Failed.*token/.test(tcWithout ?? ''), `${tcWithout}`);
  check('…and with another stream\'s token too', /Play\.Failed.*does not grant/.test(tcOther ?? ''), `${tcOther}`);
  good.p.kill('SIGKILL');

  const logText = fs.readFileSync(logPath, 'utf8');
  check('the server log never shows a token', !logText.includes(rtmpTok) && !logText.includes(full) && !logText.includes(watchTok));
  return 0;
}

await runMain(main, summary, finish);
