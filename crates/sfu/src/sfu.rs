//! The SFU's state and its sans-IO surface: inputs in, outputs polled.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use str0m::change::SdpPendingOffer;
use str0m::channel::ChannelId;
use str0m::media::Mid;
use str0m::media::Rid;
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};
use tracing::{debug, info, warn};

use crate::config::SfuConfig;
use crate::forward::Forwarder;
use crate::ids::{ConnId, ParticipantId, PeerId, RoomName, TrackId};
use crate::keyframe::KeyframeThrottle;
use crate::signal::{LeaveReason, PcKind, PublishTrack, ServerMessage, TrackKind, TrackSource};

/// An HTTP session's peer that has not (re)gained ICE connectivity in this long is ended.
/// Remote ICE candidates one peer connection may add (a browser gathers a handful per
/// interface and transport).
pub(crate) const MAX_REMOTE_CANDIDATES: usize = 64;

/// m-lines an offer over WHIP/WHEP may have (a publisher or viewer has two or three; an offer
/// with hundreds made an answer of megabytes).
pub(crate) const MAX_HTTP_MLINES: usize = 16;

/// How long a member may leave a subscriber offer unanswered (a browser answers in well under
/// a second).
pub(crate) const OFFER_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) const HTTP_SESSION_ICE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// What the SFU asks its driver to do.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram (or, for TCP, one RFC 4571 frame).
    Transmit(Transmit),
    /// Send a signalling message on a connection.
    Signal(ConnId, ServerMessage),
    /// Close a signalling connection (after the messages queued before this).
    Close(ConnId),
    /// Something the driver may want to act on (hub registration, HTTP sessions ending).
    Event(SfuEvent),
    /// A viewer here needs a keyframe of a mirrored track: for the origin's
    /// [`Sfu::exported_keyframe`].
    MirrorKeyframe {
        /// The shard the track is published on.
        origin: u32,
        /// The track (the same id on both shards).
        track: TrackId,
        /// Its simulcast or spatial layer.
        layer: usize,
    },
    /// Nobody here watches the mirror of a stream any more: for the origin's
    /// [`Sfu::unexport`].
    MirrorClosed {
        /// The shard the stream is published on.
        origin: u32,
        /// The stream.
        stream: String,
    },
    /// A track of an exported stream is gone: for the mirroring shard's
    /// [`Sfu::mirror_track_end`].
    ExportEnded {
        /// The mirroring shard.
        shard: u32,
        /// The stream.
        stream: String,
        /// The track.
        track: TrackId,
    },
    /// A source here has a new track, under these stream names: for every other shard's
    /// [`Sfu::mirrors_wanted`] (its WHEP viewers waiting for a republish follow it there).
    /// Only when there are other shards.
    Announced {
        /// The names a viewer may have asked for it by (a WHIP stream's, or a room member's
        /// `ROOM/NAME` and `ROOM/PA_n`).
        names: Vec<String>,
    },
    /// Nothing more to do until this time, or until the next input.
    Timeout(Instant),
}

