//! The server side of one RTMP connection: handshake, chunk stream, the NetConnection and
//! NetStream commands a publisher sends, and its media.

use std::collections::VecDeque;

use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};
use tracing::debug;

use crate::chunk::{ChunkReader, Limits, Message};
use crate::commands::Replies;
use crate::ingest::Ingest;
use crate::{Event, Output, RtmpError};

/// Limits and settings of one session. Every limit is a hard cap on what a client can make
/// the server hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Unparsed input plus partially received messages, in bytes. Default 8 MiB.
    pub max_buffered_bytes: usize,
    /// Largest message (e.g. one video frame) accepted, in bytes. Default 4 MiB.
    pub max_message_size: u32,
    /// Largest chunk size a client may set with SetChunkSize. Default 1 MiB.
    pub max_chunk_size: u32,
    /// Distinct chunk stream ids a client may use. Default 64 (encoders use fewer than 10).
    pub max_chunk_streams: usize,
    /// Chunk size we send with. Default 4096.
    pub chunk_size: u32,
    /// Window acknowledgement size and peer bandwidth we announce. Default 2,500,000.
    pub window_ack_size: u32,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            max_buffered_bytes: 8 << 20,
            max_message_size: 4 << 20,
            max_chunk_size: 1 << 20,
            max_chunk_streams: 64,
            chunk_size: 4096,
            window_ack_size: 2_500_000,
        }
    }
}

/// Identifies one publish request, to answer with [`Session::accept_publish`] or
/// [`Session::reject_publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub(crate) u32);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// C0 + C1 + C2: what a client sends before the chunk stream starts.
const HANDSHAKE_LEN: usize = 1 + 1536 + 1536;

enum Phase {
    Handshake {
        handshake: Box<Handshake>,
        fed: usize,
    },
    Chunks,
}

/// Where the connection is in the publish flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// Waiting for `connect`.
    New,
    /// Connected to `app`.
    Connected { app: String },
}

/// One publish, from `publish` to its end.
#[derive(Debug)]
pub(crate) struct Publish {
    pub request: RequestId,
    pub stream_id: u32,
    pub key: String,
    /// `None` until the server accepts.
    pub ingest: Option<Ingest>,
}

/// The server side of one RTMP connection (one TCP connection), without IO.
///
/// Feed it what the socket reads with [`Session::handle_input`], then drain
/// [`Session::poll_output`] until `None`: `Output::Send` bytes go to the socket in order,
/// `Output::Event`s go to the server.
pub struct Session {
    phase: Phase,
    reader: ChunkReader,
    pub(crate) replies: Replies,
    pub(crate) state: State,
    pub(crate) publish: Option<Publish>,
    pub(crate) streams_created: u32,
    pub(crate) next_request: u32,
    output: VecDeque<Output>,
    events: Vec<Event>,
    failed: Option<RtmpError>,
    bytes_received: u64,
    last_ack: u64,
    peer_window: Option<u32>,
}

impl Session {
    /// A session waiting for the client's handshake.
    pub fn new(config: SessionConfig) -> Session {
        let limits = Limits {
            max_chunk_size: config.max_chunk_size,
            max_message_size: config.max_message_size,
            max_chunk_streams: config.max_chunk_streams,
            max_buffered_bytes: config.max_buffered_bytes,
        };
        Session {
            phase: Phase::Handshake {
                handshake: Box::new(Handshake::new(PeerType::Server)),
                fed: 0,
            },
            reader: ChunkReader::new(limits),
            replies: Replies::new(
                ChunkSerializer::new(),
                config.chunk_size,
                config.window_ack_size,
            ),
            state: State::New,
            publish: None,
            streams_created: 0,
            next_request: 0,
            output: VecDeque::new(),
            events: Vec::new(),
            failed: None,
            bytes_received: 0,
            last_ack: 0,
            peer_window: None,
        }
    }

