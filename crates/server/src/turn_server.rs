//! The STUN/TURN server's sockets: UDP and TCP listeners, one UDP socket per allocation, and
//! the in-process paths. The protocol lives in the `turn` crate; this module only moves bytes
//! between it and the network.
//!
//! There is no TURN task that packets queue for: whoever has bytes (the listener's reader, a
//! relay socket's reader, a TCP client's reader, the media loop) locks the core, feeds it, and
//! sends what it answers, on its own thread. A channel hop and a task wake per relayed packet
//! cost more than the whole TURN work (coturn's threads do the same: read, process, send).
//!
//! Relayed traffic addressed to the SFU's media port never touches the kernel: the datagram a
//! client relays to the SFU is handed to the media loop as if it came from the relayed address,
//! and what the SFU sends to a relayed address comes back through [`TurnShared::from_sfu`].
//! Relay to relay (two relayed members of a P2P room) stays inside the core.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};
use turn::{Credentials, Output, PeerPolicy, Transport, Turn, TurnConfig};

use crate::config::Config;
use crate::media_loop::Command;

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
    pub refusals: Mutex<Vec<(&'static str, u64)>>,
}

/// Binds the listeners and starts the readers. None when TURN is off.
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
    // Every client's packets arrive on this one socket: a burst from many clients must not
    // overflow the default ~200 KiB while a reader is busy.
    socket_buffers(&udp, LISTENER_BUFFER);
    let tcp = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding TURN tcp/{listen}: {e}"))?;
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
    let mut core = Turn::new(
        TurnConfig {
            realm: t.realm.clone(),
            credentials,
            policy,
            max_allocations: t.max_allocations,
            max_allocations_per_user: t.max_allocations_per_user,
            allocation_bytes_per_sec: t.allocation_kbps * 1000 / 8,
        },
        Instant::now(),
    );
    core.add_listener(Transport::Udp, listen);
    core.add_listener(Transport::Tcp, listen);
    let udp = Arc::new(udp);
    let shared = Arc::new(TurnShared {
        state: Mutex::new(State {
            core,
            relays: HashMap::new(),
            tcp: HashMap::new(),
        }),
        udp: udp.clone(),
        listen,
        media,
        media_addrs,
        bind: t.bind,
        advertised: config.turn_ips()[0],
        ports: (t.relay_port_min, t.relay_port_max),
        counters,
    });
    tokio::spawn(listener_reader(shared.clone(), udp));
    tokio::spawn(accept_tcp(shared.clone(), tcp));
    tokio::spawn(timers(shared));
    Ok(Some(listen))
}

/// The TURN core and the sockets it answers through.
pub struct TurnShared {
    state: Mutex<State>,
    udp: Arc<UdpSocket>,
    listen: SocketAddr,
    media: mpsc::UnboundedSender<Command>,
    media_addrs: Vec<SocketAddr>,
    bind: IpAddr,
    advertised: IpAddr,
    ports: (u16, u16),
    counters: Arc<TurnCounters>,
}

struct State {
    core: Turn,
    relays: HashMap<SocketAddr, RelaySocket>,
    tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
}

struct RelaySocket {
    socket: Arc<UdpSocket>,
    reader: AbortHandle,
    /// The media loop knows this relay (it got a datagram from it in-process).
    known_to_sfu: bool,
}

/// A send decided under the lock and done after it.
enum Send {
    Udp(Arc<UdpSocket>, SocketAddr, Vec<u8>),
    Tcp(mpsc::Sender<Vec<u8>>, Vec<u8>),
    Sfu(Command),
}

