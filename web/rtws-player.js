// Live playback over WebSocket at a few hundred milliseconds of delay, for viewers where
// WebRTC is blocked or more than needed and HLS too slow.
//
//   const p = new LivePlayer(video, { server: location.origin, stream: 'live/cam' });
//   await p.start();        // rejects with e.notLive when the stream is not live
//   p.stats();              // { transport, mode, latency_s, buffer_s, frames_decoded, … }
//   p.stop();
//
// Two ways to decode:
// - mode 'mse' (default): onair's CMAF mapping, one fMP4 init + one fragment per frame per
//   track (docs/http-api.md), appended to a SourceBuffer per track as it comes.
// - mode 'webcodecs': VideoDecoder/AudioDecoder fed from the CMAF mapping's fragments (or, with
//   mapping 'tc', from the TC mapping's FLV tag bodies, as any RTMP-over-RTWebSocket server
//   sends them), pictures drawn on a canvas, sound through an AudioContext.
//
// Transports, tried in this order until one connects (`transports` to choose):
// - 'rtws-stream': RTWebSocket over WebSocketStream (Chromium), which reads only as fast as
//   the page takes messages in;
// - 'rtws': RTWebSocket over WebSocket: flows, acks and receive windows, and the server
//   abandons what is too late to be worth sending;
// - 'plain': a plain WebSocket at /ws/NAME (not with the TC mapping): the server keeps a byte budget per
//   connection and skips video to the next keyframe when it is exceeded, audio kept.
//
// The latency controller keeps the buffer near `targetLatency`: playbackRate nudged up to
// 1.25 when behind and down to 0.95 when short, a jump when more than a second behind, and a
// jump over a gap (video abandoned upstream) instead of a stall.
import { RtwsConnection, TcPlayer } from './rtws.js';

const enc = (s) => new TextEncoder().encode(s);
const CMAF = enc('CMAF');
const KIND = { 0x61: 'audio', 0x76: 'video' }; // 'a', 'v'

export class NotLiveError extends Error {
  constructor(message) {
    super(message);
    this.notLive = true;
  }
}

/** A WebSocket-shaped object over WebSocketStream: messages are read one at a time, so a
 * page that falls behind pushes back on TCP instead of queueing messages in memory. */
class StreamSocket extends EventTarget {
  constructor(url) {
    super();
    this.readyState = 0;
    this.binaryType = 'arraybuffer';
    this.wss = new window.WebSocketStream(url);
    this.wss.opened.then(async ({ readable, writable }) => {
      this.writer = writable.getWriter();
      this.readyState = 1;
      this.dispatchEvent(new Event('open'));
      const reader = readable.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.dispatchEvent(new MessageEvent('message', { data: value }));
      }
    }).catch(() => this.dispatchEvent(new Event('error')))
      .finally(() => {
        this.readyState = 3;
        this.dispatchEvent(new Event('close'));
      });
    this.wss.closed.then(({ closeCode, reason }) => { this.closeCode = closeCode; this.closeReason = reason; }, () => {});
  }

  send(bytes) { this.writer?.write(bytes).catch(() => {}); }

  close() { try { this.wss.close(); } catch { /* already closed */ } }
}

/** Opens a socket and waits for it: the socket, or an Error when it never opened. */
function openSocket(url, stream) {
  const ws = stream ? new StreamSocket(url) : new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  return new Promise((resolve, reject) => {
    ws.addEventListener('open', () => resolve(ws), { once: true });
    ws.addEventListener('close', () => reject(new Error(`${url}: the WebSocket did not open`)), { once: true });
  });
}

// ------------------------------------------------------------------ MSE

/** A MediaSource with one SourceBuffer per track, fed init segments and fragments. */
class MseSink {
  constructor(video) {
    const MS = window.ManagedMediaSource || window.MediaSource;
    if (!MS) throw new Error('this browser has no Media Source Extensions');
    this.video = video;
    this.ms = new MS();
    if (window.ManagedMediaSource) video.disableRemotePlayback = true;
    video.srcObject = null;
    video.src = URL.createObjectURL(this.ms);
    this.open = new Promise((resolve) => this.ms.addEventListener('sourceopen', resolve, { once: true }));
    this.tracks = new Map(); // kind → { sb, queue, codecs }
    this.transit = []; // recent (arrival − server time) in seconds
    this.fragments = 0;
    this.error = null;
  }

  hasTrack(kind) { return this.tracks.has(kind); }