/// What happened inside the SFU that its driver may mirror elsewhere (the stream hub, the HTTP
/// session table).
#[derive(Debug, Clone, PartialEq)]
pub enum SfuEvent {
    /// A participant entered a room.
    MemberJoined {
        /// Who.
        participant: ParticipantId,
        /// The room.
        room: String,
        /// Display name.
        name: String,
    },
    /// A room participant left (or timed out).
    MemberLeft {
        /// Who.
        participant: ParticipantId,
    },
    /// The announced tracks of a room participant or a WHIP publisher changed.
    TracksChanged {
        /// Whose.
        participant: ParticipantId,
        /// All its announced tracks now.
        tracks: Vec<crate::signal::TrackInfo>,
    },
    /// A frame of a track of a room participant or WHIP publisher, reassembled for the hub
    /// (H.264, VP8, VP9, AV1 and Opus; the highest simulcast layer being sent, or with
    /// `hub_layers` a lower one).
    Frame {
        /// Whose.
        participant: ParticipantId,
        /// Which of its tracks.
        track: TrackId,
        /// `None`: the track's main feed (the highest layer being sent). `Some(n)`: simulcast
        /// layer n (0 = lowest) alone, for a track that has higher ones (`hub_layers`).
        layer: Option<u8>,
        /// The frame.
        frame: crate::depacketize::AssembledFrame,
    },
    /// A WHIP or WHEP session ended: DELETE, its peer closed, or ICE gave up.
    SessionEnded {
        /// The session.
        participant: ParticipantId,
    },
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SfuStats {
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets handed to subscribers' connections.
    pub rtp_out: u64,
    /// Datagrams no peer claimed.
    pub unclaimed: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Data channel messages relayed (counted once per receiver).
    pub data_relayed: u64,
    /// Peer connections whose ICE never connected (every candidate pair failed).
    pub ice_failures: u64,
    /// Peer connections whose ICE connected and later lost its path.
    pub ice_disconnects: u64,
    /// Audio frames lost on the way in that the hub took from the next packet's RED
    /// redundancy (recordings, LL-HLS and WHEP viewers of hub streams hear them).
    pub red_recovered: u64,
}

/// A selective forwarding unit: rooms of participants, each with a publisher and a subscriber
/// peer connection, RTP forwarded between them. See the crate docs for the run loop.
pub struct Sfu {
    pub(crate) config: SfuConfig,
    pub(crate) local_candidates: Vec<Candidate>,
    pub(crate) rng: fastrand::Rng,
    pub(crate) next_id: u64,
    pub(crate) rooms: BTreeMap<RoomName, Room>,
    pub(crate) participants: BTreeMap<ParticipantId, Participant>,
    pub(crate) conns: BTreeMap<ConnId, Option<ParticipantId>>,
    pub(crate) peers: BTreeMap<PeerId, Peer>,
    pub(crate) tracks: BTreeMap<TrackId, Track>,
    /// Where a datagram from an address went last: most packets skip the scan over all peers.
    pub(crate) by_addr: HashMap<(Protocol, std::net::SocketAddr), PeerId>,
    pub(crate) out: VecDeque<Output>,
    /// Events drained from peers, handled after the mutation that caused them.
    pub(crate) events: VecDeque<(PeerId, Event)>,
    pub(crate) now: Instant,
    pub(crate) stats: SfuStats,
    /// When subscribers' bandwidth is next shared out again whatever their estimates did.
    pub(crate) next_allocation_round: Instant,
    /// When the layers publishers must send are worked out next (dynacast.rs).
    pub(crate) next_dynacast: Instant,
    /// Grants of connections that have not joined yet (grant.rs).
    pub(crate) conn_grants: HashMap<ConnId, crate::grant::Grant>,
    /// Participants whose streams the hub's readers watch (they keep every layer).
    pub(crate) hub_watched: std::collections::HashSet<ParticipantId>,
    /// Every connection's round trip, loss and jitter, for Prometheus.
    pub(crate) histograms: crate::quality::QualityHistograms,
    /// Audio levels, turned into each room's active speakers (speaker.rs).
    pub(crate) speakers: crate::speaker::Speakers,
    /// The loudest speaker of each room: their camera goes before other cameras when a
    /// subscriber's bandwidth is shared out.
    pub(crate) loudest: std::collections::HashSet<ParticipantId>,
    /// When mirrors nobody here watches are next looked for (mirror.rs).
    pub(crate) next_mirror_check: Instant,
    /// Packets for other shards (mirror.rs), taken with [`Sfu::take_exports`]: apart from
    /// `out` because a packet is large and there are many.
    pub(crate) exports: Vec<(u32, crate::mirror::MirrorPacket)>,
    /// Streams of the hub played by WHEP viewers here, by name (hub_source.rs).
    pub(crate) hub_sources: HashMap<String, crate::hub_source::HubSource>,
}

/// The one str0m drain loop: polls `peer` until it yields its next timeout, transmits to
/// `out`, events to `events` (handled after the mutation that caused them). A connection that
/// fails is disconnected and stays until `reap` removes its participant, with a deadline that
/// does not spin the loop.
pub(crate) fn drain_peer(
    id: PeerId,
    peer: &mut Peer,
    now: Instant,
    out: &mut VecDeque<Output>,
    events: &mut VecDeque<(PeerId, Event)>,
) {
    loop {
        match peer.rtc.poll_output() {
            Ok(RtcOutput::Timeout(t)) => {
                peer.timeout = t;
                break;
            }
            Ok(RtcOutput::Transmit(t)) => out.push_back(Output::Transmit(t)),
            Ok(RtcOutput::Event(e)) => events.push_back((id, e)),
            Err(e) => {
                warn!(peer = id.0, participant = %peer.owner, "peer failed: {e}");
                peer.rtc.disconnect();
                peer.timeout = now + std::time::Duration::from_secs(1);
                break;
            }
        }
    }
}

pub(crate) struct Room {
    pub participants: Vec<ParticipantId>,
    pub mode: crate::signal::RoomMode,
    /// The speakers last announced, loudest first (a member who joins is told them).
    pub speakers: Vec<crate::signal::SpeakerLevel>,
}

/// What a participant is: a room member with a signalling socket, or one side of an HTTP
/// (WHIP/WHEP) session with a single peer connection and no socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    Member,
    /// Publishes `stream` over WHIP; its one peer is its publisher connection. `ufrag`: the
    /// offer's ICE ufrag, which tells a trickle fragment from an ICE restart.
    Whip {
        stream: String,
        ufrag: Option<String>,
    },
    /// Plays `stream` over WHEP; its one peer is its subscriber connection. `hub`: the
    /// source is the stream's [`Role::Hub`] (RTMP …), not a WebRTC publisher of that name.
    Whep {
        stream: String,
        hub: bool,
        ufrag: Option<String>,
    },
    /// Stands for `stream`, published on shard `origin`, for viewers on this one: its tracks
    /// are fed by [`Sfu::mirror_packets`]; it has no peer (mirror.rs).
    Mirror {
        stream: String,
        origin: u32,
    },
    /// Stands for `stream`, which lives in the hub (RTMP …), for this shard's WHEP viewers of
    /// it: its tracks are packetized from the hub's frames (hub_source.rs); it has no peer.
    Hub {
        stream: String,
    },
}

