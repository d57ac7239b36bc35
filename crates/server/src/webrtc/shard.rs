//! One media shard's loop (engine.rs starts one per shard, each on its own thread): it owns
//! the shard's SFU, reads its UDP socket and ICE-TCP connections, takes commands from
//! signalling connections and the HTTP API, keeps time, and carries out what the SFU outputs.
//! Everything media-related of a shard happens on its one task, so the SFU needs no locks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hub::{Hub, StreamName};
use sfu::signal::{ClientMessage, ErrorCode, ServerMessage};
use sfu::str0m::net::Protocol;
use sfu::{ConnId, Output, Sfu};
use sfu::{FrameTrack, HttpSession, HttpSessionError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::turn::TurnShared;
use crate::turn::ice_servers::IceServers;
use crate::webrtc::hub_bridge::{StreamStatus, Streams, frame_track};

/// What a signalling connection's task receives.
#[derive(Debug)]
pub enum ToConn {
    /// A JSON text frame.
    Text(String),
    /// Close the socket.
    Close,
    /// The socket's member joined (its `joined` follows): it stays on this shard.
    Joined,
}

/// How long after a hub stream starts a WHEP viewer waits for it to describe both audio and
/// video (see `whep_offer`).
const HUB_TRACKS_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Commands into the media loop.
pub enum Command {
    Connect(ConnId, mpsc::Sender<ToConn>),
    Message(ConnId, ClientMessage),
    /// The grant of the member about to join on this socket (its token was checked).
    Authorize(ConnId, sfu::Grant),
    BadFrame(ConnId, ErrorCode, String),
    Disconnect(ConnId),
    TcpOpen(SocketAddr, mpsc::Sender<Vec<u8>>),
    TcpFrame(SocketAddr, Vec<u8>),
    TcpClosed(SocketAddr),
    /// A datagram a TURN client relayed to the SFU, handed over in-process: `from` is the
    /// relayed address, `to` the SFU address the client aimed at, `turn` where the SFU's
    /// answers to `from` go.
    Relayed {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
        turn: Arc<TurnShared>,
    },
    /// That relayed address is gone.
    RelayClosed(SocketAddr),
    Status(oneshot::Sender<Status>),
    Shutdown(oneshot::Sender<()>),
    /// WHIP POST: publish `stream` (the hub name is reserved here).
    WhipOffer {
        stream: StreamName,
        offer: String,
        reply: oneshot::Sender<Result<HttpSession, SessionError>>,
    },
    /// Whether a WHIP publisher of this stream is on this shard.
    HasStream(String, oneshot::Sender<bool>),
    /// Export `stream` (published here) to shard `to`: its tracks, for `to`'s mirror (None:
    /// not published here).
    Export {
        stream: String,
        to: u32,
        reply: oneshot::Sender<Option<Vec<sfu::mirror::MirrorTrack>>>,
    },
    /// Packets of streams exported to this shard, from their origin.
    Mirrored(Vec<sfu::mirror::MirrorPacket>),
    /// A keyframe request from a shard that mirrors this track.
    ExportedKeyframe(sfu::TrackId, usize),
    /// Shard `.0` no longer mirrors stream `.1`.
    Unexport(u32, String),
    /// The origin of a stream mirrored here ended one of its tracks.
    MirrorTrackEnd(String, sfu::TrackId),
    /// A source on shard `origin` announced a track under these names: viewers here waiting
    /// for one of them follow it (`Sfu::mirrors_wanted`).
    Announced {
        names: Vec<String>,
        origin: u32,
    },
    /// Shard `to` has viewers waiting for `stream`, published here: export it there.
    ExportTo {
        stream: String,
        to: u32,
    },
    /// The answer to an `ExportTo`: mirror `stream` from shard `origin`, with these tracks.
    MirrorOpen {
        stream: String,
        origin: u32,
        tracks: Vec<sfu::mirror::MirrorTrack>,
    },
    /// WHEP POST: play `stream`. `mirror`: it is published on another shard, which exports
    /// it here with these tracks.
    WhepOffer {
        stream: StreamName,
        offer: String,
        via_hub: bool,
        max_height: Option<u32>,
        mirror: Option<(u32, Vec<sfu::mirror::MirrorTrack>)>,
        reply: oneshot::Sender<Result<HttpSession, SessionError>>,
    },
    /// PATCH of an HTTP session: trickle ICE.
    SessionPatch {
        token: String,
        fragment: String,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// DELETE of an HTTP session.
    SessionDelete {
        token: String,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// A frame of a hub stream for its hub source here (hub_bridge.rs).
    HubFrame {
        stream: StreamName,
        track: FrameTrack,
        keyframe: bool,
        pts_us: u64,
        data: Arc<[u8]>,
    },
    /// The H.264 parameter sets of a hub stream, for its hub source here.
    HubParameterSets {
        stream: StreamName,
        sets: Vec<Vec<u8>>,
    },
    /// Feed `id` of a hub stream ended with the stream.
    HubFeedEnded {
        stream: StreamName,
        id: u64,
    },
    /// `GET /api/streams`.
    Streams(oneshot::Sender<Vec<StreamStatus>>),
    /// `GET /api/rooms/NAME`: the room with every participant's figures.
    RoomReport(String, oneshot::Sender<Option<sfu::report::RoomReport>>),
    /// `GET /api/sessions`: WHIP publishers and WHEP viewers with their figures.
    Sessions(oneshot::Sender<Vec<sfu::report::ParticipantReport>>),
    /// The operator's actions (http/admin.rs).
    Admin(crate::http::admin::AdminOp, crate::http::admin::AdminReply),
}

/// Why a WHIP/WHEP request failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Sfu(#[from] HttpSessionError),
    #[error(transparent)]
    Busy(#[from] hub::PublishError),
    #[error("stream '{0}' has no track a WebRTC viewer can receive (it needs H.264 or Opus)")]
    NothingPlayable(String),
}

/// A snapshot for the HTTP API and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub rooms: Vec<RoomStatus>,
    pub peers: usize,
    pub rtp_in: u64,
    pub rtp_out: u64,
    pub keyframe_requests: u64,
    pub data_relayed: u64,
    pub unclaimed_datagrams: u64,
    pub ice_failures: u64,
    pub ice_disconnects: u64,
    pub red_recovered: u64,
    /// Round trip, loss and jitter of every connection so far (for `/metrics`).
    #[serde(skip)]
    pub quality: sfu::quality::QualityHistograms,
    /// Participants by their connection's grade (for `/metrics`).
    #[serde(skip)]
    pub by_quality: Vec<(sfu::signal::Quality, usize)>,
    /// Each media shard's share.
    pub shards: Vec<ShardStatus>,
}

/// One shard's share (`Status::shards`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardStatus {
    pub shard: usize,
    pub rooms: usize,
    pub peers: usize,
    pub rtp_in: u64,
    pub rtp_out: u64,
    /// CPU seconds its thread has used (Linux; absent elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
}

/// CPU seconds (user + system) of the calling thread, from `/proc/thread-self/stat`.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The fields after the parenthesised name; utime and stime are the 12th and 13th.
    let f: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks = |i: usize| f.get(i)?.parse::<f64>().ok();
    // USER_HZ is 100 on every Linux this runs on.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RoomStatus {
    pub name: String,
    pub participants: usize,
}