  /** A SourceBuffer for `kind` (before any init is appended: MSE wants every track first). */
  addTrack(kind, codecs) {
    if (this.tracks.has(kind)) return;
    const type = `${kind}/mp4; codecs="${codecs}"`;
    if (!(window.ManagedMediaSource || window.MediaSource).isTypeSupported(type)) {
      this.error = `this browser cannot play ${type}`;
      return;
    }
    const sb = this.ms.addSourceBuffer(type);
    const t = { sb, queue: [], codecs };
    sb.addEventListener('updateend', () => this.pump(t));
    this.tracks.set(kind, t);
  }

  /** One message of a track: `i <n> <codecs> <init>` or `f <flags> <u64 µs> <moof+mdat>`. */
  message(kind, m) {
    const t = this.tracks.get(kind);
    if (!t) return;
    if (m[0] === 0x69) {
      const n = m[1];
      const codecs = new TextDecoder().decode(m.subarray(2, 2 + n));
      if (codecs !== t.codecs && t.sb.changeType) {
        t.queue.push({ changeType: `${kind}/mp4; codecs="${codecs}"` });
        t.codecs = codecs;
      }
      t.queue.push(m.subarray(2 + n));
    } else if (m[0] === 0x66) {
      const view = new DataView(m.buffer, m.byteOffset, m.byteLength);
      const serverUs = Number(view.getBigUint64(2));
      this.transit.push(Date.now() / 1000 - serverUs / 1e6);
      if (this.transit.length > 50) this.transit.shift();
      this.fragments += 1;
      t.queue.push(m.subarray(10));
    }
    this.pump(t);
  }

  pump(t) {
    if (t.sb.updating || !t.queue.length || this.ms.readyState !== 'open') return;
    const next = t.queue.shift();
    try {
      if (next.changeType) {
        t.sb.changeType(next.changeType);
        this.pump(t);
        return;
      }
      t.sb.appendBuffer(next);
    } catch (e) {
      if (e.name === 'QuotaExceededError') {
        // Full: drop what was played, try again after.
        t.queue.unshift(next);
        const keep = this.video.currentTime - 2;
        if (keep > 0) t.sb.remove(0, keep);
      } else {
        this.error = `${e.name}: ${e.message}`;
      }
    }
  }

  /** The live edge: the newest media of any track (video abandoned upstream leaves the video
   * behind the audio, and the element's buffered ranges are only what both have). */
  edge() {
    let e = null;
    for (const t of this.tracks.values()) {
      const b = t.sb.buffered;
      if (b.length) e = Math.max(e ?? 0, b.end(b.length - 1));
    }
    return e;
  }

  /** Drops media more than 10 s behind the playhead: memory stays bounded on long plays. */
  trim() {
    const now = this.video.currentTime;
    for (const t of this.tracks.values()) {
      const b = t.sb.buffered;
      if (!t.sb.updating && b.length && now - b.start(0) > 15) t.sb.remove(0, now - 10);
    }
  }

  /** The median network transit of recent fragments (meaningful with synchronized clocks). */
  transitS() {
    if (!this.transit.length) return null;
    const s = [...this.transit].sort((a, b) => a - b);
    return Math.max(0, s[s.length >> 1]);
  }

  close() {
    try { if (this.ms.readyState === 'open') this.ms.endOfStream(); } catch { /* closing anyway */ }
    URL.revokeObjectURL(this.video.src);
    this.video.removeAttribute('src');
    this.video.load();
  }
}

/** Keeps a <video> fed by MSE near its live edge. */
class LatencyController {
  constructor(video, target, edge) {
    this.video = video;
    this.edge = edge;
    this.target = target;
    this.jumps = 0;
    this.gapJumps = 0;
    this.started = false;
  }