pub(crate) struct Participant {
    pub id: ParticipantId,
    pub role: Role,
    /// A WHIP or WHEP session's own state; None for members and mirrors.
    pub http: Option<HttpSide>,
    /// When the first packet of any of its tracks arrived: zero of its hub timeline.
    pub media_base: Option<Instant>,
    pub name: String,
    pub room: RoomName,
    /// A room member's signalling; None for WHIP/WHEP sessions (HTTP drives them) and mirrors
    /// (another shard does).
    pub signalling: Option<Signalling>,
    /// Members: the token that resumes after a lost socket; WHIP/WHEP sessions: the one that
    /// names their resource (PATCH, DELETE).
    pub resume_token: String,
    pub publisher: PeerId,
    pub subscriber: PeerId,
    /// Own tracks by their mid on the publisher connection.
    pub published: BTreeMap<Mid, TrackId>,
    /// Others' tracks this participant receives or wants.
    pub subs: BTreeMap<TrackId, Sub>,
    pub sub_mids: HashMap<Mid, TrackId>,
    /// Inactive subscriber m-lines, kept in the BUNDLE group for reuse (see negotiate.rs).
    pub free_mids: Vec<FreeMid>,
    pub channels: HashMap<ChannelId, String>,
    /// Its connection quality as last announced, and a different grade waiting to hold.
    pub quality: Option<crate::signal::Quality>,
    pub quality_pending: Option<(crate::signal::Quality, Instant)>,
    /// What it may do (grant.rs).
    pub grant: crate::grant::Grant,
}

/// What only a WHIP or WHEP session has.
#[derive(Default)]
pub(crate) struct HttpSide {
    /// Since when the peer has been without ICE connectivity (from creation until it first
    /// connects). A session has no socket to time out, so this is how it ends.
    pub media_lost_at: Option<Instant>,
}