impl TurnShared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the core; the state is still the
        // best there is, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds the core under the lock, then sends what it answered outside it.
    fn run(self: &Arc<Self>, feed: impl FnOnce(&mut Turn)) {
        let mut sends = Vec::new();
        {
            let mut st = self.lock();
            feed(&mut st.core);
            self.collect(&mut st, &mut sends);
        }
        for s in sends {
            match s {
                Send::Udp(socket, to, data) => {
                    if let Err(e) = socket.try_send_to(&data, to) {
                        // A full socket buffer drops, as the network would.
                        debug!("turn send to {to}: {e}");
                    }
                }
                // A client that stops reading loses packets, not our memory.
                Send::Tcp(writer, data) => {
                    let _ = writer.try_send(data);
                }
                Send::Sfu(cmd) => {
                    let _ = self.media.send(cmd);
                }
            }
        }
    }

    /// A datagram the SFU sends to one of our relayed addresses.
    pub fn from_sfu(self: &Arc<Self>, relayed: SocketAddr, from: SocketAddr, data: &[u8]) {
        self.run(|core| core.recv_peer(relayed, from, data, Instant::now()));
    }

    fn collect(self: &Arc<Self>, st: &mut State, sends: &mut Vec<Send>) {
        while let Some(out) = st.core.poll_output() {
            match out {
                Output::Transmit(t) => self.route(st, t, sends),
                Output::Allocate {
                    listener,
                    transport,
                    client,
                    ipv6,
                } => {
                    // Relays are bound on turn.bind, one family; IPv6 allocations are refused
                    // (508) until dual-stack relays are added.
                    let relayed = if ipv6 { None } else { self.open_relay(st) };
                    st.core
                        .allocated(listener, transport, client, ipv6, relayed, Instant::now());
                }
                Output::CloseRelay(addr) => {
                    if let Some(r) = st.relays.remove(&addr) {
                        r.reader.abort();
                        if r.known_to_sfu {
                            sends.push(Send::Sfu(Command::RelayClosed(addr)));
                        }
                    }
                }
                Output::CloseTcp { remote, .. } => {
                    st.tcp.remove(&remote);
                }
            }
        }
    }

    fn route(self: &Arc<Self>, st: &mut State, t: turn::Transmit, sends: &mut Vec<Send>) {
        let Some(relay) = st.relays.get_mut(&t.from) else {
            // From a listener: to a client.
            match t.transport {
                Transport::Udp => sends.push(Send::Udp(self.udp.clone(), t.to, t.data)),
                Transport::Tcp => {
                    if let Some(w) = st.tcp.get(&t.to) {
                        sends.push(Send::Tcp(w.clone(), t.data));
                    }
                }
            }
            return;
        };
        if self.media_addrs.contains(&t.to) {
            // To the SFU: in-process, as if it had arrived on the media socket.
            if !relay.known_to_sfu {
                relay.known_to_sfu = true;
                info!(relayed = %t.from, "TURN relay reaches the SFU in-process");
            }
            self.counters
                .in_process_packets
                .fetch_add(1, Ordering::Relaxed);
            sends.push(Send::Sfu(Command::Relayed {
                from: t.from,
                to: t.to,
                data: t.data,
                turn: self.clone(),
            }));
            return;
        }
        let socket = relay.socket.clone();
        if st.relays.contains_key(&t.to) {
            // Relay to relay: straight into the other allocation (its output is collected by
            // the caller's loop).
            st.core.recv_peer(t.to, t.from, &t.data, Instant::now());
            return;
        }
        sends.push(Send::Udp(socket, t.to, t.data));
    }

    /// Binds a relay socket on a port from the range; returns the address clients see.
    fn open_relay(self: &Arc<Self>, st: &mut State) -> Option<SocketAddr> {
        let (lo, hi) = self.ports;
        let span = u32::from(hi - lo) + 1;
        for _ in 0..32 {
            let port = lo + (fastrand::u32(0..span) as u16);
            let Ok(std_socket) = std::net::UdpSocket::bind(SocketAddr::new(self.bind, port)) else {
                continue;
            };
            let socket = match std_socket
                .set_nonblocking(true)
                .and_then(|()| UdpSocket::from_std(std_socket))
            {
                Ok(s) => {
                    socket_buffers(&s, RELAY_BUFFER);
                    Arc::new(s)
                }
                Err(e) => {
                    warn!("relay socket: {e}");
                    return None;
                }
            };
            let advertised = SocketAddr::new(self.advertised, port);
            let reader = tokio::spawn(relay_reader(self.clone(), socket.clone(), advertised));
            st.relays.insert(
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
        let st = self.lock();
        let s = st.core.stats();
        let c = &self.counters;
        c.allocations
            .store(st.core.allocations() as u64, Ordering::Relaxed);
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

/// Kernel buffers of the listener socket (all clients) and of each relay socket (one peer
/// stream each). Linux caps them at net.core.{r,w}mem_max.
const LISTENER_BUFFER: usize = 4 << 20;
const RELAY_BUFFER: usize = 1 << 20;

fn socket_buffers(socket: &UdpSocket, bytes: usize) {
    let s = socket2::SockRef::from(socket);
    if let Err(e) = s
        .set_recv_buffer_size(bytes)
        .and_then(|()| s.set_send_buffer_size(bytes))
    {
        debug!("socket buffers: {e}");
    }
}

/// Datagrams taken per wake beyond the first, under one lock.
const RECV_BATCH: usize = 32;

async fn listener_reader(shared: Arc<TurnShared>, udp: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65536];
    let mut more = vec![0u8; 65536];
    let listen = shared.listen;
    loop {
        match udp.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let now = Instant::now();
                shared.run(|core| {
                    core.recv_client(Transport::Udp, listen, from, &buf[..n], now);
                    // Whatever else is queued is taken now, under the same lock.
                    for _ in 0..RECV_BATCH {
                        let Ok((n, from)) = udp.try_recv_from(&mut more) else {
                            break;
                        };
                        core.recv_client(Transport::Udp, listen, from, &more[..n], now);
                    }
                });
            }
            // ICMP port unreachable from a vanished client shows up here on Linux; harmless.
            Err(e) => debug!("turn udp recv: {e}"),
        }
    }
}