  tick() {
    const v = this.video;
    const b = v.buffered;
    if (!b.length) return null;
    const end = Math.max(b.end(b.length - 1), this.edge() ?? 0);
    const t = v.currentTime;
    if (!this.started) {
      this.started = true;
      v.currentTime = Math.max(b.start(b.length - 1), end - this.target);
      v.play().catch((e) => {
        if (e.name === 'NotAllowedError' && !v.muted) {
          v.muted = true;
          v.play().catch(() => {});
        }
      });
      return end - v.currentTime;
    }
    // In a gap (video abandoned upstream, or not there yet): on to the next range.
    let inRange = false;
    for (let i = 0; i < b.length; i++) if (t >= b.start(i) && t < b.end(i)) inRange = true;
    if (!inRange) {
      for (let i = 0; i < b.length; i++) {
        if (b.start(i) > t) {
          v.currentTime = b.start(i) + 0.01;
          this.gapJumps += 1;
          break;
        }
      }
    }
    const buffer = end - v.currentTime;
    if (buffer > this.target + 1.0) {
      v.currentTime = end - this.target;
      this.jumps += 1;
      v.playbackRate = 1;
    } else if (buffer > this.target + 0.05) {
      v.playbackRate = Math.min(1.25, 1 + (buffer - this.target) * 0.5);
    } else if (buffer < this.target - 0.05) {
      v.playbackRate = 0.95;
    } else {
      v.playbackRate = 1;
    }
    return buffer;
  }
}

// ------------------------------------------------------------------ WebCodecs (over TC)

const u32 = (b, at) => ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;

/** The boxes between `start` and `end`: { type, start (of the payload), end }. */
function mp4Children(b, start, end) {
  const out = [];
  for (let at = start; at + 8 <= end;) {
    let size = u32(b, at);
    let head = 8;
    if (size === 1) { size = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(at + 8)); head = 16; }
    if (size === 0) size = end - at;
    if (size < head || at + size > end) break;
    out.push({ type: String.fromCharCode(b[at + 4], b[at + 5], b[at + 6], b[at + 7]), start: at + head, end: at + size });
    at += size;
  }
  return out;
}

/** The box at `path` (types, each a child of the one before) inside `within` or the whole. */
function mp4Find(b, path, within) {
  let box = within ?? { start: 0, end: b.length };
  for (const type of path) {
    box = mp4Children(b, box.start, box.end).find((x) => x.type === type);
    if (!box) return null;
  }
  return box;
}

/** The DecoderSpecificInfo (AudioSpecificConfig) of an esds payload (ISO 14496-1 descriptors). */
function audioSpecificConfig(d) {
  let at = 0;
  const descriptor = () => {
    const tag = d[at++];
    let len = 0;
    for (let i = 0; i < 4; i++) {
      const c = d[at++];
      len = (len << 7) | (c & 0x7f);
      if (!(c & 0x80)) break;
    }
    return { tag, len };
  };
  while (at < d.length) {
    const { tag, len } = descriptor();
    if (tag === 0x03) { // ES_Descriptor: ES_ID, flags, then optional fields
      const flags = d[at + 2];
      at += 3 + (flags & 0x80 ? 2 : 0) + (flags & 0x40 ? 1 + d[at + 3] : 0) + (flags & 0x20 ? 2 : 0);
    } else if (tag === 0x04) { // DecoderConfigDescriptor: 13 bytes, then its descriptors
      at += 13;
    } else if (tag === 0x05) {
      return d.subarray(at, at + len);
    } else {
      at += len;
    }
  }
  throw new Error('no AudioSpecificConfig in esds');
}

/** An OpusHead (RFC 7845, little-endian) from a dOps box (its big-endian twin in MP4). */
function opusHeadFromDops(d) {
  const h = new Uint8Array(19);
  h.set(new TextEncoder().encode('OpusHead'));
  const v = new DataView(h.buffer);
  h[8] = 1;
  h[9] = d[1];
  v.setUint16(10, (d[2] << 8) | d[3], true);
  v.setUint32(12, u32(d, 4), true);
  v.setInt16(16, (d[8] << 8) | d[9], true);
  h[18] = d[10];
  return h;
}

const si24 = (b, at) => ((b[at] << 16 | b[at + 1] << 8 | b[at + 2]) << 8) >> 8;
const hex2 = (n) => n.toString(16).padStart(2, '0');

/** Decodes TC media (FLV tag bodies) with WebCodecs: pictures on a canvas, sound through an
 * AudioContext, both on one playout clock `target` seconds after the first frame came. */
class WebCodecsSink {
  constructor(canvas, target) {
    if (!window.VideoDecoder) throw new Error('this browser has no WebCodecs');
    this.canvas = canvas;
    this.ctx2d = canvas.getContext('2d');
    this.target = target;
    this.offset = null; // playout wall time (s) − media time (s)
    this.frames = []; // decoded VideoFrames waiting for their time
    this.decoded = 0;
    this.drawn = 0;
    this.dropped = 0;
    this.audioPlayed = 0;
    this.audioLate = 0;
    this.jumps = 0;
    this.error = null;
    this.video = null;
    this.audio = null;
    this.actx = null;
    this.codecs = {};
    this.timescale = {};
    this.fragmentCount = 0;
    this.wall = new Map(); // a video frame's presentation µs → when it reached the server
    this.latencies = []; // recent draw time − server time, seconds
    this.raf = requestAnimationFrame(() => this.draw());
  }

