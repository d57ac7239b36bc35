//! The real binary with two media shards: one WHIP stream's WHEP viewers are spread over both
//! (the publisher's shard exports the packets to the other, which sends them to its own
//! viewers), and every viewer receives the stream. Rust test peers (str0m) over loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testkit::Publish;
use testkit::live::{LiveOptions, spawn};
use testkit::server::TestServer;
use testkit::whep::{ReceiverReport, whep_receiver, whip_publisher};

fn get_json(port: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    let json = body.split("\r\n\r\n").nth(1).unwrap_or("null");
    serde_json::from_str(json).unwrap_or(serde_json::Value::Null)
}

/// A WHEP viewer, asking again while the stream is too young to play (503).
async fn viewer(
    http: SocketAddr,
    stream: String,
    until: Instant,
) -> Result<ReceiverReport, String> {
    let mut last = String::new();
    for _ in 0..20 {
        match whep_receiver(http, &stream, until).await {
            Ok(r) => return Ok(r),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

/// `n` WHEP viewers of `stream` until `until`, started 100 ms apart (sessions take the shards
/// in turn), and `/api/rooms` as it stands `settle` after the last one started.
async fn viewers_and_status(
    http: SocketAddr,
    stream: &str,
    n: usize,
    until: Instant,
    settle: Duration,
) -> (Vec<ReceiverReport>, serde_json::Value) {
    let mut viewers = Vec::new();
    for _ in 0..n {
        viewers.push(tokio::spawn(viewer(http, stream.to_owned(), until)));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(settle).await;
    let status = tokio::task::spawn_blocking(move || get_json(http.port(), "/api/rooms")).await;
    let mut reports = Vec::new();
    for v in viewers {
        reports.push(v.await.expect("viewer task").expect("viewer ran"));
    }
    (reports, status.expect("status"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn one_streams_viewers_on_both_shards_all_receive_it() {
    let server = TestServer::start(env!("CARGO_BIN_EXE_onair"), &[("ONAIR_MEDIA_SHARDS", "2")]);
    let http = SocketAddr::from(([127, 0, 0, 1], server.http_port));
    let (reports, shards) = runtime().block_on(async {
        let until = Instant::now() + Duration::from_secs(9);
        let publisher = tokio::spawn(whip_publisher(http, "live/spread", until, 1000));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Four viewers, two on each shard.
        let seen = viewers_and_status(http, "live/spread", 4, until, Duration::from_secs(5)).await;
        publisher
            .await
            .expect("publisher task")
            .expect("publisher ran");
        seen
    });

    for (i, r) in reports.iter().enumerate() {
        // About 5 s of 30 fps video (a packet or more a frame) and 50 packets/s of Opus.
        assert!(r.video_packets > 100, "viewer {i}: {r:?}");
        assert!(r.audio_packets > 150, "viewer {i}: {r:?}");
        assert!(r.missing < 10, "viewer {i}: {} missing", r.missing);
    }
    let shards = shards["shards"].as_array().cloned().unwrap_or_default();
    assert_eq!(shards.len(), 2, "{shards:?}");
    for s in &shards {
        let peers = s["peers"].as_u64().unwrap_or(0);
        let out = s["rtp_out"].as_u64().unwrap_or(0);
        assert!(peers >= 2, "each shard holds two viewers: {shards:?}");
        assert!(out > 300, "each shard sends to its own viewers: {shards:?}");
    }
    let rtp_in: u64 = shards
        .iter()
        .map(|s| s["rtp_in"].as_u64().unwrap_or(0))
        .sum();
    let on_one = shards
        .iter()
        .filter(|s| s["rtp_in"].as_u64().unwrap_or(0) == rtp_in)
        .count();
    assert_eq!(
        on_one, 1,
        "the publisher's packets arrive on one shard: {shards:?}"
    );
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect");
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    };
    for shard in 0..2 {
        assert!(
            metrics.contains(&format!("onair_media_shard_peers{{shard=\"{shard}\"}}")),
            "{metrics}"
        );
    }
    assert_eq!(server.stop(), Some(0), "SIGTERM exits 0");
}

#[test]
fn rooms_are_spread_over_the_shards_and_each_rooms_members_meet() {
    let server = TestServer::start(env!("CARGO_BIN_EXE_onair"), &[("ONAIR_MEDIA_SHARDS", "2")]);
    // Two rooms that live on each shard (the server places a room by its name).
    let mut rooms: Vec<String> = Vec::new();
    for shard in 0..2 {
        rooms.extend(
            (0..)
                .map(|i| format!("spread-{i}"))
                .filter(|r| sfu::shard_of(r, 2) == shard)
                .take(2),
        );
    }
    let member = |room: &str, name: &str| {
        spawn(LiveOptions {
            url: server.ws_url(),
            room: room.into(),
            name: name.into(),
            publish: Some(Publish {
                video: true,
                audio: true,
                simulcast: false,
            }),
            chat: None,
            stay: Duration::from_secs(5),
        })
    };
    let handles: Vec<_> = rooms
        .iter()
        .flat_map(|r| [(r.clone(), member(r, "a")), (r.clone(), member(r, "b"))])
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let status = get_json(server.http_port, "/api/rooms");
    for (room, h) in handles {
        let c = h.join().expect("member thread").expect("member ran");
        let video = c.frames.iter().filter(|f| f.video).count();
        let audio = c.frames.iter().filter(|f| !f.video).count();
        assert!(
            video > 50,
            "{} in {room}: {video} video frames from the other",
            c.name
        );
        assert!(audio > 75, "{} in {room}: {audio} audio frames", c.name);
    }
    let shards = status["shards"].as_array().cloned().unwrap_or_default();
    assert_eq!(shards.len(), 2, "{status}");
    for s in &shards {
        assert_eq!(
            s["rooms"].as_u64(),
            Some(2),
            "two rooms on each shard: {shards:?}"
        );
        assert_eq!(
            s["peers"].as_u64(),
            Some(8),
            "two members of two rooms, two peers each: {shards:?}"
        );
    }
    assert_eq!(server.stop(), Some(0), "SIGTERM exits 0");
}

/// A WHIP publisher that sends until `until` and then ends its session (DELETE), as OBS does
/// when it stops streaming.
async fn publish_then_delete(http: SocketAddr, stream: &str, until: Instant) -> Result<(), String> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut p = testkit::whep::Publisher::offer(&sock)?;
    let (answer, location) =
        testkit::whep::post_offer(http, &format!("/whip/{stream}"), &p.offer).await?;
    p.accept(&answer)?;
    p.send(&sock, until, 1000).await?;
    let status = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(http).map_err(|e| e.to_string())?;
        write!(s, "DELETE {location} HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
        Ok::<_, String>(resp.split_whitespace().nth(1).unwrap_or("").to_owned())
    })
    .await
    .map_err(|e| e.to_string())??;
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("DELETE {status}"))
    }
}

#[test]
fn viewers_on_both_shards_follow_a_republish_wherever_it_lands() {
    let server = TestServer::start(env!("CARGO_BIN_EXE_onair"), &[("ONAIR_MEDIA_SHARDS", "2")]);
    let http = SocketAddr::from(([127, 0, 0, 1], server.http_port));
    let reports = runtime().block_on(async {
        let start = Instant::now();
        let end = start + Duration::from_secs(10);
        // Sessions go to the shards in turn: the first publisher, then a viewer on each shard
        // (one beside it, one mirrored), then the second publisher on the shard after.
        let first = tokio::spawn(publish_then_delete(
            http,
            "live/again",
            start + Duration::from_secs(4),
        ));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut viewers = Vec::new();
        for _ in 0..2 {
            viewers.push(tokio::spawn(viewer(http, "live/again".into(), end)));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first
            .await
            .expect("first publisher")
            .expect("first publisher ran");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let second = tokio::spawn(whip_publisher(http, "live/again", end, 1000));
        let mut reports = Vec::new();
        for v in viewers {
            reports.push(v.await.expect("viewer task").expect("viewer ran"));
        }
        second
            .await
            .expect("second publisher")
            .expect("second publisher ran");
        reports
    });
    for (i, r) in reports.iter().enumerate() {
        // About 2.3 s of the first publisher's audio (50 packets/s) and then about 5 s of the
        // second's: a viewer that did not follow would stop near 120.
        assert!(
            r.audio_packets > 250,
            "viewer {i} followed the republish: {r:?}"
        );
        assert!(r.video_packets > 150, "viewer {i}: {r:?}");
    }
    assert_eq!(server.stop(), Some(0), "SIGTERM exits 0");
}

/// A room lives on one shard, but its members' cameras can be watched over WHEP from every
/// shard: the audience of a room larger than one core is spread (docs/deployment.md, Sizing).
#[test]
fn a_room_members_camera_plays_over_whep_on_both_shards() {
    let server = TestServer::start(env!("CARGO_BIN_EXE_onair"), &[("ONAIR_MEDIA_SHARDS", "2")]);
    let http = SocketAddr::from(([127, 0, 0, 1], server.http_port));
    let member = spawn(LiveOptions {
        url: server.ws_url(),
        room: "stage".into(),
        name: "host".into(),
        publish: Some(Publish {
            video: true,
            audio: true,
            simulcast: false,
        }),
        chat: None,
        stay: Duration::from_secs(10),
    });
    std::thread::sleep(Duration::from_secs(2));
    let until = Instant::now() + Duration::from_secs(6);
    // Two viewers, one on each shard.
    let (reports, shards) = runtime().block_on(viewers_and_status(
        http,
        "stage/host",
        2,
        until,
        Duration::from_secs(4),
    ));
    member.join().expect("member thread").expect("member ran");
    for (i, r) in reports.iter().enumerate() {
        // The report tells audio by the WHIP test publisher's payload, which a room member's
        // is not: every packet counts as video here. About 4 s of 30 fps video and 50 Opus
        // packets a second.
        assert!(r.video_packets > 300, "viewer {i}: {r:?}");
        assert!(r.missing < 10, "viewer {i}: {} missing", r.missing);
    }
    let shards = shards["shards"].as_array().cloned().unwrap_or_default();
    assert_eq!(shards.len(), 2, "{shards:?}");
    assert!(
        shards
            .iter()
            .all(|s| s["rtp_out"].as_u64().unwrap_or(0) > 100),
        "both shards send to a viewer: {shards:?}"
    );
    assert_eq!(server.stop(), Some(0), "SIGTERM exits 0");
}
