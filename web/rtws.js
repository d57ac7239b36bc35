// RTWebSocket client (browser and Node): flows over one WebSocket with receive windows and
// acks, and the "TC" media mapping (RTMP messages) on top, for playing and publishing streams
// on onair or any TC server (the reference tcserver too). Flows are tied together as RFC 7425
// §5.3 has it: our stream flows answer the server's control flow, and we take the server's
// flows only when they answer ours.
// The wire format: ../shared/specs/rtwebsocket.md (messages: 01 ping, 41 ping reply, 0a ack
// window, 10/30 open, 1d/3d data, 1a abandon, 1c close, 5a ack, 5c close ack, 5e exception).
//
//   const c = new RtwsConnection(new WebSocket('ws://host/rtws/live'));
//   const player = new TcPlayer(c, { app: 'live' });
//   player.onmedia = (m) => { /* m.type 8 audio / 9 video, m.timestamp ms, m.body FLV tag body */ };
//   await player.play('stream');

/** vlu: big-endian base 128, high bit on every byte but the last. */
export function vluWrite(v, out) {
  const groups = [];
  do { groups.unshift(v % 128); v = Math.floor(v / 128); } while (v > 0);
  groups.forEach((g, i) => out.push(i < groups.length - 1 ? g | 0x80 : g));
  return out;
}

/** Reads a vlu at `pos` of `bytes`: [value, next position]. Throws on a truncated one. */
export function vluRead(bytes, pos) {
  let v = 0;
  for (let i = pos; i < bytes.length; i++) {
    if (i - pos >= 8) throw new Error('vlu too long');
    v = v * 128 + (bytes[i] & 0x7f);
    if (!(bytes[i] & 0x80)) return [v, i + 1];
  }
  throw new Error('truncated vlu');
}

const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};

const ACK_DELAY_MS = 250;
/** Most bytes of one of our flows sent and not yet acked. */
const MAX_INFLIGHT = 64 * 1024;
const RECV_BUFFER = 2 ** 24 - 1;

/** One RTWebSocket connection: the receiving side of flows (acks, windows) and sending. */
export class RtwsConnection {
  constructor(ws) {
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    this.recv = new Map(); // flow → { partial: [], received, acked, number, returnAssoc, metadata }
    this.send = new Map(); // flow → { number }
    this.ackWindow = 2800;
    this.sinceAck = 0;
    this.ackTimer = null;
    this.pending = new Set();
    // (flowId, metadata, returnAssoc) => handler {onmessage, onabandon, onclose}, or null to
    // refuse the flow (the peer hears an exception, as RTWebSocket says for a flow not accepted).
    this.onflow = null;
    this.onping = null;
    this.onexception = null; // (ourFlow, code, text) => void
    this.onerror = null;
    this.bytesIn = 0;
    this.opened = new Promise((resolve, reject) => {
      if (ws.readyState === 1) resolve();
      ws.addEventListener('open', () => resolve());
      ws.addEventListener('error', (e) => reject(e));
    });
    ws.addEventListener('message', (e) => {
      if (typeof e.data === 'string') return; // text is not RTWebSocket
      try { this.receive(new Uint8Array(e.data)); } catch (err) { this.onerror?.(err); }
    });
  }

  rawSend(bytes) {
    if (this.ws.readyState === 1) this.ws.send(bytes);
  }

  /** Opens a send flow; returns its ID. */
  open(flow, metadata, returnAssoc) {
    const head = returnAssoc === undefined ? vluWrite(flow, [0x10]) : vluWrite(returnAssoc, vluWrite(flow, [0x30]));
    // The receiver's window: 65536 bytes until its first ack says otherwise.
    this.send.set(flow, { sent: 0, acked: 0, window: 65536, queue: [], queued: 0 });
    this.rawSend(concat(Uint8Array.from(head), metadata));
    return flow;
  }

  /** Queues one message on a flow, in 1400-byte fragments; they go as the receiver's window
   * allows (each fragment counted whole, header included, as the receiver counts it). */
  write(flow, data) {
    const f = this.send.get(flow);
    for (let at = 0; at < data.length || at === 0; at += 1400) {
      const last = at + 1400 >= data.length;
      const frag = concat(Uint8Array.from(vluWrite(flow, [last ? 0x1d : 0x3d])), data.subarray(at, at + 1400));
      f.queue.push(frag);
      f.queued += frag.length;
      if (last) break;
    }
    this.pump(flow);
  }