  now() { return performance.now() / 1000; }

  /** Media time `ts` (s) arrived now: keeps its playout `target` ahead, within limits. */
  place(ts) {
    const now = this.now();
    if (this.offset == null) this.offset = now - ts + this.target;
    const slack = ts + this.offset - now;
    if (slack < 0) {
      this.offset += -slack + this.target / 2; // late: play later from now on
      this.jumps += 1;
    } else if (slack > this.target + 0.5) {
      this.offset -= slack - this.target; // far ahead of its time: catch up
      this.jumps += 1;
    }
  }

  media({ type, timestamp, body }) {
    try {
      if (type === 9) this.videoTag(timestamp, body);
      else if (type === 8) this.audioTag(timestamp, body);
    } catch (e) {
      this.error = `${e.name}: ${e.message}`;
    }
  }

  // ---- what both mappings feed

  /** A video decoder for `codec` (RFC 6381) with its record (avcC, hvcC; none for VP9/AV1). */
  configureVideo(codec, description) {
    try { this.video?.close(); } catch { /* closed */ }
    this.video = new VideoDecoder({
      output: (f) => {
        this.decoded += 1;
        this.frames.push(f);
        if (this.frames.length > 60) { this.frames.shift().close(); this.dropped += 1; }
      },
      error: (e) => { this.error = `video: ${e.message}`; },
    });
    this.video.configure({ codec, description: description?.slice(), optimizeForLatency: true });
    this.waitKey = true;
  }

  /** An audio decoder (AAC with its AudioSpecificConfig, Opus with an OpusHead). */
  configureAudio(codec, sampleRate, numberOfChannels, description) {
    try { this.audio?.close(); } catch { /* closed */ }
    this.actx ??= new AudioContext({ latencyHint: 'interactive' });
    this.actx.resume().catch(() => {});
    this.audio = new AudioDecoder({ output: (a) => this.play(a), error: (e) => { this.error = `audio: ${e.message}`; } });
    this.audio.configure({ codec, sampleRate, numberOfChannels, description: description?.slice() });
  }

  /** One video frame: decode time and presentation time in seconds, and when it reached the
   * server (UNIX µs; null when the mapping does not say). */
  videoFrame(dts, pts, key, data, wallUs) {
    if (!this.video || this.video.state !== 'configured') return;
    if (this.waitKey && !key) return;
    this.waitKey = false;
    this.place(dts);
    const timestamp = Math.round(pts * 1e6);
    if (wallUs != null) {
      this.wall.set(timestamp, wallUs);
      if (this.wall.size > 120) this.wall.delete(this.wall.keys().next().value);
    }
    this.video.decode(new EncodedVideoChunk({ type: key ? 'key' : 'delta', timestamp, data }));
  }

  audioFrame(pts, data) {
    if (!this.audio || this.audio.state !== 'configured') return;
    this.place(pts);
    this.audio.decode(new EncodedAudioChunk({ type: 'key', timestamp: Math.round(pts * 1e6), data }));
  }

  // ---- the TC mapping: FLV tag bodies

  videoTag(ts, b) {
    let key; let config = false; let cts = 0; let data; let codec = null;
    if (b[0] & 0x80) { // Enhanced RTMP
      const pkt = b[0] & 0x0f;
      key = ((b[0] >> 4) & 7) === 1;
      const fourcc = new TextDecoder().decode(b.subarray(1, 5));
      if (pkt === 0) { config = true; data = b.subarray(5); codec = fourcc; }
      else if (pkt === 1) { cts = fourcc === 'avc1' || fourcc === 'hvc1' ? si24(b, 5) : 0; data = b.subarray(fourcc === 'avc1' || fourcc === 'hvc1' ? 8 : 5); }
      else if (pkt === 3) data = b.subarray(5);
      else return;
    } else {
      if ((b[0] & 0x0f) !== 7) return; // AVC only, of the legacy codecs
      key = b[0] >> 4 === 1;
      if (b[1] === 0) { config = true; data = b.subarray(5); codec = 'avc1'; }
      else if (b[1] === 1) { cts = si24(b, 2); data = b.subarray(5); }
      else return;
    }
    if (config) {
      if (codec !== 'avc1') { this.error = `WebCodecs over TC takes H.264 only here (got ${codec})`; return; }
      this.configureVideo(`avc1.${hex2(data[1])}${hex2(data[2])}${hex2(data[3])}`, data);
      return;
    }
    this.videoFrame(ts / 1000, (ts + cts) / 1000, key, data, null);
  }

