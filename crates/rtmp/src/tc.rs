//! RTWebSocket's "TC" media mapping, server side, for players: RTMP messages (RFC 7425 §5.1
//! semantics) over RTWebSocket flows, so that existing RTWebSocket players can play onair's
//! streams. Sans-IO like the rest: WebSocket messages in and out, hub tracks and frames in.
//!
//! The session shape: the client opens flow 0 (`TC`, stream 0) and sends `connect`; we answer
//! on a control flow of ours associated with it. `createStream` gets a stream ID; the client
//! opens a flow for that stream and sends `play NAME` on it, which becomes
//! [`TcEvent::Play`]. Once the server has found the stream it calls [`TcSession::play_started`]:
//! we open data, audio and video flows associated with the client's stream flow, send
//! stream-begin and `NetStream.Play.Start`, then a flow synchronization on all three (so a
//! player starts them together), and the server hands in tracks and frames.
//!
//! Publishing: `publish NAME` on a stream flow becomes [`TcEvent::Publish`]; once the server
//! calls [`TcSession::publish_started`], the audio and video messages the client sends on that
//! stream's flows go through the RTMP ingest (FLV tags, Enhanced RTMP) and come out as
//! [`TcEvent::Media`], for the hub.
//!
//! What keeps it low-latency (the policy of the mapping's reference server): video at priority
//! 4, audio, data and control at 5; a video frame must start within 2.0 s and audio within
//! 2.2 s of being queued, and finish 0.1 s after that, or it is abandoned; the frames after an
//! abandoned video frame go with it until the next keyframe, and a keyframe expires what is
//! left of the GOP before it. A player may change these with query parameters on the stream
//! name: `videoLifetime`, `audioLifetime`, `finishByMargin` (seconds) and `expirePreviousGop`
//! (`0` or `1`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hub::{Frame, MediaKind, TrackInfo};
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rtws::{Connection, Event as RtwsEvent, SendOptions};

use crate::amf0::Command;
use crate::flv_out;

/// The metadata every TC flow carries: `TC`, flags, stream ID.
const TC: [u8; 2] = *b"TC";
/// Flag: the stream ID is present (always).
const FLAG_STREAM_ID: u8 = 0x04;

/// RTMP message types.
const USER_CONTROL: u8 = 4;
const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const AMF0_DATA: u8 = 18;
const AMF0_COMMAND: u8 = 20;
const AMF3_COMMAND: u8 = 17;

/// User control event: flow synchronization (RFC 7425 §5.2).
const FLOW_SYNC: u16 = 34;

const VIDEO_PRIORITY: u8 = 4;
const AUDIO_PRIORITY: u8 = 5;

/// What went wrong with a TC connection; it should close with this as the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TcError {
    /// The RTWebSocket layer refused the peer.
    #[error(transparent)]
    Protocol(#[from] rtws::ProtocolError),
    /// A flow whose metadata is not TC.
    #[error("flow {0}: not a TC flow")]
    NotTc(u64),
    /// A message shorter than its 5-byte header.
    #[error("flow {0}: a TC message shorter than its header")]
    ShortMessage(u64),
    /// A command that does not decode.
    #[error("bad command: {0}")]
    BadCommand(String),
    /// A publisher's audio or video that does not parse (an FLV tag body, a codec
    /// configuration, NAL unit lengths).
    #[error("bad media: {0}")]
    BadMedia(String),
}

/// Lifetimes of queued media (the mapping's defaults; tunable per play).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// A video frame must start going within this of being queued.
    pub video_lifetime: Duration,
    /// An audio frame must start going within this.
    pub audio_lifetime: Duration,
    /// And be fully sent this much after its start deadline.
    pub finish_margin: Duration,
    /// A keyframe abandons what is still queued of the GOP before it.
    pub expire_previous_gop: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            video_lifetime: Duration::from_millis(2000),
            audio_lifetime: Duration::from_millis(2200),
            finish_margin: Duration::from_millis(100),
            expire_previous_gop: true,
        }
    }
}