  /** Bytes of `flow` waiting for the receiver's window. */
  queuedBytes(flow) { return this.send.get(flow)?.queued ?? 0; }

  /** Bytes of `flow` sent and not yet acked, plus those waiting. */
  unackedBytes(flow) {
    const f = this.send.get(flow);
    return f ? f.sent - f.acked + f.queued : 0;
  }

  pump(flow) {
    const f = this.send.get(flow);
    // Within the receiver's window, and never more than MAX_INFLIGHT unacked: onair grants
    // 2 MiB, which on a slow uplink would sit in the socket's buffer as seconds of media no
    // one can drop any more.
    const limit = Math.min(f?.window ?? 0, MAX_INFLIGHT);
    while (f?.queue.length && f.sent - f.acked + f.queue[0].length <= limit) {
      const frag = f.queue.shift();
      f.queued -= frag.length;
      f.sent += frag.length;
      this.rawSend(frag);
    }
  }

  ping(bytes) { this.rawSend(concat(Uint8Array.of(0x01), bytes)); }

  /** Refuses the peer's flow `flow` (or raises an exception on it): its data is dropped from
   * now on, and still acked. */
  reject(flow, code, text) {
    const f = this.recv.get(flow);
    if (!f || f.rejected) return;
    f.rejected = true;
    f.handler = null;
    f.partial = [];
    this.rawSend(concat(Uint8Array.from(vluWrite(code, vluWrite(flow, [0x5e]))), new TextEncoder().encode(text)));
  }

  receive(b) {
    this.bytesIn += b.length;
    const type = b[0];
    let pos = 1;
    let flow;
    switch (type) {
      case 0x01: this.rawSend(concat(Uint8Array.of(0x41), b.subarray(1))); return;
      case 0x41: this.onping?.(b.subarray(1)); return;
      case 0x0a: [this.ackWindow] = vluRead(b, 1); return;
      case 0x10: case 0x30: {
        [flow, pos] = vluRead(b, pos);
        let assoc;
        if (type === 0x30) [assoc, pos] = vluRead(b, pos);
        if (this.recv.has(flow)) throw new Error(`flow ${flow} is already open`);
        const f = { partial: [], received: 0, acked: 0, number: 1, handler: null };
        this.recv.set(flow, f);
        f.handler = this.onflow?.(flow, b.subarray(pos), assoc) ?? null;
        if (!f.handler) this.reject(flow, 0, 'not accepted');
        this.ack(flow, true);
        return;
      }
      case 0x1d: case 0x3d: {
        [flow, pos] = vluRead(b, pos);
        const f = this.recv.get(flow);
        if (!f) throw new Error(`unknown flow ${flow}`);
        f.received += b.length;
        if (!f.rejected) f.partial.push(b.subarray(pos));
        if (type === 0x1d && !f.rejected) {
          const msg = concat(...f.partial);
          f.partial = [];
          f.handler?.onmessage?.(msg, f.number++);
        }
        this.sinceAck += b.length;
        this.ack(flow, this.sinceAck >= this.ackWindow || f.received - f.acked >= RECV_BUFFER / 2);
        return;
      }
      case 0x1a: {
        [flow, pos] = vluRead(b, pos);
        let count = 1;
        if (pos < b.length) { [count] = vluRead(b, pos); count += 1; }
        const f = this.recv.get(flow);
        if (!f) throw new Error(`unknown flow ${flow}`);
        f.partial = [];
        f.number += count;
        f.handler?.onabandon?.(count);
        this.ack(flow, true);
        return;
      }
      case 0x1c: {
        [flow] = vluRead(b, pos);
        const f = this.recv.get(flow);
        if (!f) throw new Error(`unknown flow ${flow}`);
        this.ack(flow, true, 0);
        this.rawSend(Uint8Array.from(vluWrite(flow, [0x5c])));
        this.recv.delete(flow);
        f.handler?.onclose?.();
        return;
      }
      case 0x5e: { // the peer refused one of our flows (a stream that is not live)
        [flow, pos] = vluRead(b, pos);
        let code = null;
        if (pos < b.length) [code, pos] = vluRead(b, pos);
        this.onexception?.(flow, code, new TextDecoder().decode(b.subarray(pos)));
        return;
      }
      case 0x5a: { // the receiver's ack of one of our flows: more may go
        let delta; let adv;
        [flow, pos] = vluRead(b, pos);
        [delta, pos] = vluRead(b, pos);
        [adv] = vluRead(b, pos);
        const f = this.send.get(flow);
        if (!f) return;
        f.acked = Math.min(f.sent, f.acked + delta);
        f.window = adv;
        this.pump(flow);
        return;
      }
      case 0x5c: return;
      default: // unknown types are ignored
    }
  }

