//! RTWebSocket's "TC" media mapping, server side: RTMP messages (RFC 7425 §5 semantics) over
//! RTWebSocket flows, so that RTWebSocket players and publishers (the reference `tcconn.js`,
//! ours in `web/rtws.js`) can play and publish onair's streams. Sans-IO like the rest:
//! WebSocket messages in and out, hub tracks and frames in.
//!
//! How flows are tied together, as RFC 7425 §5.3 and the reference server (`tcserver` in
//! rtmfp-cpp) have it:
//! - The client's first flow is its control flow (`TC`, stream 0); we answer with a control
//!   flow of ours, a return flow of it, which carries `connect`'s and `createStream`'s results.
//! - Every other flow of the client (its commands, audio and video for a stream ID it created,
//!   or more stream-0 command flows) answers our control flow. A flow that answers nothing, or
//!   anything else, or names a stream ID never created, is refused (exception code 0).
//! - Every flow we open for a stream (data/status, audio, video) answers the client's control
//!   flow and names the stream in its metadata; they open when first needed and live as long
//!   as the stream ID. A stream's statuses go on its data flow, the stream begin on control.
//!
//! Playing: `play NAME` becomes [`TcEvent::Play`]; once the server has found the stream it
//! calls [`TcSession::play_started`] (stream begin, `NetStream.Play.Reset`, `Play.Start`) and
//! hands in tracks and frames. `pause`, `receiveAudio` and `receiveVideo` hold media back
//! (video starts again at a keyframe). When the stream ends, [`TcSession::play_ended`] sends
//! `Play.UnpublishNotify` and `Play.Stop` between flow synchronizations of the audio and data
//! flows, so a player takes them after the last audio.
//!
//! Publishing: `publish NAME` becomes [`TcEvent::Publish`]; once the server calls
//! [`TcSession::publish_started`] (`NetStream.Publish.Start`), the audio and video the client
//! sends for that stream go through the RTMP ingest (FLV tags, Enhanced RTMP) and come out as
//! [`TcEvent::Media`], for the hub.
//!
//! What keeps playing low-latency (the reference server's policy): video at priority 4,
//! audio, data and control at 5; a video frame must start within 2.0 s and audio within 2.2 s
//! of being queued, and finish 0.1 s after that, or it is abandoned; the frames after an
//! abandoned video frame go with it until the next keyframe, and a keyframe expires what is
//! left of the GOP before it. A player may change these with query parameters on the stream
//! name (see [`Tuning`]).

mod tuning;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use hub::{Frame, MediaKind, TrackInfo};
use rml_rtmp::rml_amf0::Amf0Value;
use rtws::{Connection, Event as RtwsEvent, SendOptions};

use crate::amf0::Command;
use crate::flv_out;
pub use tuning::Tuning;
use wire::{
    AMF0_COMMAND, AMF0_DATA, AMF3_COMMAND, AUDIO, FlowMeta, VIDEO, command, flow_sync, message,
    metadata, object, on_status, status, stream_begin,
};

const VIDEO_PRIORITY: u8 = 4;
/// Audio, data and control ("immediate").
const CONTROL_PRIORITY: u8 = 5;
/// Stream IDs one connection may hold (each may need three flows of ours and three of theirs).
const MAX_STREAMS: usize = 4;
/// The exception code of a refused flow (RFC 7425 §5.3.5.3).
const REFUSED: u64 = 0;

/// `connect` arguments kept (the rest are ignored); each is bounded by the message size.
pub const MAX_CONNECT_ARGS: usize = 4;

