//! onair's own RTWebSocket media mapping, for Media Source Extensions: CMAF a browser appends
//! to a `SourceBuffer` as it comes, with no remuxing in JavaScript. Sans-IO, like `rtmp::tc`
//! beside it; the wire format is documented in docs/http-api.md ("RTWebSocket, CMAF mapping").
//!
//! - The client opens a flow whose metadata is `CMAF` and the stream key (`cam`, or
//!   `cam?videoLifetime=1` with TC's tuning parameters): it asks to play `APP/cam`.
//! - Not live: that flow is refused (`5e`, code 404, a reason).
//! - Live: for each track (first video, first audio) we open a flow associated with it,
//!   metadata `CMAF`, `v` or `a`, and the track's codecs (`avc1.42c01e`). Audio goes at
//!   priority 5, video at 4.
//! - On a track flow, message `i <u8 n> <codecs, n bytes> <init segment>` comes first and again
//!   whenever the track changes (a new picture size); then `f <u8 flags> <u64 µs> <moof+mdat>`
//!   per frame, flags bit 0 a keyframe, the µs the server's wall clock when the frame reached
//!   it (UNIX time; a player on a synchronized clock measures latency with it).
//! - Deadlines as TC's: a video frame not started within 2.0 s (audio 2.2 s) is abandoned,
//!   the frames that depend on it go with it, and a keyframe expires the GOP before it.
//! - The stream ends: the track flows close.

use std::collections::VecDeque;
use std::time::Instant;

use hls::live::{LiveCmaf, LiveFragment, LiveInit};
use hub::{Frame, MediaKind, TrackInfo};
use rtmp::tc::Tuning;
use rtws::{Connection, Event as RtwsEvent, SendOptions};

/// Metadata prefix of every flow of this mapping.
pub const CMAF: &[u8; 4] = b"CMAF";
/// The reject code of a stream that is not live.
const NOT_FOUND: u64 = 404;
/// The reject code of a second play on one connection.
const CONFLICT: u64 = 409;

const VIDEO_PRIORITY: u8 = 4;
const AUDIO_PRIORITY: u8 = 5;

/// What went wrong with a connection; it closes with this as the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CmafError {
    /// The RTWebSocket layer refused the peer.
    #[error(transparent)]
    Protocol(#[from] rtws::ProtocolError),
}

/// What the server must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmafEvent {
    /// The client wants stream `key` (query taken off) of the URL's app. Answer with
    /// [`CmafSession::play_started`] or [`CmafSession::play_failed`].
    Play {
        /// The stream key.
        key: String,
        /// The key's query (after `?`), if any: tuning, and perhaps an access token.
        query: Option<String>,
    },
    /// The client closed its request flow.
    Stop,
}

/// One connection speaking the CMAF mapping, server side.
pub struct CmafSession {
    conn: Connection,
    /// The client's request flow, once it asked.
    request: Option<u64>,
    tuning: Tuning,
    playing: bool,
    live: LiveCmaf,
    /// Our track flows, opened with their first init.
    video: Option<u64>,
    audio: Option<u64>,
    next_flow: u64,
    events: VecDeque<CmafEvent>,
}

impl Default for CmafSession {
    fn default() -> Self {
        CmafSession::new()
    }
}

impl CmafSession {
    /// A new session.
    pub fn new() -> CmafSession {
        CmafSession {
            conn: Connection::new(rtws::Config {
                // A player sends only small requests, on one flow.
                max_message: 64 * 1024,
                max_flows: 4,
                ..rtws::Config::default()
            }),
            request: None,
            tuning: Tuning::default(),
            playing: false,
            live: LiveCmaf::new(),
            video: None,
            audio: None,
            next_flow: 0,
            events: VecDeque::new(),
        }
    }

    /// Whether a flow's metadata asks for this mapping.
    pub fn is_cmaf(metadata: &[u8]) -> bool {
        metadata.starts_with(CMAF)
    }

