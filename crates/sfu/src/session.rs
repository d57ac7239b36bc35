//! Signalling: what each client message does to rooms, participants and peer connections.

use std::collections::HashMap;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Rtc};
use tracing::{debug, info};

use crate::ids::{ConnId, ParticipantId, PeerId, RoomName, TrackId};
use crate::sfu::{Output, Participant, Peer, Role, Room, Sfu, SfuEvent, Signalling, Sub};
use crate::signal::{
    ClientMessage, ErrorCode, LeaveReason, Limits, ParticipantInfo, PcKind, RoomMode,
    ServerMessage, SubscribeTrack, TrackInfo,
};

impl Sfu {
    /// One decoded message from a signalling connection.
    pub fn handle_signal(&mut self, now: Instant, conn: ConnId, msg: ClientMessage) {
        self.now = now;
        let Some(bound) = self.conns.get(&conn).copied() else {
            return;
        };
        match (bound, msg) {
            (
                None,
                ClientMessage::Join {
                    room,
                    name,
                    auto_subscribe,
                    resume,
                    mode,
                    ..
                },
            ) => match resume {
                Some(token) => self.resume(conn, &token),
                None => {
                    let grant = match self.conn_grants.remove(&conn) {
                        Some(g) => g,
                        None if self.config.require_grant => {
                            return self.reply_error(
                                conn,
                                ErrorCode::Unauthorized,
                                "an access token is required to join",
                            );
                        }
                        None => crate::grant::Grant::all(),
                    };
                    if !grant.covers(&room) {
                        return self.reply_error(
                            conn,
                            ErrorCode::Forbidden,
                            format!("the access token does not grant room '{room}'"),
                        );
                    }
                    // Without the right to receive, nothing is sent to it.
                    let auto_subscribe = auto_subscribe && grant.subscribe;
                    self.join(conn, &room, &name, auto_subscribe, mode, grant)
                }
            },
            (Some(_), ClientMessage::Join { .. }) => {
                self.reply_error(conn, ErrorCode::AlreadyJoined, "this socket already joined")
            }
            (_, ClientMessage::Ping) => self
                .out
                .push_back(Output::Signal(conn, ServerMessage::Pong)),
            (None, _) => self.reply_error(conn, ErrorCode::NotJoined, "send join first"),
            (Some(pid), msg) => self.handle_participant_message(pid, conn, msg),
        }
        self.process_events();
    }

    /// A frame that could not be decoded: the error goes back on the same socket.
    pub fn reply_error(&mut self, conn: ConnId, code: ErrorCode, message: impl Into<String>) {
        self.out
            .push_back(Output::Signal(conn, ServerMessage::error(code, message)));
    }

