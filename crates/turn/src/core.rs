//! The sans-IO TURN core: one `turn_server_proto::TurnServer` per listener (UDP, TCP, TLS),
//! with onair's rules in front of it. turn-server-proto does the RFC 8656 state machines
//! (allocations, permissions, channels, nonces, lifetimes); it has no hook for "may this user
//! allocate" or "may this relay send there", so authenticated requests are inspected here first
//! and refused with the right STUN error before the library sees them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};
use turn_server_proto::api::{
    SocketAllocateError, TcpConnectError, TurnServerApi, TurnServerPollRet,
};
use turn_server_proto::server::TurnServer;
use turn_server_proto::stun::agent::Transmit as ProtoTransmit;
use turn_server_proto::types::attribute::{ChannelNumber, XorPeerAddress};
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};
use turn_server_proto::types::stun::attribute::{
    Attribute, AttributeStaticType, ErrorCode, Username,
};
use turn_server_proto::types::stun::message::{
    LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
};
use turn_server_proto::types::{AddressFamily, TransportType};

use crate::channels::{Channels, ClientChannel, Pending};
use crate::credentials::{CredentialError, Credentials};
use crate::limiter::Bucket;
use crate::policy::PeerPolicy;

/// What the embedding server decides.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// The REALM of long-term credentials.
    pub realm: String,
    /// Static users and the REST shared secret.
    pub credentials: Credentials,
    /// Where relays may send.
    pub policy: PeerPolicy,
    /// Allocations on the whole server.
    pub max_allocations: usize,
    /// Allocations per user (the USER part of time-limited usernames).
    pub max_allocations_per_user: usize,
    /// Bytes per second each allocation may relay in each direction (0: unlimited).
    pub allocation_bytes_per_sec: u64,
}

/// Transport of a listener or a relay.
pub use turn_server_proto::types::TransportType as Transport;

/// A datagram or stream chunk to send.
#[derive(Debug)]
pub struct Transmit {
    /// UDP, or TCP (TLS listeners are TCP here: the IO layer encrypts).
    pub transport: Transport,
    /// A listener address (this goes to a client) or a relayed address (this goes to a peer).
    pub from: SocketAddr,
    /// Destination.
    pub to: SocketAddr,
    /// Bytes.
    pub data: Vec<u8>,
}

/// What the core asks the IO layer to do.
#[derive(Debug)]
pub enum Output {
    /// Send bytes.
    Transmit(Transmit),
    /// Open a UDP relay socket for `client` of the family asked and answer with
    /// [`Turn::allocated`].
    Allocate {
        /// Listener the client came through.
        listener: SocketAddr,
        /// That listener's transport.
        transport: Transport,
        /// The client's address.
        client: SocketAddr,
        /// IPv4 or IPv6.
        ipv6: bool,
    },
    /// The allocation behind this relayed address ended: close its socket.
    CloseRelay(SocketAddr),
    /// Close a TCP connection from a client.
    CloseTcp {
        /// Our side.
        local: SocketAddr,
        /// The client.
        remote: SocketAddr,
    },
}

/// Counters for `/metrics` and `/api/turn`.
#[derive(Debug, Clone, Default)]
pub struct TurnStats {
    /// Allocations made since start.
    pub allocations_total: u64,
    /// Packets and bytes relayed client → peer.
    pub to_peer_packets: u64,
    /// Bytes relayed client → peer.
    pub to_peer_bytes: u64,
    /// Packets relayed peer → client.
    pub to_client_packets: u64,
    /// Bytes relayed peer → client.
    pub to_client_bytes: u64,
    /// Refusals by reason (see [`Refused::label`]).
    pub refusals: BTreeMap<&'static str, u64>,
}

/// Why the core refused something; every refusal is logged and counted under its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A relay toward a forbidden peer (403).
    Peer(crate::policy::Refusal),
    /// The user's allocation quota (486).
    UserQuota,
    /// The server's allocation quota (508).
    ServerQuota,
    /// A time-limited username past its expiry (401).
    Expired,
    /// A username nobody issued (401, from turn-server-proto).
    UnknownUser,
    /// MESSAGE-INTEGRITY did not match (401, from turn-server-proto).
    BadIntegrity,
    /// A STUN header with unparseable attributes (400), or bytes that are no STUN at all.
    Malformed,
    /// The allocation's bandwidth cap (packet dropped).
    Bandwidth,
    /// No relay socket could be opened (508).
    RelaySocket,
}

