//! The same test participant in real time, against a running onair: a WebSocket for
//! signalling and two UDP sockets on 127.0.0.1. Used by loopback integration tests and by
//! benchmarks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sfu::ConnId;
use sfu::signal::ServerMessage;
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, Publish};
use crate::link::Link;

/// What a live participant does.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// `ws://127.0.0.1:PORT/rtc`.
    pub url: String,
    /// Room to join.
    pub room: String,
    /// Display name.
    pub name: String,
    /// What to publish.
    pub publish: Option<Publish>,
    /// A chat message to send once the data channel is open, this long after joining.
    pub chat: Option<(Duration, String)>,
    /// How long to stay.
    pub stay: Duration,
}

/// Runs one participant on its own thread for `opts.stay`, then returns what it saw.
pub fn spawn(opts: LiveOptions) -> std::thread::JoinHandle<Result<Client, String>> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(run(opts))
    })
}

async fn run(opts: LiveOptions) -> Result<Client, String> {
    let _ = std::panic::catch_unwind(|| {
        sfu::str0m::crypto::from_feature_flags().install_process_default()
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(&opts.url)
        .await
        .map_err(|e| format!("connect {}: {e}", opts.url))?;
    let pub_sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let sub_sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let pub_addr = pub_sock.local_addr().map_err(|e| e.to_string())?;
    let sub_addr = sub_sock.local_addr().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut client = Client::with_addrs(
        &opts.name,
        ConnId(0),
        pub_addr,
        sub_addr,
        Link::clean(),
        start,
    );
    client.publish = opts.publish;
    let join =
        serde_json::to_string(&client.join_message(&opts.room)).map_err(|e| e.to_string())?;
    ws.send(Message::text(join))
        .await
        .map_err(|e| e.to_string())?;

    let end = start + opts.stay;
    let mut chat = opts.chat.clone();
    let (mut buf_a, mut buf_b) = (vec![0u8; 2048], vec![0u8; 2048]);
    loop {
        let (packets, signals) = client.take_outputs();
        for (from, to, data) in packets {
            let sock = if from == pub_addr {
                &pub_sock
            } else {
                &sub_sock
            };
            let _ = sock.send_to(&data, to).await;
        }
        for s in signals {
            let text = serde_json::to_string(&s).map_err(|e| e.to_string())?;
            ws.send(Message::text(text))
                .await
                .map_err(|e| e.to_string())?;
        }
        let now = Instant::now();
        if now >= end {
            let _ = ws.close(None).await;
            return Ok(client);
        }
        if let Some((at, text)) = &chat
            && now >= start + *at
            && client.send_chat(now, text)
        {
            chat = None;
            continue;
        }
        let wake = client
            .deadline()
            .min(end)
            .max(now + Duration::from_micros(100));
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let msg: ServerMessage = serde_json::from_str(&t)
                        .map_err(|e| format!("server sent {t}: {e}"))?;
                    client.on_signal(Instant::now(), msg);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("websocket: {e}")),
                None => return Ok(client),
            },
            r = pub_sock.recv_from(&mut buf_a) => {
                if let Ok((n, from)) = r {
                    client.receive(Instant::now(), from, pub_addr, &buf_a[..n]);
                }
            }
            r = sub_sock.recv_from(&mut buf_b) => {
                if let Ok((n, from)) = r {
                    client.receive(Instant::now(), from, sub_addr, &buf_b[..n]);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                client.tick(Instant::now());
            }
        }
    }
}

/// Each number once per process: the kernel hands a port just closed out again, so two calls
/// before the server binds either (its HTTP and RTMP ports) could get the same one (CI once
/// failed so: "binding HTTP …: Address already in use").
static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// `n` consecutive free ports (TCP and UDP) from the one returned: a test server's media
/// shards take `media.port + i`.
pub fn free_port_run(n: u16) -> u16 {
    loop {
        let first = free_port();
        let rest: Vec<u16> = (1..n).filter_map(|i| first.checked_add(i)).collect();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        let free = |p: u16| {
            !given.contains(&p)
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        };
        if rest.len() + 1 == usize::from(n.max(1)) && rest.iter().all(|&p| free(p)) {
            given.extend(rest);
            return first;
        }
    }
}

/// A free TCP port on 127.0.0.1 (and, by convention here, its UDP twin) for a test server.
pub fn free_port() -> u16 {
    // Numbers passed over stay bound until one is found, so the kernel offers others.
    let mut held = Vec::new();
    // Bind both protocols to be sure the number is free for the server's UDP and ICE-TCP.
    loop {
        let Ok(tcp) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else { continue };
        let free_udp = std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), addr.port())).is_ok();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if free_udp && !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr.port();
        }
        held.push(tcp);
    }
}
