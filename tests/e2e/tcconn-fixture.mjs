// A stand-in for the reference RTWebSocket TC client (tcconn.js with rtws.js, amf0.js and
// tcmessage.js, by the protocol's author), for when that code cannot be had at test time. It
// offers the part of tcconn.js's API that rtws-interop.test.mjs drives (TCConnection: connect,
// createStream, close; Stream: play, publish, pause/resume, receiveAudio/receiveVideo,
// sendAudio/sendVideo, closeStream, deleteStream, onstatus/onaudio/onvideo) and was written
// from the protocol's text only (../shared/specs/rtwebsocket.md, RFC 7425 §5), not from
// web/rtws.js, so that it does not share our client's reading:
// - a flow of the server is taken only when it answers our control flow; the first with
//   stream ID 0 is the server's control flow, later ones must name a stream we created;
//   anything else is refused with an exception (code 0);
// - every flow we open for a stream answers the server's control flow;
// - statuses of a stream are those on its flows; flow syncs (user control 34) hold a flow
//   until `count` flows have delivered the same sync ID.
// It is deliberately strict where the reference client is: a stream's flows that answer
// anything but the control flow are never seen, so a server that ties them elsewhere fails.

const enc = new TextEncoder();
const dec = new TextDecoder();

function vlu(v, out = []) {
  const d = [];
  do { d.unshift(v % 128); v = Math.floor(v / 128); } while (v > 0);
  d.forEach((x, i) => out.push(i < d.length - 1 ? x | 0x80 : x));
  return out;
}
function readVlu(b, pos) {
  let v = 0;
  for (let i = pos; i < b.length; i++) {
    v = v * 128 + (b[i] & 0x7f);
    if (!(b[i] & 0x80)) return [v, i + 1];
  }
  throw new Error('truncated vlu');
}
const cat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};

// AMF0: numbers, booleans, strings, null/undefined, objects (what TC commands carry).
function amfEncode(...values) {
  const out = [];
  const str = (s) => { const b = enc.encode(s); out.push(b.length >> 8, b.length & 255, ...b); };
  const one = (v) => {
    if (v === null || v === undefined) out.push(5);
    else if (typeof v === 'number') { const b = new Uint8Array(8); new DataView(b.buffer).setFloat64(0, v); out.push(0, ...b); }
    else if (typeof v === 'boolean') out.push(1, v ? 1 : 0);
    else if (typeof v === 'string') { out.push(2); str(v); }
    else { out.push(3); for (const [k, x] of Object.entries(v)) { str(k); one(x); } out.push(0, 0, 9); }
  };
  values.forEach(one);
  return Uint8Array.from(out);
}
function amfDecode(b) {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = 0;
  const str = () => { const n = v.getUint16(p); p += 2; const s = dec.decode(b.subarray(p, p + n)); p += n; return s; };
  const one = () => {
    const t = b[p++];
    if (t === 0) { p += 8; return v.getFloat64(p - 8); }
    if (t === 1) return b[p++] !== 0;
    if (t === 2) return str();
    if (t === 5 || t === 6) return null;
    if (t === 3 || t === 8) {
      if (t === 8) p += 4;
      const o = {};
      for (;;) { const k = str(); if (b[p] === 9) { p++; return o; } o[k] = one(); }
    }
    throw new Error(`AMF0 type ${t}`);
  };
  const out = [];
  while (p < b.length) out.push(one());
  return out;
}

const meta = (sid) => Uint8Array.from(vlu(sid, [0x54, 0x43, 0x04]));
function parseMeta(m) {
  if (m.length < 4 || m[0] !== 0x54 || m[1] !== 0x43 || !(m[2] & 0x04)) return null;
  try { return readVlu(m, 3)[0]; } catch { return null; }
}
const tcMsg = (type, ts, ...parts) => {
  const h = new Uint8Array(5);
  h[0] = type;
  new DataView(h.buffer).setUint32(1, ts >>> 0);
  return cat(h, ...parts);
};

/** The RTWebSocket layer, from the spec's table of messages. */
class Wire {
  constructor(url) {
    this.ws = new WebSocket(url);
    this.ws.binaryType = 'arraybuffer';
    this.send = new Map(); // our flows: { sent, acked, window, queue, onrecvflow, onexception }
    this.recv = new Map(); // theirs: { assoc, meta, parts, received, accepted, onmessage, oncomplete }
    this.nextFlow = 0;
    this.opened = new Promise((resolve, reject) => {
      this.ws.addEventListener('open', resolve);
      this.ws.addEventListener('error', reject);
    });
    this.ws.addEventListener('message', (e) => { if (typeof e.data !== 'string') this.input(new Uint8Array(e.data)); });
  }

  raw(bytes) { if (this.ws.readyState === 1) this.ws.send(Uint8Array.from(bytes)); }