impl Refused {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Peer(r) => r.label(),
            Self::UserQuota => "user_quota",
            Self::ServerQuota => "server_quota",
            Self::Expired => "expired_credentials",
            Self::UnknownUser => "unknown_user",
            Self::BadIntegrity => "bad_integrity",
            Self::Malformed => "malformed",
            Self::Bandwidth => "bandwidth",
            Self::RelaySocket => "relay_socket",
        }
    }
}

struct Relay {
    /// The `TurnServer` (listener shard) that holds the allocation.
    server: usize,
    /// The client's connection: (transport key, listener, client address).
    conn: (u8, SocketAddr, SocketAddr),
    client: SocketAddr,
    user: String,
    to_peer: Bucket,
    to_client: Bucket,
}

/// The TURN core.
pub struct Turn {
    config: TurnConfig,
    servers: Vec<TurnServer>,
    /// Usernames already given to each server (turn-server-proto keeps its own user table).
    known_users: Vec<HashSet<String>>,
    listeners: HashMap<(u8, SocketAddr), usize>,
    relays: HashMap<SocketAddr, Relay>,
    /// Each client connection's relayed address.
    by_conn: HashMap<(u8, SocketAddr, SocketAddr), SocketAddr>,
    /// Channel bindings the library granted, for the ChannelData fast path.
    channels: Channels,
    /// The ChannelBind or CreatePermission being handed to the library now, with its
    /// transaction id: its success response installs it in `channels`.
    expect: Option<(u128, Pending)>,
    /// Client 5-tuples with an authenticated Allocate on its way, and whose quota it counts on.
    pending: HashMap<(usize, SocketAddr), String>,
    per_user: HashMap<String, usize>,
    /// Partial frames of TCP clients, by (listener, client).
    tcp_buffers: HashMap<(SocketAddr, SocketAddr), Vec<u8>>,
    out: VecDeque<Output>,
    epoch: Instant,
    stats: TurnStats,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("listeners", &self.listeners.len())
            .field("relays", &self.relays.len())
            .finish()
    }
}

impl Turn {
    /// A core with no listeners yet.
    pub fn new(config: TurnConfig, now: Instant) -> Self {
        Self {
            config,
            servers: Vec::new(),
            known_users: Vec::new(),
            listeners: HashMap::new(),
            relays: HashMap::new(),
            by_conn: HashMap::new(),
            channels: Channels::default(),
            expect: None,
            pending: HashMap::new(),
            per_user: HashMap::new(),
            tcp_buffers: HashMap::new(),
            out: VecDeque::new(),
            epoch: now,
            stats: TurnStats::default(),
        }
    }

    /// Serves clients arriving on `addr` over `transport` (a TLS listener is `Tcp` here).
    pub fn add_listener(&mut self, transport: Transport, addr: SocketAddr) {
        let base = self.servers.len();
        for _ in 0..SHARDS {
            self.servers
                .push(TurnServer::new(transport, addr, self.config.realm.clone()));
            self.known_users.push(HashSet::new());
        }
        self.listeners.insert((key(transport), addr), base);
    }

