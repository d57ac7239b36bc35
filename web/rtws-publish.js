// Publishing a camera over RTWebSocket where WebRTC is blocked: WebCodecs encodes (H.264 in
// AVC format, Opus), the frames go as FLV tag bodies over the TC mapping (RTMP messages), and
// the server puts them in the hub like an RTMP publish: every viewer (WHEP, LL-HLS, WebSocket)
// can watch.
//
//   const s = await rtwsPublish('ws://host/rtws/live', 'cam', mediaStream, { bitrate: 1_500_000 });
//   s.on('ended', ({ reason }) => …); s.stats(); await s.stop();
//
// Needs WebCodecs and MediaStreamTrackProcessor (Chromium). The encoder's queue is kept short
// (a frame the encoder has not taken is skipped), at most 64 KiB go unacked, and video behind
// more than 128 KiB not yet acked is dropped to the next keyframe, so the publish stays live
// on a slow uplink.
import { RtwsConnection, TcPublisher } from './rtws.js';

const te = new TextEncoder();
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};

/** RFC 7845 §5.1 OpusHead, for the Enhanced RTMP Opus sequence header. */
function opusHead(channels, sampleRate) {
  const h = new Uint8Array(19);
  h.set(te.encode('OpusHead'));
  const v = new DataView(h.buffer);
  h[8] = 1;
  h[9] = channels;
  v.setUint16(10, 312, true); // pre-skip: libopus's usual
  v.setUint32(12, sampleRate, true);
  return h;
}

/** An H.264 codec string WebCodecs accepts at this size: baseline 3.1 up to 720p, high 4.0 above. */
function h264Codec(width, height) {
  return width * height <= 1280 * 720 ? 'avc1.42e01f' : 'avc1.640028';
}

