//! The media engine: `media.shards` shards, each a thread with its own runtime, its own UDP
//! socket and ICE-TCP listener (shard `i` on `media.port + i`) and its own `Sfu`; and the
//! handle through which the rest of the server reaches them.
//!
//! Where things live: a room on the shard [`sfu::shard_of`] names (its members must meet in
//! one `Sfu`); a WHIP publisher on the next shard in turn; a WHEP viewer of a WHIP stream on
//! its publisher's shard (the SFU forwards its packets), of a hub-only stream (RTMP, …) on the
//! next shard in turn (each shard reads the hub for its own viewers). The ICE candidates of a
//! peer name its shard's port, so a datagram reaches the right thread without any steering.
//!
//! Why a port per shard rather than one port with `SO_REUSEPORT`: the kernel spreads a
//! reuse-port group by a hash of the 4-tuple, which knows nothing of rooms, so most datagrams
//! would arrive on the wrong thread and have to be handed on; steering them in the kernel
//! needs a BPF program (unsafe code, a system interface). A port per shard costs an open
//! port range in the firewall, as mediasoup's workers and Janus's port range do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use hub::Hub;
use sfu::str0m::Candidate;
use sfu::str0m::net::TcpType;
use sfu::{ConnId, Sfu};
use tokio::sync::oneshot;
use tracing::error;

use crate::config::Config;
use crate::turn::TurnCounters;
use crate::turn::ice_servers::IceServers;
use crate::webrtc::hub_bridge::{StreamStatus, Streams};
use crate::webrtc::shard::{Command, Status};

/// One shard as the handle sees it.
struct Shard {
    tx: crate::webrtc::queues::ShardTx,
    /// Its UDP (and ICE-TCP) port.
    port: u16,
}

/// Handle for reaching the media shards.
#[derive(Clone)]
pub struct MediaHandle {
    shards: Arc<[Shard]>,
    /// Turns for sessions placed by rotation (WHIP publishers, viewers of hub streams).
    next_turn: Arc<AtomicUsize>,
    hub: Hub,
    /// Addresses peers reach the shards on (advertised IPs and the bind address, every port).
    media_addrs: Arc<[SocketAddr]>,
    pub next_conn: Arc<AtomicU64>,
    pub max_signal_bytes: usize,
    /// STUN/TURN URLs and credentials for clients.
    pub ice: Arc<IceServers>,
    /// TURN's counters, for `/metrics`.
    pub turn: Arc<TurnCounters>,
    /// Token keys (`auth.keys`); empty: auth is off (access.rs).
    pub auth: Arc<crate::access::Access>,
    /// Abuse limits at the front doors (`limits.*`), and what they refused.
    pub limits: Arc<crate::limits::Limits>,
    /// The operator's webhooks (and their counters, for `/metrics`).
    pub hooks: crate::webhooks::Webhooks,
    /// What full shard queues dropped (queues.rs), for `/metrics`.
    pub dropped: Arc<crate::webrtc::queues::Dropped>,
}

impl MediaHandle {
    pub fn new_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard `room` lives on.
    pub fn room_shard(&self, room: &str) -> usize {
        sfu::shard_of(room, self.shards.len())
    }

    /// The next shard in turn, for a session that may go anywhere.
    pub fn next_shard(&self) -> usize {
        self.next_turn.fetch_add(1, Ordering::Relaxed) % self.shards.len()
    }

    /// Hands `cmd` to shard `shard`, waiting while its queue is full; false when it has
    /// stopped.
    pub async fn send(&self, shard: usize, cmd: Command) -> bool {
        match self.shards.get(shard) {
            Some(s) => s.tx.request(cmd).await,
            None => false,
        }
    }

    /// Asks shard `shard`; None when it has stopped.
    pub async fn ask<T>(
        &self,
        shard: usize,
        cmd: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        if !self.send(shard, cmd(tx)).await {
            return None;
        }
        rx.await.ok()
    }

    /// Asks every shard (all at once, then gathers); None when one has stopped.
    pub async fn ask_all<T>(&self, cmd: impl Fn(oneshot::Sender<T>) -> Command) -> Option<Vec<T>> {
        let mut waiting = Vec::with_capacity(self.shards.len());
        for i in 0..self.shards.len() {
            let (tx, rx) = oneshot::channel();
            if !self.send(i, cmd(tx)).await {
                return None;
            }
            waiting.push(rx);
        }
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            out.push(rx.await.ok()?);
        }
        Some(out)
    }

    /// Every shard's counters and rooms as one.
    pub async fn status(&self) -> Option<Status> {
        let all = self.ask_all(Command::Status).await?;
        let mut it = all.into_iter();
        let mut s = it.next()?;
        for o in it {
            s.rooms.extend(o.rooms);
            s.peers += o.peers;
            s.rtp_in += o.rtp_in;
            s.rtp_out += o.rtp_out;
            s.keyframe_requests += o.keyframe_requests;
            s.data_relayed += o.data_relayed;
            s.unclaimed_datagrams += o.unclaimed_datagrams;
            s.ice_failures += o.ice_failures;
            s.ice_disconnects += o.ice_disconnects;
            s.red_recovered += o.red_recovered;
            s.quality.merge(&o.quality);
            for (grade, n) in o.by_quality {
                match s.by_quality.iter_mut().find(|(g, _)| *g == grade) {
                    Some((_, m)) => *m += n,
                    None => s.by_quality.push((grade, n)),
                }
            }
            s.shards.extend(o.shards);
        }
        s.rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Some(s)
    }

    /// Every live stream: each shard tells of the WebRTC streams published on it, the first
    /// also of the hub-only ones (hub_bridge.rs).
    pub async fn streams(&self) -> Option<Vec<StreamStatus>> {
        let mut all: Vec<StreamStatus> = self
            .ask_all(Command::Streams)
            .await?
            .into_iter()
            .flatten()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Some(all)
    }

    /// WHIP publishers and WHEP viewers of every shard.
    pub async fn sessions(&self) -> Option<Vec<sfu::report::ParticipantReport>> {
        let all = self.ask_all(Command::Sessions).await?;
        Some(all.into_iter().flatten().collect())
    }

    /// The hub (the operator's stop of a stream acts on it first).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The addresses peers send media to, on every shard (TURN hands what it relays to them
    /// over in-process).
    pub fn media_addrs(&self) -> Arc<[SocketAddr]> {
        self.media_addrs.clone()
    }

    /// A datagram a TURN client relayed to `to`, one of [`Self::media_addrs`]: to the shard
    /// on that port (dropped if its queue is full, as the network would). Other commands from
    /// TURN go to every shard.
    pub fn relayed_by_turn(&self, cmd: Command) {
        match &cmd {
            Command::Relayed { to, .. } => {
                if let Some(s) = self.shards.iter().find(|s| s.port == to.port()) {
                    s.tx.media(cmd);
                }
            }
            Command::RelayClosed(addr) => {
                let addr = *addr;
                for s in self.shards.iter() {
                    s.tx.between_shards(Command::RelayClosed(addr));
                }
            }
            _ => {}
        }
    }

    /// Tells every shard to say goodbye to its peers, and waits (up to `wait`) until they have.
    pub async fn shutdown(&self, wait: std::time::Duration) {
        let _ = tokio::time::timeout(wait, self.ask_all(Command::Shutdown)).await;
    }
}