  openFlow(metadata, assoc) {
    const id = this.nextFlow++;
    this.send.set(id, { sent: 0, acked: 0, window: 65536, queue: [], onrecvflow: null, onexception: null });
    this.raw(assoc === undefined ? [...vlu(id, [0x10]), ...metadata] : [...vlu(assoc, vlu(id, [0x30])), ...metadata]);
    return id;
  }

  write(id, data) {
    const f = this.send.get(id);
    if (!f || f.closed) return;
    for (let at = 0; ; at += 1400) {
      const last = at + 1400 >= data.length;
      f.queue.push(cat(Uint8Array.from(vlu(id, [last ? 0x1d : 0x3d])), data.subarray(at, at + 1400)));
      if (last) break;
    }
    this.pump(id);
  }

  pump(id) {
    const f = this.send.get(id);
    while (f.queue.length && f.sent - f.acked + f.queue[0].length <= f.window) {
      const m = f.queue.shift();
      f.sent += m.length;
      this.raw(m);
    }
  }

  closeFlow(id) {
    const f = this.send.get(id);
    if (f && !f.closed) { f.closed = true; this.raw(vlu(id, [0x1c])); }
  }

  /** Acks every flow's bytes at once (the spec allows acking early), advertising 2^24−1. */
  ack(id, adv = 0xffffff) {
    const f = this.recv.get(id);
    this.raw(vlu(adv, vlu(f.received - f.ackedAt, vlu(id, [0x5a]))));
    f.ackedAt = f.received;
  }

  refuse(id, text) {
    this.raw([...vlu(0, vlu(id, [0x5e])), ...enc.encode(text)]);
  }

  input(b) {
    let id; let pos;
    switch (b[0]) {
      case 0x01: this.raw([0x41, ...b.subarray(1)]); return;
      case 0x10: case 0x30: {
        [id, pos] = readVlu(b, 1);
        let assoc;
        if (b[0] === 0x30) [assoc, pos] = readVlu(b, pos);
        const f = { assoc, meta: b.slice(pos), parts: [], received: 0, ackedAt: 0, accepted: false };
        this.recv.set(id, f);
        // Only a flow answering one of ours can be taken, by that flow's onrecvflow.
        const owner = assoc === undefined ? null : this.send.get(assoc);
        owner?.onrecvflow?.(id, f);
        if (!f.accepted) this.refuse(id, 'not accepted');
        this.ack(id, f.accepted ? 0xffffff : 0);
        return;
      }
      case 0x1d: case 0x3d: {
        [id, pos] = readVlu(b, 1);
        const f = this.recv.get(id);
        f.received += b.length;
        if (f.accepted) {
          f.parts.push(b.slice(pos));
          if (b[0] === 0x1d) { const m = cat(...f.parts); f.parts = []; f.onmessage?.(m); }
        }
        this.ack(id, f.accepted ? 0xffffff : 0);
        return;
      }
      case 0x1a: [id] = readVlu(b, 1); this.recv.get(id).parts = []; this.ack(id); return;
      case 0x1c: [id] = readVlu(b, 1); this.ack(id, 0); this.raw(vlu(id, [0x5c])); this.recv.get(id)?.oncomplete?.(); this.recv.delete(id); return;
      case 0x5a: {
        let delta; let adv;
        [id, pos] = readVlu(b, 1);
        [delta, pos] = readVlu(b, pos);
        [adv] = readVlu(b, pos);
        const f = this.send.get(id);
        if (f) { f.acked += delta; f.window = adv; this.pump(id); }
        return;
      }
      case 0x5e: [id] = readVlu(b, 1); this.send.get(id)?.onexception?.(); return;
      default:
    }
  }
}

const CODED_VIDEO = new Set([0x10, 0x20, 0x30, 0x40]);

/** The parts of a video/audio message a player looks at (FLV tag body after the TC header). */
function videoHeader(timestamp, body) {
  const h = { type: 9, timestamp, frametype: body[0] & 0x70, enhanced: !!(body[0] & 0x80) };
  if (h.enhanced) {
    const pt = body[0] & 0x0f;
    h.isConfiguration = pt === 0;
    h.isCodedFrame = (pt === 1 || pt === 3) && CODED_VIDEO.has(h.frametype);
  } else {
    h.codec = body[0] & 0x0f;
    h.isConfiguration = h.codec === 7 && body[1] === 0;
    h.isCodedFrame = CODED_VIDEO.has(h.frametype) && (h.codec !== 7 || body[1] === 1);
  }
  return h;
}
function audioHeader(timestamp, body) {
  const h = { type: 8, timestamp, codec: body[0] & 0xf0 };
  if (h.codec === 0x90) h.isConfiguration = (body[0] & 0x0f) === 0;
  else h.isConfiguration = h.codec === 0xa0 && body[1] === 0;
  h.isCodedFrame = !h.isConfiguration;
  return h;
}

export class TCConnection {
  constructor() {
    this.onstatus = null;
    this.streams = new Map();
    this.tid = 1;
    this.pending = new Map();
    this.serverControl = null;
    this.syncs = new Map();
  }