/// What only a room member has: its signalling socket and the offers and answers on it.
#[derive(Default)]
pub(crate) struct Signalling {
    pub conn: Option<ConnId>,
    /// When the signalling socket dropped; the grace period runs from here.
    pub conn_lost_at: Option<Instant>,
    /// Subscribes to every track published in the room.
    pub auto_subscribe: bool,
    /// Descriptions from the latest offer, by mid, for m-lines not yet published.
    pub publish_meta: HashMap<String, PublishTrack>,
    /// The subscriber offer in flight, and the message that carried it (resent on resume).
    pub sub_pending: Option<(SdpPendingOffer, ServerMessage)>,
    /// When that offer was last sent: a member that leaves it unanswered for
    /// [`OFFER_ANSWER_TIMEOUT`] while its socket is up is removed (it holds a room slot and
    /// every track's forwarding state, and nothing will ever flow).
    pub sub_offered_at: Option<Instant>,
    /// The next subscriber offer restarts ICE.
    pub sub_restart_ice: bool,
}

/// A subscriber m-line no longer carrying a track.
pub(crate) struct FreeMid {
    pub mid: Mid,
    pub kind: TrackKind,
    pub codec: Option<str0m::format::CodecSpec>,
    pub last_out: Option<(u64, u32, Instant)>,
}

/// One of the participant's subscriptions.
pub(crate) struct Sub {
    /// False once unsubscribed or unpublished; the m-line is then stopped.
    pub want: bool,
    pub max_height: Option<u32>,
    pub mid: Option<Mid>,
    /// The m-line is in an accepted answer.
    pub negotiated: bool,
    /// The m-line is being made inactive.
    pub stopping: bool,
    /// Where the numbering on this m-line stands (kept when the track stops, or inherited when
    /// the m-line is reused).
    pub last_out: Option<(u64, u32, Instant)>,
    /// Kind and codec of the m-line, once it has one.
    pub media: Option<(TrackKind, Option<str0m::format::CodecSpec>)>,
}

pub(crate) struct Peer {
    pub rtc: Rtc,
    pub owner: ParticipantId,
    pub kind: PcKind,
    pub timeout: Instant,
    /// Publisher connections: which track and layer an incoming SSRC belongs to.
    pub ssrcs: HashMap<Ssrc, (TrackId, usize)>,
    /// The client's candidates as it sent them (SDP and trickle), for the log when ICE fails.
    pub remote_candidates: Vec<String>,
    /// Remote candidates given to ICE (at most [`MAX_REMOTE_CANDIDATES`]): each makes
    /// candidate pairs to check, so a client trickling without end would stall every session.
    pub candidates_added: usize,
    /// ICE has worked at least once: a later Disconnected is a lost path, not a failure.
    pub connected_once: bool,
    /// Subscriber connections: str0m's estimate of the bandwidth towards the client (bit/s).
    pub estimate: Option<f64>,
    /// str0m's bandwidth estimate and pacer run on this connection (see `clock`).
    pub paced: bool,
    /// The last time this connection was given (input or timeout). str0m stamps what it sends
    /// with it, so a paced connection is brought up to date before each forwarded packet.
    pub clock: Instant,
    /// The rate str0m was last told to probe towards (bit/s; 0: not yet).
    pub probe_goal: u64,
    /// The rate str0m was last told to keep up with padding (bit/s; 0: none).
    pub probe_trial: u64,
    /// The probe goal is a step higher (a nudge for str0m to probe), and when that flips next.
    pub nudged: bool,
    pub next_nudge: Instant,
    /// Loss and round trip towards the client, once a second (paced connections).
    pub congestion: crate::congestion::Congestion,
    /// What str0m's statistics say about this connection (see quality.rs).
    pub quality: crate::quality::PeerQuality,
}