async fn relay_reader(shared: Arc<TurnShared>, socket: Arc<UdpSocket>, relayed: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let mut more = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let now = Instant::now();
                shared.run(|core| {
                    core.recv_peer(relayed, from, &buf[..n], now);
                    for _ in 0..RECV_BATCH {
                        let Ok((n, from)) = socket.try_recv_from(&mut more) else {
                            break;
                        };
                        core.recv_peer(relayed, from, &more[..n], now);
                    }
                });
            }
            Err(e) => debug!("relay {relayed} recv: {e}"),
        }
    }
}

/// Allocation, permission and nonce expiry; counters for `/metrics` once a second.
async fn timers(shared: Arc<TurnShared>) {
    let mut last_stats = Instant::now();
    loop {
        let mut next = Instant::now() + Duration::from_secs(1);
        shared.run(|core| next = core.handle_timeout(Instant::now()));
        let now = Instant::now();
        if now >= last_stats + Duration::from_secs(1) {
            last_stats = now;
            shared.publish_stats();
        }
        tokio::time::sleep_until(next.max(now + Duration::from_millis(10)).into()).await;
    }
}

async fn accept_tcp(shared: Arc<TurnShared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(tcp_client(shared.clone(), stream, client));
            }
            Err(e) => {
                warn!("TURN tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One TURN-over-TCP client: bytes both ways; the core cuts the stream into frames.
async fn tcp_client(shared: Arc<TurnShared>, stream: TcpStream, client: SocketAddr) {
    let (mut rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(1024);
    shared.lock().tcp.insert(client, out_tx);
    let writer = tokio::spawn(async move {
        while let Some(data) = out_rx.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    let listen = shared.listen;
    let mut buf = vec![0u8; 16384];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => shared.run(|core| {
                core.recv_client(Transport::Tcp, listen, client, &buf[..n], Instant::now())
            }),
        }
        // The core may have closed it (a stream that is not STUN).
        if !shared.lock().tcp.contains_key(&client) {
            break;
        }
    }
    writer.abort();
    let mut st = shared.lock();
    st.tcp.remove(&client);
    st.core.tcp_closed(client);
}