  audioTag(ts, b) {
    const format = b[0] >> 4;
    if (format === 10) { // AAC
      if (b[1] === 0) {
        const asc = b.subarray(2);
        const freqs = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
        this.configureAudio(`mp4a.40.${asc[0] >> 3}`, freqs[((asc[0] & 7) << 1) | (asc[1] >> 7)] ?? 44100, (asc[1] >> 3) & 0x0f || 2, asc);
      } else this.audioFrame(ts / 1000, b.subarray(2));
    } else if (format === 9) { // Enhanced audio: Opus
      const pkt = b[0] & 0x0f;
      if (pkt === 0) this.configureAudio('opus', 48000, b[5 + 9] || 2, b.subarray(5));
      else if (pkt === 1) this.audioFrame(ts / 1000, b.subarray(5));
    }
  }

  // ---- the CMAF mapping: an init, then a moof+mdat per frame

  addTrack(kind, codecs) { this.codecs[kind] = codecs; }

  hasTrack(kind) { return kind in this.codecs; }

  /** A decoder per track can come at any time (no MediaSource to fix up front). */
  get lateTracksOk() { return true; }

  get fragments() { return this.fragmentCount; }

  message(kind, m) {
    try {
      if (m[0] === 0x69) {
        const n = m[1];
        const codecs = new TextDecoder().decode(m.subarray(2, 2 + n));
        this.cmafInit(kind, codecs, m.subarray(2 + n));
      } else if (m[0] === 0x66) {
        const view = new DataView(m.buffer, m.byteOffset, m.byteLength);
        const wallUs = Number(view.getBigUint64(2));
        this.fragmentCount += 1;
        this.cmafFragment(kind, m[1] & 1, m.subarray(10), wallUs);
      }
    } catch (e) {
      this.error = `${e.name}: ${e.message}`;
    }
  }

  cmafInit(kind, codecs, init) {
    const trak = mp4Find(init, ['moov', 'trak']);
    const mdhd = mp4Find(init, ['mdia', 'mdhd'], trak);
    const timescale = mdhd && (init[mdhd.start] === 1 ? u32(init, mdhd.start + 20) : u32(init, mdhd.start + 12));
    const stsd = mp4Find(init, ['mdia', 'minf', 'stbl', 'stsd'], trak);
    const entry = stsd && mp4Children(init, stsd.start + 8, stsd.end)[0];
    if (!timescale || !entry) throw new Error(`the ${kind} init segment has no timescale or sample entry`);
    this.timescale[kind] = timescale;
    if (kind === 'video') {
      // Visual sample entry: 78 bytes, then its boxes (avcC, hvcC, vpcC, av1C).
      const rec = mp4Children(init, entry.start + 78, entry.end).find((x) => ['avcC', 'hvcC'].includes(x.type));
      this.configureVideo(codecs, rec ? init.subarray(rec.start, rec.end) : undefined);
    } else {
      // Audio sample entry: channel count at 16, sample rate (16.16) at 24, boxes from 28.
      const channels = (init[entry.start + 16] << 8) | init[entry.start + 17];
      const rate = u32(init, entry.start + 24) >>> 16;
      const kids = mp4Children(init, entry.start + 28, entry.end);
      const esds = kids.find((x) => x.type === 'esds');
      const dops = kids.find((x) => x.type === 'dOps');
      if (esds) this.configureAudio(codecs, rate, channels, audioSpecificConfig(init.subarray(esds.start + 4, esds.end)));
      else if (dops) this.configureAudio('opus', 48000, init[dops.start + 1] || channels, opusHeadFromDops(init.subarray(dops.start, dops.end)));
      else throw new Error(`no esds or dOps in the ${entry.type} entry`);
    }
  }

