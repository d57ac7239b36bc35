//! The STUN/TURN server's sockets: UDP and TCP listeners, one UDP socket per allocation, and
//! the in-process path to the SFU. The protocol lives in the `turn` crate; this task only
//! moves bytes between it and the network.
//!
//! Relayed traffic addressed to the SFU's media port never touches the kernel: the datagram a
//! client relays to the SFU is handed to the media loop as if it came from the relayed address,
//! and what the SFU sends to a relayed address comes back here as a [`TurnIn::FromSfu`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sfu::signal::IceServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};
use turn::{Credentials, Output, PeerPolicy, Transport, Turn, TurnConfig};

use crate::config::Config;
use crate::media_loop::Command;

/// Messages into the TURN task.
#[derive(Debug)]
pub enum TurnIn {
    /// A datagram a peer sent to a relay socket.
    Peer {
        relayed: SocketAddr,
        from: SocketAddr,
        data: Vec<u8>,
    },
    /// Bytes from a TCP client.
    Tcp {
        listener: SocketAddr,
        client: SocketAddr,
        data: Vec<u8>,
    },
    /// A TCP client connected; its writer.
    TcpOpen {
        client: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    /// A TCP client went away.
    TcpClosed { client: SocketAddr },
    /// A datagram the SFU sends to a relayed address, handed over in-process.
    FromSfu {
        relayed: SocketAddr,
        from: SocketAddr,
        data: Vec<u8>,
    },
}

/// What clients are told about our STUN/TURN: the URLs, and fresh time-limited credentials.
#[derive(Debug)]
pub struct IceServers {
    urls: Vec<String>,
    stun_urls: Vec<String>,
    credentials: Credentials,
    ttl_secs: u64,
}

impl IceServers {
    /// From the config; `secret` is the REST secret in force (the configured or a random one).
    pub fn new(config: &Config, secret: &str) -> Self {
        let t = &config.turn;
        if !t.enabled {
            return Self {
                urls: Vec::new(),
                stun_urls: Vec::new(),
                credentials: Credentials::new(None),
                ttl_secs: 0,
            };
        }
        let hosts: Vec<String> = config
            .turn_ips()
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            })
            .collect();
        let urls = hosts
            .iter()
            .flat_map(|h| {
                [
                    format!("turn:{h}:{}?transport=udp", t.port),
                    format!("turn:{h}:{}?transport=tcp", t.port),
                ]
            })
            .collect();
        let stun_urls = hosts
            .iter()
            .map(|h| format!("stun:{h}:{}", t.port))
            .collect();
        Self {
            urls,
            stun_urls,
            credentials: Credentials::new(Some(secret)),
            ttl_secs: t.credential_ttl_secs,
        }
    }

    /// `RTCIceServer` objects for `user` (who the credentials name; quotas count per user).
    pub fn for_user(&self, user: &str) -> Vec<IceServer> {
        if self.urls.is_empty() {
            return Vec::new();
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Some(issued) = self.credentials.issue(user, now, self.ttl_secs) else {
            return Vec::new();
        };
        vec![
            IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            },
            IceServer {
                urls: self.urls.clone(),
                username: Some(issued.username),
                credential: Some(issued.password),
            },
        ]
    }
}