/// What a shard's loop is given besides its SFU and sockets.
pub struct Context {
    /// Its number.
    pub shard: usize,
    pub hub: Hub,
    /// Its own queues (ICE-TCP connections and hub bridges send into them).
    pub queues: crate::webrtc::queues::ShardTx,
    pub ice: Arc<IceServers>,
    pub hooks: crate::webhooks::Webhooks,
    pub limits: Arc<crate::limits::Limits>,
    /// Every shard's queues, this one's too (exports and their answers go between them).
    pub shards: Arc<[crate::webrtc::queues::ShardTx]>,
    /// This shard reports the streams no WebRTC publisher feeds (RTMP, RTWebSocket, …): the
    /// first one does, so `/api/streams` lists each stream once.
    pub hub_only_streams: bool,
    /// `media.gso`.
    pub gso: bool,
}

struct Loop {
    sfu: Sfu,
    streams: Streams,
    last_tick: Instant,
    udp: UdpSocket,
    local: SocketAddr,
    conns: HashMap<ConnId, mpsc::Sender<ToConn>>,
    /// The token subject of each socket that joined with one: its TURN user, so the per-user
    /// allocation quota counts per token, not per join.
    identities: HashMap<ConnId, String>,
    tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// TURN relayed addresses that reach the SFU in-process, and the TURN task behind them.
    relays: HashMap<SocketAddr, Arc<TurnShared>>,
    ice: Arc<IceServers>,
    shutdown: Option<oneshot::Sender<()>>,
    shard: usize,
    hub_only_streams: bool,
    shards: Arc<[crate::webrtc::queues::ShardTx]>,
    /// Packets for other shards, gathered while draining the SFU and sent as one message
    /// per shard (a wake of the other thread per drain, not per packet).
    exports: Vec<Vec<sfu::mirror::MirrorPacket>>,
    /// UDP datagrams of this flush, sent a destination at a time (gso.rs).
    outbox: crate::webrtc::gso::Outbox,
    /// Webhooks, and the room state their events are derived from.
    hooks: crate::webhooks::Webhooks,
    room_events: crate::webhooks::RoomEvents,
}

