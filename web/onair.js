// onair browser SDK: joins a room of an onair server over its WebSocket signalling (/rtc).
// Plain ES module, no dependencies. Protocol: docs/signalling.md. Reference: docs/sdk.md.
//
// Each participant has two RTCPeerConnections to the server: `publisher`, where this client
// always offers (its own tracks and the `chat`/`lossy` data channels), and `subscriber`, where
// the server always offers (everyone else's tracks). Neither side ever has two offers in flight
// on one connection, so there is no glare to resolve.

// The lowest layer is the one a poor link falls back to, so it is kept well under the poorest
// link a call should survive (300 kbit/s with audio): 100 kbit/s at 15 frames/s, as other SFUs'
// 180p presets are. At 150 kbit/s and full frame rate it measured 210 kbit/s on the wire and a
// 300 kbit/s link froze 5 s in 20.
const SIMULCAST_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 100_000, maxFramerate: 15 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];
const RECONNECT_BUDGET_MS = 20_000;
const JOIN_TIMEOUT_MS = 10_000;
// Longer than the reconnect budget: an offer sent just before the socket dropped is re-sent
// after a resume and still gets its answer.
const ANSWER_TIMEOUT_MS = 30_000;
const PING_INTERVAL_MS = 15_000;
const SILENCE_LIMIT_MS = 45_000;
const ICE_RESTART_MIN_INTERVAL_MS = 5_000;

/** Error with the server's (or the SDK's) error code. */
export class OnairError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'OnairError';
    this.code = code;
  }
}