  connect(url, argObject = {}, ...args) {
    this.wire = new Wire(url);
    return this.wire.opened.then(() => new Promise((resolve, reject) => {
      const w = this.wire;
      this.control = w.openFlow(meta(0));
      const ours = w.send.get(this.control);
      ours.onexception = () => this.close();
      ours.onrecvflow = (id, f) => this.takeFlow(id, f);
      this.transact('connect', { app: new URL(url).pathname.replace(/^\//, ''), ...argObject }, ...args)
        .then(([ok, info]) => (ok ? resolve(info) : reject(new Error(JSON.stringify(info)))));
      w.ws.addEventListener('close', () => reject(new Error('closed')));
    }));
  }

  takeFlow(id, f) {
    const sid = parseMeta(f.meta);
    if (sid === null) return;
    if (this.serverControl === null) {
      if (sid !== 0) return;
      this.serverControl = id;
    } else if (sid !== 0 && !this.streams.has(sid)) {
      return;
    }
    f.accepted = true;
    f.onmessage = (m) => this.message(id, sid, m);
  }

  message(flow, sid, m) {
    const f = this.wire.recv.get(flow);
    if (f?.held) { f.held.push(m); return; }
    const type = m[0];
    const ts = new DataView(m.buffer, m.byteOffset).getUint32(1);
    const body = m.subarray(5);
    if (type === 4 && body.length >= 10 && body[0] === 0 && body[1] === 34) {
      const v = new DataView(body.buffer, body.byteOffset);
      const id = v.getUint32(2);
      const s = this.syncs.get(id) ?? { count: v.getUint32(6), flows: [] };
      this.syncs.set(id, s);
      s.flows.push(flow);
      if (s.flows.length >= s.count) {
        this.syncs.delete(id);
        for (const x of s.flows) {
          const held = this.wire.recv.get(x)?.held ?? [];
          if (this.wire.recv.get(x)) delete this.wire.recv.get(x).held;
          for (const hm of held) this.message(x, sid, hm);
        }
      } else if (f) f.held = [];
      return;
    }
    if (type === 20) {
      const [name, tid, , ...args] = amfDecode(body);
      if (sid === 0 && (name === '_result' || name === '_error')) this.pending.get(tid)?.([name === '_result', ...args]);
      else if (name === 'onStatus') {
        const target = sid === 0 ? this : this.streams.get(sid);
        target?.onstatus?.({ info: args[0] });
      }
      return;
    }
    const st = this.streams.get(sid);
    if (!st || st.mode !== 'play') return;
    if (type === 9) st.onvideo?.(videoHeader(ts, body), m);
    if (type === 8) st.onaudio?.(audioHeader(ts, body), m);
  }

  transact(name, ...args) {
    const tid = this.tid++;
    this.wire.write(this.control, tcMsg(20, 0, amfEncode(name, tid, ...args)));
    return new Promise((resolve) => this.pending.set(tid, resolve));
  }

  async createStream() {
    const [ok, sid] = await this.transact('createStream', null);
    if (!ok) throw new Error('createStream failed');
    const s = new Stream(this, sid);
    this.streams.set(sid, s);
    return s;
  }

  close() {
    try { this.wire?.ws.close(); } catch { /* closed */ }
  }
}

class Stream {
  constructor(owner, sid) {
    this.owner = owner;
    this.sid = sid;
    this.mode = 'idle';
    this.flows = {};
    this.onstatus = null;
    this.onaudio = null;
    this.onvideo = null;
  }

  /** A flow of ours for this stream, answering the server's control flow. */
  flow(kind) {
    this.flows[kind] ??= this.owner.wire.openFlow(meta(this.sid), this.owner.serverControl);
    return this.flows[kind];
  }

  command(name, ...args) {
    this.owner.wire.write(this.flow('data'), tcMsg(20, 0, amfEncode(name, 0, null, ...args)));
  }

  play(name) { this.mode = 'play'; this.command('play', name); }

  publish(name) { this.mode = 'publish'; this.command('publish', name); }

  pause() { this.command('pause', true); }

  resume() { this.command('pause', false); }

  receiveAudio(flag) { this.command('receiveAudio', flag); }

  receiveVideo(flag) { this.command('receiveVideo', flag); }

  closeStream() { this.mode = 'idle'; this.command('closeStream'); }

  sendAudio(_endBy, ts, bytes) { this.owner.wire.write(this.flow('audio'), tcMsg(8, ts, bytes)); }

  sendVideo(_endBy, ts, bytes) { this.owner.wire.write(this.flow('video'), tcMsg(9, ts, bytes)); }

  deleteStream() {
    const w = this.owner.wire;
    this.owner.streams.delete(this.sid);
    w.write(this.owner.control, tcMsg(20, 0, amfEncode('deleteStream', 0, null, this.sid)));
    for (const id of Object.values(this.flows)) w.closeFlow(id);
  }
}