/// What went wrong with a TC connection; it should close with this as the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TcError {
    /// The RTWebSocket layer refused the peer.
    #[error(transparent)]
    Protocol(#[from] rtws::ProtocolError),
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
        /// The name's query as the client wrote it (after `?`), if any: tuning parameters,
        /// and perhaps an access token.
        query: Option<String>,
    },
    /// The client stopped playing (a new play, closeStream, deleteStream, or its flows closed).
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
        /// The name's query (after `?`), if any.
        query: Option<String>,
    },
    /// Media of an accepted publish, as RTMP ingest gives it: [`crate::Event::Tracks`] or
    /// [`crate::Event::Frame`].
    Media {
        /// The stream ID.
        stream_id: u32,
        /// The tracks or a frame.
        event: crate::Event,
    },
    /// The publish ended (a new publish or play, closeStream, deleteStream, FCUnpublish, or
    /// its flows closed).
    Unpublish {
        /// The stream ID.
        stream_id: u32,
    },
}

/// What a stream ID is doing.
#[derive(Default)]
enum Role {
    #[default]
    Idle,
    Play(Play),
    Publish {
        ingest: crate::ingest::Ingest,
        accepted: bool,
    },
}

/// A play, asked for or started.
struct Play {
    tuning: Tuning,
    /// The server found the stream ([`TcSession::play_started`]).
    started: bool,
    tracks: Arc<[TrackInfo]>,
    /// The first frame's decoding time: message timestamps count from it.
    base_ts: Option<i64>,
    paused: bool,
    receive_audio: bool,
    receive_video: bool,
    /// Video waits for a keyframe (after a pause or `receiveVideo(false)`).
    need_keyframe: bool,
}

/// A stream ID the client created: our flows for it, opened when first needed.
#[derive(Default)]
struct NetStream {
    data: Option<u64>,
    audio: Option<u64>,
    video: Option<u64>,
    role: Role,
}

/// Which of a stream's flows of ours.
#[derive(Clone, Copy)]
enum Slot {
    Data,
    Audio,
    Video,
}

