//! The STUN/TURN server's sockets: UDP and TCP listeners, one UDP socket per allocation, and
//! the in-process paths. The protocol lives in the `turn` crate; this module only moves bytes
//! between it and the network.
//!
//! There is no TURN task that packets queue for: whoever has bytes (the listener's reader, a
//! relay socket's reader, a TCP client's reader, the media loop) locks the core, feeds it, and
//! sends what it answers, on its own thread. A channel hop and a task wake per relayed packet
//! cost more than the whole TURN work (coturn's threads do the same: read, process, send).
//! The UDP sockets are read on one thread of their own (`onair-turn`), many datagrams per
//! call (`batch`); TCP and TLS clients stay on the main runtime and lock the same core.
//!
//! Relayed traffic addressed to the SFU's media port never touches the kernel: the datagram a
//! client relays to the SFU is handed to the media loop as if it came from the relayed address,
//! and what the SFU sends to a relayed address comes back through [`TurnShared::from_sfu`].
//! Relay to relay (two relayed members of a P2P room) stays inside the core.

pub mod ice_servers;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};
use turn::{Credentials, Output, PeerPolicy, Transport, Turn, TurnConfig};

use crate::config::Config;
use crate::limits::{Door, Limits};
use crate::webrtc::engine::MediaHandle;
use crate::webrtc::shard::Command;

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