  /** Marks `flow` as owing an ack; sends the pending acks now or within 250 ms. */
  ack(flow, now, advertisement) {
    this.pending.add(flow);
    if (advertisement === 0) this.recv.get(flow).closing = true;
    if (!now) {
      this.ackTimer ??= setTimeout(() => this.flushAcks(), ACK_DELAY_MS);
      return;
    }
    this.flushAcks();
  }

  flushAcks() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    for (const flow of this.pending) {
      const f = this.recv.get(flow);
      if (!f) continue;
      const delta = f.received - f.acked;
      f.acked = f.received;
      const adv = f.closing ? 0 : RECV_BUFFER;
      this.rawSend(Uint8Array.from(vluWrite(adv, vluWrite(delta, vluWrite(flow, [0x5a])))));
    }
    this.pending.clear();
    this.sinceAck = 0;
  }
}

// ------------------------------------------------------------------ AMF0, as much as TC needs

export function amf0Encode(values) {
  const out = [];
  const str = (s) => {
    const b = new TextEncoder().encode(s);
    out.push(b.length >> 8, b.length & 0xff, ...b);
  };
  const value = (v) => {
    if (v === null || v === undefined) out.push(0x05);
    else if (typeof v === 'number') {
      const d = new DataView(new ArrayBuffer(8));
      d.setFloat64(0, v);
      out.push(0x00, ...new Uint8Array(d.buffer));
    } else if (typeof v === 'boolean') out.push(0x01, v ? 1 : 0);
    else if (typeof v === 'string') { out.push(0x02); str(v); }
    else {
      out.push(0x03);
      for (const [k, x] of Object.entries(v)) { str(k); value(x); }
      out.push(0, 0, 0x09);
    }
  };
  values.forEach(value);
  return Uint8Array.from(out);
}

export function amf0Decode(b) {
  let pos = 0;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const str = () => {
    const n = view.getUint16(pos);
    const s = new TextDecoder().decode(b.subarray(pos + 2, pos + 2 + n));
    pos += 2 + n;
    return s;
  };
  const value = (depth = 0) => {
    if (depth > 16) throw new Error('AMF0 nested too deep');
    const t = b[pos++];
    switch (t) {
      case 0x00: { const v = view.getFloat64(pos); pos += 8; return v; }
      case 0x01: return b[pos++] !== 0;
      case 0x02: return str();
      case 0x03: case 0x08: {
        if (t === 0x08) pos += 4;
        const o = {};
        for (;;) {
          const k = str();
          if (b[pos] === 0x09) { pos++; return o; }
          o[k] = value(depth + 1);
        }
      }
      case 0x05: case 0x06: return null;
      default: throw new Error(`AMF0 type ${t} not read`);
    }
  };
  const out = [];
  while (pos < b.length) out.push(value());
  return out;
}

// ------------------------------------------------------------------ TC: RTMP messages on flows

const tcMeta = (streamId) => Uint8Array.from(vluWrite(streamId, [0x54, 0x43, 0x04]));
/** The stream ID of TC flow metadata (RFC 7425 §5.1.1: "TC", options with the stream-ID flag
 * set, vlu stream ID); null when it is not TC. */
const tcStreamId = (meta) => {
  if (meta.length < 4 || meta[0] !== 0x54 || meta[1] !== 0x43 || !(meta[2] & 0x04)) return null;
  try { return vluRead(meta, 3)[0]; } catch { return null; }
};
const tcMessage = (type, ts, payload) => {
  const head = new Uint8Array(5);
  head[0] = type;
  new DataView(head.buffer).setUint32(1, ts);
  return concat(head, payload);
};

/** Our control flow: the first flow we open. */
const CONTROL = 0;

/**
 * One TC connection, client side: the control flow and its commands (connect, createStream,
 * deleteStream), the server's flows routed by the stream ID in their metadata, and flows of
 * our own for each stream. Subclasses play or publish.
 *
 * Which flow answers which (RFC 7425 §5.3, as the reference client and server do it): our
 * control flow answers nothing; the server's first flow answering it is the server's control
 * flow, and every flow we open for a stream answers that; every flow the server opens for a
 * stream answers our control flow. A flow of the server that answers anything else, or names
 * a stream we did not create, is refused.
 */