    fn handle_participant_message(&mut self, pid: ParticipantId, conn: ConnId, msg: ClientMessage) {
        let p2p = self.mode_of(pid) == RoomMode::P2p;
        let media = matches!(
            msg,
            ClientMessage::Offer { .. }
                | ClientMessage::Answer { .. }
                | ClientMessage::Candidate { .. }
                | ClientMessage::Subscribe { .. }
                | ClientMessage::Unsubscribe { .. }
                | ClientMessage::Mute { .. }
                | ClientMessage::Unpublish { .. }
                | ClientMessage::RestartIce
        );
        if p2p && media {
            return self.reply_error(
                conn,
                ErrorCode::WrongMode,
                "this room is peer-to-peer: media goes between members, negotiated with `signal`",
            );
        }
        match msg {
            ClientMessage::Join { .. } | ClientMessage::Ping => {}
            ClientMessage::Signal { to, data } => self.relay_signal(pid, conn, to, data),
            ClientMessage::Offer { sdp, tracks } => self.publisher_offer(pid, conn, &sdp, tracks),
            ClientMessage::Answer { sdp } => self.subscriber_answer(pid, conn, &sdp),
            ClientMessage::Candidate { pc, candidate, .. } => {
                self.remote_candidate(pid, conn, pc, candidate.as_deref())
            }
            ClientMessage::Subscribe { .. }
                if self
                    .participants
                    .get(&pid)
                    .is_some_and(|p| !p.grant.subscribe) =>
            {
                self.reply_error(
                    conn,
                    ErrorCode::Forbidden,
                    "the access token does not grant subscribing",
                )
            }
            ClientMessage::Subscribe { tracks } => self.subscribe(pid, conn, &tracks),
            ClientMessage::Unsubscribe { track_ids } => {
                for t in track_ids {
                    self.unsubscribe(pid, t);
                }
                self.negotiate(pid);
            }
            ClientMessage::Mute { track_id, muted } => self.mute(pid, conn, track_id, muted),
            ClientMessage::Unpublish { track_id } => {
                if self.tracks.get(&track_id).is_some_and(|t| t.owner == pid) {
                    self.unpublish(track_id);
                } else {
                    self.reply_error(
                        conn,
                        ErrorCode::BadRequest,
                        format!("{track_id} is not yours"),
                    );
                }
            }
            ClientMessage::RestartIce => {
                if let Some(s) = self.signalling_mut(pid) {
                    s.sub_restart_ice = true;
                }
                self.negotiate(pid);
            }
            ClientMessage::RemoveParticipant { .. } | ClientMessage::MuteTrack { .. }
                if !self
                    .participants
                    .get(&pid)
                    .is_some_and(|p| p.grant.room_admin) =>
            {
                self.reply_error(
                    conn,
                    ErrorCode::Forbidden,
                    "the access token does not grant room admin",
                );
            }
            ClientMessage::RemoveParticipant { participant_id } => {
                let room = self.participants.get(&pid).map(|p| p.room.to_string());
                let removed = room.map(|r| self.kick(self.now, &r, participant_id));
                if let Some(Err(e)) = removed {
                    self.reply_error(conn, ErrorCode::BadRequest, e.to_string());
                }
            }
            ClientMessage::MuteTrack { track_id, muted } => {
                let room = self.participants.get(&pid).map(|p| p.room.to_string());
                let done = room.map(|r| self.server_mute(self.now, &r, track_id, muted));
                if let Some(Err(e)) = done {
                    self.reply_error(conn, ErrorCode::BadRequest, e.to_string());
                }
            }
            ClientMessage::Leave => {
                info!(participant = %pid, "left");
                self.conns.remove(&conn);
                self.remove_participant(pid, LeaveReason::Left);
                self.out.push_back(Output::Signal(
                    conn,
                    ServerMessage::Bye {
                        reason: LeaveReason::Left,
                    },
                ));
                self.out.push_back(Output::Close(conn));
            }
        }
    }

    /// The mode of the room `pid` is in.
    pub(crate) fn mode_of(&self, pid: ParticipantId) -> RoomMode {
        self.participants
            .get(&pid)
            .and_then(|p| self.rooms.get(&p.room))
            .map_or(RoomMode::Sfu, |r| r.mode)
    }

