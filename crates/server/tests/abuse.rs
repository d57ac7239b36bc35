//! The attacks of issue 18, each from one unauthenticated client on loopback, reproduced and
//! shown bounded: the server lets the attacker's excess go and everyone else goes on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use testkit::server::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &TestServer) -> Ws {
    tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("connects")
        .0
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a message within 30 s")
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON");
        }
    }
}

/// The server's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The server's open file descriptors.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A TCP connection to `port` on 127.0.0.1 from `from` (another loopback address is another
/// client to the server).
async fn tcp_from(from: &str, port: u16) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from.parse().expect("address"), 0))?;
    s.connect(SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// One HTTP/1.1 request on its own connection; the status and the response's head.
async fn http(from: &str, port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut s) = tcp_from(from, port).await else {
        return (0, String::new());
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn a_member_that_never_reads_is_let_go_and_memory_stays_bounded() {
    // The sender's own budget raised, so that the flood reaches the sink (the next test
    // shows the budget).
    let server = TestServer::start(
        env!("CARGO_BIN_EXE_onair"),
        &[
            ("ONAIR_LIMITS_SIGNAL_BYTES_PER_SECOND", "1000000000"),
            ("ONAIR_LIMITS_SIGNAL_BURST_BYTES", "1000000000"),
        ],
    );
    let join = |name: &str| json!({"type": "join", "room": "flood", "name": name, "mode": "p2p"});
    let mut sender = connect(&server).await;
    sender
        .send(Message::text(join("sender").to_string()))
        .await
        .unwrap();
    assert_eq!(recv(&mut sender).await["type"], "joined");
    let mut sink = connect(&server).await;
    sink.send(Message::text(join("sink").to_string()))
        .await
        .unwrap();
    assert_eq!(recv(&mut sink).await["type"], "joined");
    // From here on the sink never reads.
    let m = recv(&mut sender).await;
    assert_eq!(m["type"], "participant_joined", "{m}");
    let before = rss_kib(server.pid());

    // 3000 messages of 32 KiB (96 MB) for the sink, as fast as the server takes them.
    let payload = "x".repeat(32 * 1024);
    let flood = json!({"type": "signal", "data": payload}).to_string();
    let t0 = Instant::now();
    // Paced by a ping every 100 messages, so that what piles up is the sink's, not the
    // server's inbound queue (which the sender's own budget bounds; raised here).
    for i in 0..3000 {
        sender.send(Message::text(flood.clone())).await.unwrap();
        if i % 100 == 99 {
            sender
                .send(Message::text(r#"{"type":"ping"}"#))
                .await
                .unwrap();
            while recv(&mut sender).await["type"] != "pong" {}
        }
    }
    let sent = t0.elapsed();
    // The sink is dropped; the sender hears it leave and is still served.
    let left = loop {
        let m = recv(&mut sender).await;
        if m["type"] == "participant_left" {
            break t0.elapsed();
        }
    };
    sender
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    loop {
        if recv(&mut sender).await["type"] == "pong" {
            break;
        }
    }
    let after = rss_kib(server.pid());
    eprintln!(
        "flood of 96 MB at a socket that never reads: sent in {sent:?}, the sink dropped after {left:?}; RSS {before} -> {after} KiB"
    );
    // Before the queue was bounded this held gigabytes; now at most the socket buffers and
    // 128 queued messages (4 MiB) are held while the write deadline runs. (It leaves 10 s
    // after its queue filled, when a write has waited that long, then the room's 20 s grace
    // for a resume runs.)
    assert!(
        after < before + 64 * 1024,
        "RSS grew by {} KiB",
        after - before
    );
}

#[tokio::test]
async fn a_burst_of_whip_posts_gets_429_past_the_limit_and_another_address_does_not() {
    let server = TestServer::start(env!("CARGO_BIN_EXE_onair"), &[]);
    let port = server.http_port;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..200 {
        let (status, head) = http("127.0.0.1", port, "POST", "/whip/live/burst", "v=0\r\n").await;
        if status == 429 && retry_after.is_none() {
            retry_after = head
                .lines()
                .find_map(|l| l.strip_prefix("retry-after: ").map(str::to_owned));
        }
        statuses.push(status);
    }
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    let first = statuses.iter().position(|&s| s == 429);
    eprintln!(
        "200 WHIP POSTs: {refused} answered 429, the first at #{first:?}; Retry-After {retry_after:?}"
    );
    // The default burst is 100 (then 20 a second): the first hundred are answered (400: the
    // offers are not SDP), most of the rest refused.
    assert!(statuses[..100].iter().all(|&s| s == 400), "{statuses:?}");
    assert!(refused >= 80, "{statuses:?}");
    assert!(retry_after.is_some_and(|v| v.trim().parse::<u64>().is_ok_and(|s| s >= 1)));
    // Another address is not affected.
    let (other, _) = http("127.0.0.2", port, "POST", "/whip/live/burst", "v=0\r\n").await;
    assert_eq!(other, 400, "127.0.0.2 is answered");
    // Pages and LL-HLS are not rate-limited.
    let (page, _) = http("127.0.0.1", port, "GET", "/healthz", "").await;
    assert_eq!(page, 200);
    let (_, metrics) = http("127.0.0.2", port, "GET", "/metrics", "").await;
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("onair_limits_refused_total{reason=\"rate\"} "))
        .and_then(|v| v.trim().parse::<usize>().ok());
    assert_eq!(counted, Some(refused), "/metrics counts them");
}

#[tokio::test]
async fn idle_connections_are_closed_by_their_deadlines_and_resources_come_back() {
    let rtmp = testkit::live::free_port();
    let listen = format!("127.0.0.1:{rtmp}");
    let server = TestServer::start(
        env!("CARGO_BIN_EXE_onair"),
        &[
            ("ONAIR_LIMITS_CONNECTIONS_PER_IP", "5000"),
            ("ONAIR_LIMITS_IDLE_SECS", "3"),
            ("ONAIR_LIMITS_HEADER_DEADLINE_SECS", "2"),
            ("ONAIR_LIMITS_AUTH_DEADLINE_SECS", "3"),
            ("ONAIR_RTMP_LISTEN", &listen),
        ],
    );
    let pid = server.pid();
    let (_, health) = http("127.0.0.1", server.http_port, "GET", "/healthz", "").await;
    assert!(health.contains("200 OK"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds0, rss0) = (fds(pid), rss_kib(pid));
    // Four waves of 1000 idle connections spread over the four TCP front doors (HTTP, TURN,
    // RTMP, ICE-TCP on the media port) and a half-sent request (a slowloris).
    let ports = [server.http_port, server.turn_port, rtmp, server.media_port];
    let mut after = Vec::new();
    for wave in 1..=4 {
        let mut held = Vec::new();
        for i in 0..1000 {
            let port = ports[i % ports.len()];
            held.push(tcp_from("127.0.0.1", port).await.expect("connects"));
        }
        let mut slow = tcp_from("127.0.0.1", server.http_port).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(slow);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (fds_held, rss_held) = (fds(pid), rss_kib(pid));
        assert!(
            fds_held >= fds0 + 1000,
            "the server holds them: {fds0} -> {fds_held}"
        );
        // Each is closed by the server: reading gives EOF (or a reset) within the deadlines.
        let t0 = Instant::now();
        let mut closed = 0;
        for s in &mut held {
            let mut b = [0u8; 64];
            let r = tokio::time::timeout(Duration::from_secs(15), s.read(&mut b)).await;
            if matches!(r, Ok(Ok(0) | Err(_))) {
                closed += 1;
            }
        }
        let took = t0.elapsed();
        drop(held);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (fds1, rss1) = (fds(pid), rss_kib(pid));
        eprintln!(
            "wave {wave}: 1001 idle connections (HTTP, TURN over TCP, RTMP, ICE-TCP, one half-sent request): \
             {closed} closed by the server within {took:?}; fds {fds0} -> {fds_held} -> {fds1}; \
             RSS {rss0} -> {rss_held} (held) -> {rss1} KiB"
        );
        assert_eq!(closed, 1001);
        assert!(fds1 <= fds0 + 5, "descriptors given back: {fds0} -> {fds1}");
        after.push(rss1);
    }
    // The allocator keeps much of what a wave freed (glibc does not hand small blocks back to
    // the kernel) and later waves reuse it: a wave holds ~18 MB, and were it leaked, three more
    // would add ~54 MB; seen here alone: +2 to +5 MB in all, settling (more beside other
    // tests: the margin is 16 MB).
    assert!(
        after[3] < after[0] + 16 * 1024,
        "RSS after each wave: {after:?} KiB"
    );
    // The server still answers.
    let (ok, _) = http("127.0.0.1", server.http_port, "GET", "/healthz", "").await;
    assert_eq!(ok, 200);
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_connections() {
    let server = TestServer::start(
        env!("CARGO_BIN_EXE_onair"),
        &[
            ("ONAIR_LIMITS_CONNECTIONS_PER_IP", "50"),
            // (Longer than the test: only the cap closes connections here.)
            ("ONAIR_LIMITS_HEADER_DEADLINE_SECS", "60"),
            ("ONAIR_LIMITS_IDLE_SECS", "60"),
        ],
    );
    // (TestServer's readiness probe is a connection too: let it go first.)
    let (up, _) = http("127.0.0.1", server.http_port, "GET", "/healthz", "").await;
    assert_eq!(up, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(tcp_from("127.0.0.1", server.http_port).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Those past the 50th are closed at once.
    let mut closed = 0;
    let mut which = Vec::new();
    for (i, s) in held.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await;
        if matches!(r, Ok(Ok(0) | Err(_))) {
            closed += 1;
            which.push(i);
        }
    }
    eprintln!("80 connections from one address, 50 allowed: closed at once {which:?}");
    assert_eq!(closed, 30, "80 connections, 50 allowed");
    // The same address is refused, another is answered.
    let (other, _) = http("127.0.0.2", server.http_port, "GET", "/healthz", "").await;
    assert_eq!(other, 200);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (again, _) = http("127.0.0.1", server.http_port, "GET", "/healthz", "").await;
    assert_eq!(again, 200, "slots come back when connections close");
}

#[tokio::test]
async fn a_socket_flooding_the_server_is_held_to_its_budget() {
    let server = TestServer::start(env!("CARGO_BIN_EXE_onair"), &[]);
    let mut ws = connect(&server).await;
    ws.send(Message::text(
        json!({"type": "join", "room": "budget", "name": "flood", "mode": "p2p"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(recv(&mut ws).await["type"], "joined");
    let before = rss_kib(server.pid());
    let flood = json!({"type": "signal", "data": "x".repeat(32 * 1024)}).to_string();
    for _ in 0..3000 {
        ws.send(Message::text(flood.clone())).await.unwrap();
    }
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    let mut limited = 0;
    loop {
        let m = recv(&mut ws).await;
        match m["type"].as_str() {
            Some("error") if m["code"] == "rate_limited" => limited += 1,
            Some("pong") => break,
            _ => {}
        }
    }
    let after = rss_kib(server.pid());
    eprintln!(
        "3000 messages of 32 KiB on one socket: {limited} rate_limited errors; RSS {before} -> {after} KiB"
    );
    // The default burst is 1 MiB: about 30 messages pass, the rest are dropped unread, and
    // the client is told (once a second at most).
    assert!(limited >= 1, "{limited}");
    assert!(
        after < before + 32 * 1024,
        "RSS grew by {} KiB",
        after - before
    );
}

#[tokio::test]
async fn asking_for_turn_credentials_again_does_not_make_a_new_quota() {
    let server = TestServer::start(env!("CARGO_BIN_EXE_onair"), &[]);
    let user = |body: &str| -> Option<String> {
        let json = body.split("\r\n\r\n").nth(1)?;
        let v: Value = serde_json::from_str(json).ok()?;
        let name = v[1]["username"].as_str()?;
        Some(name.split_once(':')?.1.to_owned())
    };
    let mut users = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (status, body) =
            http("127.0.0.1", server.http_port, "GET", "/api/ice-servers", "").await;
        assert_eq!(status, 200);
        users.insert(user(&body).expect("a TURN username"));
    }
    let (_, other) = http("127.0.0.2", server.http_port, "GET", "/api/ice-servers", "").await;
    let other = user(&other).expect("a TURN username");
    eprintln!("20 calls from 127.0.0.1: TURN users {users:?}; from 127.0.0.2: {other}");
    // One user per address: turn.max_allocations_per_user applies to all of them together.
    assert_eq!(users.len(), 1, "{users:?}");
    assert!(users.contains("ip-127.0.0.1"), "{users:?}");
    assert_eq!(other, "ip-127.0.0.2");
}

#[tokio::test]
async fn one_address_holds_no_more_rooms_than_its_connections() {
    let server = TestServer::start(
        env!("CARGO_BIN_EXE_onair"),
        &[("ONAIR_LIMITS_CONNECTIONS_PER_IP", "50")],
    );
    let (up, _) = http("127.0.0.1", server.http_port, "GET", "/healthz", "").await;
    assert_eq!(up, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut joined = Vec::new();
    let mut refused = 0;
    for i in 0..80 {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(server.ws_url()).await else {
            refused += 1;
            continue;
        };
        let join = json!({"type": "join", "room": format!("r{i}"), "name": "x"}).to_string();
        if ws.send(Message::text(join)).await.is_err() {
            refused += 1;
            continue;
        }
        let reply = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    return t.contains("\"joined\"");
                }
            }
            false
        })
        .await;
        if reply == Ok(true) {
            joined.push(ws);
        } else {
            refused += 1;
        }
    }
    let (_, rooms) = http("127.0.0.2", server.http_port, "GET", "/api/rooms", "").await;
    let body = rooms.split("\r\n\r\n").nth(1).unwrap_or_default();
    let open = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["rooms"].as_array().map(Vec::len))
        .unwrap_or(usize::MAX);
    eprintln!(
        "80 joins of new rooms from one address: {} joined, {refused} refused; {open} rooms open",
        joined.len()
    );
    assert_eq!(joined.len(), 50);
    assert_eq!(open, 50);
}

#[tokio::test]
async fn clients_that_never_authenticate_are_let_go_at_the_deadline() {
    let rtmp = testkit::live::free_port();
    let listen = format!("127.0.0.1:{rtmp}");
    let server = TestServer::start(
        env!("CARGO_BIN_EXE_onair"),
        &[
            ("ONAIR_LIMITS_AUTH_DEADLINE_SECS", "2"),
            ("ONAIR_RTMP_LISTEN", &listen),
        ],
    );
    let (up, _) = http("127.0.0.1", server.http_port, "GET", "/healthz", "").await;
    assert_eq!(up, 200);
    // RTMP slowloris: 100 connections, each sending a byte of its handshake every 500 ms.
    let mut trickle = Vec::new();
    for _ in 0..100 {
        trickle.push(tcp_from("127.0.0.1", rtmp).await.expect("RTMP connects"));
    }
    let t0 = Instant::now();
    let mut open = trickle.len();
    while open > 0 && t0.elapsed() < Duration::from_secs(10) {
        open = 0;
        for s in &mut trickle {
            if s.write_all(&[3]).await.is_ok() {
                let mut b = [0u8; 1];
                let r = tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await;
                if !matches!(r, Ok(Ok(0) | Err(_))) {
                    open += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rtmp_took = t0.elapsed();
    // A real publisher's handshake from another address is answered meanwhile.
    let mut real = tcp_from("127.0.0.2", rtmp).await.unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 1536));
    real.write_all(&c0c1).await.unwrap();
    let mut s0s1 = vec![0u8; 1537];
    let answered = tokio::time::timeout(Duration::from_secs(2), real.read_exact(&mut s0s1)).await;
    // /rtc and /rtws sockets that never join, play or publish.
    let mut rtc = connect(&server).await;
    let rtws_url = format!("ws://127.0.0.1:{}/rtws/live", server.http_port);
    let (mut rtws, _) = tokio_tungstenite::connect_async(rtws_url).await.unwrap();
    let t1 = Instant::now();
    let rtc_close = tokio::time::timeout(Duration::from_secs(6), async {
        while let Some(m) = rtc.next().await {
            if let Ok(Message::Close(f)) = m {
                return f.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await;
    let rtws_closed = tokio::time::timeout(Duration::from_secs(6), async {
        while let Some(Ok(m)) = rtws.next().await {
            if let Message::Close(_) = m {
                break;
            }
        }
    })
    .await;
    eprintln!(
        "with limits.auth_deadline_secs=2: 100 trickling RTMP connections all closed after {rtmp_took:?}; \
         /rtc without join closed with {rtc_close:?}, /rtws without a flow closed after {:?}",
        t1.elapsed()
    );
    assert_eq!(open, 0, "every trickling RTMP connection closed");
    assert!(rtmp_took < Duration::from_secs(5), "{rtmp_took:?}");
    assert!(
        answered.is_ok_and(|r| r.is_ok()),
        "a real handshake is answered"
    );
    assert_eq!(s0s1[0], 3);
    assert_eq!(rtc_close.ok().flatten(), Some(1008));
    assert!(rtws_closed.is_ok());
}