pub(crate) struct Track {
    pub id: TrackId,
    pub owner: ParticipantId,
    pub peer: PeerId,
    pub mid: Mid,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub muted: bool,
    /// Muted by the operator: nothing of it is forwarded (nor handed to the hub).
    pub server_muted: bool,
    /// Its audio arrives as RED (RFC 2198): each packet repeats the frame before.
    pub red: bool,
    /// The last audio packet handed to the hub (its frames only go forward).
    pub hub_audio_seq: Option<u64>,
    /// RED audio: the last frames, sent again with each packet.
    pub red_history: crate::red::RedHistory,
    /// Known from the first packet; the track is announced then.
    pub codec: Option<str0m::format::PayloadParams>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Simulcast RIDs, lowest first; empty when not simulcast.
    pub rids: Vec<Rid>,
    pub layers: Vec<Layer>,
    pub downstream: Vec<Down>,
    /// Recent video packets, for subscribers whose epoch starts late.
    pub recent: VecDeque<crate::media::Cached>,
    pub first_packet: Option<Instant>,
    /// RTP payload bytes received, all layers.
    pub bytes_in: u64,
    /// Reassembles one layer into frames for the hub (codecs it knows): the highest that is
    /// sending (a browser holds back its top simulcast layer until its bandwidth estimate
    /// allows it, and pauses it when the estimate drops).
    pub assembler: Option<crate::depacketize::Assembler>,
    /// The layer `assembler` reassembles.
    pub hub_layer: Option<usize>,
    /// The pts of the last frame handed to the hub, so that one from another layer never
    /// goes back in time.
    pub hub_last_pts: u64,
    /// With `hub_layers`: one reassembly per simulcast layer below the top, each a track of
    /// its own in the hub (an HLS variant). Made at a layer's first packet.
    pub layer_assemblers: Vec<Option<crate::depacketize::Assembler>>,
    /// Shards this track's packets are handed to, and the stream name each mirrors it as.
    pub exports: Vec<(u32, String)>,
    /// Packetized from hub frames (hub_source.rs): its viewers get packets only once
    /// connected, beginning with the frames since the last keyframe (nobody can be asked for
    /// one).
    pub from_hub: bool,
    /// The layers its publisher was told to send (dynacast.rs).
    pub dynacast: crate::dynacast::PublisherLayers,
}

impl Track {
    /// A track of `owner`, arrived on `peer`'s m-line `mid`, as it is before its first packet:
    /// one layer per simulcast RID (or one), codec unknown, nobody receiving it.
    pub(crate) fn new(
        id: TrackId,
        owner: ParticipantId,
        (peer, mid): (PeerId, Mid),
        kind: TrackKind,
        source: TrackSource,
        rids: Vec<Rid>,
    ) -> Track {
        Track {
            id,
            owner,
            peer,
            mid,
            kind,
            source,
            muted: false,
            server_muted: false,
            red: false,
            hub_audio_seq: None,
            red_history: Default::default(),
            codec: None,
            width: None,
            height: None,
            layers: (0..rids.len().max(1)).map(|_| Layer::default()).collect(),
            rids,
            downstream: Vec::new(),
            recent: VecDeque::new(),
            first_packet: None,
            bytes_in: 0,
            assembler: None,
            hub_layer: None,
            hub_last_pts: 0,
            layer_assemblers: Vec::new(),
            dynacast: Default::default(),
            exports: Vec::new(),
            from_hub: false,
        }
    }
}

impl Sfu {
    /// A room member's signalling state (None for HTTP sessions, mirrors, and the gone).
    pub(crate) fn signalling_mut(&mut self, pid: ParticipantId) -> Option<&mut Signalling> {
        self.participants.get_mut(&pid)?.signalling.as_mut()
    }
}

impl Participant {
    /// A member's signalling socket, while it has one.
    pub(crate) fn conn(&self) -> Option<ConnId> {
        self.signalling.as_ref().and_then(|s| s.conn)
    }