    /// The next WebSocket message to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.conn.poll_transmit(now)
    }

    /// When to call [`CmafSession::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
    }

    /// Messages waiting on the connection.
    pub fn backlog(&self) -> usize {
        self.conn.backlog()
    }

    /// The next event for the server.
    pub fn poll_event(&mut self) -> Option<CmafEvent> {
        self.events.pop_front()
    }

    /// One binary WebSocket message from the client.
    pub fn receive(&mut self, now: Instant, bytes: &[u8]) -> Result<(), CmafError> {
        self.conn.receive(now, bytes)?;
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                RtwsEvent::FlowOpened { flow, metadata, .. } => {
                    let Some(key) = metadata.strip_prefix(CMAF) else {
                        self.conn.reject(flow, 1, "not a CMAF flow");
                        continue;
                    };
                    if self.request.is_some() {
                        self.conn
                            .reject(flow, CONFLICT, "one stream per connection");
                        continue;
                    }
                    let key = String::from_utf8_lossy(key);
                    let (base, tuning) = Tuning::from_name(&key);
                    self.tuning = tuning;
                    self.request = Some(flow);
                    self.events.push_back(CmafEvent::Play {
                        key: base.to_owned(),
                        query: key.split_once('?').map(|(_, q)| q.to_owned()),
                    });
                }
                RtwsEvent::FlowClosed { flow } if Some(flow) == self.request => {
                    self.stop();
                    self.events.push_back(CmafEvent::Stop);
                }
                _ => {} // the request flow carries nothing more; acks are the connection's
            }
        }
        Ok(())
    }

    /// The stream is live: tracks and frames follow.
    pub fn play_started(&mut self) {
        self.playing = self.request.is_some();
    }

    /// The stream is not live (or may not be played): the request is refused.
    pub fn play_failed(&mut self, reason: &str) {
        if let Some(flow) = self.request.take() {
            self.conn.reject(flow, NOT_FOUND, reason);
        }
    }

    /// The stream ended: the track flows close once what is queued has gone.
    pub fn stream_ended(&mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.playing = false;
        for f in [self.video.take(), self.audio.take()].into_iter().flatten() {
            self.conn.close(f);
        }
        self.live = LiveCmaf::new();
    }

    /// The stream's tracks (first, and when they change): new init segments go out. A stream
    /// with nothing MSE can take refuses the request with the reason.
    pub fn tracks(&mut self, now: Instant, tracks: &[TrackInfo]) {
        if !self.playing {
            return;
        }
        let inits = self.live.set_tracks(tracks, now);
        self.send_inits(now, inits);
    }

    /// New inits go out; a stream MSE cannot take refuses the request with the reason. False
    /// when it was refused.
    fn send_inits(&mut self, now: Instant, inits: Result<Vec<LiveInit>, hls::HlsError>) -> bool {
        match inits {
            Ok(inits) => {
                for init in inits {
                    self.send_init(now, init);
                }
                true
            }
            Err(e) => {
                self.stop();
                self.play_failed(&e.to_string());
                false
            }
        }
    }

    fn send_init(&mut self, now: Instant, init: LiveInit) {
        let Some(request) = self.request else {
            return;
        };
        let (slot, tag, priority) = match init.kind {
            MediaKind::Video => (&mut self.video, b'v', VIDEO_PRIORITY),
            MediaKind::Audio => (&mut self.audio, b'a', AUDIO_PRIORITY),
        };
        let flow = match *slot {
            Some(f) => f,
            None => {
                let f = self.next_flow;
                self.next_flow += 1;
                // The codecs in the metadata too: a player must add every SourceBuffer before
                // it appends the first init segment to any, and the flows open together.
                let mut meta = CMAF.to_vec();
                meta.push(tag);
                meta.extend_from_slice(init.codecs.as_bytes());
                self.conn.open(f, priority, Some(request), &meta);
                *slot = Some(f);
                f
            }
        };
        let codecs = init.codecs.as_bytes();
        let codecs = &codecs[..codecs.len().min(255)];
        let mut m = Vec::with_capacity(2 + codecs.len() + init.init.len());
        m.push(b'i');
        m.push(codecs.len() as u8);
        m.extend_from_slice(codecs);
        m.extend_from_slice(&init.init);
        // No deadline: a player cannot use anything of the track without it.
        self.conn.send(now, flow, m, SendOptions::default());
    }

    /// One hub frame; `wall_us` is when it reached the server (UNIX µs).
    pub fn frame(&mut self, now: Instant, f: &Frame, wall_us: u64) {
        if !self.playing {
            return;
        }
        // A one-kind track list held for its second kind is sent once the wait is over.
        let inits = self.live.poll_inits(now);
        if !self.send_inits(now, inits) {
            return;
        }
        let frag: LiveFragment = match self.live.fragment(f) {
            Some(Ok(frag)) => frag,
            Some(Err(e)) => {
                tracing::debug!("CMAF fragment: {e}");
                return;
            }
            None => return,
        };
        let t = self.tuning;
        let (flow, opts) = match frag.kind {
            MediaKind::Video => (
                self.video,
                SendOptions {
                    start_within: Some(t.video_lifetime),
                    finish_within: Some(t.video_lifetime + t.finish_margin),
                    depends_on_previous: !frag.keyframe,
                    expire_queued: frag.keyframe && t.expire_previous_gop,
                },
            ),
            MediaKind::Audio => (
                self.audio,
                SendOptions {
                    start_within: Some(t.audio_lifetime),
                    finish_within: Some(t.audio_lifetime + t.finish_margin),
                    ..SendOptions::default()
                },
            ),
        };
        let Some(flow) = flow else {
            return;
        };
        self.conn
            .send(now, flow, fragment_message(&frag, wall_us), opts);
    }
}