    /// Bytes read from the socket. After an error the session is finished: drain
    /// `poll_output` (it may hold a refusal for the client), then close the connection.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), RtmpError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.input(data);
        self.flush();
        if let Err(e) = &result {
            debug!(error = %e, "rtmp session failed");
            self.failed = Some(e.clone());
        }
        result
    }

    /// The next thing to send or report; call until `None` after every input or call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.output.pop_front()
    }

    /// Lets a publish requested with [`Event::PublishRequested`] start.
    pub fn accept_publish(&mut self, request: RequestId) -> Result<(), RtmpError> {
        let result = match &mut self.publish {
            Some(p) if p.request == request && p.ingest.is_none() => {
                p.ingest = Some(Ingest::default());
                let (stream_id, key) = (p.stream_id, p.key.clone());
                self.replies.publish_started(stream_id, &key)
            }
            _ => Err(RtmpError::UnknownRequest(request.0)),
        };
        self.flush();
        result
    }

    /// Refuses a publish; `reason` reaches the client (FFmpeg and OBS show it).
    pub fn reject_publish(&mut self, request: RequestId, reason: &str) -> Result<(), RtmpError> {
        let result = match &self.publish {
            Some(p) if p.request == request && p.ingest.is_none() => {
                let stream_id = p.stream_id;
                self.publish = None;
                self.replies.publish_refused(stream_id, reason)
            }
            _ => Err(RtmpError::UnknownRequest(request.0)),
        };
        self.flush();
        result
    }

    fn input(&mut self, mut data: &[u8]) -> Result<(), RtmpError> {
        if let Phase::Handshake { handshake, fed } = &mut self.phase {
            let take = data.len().min(HANDSHAKE_LEN - *fed);
            let (head, rest) = data.split_at(take);
            if *fed == 0 {
                check_version(head)?;
            }
            *fed += take;
            data = rest;
            match handshake.process_bytes(head) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    self.replies.raw(response_bytes);
                }
                Ok(HandshakeProcessResult::Completed { response_bytes, .. }) => {
                    // Nothing is left over: it was fed exactly the handshake's bytes.
                    self.replies.raw(response_bytes);
                    self.phase = Phase::Chunks;
                }
                Err(e) => return Err(handshake_error(e)),
            }
        }
        if matches!(self.phase, Phase::Chunks) {
            self.bytes_received += data.len() as u64;
            while let Some(message) = self.reader.next_message(&mut data)? {
                self.message(message)?;
            }
            self.acknowledge()?;
        }
        Ok(())
    }

    /// Sends an Acknowledgement each time a window's worth of bytes has arrived.
    fn acknowledge(&mut self) -> Result<(), RtmpError> {
        if let Some(window) = self.peer_window.filter(|w| *w > 0)
            && self.bytes_received - self.last_ack >= u64::from(window)
        {
            self.last_ack = self.bytes_received;
            // The sequence number is the byte count modulo 2^32 (it wraps by design).
            self.replies.acknowledgement(self.bytes_received as u32)?;
        }
        Ok(())
    }

    fn message(&mut self, m: Message) -> Result<(), RtmpError> {
        match m.type_id {
            1 => self
                .reader
                .set_chunk_size(be32(&m.payload, "SetChunkSize")? & 0x7fff_ffff)?,
            2 => self.reader.abort(be32(&m.payload, "Abort")?),
            3 | 6 => {} // Acknowledgement, SetPeerBandwidth: we do not throttle our little output
            4 => self.user_control(&m.payload)?,
            5 => self.peer_window = Some(be32(&m.payload, "WindowAcknowledgementSize")?),
            8 | 9 => self.media(m)?,
            17 => {
                // AMF3 command: one format byte, then AMF0 in practice.
                let payload = m.payload.get(1..).unwrap_or_default();
                self.command(m.stream_id, payload)?;
            }
            20 => self.command(m.stream_id, &m.payload)?,
            // Data (onMetaData), shared objects: the codec configuration tells us more.
            15 | 16 | 18 | 19 => debug!(type_id = m.type_id, "rtmp data message ignored"),
            22 => return Err(RtmpError::Unsupported("aggregate messages (type 22)")),
            other => debug!(type_id = other, "unknown rtmp message type ignored"),
        }
        Ok(())
    }

    fn user_control(&mut self, payload: &[u8]) -> Result<(), RtmpError> {
        let Some(event) = payload.get(..2) else {
            return Err(RtmpError::BadMessage(
                "user control message shorter than its event type",
            ));
        };
        // PingRequest (6): answer with PingResponse carrying the same timestamp.
        if event == [0, 6] {
            let ts = be32(&payload[2..], "PingRequest")?;
            self.replies.ping_response(ts)?;
        }
        Ok(())
    }

    fn media(&mut self, m: Message) -> Result<(), RtmpError> {
        let Some(Publish {
            stream_id,
            ingest: Some(ingest),
            ..
        }) = &mut self.publish
        else {
            debug!("media outside an accepted publish ignored");
            return Ok(());
        };
        if *stream_id != m.stream_id {
            debug!(stream_id = m.stream_id, "media on another stream ignored");
            return Ok(());
        }
        match m.type_id {
            8 => ingest.audio(m.timestamp, &m.payload, &mut self.events),
            _ => ingest.video(m.timestamp, &m.payload, &mut self.events),
        }
    }

    pub(crate) fn emit(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Moves replies and events to the output queue, keeping their order within each kind
    /// (bytes first: they answer the input that caused the events).
    fn flush(&mut self) {
        for bytes in self.replies.take() {
            // One Send per input is enough: fewer, larger socket writes.
            match self.output.back_mut() {
                Some(Output::Send(prev)) => prev.extend_from_slice(&bytes),
                _ => self.output.push_back(Output::Send(bytes)),
            }
        }
        self.output.extend(self.events.drain(..).map(Output::Event));
    }
}

fn check_version(head: &[u8]) -> Result<(), RtmpError> {
    match head.first() {
        None | Some(3) => Ok(()),
        Some(6) => Err(RtmpError::Handshake(
            "the client asked for encrypted RTMP (RTMPE), which is not offered".into(),
        )),
        Some(b) => Err(RtmpError::Handshake(format!(
            "expected RTMP version 3, got byte 0x{b:02x} (not an RTMP client?)"
        ))),
    }
}

fn handshake_error(e: HandshakeError) -> RtmpError {
    match e {
        // Its Display is a placeholder ("_0").
        HandshakeError::Io(io) => RtmpError::Handshake(io.to_string()),
        e => RtmpError::Handshake(e.to_string()),
    }
}

pub(crate) fn be32(b: &[u8], what: &'static str) -> Result<u32, RtmpError> {
    match b.get(..4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(RtmpError::BadMessage(match what {
            "SetChunkSize" => "SetChunkSize shorter than 4 bytes",
            "Abort" => "Abort shorter than 4 bytes",
            "WindowAcknowledgementSize" => "WindowAcknowledgementSize shorter than 4 bytes",
            "PingRequest" => "PingRequest without its timestamp",
            _ => "control message too short",
        })),
    }
}