  cmafFragment(kind, key, frag, wallUs) {
    const scale = this.timescale[kind];
    if (!scale) return;
    const traf = mp4Find(frag, ['moof', 'traf']);
    const tfdt = traf && mp4Find(frag, ['tfdt'], traf);
    const trun = traf && mp4Find(frag, ['trun'], traf);
    const mdat = mp4Find(frag, ['mdat']);
    if (!tfdt || !trun || !mdat) return;
    const dts = frag[tfdt.start] === 1 ? Number(new DataView(frag.buffer, frag.byteOffset).getBigUint64(tfdt.start + 4)) : u32(frag, tfdt.start + 4);
    // trun: flags, count, then the optional fields; the first sample's composition offset.
    const flags = u32(frag, trun.start) & 0xffffff;
    let at = trun.start + 8 + (flags & 1 ? 4 : 0) + (flags & 4 ? 4 : 0);
    at += (flags & 0x100 ? 4 : 0) + (flags & 0x200 ? 4 : 0) + (flags & 0x400 ? 4 : 0);
    const cts = flags & 0x800 ? new DataView(frag.buffer, frag.byteOffset).getInt32(at) : 0;
    const data = frag.subarray(mdat.start, mdat.end);
    if (kind === 'video') this.videoFrame(dts / scale, (dts + cts) / scale, !!key, data, wallUs);
    else this.audioFrame(dts / scale, data);
  }

  /** Schedules decoded sound at its playout time on the AudioContext's clock. */
  play(a) {
    const ctx = this.actx;
    const buf = ctx.createBuffer(a.numberOfChannels, a.numberOfFrames, a.sampleRate);
    for (let c = 0; c < a.numberOfChannels; c++) a.copyTo(buf.getChannelData(c), { planeIndex: c, format: 'f32-planar' });
    const wallAt = a.timestamp / 1e6 + this.offset;
    a.close();
    const { contextTime, performanceTime } = ctx.getOutputTimestamp();
    const at = performanceTime > 0
      ? contextTime + (wallAt - performanceTime / 1000)
      : ctx.currentTime + (wallAt - this.now()); // not yet running: no output timestamp
    if (at < ctx.currentTime) { this.audioLate += 1; return; }
    const src = ctx.createBufferSource();
    src.buffer = buf;
    src.connect(ctx.destination);
    src.start(at);
    this.audioPlayed += 1;
  }

  /** Draws the newest picture that is due; pictures passed over count as dropped. */
  draw() {
    this.raf = requestAnimationFrame(() => this.draw());
    const now = this.now();
    let due = null;
    while (this.frames.length && this.frames[0].timestamp / 1e6 + this.offset <= now) {
      if (due) { due.close(); this.dropped += 1; }
      due = this.frames.shift();
    }
    if (!due) return;
    if (this.canvas.width !== due.displayWidth) this.canvas.width = due.displayWidth;
    if (this.canvas.height !== due.displayHeight) this.canvas.height = due.displayHeight;
    this.ctx2d.drawImage(due, 0, 0);
    this.lastDrawnAt = now;
    const wallUs = this.wall.get(due.timestamp);
    if (wallUs != null) {
      this.latencies.push(Date.now() / 1000 - wallUs / 1e6);
      if (this.latencies.length > 60) this.latencies.shift();
    }
    due.close();
    this.drawn += 1;
  }

  /** Median time from a picture reaching the server to it being drawn (CMAF mapping, whose
   * fragments carry the server's clock; a synchronized clock is assumed). */
  latencyS() {
    if (!this.latencies.length) return null;
    const s = [...this.latencies].sort((x, y) => x - y);
    return s[s.length >> 1];
  }

  /** How long the newest decoded picture waits before it is shown. */
  bufferS() {
    const last = this.frames.at(-1);
    return last ? Math.max(0, last.timestamp / 1e6 + this.offset - this.now()) : 0;
  }

  close() {
    cancelAnimationFrame(this.raf);
    for (const f of this.frames) f.close();
    this.frames = [];
    try { this.video?.close(); } catch { /* closed */ }
    try { this.audio?.close(); } catch { /* closed */ }
    this.actx?.close();
  }
}

// ------------------------------------------------------------------ the player

export class LivePlayer {
  /**
   * @param {HTMLVideoElement} video  MSE plays here
   * @param {object} o  server (origin), stream (APP/KEY), mode 'mse' | 'webcodecs', mapping
   *   'cmaf' (default) | 'tc' (webcodecs only), canvas
   *   (webcodecs), targetLatency (s), transports (order to try), tuning (query for the server:
   *   e.g. 'videoLifetime=1'), token (an access token with the play grant: sent in the
   *   WebSocket URL's query, as a browser's WebSocket cannot send a header)
   */
  constructor(video, o) {
    this.video = video;
    const given = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
    this.o = { mode: 'mse', targetLatency: 0.2, transports: ['rtws-stream', 'rtws', 'plain'], ...given };
    this.sink = null;
    this.ws = null;
    this.transport = null;
    this.controller = null;
    this.onended = null; // (reason) => void
    this.abandoned = 0;
    this.tried = [];
    this.stopped = false;
  }