    /// The shard that serves `client` on the listener whose first shard is `base`.
    fn shard(base: usize, client: SocketAddr) -> usize {
        let ip = match client.ip() {
            std::net::IpAddr::V4(v4) => u64::from(u32::from(v4)),
            std::net::IpAddr::V6(v6) => {
                let b = u128::from(v6);
                (b as u64) ^ ((b >> 64) as u64)
            }
        };
        let h = (ip ^ (u64::from(client.port()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        base + (h >> 58) as usize % SHARDS
    }

    /// Counters so far.
    pub fn stats(&self) -> &TurnStats {
        &self.stats
    }

    /// Channel bindings the ChannelData fast path holds.
    pub fn channel_bindings(&self) -> usize {
        self.channels.len()
    }

    /// Live allocations.
    pub fn allocations(&self) -> usize {
        self.relays.len()
    }

    /// The library's clock: nanoseconds since this core was made. (Its `Instant::from_std`
    /// measures how long ago an instant was, which is zero for `Instant::now()`: with it the
    /// library saw the same moment forever and nothing ever expired.)
    fn t(epoch: Instant, now: Instant) -> turn_server_proto::types::Instant {
        let ns = now.saturating_duration_since(epoch).as_nanos();
        turn_server_proto::types::Instant::from_nanos(i64::try_from(ns).unwrap_or(i64::MAX))
    }

    fn ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn refuse(&mut self, why: Refused, from: SocketAddr, detail: &str) {
        *self.stats.refusals.entry(why.label()).or_default() += 1;
        // Bandwidth drops happen per packet; the counter is the record, not the log.
        if why != Refused::Bandwidth {
            info!(client = %from, reason = why.label(), "TURN refused: {detail}");
        }
    }

    /// Bytes from a client on one of our listeners.
    pub fn recv_client(
        &mut self,
        transport: Transport,
        listener: SocketAddr,
        client: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        let Some(&base) = self.listeners.get(&(key(transport), listener)) else {
            warn!(%listener, "TURN data for a listener nobody added");
            return;
        };
        let idx = Self::shard(base, client);
        if transport == TransportType::Udp {
            self.recv_frame(idx, transport, listener, client, data, now);
            return;
        }
        // TCP is a byte stream: cut it into STUN messages and ChannelData frames so that each
        // is inspected like a datagram.
        let buf = self.tcp_buffers.entry((listener, client)).or_default();
        buf.extend_from_slice(data);
        let mut frames = Vec::new();
        let mut used = 0;
        while let Some(len) = frame_len(&buf[used..]) {
            if buf.len() - used < len {
                break;
            }
            // Padding after ChannelData is dropped here: the library does not expect it.
            let unpadded = match buf[used] >> 6 {
                1 => 4 + usize::from(u16::from_be_bytes([buf[used + 2], buf[used + 3]])),
                _ => len,
            };
            frames.push(buf[used..used + unpadded].to_vec());
            used += len;
        }
        buf.drain(..used);
        let bad = buf.len() > MAX_TCP_BUFFER || (buf.len() >= 4 && frame_len(buf).is_none());
        if bad {
            self.tcp_buffers.remove(&(listener, client));
            self.refuse(
                Refused::Malformed,
                client,
                "TCP stream is not STUN/ChannelData",
            );
            self.out.push_back(Output::CloseTcp {
                local: listener,
                remote: client,
            });
            return;
        }
        for f in frames {
            self.recv_frame(idx, transport, listener, client, &f, now);
        }
    }

    /// A TCP (or TLS) client of `listener` went away.
    pub fn tcp_closed(&mut self, listener: SocketAddr, client: SocketAddr) {
        self.tcp_buffers.remove(&(listener, client));
    }

    fn recv_frame(
        &mut self,
        idx: usize,
        transport: Transport,
        listener: SocketAddr,
        client: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        if data.first().is_some_and(|b| b & 0xc0 == 0x40)
            && self.channel_to_peer(transport, listener, client, data, now)
        {
            return;
        }
        if let Some(reply) = self.inspect(idx, (key(transport), listener, client), data) {
            self.out.push_back(Output::Transmit(Transmit {
                transport,
                from: listener,
                to: client,
                data: reply,
            }));
            return;
        }
        let r = self.servers[idx].recv(
            ProtoTransmit::new(data, transport, client, listener),
            Self::t(self.epoch, now),
        );
        if let Some(t) = r {
            let mut t = t.build();
            if t.to == listener {
                // turn-server-proto 0.7.3 addresses its Binding success response to the
                // request's destination (our own listener) instead of its source.
                t.to = client;
            }
            self.forward(t, now);
        }
        // ChannelData (the media path) is answered by `recv` alone; only STUN messages can
        // leave work behind. The library's poll walks every allocation, so it is not run per
        // media packet.
        if data.first().is_some_and(|b| b & 0xc0 != 0x40) {
            self.drain_one(idx, now);
            // An Allocate the library refused (or answered from an existing allocation) asked
            // for no socket: it must not keep counting against the quotas.
            if self.pending.contains_key(&(idx, client))
                && !self
                    .out
                    .iter()
                    .any(|o| matches!(o, Output::Allocate { client: c, .. } if *c == client))
            {
                self.pending.remove(&(idx, client));
            }
        }
        self.expect = None;
    }

    /// ChannelData from a client on a binding the fast path knows; false leaves it to the
    /// library.
    fn channel_to_peer(
        &mut self,
        transport: Transport,
        listener: SocketAddr,
        client: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> bool {
        let Some(header) = data.get(..4) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let Some(payload) = data.get(4..4 + len) else {
            return false; // shorter than it claims: the library drops it
        };
        let conn = ClientChannel {
            transport: key(transport),
            listener,
            client,
            channel: u16::from_be_bytes([header[0], header[1]]),
        };
        let Some((relayed, peer)) = self.channels.to_peer(&conn, self.ns(now)) else {
            return false;
        };
        self.forward(
            ProtoTransmit::new(payload.to_vec(), TransportType::Udp, relayed, peer),
            now,
        );
        true
    }

    /// A datagram from `peer` to one of our relayed addresses.
    pub fn recv_peer(&mut self, relayed: SocketAddr, peer: SocketAddr, data: &[u8], now: Instant) {
        let ns = self.ns(now);
        let Some(relay) = self.relays.get_mut(&relayed) else {
            return;
        };
        if !relay.to_client.take(data.len(), ns) {
            self.refuse(Refused::Bandwidth, peer, "to client");
            return;
        }
        if let Some(ch) = self.channels.to_client(relayed, peer, ns) {
            self.channel_to_client(ch, data);
            return;
        }
        let idx = relay.server;
        let r = self.servers[idx].recv(
            ProtoTransmit::new(data, TransportType::Udp, peer, relayed),
            Self::t(self.epoch, now),
        );
        if let Some(t) = r {
            let t = t.build();
            self.stats.to_client_packets += 1;
            self.stats.to_client_bytes += data.len() as u64;
            let mut out = t.data;
            if t.transport == TransportType::Tcp && out.first().is_some_and(|b| b & 0xc0 == 0x40) {
                // RFC 8656 §12.5: over TCP, ChannelData is padded to a multiple of four bytes
                // (the length field keeps the unpadded size). turn-server-proto 0.7.3 does not.
                out.resize(out.len().div_ceil(4) * 4, 0);
            }
            self.out.push_back(Output::Transmit(Transmit {
                transport: t.transport,
                from: t.from,
                to: t.to,
                data: out,
            }));
        }
    }

    /// A peer's datagram to the client as ChannelData on its bound channel.
    fn channel_to_client(&mut self, ch: ClientChannel, data: &[u8]) {
        let Ok(len) = u16::try_from(data.len()) else {
            return; // no UDP datagram is this long
        };
        let tcp = ch.transport == key(TransportType::Tcp);
        // RFC 8656 §12.5: over TCP, ChannelData is padded to a multiple of four bytes (the
        // length field keeps the unpadded size).
        let size = if tcp {
            (4 + data.len()).div_ceil(4) * 4
        } else {
            4 + data.len()
        };
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&ch.channel.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(data);
        out.resize(size, 0);
        self.stats.to_client_packets += 1;
        self.stats.to_client_bytes += data.len() as u64;
        self.out.push_back(Output::Transmit(Transmit {
            transport: if tcp {
                TransportType::Tcp
            } else {
                TransportType::Udp
            },
            from: ch.listener,
            to: ch.client,
            data: out,
        }));
    }

    /// The answer to [`Output::Allocate`]: the relay socket's address as clients must see it
    /// (the advertised IP and the bound port), or None if none could be opened.
    pub fn allocated(
        &mut self,
        listener: SocketAddr,
        transport: Transport,
        client: SocketAddr,
        ipv6: bool,
        relayed: Option<SocketAddr>,
        now: Instant,
    ) {
        let Some(&base) = self.listeners.get(&(key(transport), listener)) else {
            return;
        };
        let idx = Self::shard(base, client);
        let family = if ipv6 {
            AddressFamily::IPV6
        } else {
            AddressFamily::IPV4
        };
        let user = self.pending.remove(&(idx, client)).unwrap_or_default();
        let result = match relayed {
            Some(addr) => {
                let ns = self.ns(now);
                let rate = self.config.allocation_bytes_per_sec;
                *self.per_user.entry(user.clone()).or_default() += 1;
                let conn = (key(transport), listener, client);
                self.by_conn.insert(conn, addr);
                self.relays.insert(
                    addr,
                    Relay {
                        server: idx,
                        conn,
                        client,
                        user: user.clone(),
                        to_peer: Bucket::new(rate, ns),
                        to_client: Bucket::new(rate, ns),
                    },
                );
                self.stats.allocations_total += 1;
                info!(%client, relayed = %addr, user, "TURN allocation");
                Ok(addr)
            }
            None => {
                self.refuse(Refused::RelaySocket, client, "no relay socket");
                Err(SocketAllocateError::InsufficientCapacity)
            }
        };
        self.servers[idx].allocated_socket(
            transport,
            listener,
            client,
            TransportType::Udp,
            family,
            result,
            Self::t(self.epoch, now),
        );
        // Only this client's library shard has work from it.
        self.drain_one(idx, now);
    }

    /// Timers (allocation, permission and nonce expiry); returns when to call again.
    pub fn handle_timeout(&mut self, now: Instant) -> Instant {
        // Each poll walks a shard's allocations: one pass per shard, which also says when
        // that shard next needs one.
        let mut next = now + std::time::Duration::from_secs(1);
        for idx in 0..self.servers.len() {
            next = next.min(self.drain_one(idx, now));
        }
        next
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Runs one library shard's state machine until it only waits; returns until when.
    fn drain_one(&mut self, idx: usize, now: Instant) -> Instant {
        let wait = loop {
            match self.servers[idx].poll(Self::t(self.epoch, now)) {
                TurnServerPollRet::WaitUntil(t) => break t.to_std(self.epoch).max(now),
                TurnServerPollRet::AllocateSocket {
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                } => {
                    if allocation_transport != TransportType::Udp {
                        // RFC 6062 TCP allocations are not offered: WebRTC relays are UDP.
                        self.servers[idx].allocated_socket(
                            transport,
                            listen_addr,
                            client_addr,
                            allocation_transport,
                            family,
                            Err(SocketAllocateError::InsufficientCapacity),
                            Self::t(self.epoch, now),
                        );
                        continue;
                    }
                    self.out.push_back(Output::Allocate {
                        listener: listen_addr,
                        transport,
                        client: client_addr,
                        ipv6: family == AddressFamily::IPV6,
                    });
                }
                TurnServerPollRet::TcpConnect {
                    relayed_addr,
                    peer_addr,
                    listen_addr,
                    client_addr,
                } => self.servers[idx].tcp_connected(
                    relayed_addr,
                    peer_addr,
                    listen_addr,
                    client_addr,
                    Err(TcpConnectError::Forbidden),
                    Self::t(self.epoch, now),
                ),
                TurnServerPollRet::TcpClose {
                    local_addr,
                    remote_addr,
                } => self.out.push_back(Output::CloseTcp {
                    local: local_addr,
                    remote: remote_addr,
                }),
                TurnServerPollRet::SocketClose { listen_addr, .. } => {
                    if let Some(r) = self.relays.remove(&listen_addr) {
                        self.by_conn.remove(&r.conn);
                        self.channels.remove_relay(listen_addr);
                        if let Some(n) = self.per_user.get_mut(&r.user) {
                            *n = n.saturating_sub(1);
                            if *n == 0 {
                                self.per_user.remove(&r.user);
                            }
                        }
                        debug!(client = %r.client, relayed = %listen_addr, "TURN allocation ended");
                    }
                    self.out.push_back(Output::CloseRelay(listen_addr));
                }
            }
        };
        while let Some(t) = self.servers[idx].poll_transmit(Self::t(self.epoch, now)) {
            self.forward(t, now);
        }
        wait
    }

    /// Queues a transmit from the library; packets a relay sends to a peer are checked against
    /// the policy and the allocation's bandwidth here, whatever path they came by.
    fn forward(&mut self, t: ProtoTransmit<Vec<u8>>, now: Instant) {
        if let Some(relay) = self.relays.get_mut(&t.from) {
            let ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
            if !relay.to_peer.take(t.data.len(), ns) {
                let client = relay.client;
                self.refuse(Refused::Bandwidth, client, "to peer");
                return;
            }
            let own_relay = self.relays.contains_key(&t.to);
            if let Err(r) = self.config.policy.check(t.to)
                && !own_relay
            {
                let client = self.relays.get(&t.from).map_or(t.from, |r| r.client);
                self.refuse(Refused::Peer(r), client, &format!("send to {}", t.to));
                return;
            }
            self.stats.to_peer_packets += 1;
            self.stats.to_peer_bytes += t.data.len() as u64;
        } else if self.expect.is_some() {
            self.observe_response(&t.data, now);
        }
        self.out.push_back(Output::Transmit(Transmit {
            transport: t.transport,
            from: t.from,
            to: t.to,
            data: t.data,
        }));
    }

    /// A response the library sends a client: when it grants the ChannelBind or
    /// CreatePermission being handled, the fast path learns it.
    fn observe_response(&mut self, data: &[u8], now: Instant) {
        let Ok(msg) = Message::from_bytes(data) else {
            return;
        };
        let Some((tid, _)) = &self.expect else {
            return;
        };
        if u128::from(msg.transaction_id()) != *tid {
            return;
        }
        if let Some((_, p)) = self.expect.take()
            && msg.has_class(MessageClass::Success)
        {
            let ns = self.ns(now);
            self.channels.granted(p, ns);
        }
    }

    /// Looks at a UDP datagram before the library does. Returns a reply when the datagram is
    /// refused here; None lets it through.
    fn inspect(
        &mut self,
        idx: usize,
        conn: (u8, SocketAddr, SocketAddr),
        data: &[u8],
    ) -> Option<Vec<u8>> {
        let client = conn.2;
        // ChannelData (first two bits 01) is the media path: the library checks the channel.
        if data.first().is_some_and(|b| b & 0xc0 == 0x40) {
            return None;
        }
        let msg = match Message::from_bytes(data) {
            Ok(m) => m,
            Err(e) => {
                self.refuse(Refused::Malformed, client, &format!("{e}"));
                return crate::stun::bad_request(data);
            }
        };
        if !msg.has_class(MessageClass::Request) {
            return None;
        }
        let username = msg
            .attribute::<Username>()
            .ok()
            .map(|u| u.username().to_owned());
        debug!(%client, method = ?msg.method(), user = ?username, "TURN request");
        let username = username?;
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let password = match self.config.credentials.password(&username, now_unix) {
            Ok(p) => p,
            Err(CredentialError::Expired(ago)) => {
                self.refuse(
                    Refused::Expired,
                    client,
                    &format!("{username} expired {ago} s ago"),
                );
                return Some(crate::stun::error(
                    &msg,
                    ErrorCode::UNAUTHORIZED,
                    Some(&self.config.realm),
                    None,
                ));
            }
            Err(CredentialError::Unknown) => {
                self.refuse(Refused::UnknownUser, client, &username);
                // The library answers 401 with a fresh nonce.
                return None;
            }
            Err(e @ CredentialError::TooLong(_)) => {
                self.refuse(Refused::UnknownUser, client, &format!("{username}: {e}"));
                return None;
            }
        };
        if self.known_users[idx].insert(username.clone()) {
            self.servers[idx].add_user(username.clone(), password.clone());
        }
        let key =
            LongTermKeyCredentials::new(username.clone(), password, self.config.realm.clone());
        let creds = MessageIntegrityCredentials::LongTerm(key);
        let Ok(algo) = msg.validate_integrity(&creds) else {
            self.refuse(Refused::BadIntegrity, client, &username);
            return None;
        };
        let code = if msg.has_method(ALLOCATE) {
            self.allocate_quota(idx, client, &username)
        } else if msg.has_method(CREATE_PERMISSION) || msg.has_method(CHANNEL_BIND) {
            self.peers_allowed(&msg, client)
        } else {
            None
        };
        if code.is_none() {
            self.expect_grant(&msg, conn);
        }
        code.map(|code| crate::stun::error(&msg, code, None, Some((&creds, algo))))
    }

    /// Remembers an authenticated ChannelBind or CreatePermission of a client with an
    /// allocation, to learn from its answer.
    fn expect_grant(&mut self, msg: &Message<'_>, conn: (u8, SocketAddr, SocketAddr)) {
        let Some(&relayed) = self.by_conn.get(&conn) else {
            return;
        };
        let tid = msg.transaction_id();
        let peers: Vec<SocketAddr> = msg
            .iter_attributes()
            .filter(|(_, raw)| raw.get_type() == XorPeerAddress::TYPE)
            .filter_map(|(_, raw)| XorPeerAddress::try_from(&raw).ok())
            .map(|p| p.addr(tid))
            .collect();
        let pending = if msg.has_method(CHANNEL_BIND) {
            let (Ok(ch), [peer]) = (msg.attribute::<ChannelNumber>(), peers.as_slice()) else {
                return;
            };
            Pending::Bind {
                key: ClientChannel {
                    transport: conn.0,
                    listener: conn.1,
                    client: conn.2,
                    channel: ch.channel(),
                },
                relayed,
                peer: *peer,
            }
        } else if msg.has_method(CREATE_PERMISSION) {
            Pending::Permit {
                relayed,
                ips: peers.iter().map(|p| p.ip()).collect(),
            }
        } else {
            return;
        };
        self.expect = Some((u128::from(tid), pending));
    }

    fn allocate_quota(&mut self, idx: usize, client: SocketAddr, username: &str) -> Option<u16> {
        let already = self
            .relays
            .values()
            .any(|r| r.server == idx && r.client == client);
        if already {
            return None; // a retransmit or a mismatch: the library answers it
        }
        let user = Credentials::quota_key(username).to_owned();
        if self.relays.len() + self.pending.len() >= self.config.max_allocations {
            self.refuse(Refused::ServerQuota, client, &user);
            return Some(ErrorCode::INSUFFICIENT_CAPACITY);
        }
        if self.per_user.get(&user).copied().unwrap_or(0) >= self.config.max_allocations_per_user {
            self.refuse(Refused::UserQuota, client, &user);
            return Some(ErrorCode::ALLOCATION_QUOTA_REACHED);
        }
        self.pending.insert((idx, client), user);
        None
    }

    fn peers_allowed(&mut self, msg: &Message<'_>, client: SocketAddr) -> Option<u16> {
        let tid = msg.transaction_id();
        for (_, raw) in msg.iter_attributes() {
            if raw.get_type() != XorPeerAddress::TYPE {
                continue;
            }
            let Ok(peer) = XorPeerAddress::try_from(&raw) else {
                continue;
            };
            let peer = peer.addr(tid);
            // Another of our relays is a TURN client's address, not an internal service: two
            // relayed browsers of a P2P room reach each other this way.
            if self.relays.contains_key(&peer) {
                continue;
            }
            if let Err(r) = self.config.policy.check(peer) {
                self.refuse(Refused::Peer(r), client, &format!("permission for {peer}"));
                return Some(ErrorCode::FORBIDDEN);
            }
        }
        None
    }
}

/// turn-server-proto finds a client's allocation by walking a list of all its clients, per
/// packet; with a thousand allocations that walk cost more than the rest of the relay. Each
/// listener is therefore served by this many `TurnServer`s, a client always by the same one
/// (by a hash of its address), so each walks a sixty-fourth of the list.
const SHARDS: usize = 64;

/// TransportType has no Hash; listeners are keyed by this instead.
fn key(t: Transport) -> u8 {
    match t {
        TransportType::Udp => 0,
        TransportType::Tcp => 1,
    }
}

/// A TCP client may have this much of an unfinished frame buffered (the largest STUN message
/// or ChannelData frame is 64 KiB + header).
const MAX_TCP_BUFFER: usize = 70 * 1024;

/// The length of the frame at the start of a TCP stream (RFC 8656 §12.5: ChannelData is padded
/// to four bytes over TCP), None if fewer than four bytes or not a STUN/ChannelData start.
fn frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    match buf[0] >> 6 {
        0 => Some(20 + len),
        1 => Some(4 + len.div_ceil(4) * 4),
        _ => None,
    }
}