class TcClient {
  constructor(conn, { app }) {
    this.conn = conn;
    this.app = app;
    this.transaction = 1;
    this.waiting = new Map(); // transaction → resolve
    this.onstatus = null; // (info, streamId) => void
    this.flows = []; // the server's flows we took: { flow, streamId, returnAssoc }
    this.serverControl = null;
    this.streams = new Set();
    this.nextFlow = CONTROL + 1;
    closeWaits(conn, this);
    conn.onflow = (flow, metadata, returnAssoc) => {
      const streamId = tcStreamId(metadata);
      if (streamId === null || returnAssoc !== CONTROL) return null;
      if (this.serverControl === null) {
        if (streamId !== 0) return null;
        this.serverControl = flow;
      } else if (streamId !== 0 && !this.streams.has(streamId)) {
        return null;
      }
      this.flows.push({ flow, streamId, returnAssoc });
      return this.handler(flow, streamId);
    };
  }

  /** What handles a flow of the server's: messages go to `message`. */
  handler(flow, streamId) {
    return { onmessage: (msg) => this.message(flow, streamId, msg) };
  }

  message(flow, streamId, msg) {
    if (msg.length < 5 || msg[0] !== 20) return;
    const [name, transaction, , info] = amf0Decode(msg.subarray(5));
    if ((name === '_result' || name === '_error') && streamId === 0) this.waiting.get(transaction)?.({ name, info });
    if (name === 'onStatus') this.status(info, streamId);
  }

  status(info, streamId) {
    this.onstatus?.(info, streamId);
    this.statusWaiter?.(info, streamId);
  }

  command(name, args) {
    const t = this.transaction++;
    this.conn.write(CONTROL, tcMessage(20, 0, amf0Encode([name, t, ...args])));
    return new Promise((resolve) => this.waiting.set(t, resolve));
  }

  /** connect then createStream; resolves with the stream ID. */
  async connectAndCreateStream(connectArgs) {
    await this.conn.opened;
    this.conn.open(CONTROL, tcMeta(0));
    const connected = await this.command('connect', [{ app: this.app, flashVer: 'onair-rtws/1', ...connectArgs }]);
    if (connected.info?.code !== 'NetConnection.Connect.Success') throw new Error(`connect: ${JSON.stringify(connected.info)}`);
    const created = await this.command('createStream', [null]);
    if (created.name !== '_result' || typeof created.info !== 'number') throw new Error(`createStream: ${JSON.stringify(created.info)}`);
    this.streams.add(created.info);
    return created.info;
  }

  /** A flow of ours for `streamId`, answering the server's control flow. */
  openStreamFlow(streamId) {
    if (this.serverControl === null) throw new Error('no control flow from the server');
    return this.conn.open(this.nextFlow++, tcMeta(streamId), this.serverControl);
  }

  /** A command on a stream's flow (no answer is expected; statuses come on the stream). */
  streamCommand(flow, name, args) {
    this.conn.write(flow, tcMessage(20, 0, amf0Encode([name, 0, null, ...args])));
  }
}

/** When the socket closes, answers what `owner` still waits for (commands, a status), so
 * nothing awaits forever. */
function closeWaits(conn, owner) {
  conn.ws.addEventListener('close', (e) => {
    const info = { level: 'error', code: 'NetConnection.Connect.Closed', description: e?.reason || 'the connection closed' };
    for (const resolve of owner.waiting.values()) resolve({ name: '_error', info });
    owner.waiting.clear();
    owner.statusWaiter?.(info);
  });
}

/** Plays one stream over TC: connect, createStream, play; media comes to `onmedia`. */
export class TcPlayer extends TcClient {
  constructor(conn, { app }) {
    super(conn, { app });
    this.onmedia = null; // ({ type, timestamp, body, flow }) => void
    this.onabandon = null; // (flow, count) => void
    this.syncs = new Map(); // flow sync ID → { count, flows, held: [[flow, streamId, msg]] }
    this.holding = new Map(); // flow → the sync it waits for
    this.flowSyncs = 0;
    this.commandFlow = null;
  }

  handler(flow, streamId) {
    return {
      onmessage: (msg) => this.message(flow, streamId, msg),
      onabandon: (count) => this.onabandon?.(flow, count),
    };
  }