/// `f <flags> <u64 wall µs> <moof+mdat>`: the message of one fragment (also what the plain
/// WebSocket fallback sends, after its track byte).
pub fn fragment_message(frag: &LiveFragment, wall_us: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(10 + frag.data.len());
    m.push(b'f');
    m.push(u8::from(frag.keyframe));
    m.extend_from_slice(&wall_us.to_be_bytes());
    m.extend_from_slice(&frag.data);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub::Codec;
    use rtws::Connection;
    use std::sync::Arc;
    use std::time::Duration;

    fn avc() -> TrackInfo {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40];
        let mut c = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, sps.len() as u8];
        c.extend_from_slice(&sps);
        c.extend_from_slice(&[1, 0, 4, 0x68, 0xce, 0x3c, 0x80]);
        TrackInfo {
            config: c.into(),
            ..TrackInfo::new(Codec::H264)
        }
    }

    fn frame(track: usize, ms: i64, keyframe: bool) -> Frame {
        Frame {
            track,
            pts: ms * 1000,
            dts: ms * 1000,
            keyframe,
            data: Arc::from(&[0u8, 0, 0, 2, 0x65, 0x88][..]),
        }
    }

    /// Moves everything either side has to send to the other until both are quiet.
    fn pump(now: Instant, server: &mut CmafSession, client: &mut Connection) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(m) = server.poll_transmit(now) {
                client.receive(now, &m).unwrap();
                moved = true;
            }
            while let Some(m) = client.poll_transmit(now) {
                server.receive(now, &m).unwrap();
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn events(c: &mut Connection) -> Vec<RtwsEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    #[test]
    fn a_play_gets_a_flow_per_track_init_first_then_fragments() {
        let now = Instant::now();
        let mut server = CmafSession::new();
        let mut client = Connection::new(rtws::Config::default());
        client.open(0, 3, None, b"CMAFcam?videoLifetime=1");
        pump(now, &mut server, &mut client);
        assert_eq!(
            server.poll_event(),
            Some(CmafEvent::Play {
                key: "cam".into(),
                query: Some("videoLifetime=1".into())
            })
        );
        assert_eq!(server.tuning.video_lifetime, Duration::from_secs(1));
        server.play_started();
        server.tracks(now, &[avc(), TrackInfo::new(Codec::Opus)]);
        server.frame(now, &frame(0, 0, true), 7);
        server.frame(now, &frame(1, 0, true), 8);
        pump(now, &mut server, &mut client);
        let evs = events(&mut client);
        let opened: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                RtwsEvent::FlowOpened {
                    flow,
                    return_assoc,
                    metadata,
                } => Some((*flow, *return_assoc, metadata.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(opened.len(), 2);
        assert!(opened.iter().all(|(_, assoc, _)| *assoc == Some(0)));
        let video = opened
            .iter()
            .find(|o| o.2 == b"CMAFvavc1.42c01e")
            .unwrap()
            .0;
        assert!(opened.iter().any(|o| o.2 == b"CMAFaopus"));
        let msgs: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                RtwsEvent::Message { flow, data, .. } if *flow == video => Some(data.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0][0], b'i');
        let n = msgs[0][1] as usize;
        assert_eq!(&msgs[0][2..2 + n], b"avc1.42c01e");
        assert_eq!(&msgs[0][2 + n + 4..2 + n + 8], b"ftyp");
        assert_eq!(&msgs[1][..2], &[b'f', 1]);
        assert_eq!(u64::from_be_bytes(msgs[1][2..10].try_into().unwrap()), 7);
        assert_eq!(&msgs[1][14..18], b"moof");
        // The stream ends: both track flows close.
        server.stream_ended();
        pump(now, &mut server, &mut client);
        let closed = events(&mut client)
            .into_iter()
            .filter(|e| matches!(e, RtwsEvent::FlowClosed { .. }))
            .count();
        assert_eq!(closed, 2);
    }

    #[test]
    fn a_stream_not_live_refuses_the_request() {
        let now = Instant::now();
        let mut server = CmafSession::new();
        let mut client = Connection::new(rtws::Config::default());
        client.open(0, 3, None, b"CMAFnope");
        pump(now, &mut server, &mut client);
        assert!(matches!(server.poll_event(), Some(CmafEvent::Play { .. })));
        server.play_failed("live/nope is not live");
        pump(now, &mut server, &mut client);
        assert!(events(&mut client).contains(&RtwsEvent::Rejected {
            flow: 0,
            code: Some(404),
            text: "live/nope is not live".into()
        }));
    }

    #[test]
    fn a_second_request_and_a_foreign_flow_are_refused() {
        let now = Instant::now();
        let mut server = CmafSession::new();
        let mut client = Connection::new(rtws::Config::default());
        client.open(0, 3, None, b"CMAFa");
        client.open(1, 3, None, b"CMAFb");
        client.open(2, 3, None, b"TC\x04\x00");
        pump(now, &mut server, &mut client);
        let rejected: Vec<_> = events(&mut client)
            .into_iter()
            .filter_map(|e| match e {
                RtwsEvent::Rejected { flow, code, .. } => Some((flow, code)),
                _ => None,
            })
            .collect();
        assert_eq!(rejected, vec![(1, Some(409)), (2, Some(1))]);
    }
}
