//! An in-memory RTMP client (rml_rtmp's client handshake and ClientSession) wired to our
//! Session, so tests send what a real publisher sends, byte for byte.
#![allow(dead_code, clippy::unwrap_used)] // test helpers: a failure here is a test failure

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use rtmp::{Event, Output, RtmpError, Session, SessionConfig};

/// The avcC x264 wrote for 640x360 baseline (taken from an FFmpeg FLV).
pub const AVCC_360P: &str =
    "0142c01effe100196742c01eda0280bfe5c044000003000400000300f03c58ba8001000468ce0fc8";
/// FFmpeg's AudioSpecificConfig for AAC LC, 48 kHz, mono.
pub const ASC_48K_MONO: [u8; 5] = [0x11, 0x88, 0x56, 0xe5, 0x00];

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub struct Pair {
    pub server: Session,
    pub client: ClientSession,
    /// Server events not yet looked at.
    pub events: Vec<Event>,
    pub client_events: Vec<ClientSessionEvent>,
    /// Accept every publish request as it comes.
    pub auto_accept: bool,
    /// The last error the server returned.
    pub error: Option<RtmpError>,
}

impl Pair {
    /// Handshake done, nothing else.
    pub fn new(config: SessionConfig) -> Pair {
        let mut server = Session::new(config);
        let mut hs = Handshake::new(PeerType::Client);
        let c0c1 = hs.generate_outbound_p0_and_p1().unwrap();
        server.handle_input(&c0c1).unwrap();
        let s0s1s2 = drain_bytes(&mut server);
        assert_eq!(s0s1s2.len(), 1 + 1536 + 1536);
        let HandshakeProcessResult::Completed {
            response_bytes,
            remaining_bytes,
        } = hs.process_bytes(&s0s1s2).unwrap()
        else {
            panic!("client handshake did not complete");
        };
        assert!(remaining_bytes.is_empty());
        server.handle_input(&response_bytes).unwrap();
        assert!(server.poll_output().is_none());
        let (client, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        assert!(results.is_empty());
        Pair {
            server,
            client,
            events: Vec::new(),
            client_events: Vec::new(),
            auto_accept: true,
            error: None,
        }
    }

    /// Connected to app `live` and publishing `test`, accepted.
    pub fn publishing() -> Pair {
        let mut pair = Pair::new(SessionConfig::default());
        pair.connect("live");
        assert_eq!(
            pair.client_events,
            vec![ClientSessionEvent::ConnectionRequestAccepted]
        );
        let packet = pair
            .client
            .request_publishing("test".into(), PublishRequestType::Live)
            .unwrap();
        pair.client_result(packet);
        assert_eq!(
            pair.client_events.last(),
            Some(&ClientSessionEvent::PublishRequestAccepted)
        );
        pair
    }

    pub fn connect(&mut self, app: &str) {
        let packet = self.client.request_connection(app.into()).unwrap();
        self.client_result(packet);
    }

    /// Sends what the client produced and pumps both ways until quiet.
    pub fn client_result(&mut self, result: ClientSessionResult) {
        if let ClientSessionResult::OutboundResponse(packet) = result {
            self.send_to_server(&packet.bytes);
        }
    }

    /// Raw bytes to the server; replies go to the client, events to `events`.
    pub fn send_to_server(&mut self, bytes: &[u8]) {
        if let Err(e) = self.server.handle_input(bytes) {
            self.error = Some(e);
        }
        self.pump();
    }

    pub fn pump(&mut self) {
        let mut to_client = Vec::new();
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Send(bytes) => to_client.extend(bytes),
                Output::Event(Event::PublishRequested { request, app, key }) => {
                    if self.auto_accept {
                        self.server.accept_publish(request).unwrap();
                    }
                    self.events
                        .push(Event::PublishRequested { request, app, key });
                }
                Output::Event(e) => self.events.push(e),
            }
        }
        if to_client.is_empty() {
            return;
        }
        for result in self.client.handle_input(&to_client).unwrap() {
            match result {
                ClientSessionResult::OutboundResponse(p) => {
                    if let Err(e) = self.server.handle_input(&p.bytes) {
                        self.error = Some(e);
                    }
                }
                ClientSessionResult::RaisedEvent(e) => self.client_events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        self.pump();
    }

    pub fn video(&mut self, ts: u32, body: Vec<u8>) {
        let r = self
            .client
            .publish_video_data(Bytes::from(body), RtmpTimestamp::new(ts), false)
            .unwrap();
        self.client_result(r);
    }

    pub fn audio(&mut self, ts: u32, body: Vec<u8>) {
        let r = self
            .client
            .publish_audio_data(Bytes::from(body), RtmpTimestamp::new(ts), false)
            .unwrap();
        self.client_result(r);
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

pub fn drain_bytes(server: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(o) = server.poll_output() {
        match o {
            Output::Send(b) => out.extend(b),
            Output::Event(e) => panic!("unexpected event {e:?}"),
        }
    }
    out
}

/// One type-0 chunk (the payload must fit in the current chunk size).
pub fn chunk(csid: u8, type_id: u8, stream_id: u32, ts: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut b = vec![csid & 0x3f];
    b.extend(&ts.min(0xff_ffff).to_be_bytes()[1..]);
    b.extend(&len.to_be_bytes()[1..]);
    b.push(type_id);
    b.extend(stream_id.to_le_bytes());
    b.extend(payload);
    b
}