/// Binds the listeners and starts the readers. None when TURN is off; otherwise the UDP/TCP
/// listener address (IPv4).
pub async fn start(
    config: &Config,
    secret: &str,
    media: MediaHandle,
    counters: Arc<TurnCounters>,
    limits: Arc<Limits>,
) -> anyhow::Result<Option<SocketAddr>> {
    let t = &config.turn;
    if !t.enabled {
        return Ok(None);
    }
    let listen = SocketAddr::new(t.bind, t.port);
    let mut credentials = Credentials::new(Some(secret));
    // Nothing we issue lives longer than turn.credential_ttl_secs; a day of slack for another
    // service minting with the same secret. A credential for the year 2100 is refused.
    credentials.set_max_lifetime(t.credential_ttl_secs + 86_400);
    for u in &t.users {
        if let Some((name, pass)) = u.split_once(':') {
            credentials.add_user(name, pass);
        }
    }
    // Every shard's port, on every address it is reached at.
    let media_addrs: Vec<SocketAddr> = media.media_addrs().to_vec();
    let bind_v6 = config.turn_bind_v6();
    let binds: Vec<IpAddr> = std::iter::once(t.bind).chain(bind_v6).collect();
    let turn_ips = config.turn_ips();
    let mut services = vec![config.http.listen, config.rtmp.listen];
    for ip in binds.iter().chain(&turn_ips) {
        for port in std::iter::once(t.port).chain(t.tls_ports.iter().copied()) {
            services.push(SocketAddr::new(*ip, port));
        }
    }
    let policy = PeerPolicy {
        allow_loopback: t.allow_loopback_peers,
        allow_private: t.allow_private_peers,
        media: media_addrs.clone(),
        services,
    };
    let core = Turn::new(
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
    // Relayed addresses clients are told: the first TURN IP of the family, else the bind
    // address when it is a real one.
    let advertised = |v6: bool, bind: Option<IpAddr>| {
        turn_ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv6() == v6)
            .or(bind.filter(|ip| !ip.is_unspecified()))
    };
    let relay_v4 = advertised(false, Some(t.bind)).map(|ip| (t.bind, ip));
    let relay_v6 = bind_v6.and_then(|b| advertised(true, Some(b)).map(|ip| (b, ip)));
    if bind_v6.is_some() && relay_v6.is_none() {
        warn!("turn.bind_v6 is :: and turn.public_ips has no IPv6 address: IPv6 relays are off");
    }
    let tls = if t.tls_ports.is_empty() {
        None
    } else {
        let path = |s: &str| (!s.is_empty()).then(|| std::path::PathBuf::from(s));
        let tls = crate::tls::load(
            path(&t.tls_cert).as_deref(),
            path(&t.tls_key).as_deref(),
            &turn_ips,
        )?;
        if tls.self_signed {
            info!(
                "TURN over TLS uses a self-signed certificate made at start (set turn.tls_cert \
                 and turn.tls_key for one browsers accept); no turns: URLs are handed out"
            );
        }
        Some(tokio_rustls::TlsAcceptor::from(tls.config))
    };
    // UDP relaying runs on a thread of its own with a single-threaded runtime: a wake-up
    // there never hands the task to another worker (a futex wake and a cross-core hop per
    // packet on the shared runtime), and the receive buffers are the thread's (`batch`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rt = runtime.handle().clone();
    std::thread::Builder::new()
        .name("onair-turn".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    let shared = Arc::new(TurnShared {
        rt,
        state: Mutex::new(State {
            core,
            relays: HashMap::new(),
            tcp: HashMap::new(),
        }),
        udp: Mutex::new(HashMap::new()),
        media,
        media_addrs,
        relay_v4,
        relay_v6,
        ports: (t.relay_port_min, t.relay_port_max),
        counters,
    });
    for (i, ip) in binds.iter().enumerate() {
        // The IPv4 listeners must come up; IPv6 ones are extra (a host may have no IPv6).
        let r = listen_on(
            &shared,
            SocketAddr::new(*ip, t.port),
            &t.tls_ports,
            tls.as_ref(),
            &limits,
        )
        .await;
        match r {
            Ok(()) => {}
            Err(e) if i == 0 => return Err(e),
            Err(e) => warn!("TURN on IPv6 is off: {e:#}"),
        }
    }
    shared.rt.spawn(timers(shared.clone()));
    Ok(Some(listen))
}

/// UDP and TCP on `addr`, and TLS on each of `tls_ports` of its IP.
async fn listen_on(
    shared: &Arc<TurnShared>,
    addr: SocketAddr,
    tls_ports: &[u16],
    tls: Option<&tokio_rustls::TlsAcceptor>,
    limits: &Arc<Limits>,
) -> anyhow::Result<()> {
    let udp = {
        // Registered with the TURN thread's reactor, where it is read.
        let _rt = shared.rt.enter();
        crate::net::bind_udp(addr).map_err(|e| anyhow::anyhow!("binding TURN udp/{addr}: {e}"))?
    };
    // Every client's packets arrive on this one socket: a burst from many clients must not
    // overflow the default ~200 KiB while a reader is busy.
    socket_buffers(&udp, LISTENER_BUFFER);
    let tcp =
        crate::net::bind_tcp(addr).map_err(|e| anyhow::anyhow!("binding TURN tcp/{addr}: {e}"))?;
    let mut tls_listeners = Vec::new();
    if let Some(acceptor) = tls {
        for &port in tls_ports {
            let a = SocketAddr::new(addr.ip(), port);
            let l = crate::net::bind_tcp(a)
                .map_err(|e| anyhow::anyhow!("binding TURN tls/{a}: {e}"))?;
            tls_listeners.push((l, a, acceptor.clone()));
        }
    }
    let udp = Arc::new(udp);
    {
        let mut st = shared.lock();
        st.core.add_listener(Transport::Udp, addr);
        st.core.add_listener(Transport::Tcp, addr);
        for (_, a, _) in &tls_listeners {
            // TLS is TCP to the core: the IO layer decrypts.
            st.core.add_listener(Transport::Tcp, *a);
        }
    }
    shared.udp_lock().insert(addr, udp.clone());
    shared.rt.spawn(listener_reader(shared.clone(), udp, addr));
    tokio::spawn(accept_tcp(shared.clone(), tcp, addr, None, limits.clone()));
    for (l, a, acceptor) in tls_listeners {
        info!(listen = %a, "TURN over TLS");
        tokio::spawn(accept_tcp(
            shared.clone(),
            l,
            a,
            Some(acceptor),
            limits.clone(),
        ));
    }
    Ok(())
}

/// The TURN core and the sockets it answers through.
pub struct TurnShared {
    /// The TURN thread's runtime: UDP listeners, relay sockets and timers live there.
    rt: tokio::runtime::Handle,
    state: Mutex<State>,
    /// The UDP listeners by address (answers to clients leave through the one they came to).
    udp: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>,
    media: MediaHandle,
    media_addrs: Vec<SocketAddr>,
    /// (bind, advertised) IPs of IPv4 and IPv6 relays; None: that family is not offered.
    relay_v4: Option<(IpAddr, IpAddr)>,
    relay_v6: Option<(IpAddr, IpAddr)>,
    ports: (u16, u16),
    counters: Arc<TurnCounters>,
}

struct State {
    core: Turn,
    relays: HashMap<SocketAddr, RelaySocket>,
    /// TCP and TLS clients' writers by (listener, client).
    tcp: HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>,
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

    fn udp_lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<UdpSocket>>> {
        self.udp.lock().unwrap_or_else(|e| e.into_inner())
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
                Send::Sfu(cmd) => self.media.relayed_by_turn(cmd),
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
                    // A family that is not offered (no turn.bind_v6) is refused with 508.
                    let relayed = self.open_relay(st, ipv6);
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
                Output::CloseTcp { local, remote } => {
                    st.tcp.remove(&(local, remote));
                }
            }
        }
    }

    fn route(self: &Arc<Self>, st: &mut State, t: turn::Transmit, sends: &mut Vec<Send>) {
        let Some(relay) = st.relays.get_mut(&t.from) else {
            // From a listener: to a client.
            match t.transport {
                Transport::Udp => {
                    if let Some(udp) = self.udp_lock().get(&t.from) {
                        sends.push(Send::Udp(udp.clone(), t.to, t.data));
                    }
                }
                Transport::Tcp => {
                    if let Some(w) = st.tcp.get(&(t.from, t.to)) {
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
    fn open_relay(self: &Arc<Self>, st: &mut State, ipv6: bool) -> Option<SocketAddr> {
        let (bind, advertised) = if ipv6 { self.relay_v6 } else { self.relay_v4 }?;
        let (lo, hi) = self.ports;
        let span = u32::from(hi - lo) + 1;
        for _ in 0..32 {
            let port = lo + (fastrand::u32(0..span) as u16);
            let bound = {
                let _rt = self.rt.enter();
                crate::net::bind_udp(SocketAddr::new(bind, port))
            };
            let socket = match bound {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Ok(s) => {
                    socket_buffers(&s, RELAY_BUFFER);
                    Arc::new(s)
                }
                Err(e) => {
                    warn!("relay socket: {e}");
                    return None;
                }
            };
            let advertised = SocketAddr::new(advertised, port);
            let reader = self
                .rt
                .spawn(relay_reader(self.clone(), socket.clone(), advertised));
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

pub(crate) fn socket_buffers(socket: &UdpSocket, bytes: usize) {
    let s = socket2::SockRef::from(socket);
    if let Err(e) = s
        .set_recv_buffer_size(bytes)
        .and_then(|()| s.set_send_buffer_size(bytes))
    {
        debug!("socket buffers: {e}");
    }
}

/// Reads `socket` (bound to `local`) in batches, each fed to the core under one lock:
/// `feed(core, local, datagram, sender, now)`.
async fn reader(
    shared: Arc<TurnShared>,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    feed: fn(&mut Turn, SocketAddr, &[u8], SocketAddr, Instant),
) {
    loop {
        if let Err(e) = socket.readable().await {
            warn!("TURN socket {local}: {e}");
            return;
        }
        crate::net::batch::with_batch(|b| match b.recv(&socket, local.is_ipv6()) {
            Ok(0) => {}
            Ok(_) => {
                let now = Instant::now();
                shared.run(|core| {
                    for (data, from) in b.datagrams() {
                        feed(core, local, data, from, now);
                    }
                });
            }
            // ICMP port unreachable from a vanished client shows up here on Linux; harmless.
            Err(e) => debug!("TURN socket {local} recv: {e}"),
        });
    }
}

/// A listener's datagrams come from clients.
async fn listener_reader(shared: Arc<TurnShared>, udp: Arc<UdpSocket>, listen: SocketAddr) {
    reader(shared, udp, listen, |core, listen, data, from, now| {
        core.recv_client(Transport::Udp, listen, from, data, now)
    })
    .await
}

/// A relay socket's datagrams come from peers.
async fn relay_reader(shared: Arc<TurnShared>, socket: Arc<UdpSocket>, relayed: SocketAddr) {
    reader(shared, socket, relayed, |core, relayed, data, from, now| {
        core.recv_peer(relayed, from, data, now)
    })
    .await
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
        // The library's timers are lifetimes and nonces, seconds long; each pass walks every
        // allocation, so passes are at least a tenth of a second apart.
        tokio::time::sleep_until(next.max(now + Duration::from_millis(100)).into()).await;
    }
}

async fn accept_tcp(
    shared: Arc<TurnShared>,
    listener: TcpListener,
    listen: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Arc<Limits>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let Some(slot) = limits.connect(Door::Turn, client.ip()) else {
                    debug!(%client, "TURN TCP connection refused: limits.connections_per_ip reached");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let limits = limits.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let stream: Box<dyn Stream> = match tls {
                        None => Box::new(stream),
                        // A client that never finishes its handshake does not keep a task.
                        Some(acceptor) => {
                            match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await
                            {
                                Ok(Ok(stream)) => Box::new(stream),
                                Ok(Err(e)) => return debug!(%client, "TURN TLS handshake: {e}"),
                                Err(_) => return debug!(%client, "TURN TLS handshake timed out"),
                            }
                        }
                    };
                    let deadlines = (limits.settings.header_deadline, limits.settings.idle);
                    if tcp_client(shared, stream, listen, client, deadlines).await {
                        limits
                            .refused
                            .idle
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                warn!("TURN tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// A TURN client's byte stream: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + std::marker::Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + std::marker::Send + Unpin> Stream for T {}

/// One TURN-over-TCP (or TLS) client: bytes both ways; the core cuts the stream into frames.
/// `(first, idle)`: its first bytes must come within `first`, later ones within `idle` (a
/// client with an allocation refreshes it and relays consent checks); true when it was closed
/// for silence.
async fn tcp_client<S>(
    shared: Arc<TurnShared>,
    stream: S,
    listen: SocketAddr,
    client: SocketAddr,
    (first, idle): (Duration, Duration),
) -> bool
where
    S: AsyncRead + AsyncWrite + std::marker::Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(1024);
    let conn = (listen, client);
    shared.lock().tcp.insert(conn, out_tx);
    let writer = tokio::spawn(async move {
        while let Some(data) = out_rx.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    // Small until the client has said something: idle connections must cost little.
    let mut buf = vec![0u8; 2048];
    let mut wait = first;
    let mut silent = false;
    loop {
        match tokio::time::timeout(wait, rd.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => shared.run(|core| {
                core.recv_client(Transport::Tcp, listen, client, &buf[..n], Instant::now())
            }),
            Err(_) => {
                silent = true;
                break;
            }
        }
        wait = idle;
        if buf.len() < 16384 {
            buf.resize(16384, 0);
        }
        // The core may have closed it (a stream that is not STUN).
        if !shared.lock().tcp.contains_key(&conn) {
            break;
        }
    }
    writer.abort();
    let mut st = shared.lock();
    st.tcp.remove(&conn);
    st.core.tcp_closed(listen, client);
    silent
}
