#!/usr/bin/env node
// Active speaker in real Chromium: a member publishing its (fake) microphone and camera, and
// two that publish only their camera. The server reads the audio level Chromium puts on each
// Opus packet (RFC 6464) and tells the room who speaks: the others' pages must outline the
// speaker's tile, its own page its self view, and no one else's; when it mutes the microphone
// the outline goes. Runs inside a loopback-only namespace (netns-run).
import os from 'node:os';
import path from 'node:path';

import {
  CHROMIUM, CHROMIUM_ARGS, enterLoopbackNamespace, freeMediaPort, freeTcpPort, logTail, onairBin, results, runMain,
  sleep, startOnair, waitFor,
} from './harness.mjs';

const OVERALL_TIMEOUT_MS = 120_000;
await enterLoopbackNamespace(import.meta.url, OVERALL_TIMEOUT_MS);

const { check, figure, summary } = results();
const logPath = path.join(os.tmpdir(), `onair-e2e-speaker-${process.pid}.log`);
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

/** Which tiles a page outlines as speaking: names (`self` for its own view) → 'loudest'/'yes'. */
function outlined(page) {
  return page.evaluate(() => {
    const out = {};
    const self = document.querySelector('#self-tile');
    if (self?.dataset.speaking) out.self = self.dataset.speaking;
    document.querySelectorAll('#grid .tile[data-source="camera"]').forEach((t) => {
      if (t.dataset.speaking) out[t.dataset.name] = t.dataset.speaking;
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
  ({ proc: server, up } = await startOnair(bin, { ONAIR_HTTP_LISTEN: `127.0.0.1:${httpPort}`, ONAIR_MEDIA_PORT: String(await freeMediaPort()),
      ONAIR_TURN_ENABLED: 'false' }, logPath, httpPort));
  if (!check('server up', up)) return 1;
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const room = `spk${process.pid}`;
  const open = async (name, query) => {
    const page = await (await browser.newContext({ viewport: { width: 960, height: 720 } })).newPage();
    await page.goto(`${base}/room.html?room=${room}&name=${name}&autojoin=1&simulcast=0${query}`);
    return page;
  };
  const talker = await open('T', '');
  const a = await open('A', '&audio=0');
  const b = await open('B', '&audio=0');

  const startedAt = Date.now();
  const seen = await waitFor(async () => {
    const [oa, ob, ot] = [await outlined(a), await outlined(b), await outlined(talker)];
    return oa.T && ob.T && ot.self ? { oa, ob, ot } : null;
  }, 20_000, 300);
  figure(`speaker outlined after ${seen ? `${((Date.now() - startedAt) / 1000).toFixed(1)} s` : 'more than 20 s'} from the pages opening: `
    + `A's page ${JSON.stringify(seen?.oa ?? await outlined(a))}, B's ${JSON.stringify(seen?.ob ?? await outlined(b))}, `
    + `T's ${JSON.stringify(seen?.ot ?? await outlined(talker))}`);
  check('the others\' pages outline the talker\'s tile as the loudest, and its own page its self view',
    seen?.oa.T === 'loudest' && seen?.ob.T === 'loudest' && seen?.ot.self === 'loudest');
  check('…and no one else\'s (A and B publish no microphone)', !!seen && !seen.oa.self && !seen.oa.B && !seen.ob.A && !seen.ob.self);
  const levels = await a.evaluate(() => window.onairRoom.activeSpeakers);
  figure(`A's SDK: activeSpeakers ${JSON.stringify(levels)}`);
  check('the SDK gives the level', levels.length === 1 && levels[0].level > 0 && levels[0].level <= 1, JSON.stringify(levels));

  // Opus DTX: the server's answer asks publishers for it (usedtx=1). A publishes a silent
  // microphone (a WebAudio destination with nothing connected), for which Chromium then sends a
  // frame every 400 ms instead of fifty a second; the talker's fake microphone, never silent,
  // keeps its 50.
  await a.evaluate(async () => {
    const ctx = new AudioContext();
    await ctx.resume();
    // An oscillator through a gain of 0: the track carries samples, all of them zero.
    const osc = ctx.createOscillator();
    const mute = ctx.createGain();
    mute.gain.value = 0;
    const dest = ctx.createMediaStreamDestination();
    osc.connect(mute).connect(dest);
    osc.start();
    const track = dest.stream.getAudioTracks()[0];
    await window.onairRoom.publishTrack(track, { source: 'microphone' });
  });
  const audioOut = (page) => page.evaluate(async () => {
    const pc = window.onairRoom.publisher;
    let n = 0;
    (await pc.getStats()).forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'audio') n = s.packetsSent; });
    return { n, dtx: /a=fmtp:\d+ [^\r\n]*usedtx=1/.test(pc.remoteDescription?.sdp ?? '') };
  });
  await sleep(1500);
  const [s0, t0] = [await audioOut(a), await audioOut(talker)];
  await sleep(4000);
  const [s1, t1] = [await audioOut(a), await audioOut(talker)];
  const silentPps = (s1.n - s0.n) / 4;
  const talkerPps = (t1.n - t0.n) / 4;
  figure(`Opus DTX: A's silent microphone ${silentPps.toFixed(1)} packets/s, the talker's ${talkerPps.toFixed(1)} `
    + `(20 ms frames: 50); usedtx=1 in the answers: ${s1.dtx}, ${t1.dtx}; A sent ${s1.n} in all`);
  check('the server asks publishers for Opus DTX', s1.dtx && t1.dtx);
  check('…and a silent microphone sends under 10 packets/s, a sounding one about 50',
    silentPps > 0 && silentPps < 10 && talkerPps > 45, `${silentPps} / ${talkerPps}`);
  const still = await outlined(b);
  check('the silent member is not taken for a speaker', still.T === 'loudest' && !still.A, JSON.stringify(still));

  await talker.click('#mic');
  const mutedAt = Date.now();
  const gone = await waitFor(async () => (Object.keys(await outlined(a)).length === 0 ? Date.now() - mutedAt : null), 10_000, 200);
  figure(`microphone muted: the outline gone after ${gone == null ? 'more than 10 s' : `${(gone / 1000).toFixed(1)} s`}`);
  check('when the talker mutes, the outline goes within 10 s', gone != null);
  return 0;
}

await runMain(main, summary, finish);