/// A REST secret for this run when none is configured: 24 bytes from the OS, base64.
pub fn random_secret() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// TURN's counters, shared with `/metrics`.
#[derive(Debug, Default)]
pub struct TurnCounters {
    pub allocations: AtomicU64,
    pub allocations_total: AtomicU64,
    pub to_peer_packets: AtomicU64,
    pub to_client_packets: AtomicU64,
    pub to_peer_bytes: AtomicU64,
    pub to_client_bytes: AtomicU64,
    pub in_process_packets: AtomicU64,
    pub refusals: std::sync::Mutex<Vec<(&'static str, u64)>>,
}

/// Binds the listeners and starts the task. None when TURN is off.
pub async fn start(
    config: &Config,
    secret: &str,
    media: mpsc::UnboundedSender<Command>,
    counters: Arc<TurnCounters>,
) -> anyhow::Result<Option<SocketAddr>> {
    let t = &config.turn;
    if !t.enabled {
        return Ok(None);
    }
    let listen = SocketAddr::new(t.bind, t.port);
    let udp = UdpSocket::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding TURN udp/{listen}: {e}"))?;
    let tcp = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding TURN tcp/{listen}: {e}"))?;
    let listen = udp.local_addr()?;
    let mut credentials = Credentials::new(Some(secret));
    for u in &t.users {
        if let Some((name, pass)) = u.split_once(':') {
            credentials.add_user(name, pass);
        }
    }
    let media_port = config.media.port;
    let mut media_addrs: Vec<SocketAddr> = config
        .advertised_ips()
        .into_iter()
        .map(|ip| SocketAddr::new(ip, media_port))
        .collect();
    media_addrs.push(SocketAddr::new(config.media.bind, media_port));
    let mut services = vec![config.http.listen, config.rtmp.listen, listen];
    services.extend(
        config
            .turn_ips()
            .into_iter()
            .map(|ip| SocketAddr::new(ip, t.port)),
    );
    let policy = PeerPolicy {
        allow_loopback: t.allow_loopback_peers,
        allow_private: t.allow_private_peers,
        media: media_addrs.clone(),
        services,
    };
    let now = Instant::now();
    let mut core = Turn::new(
        TurnConfig {
            realm: t.realm.clone(),
            credentials,
            policy,
            max_allocations: t.max_allocations,
            max_allocations_per_user: t.max_allocations_per_user,
            allocation_bytes_per_sec: t.allocation_kbps * 1000 / 8,
        },
        now,
    );
    core.add_listener(Transport::Udp, listen);
    core.add_listener(Transport::Tcp, listen);
    let (tx, rx) = mpsc::channel(4096);
    tokio::spawn(accept_tcp(tcp, listen, tx.clone()));
    let advertised = config.turn_ips()[0];
    let task = TurnTask {
        core,
        udp: Arc::new(udp),
        listen,
        tx,
        media,
        media_addrs,
        relays: HashMap::new(),
        tcp: HashMap::new(),
        bind: t.bind,
        advertised,
        ports: (t.relay_port_min, t.relay_port_max),
        counters,
    };
    tokio::spawn(task.run(rx));
    Ok(Some(listen))
}

struct RelaySocket {
    socket: Arc<UdpSocket>,
    reader: AbortHandle,
    /// The media loop knows this relay (it got a datagram from it in-process).
    known_to_sfu: bool,
}

struct TurnTask {
    core: Turn,
    udp: Arc<UdpSocket>,
    listen: SocketAddr,
    tx: mpsc::Sender<TurnIn>,
    media: mpsc::UnboundedSender<Command>,
    media_addrs: Vec<SocketAddr>,
    relays: HashMap<SocketAddr, RelaySocket>,
    tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    bind: IpAddr,
    advertised: IpAddr,
    ports: (u16, u16),
    counters: Arc<TurnCounters>,
}

impl TurnTask {
    async fn run(mut self, mut rx: mpsc::Receiver<TurnIn>) {
        let mut buf = vec![0u8; 65536];
        let mut deadline = self.core.handle_timeout(Instant::now());
        let mut last_stats = Instant::now();
        loop {
            tokio::select! {
                r = self.udp.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let now = Instant::now();
                        self.core.recv_client(Transport::Udp, self.listen, from, &buf[..n], now);
                        // Take what else is queued before flushing (as the media loop does).
                        for _ in 0..32 {
                            let Ok((n, from)) = self.udp.try_recv_from(&mut buf) else { break };
                            self.core.recv_client(Transport::Udp, self.listen, from, &buf[..n], now);
                        }
                    }
                    Err(e) => debug!("turn udp recv: {e}"),
                },
                msg = rx.recv() => match msg {
                    Some(m) => {
                        self.handle(m);
                        for _ in 0..32 {
                            let Ok(m) = rx.try_recv() else { break };
                            self.handle(m);
                        }
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    deadline = self.core.handle_timeout(Instant::now());
                }
            }
            self.flush().await;
            let now = Instant::now();
            if now >= last_stats + Duration::from_secs(1) {
                last_stats = now;
                self.publish_stats();
            }
        }
    }

    fn handle(&mut self, m: TurnIn) {
        let now = Instant::now();
        match m {
            TurnIn::Peer {
                relayed,
                from,
                data,
            } => self.core.recv_peer(relayed, from, &data, now),
            TurnIn::FromSfu {
                relayed,
                from,
                data,
            } => self.core.recv_peer(relayed, from, &data, now),
            TurnIn::Tcp {
                listener,
                client,
                data,
            } => self
                .core
                .recv_client(Transport::Tcp, listener, client, &data, now),
            TurnIn::TcpOpen { client, writer } => {
                self.tcp.insert(client, writer);
            }
            TurnIn::TcpClosed { client } => {
                self.tcp.remove(&client);
                self.core.tcp_closed(client);
            }
        }
    }