    /// A participant as it starts: no socket, nothing published or received yet.
    pub(crate) fn new(
        id: ParticipantId,
        role: Role,
        name: &str,
        room: RoomName,
        (publisher, subscriber): (PeerId, PeerId),
        grant: crate::grant::Grant,
    ) -> Participant {
        Participant {
            id,
            signalling: (role == Role::Member).then(Signalling::default),
            http: matches!(role, Role::Whip { .. } | Role::Whep { .. }).then(HttpSide::default),
            role,
            media_base: None,
            name: name.to_owned(),
            room,
            resume_token: String::new(),
            publisher,
            subscriber,
            published: BTreeMap::new(),
            subs: BTreeMap::new(),
            sub_mids: HashMap::new(),
            free_mids: Vec::new(),
            channels: HashMap::new(),
            quality: None,
            quality_pending: None,
            grant,
        }
    }
}

#[derive(Default)]
pub(crate) struct Layer {
    pub last_seen: Option<Instant>,
    pub keyframes: KeyframeThrottle,
    /// The height its last keyframe said, when it said one.
    pub height: Option<u32>,
    /// Its incoming bitrate.
    pub rate: crate::bandwidth::RateMeter,
}

/// One subscriber's leg of a track.
pub(crate) struct Down {
    pub subscriber: ParticipantId,
    pub peer: PeerId,
    pub mid: Mid,
    pub max_height: Option<u32>,
    /// What the stream allocator lets this leg send (`None`: no estimate yet, no limit).
    pub alloc: Option<crate::allocate::Allocation>,
    /// Since when the allocator has found no video layer that fits (the leg is paused once
    /// that has lasted `bandwidth::PAUSE_AFTER`).
    pub no_fit_since: Option<Instant>,
    /// Since when the allocator has allowed a higher layer than the leg has (it moves up once
    /// that has lasted `bandwidth::UP_HOLD`).
    pub up_since: Option<Instant>,
    pub fwd: Forwarder,
    /// Publisher payload type → subscriber payload type, and whether a RED packet is cut to
    /// its primary block on the way (the subscriber has no RED); filled as codecs appear.
    pub pts: Vec<(str0m::media::Pt, Option<(str0m::media::Pt, bool)>)>,
    /// RED packets go to this subscriber whole (it negotiated RED).
    pub red: bool,
    /// Its Opus payload type, when it differs from the publisher's (RED blocks are renamed).
    pub red_retag: Option<u8>,
    /// VP8: picture ids renumbered across layer switches (vp8.rs).
    pub vp8: crate::vp8::Vp8Ids,
}