impl Tuning {
    /// The stream name without its query, and the tuning its query asks for.
    pub fn from_name(name: &str) -> (&str, Tuning) {
        let mut t = Tuning::default();
        let Some((base, query)) = name.split_once('?') else {
            return (name, t);
        };
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let secs = v
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && (0.0..=60.0).contains(s))
                .map(Duration::from_secs_f64);
            match (k, secs) {
                ("videoLifetime", Some(d)) => t.video_lifetime = d,
                ("audioLifetime", Some(d)) => t.audio_lifetime = d,
                ("finishByMargin", Some(d)) => t.finish_margin = d,
                ("expirePreviousGop", _) => t.expire_previous_gop = v != "0",
                _ => {}
            }
        }
        (base, t)
    }
}

/// What the server must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcEvent {
    /// The client wants to play `name` (the query already taken off) of the app it connected
    /// to. Answer with [`TcSession::play_started`] or [`TcSession::play_failed`].
    Play {
        /// The stream ID to answer for.
        stream_id: u32,
        /// The app from `connect`.
        app: String,
        /// The stream name.
        name: String,
    },
    /// The client stopped playing (closeStream / deleteStream, or its stream flow closed).
    Stop {
        /// The stream ID.
        stream_id: u32,
    },
    /// The client wants to publish `name` (query taken off) in the app it connected to.
    /// Answer with [`TcSession::publish_started`] or [`TcSession::publish_failed`].
    Publish {
        /// The stream ID to answer for.
        stream_id: u32,
        /// The app from `connect`.
        app: String,
        /// The stream name.
        name: String,
    },
    /// Media of an accepted publish, as RTMP ingest gives it: [`crate::Event::Tracks`] or
    /// [`crate::Event::Frame`].
    Media {
        /// The stream ID.
        stream_id: u32,
        /// The tracks or a frame.
        event: crate::Event,
    },
    /// The publish ended (closeStream / deleteStream / FCUnpublish, or its flows closed).
    Unpublish {
        /// The stream ID.
        stream_id: u32,
    },
}

/// A publish, asked for or accepted.
struct Publishing {
    ingest: crate::ingest::Ingest,
    accepted: bool,
}

/// Our flows for one playing stream.
struct Playing {
    data: u64,
    audio: u64,
    video: u64,
    tuning: Tuning,
    tracks: std::sync::Arc<[TrackInfo]>,
    /// The first frame's decoding time: message timestamps count from it.
    base_ts: Option<i64>,
}

/// One TC connection, server side.
pub struct TcSession {
    conn: Connection,
    app: Option<String>,
    /// The client's flow for stream 0 (its commands), and ours answering it.
    client_control: Option<u64>,
    control: Option<u64>,
    /// The client's flow of each stream ID.
    stream_flows: HashMap<u64, u32>,
    playing: HashMap<u32, Playing>,
    publishing: HashMap<u32, Publishing>,
    /// What each asked-for play's name tuned, until it starts.
    tunings: HashMap<u32, Tuning>,
    next_stream: u32,
    next_flow: u64,
    events: VecDeque<TcEvent>,
}

impl Default for TcSession {
    fn default() -> Self {
        TcSession::new()
    }
}

impl TcSession {
    /// A new session.
    pub fn new() -> TcSession {
        TcSession {
            conn: Connection::new(rtws::Config {
                // A publisher's keyframe may be large; a command is small. Few flows: each may
                // hold a message being reassembled (control, a stream, its audio and video).
                max_message: 4 << 20,
                max_flows: 16,
                ..rtws::Config::default()
            }),
            app: None,
            client_control: None,
            control: None,
            stream_flows: HashMap::new(),
            playing: HashMap::new(),
            publishing: HashMap::new(),
            tunings: HashMap::new(),
            next_stream: 1,
            next_flow: 0,
            events: VecDeque::new(),
        }
    }