/// Binds every shard's sockets and starts their threads.
pub async fn start(
    config: &Config,
    hub: Hub,
    ice: Arc<IceServers>,
    turn: Arc<TurnCounters>,
    hooks: crate::webhooks::Webhooks,
) -> anyhow::Result<MediaHandle> {
    let count = config.media_shards();
    let open_rooms = sfu::OpenRooms::default();
    let limits = crate::limits::Limits::new(config.limits.settings());
    let mut shards = Vec::with_capacity(count);
    let mut media_addrs = Vec::new();
    let dropped = Arc::new(crate::webrtc::queues::Dropped::default());
    let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..count)
        .map(|_| crate::webrtc::queues::shard_queues(dropped.clone()))
        .unzip();
    let txs: Arc<[crate::webrtc::queues::ShardTx]> = txs.into();
    for index in 0..count {
        let bind = SocketAddr::new(config.media.bind, config.media.port + index as u16);
        let udp = std::net::UdpSocket::bind(bind)
            .map_err(|e| anyhow::anyhow!("binding UDP {bind} (media shard {index}): {e}"))?;
        udp.set_nonblocking(true)?;
        let tcp = if config.media.ice_tcp {
            let l = std::net::TcpListener::bind(bind).map_err(|e| {
                anyhow::anyhow!("binding ICE-TCP {bind} (media shard {index}): {e}")
            })?;
            l.set_nonblocking(true)?;
            Some(l)
        } else {
            None
        };
        let port = bind.port();
        let mut candidates = Vec::new();
        for ip in config.advertised_ips() {
            let addr = SocketAddr::new(ip, port);
            media_addrs.push(addr);
            candidates.push(Candidate::host(addr, "udp")?);
            if tcp.is_some() {
                candidates.push(
                    Candidate::builder()
                        .tcp()
                        .host(addr)
                        .tcptype(TcpType::Passive)
                        .build()?,
                );
            }
        }
        media_addrs.push(bind);
        let advertised = SocketAddr::new(config.advertised_ips()[0], port);
        let mut sfu_config = config.sfu();
        sfu_config.shard = sfu::ShardPlace {
            index: index as u32,
            count: count as u32,
        };
        sfu_config.open_rooms = open_rooms.clone();
        let tx = txs[index].clone();
        let rx = rxs.remove(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let context = crate::webrtc::shard::Context {
            shard: index,
            hub: hub.clone(),
            queues: tx.clone(),
            ice: ice.clone(),
            hooks: hooks.clone(),
            limits: limits.clone(),
            hub_only_streams: index == 0,
            shards: txs.clone(),
            gso: config.media.gso,
        };
        std::thread::Builder::new()
            .name(format!("onair-media-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let udp = match tokio::net::UdpSocket::from_std(udp) {
                        Ok(u) => u,
                        Err(e) => return error!("media shard {index}: UDP socket: {e}"),
                    };
                    if let Some(l) = tcp {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(crate::webrtc::shard::accept_tcp(
                                    l,
                                    context.queues.control.clone(),
                                    context.limits.clone(),
                                ));
                            }
                            Err(e) => error!("media shard {index}: ICE-TCP listener: {e}"),
                        }
                    }
                    let sfu = Sfu::new(sfu_config, candidates, random_seed(index), Instant::now());
                    let streams = Streams::new(context.hub.clone(), context.queues.frames.clone());
                    crate::webrtc::shard::run(sfu, streams, udp, advertised, rx, context).await;
                });
            })?;
        shards.push(Shard { tx, port });
    }
    Ok(MediaHandle {
        shards: shards.into(),
        next_turn: Arc::new(AtomicUsize::new(0)),
        hub,
        media_addrs: media_addrs.into(),
        next_conn: Arc::new(AtomicU64::new(1)),
        max_signal_bytes: config.rooms.max_signal_bytes,
        ice,
        turn,
        limits,
        hooks,
        dropped,
        auth: Arc::new(crate::access::Access::new(
            config.auth.keys()?,
            config.auth.open_playback,
        )),
    })
}

/// Seeds a shard's generator (resume tokens) from the OS, through std's randomly keyed hasher.
fn random_seed(shard: usize) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(shard);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