impl Sfu {
    /// A new SFU. `local_candidates` are the addresses every peer connection offers (the UDP
    /// media socket, the ICE-TCP listener). `seed` makes ids and tokens reproducible in tests;
    /// the server seeds from the OS.
    pub fn new(
        config: SfuConfig,
        local_candidates: Vec<Candidate>,
        seed: u64,
        now: Instant,
    ) -> Sfu {
        Sfu {
            // Shard i of n hands out i+1, i+1+n, …: ids unique across the server.
            next_id: 1 + u64::from(config.shard.index),
            config,
            local_candidates,
            rng: fastrand::Rng::with_seed(seed),
            rooms: BTreeMap::new(),
            participants: BTreeMap::new(),
            conns: BTreeMap::new(),
            peers: BTreeMap::new(),
            tracks: BTreeMap::new(),
            by_addr: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            now,
            stats: SfuStats::default(),
            next_allocation_round: now,
            next_dynacast: now,
            hub_watched: Default::default(),
            conn_grants: HashMap::new(),
            histograms: Default::default(),
            speakers: Default::default(),
            loudest: Default::default(),
            next_mirror_check: now,
            exports: Vec::new(),
            hub_sources: HashMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> SfuStats {
        self.stats
    }

    /// Rooms and their participant counts.
    pub fn rooms(&self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self
            .rooms
            .iter()
            .map(|(n, r)| (n.to_string(), r.participants.len()))
            .collect();
        v.sort();
        v
    }

    /// Number of published tracks.
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    /// Number of participants in all rooms.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// RTP payload bytes received so far on all tracks `pid` publishes.
    pub fn bytes_published(&self, pid: ParticipantId) -> u64 {
        self.tracks
            .values()
            .filter(|t| t.owner == pid)
            .map(|t| t.bytes_in)
            .sum()
    }

    /// Number of live peer connections.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += u64::from(self.config.shard.count.max(1));
        id
    }

    /// A signalling connection opened.
    pub fn connect(&mut self, conn: ConnId) {
        self.conns.insert(conn, None);
    }

    /// A signalling connection closed (by the client or the network). Its participant keeps its
    /// place for the grace period.
    pub fn disconnect(&mut self, now: Instant, conn: ConnId) {
        self.now = now;
        self.conn_grants.remove(&conn);
        let Some(Some(pid)) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(s) = self.signalling_mut(pid)
            && s.conn == Some(conn)
        {
            debug!(participant = %pid, "signalling lost; grace period starts");
            s.conn = None;
            s.conn_lost_at = Some(now);
        }
    }

    /// A datagram (or a TCP frame) arrived. Returns false when no peer connection claimed it.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: std::net::SocketAddr,
        destination: std::net::SocketAddr,
        data: &[u8],
    ) -> bool {
        self.now = now;
        let Ok(contents) = data.try_into() else {
            self.stats.unclaimed += 1;
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        let key = (proto, source);
        let cached = self
            .by_addr
            .get(&key)
            .copied()
            .filter(|id| self.peers.get(id).is_some_and(|p| p.rtc.accepts(&input)));
        let found = cached.or_else(|| {
            self.peers
                .iter()
                .find(|(_, p)| p.rtc.accepts(&input))
                .map(|(id, _)| *id)
        });
        let Some(peer_id) = found else {
            self.stats.unclaimed += 1;
            return false;
        };
        if cached.is_none() {
            self.by_addr.insert(key, peer_id);
        }
        if let Some(p) = self.peers.get_mut(&peer_id) {
            // STUN consent checks count: they are all an idle connection sends.
            p.quality.heard = Some(now);
        }
        self.feed(peer_id, input);
        self.process_events();
        true
    }

    /// Time passed: drives every peer whose deadline came, grace periods and merged keyframe
    /// requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.feed(id, Input::Timeout(now));
        }
        self.process_events();
        self.poll_keyframe_requests(now);
        if self.speakers.due(now) {
            self.announce_speakers(now);
        }
        if self.config.bandwidth_allocation {
            self.allocation_round(now);
            self.process_events();
        }
        self.dynacast_round(now);
        self.reap(now);
        self.reap_mirrors(now);
    }

    /// The next thing to do: drain until it yields `Timeout`.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        Output::Timeout(self.next_deadline())
    }

    fn next_deadline(&self) -> Instant {
        // A linear scan: fine for hundreds of peers per core; a timer wheel replaces it when the
        // benchmark says so.
        let far = self.now + std::time::Duration::from_secs(1);
        let peers = self.peers.values().map(|p| p.timeout);
        let grace = self
            .participants
            .values()
            .filter_map(|p| p.signalling.as_ref()?.conn_lost_at)
            .map(|t| t + self.config.reconnect_grace);
        let kf = self.tracks.values().flat_map(|t| {
            t.layers
                .iter()
                .filter_map(|l| l.keyframes.due(self.config.keyframe_min_interval))
        });
        let ice = self
            .participants
            .values()
            .filter_map(|p| p.http.as_ref()?.media_lost_at)
            .map(|t| t + HTTP_SESSION_ICE_TIMEOUT);
        let dynacast = self.config.dynacast.then_some(self.next_dynacast);
        peers
            .chain(grace)
            .chain(kf)
            .chain(ice)
            .chain(dynacast)
            .fold(far, Instant::min)
    }

    /// Tells every client the server is going away and closes every peer connection.
    pub fn shutdown(&mut self, now: Instant) {
        self.now = now;
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for pid in ids {
            if let Some(conn) = self.participants.get(&pid).and_then(|p| p.conn()) {
                self.out.push_back(Output::Signal(
                    conn,
                    ServerMessage::Bye {
                        reason: LeaveReason::ServerShutdown,
                    },
                ));
                self.out.push_back(Output::Close(conn));
            }
            self.remove_participant(pid, LeaveReason::ServerShutdown);
        }
    }

    /// Feeds one input to one peer and drains it. The drain collects events for
    /// [`Self::process_events`] and transmits for [`Self::poll_output`].
    pub(crate) fn feed(&mut self, id: PeerId, input: Input) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.clock = match &input {
            Input::Timeout(t) | Input::Receive(t, _) => (*t).max(peer.clock),
        };
        if let Err(e) = peer.rtc.handle_input(input) {
            warn!(peer = id.0, participant = %peer.owner, "peer failed: {e}");
            peer.rtc.disconnect();
        }
        self.drain(id);
    }

    /// Polls a peer until it yields its next timeout (str0m's rule: every mutation is followed
    /// by a full drain before the next).
    pub(crate) fn drain(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(&id) {
            drain_peer(id, peer, self.now, &mut self.out, &mut self.events);
        }
    }

    /// Removes participants whose grace period ran out or whose connections died.
    fn reap(&mut self, now: Instant) {
        let grace = self.config.reconnect_grace;
        let gone: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| {
                let s = p.signalling.as_ref();
                let expired = s
                    .and_then(|s| s.conn_lost_at)
                    .is_some_and(|t| now >= t + grace)
                    || p.http
                        .as_ref()
                        .and_then(|h| h.media_lost_at)
                        .is_some_and(|t| now >= t + HTTP_SESSION_ICE_TIMEOUT);
                let unanswered = s.is_some_and(|s| {
                    s.conn.is_some()
                        && s.sub_pending.is_some()
                        && s.sub_offered_at
                            .is_some_and(|t| now >= t + OFFER_ANSWER_TIMEOUT)
                });
                if unanswered {
                    info!(participant = %p.id, "removed: left an offer unanswered for {OFFER_ANSWER_TIMEOUT:?}");
                }
                // A mirror or hub source has no peer (closed when nobody watches, by mirror.rs
                // and by the driver).
                let dead = !matches!(p.role, Role::Mirror { .. } | Role::Hub { .. })
                    && [p.publisher, p.subscriber]
                        .iter()
                        .any(|id| self.peers.get(id).is_none_or(|peer| !peer.rtc.is_alive()));
                expired || dead || unanswered
            })
            .map(|p| p.id)
            .collect();
        for pid in gone {
            debug!(participant = %pid, "removed: timeout");
            if let Some(conn) = self.participants.get(&pid).and_then(|p| p.conn()) {
                self.out.push_back(Output::Signal(
                    conn,
                    ServerMessage::Bye {
                        reason: LeaveReason::Timeout,
                    },
                ));
                self.out.push_back(Output::Close(conn));
                self.conns.remove(&conn);
            }
            self.remove_participant(pid, LeaveReason::Timeout);
        }
    }

    /// Closes a peer that is leaving: RTCP BYE, SCTP shutdown and DTLS close_notify go out,
    /// so the browser knows at once instead of after its ICE consent checks fail (seconds).
    pub(crate) fn close_peer(&mut self, mut peer: Peer) {
        if peer.rtc.close().is_err() {
            peer.rtc.disconnect();
            return;
        }
        // Bounded: closing queues a handful of packets.
        for _ in 0..64 {
            match peer.rtc.poll_output() {
                Ok(RtcOutput::Transmit(t)) => self.out.push_back(Output::Transmit(t)),
                Ok(RtcOutput::Event(_)) => {}
                Ok(RtcOutput::Timeout(_)) | Err(_) => break,
            }
        }
        peer.rtc.disconnect();
    }

    pub(crate) fn send(&mut self, pid: ParticipantId, msg: ServerMessage) {
        if let Some(conn) = self.participants.get(&pid).and_then(|p| p.conn()) {
            self.out.push_back(Output::Signal(conn, msg));
        }
    }

    pub(crate) fn broadcast(
        &mut self,
        room: &RoomName,
        except: ParticipantId,
        msg: &ServerMessage,
    ) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for pid in &r.participants {
            if *pid == except {
                continue;
            }
            if let Some(conn) = self.participants.get(pid).and_then(|p| p.conn()) {
                self.out.push_back(Output::Signal(conn, msg.clone()));
            }
        }
    }
}