  message(flow, streamId, msg) {
    // A flow held by a flow sync keeps its messages until every flow of the sync has come.
    const holding = this.holding.get(flow);
    if (holding !== undefined) {
      this.syncs.get(holding).held.push([flow, streamId, msg]);
      return;
    }
    if (msg.length < 5) return;
    const type = msg[0];
    const view = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
    const timestamp = view.getUint32(1);
    const body = msg.subarray(5);
    if (type === 4 && msg.length >= 15 && view.getUint16(5) === 34) {
      // Flow synchronization (RFC 7425 §5.2): syncID, count.
      const id = view.getUint32(7);
      const s = this.syncs.get(id) ?? { count: view.getUint32(11), flows: new Set(), held: [] };
      this.syncs.set(id, s);
      s.flows.add(flow);
      this.flowSyncs += 1;
      if (s.flows.size >= s.count) {
        this.syncs.delete(id);
        for (const f of s.flows) this.holding.delete(f);
        for (const [f, sid, m] of s.held) this.message(f, sid, m);
      } else {
        this.holding.set(flow, id);
      }
      return;
    }
    if (type === 20) { super.message(flow, streamId, msg); return; }
    if (streamId !== 0 && (type === 8 || type === 9 || type === 18)) this.onmedia?.({ type, timestamp, body, flow });
  }

  async play(name) {
    const streamId = await this.connectAndCreateStream({});
    this.streamId = streamId;
    this.commandFlow = this.openStreamFlow(streamId);
    this.streamCommand(this.commandFlow, 'play', [name]);
    return streamId;
  }

  /** pause(true/false), receiveAudio(flag), receiveVideo(flag) on the playing stream. */
  pause(flag) { this.streamCommand(this.commandFlow, 'pause', [flag]); }

  receiveAudio(flag) { this.streamCommand(this.commandFlow, 'receiveAudio', [flag]); }

  receiveVideo(flag) { this.streamCommand(this.commandFlow, 'receiveVideo', [flag]); }
}

/** Publishes one stream over TC: connect, createStream, publish; then `video`/`audio` with FLV
 * tag bodies (what a browser's WebCodecs encoders give, wrapped), each kind on a flow of its
 * own, as the reference client sends them. A video frame that would wait behind more than
 * `maxQueued` bytes not yet acked is dropped with the rest of its GOP, so the publish stays
 * live instead of falling behind; audio has its own window and never waits behind video. */
export class TcPublisher extends TcClient {
  constructor(conn, { app, maxQueued = 128 * 1024 }) {
    super(conn, { app });
    this.maxQueued = maxQueued;
    this.commandFlow = null;
    this.videoFlow = null;
    this.audioFlow = null;
    this.skipping = false;
    this.dropped = 0;
    this.sentFrames = 0;
  }

  /** Resolves once the server says NetStream.Publish.Start; throws with its reason otherwise. */
  async publish(name) {
    const streamId = await this.connectAndCreateStream({ type: 'nonprivate' });
    this.streamId = streamId;
    this.commandFlow = this.openStreamFlow(streamId);
    const status = new Promise((resolve) => {
      this.statusWaiter = (info, sid) => { if (sid === undefined || sid === streamId) resolve(info); };
    });
    this.streamCommand(this.commandFlow, 'publish', [name, 'live']);
    const info = await status;
    this.statusWaiter = null;
    if (info?.code !== 'NetStream.Publish.Start') throw new Error(info?.description || info?.code || 'publish refused');
    this.audioFlow = this.openStreamFlow(streamId);
    this.videoFlow = this.openStreamFlow(streamId);
    return streamId;
  }

  /** One video tag body at `ts` ms; `key` for a keyframe (and a sequence header). */
  video(ts, body, key) {
    if (this.conn.unackedBytes(this.videoFlow) > this.maxQueued) this.skipping = true;
    if (this.skipping && !key) { this.dropped += 1; return; }
    this.skipping = false;
    this.sentFrames += 1;
    this.conn.write(this.videoFlow, tcMessage(9, ts, body));
  }

  /** One audio tag body at `ts` ms (always sent). */
  audio(ts, body) {
    this.conn.write(this.audioFlow, tcMessage(8, ts, body));
  }

  /** Ends the publish: deleteStream, then the flows close with the socket. */
  stop() {
    if (this.commandFlow != null) this.conn.write(CONTROL, tcMessage(20, 0, amf0Encode(['deleteStream', 0, null, this.streamId])));
  }
}