pub async fn run(
    sfu: Sfu,
    streams: Streams,
    udp: UdpSocket,
    local: SocketAddr,
    mut rx: crate::webrtc::queues::ShardRx,
    ctx: Context,
) {
    let mut l = Loop {
        sfu,
        streams,
        last_tick: Instant::now(),
        udp,
        local,
        conns: HashMap::new(),
        identities: HashMap::new(),
        tcp: HashMap::new(),
        relays: HashMap::new(),
        ice: ctx.ice,
        shutdown: None,
        shard: ctx.shard,
        hub_only_streams: ctx.hub_only_streams,
        exports: vec![Vec::new(); ctx.shards.len()],
        outbox: crate::webrtc::gso::Outbox::new(ctx.gso),
        shards: ctx.shards,
        hooks: ctx.hooks,
        room_events: crate::webhooks::RoomEvents::default(),
    };
    // One `recvmmsg` takes up to 32 datagrams per wake (net/batch.rs); WebRTC sends at most
    // an MTU's worth, and a longer datagram is dropped rather than handed on cut.
    let mut batch = crate::net::batch::Batch::new(MEDIA_DATAGRAM);
    let ipv6 = l.local.is_ipv6();
    loop {
        let deadline = l.flush().await;
        if let Some(done) = l.shutdown.take() {
            let _ = done.send(());
            return;
        }
        let now = Instant::now();
        if now >= l.last_tick + std::time::Duration::from_secs(1) {
            l.tick(now);
        }
        if deadline <= now {
            l.sfu.handle_timeout(now);
            continue;
        }
        tokio::select! {
            r = l.udp.readable() => match r.and_then(|()| batch.recv(&l.udp, ipv6)) {
                Ok(_) => {
                    // Everything queued (up to a batch, so that queued sends and timers are
                    // not starved by a flood), without another trip through select! and the
                    // timer: under load the socket rarely holds just one.
                    let now = Instant::now();
                    for (data, source) in batch.datagrams() {
                        l.sfu.handle_receive(now, Protocol::Udp, source, l.local, data);
                    }
                }
                // ICMP port unreachable from a vanished peer shows up here on Linux; harmless.
                Err(e) => debug!("udp recv: {e}"),
            },
            cmd = rx.control.recv() => match cmd {
                Some(cmd) => l.command(cmd),
                None => return,
            },
            Some(cmd) = rx.media.recv() => l.command(cmd),
            Some(cmd) = rx.frames.recv() => l.command(cmd),
            Some(cmd) = rx.shards.recv() => l.command(cmd),
            _ = tokio::time::sleep_until(deadline.into()) => {
                l.sfu.handle_timeout(Instant::now());
            }
        }
    }
}

/// The longest datagram a shard takes: more than an MTU (WebRTC stacks keep RTP, DTLS and
/// STUN within about 1,200–1,500 bytes).
const MEDIA_DATAGRAM: usize = 2048;

impl Loop {
    /// Once a second: publishers whose name was taken over are ended, bitrates sampled.
    fn tick(&mut self, now: Instant) {
        self.last_tick = now;
        for (pid, watched) in self.streams.hub_watched(now) {
            self.sfu.set_hub_watched(pid, watched);
        }
        for pid in self.streams.kicked() {
            info!(%pid, "WHIP publisher ended: another publisher took its stream name");
            self.sfu.kick_http_session(now, pid);
        }
        let _ = self.streams.status(&self.sfu, now);
    }