  async start() {
    const { mode, transports } = this.o;
    const tc = mode === 'webcodecs' && this.o.mapping === 'tc';
    const usable = transports.filter((t) => (t !== 'rtws-stream' || 'WebSocketStream' in window) && (t !== 'plain' || !tc));
    let last = null;
    for (const t of usable) {
      try {
        await this.startOver(t);
        this.transport = t;
        return t;
      } catch (e) {
        this.tried.push({ transport: t, error: e.message });
        this.teardown();
        if (e.notLive || this.stopped) throw e;
        last = e;
      }
    }
    throw last ?? new Error('no transport to try');
  }

  url(kind) {
    const base = (this.o.server || location.origin).replace(/^http/, 'ws').replace(/\/+$/, '');
    const [app, ...key] = this.o.stream.split('/');
    const token = this.o.token ? `token=${encodeURIComponent(this.o.token)}` : '';
    const plainQuery = [this.o.tuning, token].filter(Boolean).join('&');
    return kind === 'plain'
      ? `${base}/ws/${this.o.stream}${plainQuery ? `?${plainQuery}` : ''}`
      : { url: `${base}/rtws/${app}${token ? `?${token}` : ''}`, app, key: key.join('/') + (this.o.tuning ? `?${this.o.tuning}` : '') };
  }

  /** Connects over `transport`; resolves once media comes, rejects when it cannot. */
  async startOver(transport) {
    const { mode } = this.o;
    if (mode === 'webcodecs') this.sink = new WebCodecsSink(this.o.canvas, this.o.targetLatency);
    else {
      this.sink = new MseSink(this.video);
      await this.sink.open;
      const sink = this.sink;
      this.controller = new LatencyController(this.video, this.o.targetLatency, () => sink.edge());
    }
    // This attempt's own outcome: a late event of an earlier attempt must not settle it.
    const attempt = {};
    const first = new Promise((resolve, reject) => { attempt.resolve = resolve; attempt.reject = reject; });
    this.firstMedia = () => attempt.resolve();
    this.failed = (e) => attempt.reject(e);
    if (transport === 'plain') {
      this.ws = await openSocket(this.url('plain'), false);
      this.plain();
    } else {
      const { url, app, key } = this.url('rtws');
      this.ws = await openSocket(url, transport === 'rtws-stream');
      const conn = new RtwsConnection(this.ws);
      this.conn = conn;
      conn.onerror = (e) => this.fail(e);
      if (mode === 'webcodecs' && this.o.mapping === 'tc') this.tc(conn, app, key);
      else this.cmaf(conn, key);
    }
    const ws = this.ws;
    ws.addEventListener('close', (ev) => {
      const reason = ev.reason || ws.closeReason || 'the connection closed';
      attempt.reject(new Error(reason)); // nothing once the attempt has settled
      if (this.ws === ws && !this.stopped && this.transport) this.onended?.(reason);
    });
    this.timer = setInterval(() => {
      this.buffer = this.controller?.tick() ?? null;
      if (this.sink.trim) this.sink.trim();
    }, 200);
    await first;
    this.failed = null;
  }

  fail(e) {
    this.failed?.(e);
  }