    /// P2P rooms: passes `data` to `to` (or every other member), marked with its sender.
    fn relay_signal(
        &mut self,
        pid: ParticipantId,
        conn: ConnId,
        to: Option<ParticipantId>,
        data: serde_json::Value,
    ) {
        if self.mode_of(pid) != RoomMode::P2p {
            return self.reply_error(
                conn,
                ErrorCode::WrongMode,
                "`signal` is for peer-to-peer rooms",
            );
        }
        let Some(room) = self.participants.get(&pid).map(|p| p.room.clone()) else {
            return;
        };
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.participants.clone())
            .unwrap_or_default();
        let msg = ServerMessage::Signal { from: pid, data };
        match to {
            Some(to) if members.contains(&to) && to != pid => self.send(to, msg),
            Some(to) => self.reply_error(
                conn,
                ErrorCode::BadRequest,
                format!("{to} is not another member of this room"),
            ),
            None => self.broadcast(&room, pid, &msg),
        }
    }

    fn join(
        &mut self,
        conn: ConnId,
        room: &str,
        name: &str,
        auto_subscribe: bool,
        mode: Option<RoomMode>,
        grant: crate::grant::Grant,
    ) {
        let room = match RoomName::parse(room) {
            Ok(r) => r,
            Err(e) => return self.reply_error(conn, ErrorCode::BadRequest, e),
        };
        // The server routes a socket's first join to the room's shard; a socket that was a
        // member of a room on this shard stays here, and cannot open a room that lives on
        // another one.
        if !self.config.shard.owns(room.as_str()) {
            return self.reply_error(
                conn,
                ErrorCode::BadRequest,
                format!(
                    "this socket was in a room on another shard: join '{room}' on a new socket"
                ),
            );
        }
        // The room's mode: config first, then the room as it is, then what the joiner asks —
        // but only where anyone may join anyway: with tokens the first joiner must not decide
        // for everyone (rooms.p2p_rooms does).
        let existing = self.rooms.get(&room).map(|r| r.mode);
        let asked = mode.filter(|_| !self.config.require_grant);
        let room_mode = if self.config.is_p2p_room(room.as_str()) {
            RoomMode::P2p
        } else {
            existing.or(asked).unwrap_or_default()
        };
        if let Some(asked) = mode
            && asked != room_mode
        {
            return self.reply_error(
                conn,
                ErrorCode::WrongMode,
                format!("room '{room}' is {room_mode:?}, not {asked:?}").to_lowercase(),
            );
        }
        let limit = match room_mode {
            RoomMode::Sfu => self.config.max_participants_per_room,
            RoomMode::P2p => self.config.max_participants_per_p2p_room,
        };
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return self.reply_error(conn, ErrorCode::BadRequest, "name must be 1-64 characters");
        }
        let count = self.rooms.get(&room).map_or(0, |r| r.participants.len());
        if count >= limit {
            return self.reply_error(
                conn,
                ErrorCode::RoomFull,
                format!("room '{room}' has {count} participants, the limit is {limit}"),
            );
        }
        // Counted on every shard together; from here on the room is opened (below).
        if !self.rooms.contains_key(&room) && !self.config.open_rooms.open(self.config.max_rooms) {
            return self.reply_error(
                conn,
                ErrorCode::RoomFull,
                format!(
                    "{} rooms are open, the most this server allows (rooms.max_rooms)",
                    self.config.open_rooms.get()
                ),
            );
        }
        let pid = ParticipantId(self.next_id());
        let publisher = self.new_peer(pid, PcKind::Publisher);
        let subscriber = self.new_peer(pid, PcKind::Subscriber);
        let resume_token = format!("{:016x}{:016x}", self.rng.u64(..), self.rng.u64(..));
        let member = Participant::new(
            pid,
            Role::Member,
            name,
            room.clone(),
            (publisher, subscriber),
            grant,
        );
        self.participants.insert(
            pid,
            Participant {
                signalling: Some(Signalling {
                    conn: Some(conn),
                    auto_subscribe,
                    ..Signalling::default()
                }),
                resume_token,
                ..member
            },
        );
        self.conns.insert(conn, Some(pid));
        self.rooms
            .entry(room.clone())
            .or_insert_with(|| Room {
                participants: Vec::new(),
                mode: room_mode,
                speakers: Vec::new(),
            })
            .participants
            .push(pid);
        info!(participant = %pid, %room, name, "joined");
        self.out.push_back(Output::Event(SfuEvent::MemberJoined {
            participant: pid,
            room: room.to_string(),
            name: name.to_owned(),
        }));

        self.send_joined(pid);
        if !self.is_hidden(pid) {
            let info = self.participant_info(pid);
            self.broadcast(
                &room,
                pid,
                &ServerMessage::ParticipantJoined { participant: info },
            );
        }
        if auto_subscribe {
            let existing: Vec<TrackId> = self
                .room_tracks(&room)
                .filter(|t| t.1 != pid)
                .map(|t| t.0)
                .collect();
            for t in existing {
                self.add_sub(pid, t, None);
            }
            self.negotiate(pid);
        }
    }

    fn resume(&mut self, conn: ConnId, token: &str) {
        let found = self
            .participants
            .values()
            // A member's token only: a WHIP/WHEP session's names its HTTP resource.
            .find(|p| p.signalling.is_some() && p.resume_token == token)
            .map(|p| (p.id, p.conn()));
        let Some((pid, old)) = found else {
            return self.reply_error(
                conn,
                ErrorCode::ResumeFailed,
                "unknown or expired resume token",
            );
        };
        if let Some(old) = old {
            // The old socket is half-dead from the client's point of view: it moved on.
            self.conns.remove(&old);
            self.out.push_back(Output::Close(old));
        }
        if let Some(s) = self.signalling_mut(pid) {
            s.conn = Some(conn);
            s.conn_lost_at = None;
        }
        self.conns.insert(conn, Some(pid));
        info!(participant = %pid, "resumed");
        self.send_joined(pid);
        // An offer that was in flight when the socket dropped may never have arrived.
        let pending = self
            .participants
            .get(&pid)
            .and_then(|p| p.signalling.as_ref()?.sub_pending.as_ref())
            .map(|(_, m)| m.clone());
        match pending {
            Some(m) => {
                let now = self.now;
                if let Some(s) = self.signalling_mut(pid) {
                    s.sub_offered_at = Some(now);
                }
                self.send(pid, m);
            }
            None => self.negotiate(pid),
        }
        self.resend_layers_needed(pid);
    }

    fn send_joined(&mut self, pid: ParticipantId) {
        let Some(p) = self.participants.get(&pid) else {
            return;
        };
        let room = p.room.clone();
        let token = p.resume_token.clone();
        let others: Vec<ParticipantId> = self
            .rooms
            .get(&room)
            .map(|r| {
                r.participants
                    .iter()
                    .copied()
                    .filter(|o| *o != pid)
                    .collect()
            })
            .unwrap_or_default();
        let participants = others
            .into_iter()
            .filter(|o| !self.is_hidden(*o))
            .collect::<Vec<_>>();
        let participants = participants
            .into_iter()
            .map(|o| self.participant_info(o))
            .collect();
        let msg = ServerMessage::Joined {
            room: room.to_string(),
            participant_id: pid,
            resume_token: token,
            participants,
            ice_servers: self.config.ice_servers.clone(),
            mode: self.rooms.get(&room).map(|r| r.mode).unwrap_or_default(),
            limits: Limits {
                max_data_bytes: self.config.max_data_bytes,
                max_signal_bytes: self.config.max_signal_bytes,
                max_tracks_per_participant: self.config.max_tracks_per_participant,
                reconnect_grace_secs: self.config.reconnect_grace.as_secs(),
            },
        };
        self.send(pid, msg);
        // Speakers are announced when they change: a newcomer hears who speaks now.
        let speakers = self
            .rooms
            .get(&room)
            .map(|r| r.speakers.clone())
            .unwrap_or_default();
        if !speakers.is_empty() {
            self.send(pid, ServerMessage::ActiveSpeakers { speakers });
        }
    }

    pub(crate) fn participant_info(&self, pid: ParticipantId) -> ParticipantInfo {
        let p = &self.participants[&pid];
        let mut tracks: Vec<TrackInfo> = p
            .published
            .values()
            .filter_map(|t| self.track_info(*t))
            .collect();
        tracks.sort_by_key(|t| t.id);
        ParticipantInfo {
            id: pid,
            name: p.name.clone(),
            tracks,
            quality: p.quality,
        }
    }

    /// Announced tracks of a room, with their owners.
    pub(crate) fn room_tracks<'a>(
        &'a self,
        room: &'a RoomName,
    ) -> impl Iterator<Item = (TrackId, ParticipantId)> + 'a {
        self.tracks
            .values()
            .filter(move |t| {
                t.codec.is_some()
                    && self
                        .participants
                        .get(&t.owner)
                        .is_some_and(|p| &p.room == room)
            })
            .map(|t| (t.id, t.owner))
    }

    /// A room member's connection. Its subscriber side runs the bandwidth estimate (with
    /// `rooms.bandwidth_allocation`): room tracks come and go, and cameras are simulcast.
    pub(crate) fn new_peer(&mut self, owner: ParticipantId, kind: PcKind) -> PeerId {
        let estimate = kind == PcKind::Subscriber;
        self.new_peer_with(owner, kind, false, estimate)
    }

    /// `ice_lite`: the peer answers connectivity checks and never sends its own, as a server
    /// with only host candidates may (RFC 8445 §2.5). HTTP sessions use it: FFmpeg's WHIP
    /// muxer waits for the server's DTLS after its own checks succeed and never answers
    /// checks of a full-ICE server.
    ///
    /// `estimate`: a subscriber connection that has layers to choose between, so str0m's
    /// bandwidth estimate runs on it (with `rooms.bandwidth_allocation`). It is not free:
    /// str0m's pacer wants a timeout pass after every packet it lets out, which is about a
    /// quarter more CPU per forwarded packet (docs/benchmarks.md), so a viewer of a stream with
    /// one layer, where an estimate could choose nothing, goes without.
    pub(crate) fn new_peer_with(
        &mut self,
        owner: ParticipantId,
        kind: PcKind,
        ice_lite: bool,
        estimate: bool,
    ) -> PeerId {
        let paced = kind == PcKind::Subscriber && estimate && self.config.bandwidth_allocation;
        let mut builder = Rtc::builder();
        if kind == PcKind::Subscriber && !paced {
            // Transport-wide sequence numbers (transport-cc) and send times (abs-send-time)
            // are there for bandwidth estimates. For transport-cc str0m keeps the last 1,000
            // packets sent per connection (~90 KiB), each packet carries one, and the client
            // sends feedback on them; a connection with no estimate gets none of that. Its
            // loss and round trip come from the receiver reports instead (quality.rs).
            builder = builder.set_extension_map(extensions_without_estimates());
        }
        let rtc = builder
            .set_ice_lite(ice_lite)
            .set_rtp_mode(true)
            .clear_codecs()
            // Opus with RED (RFC 2198) where the client offers it: see red.rs.
            .enable_opus(true, true)
            .enable_pcmu(true, false)
            .enable_pcma(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_av1(true)
            // What is sent to a subscriber is shaped to str0m's estimate of its downlink
            // (TWCC, probing with padding up to what its layers need): see bandwidth.rs.
            .enable_bwe(paced.then_some(crate::bandwidth::INITIAL_ESTIMATE))
            // Loss, round trip, jitter and rates once a second: quality.rs, and the congestion
            // check of paced connections (congestion.rs).
            .set_stats_interval(Some(crate::quality::STATS_INTERVAL))
            .build(self.now);
        self.add_peer(rtc, owner, kind, paced)
    }

    /// Registers a peer connection built elsewhere, with the server's candidates.
    /// `paced`: the connection was built with str0m's bandwidth estimate (and so its pacer).
    pub(crate) fn add_peer(
        &mut self,
        mut rtc: Rtc,
        owner: ParticipantId,
        kind: PcKind,
        paced: bool,
    ) -> PeerId {
        let id = PeerId(self.next_id());
        for c in &self.local_candidates {
            rtc.add_local_candidate(c.clone());
        }
        self.peers.insert(
            id,
            Peer {
                rtc,
                owner,
                kind,
                timeout: self.now,
                ssrcs: HashMap::new(),
                remote_candidates: Vec::new(),
                candidates_added: 0,
                connected_once: false,
                estimate: None,
                paced,
                clock: self.now,
                probe_goal: 0,
                probe_trial: 0,
                congestion: Default::default(),
                quality: Default::default(),
                nudged: false,
                next_nudge: self.now,
            },
        );
        self.drain(id);
        id
    }

    fn publisher_offer(
        &mut self,
        pid: ParticipantId,
        conn: ConnId,
        sdp: &str,
        tracks: Vec<crate::signal::PublishTrack>,
    ) {
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(o) => o,
            Err(e) => {
                let e = crate::sdp::client_error(&e);
                return self.reply_error(conn, ErrorCode::BadSdp, format!("offer: {e}"));
            }
        };
        if let Some(peer) = self.participants.get(&pid).map(|p| p.publisher) {
            self.note_candidates(peer, sdp);
        }
        let Some(p) = self.participants.get(&pid) else {
            return;
        };
        if let Some(t) = tracks.iter().find(|t| !p.grant.may_publish(t.source)) {
            let source = serde_json::to_value(t.source).unwrap_or_default();
            return self.reply_error(
                conn,
                ErrorCode::Forbidden,
                format!("the access token does not grant publishing {source}"),
            );
        }
        let new_tracks = tracks
            .iter()
            .filter(|t| !p.published.keys().any(|m| m.to_string() == t.mid))
            .count();
        let mine = p.published.len() + new_tracks;
        let room = p.room.clone();
        let in_room = self.room_tracks(&room).count() + new_tracks;
        if mine > self.config.max_tracks_per_participant {
            return self.reply_error(
                conn,
                ErrorCode::TooManyTracks,
                format!(
                    "{mine} tracks, the limit per participant is {}",
                    self.config.max_tracks_per_participant
                ),
            );
        }
        if in_room > self.config.max_tracks_per_room {
            return self.reply_error(
                conn,
                ErrorCode::TooManyTracks,
                format!(
                    "{in_room} tracks in the room, the limit is {}",
                    self.config.max_tracks_per_room
                ),
            );
        }
        let peer_id = p.publisher;
        if let Some(s) = self.signalling_mut(pid) {
            for t in tracks {
                s.publish_meta.insert(t.mid.clone(), t);
            }
        }
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let answer = peer.rtc.sdp_api().accept_offer(offer);
        self.drain(peer_id);
        match answer {
            Ok(a) => {
                let mut sdp = crate::sdp::follow_offer_order(&a.to_sdp_string(), sdp);
                if self.config.opus_dtx {
                    sdp = crate::sdp::request_opus_dtx(&sdp);
                }
                self.send(pid, ServerMessage::Answer { sdp })
            }
            Err(e) => self.reply_error(conn, ErrorCode::BadSdp, format!("offer not accepted: {e}")),
        }
    }

    fn subscriber_answer(&mut self, pid: ParticipantId, conn: ConnId, sdp: &str) {
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => {
                let e = crate::sdp::client_error(&e);
                return self.reply_error(conn, ErrorCode::BadSdp, format!("answer: {e}"));
            }
        };
        if let Some(peer) = self.participants.get(&pid).map(|p| p.subscriber) {
            self.note_candidates(peer, sdp);
        }
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let Some((pending, _)) = p.signalling.as_mut().and_then(|s| {
            s.sub_offered_at = None;
            s.sub_pending.take()
        }) else {
            return self.reply_error(
                conn,
                ErrorCode::BadRequest,
                "no offer is waiting for an answer",
            );
        };
        let peer_id = p.subscriber;
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let accepted = peer.rtc.sdp_api().accept_answer(pending, answer);
        self.drain(peer_id);
        if let Err(e) = accepted {
            // The subscriber connection is now out of step with the client; only a fresh join
            // recovers from that.
            return self.reply_error(conn, ErrorCode::BadSdp, format!("answer not accepted: {e}"));
        }
        self.answer_accepted(pid);
        self.negotiate(pid);
    }

    fn remote_candidate(
        &mut self,
        pid: ParticipantId,
        conn: ConnId,
        pc: PcKind,
        cand: Option<&str>,
    ) {
        let Some(cand) = cand.map(str::trim).filter(|c| !c.is_empty()) else {
            return; // end of candidates: str0m needs no signal for it
        };
        let raw = cand.to_owned();
        let cand = match Candidate::from_sdp_string(cand.strip_prefix("a=").unwrap_or(cand)) {
            Ok(c) => c,
            Err(e) => {
                return self.reply_error(conn, ErrorCode::BadRequest, format!("candidate: {e}"));
            }
        };
        let Some(p) = self.participants.get(&pid) else {
            return;
        };
        let peer_id = match pc {
            PcKind::Publisher => p.publisher,
            PcKind::Subscriber => p.subscriber,
        };
        self.note_candidates(peer_id, &raw);
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            if peer.candidates_added >= crate::sfu::MAX_REMOTE_CANDIDATES {
                return self.reply_error(
                    conn,
                    ErrorCode::BadRequest,
                    format!(
                        "candidate: more than {} on one connection",
                        crate::sfu::MAX_REMOTE_CANDIDATES
                    ),
                );
            }
            peer.candidates_added += 1;
            peer.rtc.add_remote_candidate(cand);
            self.drain(peer_id);
        }
    }

    /// Keeps the candidates a client sent (`a=candidate:` lines of an SDP or fragment, or one
    /// trickled candidate), at most 32 per peer, for the ICE failure log.
    pub(crate) fn note_candidates(&mut self, peer_id: PeerId, text: &str) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        for line in text.lines().map(str::trim) {
            let line = line.strip_prefix("a=").unwrap_or(line);
            if let Some(c) = line.strip_prefix("candidate:")
                && peer.remote_candidates.len() < 32
            {
                // foundation component transport priority address port typ type …
                let f: Vec<&str> = c.split_whitespace().collect();
                if f.len() >= 8 {
                    peer.remote_candidates
                        .push(format!("{} {}:{} {}", f[2], f[4], f[5], f[7]));
                }
            }
        }
    }

    fn subscribe(&mut self, pid: ParticipantId, conn: ConnId, tracks: &[SubscribeTrack]) {
        let Some(room) = self.participants.get(&pid).map(|p| p.room.clone()) else {
            return;
        };
        for t in tracks {
            let ok = self.tracks.get(&t.track_id).is_some_and(|tr| {
                tr.owner != pid
                    && self
                        .participants
                        .get(&tr.owner)
                        .is_some_and(|o| o.room == room)
            });
            if !ok {
                self.reply_error(
                    conn,
                    ErrorCode::BadRequest,
                    format!(
                        "{} is not a track of another participant in this room",
                        t.track_id
                    ),
                );
                continue;
            }
            self.add_sub(pid, t.track_id, t.max_height);
        }
        self.negotiate(pid);
    }

    /// Adds or updates a subscription. Negotiation follows separately.
    pub(crate) fn add_sub(&mut self, pid: ParticipantId, track: TrackId, max_height: Option<u32>) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let sub = p.subs.entry(track).or_insert(Sub {
            want: true,
            max_height,
            mid: None,
            negotiated: false,
            stopping: false,
            last_out: None,
            media: None,
        });
        sub.want = true;
        sub.max_height = max_height;
        // A publisher may have to resume a layer for this one (dynacast.rs).
        self.next_dynacast = self.now;
        if let Some(t) = self.tracks.get_mut(&track) {
            for d in t.downstream.iter_mut().filter(|d| d.subscriber == pid) {
                d.max_height = max_height;
            }
        }
    }

    pub(crate) fn unsubscribe(&mut self, pid: ParticipantId, track: TrackId) {
        let mut last_out = None;
        if let Some(t) = self.tracks.get_mut(&track) {
            if let Some(d) = t.downstream.iter().find(|d| d.subscriber == pid) {
                last_out = d.fwd.last_out();
            }
            t.downstream.retain(|d| d.subscriber != pid);
        }
        if let Some(sub) = self
            .participants
            .get_mut(&pid)
            .and_then(|p| p.subs.get_mut(&track))
        {
            sub.want = false;
            sub.last_out = last_out.or(sub.last_out);
        }
    }

    fn mute(&mut self, pid: ParticipantId, conn: ConnId, track: TrackId, muted: bool) {
        let Some(t) = self.tracks.get_mut(&track).filter(|t| t.owner == pid) else {
            return self.reply_error(conn, ErrorCode::BadRequest, format!("{track} is not yours"));
        };
        t.muted = muted;
        let announced = t.codec.is_some();
        let Some(room) = self.participants.get(&pid).map(|p| p.room.clone()) else {
            return;
        };
        if announced {
            let msg = ServerMessage::TrackMuted {
                participant_id: pid,
                track_id: track,
                muted,
                by_server: false,
            };
            self.broadcast(&room, pid, &msg);
        }
    }

    /// Removes a published track: subscribers stop receiving it and renegotiate.
    pub(crate) fn unpublish(&mut self, track: TrackId) {
        let Some(t) = self.tracks.remove(&track) else {
            return;
        };
        self.exports_ended(track, &t.exports);
        self.speakers.forget(track);
        debug!(%track, "unpublished");
        for d in &t.downstream {
            if let Some(sub) = self
                .participants
                .get_mut(&d.subscriber)
                .and_then(|p| p.subs.get_mut(&track))
            {
                sub.last_out = d.fwd.last_out();
            }
        }
        if let Some(p) = self.participants.get_mut(&t.owner) {
            p.published.remove(&t.mid);
            if let Some(peer) = self.peers.get_mut(&t.peer) {
                peer.ssrcs.retain(|_, (tid, _)| *tid != track);
            }
        }
        let Some(room) = self.participants.get(&t.owner).map(|p| p.room.clone()) else {
            return;
        };
        if t.codec.is_some() {
            let msg = ServerMessage::TrackUnpublished {
                participant_id: t.owner,
                track_id: track,
            };
            self.broadcast(&room, t.owner, &msg);
        }
        let subscribers: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.subs.contains_key(&track))
            .map(|p| p.id)
            .collect();
        for s in subscribers {
            self.unsubscribe(s, track);
            self.release_viewer_mid(s, track);
            self.negotiate(s);
        }
        if t.codec.is_some() {
            self.tracks_changed(t.owner);
        }
    }

    /// Tells the driver the announced tracks of `pid` (a member or a WHIP publisher).
    pub(crate) fn tracks_changed(&mut self, pid: ParticipantId) {
        if !self.participants.contains_key(&pid) {
            return;
        }
        let tracks = self.participant_info(pid).tracks;
        self.out.push_back(Output::Event(SfuEvent::TracksChanged {
            participant: pid,
            tracks,
        }));
    }

    /// Takes a participant out of its room and frees everything it held.
    pub(crate) fn remove_participant(&mut self, pid: ParticipantId, reason: LeaveReason) {
        let Some(p) = self.participants.get(&pid) else {
            return;
        };
        let own: Vec<TrackId> = p.published.values().copied().collect();
        let subs: Vec<TrackId> = p.subs.keys().copied().collect();
        let (room, peers) = (p.room.clone(), [p.publisher, p.subscriber]);
        let hidden = p.grant.hidden;
        let event = match p.role {
            Role::Member => Some(SfuEvent::MemberLeft { participant: pid }),
            Role::Whip { .. } | Role::Whep { .. } => {
                Some(SfuEvent::SessionEnded { participant: pid })
            }
            // Nothing outside the SFU knew of it.
            Role::Mirror { .. } | Role::Hub { .. } => None,
        };
        if let Role::Hub { stream } = &p.role
            && self.hub_sources.get(stream).is_some_and(|s| s.pid == pid)
        {
            let stream = stream.clone();
            self.hub_sources.remove(&stream);
        }
        for t in own {
            self.unpublish(t);
        }
        for t in subs {
            if let Some(tr) = self.tracks.get_mut(&t) {
                tr.downstream.retain(|d| d.subscriber != pid);
            }
        }
        for id in peers {
            if let Some(peer) = self.peers.remove(&id) {
                self.close_peer(peer);
            }
        }
        self.by_addr.retain(|_, id| !peers.contains(id));
        self.events.retain(|(id, _)| !peers.contains(id));
        if let Some(p) = self.participants.remove(&pid)
            && let Some(c) = p.conn()
        {
            self.conns.insert(c, None);
        }
        let empty = self.rooms.get_mut(&room).is_some_and(|r| {
            r.participants.retain(|x| *x != pid);
            r.participants.is_empty()
        });
        if empty {
            self.rooms.remove(&room);
            self.config.open_rooms.close();
            info!(%room, "room closed");
        }
        if !hidden {
            let msg = ServerMessage::ParticipantLeft {
                participant_id: pid,
                reason,
            };
            self.broadcast(&room, pid, &msg);
        }
        if let Some(event) = event {
            self.out.push_back(Output::Event(event));
        }
    }
}

/// str0m's standard header extensions but those for bandwidth estimates.
pub(crate) fn extensions_without_estimates() -> ExtensionMap {
    let mut exts = ExtensionMap::empty();
    for (id, ext) in ExtensionMap::standard().iter() {
        if !matches!(
            ext,
            Extension::TransportSequenceNumber | Extension::AbsoluteSendTime
        ) {
            exts.set(id, ext.clone());
        }
    }
    exts
}