    /// An operator's action; what to answer.
    fn admin(
        &mut self,
        now: Instant,
        op: crate::http::admin::AdminOp,
    ) -> Result<serde_json::Value, crate::http::admin::AdminOpError> {
        use crate::http::admin::AdminOp;
        use serde_json::json;
        Ok(match op {
            AdminOp::Kick(room, pid) => {
                self.sfu.kick(now, &room, pid)?;
                json!({ "room": room, "removed": pid.to_string() })
            }
            AdminOp::EndRoom(room) => {
                let n = self.sfu.end_room(now, &room)?;
                json!({ "room": room, "removed": n })
            }
            AdminOp::Mute(room, track, muted) => {
                self.sfu.server_mute(now, &room, track, muted)?;
                json!({ "room": room, "track": track.to_string(), "muted": muted })
            }
            AdminOp::Grant(room, pid, update) => {
                let g = self.sfu.update_grant(now, &room, pid, update)?;
                json!({ "room": room, "participant": pid.to_string(),
                        "publish": g.publish, "subscribe": g.subscribe, "data": g.data })
            }
            AdminOp::StopStream(name) => {
                // The handler stopped it in the hub (once, for every shard): a WHIP
                // publisher's session here ends now rather than at the next tick.
                for pid in self.streams.kicked() {
                    self.sfu.kick_http_session(now, pid);
                }
                json!({ "stopped": name.to_string() })
            }
        })
    }

    fn whip_offer(
        &mut self,
        now: Instant,
        stream: StreamName,
        offer: &str,
    ) -> Result<HttpSession, SessionError> {
        let publisher = self
            .streams
            .hub
            .publish(stream.clone(), hub::Protocol::Whip, now)?;
        let session = self.sfu.whip_publish(now, stream.as_str(), offer)?;
        self.streams.add_whip(session.participant, publisher);
        Ok(session)
    }

    fn whep_offer(
        &mut self,
        now: Instant,
        stream: StreamName,
        offer: &str,
        via_hub: bool,
        max_height: Option<u32>,
        mirror: Option<(u32, Vec<sfu::mirror::MirrorTrack>)>,
    ) -> Result<HttpSession, SessionError> {
        let mirrored = mirror.is_some();
        if let Some((origin, tracks)) = mirror {
            self.sfu.mirror_open(now, stream.as_str(), origin, tracks);
        }
        if !via_hub && (mirrored || self.sfu.has_stream(stream.as_str())) {
            let session = self
                .sfu
                .whep_play(now, stream.as_str(), offer, max_height)?;
            self.streams.add_viewer(session.participant, stream, false);
            return Ok(session);
        }
        if !self.sfu.has_hub_source(stream.as_str()) {
            self.open_hub_source(now, &stream)?;
        }
        match self.sfu.whep_play_hub(now, stream.as_str(), offer) {
            Ok(session) => {
                self.streams.add_viewer(session.participant, stream, true);
                Ok(session)
            }
            Err(e) => {
                if !self.streams.has_hub_viewer(&stream) {
                    self.streams.close_hub_feed(&stream);
                    self.sfu.hub_source_close(now, stream.as_str());
                }
                Err(e.into())
            }
        }
    }