  /** onair's CMAF mapping: a request flow, then a flow per track from the server. */
  cmaf(conn, key) {
    const sink = this.sink;
    conn.onexception = (flow, code, text) => {
      const e = code === 404 ? new NotLiveError(text || 'not live') : new Error(text || `refused (${code})`);
      this.fail(e);
      if (this.transport) this.onended?.(e.message);
    };
    let open = 0;
    conn.onflow = (flow, meta) => {
      if (meta.length < 5 || !CMAF.every((c, i) => meta[i] === c)) return null;
      const kind = KIND[meta[4]];
      open += 1;
      // Every track's SourceBuffer before the first init: the flows open together. One that
      // opens after media was appended cannot be added to this MediaSource: start over.
      if (!sink.lateTracksOk && sink.fragments > 0 && !sink.hasTrack(kind)) {
        this.fail(new Error(`a ${kind} track came after playback started`));
        if (this.transport) this.onended?.(`a ${kind} track was added`);
        return null;
      }
      sink.addTrack(kind, new TextDecoder().decode(meta.subarray(5)));
      return {
        onmessage: (m) => {
          sink.message(kind, m);
          if (sink.error) this.fail(new Error(sink.error));
          if (m[0] === 0x66) this.firstMedia?.();
        },
        onabandon: (n) => { this.abandoned += n; },
        onclose: () => {
          open -= 1;
          if (open === 0 && !this.stopped) this.onended?.('the stream ended');
        },
      };
    };
    conn.opened.then(() => {
      const meta = new Uint8Array([...CMAF, ...enc(key)]);
      conn.open(0, meta);
    });
  }

  /** The TC mapping into WebCodecs. */
  tc(conn, app, key) {
    const player = new TcPlayer(conn, { app });
    this.tcPlayer = player;
    player.onstatus = (info) => {
      if (info?.code === 'NetStream.Play.StreamNotFound') this.fail(new NotLiveError(info.description));
      // The publisher left: the flows stay, as a TC server keeps them for what comes next.
      if (info?.code === 'NetStream.Play.UnpublishNotify' && !this.stopped) this.onended?.('the stream ended');
    };
    player.onabandon = (flow, n) => { this.abandoned += n; };
    player.onmedia = (m) => {
      this.sink.media(m);
      if (this.sink.error) this.fail(new Error(this.sink.error));
      if (m.type === 9 || m.type === 8) this.firstMedia?.();
    };
    player.play(key).catch((e) => this.fail(e));
  }

  /** The plain-WebSocket fallback: a text message lists the tracks, binary messages are a
   * track byte ('a'/'v') and the CMAF mapping's message. */
  plain() {
    const sink = this.sink;
    this.ws.addEventListener('message', (e) => {
      if (typeof e.data === 'string') {
        const msg = JSON.parse(e.data);
        if (msg.tracks) for (const t of msg.tracks) sink.addTrack(t.kind, t.codecs);
        if (msg.error) this.fail(msg.not_live ? new NotLiveError(msg.error) : new Error(msg.error));
        return;
      }
      const m = new Uint8Array(e.data);
      sink.message(KIND[m[0]], m.subarray(1));
      if (sink.error) this.fail(new Error(sink.error));
      if (m[1] === 0x66) this.firstMedia?.();
    });
  }

  stats() {
    const s = this.sink;
    const base = { transport: this.transport, mode: this.o.mode, abandoned: this.abandoned, bytes_in: this.conn?.bytesIn ?? null, tried: this.tried };
    if (s instanceof WebCodecsSink) {
      return {
        ...base,
        mapping: this.o.mapping === 'tc' ? 'tc' : 'cmaf',
        // From the server's clock in each CMAF fragment to the picture drawn; TC carries no
        // server clock, so over TC only the playout delay is known.
        latency_s: s.latencyS(),
        buffer_s: s.bufferS(),
        playout_delay_s: this.o.targetLatency,
        frames_decoded: s.decoded,
        frames_drawn: s.drawn,
        dropped_frames: s.dropped,
        audio_played: s.audioPlayed,
        audio_late: s.audioLate,
        jumps: s.jumps,
        width: this.o.canvas.width,
        height: this.o.canvas.height,
      };
    }
    const q = this.video.getVideoPlaybackQuality?.();
    const transit = s?.transitS?.() ?? null;
    const buffer = this.buffer ?? null;
    return {
      ...base,
      latency_s: transit != null && buffer != null ? transit + buffer : null,
      transit_s: transit,
      buffer_s: buffer,
      playback_rate: this.video.playbackRate,
      current_time: this.video.currentTime,
      frames_decoded: q?.totalVideoFrames ?? null,
      dropped_frames: q?.droppedVideoFrames ?? null,
      fragments: s?.fragments ?? 0,
      jumps: this.controller?.jumps ?? 0,
      gap_jumps: this.controller?.gapJumps ?? 0,
      width: this.video.videoWidth,
      height: this.video.videoHeight,
    };
  }

  teardown() {
    clearInterval(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    this.conn = null;
    try { ws?.close(); } catch { /* closed */ }
    this.sink?.close();
    this.sink = null;
    this.controller = null;
  }

  stop() {
    this.stopped = true;
    this.teardown();
  }
}