export async function rtwsPublish(url, key, media, { bitrate = 1_500_000, keyframeSeconds = 2, stopTracks = true } = {}) {
  if (!window.VideoEncoder || !window.MediaStreamTrackProcessor) throw new Error('this browser has no WebCodecs camera encoding (VideoEncoder, MediaStreamTrackProcessor)');
  const app = new URL(url).pathname.split('/').filter(Boolean).slice(1).join('/');
  const ws = new WebSocket(url);
  const conn = new RtwsConnection(ws);
  const pub = new TcPublisher(conn, { app });
  const listeners = { ended: [], state: [], error: [] };
  const emit = (ev, data) => listeners[ev]?.forEach((fn) => fn(data));
  const counts = { video: 0, audio: 0, keyframes: 0, skipped: 0, bytes: 0 };
  // Media times in ms from the start of the publish. Chromium stamps camera frames and
  // microphone data on clocks of their own, so each track is anchored at the wall time its
  // first frame came, and runs on its own timestamps from there.
  const start = performance.now();
  const anchors = {};
  const ms = (track, us) => {
    anchors[track] ??= { us, at: performance.now() - start };
    const a = anchors[track];
    return Math.max(0, Math.round(a.at + (us - a.us) / 1000));
  };
  let ended = false;
  const session = {
    state: 'connecting',
    resource: url,
    rtws: true,
    on(ev, fn) { (listeners[ev] ??= []).push(fn); },
    stats() {
      return { ...counts, dropped: pub.dropped, queued_bytes: pub.videoFlow == null ? 0 : conn.queuedBytes(pub.videoFlow), transport: 'rtws' };
    },
    async stop() { finish('stopped'); },
  };
  const readers = [];
  let videoEncoder = null;
  let audioEncoder = null;
  const finish = (reason) => {
    if (ended) return;
    ended = true;
    for (const r of readers) r.cancel().catch(() => {});
    try { videoEncoder?.close(); } catch { /* closed */ }
    try { audioEncoder?.close(); } catch { /* closed */ }
    try { pub.stop(); } catch { /* closed */ }
    setTimeout(() => ws.close(), 100);
    if (stopTracks) media.getTracks().forEach((t) => t.stop());
    session.state = 'closed';
    emit('ended', { reason });
  };
  ws.addEventListener('close', (e) => finish(e.reason || 'the connection closed'));
  // After the start, an error status ends the publish (another publisher took the name).
  pub.onstatus = (info) => {
    if (session.state === 'connected' && info?.level === 'error') finish(info.description || info.code);
  };
  try {
    await pub.publish(key);
  } catch (e) {
    ended = true;
    ws.close();
    throw e;
  }
  session.state = 'connected';

  // Video: camera frames → VideoEncoder → AVC sequence header + NALU tags.
  const vt = media.getVideoTracks()[0];
  if (vt) {
    const { width = 640, height = 480, frameRate = 30 } = vt.getSettings();
    const w = width & ~1;
    const h = height & ~1;
    let sentConfig = null;
    videoEncoder = new VideoEncoder({
      output: (chunk, meta) => {
        const desc = meta?.decoderConfig?.description;
        if (desc) {
          const avcc = new Uint8Array(ArrayBuffer.isView(desc) ? desc.buffer.slice(desc.byteOffset, desc.byteOffset + desc.byteLength) : desc);
          const same = sentConfig && sentConfig.length === avcc.length && sentConfig.every((b, i) => b === avcc[i]);
          if (!same) {
            pub.video(ms('video', chunk.timestamp), concat(Uint8Array.of(0x17, 0, 0, 0, 0), avcc), true);
            sentConfig = avcc;
          }
        }
        if (!sentConfig) return;
        const data = new Uint8Array(chunk.byteLength);
        chunk.copyTo(data);
        const key = chunk.type === 'key';
        pub.video(ms('video', chunk.timestamp), concat(Uint8Array.of(key ? 0x17 : 0x27, 1, 0, 0, 0), data), key);
        counts.video += 1;
        counts.bytes += data.length;
        if (key) counts.keyframes += 1;
      },
      error: (e) => { emit('error', { message: `video encoder: ${e.message}` }); finish('encoder error'); },
    });
    videoEncoder.configure({
      codec: h264Codec(w, h), width: w, height: h, bitrate, framerate: frameRate,
      latencyMode: 'realtime', avc: { format: 'avc' },
    });
    const reader = new MediaStreamTrackProcessor({ track: vt }).readable.getReader();
    readers.push(reader);
    (async () => {
      let n = 0;
      let lastKey = -Infinity;
      for (;;) {
        const { value: frame, done } = await reader.read();
        if (done || ended) { frame?.close(); break; }
        // An encoder that has not taken the last frames: skip this one (stay live).
        if (videoEncoder.encodeQueueSize > 2) {
          counts.skipped += 1;
          frame.close();
          continue;
        }
        const key = frame.timestamp - lastKey >= keyframeSeconds * 1e6 || n === 0;
        if (key) lastKey = frame.timestamp;
        videoEncoder.encode(frame, { keyFrame: key });
        frame.close();
        n += 1;
      }
    })().catch((e) => emit('error', { message: e.message }));
  }

  // Audio: microphone → AudioEncoder (Opus) → Enhanced RTMP Opus tags.
  const at = media.getAudioTracks()[0];
  if (at && window.AudioEncoder) {
    const reader = new MediaStreamTrackProcessor({ track: at }).readable.getReader();
    readers.push(reader);
    (async () => {
      for (;;) {
        const { value: data, done } = await reader.read();
        if (done || ended) { data?.close(); break; }
        if (!audioEncoder) {
          const channels = Math.min(2, data.numberOfChannels);
          audioEncoder = new AudioEncoder({
            output: (chunk) => {
              const payload = new Uint8Array(chunk.byteLength);
              chunk.copyTo(payload);
              pub.audio(ms('audio', chunk.timestamp), concat(Uint8Array.of(0x91, 0x4f, 0x70, 0x75, 0x73), payload));
              counts.audio += 1;
            },
            error: (e) => emit('error', { message: `audio encoder: ${e.message}` }),
          });
          audioEncoder.configure({ codec: 'opus', sampleRate: data.sampleRate, numberOfChannels: channels, bitrate: 64_000 });
          pub.audio(ms('audio', data.timestamp), concat(Uint8Array.of(0x90, 0x4f, 0x70, 0x75, 0x73), opusHead(channels, data.sampleRate)));
        }
        audioEncoder.encode(data);
        data.close();
      }
    })().catch((e) => emit('error', { message: e.message }));
  }
  emit('state', { state: 'connected' });
  return session;
}