/// One TC connection, server side.
pub struct TcSession {
    conn: Connection,
    app: Option<String>,
    /// `connect`'s `tcUrl`, and its string arguments after the command object (the
    /// reference client puts a URL's user info there; a token may come this way).
    tc_url: Option<String>,
    connect_args: Vec<String>,
    /// The client's control flow (its first flow), and ours answering it.
    client_control: Option<u64>,
    control: Option<u64>,
    /// Every flow of the client we accepted, with its stream ID (0: commands).
    client_flows: HashMap<u64, u32>,
    streams: HashMap<u32, NetStream>,
    next_stream: u32,
    next_flow: u64,
    next_sync: u32,
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
                // A publisher's keyframe may be large; a command is small. Few flows: control,
                // more command flows, and per stream its commands, audio and video.
                max_message: 4 << 20,
                max_flows: 16,
                ..rtws::Config::default()
            }),
            app: None,
            tc_url: None,
            connect_args: Vec::new(),
            client_control: None,
            control: None,
            client_flows: HashMap::new(),
            streams: HashMap::new(),
            next_stream: 1,
            next_flow: 0,
            next_sync: 0,
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

    /// `connect`'s `tcUrl`, once connected.
    pub fn tc_url(&self) -> Option<&str> {
        self.tc_url.as_deref()
    }

    /// `connect`'s string arguments after its command object (at most [`MAX_CONNECT_ARGS`]).
    pub fn connect_args(&self) -> &[String] {
        &self.connect_args
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
                RtwsEvent::FlowOpened {
                    flow,
                    return_assoc,
                    metadata,
                } => self.on_flow(flow, return_assoc, &metadata),
                RtwsEvent::Message { flow, data, .. } => {
                    if let Some(&stream_id) = self.client_flows.get(&flow) {
                        self.on_message(now, flow, stream_id, &data)?;
                    }
                }
                RtwsEvent::FlowClosed { flow } => self.on_flow_closed(flow),
                // An exception on our control flow: the client has closed the connection
                // (RFC 7425 §5.3). On a stream flow it only means the client wants no more of
                // it; sending on it is refused from now on.
                RtwsEvent::Rejected { flow, .. } if Some(flow) == self.control => self.end_all(),
                _ => {}
            }
        }
        Ok(())
    }

    /// A flow the client opened: its control flow first, then flows that answer ours.
    fn on_flow(&mut self, flow: u64, return_assoc: Option<u64>, meta: &[u8]) {
        let Some(meta) = FlowMeta::parse(meta) else {
            self.conn.reject(flow, REFUSED, "not a TC flow");
            return;
        };
        let Some(control) = self.control else {
            if return_assoc.is_none() && meta.stream_id == 0 {
                self.client_control = Some(flow);
                self.client_flows.insert(flow, 0);
                let ours = self.flow_id();
                self.conn
                    .open(ours, CONTROL_PRIORITY, Some(flow), &metadata(0));
                self.control = Some(ours);
            } else {
                self.conn.reject(
                    flow,
                    REFUSED,
                    "the first flow must be the control flow (TC, stream 0)",
                );
            }
            return;
        };
        if return_assoc != Some(control) {
            self.conn.reject(
                flow,
                REFUSED,
                "a flow must answer the server's control flow",
            );
        } else if meta.stream_id != 0 && !self.streams.contains_key(&meta.stream_id) {
            let text = format!("stream {} was not created", meta.stream_id);
            self.conn.reject(flow, REFUSED, &text);
        } else {
            self.client_flows.insert(flow, meta.stream_id);
        }
    }

    fn on_flow_closed(&mut self, flow: u64) {
        let Some(stream_id) = self.client_flows.remove(&flow) else {
            return;
        };
        if Some(flow) == self.client_control {
            // The client closed the connection (RFC 7425 §5.3.6): so do we.
            self.end_all();
        } else if stream_id != 0 && !self.client_flows.values().any(|&s| s == stream_id) {
            // A stream ends with the last of the client's flows for it.
            self.close_stream(stream_id);
        }
    }

    /// Every stream stops and every flow of ours closes.
    fn end_all(&mut self) {
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.close_stream(id);
        }
        for s in self.streams.values() {
            for f in [s.data, s.audio, s.video].into_iter().flatten() {
                self.conn.close(f);
            }
        }
        if let Some(c) = self.control {
            self.conn.close(c);
        }
    }

    fn on_message(
        &mut self,
        now: Instant,
        flow: u64,
        stream_id: u32,
        data: &[u8],
    ) -> Result<(), TcError> {
        if data.len() < 5 {
            return Err(TcError::ShortMessage(flow));
        }
        let kind = data[0];
        let ts = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        let payload = &data[5..];
        let payload = match kind {
            AMF0_COMMAND => payload,
            // An AMF3 command is a format byte (only 0 is defined), then AMF0.
            AMF3_COMMAND => match payload.split_first() {
                Some((0, rest)) => rest,
                _ => return Ok(()),
            },
            AUDIO | VIDEO => return self.on_media(stream_id, kind, ts, payload),
            // Data messages (onMetaData) and user control (a publisher's flow sync): nothing
            // to act on.
            _ => return Ok(()),
        };
        let cmd = Command::decode(payload).map_err(|e| TcError::BadCommand(e.to_string()))?;
        if stream_id == 0 {
            self.on_control_command(now, cmd);
        } else {
            self.on_stream_command(stream_id, cmd);
        }
        Ok(())
    }

    /// A command for the connection (stream 0).
    fn on_control_command(&mut self, now: Instant, cmd: Command) {
        match cmd.name.as_str() {
            "connect" => {
                let app = match cmd.property("app") {
                    Some(Amf0Value::Utf8String(a)) => a.trim_matches('/').to_owned(),
                    _ => String::new(),
                };
                self.app = Some(app);
                self.tc_url = match cmd.property("tcUrl") {
                    Some(Amf0Value::Utf8String(u)) => Some(u.clone()),
                    _ => None,
                };
                self.connect_args = (0..MAX_CONNECT_ARGS)
                    .filter_map(|i| cmd.string_arg(i).map(str::to_owned))
                    .collect();
                let props = object([
                    ("fmsVer", Amf0Value::Utf8String("FMS/3,0,1,123".into())),
                    ("capabilities", Amf0Value::Number(31.0)),
                ]);
                let info = status(
                    "status",
                    "NetConnection.Connect.Success",
                    "Connection succeeded.",
                );
                self.send_control(now, command("_result", cmd.transaction, props, vec![info]));
            }
            "createStream" if self.streams.len() >= MAX_STREAMS => {
                self.call_failed(now, &cmd, "too many streams on this connection");
            }
            "createStream" => {
                let id = self.next_stream;
                self.next_stream += 1;
                self.streams.insert(id, NetStream::default());
                let id = Amf0Value::Number(f64::from(id));
                let result = command("_result", cmd.transaction, Amf0Value::Null, vec![id]);
                self.send_control(now, result);
            }
            "deleteStream" => {
                if let Some(id) = cmd.number_arg(0).and_then(stream_id) {
                    self.delete_stream(id);
                }
                self.acknowledge(now, &cmd);
            }
            // Names are claimed by publish itself (a new publisher takes a name over).
            "releaseStream" | "FCPublish" | "FCUnpublish" => self.acknowledge(now, &cmd),
            _ => self.call_failed(now, &cmd, "Method not found"),
        }
    }

    /// A command for one stream ID.
    fn on_stream_command(&mut self, stream_id: u32, cmd: Command) {
        let app = self.app.clone().unwrap_or_default();
        match cmd.name.as_str() {
            // A play or publish first ends what the stream did; without a name it is only that.
            "play" => {
                self.close_stream(stream_id);
                let Some(name) = cmd.string_arg(0).filter(|n| !n.is_empty()) else {
                    return;
                };
                let (base, tuning) = Tuning::from_name(name);
                let query = name.split_once('?').map(|(_, q)| q.to_owned());
                let name = base.to_owned();
                if let Some(s) = self.streams.get_mut(&stream_id) {
                    s.role = Role::Play(Play {
                        tuning,
                        started: false,
                        tracks: Arc::from(Vec::new()),
                        base_ts: None,
                        paused: false,
                        receive_audio: true,
                        receive_video: true,
                        need_keyframe: false,
                    });
                    self.events.push_back(TcEvent::Play {
                        stream_id,
                        app,
                        name,
                        query,
                    });
                }
            }
            "publish" => {
                self.close_stream(stream_id);
                let Some(name) = cmd.string_arg(0).filter(|n| !n.is_empty()) else {
                    return;
                };
                let (name, query) = match name.split_once('?') {
                    Some((n, q)) => (n.to_owned(), Some(q.to_owned())),
                    None => (name.to_owned(), None),
                };
                if let Some(s) = self.streams.get_mut(&stream_id) {
                    s.role = Role::Publish {
                        ingest: crate::ingest::Ingest::default(),
                        accepted: false,
                    };
                    self.events.push_back(TcEvent::Publish {
                        stream_id,
                        app,
                        name,
                        query,
                    });
                }
            }
            "closeStream" => self.close_stream(stream_id),
            "FCUnpublish" if self.publishes(stream_id) => self.close_stream(stream_id),
            // Some clients send it for the stream itself.
            "deleteStream" => {
                let id = cmd.number_arg(0).and_then(self::stream_id);
                self.delete_stream(id.unwrap_or(stream_id));
            }
            "pause" | "receiveAudio" | "receiveVideo" => {
                let (Some(flag), Some(p)) = (cmd.bool_arg(0), self.play_mut(stream_id)) else {
                    return;
                };
                match cmd.name.as_str() {
                    "pause" => p.paused = flag,
                    "receiveAudio" => p.receive_audio = flag,
                    _ => p.receive_video = flag,
                }
                // Video held back resumes at a keyframe.
                p.need_keyframe |= p.paused || !p.receive_video;
            }
            _ => {} // as the reference server: other stream commands are ignored
        }
    }

    fn publishes(&self, stream_id: u32) -> bool {
        matches!(
            self.streams.get(&stream_id).map(|s| &s.role),
            Some(Role::Publish { .. })
        )
    }

    fn play_mut(&mut self, stream_id: u32) -> Option<&mut Play> {
        match &mut self.streams.get_mut(&stream_id)?.role {
            Role::Play(p) => Some(p),
            _ => None,
        }
    }

    /// `_result` for a command that asked for an answer.
    fn acknowledge(&mut self, now: Instant, cmd: &Command) {
        if cmd.transaction > 0.0 {
            let result = command("_result", cmd.transaction, Amf0Value::Null, Vec::new());
            self.send_control(now, result);
        }
    }

    /// `NetConnection.Call.Failed`: as `_error` when the command asked for an answer.
    fn call_failed(&mut self, now: Instant, cmd: &Command, description: &str) {
        let mut info = status("error", "NetConnection.Call.Failed", description);
        if let Amf0Value::Object(o) = &mut info {
            o.insert("detail".into(), Amf0Value::Utf8String(cmd.name.clone()));
        }
        let name = if cmd.transaction > 0.0 {
            "_error"
        } else {
            "onStatus"
        };
        let msg = command(name, cmd.transaction, Amf0Value::Null, vec![info]);
        self.send_control(now, msg);
    }

    /// Audio or video from a publisher: through the RTMP ingest (FLV tag parsing, the track
    /// list, timestamps) once the publish is accepted; before that, dropped.
    fn on_media(&mut self, stream_id: u32, kind: u8, ts: u32, body: &[u8]) -> Result<(), TcError> {
        let Some(NetStream {
            role:
                Role::Publish {
                    ingest,
                    accepted: true,
                },
            ..
        }) = self.streams.get_mut(&stream_id)
        else {
            return Ok(());
        };
        let mut out = Vec::new();
        let r = if kind == AUDIO {
            ingest.audio(ts, body, &mut out)
        } else {
            ingest.video(ts, body, &mut out)
        };
        r.map_err(|e| TcError::BadMedia(e.to_string()))?;
        for event in out {
            self.events.push_back(TcEvent::Media { stream_id, event });
        }
        Ok(())
    }

    /// The stream ID stops playing or publishing; its flows stay for what it does next.
    fn close_stream(&mut self, stream_id: u32) {
        let Some(s) = self.streams.get_mut(&stream_id) else {
            return;
        };
        match std::mem::take(&mut s.role) {
            Role::Idle => {}
            Role::Play(_) => self.events.push_back(TcEvent::Stop { stream_id }),
            Role::Publish { accepted, .. } => {
                if accepted {
                    self.events.push_back(TcEvent::Unpublish { stream_id });
                }
            }
        }
    }

    /// The stream ID is gone: it stops, our flows for it close and the client's are refused.
    fn delete_stream(&mut self, stream_id: u32) {
        self.close_stream(stream_id);
        if let Some(s) = self.streams.remove(&stream_id) {
            for f in [s.data, s.audio, s.video].into_iter().flatten() {
                self.conn.close(f);
            }
        }
        let theirs: Vec<u64> = self
            .client_flows
            .iter()
            .filter(|&(_, &s)| s == stream_id)
            .map(|(&f, _)| f)
            .collect();
        for f in theirs {
            self.client_flows.remove(&f);
            self.conn.reject(f, REFUSED, "the stream was deleted");
        }
    }

    fn flow_id(&mut self) -> u64 {
        let id = self.next_flow;
        self.next_flow += 1;
        id
    }

    /// A message on our control flow.
    fn send_control(&mut self, now: Instant, msg: Vec<u8>) {
        if let Some(control) = self.control {
            self.conn.send(now, control, msg, SendOptions::default());
        }
    }

    /// One of a stream's flows of ours, opened (answering the client's control flow) if it
    /// is not yet.
    fn stream_flow(&mut self, stream_id: u32, slot: Slot) -> Option<u64> {
        let client_control = self.client_control?;
        let next = self.next_flow;
        let s = self.streams.get_mut(&stream_id)?;
        let (cell, priority) = match slot {
            Slot::Data => (&mut s.data, CONTROL_PRIORITY),
            Slot::Audio => (&mut s.audio, CONTROL_PRIORITY),
            Slot::Video => (&mut s.video, VIDEO_PRIORITY),
        };
        if let Some(f) = *cell {
            return Some(f);
        }
        if !self
            .conn
            .open(next, priority, Some(client_control), &metadata(stream_id))
        {
            return None; // the flow limit: nothing more for this stream
        }
        *cell = Some(next);
        self.next_flow += 1;
        Some(next)
    }

    /// A message on a stream's flow of ours.
    fn send_on(
        &mut self,
        now: Instant,
        stream_id: u32,
        slot: Slot,
        msg: Vec<u8>,
        opts: SendOptions,
    ) {
        if let Some(flow) = self.stream_flow(stream_id, slot) {
            self.conn.send(now, flow, msg, opts);
        }
    }

    /// An `onStatus` on a stream's data flow.
    fn stream_status(&mut self, now: Instant, stream_id: u32, level: &str, code: &str, text: &str) {
        let msg = on_status(level, code, text);
        self.send_on(now, stream_id, Slot::Data, msg, SendOptions::default());
    }

    /// The stream was found: stream begin on the control flow, `NetStream.Play.Reset` and
    /// `Play.Start` on the stream's data flow; tracks and frames may follow.
    pub fn play_started(&mut self, now: Instant, stream_id: u32, name: &str) {
        let Some(p) = self.play_mut(stream_id) else {
            return; // stopped meanwhile
        };
        p.started = true;
        self.send_control(now, stream_begin(stream_id));
        let text = format!("Playing and resetting {name}.");
        self.stream_status(now, stream_id, "status", "NetStream.Play.Reset", &text);
        let text = format!("Started playing {name}.");
        self.stream_status(now, stream_id, "status", "NetStream.Play.Start", &text);
    }

    /// The stream does not exist (or may not be played): `NetStream.Play.StreamNotFound`.
    pub fn play_failed(&mut self, now: Instant, stream_id: u32, reason: &str) {
        self.play_not_started(now, stream_id, "NetStream.Play.StreamNotFound", reason);
    }

    /// The play is not allowed (no access token, or one without the grant):
    /// `NetStream.Play.Failed` with the reason.
    pub fn play_refused(&mut self, now: Instant, stream_id: u32, reason: &str) {
        self.play_not_started(now, stream_id, "NetStream.Play.Failed", reason);
    }

    fn play_not_started(&mut self, now: Instant, stream_id: u32, code: &str, reason: &str) {
        if let Some(s) = self.streams.get_mut(&stream_id) {
            s.role = Role::Idle;
            self.stream_status(now, stream_id, "error", code, reason);
        }
    }

    /// The stream being played ended (its publisher left, or another play replaced it):
    /// `NetStream.Play.UnpublishNotify` and `NetStream.Play.Stop`, each side of a flow
    /// synchronization of the audio and data flows, so a player takes them in order with the
    /// audio before them.
    pub fn play_ended(&mut self, now: Instant, stream_id: u32, reason: &str) {
        let Some(s) = self.streams.get_mut(&stream_id) else {
            return;
        };
        if !matches!(&s.role, Role::Play(p) if p.started) {
            return;
        }
        s.role = Role::Idle;
        self.sync_audio_and_data(now, stream_id);
        for code in ["NetStream.Play.UnpublishNotify", "NetStream.Play.Stop"] {
            self.stream_status(now, stream_id, "status", code, reason);
        }
        self.sync_audio_and_data(now, stream_id);
    }

    fn sync_audio_and_data(&mut self, now: Instant, stream_id: u32) {
        let Some(NetStream {
            data: Some(data),
            audio: Some(audio),
            ..
        }) = self.streams.get(&stream_id)
        else {
            return;
        };
        let (data, audio) = (*data, *audio);
        let sync = flow_sync(self.next_sync, 2);
        self.next_sync = self.next_sync.wrapping_add(1);
        for flow in [audio, data] {
            self.conn
                .send(now, flow, sync.clone(), SendOptions::default());
        }
    }

    /// The publish may go ahead: `NetStream.Publish.Start` on the stream's data flow; media
    /// is taken from now on.
    pub fn publish_started(&mut self, now: Instant, stream_id: u32, name: &str) {
        let Some(NetStream {
            role: Role::Publish { accepted, .. },
            ..
        }) = self.streams.get_mut(&stream_id)
        else {
            return;
        };
        *accepted = true;
        let text = format!("{name} is now published.");
        self.stream_status(now, stream_id, "status", "NetStream.Publish.Start", &text);
    }

    /// The publish is refused (a name in use, not allowed), or another publisher took the
    /// name over: `NetStream.Publish.BadName`.
    pub fn publish_failed(&mut self, now: Instant, stream_id: u32, reason: &str) {
        if let Some(s) = self.streams.get_mut(&stream_id) {
            s.role = Role::Idle;
            self.stream_status(now, stream_id, "error", "NetStream.Publish.BadName", reason);
        }
    }

    /// The stream's tracks (first, and when they change): their sequence headers go out,
    /// paused or not (as the reference server does: a player needs them to decode anything).
    pub fn tracks(&mut self, now: Instant, stream_id: u32, tracks: Arc<[TrackInfo]>) {
        let Some(p) = self.play_mut(stream_id).filter(|p| p.started) else {
            return;
        };
        p.tracks = tracks.clone();
        let main = |kind| {
            tracks
                .iter()
                .find(|t| t.kind() == kind && t.layer.is_none())
        };
        if let Some(v) = main(MediaKind::Video).and_then(flv_out::video_config) {
            let msg = message(VIDEO, 0, &v);
            self.send_on(now, stream_id, Slot::Video, msg, SendOptions::default());
        }
        if let Some(a) = main(MediaKind::Audio).and_then(flv_out::audio_config) {
            let msg = message(AUDIO, 0, &a);
            self.send_on(now, stream_id, Slot::Audio, msg, SendOptions::default());
        }
    }

    /// One hub frame of a playing stream. Frames of tracks other than the first video and
    /// first audio track are not sent (an RTMP stream's Opus twin of its AAC, HLS's layers),
    /// nor what the player paused or turned off.
    pub fn frame(&mut self, now: Instant, stream_id: u32, f: &Frame) {
        let Some(p) = self.play_mut(stream_id).filter(|p| p.started) else {
            return;
        };
        let Some(info) = p.tracks.get(f.track) else {
            return;
        };
        let kind = info.kind();
        let first_of_kind = p
            .tracks
            .iter()
            .position(|t| t.kind() == kind && t.layer.is_none());
        if first_of_kind != Some(f.track) || p.paused {
            return;
        }
        match kind {
            MediaKind::Audio if !p.receive_audio => return,
            MediaKind::Video if !p.receive_video || (p.need_keyframe && !f.keyframe) => return,
            MediaKind::Video => p.need_keyframe = false,
            MediaKind::Audio => {}
        }
        let base = *p.base_ts.get_or_insert(f.dts);
        let ts = u32::try_from(((f.dts - base) / 1000).max(0)).unwrap_or(u32::MAX);
        let t = p.tuning;
        let (slot, kind, body, opts) = match kind {
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
                (Slot::Video, VIDEO, body, opts)
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
                (Slot::Audio, AUDIO, body, opts)
            }
        };
        self.send_on(now, stream_id, slot, message(kind, ts, &body), opts);
    }

    /// A data message (`@setDataFrame`/`onMetaData` style) on a playing stream's data flow.
    pub fn data(&mut self, now: Instant, stream_id: u32, amf0: &[u8]) {
        if self.play_mut(stream_id).is_some_and(|p| p.started) {
            let msg = message(AMF0_DATA, 0, amf0);
            self.send_on(now, stream_id, Slot::Data, msg, SendOptions::default());
        }
    }
}

/// A stream ID from an AMF0 number.
fn stream_id(n: f64) -> Option<u32> {
    (n.is_finite() && n >= 0.0 && n <= f64::from(u32::MAX)).then_some(n as u32)
}