function defaultUrl() {
  const proto = globalThis.location?.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${globalThis.location?.host}/rtc`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A room session. Create with `await Room.connect(url, opts)`, or `new Room(url, opts)`, add
 * listeners, then `await room.join()` (that way no event can fire before a listener exists). */
/** Events with their detail handed to listeners: the base of Room and the stream sessions. */
class Emitter extends EventTarget {
  /** Add a listener that receives the event's detail; returns a function that removes it. */
  on(type, fn) {
    const listener = (ev) => fn(ev.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  once(type, fn) {
    const listener = (ev) => fn(ev.detail);
    this.addEventListener(type, listener, { once: true });
    return () => this.removeEventListener(type, listener);
  }

  _emit(type, detail) {
    try {
      this.dispatchEvent(new CustomEvent(type, { detail }));
    } catch (e) {
      console.error(`onair: a '${type}' listener threw`, e);
    }
  }
}

export class Room extends Emitter {
  /**
   * @param {string} [url] WebSocket URL of /rtc; defaults to ws(s)://location.host/rtc
   * @param {object} opts {room, name, token, autoSubscribe = true, iceServers, leaveOnPageHide = true,
   *   iceTransportPolicy = 'all', mode} — `iceTransportPolicy: 'relay'` sends all media through
   *   TURN; `mode: 'p2p'` asks for a peer-to-peer room (media browser to browser, the server
   *   relays only signalling); the room's first member decides its mode.
   */
  constructor(url, opts = {}) {
    super();
    if (url && typeof url === 'object') {
      opts = url;
      url = undefined;
    }
    if (!opts.room) throw new OnairError('bad_request', 'room is required');
    if (!opts.name) throw new OnairError('bad_request', 'name is required');
    this.url = url || defaultUrl();
    this.options = { autoSubscribe: true, leaveOnPageHide: true, ...opts };
    this.roomName = opts.room;
    this.name = opts.name;
    /** 'new' | 'connecting' | 'connected' | 'reconnecting' | 'closed' */
    this.state = 'new';
    this.participantId = null;
    /** The server's grade of our own network: 'excellent', 'good', 'poor', 'lost' or null. */
    this.quality = null;
    /** Who speaks now, loudest first: [{participantId, level, self}]. */
    this.activeSpeakers = [];
    this.resumeToken = null;
    /** 'sfu' | 'p2p', from `joined`. */
    this.mode = null;
    /** P2P rooms: participant id → {pc, polite, makingOffer, ignoreOffer, senders, media, chain} */
    this._mesh = new Map();
    this.limits = {};
    this.iceServers = [];
    /** Everyone else: participant id → {id, name, tracks: Map<trackId, RemoteTrack>} */
    this.participants = new Map();
    /** Everyone else's tracks: track id → RemoteTrack (the server's track object plus
     * `mediaTrack`, `stream`, `mid` and `subscribed` once it is received). */
    this.tracks = new Map();
    /** This client's published tracks: source → LocalTrack. */
    this.localTracks = new Map();
    /** @type {RTCPeerConnection|null} */
    this.publisher = null;
    /** @type {RTCPeerConnection|null} */
    this.subscriber = null;
    this.channels = { chat: null, lossy: null };

    this._ws = null;
    this._outbox = [];
    this._joinWaiter = null;
    this._byeReason = null;
    this._lastHeard = 0;
    this._pingTimer = null;
    // Publisher negotiation: one offer in flight, later changes wait for the next round.
    this._pubWaiters = [];
    this._pubBusy = false;
    this._pubIceRestart = false;
    this._pubAnswer = null;
    this._pendingOffer = null;
    // Subscriber: server offers, handled one after another.
    this._subChain = Promise.resolve();
    this._subMids = new Map(); // mid → {track_id, participant_id} from the server's latest offer
    this._midTrack = new Map(); // mid → track id delivered to the app on that mid
    this._lastIceRestart = { publisher: 0, subscriber: 0 };
    this._chatQueue = [];
    this._stats = { snap: null, result: null, at: 0 };
    this._onPageHide = () => {
      if (this.state === 'connected' && this._ws?.readyState === WebSocket.OPEN) {
        this._ws.send(JSON.stringify({ type: 'leave' }));
      }
    };
  }

  /** Connect and join in one step. `url` may be omitted: `Room.connect({room, name})`. */
  static async connect(url, opts = {}) {
    const room = new Room(url, opts);
    await room.join();
    return room;
  }

  // ---------------------------------------------------------------- failures

  _fail(message, error) {
    console.warn('onair:', message, error || '');
    this._emit('error', { code: 'client', message, error });
  }

  // ---------------------------------------------------------------- joining

  /** Open the signalling socket and join. Resolves once `joined` has arrived and both peer
   * connections exist; media and the data channels come up in the background. */
  async join() {
    if (this.state !== 'new') throw new OnairError('already_joined', `room is ${this.state}`);
    this.state = 'connecting';
    let joined;
    try {
      const ws = await this._openSocket(JOIN_TIMEOUT_MS);
      joined = await this._sendJoin(ws, null);
    } catch (e) {
      this.state = 'closed';
      this._ws?.close();
      this._ws = null;
      throw e;
    }
    this._onJoined(joined);
    return this;
  }

  _openSocket(timeoutMs) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (e) {
        reject(e);
        return;
      }
      const timer = setTimeout(() => {
        ws.onopen = ws.onclose = ws.onerror = null;
        ws.close();
        reject(new OnairError('connect_timeout', `no WebSocket to ${this.url}`));
      }, timeoutMs);
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        clearTimeout(timer);
        reject(new OnairError('connect_failed', `WebSocket to ${this.url} closed (${ev.code})`));
      };
      ws.onopen = () => {
        clearTimeout(timer);
        this._ws = ws;
        this._lastHeard = Date.now();
        ws.onmessage = (ev) => this._onSocketMessage(ws, ev);
        ws.onclose = (ev) => this._onSocketClose(ws, ev);
        resolve(ws);
      };
    });
  }

  _sendJoin(ws, resume) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._joinWaiter = null;
        reject(new OnairError('join_timeout', 'no answer to join'));
      }, JOIN_TIMEOUT_MS);
      this._joinWaiter = {
        ws,
        resolve: (msg) => { clearTimeout(timer); this._joinWaiter = null; resolve(msg); },
        reject: (err) => { clearTimeout(timer); this._joinWaiter = null; reject(err); },
      };
      const msg = {
        type: 'join',
        room: this.roomName,
        name: this.name,
        token: this.options.token ?? null,
        auto_subscribe: this.options.autoSubscribe !== false,
      };
      if (this.options.mode) msg.mode = this.options.mode;
      if (resume) msg.resume = resume;
      ws.send(JSON.stringify(msg));
    });
  }

  _onJoined(msg) {
    this.state = 'connected';
    this.participantId = msg.participant_id;
    this.resumeToken = msg.resume_token;
    this.limits = msg.limits || {};
    if (msg.room) this.roomName = msg.room;
    this.iceServers = this.options.iceServers || msg.ice_servers || [];
    this.mode = msg.mode || 'sfu';
    for (const p of msg.participants || []) this._addParticipant(p, false);
    this._startPing();
    if (this.options.leaveOnPageHide && globalThis.addEventListener) {
      globalThis.addEventListener('pagehide', this._onPageHide);
    }
    if (this.mode === 'p2p') return; // connections are made per member, in _p2pPeer
    this._createPeerConnections();
    // The publisher connection exists even with nothing to publish: the data channels live there.
    this._negotiate().catch((e) => this._fail('first publisher negotiation failed', e));
  }

  // ---------------------------------------------------------------- socket

  _send(msg) {
    if (this.state === 'closed') return;
    if (this.state === 'connected' && this._ws?.readyState === WebSocket.OPEN) {
      this._ws.send(JSON.stringify(msg));
    } else {
      this._outbox.push(msg);
    }
  }

  _onSocketMessage(ws, ev) {
    if (ws !== this._ws) return;
    this._lastHeard = Date.now();
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      this._fail('server sent a frame that is not JSON');
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    try {
      this._handle(msg);
    } catch (e) {
      this._fail(`handling '${msg.type}' failed`, e);
    }
  }

  _handle(msg) {
    switch (msg.type) {
      case 'joined':
        if (this._joinWaiter) this._joinWaiter.resolve(msg);
        break;
      case 'error': {
        const err = new OnairError(msg.code, msg.message);
        if (this._joinWaiter) {
          this._joinWaiter.reject(err);
        } else if (this._pubAnswer && ['bad_sdp', 'too_many_tracks', 'forbidden'].includes(msg.code)) {
          // The offer in flight was rejected whole.
          this._pubAnswer.reject(err);
        } else {
          this._emit('error', { code: msg.code, message: msg.message });
        }
        break;
      }
      case 'answer':
        if (this._pubAnswer) this._pubAnswer.resolve(msg);
        break;
      case 'offer':
        this._subChain = this._subChain
          .then(() => this._onServerOffer(msg))
          .catch((e) => this._fail('applying the server offer failed', e));
        break;
      case 'participant_joined':
        this._addParticipant(msg.participant, true);
        break;
      case 'participant_left':
        if (msg.participant_id === this.participantId) {
          this._close(msg.reason || 'removed');
        } else {
          this._removeParticipant(msg.participant_id, msg.reason);
        }
        break;
      case 'track_published':
        this._onTrackPublished(msg.track);
        break;
      case 'track_unpublished':
        this._onTrackUnpublished(msg.participant_id, msg.track_id);
        break;
      case 'track_muted':
        this._onTrackMuted(msg);
        break;
      case 'track_paused': {
        // The server stopped (or resumed) sending this video: our link's estimate carries none
        // of its layers. It resumes by itself when the estimate allows.
        const track = this.tracks.get(msg.track_id);
        if (track) track.paused = !!msg.paused;
        this._emit('track_paused', { trackId: msg.track_id, paused: !!msg.paused, reason: msg.reason, track: track || null });
        break;
      }
      case 'layers_needed':
        this._onLayersNeeded(msg);
        break;
      case 'connection_quality': {
        // The server's grade of a participant's network (its worst connection): excellent,
        // good, poor or lost. Our own grade comes too.
        const self = msg.participant_id === this.participantId;
        if (self) this.quality = msg.quality;
        const part = this.participants.get(msg.participant_id);
        if (part) part.quality = msg.quality;
        this._emit('connection_quality', {
          participantId: msg.participant_id, quality: msg.quality, self, participant: part || null,
        });
        break;
      }
      case 'active_speakers': {
        // Who speaks now, loudest first (from the audio levels the server reads off each
        // publisher's packets); empty when no one does.
        const speakers = (msg.speakers || []).map((s) => ({
          participantId: s.participant_id, level: s.level, self: s.participant_id === this.participantId,
        }));
        this.activeSpeakers = speakers;
        this._emit('active_speakers', { speakers });
        break;
      }
      case 'signal':
        this._onP2pSignal(msg.from, msg.data || {});
        break;
      case 'ping':
        this._send({ type: 'pong' });
        break;
      case 'pong':
        break;
      case 'bye':
        this._byeReason = msg.reason || 'bye';
        // The server closes the socket; make sure it goes even if it does not.
        setTimeout(() => { if (this._ws) this._dropSocket(this._ws); }, 2000);
        break;
      default:
        break; // unknown types are ignored, like unknown fields
    }
  }

  _onSocketClose(ws, ev) {
    if (ws !== this._ws) return;
    this._ws = null;
    if (this._joinWaiter && this._joinWaiter.ws === ws) {
      this._joinWaiter.reject(new OnairError('connect_failed', `socket closed (${ev?.code})`));
    }
    if (this.state === 'closed' || this.state === 'connecting' || this.state === 'reconnecting') return;
    if (this._byeReason) {
      this._close(this._byeReason);
      return;
    }
    this._reconnect();
  }

  /** Forget a socket at once (closing a dead TCP connection can take long). */
  _dropSocket(ws) {
    ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(); } catch { /* already closed */ }
    this._onSocketClose(ws, { code: 4000 });
  }

  _startPing() {
    clearInterval(this._pingTimer);
    this._pingTimer = setInterval(() => {
      if (this.state !== 'connected' || !this._ws) return;
      if (Date.now() - this._lastHeard > SILENCE_LIMIT_MS) {
        this._dropSocket(this._ws);
        return;
      }
      this._send({ type: 'ping' });
    }, PING_INTERVAL_MS);
  }

  async _reconnect() {
    this.state = 'reconnecting';
    this._emit('reconnecting', {});
    // The server keeps our place for `reconnect_grace_secs`; trying longer cannot help.
    const grace = this.limits?.reconnect_grace_secs;
    const deadline = Date.now() + (grace ? grace * 1000 : RECONNECT_BUDGET_MS);
    let delay = 250;
    let lastError = null;
    while (this.state === 'reconnecting') {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await sleep(Math.min(delay, left));
      delay = Math.min(delay * 2, 5000);
      if (this.state !== 'reconnecting') return;
      try {
        const ws = await this._openSocket(Math.max(1000, Math.min(5000, deadline - Date.now())));
        const joined = await this._sendJoin(ws, this.resumeToken);
        this._onResumed(joined);
        return;
      } catch (e) {
        lastError = e;
        if (this._ws) {
          const ws = this._ws;
          ws.onmessage = ws.onclose = ws.onerror = null;
          ws.close();
          this._ws = null;
        }
        // The server answered: resuming is impossible, trying again will not help.
        if (e.code === 'resume_failed' || e.code === 'room_full' || e.code === 'bad_request') {
          this._close(e.code);
          return;
        }
      }
    }
    if (this.state === 'reconnecting') this._close(lastError?.code === 'connect_failed' ? 'unreachable' : 'timeout');
  }

  _onResumed(msg) {
    if (msg.participant_id !== this.participantId) {
      // A new identity means new peer connections on the server: this session is over.
      this._close('resume_failed');
      return;
    }
    this.state = 'connected';
    this.resumeToken = msg.resume_token || this.resumeToken;
    this.limits = msg.limits || this.limits;
    // Bring the room state up to date with what happened while away.
    const now = new Map((msg.participants || []).map((p) => [p.id, p]));
    for (const id of [...this.participants.keys()]) {
      if (!now.has(id)) this._removeParticipant(id, 'left');
    }
    for (const p of now.values()) {
      if (!this.participants.has(p.id)) {
        this._addParticipant(p, true);
        continue;
      }
      // A P2P room's tracks are announced member to member, not known to the server.
      if (this.mode === 'p2p') continue;
      const known = this.participants.get(p.id);
      const ids = new Set((p.tracks || []).map((t) => t.id));
      for (const tid of [...known.tracks.keys()]) {
        if (!ids.has(tid)) this._onTrackUnpublished(p.id, tid);
      }
      for (const t of p.tracks || []) {
        const have = known.tracks.get(t.id);
        if (!have) this._onTrackPublished(t);
        else if (have.muted !== t.muted) this._onTrackMuted({ participant_id: p.id, track_id: t.id, muted: t.muted });
      }
    }
    // Re-send what waited, and the publisher offer whose answer may have been lost.
    const queued = this._outbox.splice(0).filter((m) => m.type !== 'offer');
    if (this._pendingOffer) this._ws.send(JSON.stringify(this._pendingOffer));
    for (const m of queued) this._ws.send(JSON.stringify(m));
    this._emit('reconnected', {});
  }

  // ---------------------------------------------------------------- room state

  _addParticipant(p, announce) {
    if (!p || this.participants.has(p.id)) return;
    const part = { id: p.id, name: p.name, tracks: new Map(), quality: p.quality || null };
    this.participants.set(p.id, part);
    if (announce) this._emit('participant_joined', { participantId: p.id, participant: part });
    if (this.mode === 'p2p') {
      this._p2pPeer(p.id);
      // The newcomer learns what we send.
      if (announce) this._signal(p.id, { tracks: this._p2pTrackList() });
    }
    for (const t of p.tracks || []) this._onTrackPublished({ ...t, participant_id: t.participant_id || p.id }, announce);
  }

  _removeParticipant(id, reason) {
    const part = this.participants.get(id);
    if (!part) return;
    for (const tid of [...part.tracks.keys()]) this._onTrackUnpublished(id, tid, false);
    this.participants.delete(id);
    this._p2pDrop(id);
    this._emit('participant_left', { participantId: id, participant: part, reason: reason || 'left' });
  }

  _onTrackPublished(t, announce = true) {
    if (!t) return;
    if (t.participant_id === this.participantId) {
      // Our own track: learn the id the server gave it.
      const local = this.localTracks.get(t.source);
      if (local && !local.id) this._setLocalId(local, t.id);
      return;
    }
    const part = this.participants.get(t.participant_id);
    if (!part) return;
    let track = this.tracks.get(t.id);
    if (track) {
      Object.assign(track, t);
    } else {
      track = { ...t, mediaTrack: null, stream: null, mid: null, subscribed: false, pending: false };
      this.tracks.set(t.id, track);
    }
    part.tracks.set(t.id, track);
    if (announce) this._emit('track_published', { participantId: t.participant_id, trackId: t.id, track });
    // Media may have arrived before the description did.
    if (track.pending) this._deliverTrack(track);
  }

  _onTrackUnpublished(participantId, trackId, announce = true) {
    const track = this.tracks.get(trackId);
    this.tracks.delete(trackId);
    this.participants.get(participantId)?.tracks.delete(trackId);
    if (track?.mid != null && this._midTrack.get(track.mid) === trackId) this._midTrack.delete(track.mid);
    if (track) {
      track.subscribed = false;
      this._emit('track_unpublished', { participantId, trackId, track });
    } else if (announce) {
      this._emit('track_unpublished', { participantId, trackId, track: null });
    }
  }

  _onTrackMuted(msg) {
    if (msg.participant_id === this.participantId) {
      // The operator muted (or unmuted) one of ours: the server forwards nothing of it. Muting
      // stops sending too; unmuting is left to the user (it may not want to be heard again).
      const local = [...this.localTracks.values()].find((l) => l.id === msg.track_id);
      if (!msg.by_server || !local) return;
      if (msg.muted) {
        local.muted = true;
        local.track.enabled = false;
      }
      this._emit('local_track_muted', { trackId: local.id, source: local.source, muted: !!msg.muted, byServer: true, track: local });
      return;
    }
    const track = this.tracks.get(msg.track_id);
    if (track) track.muted = !!msg.muted;
    this._emit('track_muted', {
      participantId: msg.participant_id,
      trackId: msg.track_id,
      muted: !!msg.muted,
      track: track || null,
    });
  }

  // ---------------------------------------------------------------- peer connections

  _createPeerConnections() {
    const config = {
      iceServers: this.iceServers,
      iceTransportPolicy: this.options.iceTransportPolicy || 'all',
      rtcpMuxPolicy: 'require',
    };
    this.publisher = new RTCPeerConnection({ ...config, bundlePolicy: 'max-bundle' });
    // The server's offers decide bundling here. With max-bundle Chrome refuses an offer without a
    // BUNDLE group, which is what an offer whose m-lines are all stopped looks like.
    this.subscriber = new RTCPeerConnection({ ...config, bundlePolicy: 'balanced' });
    for (const [role, pc] of [['publisher', this.publisher], ['subscriber', this.subscriber]]) {
      pc.onicecandidate = (ev) => {
        const c = ev.candidate;
        // An empty candidate string ends one generation; the null event after it ends all.
        if (c && !c.candidate) return;
        this._send({ type: 'candidate', pc: role, candidate: c ? c.candidate : null, sdp_mid: c ? c.sdpMid : null });
      };
      pc.onconnectionstatechange = () => {
        this._emit('connection_state', { pc: role, state: pc.connectionState });
        if (pc.connectionState === 'failed') this._restartIceOf(role);
      };
      pc.ondatachannel = (ev) => this._adoptChannel(ev.channel);
    }
    this.subscriber.ontrack = (ev) => {
      const mid = ev.transceiver?.mid;
      const entry = mid != null ? this._subMids.get(mid) : null;
      if (entry) this._bindMid(mid, entry, ev.transceiver);
    };
    const chat = this.publisher.createDataChannel('chat');
    const lossy = this.publisher.createDataChannel('lossy', { ordered: false, maxRetransmits: 0 });
    this._adoptChannel(chat);
    this._adoptChannel(lossy);
  }

  _adoptChannel(ch) {
    if (ch.label !== 'chat' && ch.label !== 'lossy') return;
    const label = ch.label;
    if (!this.channels[label] || this.channels[label].readyState === 'closed') this.channels[label] = ch;
    ch.onopen = () => {
      if (label === 'chat') {
        for (const text of this._chatQueue.splice(0)) ch.send(text);
      }
      this._emit('channel_open', { channel: label });
    };
    ch.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      const detail = { from: m.from, name: m.name, data: m.data, channel: label };
      if (label === 'chat') this._emit('chat', detail);
      this._emit('data', detail);
    };
  }

  // ---------------------------------------------------------------- subscriber (server offers)

  async _onServerOffer(msg) {
    const pc = this.subscriber;
    if (!pc || this.state === 'closed') return;
    const mids = new Map();
    for (const t of msg.tracks || []) mids.set(String(t.mid), t);
    this._subMids = mids; // ontrack, fired inside setRemoteDescription, reads this
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    this._send({ type: 'answer', sdp: pc.localDescription.sdp });
    // ontrack does not fire when an m-line is reused for another track or when a listed m-line
    // was already receiving, so compare every mid with what the app was given.
    for (const [mid, trackId] of [...this._midTrack]) {
      const entry = mids.get(mid);
      if (!entry || entry.track_id !== trackId) this._unbindMid(mid);
    }
    for (const tr of pc.getTransceivers()) {
      if (tr.mid == null) continue;
      const entry = mids.get(tr.mid);
      if (entry && this._midTrack.get(tr.mid) !== entry.track_id) this._bindMid(tr.mid, entry, tr);
    }
  }

  _bindMid(mid, entry, transceiver) {
    if (this._midTrack.get(mid) === entry.track_id) return;
    if (this._midTrack.has(mid)) this._unbindMid(mid);
    this._midTrack.set(mid, entry.track_id);
    let track = this.tracks.get(entry.track_id);
    if (!track) {
      // The offer came before the track's description: keep it and deliver when it comes.
      track = {
        id: entry.track_id,
        participant_id: entry.participant_id,
        kind: transceiver.receiver.track.kind,
        source: null,
        muted: false,
        mediaTrack: null,
        stream: null,
        mid: null,
        subscribed: false,
        pending: true,
      };
      this.tracks.set(entry.track_id, track);
    }
    track.mid = mid;
    track.mediaTrack = transceiver.receiver.track;
    track.receiver = transceiver.receiver;
    track.stream = new MediaStream([track.mediaTrack]);
    track.pending = true;
    if (this.participants.get(track.participant_id)?.tracks.has(track.id)) this._deliverTrack(track);
  }

  _deliverTrack(track) {
    if (!track.mediaTrack) return;
    track.pending = false;
    track.subscribed = true;
    this._emit('track', {
      participantId: track.participant_id,
      trackId: track.id,
      track: track.mediaTrack,
      stream: track.stream,
      kind: track.kind,
      source: track.source,
      info: track,
    });
  }

  _unbindMid(mid) {
    const trackId = this._midTrack.get(mid);
    this._midTrack.delete(mid);
    const track = this.tracks.get(trackId);
    if (!track || track.mid !== mid) return;
    const wasSubscribed = track.subscribed;
    track.mid = null;
    track.mediaTrack = null;
    track.receiver = null;
    track.stream = null;
    track.subscribed = false;
    track.pending = false;
    if (!this.participants.get(track.participant_id)?.tracks.has(trackId)) {
      this.tracks.delete(trackId); // a placeholder that never got its description
    } else if (wasSubscribed) {
      this._emit('track_unsubscribed', { participantId: track.participant_id, trackId, track });
    }
  }

  // ---------------------------------------------------------------- publisher (client offers)

  /** Queue a publisher renegotiation; resolves when an answer covering it has been applied. */
  _negotiate(iceRestart = false) {
    return new Promise((resolve, reject) => {
      if (this.state === 'closed' || !this.publisher) {
        reject(new OnairError('closed', 'room is closed'));
        return;
      }
      if (iceRestart) this._pubIceRestart = true;
      this._pubWaiters.push({ resolve, reject });
      if (!this._pubBusy) this._pubLoop();
    });
  }

  async _pubLoop() {
    this._pubBusy = true;
    try {
      while (this._pubWaiters.length) {
        const waiters = this._pubWaiters.splice(0);
        const iceRestart = this._pubIceRestart;
        this._pubIceRestart = false;
        try {
          if (this.state === 'closed') throw new OnairError('closed', 'room is closed');
          await this._pubRound(iceRestart);
          for (const w of waiters) w.resolve();
        } catch (e) {
          for (const w of waiters) w.reject(e);
        }
      }
    } finally {
      this._pubBusy = false;
    }
  }

  async _pubRound(iceRestart) {
    const pc = this.publisher;
    const offer = await pc.createOffer(iceRestart ? { iceRestart: true } : {});
    await pc.setLocalDescription(offer);
    const answered = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new OnairError('answer_timeout', 'no answer to the publisher offer')), ANSWER_TIMEOUT_MS);
      this._pubAnswer = {
        resolve: (m) => { clearTimeout(timer); resolve(m); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
    });
    this._pendingOffer = { type: 'offer', sdp: pc.localDescription.sdp, tracks: this._describeTracks() };
    this._send(this._pendingOffer);
    let answer;
    try {
      answer = await answered;
    } catch (e) {
      if (pc.signalingState === 'have-local-offer') {
        await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      }
      throw e;
    } finally {
      this._pubAnswer = null;
      this._pendingOffer = null;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    // Not in the protocol today, but cheap to honour: an answer that names the track ids.
    for (const t of answer.tracks || []) {
      const local = [...this.localTracks.values()].find((l) => l.mid === String(t.mid));
      if (local && t.track_id && !local.id) this._setLocalId(local, t.track_id);
    }
  }

  _describeTracks() {
    const tracks = [];
    for (const local of this.localTracks.values()) {
      const mid = local.transceiver.mid;
      if (mid == null || local.transceiver.currentDirection === 'stopped') continue;
      local.mid = mid;
      const entry = { mid, source: local.source };
      if (local.kind === 'video') {
        const s = local.track.getSettings ? local.track.getSettings() : {};
        entry.width = s.width || local.width || null;
        entry.height = s.height || local.height || null;
        if (local.simulcast) entry.simulcast = SIMULCAST_LAYERS.map((l) => l.rid);
      }
      tracks.push(entry);
    }
    return tracks;
  }

  /**
   * Dynacast: the server lists the simulcast layers of one of our tracks that anyone receives;
   * the others' encodings are set inactive, so the browser stops encoding and uploading them,
   * until a later message lists them again. `dynacast: false` in the Room's options ignores it.
   */
  _onLayersNeeded({ track_id: trackId, rids }) {
    if (this.options.dynacast === false) return;
    const local = [...this.localTracks.values()].find((l) => l.id === trackId);
    if (!local || !local.simulcast) return;
    const want = new Set(rids || []);
    // get/setParameters pairs must not interleave: chained, each reading the latest state.
    this._layersChain = (this._layersChain || Promise.resolve()).then(async () => {
      const params = local.sender.getParameters();
      let changed = false;
      for (const e of params.encodings || []) {
        const on = !e.rid || want.has(e.rid);
        if (e.active !== on) {
          e.active = on;
          changed = true;
        }
      }
      if (changed) await local.sender.setParameters(params);
      local.activeLayers = (params.encodings || []).filter((e) => e.active !== false).map((e) => e.rid);
      this._emit('layers_needed', { trackId, rids: local.activeLayers, track: local });
    }).catch((e) => this._emit('error', { code: 'dynacast', message: `could not pause layers: ${e.message || e}` }));
  }

  _setLocalId(local, id) {
    local.id = id;
    if (local.muted) this._send({ type: 'mute', track_id: id, muted: true });
    this._emit('local_track_published', { trackId: id, source: local.source, track: local });
  }

  /**
   * Publish a MediaStreamTrack under a source name (camera, microphone, screen, screen_audio).
   * @returns {Promise<LocalTrack>} resolved once the server's answer has been applied.
   */
  async publishTrack(track, { source, simulcast = false, width, height, codec, scalabilityMode, red = true } = {}) {
    if (this.state === 'closed' || (!this.publisher && this.mode !== 'p2p')) throw new OnairError('closed', 'not in a room');
    source = source || (track.kind === 'audio' ? 'microphone' : 'camera');
    if (this.localTracks.has(source)) throw new OnairError('already_published', `${source} is already published`);
    const max = this.limits.max_tracks_per_participant;
    if (max && this.localTracks.size >= max) {
      throw new OnairError('too_many_tracks', `at most ${max} tracks per participant`);
    }
    if (this.mode === 'p2p') return this._p2pPublish(track, source, { width, height, codec });
    const init = { direction: 'sendonly', streams: [this._localStream()] };
    // SVC (one stream, several spatial layers, e.g. 'L3T3_KEY' with VP9) replaces simulcast.
    const useSvc = Boolean(scalabilityMode) && track.kind === 'video';
    const useSimulcast = simulcast && track.kind === 'video' && !useSvc;
    if (useSimulcast) init.sendEncodings = SIMULCAST_LAYERS.map((l) => ({ ...l }));
    if (useSvc) init.sendEncodings = [{ scalabilityMode }];
    const transceiver = this.publisher.addTransceiver(track, init);
    if (codec) preferCodec(transceiver, track.kind, codec);
    // Opus audio goes out with RED (RFC 2198: each packet repeats the previous frame, so a lost
    // one is heard anyway) where the server takes it; Chromium sends RED only when it is listed
    // first. `red: false` turns it off.
    if (track.kind === 'audio' && red && (!codec || /^opus$/i.test(codec))) preferCodec(transceiver, 'audio', 'red');
    const local = {
      id: null,
      source,
      kind: track.kind,
      track,
      transceiver,
      sender: transceiver.sender,
      mid: null,
      muted: false,
      simulcast: useSimulcast,
      width,
      height,
    };
    this.localTracks.set(source, local);
    track.addEventListener('ended', local.onEnded = () => {
      if (this.localTracks.get(source) === local) this.unpublish(local).catch(() => {});
    });
    try {
      await this._negotiate();
    } catch (e) {
      this._dropLocal(local);
      throw e;
    }
    return local;
  }

  _localStream() {
    if (!this._stream) this._stream = new MediaStream();
    return this._stream;
  }

  _dropLocal(local) {
    if (this.localTracks.get(local.source) === local) this.localTracks.delete(local.source);
    local.track.removeEventListener('ended', local.onEnded);
    local.track.stop();
    if (!this.publisher || this.publisher.signalingState === 'closed') return;
    try {
      // The m-line stays, inactive, in later offers and out of their `tracks`. (Stopping a
      // transceiver whose offer was rolled back confuses Chrome's later offers.)
      this.publisher.removeTrack(local.sender);
    } catch { /* already removed */ }
  }

  /** Camera with simulcast (three layers, q/h/f) by default. */
  async publishCamera({ simulcast = true, width = 1280, height = 720, frameRate, deviceId, codec, scalabilityMode } = {}) {
    const video = { width: { ideal: width }, height: { ideal: height } };
    if (frameRate) video.frameRate = { ideal: frameRate };
    if (deviceId) video.deviceId = { exact: deviceId };
    const media = await navigator.mediaDevices.getUserMedia({ video });
    const track = media.getVideoTracks()[0];
    try {
      return await this.publishTrack(track, { source: 'camera', simulcast, width, height, codec, scalabilityMode });
    } catch (e) {
      track.stop();
      throw e;
    }
  }

  async publishMicrophone({ deviceId, echoCancellation = true, noiseSuppression = true, autoGainControl = true, codec, red = true } = {}) {
    const audio = { echoCancellation, noiseSuppression, autoGainControl };
    if (deviceId) audio.deviceId = { exact: deviceId };
    const media = await navigator.mediaDevices.getUserMedia({ audio });
    const track = media.getAudioTracks()[0];
    try {
      return await this.publishTrack(track, { source: 'microphone', codec, red });
    } catch (e) {
      track.stop();
      throw e;
    }
  }

  /** Screen share: a second video track with source "screen" (and "screen_audio" when the user
   * shares audio too). Stopping the share in the browser's UI unpublishes it. */
  async publishScreen({ audio = false, frameRate = 15 } = {}) {
    const media = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: frameRate } }, audio });
    const [video] = media.getVideoTracks();
    const [sound] = media.getAudioTracks();
    if ('contentHint' in video) video.contentHint = 'detail';
    let screen;
    try {
      const s = video.getSettings();
      screen = await this.publishTrack(video, { source: 'screen', width: s.width, height: s.height });
      if (sound) {
        const audioTrack = await this.publishTrack(sound, { source: 'screen_audio' });
        screen.audio = audioTrack;
        // Both go together: ending the video ends the share.
        video.addEventListener('ended', () => {
          if (this.localTracks.get('screen_audio') === audioTrack) this.unpublish(audioTrack).catch(() => {});
        });
      }
    } catch (e) {
      media.getTracks().forEach((t) => t.stop());
      throw e;
    }
    return screen;
  }

  _local(ref) {
    if (ref && typeof ref === 'object') return this.localTracks.get(ref.source) === ref ? ref : null;
    for (const local of this.localTracks.values()) {
      if (local.id === ref || local.source === ref) return local;
    }
    return null;
  }

  /** Stop publishing. `ref`: the LocalTrack, its server track id, or its source name. */
  async unpublish(ref) {
    const local = this._local(ref);
    if (!local) return;
    if (this.mode === 'p2p') {
      this._p2pUnpublish(local);
      this._emit('local_track_unpublished', { trackId: local.id, source: local.source, track: local });
      return;
    }
    if (local.id) this._send({ type: 'unpublish', track_id: local.id });
    this._dropLocal(local);
    this._emit('local_track_unpublished', { trackId: local.id, source: local.source, track: local });
    if (this.state !== 'closed') await this._negotiate();
  }

  /** Room admins (a token made with `--room-admin`): remove another member of the room. */
  removeParticipant(participantId) {
    this._send({ type: 'remove_participant', participant_id: participantId });
  }

  /** Room admins: mute (or unmute) anyone's track for the whole room; its owner is told. */
  muteTrack(trackId, muted = true) {
    this._send({ type: 'mute_track', track_id: trackId, muted: !!muted });
  }

  /** Mute or unmute a published track: it stops sending media (track.enabled = false) and the
   * room is told with `mute`. */
  setMuted(ref, muted) {
    const local = this._local(ref);
    if (!local) throw new OnairError('bad_request', `no published track ${ref}`);
    local.muted = !!muted;
    local.track.enabled = !muted;
    if (this.mode === 'p2p') this._signal(null, { tracks: this._p2pTrackList() });
    else if (local.id) this._send({ type: 'mute', track_id: local.id, muted: !!muted });
    this._emit('local_track_muted', { trackId: local.id, source: local.source, muted: !!muted, track: local });
  }

  // ---------------------------------------------------------------- subscriptions

  /** Subscribe to tracks: ids, or `{track_id, max_height}` objects. */
  subscribe(tracks) {
    if (this.mode === 'p2p') return; // every member's tracks come directly, all of them
    const list = (Array.isArray(tracks) ? tracks : [tracks]).map((t) => {
      if (typeof t === 'string') return { track_id: t };
      const entry = { track_id: t.track_id ?? t.trackId ?? t.id };
      const h = t.max_height ?? t.maxHeight;
      if (h != null) entry.max_height = h;
      return entry;
    });
    if (list.length) this._send({ type: 'subscribe', tracks: list });
  }

  unsubscribe(trackIds) {
    if (this.mode === 'p2p') return;
    const ids = Array.isArray(trackIds) ? trackIds : [trackIds];
    if (ids.length) this._send({ type: 'unsubscribe', track_ids: ids });
  }

  /** Cap the simulcast layer forwarded for a track (e.g. 180 for a small tile). */
  setMaxHeight(trackId, maxHeight) {
    this.subscribe([{ track_id: trackId, max_height: maxHeight }]);
  }

  // ---------------------------------------------------------------- data

  /** Send text on the reliable `chat` channel (queued until it opens). */
  sendChat(text) {
    text = String(text);
    this._checkSize(text);
    if (this.mode === 'p2p') {
      this._signal(null, { chat: text });
      return;
    }
    const ch = this.channels.chat;
    if (ch && ch.readyState === 'open') ch.send(text);
    else if (this.state !== 'closed') this._chatQueue.push(text);
  }

  /** Send text on the `lossy` channel; dropped (returns false) when it is not open. */
  sendLossy(text) {
    text = String(text);
    this._checkSize(text);
    if (this.mode === 'p2p') {
      this._signal(null, { lossy: text });
      return true;
    }
    const ch = this.channels.lossy;
    if (!ch || ch.readyState !== 'open') return false;
    ch.send(text);
    return true;
  }

  _checkSize(text) {
    const max = this.limits.max_data_bytes;
    if (max && new TextEncoder().encode(text).length > max) {
      throw new OnairError('data_too_large', `message over ${max} bytes`);
    }
  }

  // ---------------------------------------------------------------- ICE, leaving

  /** Restart ICE on both connections. */
  restartIce() {
    if (this.mode === 'p2p') {
      for (const peer of this._mesh.values()) peer.pc.restartIce();
      return;
    }
    this._restartIceOf('publisher', true);
    this._restartIceOf('subscriber', true);
  }

  _restartIceOf(role, force = false) {
    if (this.state === 'closed') return;
    const now = Date.now();
    if (!force && now - this._lastIceRestart[role] < ICE_RESTART_MIN_INTERVAL_MS) return;
    this._lastIceRestart[role] = now;
    if (role === 'publisher') this._negotiate(true).catch((e) => this._fail('publisher ICE restart failed', e));
    else this._send({ type: 'restart_ice' });
  }

  /** Leave the room: tell the server, stop local media, close everything. */
  leave() {
    if (this.state === 'closed') return;
    if (this._ws?.readyState === WebSocket.OPEN && this.state === 'connected') {
      this._ws.send(JSON.stringify({ type: 'leave' }));
    }
    this._close('left');
  }

  _close(reason) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearInterval(this._pingTimer);
    globalThis.removeEventListener?.('pagehide', this._onPageHide);
    if (this._joinWaiter) this._joinWaiter.reject(new OnairError('closed', reason));
    if (this._pubAnswer) this._pubAnswer.reject(new OnairError('closed', reason));
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000); } catch { /* closed */ }
    }
    for (const local of [...this.localTracks.values()]) {
      local.track.removeEventListener('ended', local.onEnded);
      local.track.stop();
    }
    this.localTracks.clear();
    this._outbox = [];
    this._chatQueue = [];
    this.publisher?.close();
    this.subscriber?.close();
    for (const id of [...this._mesh.keys()]) this._p2pDrop(id);
    this._emit('disconnected', { reason });
  }

  // ---------------------------------------------------------------- peer-to-peer rooms
  //
  // One RTCPeerConnection per other member, negotiated with "perfect negotiation" (the member
  // with the greater id is polite and yields on offer collisions) over `signal` messages. Each
  // member announces its tracks as {tracks: [{id, source, kind, muted, stream_id}]}; a received
  // track is matched to its description by its stream's id (one MediaStream per source).

  _signal(to, data) {
    this._send({ type: 'signal', to: to ?? undefined, data });
  }

  _p2pTrackList() {
    return [...this.localTracks.values()].map((l) => ({
      id: l.id, source: l.source, kind: l.kind, muted: l.muted, stream_id: l.stream.id, width: l.width, height: l.height,
    }));
  }

  _p2pPeer(id) {
    let peer = this._mesh.get(id);
    if (peer || this.state === 'closed') return peer;
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.options.iceTransportPolicy || 'all',
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    peer = {
      id, pc, polite: String(this.participantId) > String(id), makingOffer: false, ignoreOffer: false,
      senders: new Map(), media: new Map(), chain: Promise.resolve(),
    };
    this._mesh.set(id, peer);
    pc.onnegotiationneeded = async () => {
      try {
        peer.makingOffer = true;
        await pc.setLocalDescription();
        this._signal(id, { description: pc.localDescription });
      } catch (e) {
        console.warn('onair: p2p offer failed', e);
      } finally {
        peer.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) peer.candidates += 1;
      this._signal(id, { candidate: candidate ?? null });
    };
    pc.onconnectionstatechange = () => {
      this._emit('connection_state', { pc: 'p2p', participantId: id, state: pc.connectionState });
      if (pc.connectionState === 'failed') pc.restartIce();
    };
    pc.ontrack = (ev) => {
      const stream = ev.streams[0];
      if (!stream) return;
      peer.media.set(`${stream.id}/${ev.track.kind}`, { track: ev.track, receiver: ev.receiver });
      this._p2pBind(id);
    };
    for (const local of this.localTracks.values()) peer.senders.set(local.source, pc.addTrack(local.track, local.stream));
    // Stats and the connection-state UI read `publisher`/`subscriber`: the first member's.
    if (!this.publisher) this.publisher = this.subscriber = pc;
    peer.retries = 0;
    peer.candidates = 0;
    peer.watchdog = setInterval(() => this._p2pWatch(peer), P2P_WATCH_MS);
    return peer;
  }

  /** Replaces a member's connection with a new one, negotiated afresh. */
  _p2pRecreate(peer) {
    const recreated = (peer.recreated ?? 0) + 1;
    this._p2pDrop(peer.id);
    const fresh = this._p2pPeer(peer.id);
    if (!fresh) return;
    fresh.recreated = recreated;
    this._p2pBind(peer.id);
  }

  /** A connection with media to negotiate that has not started connecting: offer again. An
   * offer lost or left unanswered would otherwise leave both members waiting for good (seen
   * once in CI: both at ICE "new", one side never gathering). */
  async _p2pWatch(peer) {
    const pc = peer.pc;
    if (pc.connectionState !== 'new' || peer.retries >= 5) {
      clearInterval(peer.watchdog);
      return;
    }
    if (peer.makingOffer || pc.getTransceivers().length === 0) return;
    // Gathering that has found nothing in a watch period: this connection's ICE agent is
    // stuck (seen in Chromium in a loopback-only namespace: it never sent a TURN request, and
    // restartIce did not wake it). A new connection gathers afresh.
    if (pc.iceGatheringState === 'gathering' && peer.candidates === 0 && peer.retries >= 1 && (peer.recreated ?? 0) < 2) {
      console.warn(`onair: p2p connection with ${peer.id} has gathered no candidate; making a new connection`);
      clearInterval(peer.watchdog);
      this._p2pRecreate(peer);
      return;
    }
    peer.retries += 1;
    console.warn(`onair: p2p connection with ${peer.id} has not started (signaling ${pc.signalingState}, `
      + `ICE ${pc.iceConnectionState}, gathering ${pc.iceGatheringState}, ${this.iceServers.length} ICE servers); offering again`);
    try {
      if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
      if (pc.signalingState === 'stable') pc.restartIce(); // negotiationneeded: a fresh offer
    } catch (e) {
      console.warn('onair: p2p re-offer failed', e);
    }
  }

  _p2pDrop(id) {
    const peer = this._mesh.get(id);
    if (!peer) return;
    this._mesh.delete(id);
    clearInterval(peer.watchdog);
    peer.pc.close();
    if (this.publisher === peer.pc) {
      const next = this._mesh.values().next().value;
      this.publisher = this.subscriber = next ? next.pc : null;
    }
  }

  _onP2pSignal(from, data) {
    if (this.mode !== 'p2p' || !this.participants.has(from)) return;
    const part = this.participants.get(from);
    if (data.chat != null || data.lossy != null) {
      const channel = data.chat != null ? 'chat' : 'lossy';
      const detail = { from, name: part.name, data: data.chat ?? data.lossy, channel };
      if (channel === 'chat') this._emit('chat', detail);
      this._emit('data', detail);
    }
    if (Array.isArray(data.tracks)) this._p2pTracks(from, data.tracks);
    const peer = this._p2pPeer(from);
    if (!peer || (!data.description && data.candidate === undefined)) return;
    // One message at a time per member: descriptions and candidates must apply in order.
    peer.chain = peer.chain.then(() => this._p2pNegotiate(peer, data)).catch((e) => {
      console.warn('onair: p2p negotiation with', from, 'failed', e);
    });
  }

  async _p2pNegotiate(peer, data) {
    const pc = peer.pc;
    if (data.description) {
      const d = data.description;
      const collision = d.type === 'offer' && (peer.makingOffer || pc.signalingState !== 'stable');
      peer.ignoreOffer = !peer.polite && collision;
      if (peer.ignoreOffer) return;
      await pc.setRemoteDescription(d);
      if (d.type === 'offer') {
        await pc.setLocalDescription();
        this._signal(peer.id, { description: pc.localDescription });
      }
    } else {
      try {
        await pc.addIceCandidate(data.candidate ?? undefined);
      } catch (e) {
        if (!peer.ignoreOffer) throw e;
      }
    }
  }

  /** A member's track list: new ones published, missing ones unpublished, mute changes. */
  _p2pTracks(from, list) {
    const part = this.participants.get(from);
    const ids = new Set(list.map((t) => t.id));
    for (const tid of [...part.tracks.keys()]) {
      if (!ids.has(tid)) this._onTrackUnpublished(from, tid);
    }
    for (const t of list) {
      const have = part.tracks.get(t.id);
      if (!have) {
        this._onTrackPublished({ ...t, participant_id: from });
      } else if (have.muted !== !!t.muted) {
        this._onTrackMuted({ participant_id: from, track_id: t.id, muted: !!t.muted });
      }
    }
    this._p2pBind(from);
  }

  /** Gives described tracks their received media, when both have arrived. */
  _p2pBind(from) {
    const part = this.participants.get(from);
    const peer = this._mesh.get(from);
    if (!part || !peer) return;
    for (const track of part.tracks.values()) {
      const got = peer.media.get(`${track.stream_id}/${track.kind}`);
      if (!got || track.mediaTrack === got.track) continue;
      track.mediaTrack = got.track;
      track.receiver = got.receiver;
      track.stream = new MediaStream([got.track]);
      this._deliverTrack(track);
    }
  }

  _p2pPublish(track, source, { width, height, codec }) {
    const stream = new MediaStream([track]);
    const local = {
      id: `${this.participantId}-${source}`, source, kind: track.kind, track, stream,
      transceiver: null, sender: null, mid: null, muted: false, simulcast: false, width, height,
    };
    this.localTracks.set(source, local);
    track.addEventListener('ended', local.onEnded = () => {
      if (this.localTracks.get(source) === local) this.unpublish(local).catch(() => {});
    });
    for (const peer of this._mesh.values()) {
      const sender = peer.pc.addTrack(track, stream);
      peer.senders.set(source, sender);
      if (codec) {
        const tr = peer.pc.getTransceivers().find((x) => x.sender === sender);
        if (tr) preferCodec(tr, track.kind, codec);
      }
    }
    this._signal(null, { tracks: this._p2pTrackList() });
    return local;
  }

  _p2pUnpublish(local) {
    if (this.localTracks.get(local.source) === local) this.localTracks.delete(local.source);
    local.track.removeEventListener('ended', local.onEnded);
    local.track.stop();
    for (const peer of this._mesh.values()) {
      const sender = peer.senders.get(local.source);
      peer.senders.delete(local.source);
      if (sender && peer.pc.signalingState !== 'closed') {
        try { peer.pc.removeTrack(sender); } catch { /* gone */ }
      }
    }
    this._signal(null, { tracks: this._p2pTrackList() });
  }

  // ---------------------------------------------------------------- stats

  /**
   * Per-track and per-connection figures from two getStats() snapshots: the previous call's and
   * this one's (the first call takes two, `interval` ms apart). See docs/sdk.md for the fields.
   */
  stats({ interval = 1000 } = {}) {
    return sampleStats(this._stats, () => this._snapshot(), (prev, cur) => this._computeStats(prev, cur), interval);
  }

  async _snapshot() {
    const get = async (pc) => (pc && pc.signalingState !== 'closed' ? await pc.getStats() : null);
    const [publisher, subscriber] = await Promise.all([get(this.publisher), get(this.subscriber)]);
    return { time: performance.now(), publisher, subscriber };
  }

  _computeStats(prev, cur) {
    const out = {
      timestamp: Date.now(),
      interval_ms: Math.round(cur.time - prev.time),
      connections: {
        publisher: connectionStats(this.publisher, cur.publisher, prev.publisher),
        subscriber: connectionStats(this.subscriber, cur.subscriber, prev.subscriber),
      },
      tracks: [],
    };
    // Incoming: one inbound-rtp per received m-line.
    if (cur.subscriber) {
      const byMediaTrack = new Map();
      for (const t of this.tracks.values()) if (t.mediaTrack) byMediaTrack.set(t.mediaTrack.id, t);
      for (const s of cur.subscriber.values()) {
        if (s.type !== 'inbound-rtp') continue;
        const info = byMediaTrack.get(s.trackIdentifier) || (s.mid != null ? this.tracks.get(this._midTrack.get(s.mid)) : null);
        out.tracks.push({
          direction: 'in',
          track_id: info?.id ?? null,
          participant_id: info?.participant_id ?? null,
          source: info?.source ?? null,
          ...inboundStats(cur.subscriber, prev.subscriber, s, out.connections.subscriber?.rtt_ms),
          mid: s.mid ?? info?.mid ?? null,
        });
      }
    }
    // Outgoing: one outbound-rtp per layer; a simulcast track is the sum of its layers.
    if (cur.publisher) {
      for (const layers of outboundGroups(cur.publisher).values()) {
        const first = layers[0];
        const local = [...this.localTracks.values()].find((l) => (first.mid != null && l.transceiver?.mid === first.mid)
          || cur.publisher.get(first.mediaSourceId)?.trackIdentifier === l.track.id);
        if (!local) continue; // an unpublished track's sender lingers in the stats
        const { layers: detail, ...sent } = outboundStats(cur.publisher, prev.publisher, layers, out.connections.publisher?.rtt_ms);
        out.tracks.push({
          direction: 'out',
          track_id: local?.id ?? null,
          participant_id: this.participantId,
          source: local?.source ?? null,
          ...sent,
          mid: first.mid ?? local?.mid ?? null,
          muted: local?.muted ?? null,
          layers: detail,
        });
      }
    }
    return out;
  }
}

// ---------------------------------------------------------------- WHIP / WHEP

const HTTP_TIMEOUT_MS = 15_000;
const DELETE_TIMEOUT_MS = 5_000;
/** How often a peer-to-peer connection that has not started is looked at again. */
const P2P_WATCH_MS = 4000;
const GATHER_TIMEOUT_MS = 3_000;
const STALL_TIMEOUT_MS = 5_000;
const FIRST_MEDIA_TIMEOUT_MS = 15_000;

/**
 * One WHIP (RFC 9725) or WHEP session: an RTCPeerConnection negotiated with one HTTP POST of the
 * SDP offer; the answer's `Location` is the session's resource, PATCHed with trickle candidates
 * (and for ICE restarts) and DELETEd to end it. Made by `whipPublish()` / `whepPlay()`.
 * Events (`on(type, fn)` like Room): `state` {state}, `ended` {reason}, `track` {track, stream}
 * (WHEP only), `error` {message}.
 */
export class StreamSession extends Emitter {
  constructor(kind, url, opts) {
    super();
    /** 'whip' | 'whep' */
    this.kind = kind;
    this.url = new URL(url, globalThis.location?.href).href;
    this.options = opts;
    /** 'new' | 'connecting' | 'connected' | 'disconnected' | 'ended' */
    this.state = 'new';
    /** Why the session ended: 'stopped', 'closed', 'failed', 'no_media'. */
    this.endReason = null;
    /** The session's resource URL (absolute), from the POST answer's Location. */
    this.resource = null;
    this.etag = null;
    /** ICE servers in use: the caller's, or those of the answer's Link rel="ice-server" headers. */
    this.iceServers = opts.iceServers || [];
    /** false once the server said it does not take trickle PATCHes (405/501), or with `trickle: false`. */
    this.trickle = opts.trickle !== false;
    /** true once the server answered a PATCH with 405/501: no trickle, no ICE restart. */
    this.patchUnsupported = false;
    this.pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this._ufrag = null;
    this._pwd = null;
    this._candidates = [];
    this._endOfCandidates = false;
    this._flushTimer = null;
    this._patchChain = Promise.resolve();
    this._restarting = false;
    this._lastRestart = 0;
    this._timers = [];
    this._stats = { snap: null, result: null, at: 0 };
    this._onPageHide = () => {
      if (this.resource && this.state !== 'ended') {
        fetch(this.resource, { method: 'DELETE', headers: this._headers(), keepalive: true }).catch(() => {});
      }
    };
  }


  _setState(state) {
    if (this.state === state || this.state === 'ended') return;
    this.state = state;
    this._emit('state', { state });
  }

  _headers(extra = {}) {
    const h = { ...extra };
    if (this.options.token) h.Authorization = `Bearer ${this.options.token}`;
    return h;
  }

  /** fetch with a timeout; network failures become OnairError('connect_failed'). */
  async _request(method, url, headers, body, timeoutMs = HTTP_TIMEOUT_MS) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    try {
      return await fetch(url, { method, headers: this._headers(headers), body, signal: ctl.signal });
    } catch (e) {
      const err = new OnairError(e.name === 'AbortError' ? 'http_timeout' : 'connect_failed',
        `${method} ${url}: ${e.name === 'AbortError' ? `no answer within ${timeoutMs} ms` : e.message}`);
      err.status = 0;
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  // ---------------------------------------------------------------- negotiation

  /** POST the offer, apply the answer. With trickle (the default) the offer goes out at once,
   * before gathering, and candidates follow in PATCHes; like the whip-whep reference clients the
   * local description is set only after the answer came, so ICE servers from its Link headers
   * (applied with setConfiguration) are used for gathering. Without trickle the offer waits for
   * gathering to complete (at most `gatherTimeout` ms) and carries the candidates itself. */
  async _start() {
    const pc = this.pc;
    this._setState('connecting');
    pc.onicecandidate = (ev) => this._onCandidate(ev.candidate);
    pc.onconnectionstatechange = () => this._onConnectionState();
    const offer = await pc.createOffer();
    let body = offer.sdp;
    if (!this.trickle) {
      await pc.setLocalDescription(offer);
      await gatheringComplete(pc, this.options.gatherTimeout ?? GATHER_TIMEOUT_MS);
      body = pc.localDescription.sdp;
    }
    const res = await this._request('POST', this.url, { 'Content-Type': 'application/sdp' }, body);
    if (!res.ok) throw await httpError('POST', this.url, res);
    const location = res.headers.get('location');
    if (!location) throw new OnairError('bad_answer', `POST ${this.url}: ${res.status} without a Location header`);
    this.resource = new URL(location, res.url || this.url).href;
    this.etag = res.headers.get('etag');
    const servers = parseIceServerLinks(res.headers.get('link'));
    if (servers.length && !this.options.iceServers?.length) {
      this.iceServers = servers;
      try {
        pc.setConfiguration({ ...pc.getConfiguration(), iceServers: servers });
      } catch (e) {
        console.warn('onair: the ICE servers of the Link headers were refused', e);
      }
    }
    const answer = await res.text();
    if (this.state === 'ended') return; // stopped while the POST was out
    this._ufrag = iceAttr(offer.sdp, 'ufrag');
    this._pwd = iceAttr(offer.sdp, 'pwd');
    if (pc.signalingState === 'stable') await pc.setLocalDescription(offer);
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    this._watchDtls();
    globalThis.addEventListener?.('pagehide', this._onPageHide);
    this._scheduleFlush();
  }

  _onCandidate(c) {
    if (!this.trickle || this.state === 'ended') return;
    // An empty candidate string ends one generation; the null event after it ends all.
    if (c && !c.candidate) return;
    // A generation that is not ours (one whose ICE restart was rolled back).
    if (c?.usernameFragment && this._ufrag && c.usernameFragment !== this._ufrag) return;
    if (c) this._candidates.push(c);
    else this._endOfCandidates = true;
    this._scheduleFlush();
  }

  _scheduleFlush() {
    if (this._flushTimer || !this.trickle) return;
    this._flushTimer = setTimeout(() => {
      this._flushTimer = null;
      this._patchChain = this._patchChain.then(() => this._flush()).catch((e) => {
        console.warn('onair: trickle PATCH failed', e);
      });
    }, 0);
  }

  /** Send the candidates gathered so far in one PATCH (application/trickle-ice-sdpfrag). */
  async _flush() {
    if (!this.resource || this._restarting || !this.trickle || this.patchUnsupported || this.state === 'ended') return;
    if (!this._candidates.length && !this._endOfCandidates) return;
    const candidates = this._candidates.splice(0);
    const end = this._endOfCandidates;
    this._endOfCandidates = false;
    const headers = { 'Content-Type': 'application/trickle-ice-sdpfrag' };
    if (this.etag) headers['If-Match'] = this.etag;
    const res = await this._request('PATCH', this.resource, headers, this._fragment(candidates, end));
    if (res.status === 405 || res.status === 501) {
      // The server takes no trickle: its connectivity checks learn our address (peer reflexive).
      this.patchUnsupported = true;
      this._candidates = [];
      return;
    }
    if (!res.ok) {
      const e = await httpError('PATCH', this.resource, res);
      console.warn('onair:', e.message);
      return;
    }
    this.etag = res.headers.get('etag') || this.etag;
  }

  /** An SDP fragment (RFC 8840) with our ICE credentials and, per m-line, its candidates. */
  _fragment(candidates, end) {
    let frag = `a=ice-ufrag:${this._ufrag}\r\na=ice-pwd:${this._pwd}\r\n`;
    const byMid = new Map();
    for (const c of candidates) {
      const mid = c.sdpMid ?? this.pc.getTransceivers()[c.sdpMLineIndex ?? 0]?.mid ?? '0';
      if (!byMid.has(mid)) byMid.set(mid, []);
      byMid.get(mid).push(c);
    }
    // BUNDLE: end-of-candidates (or a restart) needs the first m-line even without candidates.
    const firstMid = this.pc.getTransceivers().find((t) => t.mid != null)?.mid;
    if ((end || !candidates.length) && firstMid != null && !byMid.has(firstMid)) byMid.set(firstMid, []);
    for (const [mid, list] of byMid) {
      frag += `${mLineOf(this.pc.localDescription?.sdp, mid)}\r\na=mid:${mid}\r\n`;
      for (const c of list) frag += `a=${c.candidate}\r\n`;
      if (end) frag += 'a=end-of-candidates\r\n';
    }
    return frag;
  }

  /** ICE restart over PATCH (If-Match: *). Throws when the server cannot restart. */
  async restartIce() {
    if (this.state === 'ended') throw new OnairError('closed', 'session ended');
    if (this._restarting) return;
    this._restarting = true;
    this._lastRestart = Date.now();
    const pc = this.pc;
    const before = { ufrag: this._ufrag, pwd: this._pwd };
    const rollback = async () => {
      if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      this._ufrag = before.ufrag;
      this._pwd = before.pwd;
      this._candidates = [];
      this._endOfCandidates = false;
    };
    try {
      await this._patchChain.catch(() => {});
      const offer = await pc.createOffer({ iceRestart: true });
      this._ufrag = iceAttr(offer.sdp, 'ufrag');
      this._pwd = iceAttr(offer.sdp, 'pwd');
      this._candidates = []; // the old generation's
      this._endOfCandidates = false;
      await pc.setLocalDescription(offer);
      let res;
      try {
        res = await this._request('PATCH', this.resource,
          { 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': '*' }, this._fragment([], false));
      } catch (e) {
        await rollback();
        throw e;
      }
      if (res.status !== 200) {
        await rollback();
        if (res.status === 405 || res.status === 501) this.patchUnsupported = true;
        throw await httpError('PATCH', this.resource, res);
      }
      this.etag = res.headers.get('etag') || this.etag;
      const frag = await res.text();
      let sdp = pc.remoteDescription.sdp;
      const ufrag = iceAttr(frag, 'ufrag');
      const pwd = iceAttr(frag, 'pwd');
      if (ufrag) sdp = sdp.replace(/^a=ice-ufrag:.*$/gm, `a=ice-ufrag:${ufrag}`);
      if (pwd) sdp = sdp.replace(/^a=ice-pwd:.*$/gm, `a=ice-pwd:${pwd}`);
      await pc.setRemoteDescription({ type: 'answer', sdp });
      let mid = pc.getTransceivers().find((t) => t.mid != null)?.mid ?? '0';
      for (const line of frag.split(/\r?\n/)) {
        if (line.startsWith('a=mid:')) mid = line.slice(6).trim();
        if (line.startsWith('a=candidate:')) {
          await pc.addIceCandidate({ candidate: line.slice(2).trim(), sdpMid: mid }).catch(() => {});
        }
      }
    } finally {
      this._restarting = false;
    }
    this._scheduleFlush();
  }

  _onConnectionState() {
    const s = this.pc.connectionState;
    if (s === 'connected') this._setState('connected');
    else if (s === 'disconnected') this._setState('disconnected');
    else if (s === 'failed') {
      this._setState('disconnected');
      if (Date.now() - this._lastRestart < ICE_RESTART_MIN_INTERVAL_MS || this.patchUnsupported) {
        this._end('failed');
        return;
      }
      this.restartIce().catch((e) => {
        this._emit('error', { message: `ICE restart failed: ${e.message}` });
        this._end('failed');
      });
    }
  }

  /** The server closing DTLS (close_notify) ends the session. */
  _watchDtls() {
    const transport = this.pc.getTransceivers().find((t) => t.mid != null)?.receiver?.transport;
    if (!transport) return;
    transport.addEventListener('statechange', () => {
      if (transport.state === 'closed') this._end('closed');
      else if (transport.state === 'failed') this._end('failed');
    });
  }

  _every(ms, fn) {
    const t = setInterval(fn, ms);
    this._timers.push(t);
  }

  /** Close everything; DELETE the resource unless `deleteResource` is false. Returns the
   * DELETE's promise (resolved either way), or null when the session had ended already. */
  _end(reason, deleteResource = true) {
    if (this.state === 'ended') return null;
    this.state = 'ended';
    this.endReason = reason;
    clearTimeout(this._flushTimer);
    for (const t of this._timers) clearInterval(t);
    this._timers = [];
    globalThis.removeEventListener?.('pagehide', this._onPageHide);
    try { this.pc.close(); } catch { /* closed */ }
    this._releaseMedia();
    const resource = this.resource;
    const done = deleteResource && resource
      ? this._request('DELETE', resource, {}, undefined, DELETE_TIMEOUT_MS).then(() => {}, () => {})
      : Promise.resolve();
    this._emit('state', { state: 'ended' });
    this._emit('ended', { reason });
    return done;
  }

  _releaseMedia() {}

  /** End the session: DELETE the resource, close the connection (and, for a WHIP session, stop the
   * camera and microphone if the SDK opened them). Resolves once the server answered the DELETE
   * (or after 5 s). */
  async stop() {
    await this._end('stopped');
  }

  /** Figures of the connection and of every sent (WHIP) or received (WHEP) stream, from two
   * getStats() snapshots like `Room.stats()`. See docs/sdk.md. */
  stats({ interval = 1000 } = {}) {
    return sampleStats(this._stats, async () => ({
      time: performance.now(),
      report: this.pc.signalingState !== 'closed' ? await this.pc.getStats() : null,
    }), (prev, cur) => {
      const connection = connectionStats(this.pc, cur.report, prev.report);
      const out = { timestamp: Date.now(), interval_ms: Math.round(cur.time - prev.time), connection, tracks: [] };
      if (!cur.report) return out;
      for (const s of cur.report.values()) {
        if (s.type === 'inbound-rtp') {
          out.tracks.push({ direction: 'in', ...inboundStats(cur.report, prev.report, s, connection?.rtt_ms) });
        }
      }
      for (const layers of outboundGroups(cur.report).values()) {
        out.tracks.push({ direction: 'out', ...outboundStats(cur.report, prev.report, layers, connection?.rtt_ms) });
      }
      return out;
    }, interval);
  }
}

/** A WHIP publishing session: `{pc, stream, resource, stop()}` and the rest of StreamSession. */
export class WhipSession extends StreamSession {
  constructor(url, stream, opts, ownsTracks) {
    super('whip', url, opts);
    /** The published MediaStream. */
    this.stream = stream;
    this._ownsTracks = opts.stopTracks ?? ownsTracks;
    for (const track of stream.getTracks()) {
      const init = { direction: 'sendonly', streams: [stream] };
      if (track.kind === 'video' && opts.simulcast) init.sendEncodings = SIMULCAST_LAYERS.map((l) => ({ ...l }));
      const transceiver = this.pc.addTransceiver(track, init);
      const codec = track.kind === 'video' ? opts.codec : opts.audioCodec;
      // Only the chosen codec is offered: onair answers a VP8-first offer with H.264 when it
      // packages streams for LL-HLS, and an explicit choice must not be overridden.
      if (codec) preferCodec(transceiver, track.kind, codec, true);
      // Opus with RED, as a room member's microphone (Chromium sends RED only when it is listed
      // first): WHEP viewers and the hub get the redundancy. `red: false` turns it off.
      else if (track.kind === 'audio' && opts.red !== false) preferCodec(transceiver, 'audio', 'red');
    }
  }

  _releaseMedia() {
    if (this._ownsTracks) for (const t of this.stream.getTracks()) t.stop();
  }
}

/** A WHEP playback session: `{pc, mediaStream, resource, stop()}` and the rest of StreamSession. */
export class WhepSession extends StreamSession {
  constructor(url, mediaStream, opts) {
    super('whep', url, opts);
    /** The received tracks, ready for a <video>'s srcObject. */
    this.mediaStream = mediaStream || new MediaStream();
    /** performance.now() when media first arrived, and last grew. */
    this.mediaAt = null;
    this._lastBytes = 0;
    this._lastProgress = 0;
    if (opts.video !== false) {
      const t = this.pc.addTransceiver('video', { direction: 'recvonly' });
      if (opts.codec) preferCodec(t, 'video', opts.codec);
    }
    if (opts.audio !== false) {
      const t = this.pc.addTransceiver('audio', { direction: 'recvonly' });
      if (opts.audioCodec) preferCodec(t, 'audio', opts.audioCodec);
    }
    this.pc.ontrack = (ev) => this._addTrack(ev.track);
  }

  _addTrack(track) {
    if (this.mediaStream.getTracks().includes(track)) return;
    this.mediaStream.addTrack(track);
    this._emit('track', { track, stream: this.mediaStream });
  }

  async _start() {
    await super._start();
    if (this.state === 'ended') return;
    // m-lines the server answered inactive (a stream without audio, say) carry no track.
    for (const t of this.pc.getTransceivers()) {
      if (t.currentDirection === 'recvonly' || t.currentDirection === 'sendrecv') this._addTrack(t.receiver.track);
    }
    this._watchMedia();
  }

  /** A stream that stops (its publisher went away) ends the session with 'no_media': nothing
   * received for `stallTimeout` ms (default 5000; 0 turns it off), or nothing at all within 15 s. */
  _watchMedia() {
    const stall = this.options.stallTimeout ?? STALL_TIMEOUT_MS;
    if (!stall) return;
    const started = performance.now();
    this._every(1000, async () => {
      if (this.state === 'ended' || this.pc.signalingState === 'closed') return;
      let bytes = 0;
      try {
        for (const s of (await this.pc.getStats()).values()) if (s.type === 'inbound-rtp') bytes += s.bytesReceived ?? 0;
      } catch {
        return;
      }
      const now = performance.now();
      if (bytes > this._lastBytes) {
        this._lastBytes = bytes;
        this._lastProgress = now;
        if (this.mediaAt == null) this.mediaAt = now;
      } else if (this.mediaAt != null ? now - this._lastProgress > stall : now - started > Math.max(stall, FIRST_MEDIA_TIMEOUT_MS)) {
        this._end('no_media');
      }
    });
  }
}

/**
 * Publish a MediaStream over WHIP. `url`: the WHIP endpoint, e.g. `/whip/live/show`. `stream`:
 * the MediaStream to send; omitted (or null), the camera and microphone are opened. Resolves once
 * the server's answer is applied (media follows when ICE and DTLS are up: watch `state`).
 * Rejects with an OnairError whose message holds the HTTP status and the server's text.
 */
export async function whipPublish(url, stream, opts = {}) {
  if (stream && !(stream instanceof MediaStream)) {
    opts = stream;
    stream = null;
  }
  let captured = false;
  if (!stream) {
    const video = opts.video ?? { width: { ideal: 1280 }, height: { ideal: 720 } };
    const audio = opts.audio ?? true;
    stream = await navigator.mediaDevices.getUserMedia({ video, audio });
    captured = true;
  }
  const session = new WhipSession(url, stream, opts, captured);
  try {
    await session._start();
  } catch (e) {
    session._end('failed', !!session.resource);
    throw e;
  }
  return session;
}

/**
 * Play a stream over WHEP. `url`: the WHEP endpoint, e.g. `/whep/live/show`. `stream`: an
 * optional MediaStream the received tracks are added to (by default a new one). Resolves once the
 * server's answer is applied; `session.mediaStream` then holds the tracks. Rejects with an
 * OnairError (`status` 404: the stream is not live).
 */
export async function whepPlay(url, stream, opts = {}) {
  if (stream && !(stream instanceof MediaStream)) {
    opts = stream;
    stream = null;
  }
  const session = new WhepSession(url, stream || null, opts);
  try {
    await session._start();
  } catch (e) {
    session._end('failed', !!session.resource);
    throw e;
  }
  return session;
}

async function httpError(method, url, res) {
  let text = '';
  try {
    text = (await res.text()).trim();
  } catch { /* no body */ }
  const err = new OnairError('http_error',
    `${method} ${url}: ${res.status}${res.statusText ? ` ${res.statusText}` : ''}${text ? `: ${text.slice(0, 500)}` : ''}`);
  err.status = res.status;
  err.body = text;
  return err;
}

/** RTCIceServer list from `Link: <stun:host>; rel="ice-server"; username="u"; credential="p"`. */
function parseIceServerLinks(header) {
  if (!header) return [];
  const servers = [];
  for (const link of header.split(/,\s*(?=<)/)) {
    const m = /^\s*<([^>]*)>(.*)$/.exec(link);
    if (!m) continue;
    const params = {};
    for (const part of m[2].split(';')) {
      const eq = part.indexOf('=');
      if (eq < 0) continue;
      params[part.slice(0, eq).trim().toLowerCase()] = part.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
    }
    if (!(params.rel || '').split(/\s+/).includes('ice-server')) continue;
    const server = { urls: m[1].trim() };
    if (params.username != null) server.username = params.username;
    if (params.credential != null) server.credential = params.credential;
    servers.push(server);
  }
  return servers;
}

function iceAttr(sdp, name) {
  return new RegExp(`^a=ice-${name}:(.*)$`, 'm').exec(sdp || '')?.[1]?.trim() ?? null;
}

/** The m= line of the m-section with `a=mid:mid`, its port set to 9 (as in a trickle fragment). */
function mLineOf(sdp, mid) {
  const midLine = `a=mid:${mid}`;
  for (const section of (sdp || '').split(/\r?\n(?=m=)/)) {
    if (!section.startsWith('m=')) continue;
    if (section.split(/\r?\n/).some((l) => l.trim() === midLine)) {
      return section.split(/\r?\n/)[0].replace(/^(m=\S+ )\d+/, (_, head) => `${head}9`);
    }
  }
  return 'm=audio 9 UDP/TLS/RTP/SAVPF 0';
}

function gatheringComplete(pc, timeoutMs) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

// ---------------------------------------------------------------- stats helpers (Room and sessions)

/** Two getStats() snapshots, the previous call's and this one's (the first call, or one more than
 * 30 s after the last, takes two `interval` ms apart); calls within 250 ms share one result.
 * `cache` is the caller's `{snap, result, at}`. */
async function sampleStats(cache, snapshot, compute, interval) {
  const now = performance.now();
  if (cache.result && now - cache.at < 250) return cache.result;
  let prev = cache.snap;
  if (!prev || now - prev.time > 30_000) {
    prev = await snapshot();
    await sleep(interval);
  }
  const cur = await snapshot();
  const result = compute(prev, cur);
  Object.assign(cache, { snap: cur, result, at: performance.now() });
  return result;
}

/** Figures of one inbound-rtp entry `s` of `report`, against the same entry in `prevReport`. */
function inboundStats(report, prevReport, s, rttMs) {
  const p = prevReport?.get(s.id);
  const dt = p ? (s.timestamp - p.timestamp) / 1000 : 0;
  const lost = delta(s, p, 'packetsLost');
  const got = delta(s, p, 'packetsReceived');
  return {
    kind: s.kind,
    mid: s.mid ?? null,
    codec: codecOf(report, s),
    bitrate_kbps: rate(delta(s, p, 'bytesReceived'), dt),
    packets_received: s.packetsReceived ?? 0,
    packets_lost: s.packetsLost ?? 0,
    loss_pct: pct(lost, lost + got),
    jitter_ms: s.jitter != null ? round(s.jitter * 1000) : null,
    rtt_ms: rttMs ?? null,
    frames_decoded: s.framesDecoded ?? null,
    frames_dropped: s.framesDropped ?? null,
    fps: s.framesPerSecond ?? (dt > 0 && s.framesDecoded != null ? round(delta(s, p, 'framesDecoded') / dt) : null),
    width: s.frameWidth ?? null,
    height: s.frameHeight ?? null,
    freeze_count: s.freezeCount ?? null,
    nack_count: s.nackCount ?? null,
    pli_count: s.pliCount ?? null,
    audio_level: s.audioLevel ?? null,
    total_audio_energy: s.totalAudioEnergy ?? null,
  };
}

/** The outbound-rtp entries of `report` grouped by sender (m-line): one per simulcast layer. */
function outboundGroups(report) {
  const groups = new Map();
  for (const s of report.values()) {
    if (s.type !== 'outbound-rtp') continue;
    const key = s.mid ?? s.mediaSourceId ?? s.id;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(s);
  }
  return groups;
}

/** Figures of one sender from its outbound-rtp `layers`; `layers` in the result only for simulcast. */
function outboundStats(report, prevReport, layers, connRttMs) {
  const remoteInbound = new Map();
  for (const s of report.values()) if (s.type === 'remote-inbound-rtp') remoteInbound.set(s.localId, s);
  const first = layers[0];
  let bytes = 0, dt = 0, lost = 0, sent = 0, rtt = null, jitter = null;
  const detail = [];
  for (const s of layers) {
    const p = prevReport?.get(s.id);
    const ldt = p ? (s.timestamp - p.timestamp) / 1000 : 0;
    dt = Math.max(dt, ldt);
    const b = delta(s, p, 'bytesSent');
    bytes += b;
    sent += delta(s, p, 'packetsSent');
    const ri = remoteInbound.get(s.id);
    const pri = ri && prevReport?.get(ri.id);
    if (ri) {
      lost += delta(ri, pri, 'packetsLost');
      if (ri.roundTripTime != null) rtt = Math.max(rtt ?? 0, ri.roundTripTime * 1000);
      if (ri.jitter != null) jitter = Math.max(jitter ?? 0, ri.jitter * 1000);
    }
    detail.push({
      rid: s.rid ?? null,
      active: s.active ?? null,
      bitrate_kbps: rate(b, ldt),
      width: s.frameWidth ?? null,
      height: s.frameHeight ?? null,
      fps: s.framesPerSecond ?? null,
      quality_limitation: s.qualityLimitationReason ?? null,
      key_frames: s.keyFramesEncoded ?? null,
      pli_count: s.pliCount ?? null,
      nack_count: s.nackCount ?? null,
    });
  }
  detail.sort((a, b) => (a.height ?? 0) - (b.height ?? 0));
  const top = detail.filter((l) => l.height).pop() || detail[detail.length - 1];
  return {
    kind: first.kind,
    mid: first.mid ?? null,
    codec: codecOf(report, first),
    bitrate_kbps: rate(bytes, dt),
    packets_sent: layers.reduce((n, s) => n + (s.packetsSent ?? 0), 0),
    loss_pct: pct(lost, sent),
    jitter_ms: jitter != null ? round(jitter) : null,
    rtt_ms: rtt != null ? round(rtt) : connRttMs ?? null,
    fps: top?.fps ?? null,
    width: top?.width ?? null,
    height: top?.height ?? null,
    layers: layers.length > 1 ? detail : undefined,
  };
}

function delta(s, p, key) {
  if (!s || s[key] == null) return 0;
  return Math.max(0, s[key] - (p?.[key] ?? s[key]));
}

function rate(bytes, seconds) {
  return seconds > 0 ? round((bytes * 8) / seconds / 1000) : null;
}

function pct(part, whole) {
  return whole > 0 ? round((part / whole) * 100, 2) : 0;
}

function round(x, digits = 1) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function codecOf(report, s) {
  const c = s.codecId && report.get(s.codecId);
  return c ? c.mimeType.replace(/^(audio|video)\//, '') : null;
}

function connectionStats(pc, cur, prev) {
  if (!pc || !cur) return null;
  let pair = null;
  for (const s of cur.values()) {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = cur.get(s.selectedCandidatePairId) || pair;
  }
  if (!pair) {
    for (const s of cur.values()) {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    }
  }
  const local = pair && cur.get(pair.localCandidateId);
  const remote = pair && cur.get(pair.remoteCandidateId);
  const p = pair && prev?.get(pair.id);
  const dt = p ? (pair.timestamp - p.timestamp) / 1000 : 0;
  return {
    state: pc.connectionState,
    ice_state: pc.iceConnectionState,
    rtt_ms: pair?.currentRoundTripTime != null ? round(pair.currentRoundTripTime * 1000) : null,
    bitrate_in_kbps: pair ? rate(delta(pair, p, 'bytesReceived'), dt) : null,
    bitrate_out_kbps: pair ? rate(delta(pair, p, 'bytesSent'), dt) : null,
    available_outgoing_kbps: pair?.availableOutgoingBitrate != null ? round(pair.availableOutgoingBitrate / 1000) : null,
    local_candidate_type: local?.candidateType ?? null,
    remote_candidate_type: remote?.candidateType ?? null,
    protocol: local?.protocol ?? remote?.protocol ?? null,
    relay_protocol: local?.relayProtocol ?? null,
    local_address: local ? `${local.address ?? local.ip}:${local.port}` : null,
    remote_address: remote ? `${remote.address ?? remote.ip}:${remote.port}` : null,
  };
}

/** Puts `codec` ('vp8', 'vp9', 'h264', 'av1', 'opus' …) first in the transceiver's preferences,
 * keeping the rest (and RTX/RED/FEC) behind it, so the browser sends it if the server accepts.
 * With `only`, the other media codecs are left out: the choice then stands even where the
 * server would rather have another (a WHIP server preferring H.264 for LL-HLS, for one). */
function preferCodec(transceiver, kind, codec, only = false) {
  const caps = globalThis.RTCRtpReceiver?.getCapabilities?.(kind);
  if (!caps || !transceiver.setCodecPreferences) return;
  const want = `${kind}/${codec}`.toLowerCase();
  const first = caps.codecs.filter((c) => c.mimeType.toLowerCase() === want);
  if (!first.length) return;
  const helper = (c) => /\/(rtx|red|ulpfec|flexfec-03)$/i.test(c.mimeType);
  const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== want && (!only || helper(c)));
  transceiver.setCodecPreferences([...first, ...rest]);
}
