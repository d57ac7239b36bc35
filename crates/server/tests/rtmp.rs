//! RTMP ingest through the binary, with rml_rtmp's client (another implementation's reading of
//! the protocol) as the publisher over real TCP.
#![allow(clippy::unwrap_used)] // test helpers: a failure here is a test failure

use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use serde_json::Value;
use testkit::server::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The avcC x264 wrote for 640x360 baseline.
const AVCC_360P: [u8; 40] = [
    0x01, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf,
    0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x58, 0xba,
    0x80, 0x01, 0x00, 0x04, 0x68, 0xce, 0x0f, 0xc8,
];

/// One publishing connection.
struct Publisher {
    socket: TcpStream,
    session: ClientSession,
    events: Vec<ClientSessionEvent>,
}

impl Publisher {
    /// Handshake, connect to `app`, publish `key`; `None` if the server refused the publish.
    async fn start(port: u16, app: &str, key: &str) -> Option<Publisher> {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut hs = Handshake::new(PeerType::Client);
        socket
            .write_all(&hs.generate_outbound_p0_and_p1().unwrap())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let leftover = loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed during the handshake");
            match hs.process_bytes(&buf[..n]).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    socket.write_all(&response_bytes).await.unwrap();
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket.write_all(&response_bytes).await.unwrap();
                    break remaining_bytes;
                }
            }
        };
        let (session, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut p = Publisher {
            socket,
            session,
            events: Vec::new(),
        };
        p.handle(results).await;
        if !leftover.is_empty() {
            let results = p.session.handle_input(&leftover).unwrap();
            p.handle(results).await;
        }
        let r = p.session.request_connection(app.into()).unwrap();
        p.handle(vec![r]).await;
        p.until(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))
            .await?;
        let r = p
            .session
            .request_publishing(key.into(), PublishRequestType::Live)
            .unwrap();
        p.handle(vec![r]).await;
        p.until(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
            .await?;
        Some(p)
    }

    async fn handle(&mut self, results: Vec<ClientSessionResult>) {
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.socket.write_all(&packet.bytes).await.unwrap();
                }
                ClientSessionResult::RaisedEvent(e) => self.events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    /// Reads until an event matching `done`; `None` when the server closes first or takes
    /// more than 5 s.
    async fn until(&mut self, done: impl Fn(&ClientSessionEvent) -> bool) -> Option<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 4096];
        loop {
            if self.events.iter().any(&done) {
                return Some(());
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            let n = match tokio::time::timeout(wait, self.socket.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return None,
            };
            let results = self.session.handle_input(&buf[..n]).ok()?;
            self.handle(results).await;
        }
    }

    /// An H.264 sequence header and a keyframe at `ts` ms: the stream is live.
    async fn send_keyframe(&mut self, ts: u32) -> std::io::Result<()> {
        let mut seq = vec![0x17, 0x00, 0, 0, 0];
        seq.extend(AVCC_360P);
        let mut key = vec![0x17, 0x01, 0, 0, 0];
        key.extend([0, 0, 0, 3, 0x65, 0x88, 0x84]);
        for body in [seq, key] {
            let result = self
                .session
                .publish_video_data(Bytes::from(body), RtmpTimestamp::new(ts), false)
                .unwrap();
            if let ClientSessionResult::OutboundResponse(packet) = result {
                self.socket.write_all(&packet.bytes).await?;
            }
        }
        Ok(())
    }

    /// Whether the server closes the connection within `within` (anything it sends meanwhile
    /// is read and dropped).
    async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 4096];
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(wait, self.socket.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }
}

/// The stream names `/api/streams` lists.
async fn live_streams(server: &TestServer) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", server.http_port))
        .await
        .unwrap();
    s.write_all(b"GET /api/streams HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    v.as_array()
        .or_else(|| v["streams"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The binary with RTMP on a port of its own and `env`, and a first publisher of `live/cam`
/// whose keyframe made the stream live.
async fn server_with_a_publisher(env: &[(&str, &str)]) -> (TestServer, u16, Publisher) {
    let port = testkit::live::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = env.to_vec();
    env.push(("ONAIR_RTMP_LISTEN", &listen));
    let server = TestServer::start(env!("CARGO_BIN_EXE_onair"), &env);
    let mut first = Publisher::start(port, "live", "cam")
        .await
        .expect("the first publish is accepted");
    first.send_keyframe(0).await.unwrap();
    let t0 = Instant::now();
    while !live_streams(&server).await.contains(&"live/cam".to_owned()) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "live/cam never listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, port, first)
}

#[tokio::test]
async fn a_second_publisher_takes_the_name_over_and_the_first_is_disconnected() {
    let (server, port, mut first) =
        server_with_a_publisher(&[("ONAIR_STREAMS_ON_CONFLICT", "takeover")]).await;
    let mut second = Publisher::start(port, "live", "cam")
        .await
        .expect("the second publish of the name is accepted (takeover)");
    assert!(
        first.closed_within(Duration::from_secs(3)).await,
        "the first publisher's connection is closed when its name is taken over"
    );
    // The name is the second's: its frames keep it live.
    second.send_keyframe(0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(live_streams(&server).await.contains(&"live/cam".to_owned()));
    assert!(
        !second.closed_within(Duration::from_millis(500)).await,
        "the new publisher stays connected"
    );
}

#[tokio::test]
async fn by_default_a_second_publisher_is_refused_and_the_first_goes_on() {
    let (server, port, mut first) = server_with_a_publisher(&[]).await;
    assert!(
        Publisher::start(port, "live", "cam").await.is_none(),
        "a second publish of a live name is refused"
    );
    assert!(
        !first.closed_within(Duration::from_millis(500)).await,
        "the first publisher stays connected"
    );
    first.send_keyframe(40).await.unwrap();
    assert!(live_streams(&server).await.contains(&"live/cam".to_owned()));
}