    /// The hub source of `stream` here, and the feed that reads it from the hub.
    fn open_hub_source(&mut self, now: Instant, stream: &StreamName) -> Result<(), SessionError> {
        let Some(info) = self.streams.hub.stream(stream) else {
            return Err(HttpSessionError::NotFound(stream.to_string()).into());
        };
        // Published a moment ago: its first sequence headers are still on their way, and the
        // source can only have the tracks known now (FFmpeg's video header comes before its
        // audio one: a viewer answered in between went without sound for good, as a CI run
        // showed). For its first seconds a stream with only one kind is asked for again later
        // (503, Retry-After); after that it is taken as it is (audio-only, video-only).
        let kinds = |k| info.tracks.iter().any(|t| t.kind() == k);
        let young = now.saturating_duration_since(info.started) < HUB_TRACKS_SETTLE;
        let partial = !(kinds(hub::MediaKind::Audio) && kinds(hub::MediaKind::Video));
        if info.tracks.is_empty() || (young && partial) {
            return Err(HttpSessionError::NoMediaYet(stream.to_string()).into());
        }
        let tracks: Vec<FrameTrack> = info.tracks.iter().filter_map(frame_track).collect();
        if tracks.is_empty() {
            return Err(SessionError::NothingPlayable(stream.to_string()));
        }
        if !self.streams.open_hub_feed(stream) {
            return Err(HttpSessionError::NotFound(stream.to_string()).into());
        }
        self.sfu.hub_source_open(now, stream.as_str(), &tracks);
        Ok(())
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Connect(conn, tx) => {
                self.conns.insert(conn, tx);
                self.sfu.connect(conn);
            }
            Command::Message(conn, msg) => self.sfu.handle_signal(now, conn, msg),
            Command::Authorize(conn, grant) => {
                if let Some(id) = &grant.identity {
                    self.identities.insert(conn, id.clone());
                }
                self.sfu.authorize(conn, grant);
            }
            Command::BadFrame(conn, code, text) => self.sfu.reply_error(conn, code, text),
            Command::Disconnect(conn) => {
                self.conns.remove(&conn);
                self.identities.remove(&conn);
                self.sfu.disconnect(now, conn);
            }
            Command::TcpOpen(addr, tx) => {
                self.tcp.insert(addr, tx);
            }
            Command::TcpFrame(source, data) => {
                self.sfu
                    .handle_receive(now, Protocol::Tcp, source, self.local, &data);
            }
            Command::TcpClosed(addr) => {
                self.tcp.remove(&addr);
            }
            Command::Relayed {
                from,
                to,
                data,
                turn,
            } => {
                self.relays.entry(from).or_insert(turn);
                self.sfu.handle_receive(now, Protocol::Udp, from, to, &data);
            }
            Command::RelayClosed(addr) => {
                self.relays.remove(&addr);
            }
            Command::Status(reply) => {
                let s = self.sfu.stats();
                let rooms: Vec<RoomStatus> = self
                    .sfu
                    .rooms()
                    .into_iter()
                    .map(|(name, participants)| RoomStatus { name, participants })
                    .collect();
                let _ = reply.send(Status {
                    shards: vec![ShardStatus {
                        shard: self.shard,
                        rooms: rooms.len(),
                        peers: self.sfu.peer_count(),
                        rtp_in: s.rtp_in,
                        rtp_out: s.rtp_out,
                        cpu_seconds: thread_cpu_seconds(),
                    }],
                    rooms,
                    peers: self.sfu.peer_count(),
                    rtp_in: s.rtp_in,
                    rtp_out: s.rtp_out,
                    keyframe_requests: s.keyframe_requests,
                    data_relayed: s.data_relayed,
                    unclaimed_datagrams: s.unclaimed,
                    ice_failures: s.ice_failures,
                    ice_disconnects: s.ice_disconnects,
                    red_recovered: s.red_recovered,
                    quality: self.sfu.quality_histograms().clone(),
                    by_quality: self.sfu.participants_by_quality(),
                });
            }
            Command::RoomReport(name, reply) => {
                let _ = reply.send(self.sfu.room_report(&name));
            }
            Command::Sessions(reply) => {
                let _ = reply.send(self.sfu.session_reports());
            }
            Command::Admin(op, reply) => {
                let _ = reply.send(self.admin(now, op));
            }
            Command::WhipOffer {
                stream,
                offer,
                reply,
            } => {
                let _ = reply.send(self.whip_offer(now, stream, &offer));
            }
            Command::WhepOffer {
                stream,
                offer,
                via_hub,
                max_height,
                mirror,
                reply,
            } => {
                let r = self.whep_offer(now, stream, &offer, via_hub, max_height, mirror);
                let _ = reply.send(r);
            }
            Command::Export { stream, to, reply } => {
                let _ = reply.send(self.sfu.export_stream(&stream, to));
            }
            Command::Mirrored(packets) => self.sfu.mirror_packets(now, packets),
            Command::ExportedKeyframe(track, layer) => {
                self.sfu.exported_keyframe(now, track, layer)
            }
            Command::Unexport(shard, stream) => self.sfu.unexport(shard, &stream),
            Command::MirrorTrackEnd(stream, track) => {
                self.sfu.mirror_track_end(now, &stream, track)
            }
            Command::Announced { names, origin } => {
                for stream in self.sfu.mirrors_wanted(&names) {
                    let to = self.shard as u32;
                    self.to_shard(origin, Command::ExportTo { stream, to });
                }
            }
            Command::ExportTo { stream, to } => {
                if let Some(tracks) = self.sfu.export_stream(&stream, to)
                    && !tracks.is_empty()
                {
                    let origin = self.shard as u32;
                    let open = Command::MirrorOpen {
                        stream,
                        origin,
                        tracks,
                    };
                    self.to_shard(to, open);
                }
            }
            Command::MirrorOpen {
                stream,
                origin,
                tracks,
            } => self.sfu.mirror_open(now, &stream, origin, tracks),
            Command::SessionPatch {
                token,
                fragment,
                reply,
            } => {
                let r = self.sfu.http_session_patch(now, &token, &fragment);
                let _ = reply.send(r.map_err(Into::into));
            }
            Command::SessionDelete { token, reply } => {
                let r = self.sfu.end_http_session(now, &token);
                let _ = reply.send(r.map_err(Into::into));
            }
            Command::HubFrame {
                stream,
                track,
                keyframe,
                pts_us,
                data,
            } => self
                .sfu
                .hub_frame(now, stream.as_str(), track, keyframe, pts_us, &data),
            Command::HubParameterSets { stream, sets } => {
                self.sfu.hub_parameter_sets(stream.as_str(), sets)
            }
            Command::HubFeedEnded { stream, id } => {
                if self.streams.hub_feed_ended(&stream, id) {
                    self.sfu.hub_source_close(now, stream.as_str());
                }
            }
            Command::HasStream(name, reply) => {
                let _ = reply.send(self.sfu.has_stream(&name));
            }
            Command::Streams(reply) => {
                let all = self.streams.status(&self.sfu, now);
                let _ = reply.send(self.streams.own(all, self.hub_only_streams));
            }
            Command::Shutdown(done) => {
                info!("shutting down: telling peers");
                self.sfu.shutdown(now);
                self.shutdown = Some(done);
            }
        }
    }

    /// Carries out everything the SFU has queued; returns its next deadline.
    async fn flush(&mut self) -> Instant {
        loop {
            match self.sfu.poll_output() {
                Output::Transmit(t) => match t.proto {
                    Protocol::Udp
                        if !self.relays.is_empty() && self.relays.contains_key(&t.destination) =>
                    {
                        if let Some(turn) = self.relays.get(&t.destination) {
                            turn.from_sfu(t.destination, t.source, &t.contents);
                        }
                    }
                    Protocol::Udp => {
                        if self.outbox.push(t.destination, t.contents.into()) {
                            self.outbox.send(&self.udp).await;
                        }
                    }
                    _ => {
                        if let Some(tx) = self.tcp.get(&t.destination) {
                            // A full queue means the client is not reading: drop, like UDP would.
                            let _ = tx.try_send(t.contents.to_vec());
                        }
                    }
                },
                Output::Signal(conn, mut msg) => {
                    if let ServerMessage::Joined {
                        participant_id,
                        ice_servers,
                        ..
                    } = &mut msg
                        && ice_servers.is_empty()
                    {
                        // Each member gets its own time-limited TURN credentials, named after
                        // its token's subject when it had one (as /api/ice-servers does).
                        *ice_servers = match self.identities.get(&conn) {
                            Some(sub) => self
                                .ice
                                .for_user(&crate::turn::ice_servers::subject_user(sub)),
                            None => self.ice.for_user(&participant_id.to_string()),
                        };
                    }
                    let joined = matches!(msg, ServerMessage::Joined { .. });
                    if let Some(tx) = self.conns.get(&conn)
                        && let Err(mpsc::error::TrySendError::Full(_)) = (if joined {
                            tx.try_send(ToConn::Joined)
                        } else {
                            Ok(())
                        })
                        .and_then(|()| tx.try_send(ToConn::Text(msg.to_json())))
                    {
                        // The client is not reading its socket: let it go rather than queue
                        // without end (its task closes the socket and disconnects it).
                        debug!(
                            conn = conn.0,
                            "signalling queue full: dropping the connection"
                        );
                        self.conns.remove(&conn);
                    }
                }
                Output::Close(conn) => {
                    if let Some(tx) = self.conns.remove(&conn) {
                        let _ = tx.try_send(ToConn::Close);
                    }
                }
                Output::Event(e) => {
                    self.room_events.on_sfu(&self.hooks, &e);
                    self.streams.on_event(&mut self.sfu, e);
                }
                Output::MirrorKeyframe {
                    origin,
                    track,
                    layer,
                } => self.to_shard(origin, Command::ExportedKeyframe(track, layer)),
                Output::MirrorClosed { origin, stream } => {
                    self.to_shard(origin, Command::Unexport(self.shard as u32, stream))
                }
                Output::ExportEnded {
                    shard,
                    stream,
                    track,
                } => self.to_shard(shard, Command::MirrorTrackEnd(stream, track)),
                Output::Announced { names } => {
                    let origin = self.shard as u32;
                    for i in (0..self.shards.len() as u32).filter(|i| *i != origin) {
                        let names = names.clone();
                        self.to_shard(i, Command::Announced { names, origin });
                    }
                }
                Output::Timeout(t) => {
                    for (shard, packet) in self.sfu.take_exports() {
                        if let Some(batch) = self.exports.get_mut(shard as usize) {
                            batch.push(packet);
                        }
                    }
                    for (i, batch) in self.exports.iter_mut().enumerate() {
                        if !batch.is_empty()
                            && let Some(tx) = self.shards.get(i)
                        {
                            tx.media(Command::Mirrored(std::mem::take(batch)));
                        }
                    }
                    if !self.outbox.is_empty() {
                        self.outbox.send(&self.udp).await;
                    }
                    return t;
                }
            }
        }
    }

    fn to_shard(&self, shard: u32, cmd: Command) {
        if let Some(tx) = self.shards.get(shard as usize) {
            tx.between_shards(cmd);
        }
    }
}