    async fn flush(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Transmit(t) => self.transmit(t).await,
                Output::Allocate {
                    listener,
                    transport,
                    client,
                    ipv6,
                } => {
                    let relayed = if ipv6 {
                        // Relays are bound on turn.bind, one family; IPv6 allocations are
                        // refused (508) until dual-stack relays are added.
                        None
                    } else {
                        self.open_relay().await
                    };
                    self.core
                        .allocated(listener, transport, client, ipv6, relayed, Instant::now());
                }
                Output::CloseRelay(addr) => {
                    if let Some(r) = self.relays.remove(&addr) {
                        r.reader.abort();
                        if r.known_to_sfu {
                            let _ = self.media.send(Command::RelayClosed(addr));
                        }
                    }
                }
                Output::CloseTcp { remote, .. } => {
                    self.tcp.remove(&remote);
                }
            }
        }
    }

    async fn transmit(&mut self, t: turn::Transmit) {
        if self.relays.contains_key(&t.from) && self.relays.contains_key(&t.to) {
            // Relay to relay (two relayed members of a P2P room): no trip through the kernel.
            self.core.recv_peer(t.to, t.from, &t.data, Instant::now());
            return;
        }
        if let Some(relay) = self.relays.get_mut(&t.from) {
            if self.media_addrs.contains(&t.to) {
                // To the SFU: in-process, as if it had arrived on the media socket.
                if !relay.known_to_sfu {
                    relay.known_to_sfu = true;
                    info!(relayed = %t.from, "TURN relay reaches the SFU in-process");
                }
                self.counters
                    .in_process_packets
                    .fetch_add(1, Ordering::Relaxed);
                let _ = self.media.send(Command::Relayed {
                    from: t.from,
                    to: t.to,
                    data: t.data,
                    turn: self.tx.clone(),
                });
                return;
            }
            if let Err(e) = relay.socket.try_send_to(&t.data, t.to) {
                debug!("relay {} → {}: {e}", t.from, t.to);
            }
            return;
        }
        match t.transport {
            Transport::Udp => {
                if let Err(e) = self.udp.try_send_to(&t.data, t.to) {
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        let _ = self.udp.send_to(&t.data, t.to).await;
                    } else {
                        debug!("turn udp send to {}: {e}", t.to);
                    }
                }
            }
            Transport::Tcp => {
                if let Some(w) = self.tcp.get(&t.to) {
                    // A client that stops reading loses packets, not our memory.
                    let _ = w.try_send(t.data);
                }
            }
        }
    }

    /// Binds a relay socket on a port from the range; returns the address clients see.
    async fn open_relay(&mut self) -> Option<SocketAddr> {
        let (lo, hi) = self.ports;
        let span = u32::from(hi - lo) + 1;
        for _ in 0..32 {
            let port = lo + (fastrand::u32(0..span) as u16);
            let Ok(socket) = UdpSocket::bind(SocketAddr::new(self.bind, port)).await else {
                continue;
            };
            let advertised = SocketAddr::new(self.advertised, port);
            let socket = Arc::new(socket);
            let reader = tokio::spawn(relay_reader(socket.clone(), advertised, self.tx.clone()));
            self.relays.insert(
                advertised,
                RelaySocket {
                    socket,
                    reader: reader.abort_handle(),
                    known_to_sfu: false,
                },
            );
            return Some(advertised);
        }
        warn!("no free relay port in {lo}..={hi}");
        None
    }

    fn publish_stats(&self) {
        let s = self.core.stats();
        let c = &self.counters;
        c.allocations
            .store(self.core.allocations() as u64, Ordering::Relaxed);
        c.allocations_total
            .store(s.allocations_total, Ordering::Relaxed);
        c.to_peer_packets
            .store(s.to_peer_packets, Ordering::Relaxed);
        c.to_client_packets
            .store(s.to_client_packets, Ordering::Relaxed);
        c.to_peer_bytes.store(s.to_peer_bytes, Ordering::Relaxed);
        c.to_client_bytes
            .store(s.to_client_bytes, Ordering::Relaxed);
        if let Ok(mut r) = c.refusals.lock() {
            *r = s.refusals.iter().map(|(k, v)| (*k, *v)).collect();
        }
    }
}

async fn relay_reader(socket: Arc<UdpSocket>, relayed: SocketAddr, tx: mpsc::Sender<TurnIn>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let m = TurnIn::Peer {
                    relayed,
                    from,
                    data: buf[..n].to_vec(),
                };
                // A full queue drops, like a full socket buffer would.
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(m) {
                    return;
                }
            }
            Err(e) => debug!("relay {relayed} recv: {e}"),
        }
    }
}

async fn accept_tcp(listener: TcpListener, listen: SocketAddr, tx: mpsc::Sender<TurnIn>) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(tcp_client(stream, listen, client, tx.clone()));
            }
            Err(e) => {
                warn!("TURN tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One TURN-over-TCP client: bytes both ways; the TURN core does the STUN/ChannelData framing.
async fn tcp_client(
    stream: TcpStream,
    listener: SocketAddr,
    client: SocketAddr,
    tx: mpsc::Sender<TurnIn>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(1024);
    if tx
        .send(TurnIn::TcpOpen {
            client,
            writer: out_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(data) = out_rx.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 16384];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let m = TurnIn::Tcp {
                    listener,
                    client,
                    data: buf[..n].to_vec(),
                };
                // TCP is not dropped: waiting here makes a fast sender wait for us.
                if tx.send(m).await.is_err() {
                    break;
                }
            }
        }
    }
    writer.abort();
    let _ = tx.send(TurnIn::TcpClosed { client }).await;
}