    /// The next WebSocket message to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.conn.poll_transmit(now)
    }

    /// When to call [`TcSession::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
    }

    /// The next event for the server.
    pub fn poll_event(&mut self) -> Option<TcEvent> {
        self.events.pop_front()
    }

    /// The underlying connection (RTT, bytes in flight).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// One binary WebSocket message from the client.
    pub fn receive(&mut self, now: Instant, bytes: &[u8]) -> Result<(), TcError> {
        self.conn.receive(now, bytes)?;
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                RtwsEvent::FlowOpened { flow, metadata, .. } => {
                    let Some(stream_id) = tc_stream_id(&metadata) else {
                        self.conn.reject(flow, 1, "not a TC flow");
                        continue;
                    };
                    if stream_id == 0 {
                        self.client_control = Some(flow);
                    } else {
                        self.stream_flows.insert(flow, stream_id);
                    }
                }
                RtwsEvent::Message { flow, data, .. } => self.on_message(now, flow, &data)?,
                RtwsEvent::FlowClosed { flow } => {
                    if let Some(stream_id) = self.stream_flows.remove(&flow) {
                        // A publisher may send audio and video on flows of their own: the
                        // stream ends with the last of its flows.
                        if !self.stream_flows.values().any(|&s| s == stream_id) {
                            self.stop(stream_id);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn on_message(&mut self, now: Instant, flow: u64, data: &[u8]) -> Result<(), TcError> {
        if data.len() < 5 {
            return Err(TcError::ShortMessage(flow));
        }
        let kind = data[0];
        let ts = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        let payload = &data[5..];
        let stream_id = self.stream_flows.get(&flow).copied().unwrap_or(0);
        let payload = match kind {
            AMF0_COMMAND => payload,
            // An AMF3 command is a format byte, then AMF0.
            AMF3_COMMAND => payload.get(1..).unwrap_or_default(),
            AUDIO | VIDEO => return self.on_media(stream_id, kind, ts, payload),
            _ => return Ok(()), // data messages, user control: nothing to act on
        };
        let cmd = Command::decode(payload).map_err(|e| TcError::BadCommand(e.to_string()))?;
        match cmd.name.as_str() {
            "connect" => {
                let app = match cmd.property("app") {
                    Some(Amf0Value::Utf8String(a)) => a.trim_matches('/').to_owned(),
                    _ => String::new(),
                };
                self.app = Some(app);
                self.open_control(flow);
                let props = object([
                    ("fmsVer", Amf0Value::Utf8String("FMS/3,0,1,123".into())),
                    ("capabilities", Amf0Value::Number(31.0)),
                ]);
                let info = status(
                    "status",
                    "NetConnection.Connect.Success",
                    "Connection succeeded.",
                );
                self.command_on_control(now, "_result", cmd.transaction, props, vec![info]);
            }
            "createStream" => {
                let id = self.next_stream;
                self.next_stream += 1;
                self.command_on_control(
                    now,
                    "_result",
                    cmd.transaction,
                    Amf0Value::Null,
                    vec![Amf0Value::Number(f64::from(id))],
                );
            }
            "play" if stream_id > 0 => {
                let name = cmd.string_arg(0).unwrap_or_default().to_owned();
                let app = self.app.clone().unwrap_or_default();
                let (base, tuning) = Tuning::from_name(&name);
                self.tunings.insert(stream_id, tuning);
                self.events.push_back(TcEvent::Play {
                    stream_id,
                    app,
                    name: base.to_owned(),
                });
            }
            // A stream ID that already publishes (or waits for its answer) keeps its publish.
            "publish" if stream_id > 0 && self.publishing.contains_key(&stream_id) => {}
            "publish" if stream_id > 0 => {
                let name = cmd.string_arg(0).unwrap_or_default();
                let base = name.split('?').next().unwrap_or_default().to_owned();
                self.publishing.insert(
                    stream_id,
                    Publishing {
                        ingest: crate::ingest::Ingest::default(),
                        accepted: false,
                    },
                );
                let app = self.app.clone().unwrap_or_default();
                self.events.push_back(TcEvent::Publish {
                    stream_id,
                    app,
                    name: base,
                });
            }
            "FCUnpublish" if self.publishing.contains_key(&stream_id) => self.stop(stream_id),
            "closeStream" | "deleteStream" => {
                let id = if cmd.name == "deleteStream" {
                    cmd.number_arg(0).map_or(stream_id, |n| n as u32)
                } else {
                    stream_id
                };
                self.stop(id);
            }
            _ => {} // receiveAudio, receiveVideo, pause …: not acted on
        }
        Ok(())
    }

    /// Audio or video from a publisher: through the RTMP ingest (FLV tag parsing, the track
    /// list, timestamps) once the publish is accepted; before that, dropped.
    fn on_media(&mut self, stream_id: u32, kind: u8, ts: u32, body: &[u8]) -> Result<(), TcError> {
        let Some(p) = self.publishing.get_mut(&stream_id).filter(|p| p.accepted) else {
            return Ok(());
        };
        let mut out = Vec::new();
        let r = if kind == AUDIO {
            p.ingest.audio(ts, body, &mut out)
        } else {
            p.ingest.video(ts, body, &mut out)
        };
        r.map_err(|e| TcError::BadMedia(e.to_string()))?;
        for event in out {
            self.events.push_back(TcEvent::Media { stream_id, event });
        }
        Ok(())
    }

    fn stop(&mut self, stream_id: u32) {
        if let Some(p) = self.publishing.remove(&stream_id)
            && p.accepted
        {
            self.events.push_back(TcEvent::Unpublish { stream_id });
        }
        self.tunings.remove(&stream_id);
        if let Some(p) = self.playing.remove(&stream_id) {
            for f in [p.data, p.audio, p.video] {
                self.conn.close(f);
            }
            self.events.push_back(TcEvent::Stop { stream_id });
        }
    }

    fn open_control(&mut self, client_flow: u64) {
        if self.control.is_some() {
            return;
        }
        let id = self.flow_id();
        self.conn
            .open(id, AUDIO_PRIORITY, Some(client_flow), &metadata(0));
        self.control = Some(id);
    }

    fn flow_id(&mut self) -> u64 {
        let id = self.next_flow;
        self.next_flow += 1;
        id
    }

    fn command_on_control(
        &mut self,
        now: Instant,
        name: &str,
        transaction: f64,
        object: Amf0Value,
        args: Vec<Amf0Value>,
    ) {
        let Some(control) = self.control else {
            return;
        };
        let body = command(name, transaction, object, args);
        self.conn.send(
            now,
            control,
            message(AMF0_COMMAND, 0, &body),
            SendOptions::default(),
        );
    }

    /// The stream being played ended (its publisher left): `NetStream.Play.UnpublishNotify`
    /// and `NetStream.Play.Stop` on the data flow, then the stream's flows close once what is
    /// queued has gone.
    pub fn play_ended(&mut self, now: Instant, stream_id: u32, reason: &str) {
        let Some(p) = self.playing.remove(&stream_id) else {
            return;
        };
        for code in ["NetStream.Play.UnpublishNotify", "NetStream.Play.Stop"] {
            self.status_on(now, p.data, "status", code, reason);
        }
        for f in [p.data, p.audio, p.video] {
            self.conn.close(f);
        }
    }

    /// The stream was found: opens the data, audio and video flows and says the play started.
    /// A stream ID already playing is stopped first (its flows close).
    pub fn play_started(&mut self, now: Instant, stream_id: u32, name: &str) {
        if let Some(old) = self.playing.remove(&stream_id) {
            for f in [old.data, old.audio, old.video] {
                self.conn.close(f);
            }
        }
        let Some(client_flow) = self.client_flow(stream_id) else {
            return;
        };
        let tuning = self.tunings.remove(&stream_id).unwrap_or_default();
        let (data, audio, video) = (self.flow_id(), self.flow_id(), self.flow_id());
        let meta = metadata(stream_id);
        self.conn
            .open(data, AUDIO_PRIORITY, Some(client_flow), &meta);
        self.conn
            .open(audio, AUDIO_PRIORITY, Some(client_flow), &meta);
        self.conn
            .open(video, VIDEO_PRIORITY, Some(client_flow), &meta);
        self.playing.insert(
            stream_id,
            Playing {
                data,
                audio,
                video,
                tuning,
                tracks: std::sync::Arc::from(Vec::new()),
                base_ts: None,
            },
        );
        // Stream begin (user control event 0) with the stream ID, on the data flow.
        let mut begin = vec![0, 0];
        begin.extend_from_slice(&stream_id.to_be_bytes());
        self.conn.send(
            now,
            data,
            message(USER_CONTROL, 0, &begin),
            SendOptions::default(),
        );
        let started = format!("Started playing {name}.");
        self.status_on(now, data, "status", "NetStream.Play.Start", &started);
        // Flow synchronization (RFC 7425 §5.2, user control event 34: syncID, count) on all
        // three flows: a player holds each flow's later messages until all three have
        // delivered it, so data, audio and video start together.
        let mut sync = FLOW_SYNC.to_be_bytes().to_vec();
        sync.extend_from_slice(&stream_id.to_be_bytes());
        sync.extend_from_slice(&3u32.to_be_bytes());
        for flow in [data, audio, video] {
            self.conn.send(
                now,
                flow,
                message(USER_CONTROL, 0, &sync),
                SendOptions::default(),
            );
        }
    }

    /// The stream does not exist (or may not be played): `NetStream.Play.StreamNotFound`.
    pub fn play_failed(&mut self, now: Instant, stream_id: u32, reason: &str) {
        self.tunings.remove(&stream_id);
        // On the control flow: the stream has no flows of ours.
        self.error_on_control(now, "NetStream.Play.StreamNotFound", reason);
    }

    /// An error `onStatus` on our control flow.
    fn error_on_control(&mut self, now: Instant, code: &str, reason: &str) {
        let info = status("error", code, reason);
        self.command_on_control(now, "onStatus", 0.0, Amf0Value::Null, vec![info]);
    }

    /// An `onStatus` on one of our flows.
    fn status_on(&mut self, now: Instant, flow: u64, level: &str, code: &str, text: &str) {
        let body = command(
            "onStatus",
            0.0,
            Amf0Value::Null,
            vec![status(level, code, text)],
        );
        self.conn.send(
            now,
            flow,
            message(AMF0_COMMAND, 0, &body),
            SendOptions::default(),
        );
    }

    /// The client's flow of a stream ID (the one its play or publish came on).
    fn client_flow(&self, stream_id: u32) -> Option<u64> {
        self.stream_flows
            .iter()
            .find(|&(_, &s)| s == stream_id)
            .map(|(&f, _)| f)
    }

    /// The publish may go ahead: `NetStream.Publish.Start`, on a flow of ours associated with
    /// the client's stream flow; media is taken from now on.
    pub fn publish_started(&mut self, now: Instant, stream_id: u32, name: &str) {
        let Some(p) = self.publishing.get_mut(&stream_id) else {
            return;
        };
        p.accepted = true;
        let Some(client_flow) = self.client_flow(stream_id) else {
            return;
        };
        let status_flow = self.flow_id();
        self.conn.open(
            status_flow,
            AUDIO_PRIORITY,
            Some(client_flow),
            &metadata(stream_id),
        );
        let started = format!("{name} is now published.");
        self.status_on(
            now,
            status_flow,
            "status",
            "NetStream.Publish.Start",
            &started,
        );
    }

    /// The publish is refused (a name in use, not allowed): `NetStream.Publish.BadName`.
    pub fn publish_failed(&mut self, now: Instant, stream_id: u32, reason: &str) {
        self.publishing.remove(&stream_id);
        self.error_on_control(now, "NetStream.Publish.BadName", reason);
    }

    /// The stream's tracks (first, and when they change): their sequence headers go out.
    pub fn tracks(&mut self, now: Instant, stream_id: u32, tracks: std::sync::Arc<[TrackInfo]>) {
        let Some(p) = self.playing.get_mut(&stream_id) else {
            return;
        };
        p.tracks = tracks.clone();
        let (audio, video) = (p.audio, p.video);
        let ts = 0;
        if let Some(v) = tracks
            .iter()
            .find(|t| t.kind() == MediaKind::Video && t.layer.is_none())
            .and_then(flv_out::video_config)
        {
            self.conn
                .send(now, video, message(VIDEO, ts, &v), SendOptions::default());
        }
        if let Some(a) = tracks
            .iter()
            .find(|t| t.kind() == MediaKind::Audio)
            .and_then(flv_out::audio_config)
        {
            self.conn
                .send(now, audio, message(AUDIO, ts, &a), SendOptions::default());
        }
    }

    /// One hub frame of a playing stream. Frames of tracks other than the first video and
    /// first audio track are not sent (an RTMP stream's Opus twin of its AAC, HLS's layers).
    pub fn frame(&mut self, now: Instant, stream_id: u32, f: &Frame) {
        let Some(p) = self.playing.get_mut(&stream_id) else {
            return;
        };
        let Some(info) = p.tracks.get(f.track) else {
            return;
        };
        let first_of_kind = p
            .tracks
            .iter()
            .position(|t| t.kind() == info.kind() && t.layer.is_none());
        if first_of_kind != Some(f.track) {
            return;
        }
        let base = *p.base_ts.get_or_insert(f.dts);
        let ts = u32::try_from(((f.dts - base) / 1000).max(0)).unwrap_or(u32::MAX);
        let t = p.tuning;
        let (flow, kind, body, opts) = match info.kind() {
            MediaKind::Video => {
                let Some(body) = flv_out::video_frame(info, f) else {
                    return;
                };
                let opts = SendOptions {
                    start_within: Some(t.video_lifetime),
                    finish_within: Some(t.video_lifetime + t.finish_margin),
                    depends_on_previous: !f.keyframe,
                    expire_queued: f.keyframe && t.expire_previous_gop,
                };
                (p.video, VIDEO, body, opts)
            }
            MediaKind::Audio => {
                let Some(body) = flv_out::audio_frame(info, f) else {
                    return;
                };
                let opts = SendOptions {
                    start_within: Some(t.audio_lifetime),
                    finish_within: Some(t.audio_lifetime + t.finish_margin),
                    ..SendOptions::default()
                };
                (p.audio, AUDIO, body, opts)
            }
        };
        self.conn.send(now, flow, message(kind, ts, &body), opts);
    }

    /// A data message (`@setDataFrame`/`onMetaData` style) on a playing stream's data flow.
    pub fn data(&mut self, now: Instant, stream_id: u32, amf0: &[u8]) {
        if let Some(p) = self.playing.get(&stream_id) {
            self.conn.send(
                now,
                p.data,
                message(AMF0_DATA, 0, amf0),
                SendOptions::default(),
            );
        }
    }
}

/// `TC <flags> <vlu stream ID>`.
fn metadata(stream_id: u32) -> Vec<u8> {
    let mut m = vec![TC[0], TC[1], FLAG_STREAM_ID];
    rtws::vlu::write(u64::from(stream_id), &mut m);
    m
}

/// The stream ID of a TC flow's metadata; `None` when it is not TC.
fn tc_stream_id(metadata: &[u8]) -> Option<u32> {
    let rest = metadata.strip_prefix(&TC)?;
    let (&flags, mut rest) = rest.split_first()?;
    if flags & FLAG_STREAM_ID == 0 {
        return Some(0);
    }
    u32::try_from(rtws::vlu::read(&mut rest).ok()?).ok()
}

/// `<type> <u32 timestamp ms> <payload>`.
fn message(kind: u8, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(5 + payload.len());
    m.push(kind);
    m.extend_from_slice(&ts.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

fn command(name: &str, transaction: f64, object: Amf0Value, args: Vec<Amf0Value>) -> Vec<u8> {
    let mut values = vec![
        Amf0Value::Utf8String(name.into()),
        Amf0Value::Number(transaction),
        object,
    ];
    values.extend(args);
    // Serializing our own values cannot fail (no strings past 64 KiB).
    rml_amf0::serialize(&values).unwrap_or_default()
}

fn object<const N: usize>(props: [(&str, Amf0Value); N]) -> Amf0Value {
    Amf0Value::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn status(level: &str, code: &str, description: &str) -> Amf0Value {
    object([
        ("level", Amf0Value::Utf8String(level.into())),
        ("code", Amf0Value::Utf8String(code.into())),
        ("description", Amf0Value::Utf8String(description.into())),
    ])
}