/// ICE-TCP (RFC 6544, passive): each accepted connection carries RFC 4571 frames, a 16-bit
/// length before each STUN/DTLS/RTP packet.
pub(crate) async fn accept_tcp(
    listener: TcpListener,
    tx: mpsc::Sender<Command>,
    limits: Arc<crate::limits::Limits>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let Some(slot) = limits.connect(crate::limits::Door::IceTcp, addr.ip()) else {
                    debug!(%addr, "ICE-TCP connection refused: limits.connections_per_ip reached");
                    continue;
                };
                let deadlines = (limits.settings.header_deadline, limits.settings.idle);
                let (tx, limits) = (tx.clone(), limits.clone());
                tokio::spawn(async move {
                    if tcp_conn(stream, addr, tx, deadlines).await == Ended::Idle {
                        limits
                            .refused
                            .idle
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                warn!("ICE-TCP accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// How an ICE-TCP connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Closed,
    /// Nothing came within the deadline.
    Idle,
}

/// One ICE-TCP connection. `(first, idle)`: its first frame must come within `first`, and
/// each later one within `idle` (a live peer sends consent checks every few seconds), so
/// sockets that say nothing do not hold descriptors forever.
async fn tcp_conn(
    stream: TcpStream,
    addr: SocketAddr,
    tx: mpsc::Sender<Command>,
    (first, idle): (std::time::Duration, std::time::Duration),
) -> Ended {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    if tx.send(Command::TcpOpen(addr, out_tx)).await.is_err() {
        return Ended::Closed;
    }
    let writer = tokio::spawn(async move {
        while let Some(pkt) = out_rx.recv().await {
            let Ok(len) = u16::try_from(pkt.len()) else {
                continue;
            };
            if wr.write_all(&len.to_be_bytes()).await.is_err() || wr.write_all(&pkt).await.is_err()
            {
                break;
            }
        }
    });
    let mut len = [0u8; 2];
    let mut wait = first;
    let ended = loop {
        let frame = async {
            rd.read_exact(&mut len).await?;
            let mut frame = vec![0u8; u16::from_be_bytes(len) as usize];
            rd.read_exact(&mut frame).await?;
            Ok::<_, std::io::Error>(frame)
        };
        match tokio::time::timeout(wait, frame).await {
            Ok(Ok(frame)) => {
                // A shard that falls behind slows this reader, and TCP the client.
                if tx.send(Command::TcpFrame(addr, frame)).await.is_err() {
                    break Ended::Closed;
                }
            }
            Ok(Err(_)) => break Ended::Closed,
            Err(_) => break Ended::Idle,
        }
        wait = idle;
    };
    writer.abort();
    let _ = tx.send(Command::TcpClosed(addr)).await;
    ended
}
