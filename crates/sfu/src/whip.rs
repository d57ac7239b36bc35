//! WHIP publishers and WHEP viewers: peer connections negotiated over HTTP, without a
//! signalling socket.
//!
//! Each is a participant of its own (no room) with one peer connection: a WHIP publisher's is
//! its publisher connection, a WHEP viewer's its subscriber connection. So everything a room
//! has (RTP forwarding with rewriting, simulcast layer choice, NACK/RTX, merged keyframe
//! requests) serves them too. A viewer follows a stream *name*: when its source stops and a new
//! one publishes under the same name, the viewer's m-lines carry on with the new tracks, with
//! continuous sequence numbers and timestamps.
//!
//! With no socket to notice a vanished client, ICE is the liveness signal: a session whose peer
//! has no ICE connectivity for [`HTTP_SESSION_ICE_TIMEOUT`] ends.

use std::collections::HashMap;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{MediaTime, Mid};
use str0m::{Candidate, IceConnectionState, Rtc};
use tracing::{debug, info};

use crate::ids::{ParticipantId, RoomName, TrackId};
use crate::sdp::{media_sections, restrict_payload_types};
#[cfg(doc)]
use crate::sfu::HTTP_SESSION_ICE_TIMEOUT;
use crate::sfu::{
    FrameOut, FreeMid, MAX_HTTP_MLINES, MAX_REMOTE_CANDIDATES, Output, Participant, Role, Sfu,
    SfuEvent, Sub,
};
use crate::signal::{PcKind, TrackKind, TrackSource};

/// Why an HTTP session could not be created or changed. Each maps onto one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpSessionError {
    /// The SDP offer could not be parsed or accepted (400).
    #[error("bad SDP offer: {0}")]
    BadSdp(String),
    /// Nothing is published under that name (404).
    #[error("no stream named '{0}' is live")]
    NotFound(String),
    /// The stream is published but no media has arrived yet (503: ask again shortly).
    #[error("stream '{0}' is live but no media has arrived yet: try again in a moment")]
    NoMediaYet(String),
    /// The viewer offered none of the codecs the stream is in (406).
    #[error("the offer has none of the stream's codecs ({0})")]
    NoCommonCodec(String),
    /// No session with that id (404).
    #[error("no such session")]
    UnknownSession,
    /// A trickle fragment that cannot be used (400).
    #[error("bad trickle ICE fragment: {0}")]
    BadFragment(String),
    /// An ICE restart was asked for; not supported yet (422, as RFC 9725 §4.3.2 asks).
    #[error("ICE restart is not supported for this session yet: start a new one")]
    IceRestartUnsupported,
    /// The offer publishes more tracks than a participant may (400).
    #[error("{0} tracks offered, the limit is {1}")]
    TooManyTracks(usize, usize),
}

/// A new HTTP session.
#[derive(Debug, Clone)]
pub struct HttpSession {
    /// Its participant id, named in [`SfuEvent`]s.
    pub participant: ParticipantId,
    /// The secret that names it in its resource URL (PATCH, DELETE).
    pub token: String,
    /// The SDP answer.
    pub answer: String,
}

/// A track of a stream that lives in the hub (RTMP …), as a WHEP viewer will receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameTrack {
    /// H.264 access units in Annex B form (start codes, SPS/PPS in front of keyframes).
    H264,
    /// Opus packets.
    Opus,
}

impl FrameTrack {
    fn kind(self) -> TrackKind {
        match self {
            FrameTrack::H264 => TrackKind::Video,
            FrameTrack::Opus => TrackKind::Audio,
        }
    }
}

impl Sfu {
    /// WHIP: a client publishes `stream` with `offer`. The caller reserved the name already.
    pub fn whip_publish(
        &mut self,
        now: Instant,
        stream: &str,
        offer: &str,
    ) -> Result<HttpSession, HttpSessionError> {
        self.now = now;
        let sections = media_sections(offer);
        let sending = sections.iter().filter(|s| s.sends).count();
        if sending > self.config.max_tracks_per_participant {
            return Err(HttpSessionError::TooManyTracks(
                sending,
                self.config.max_tracks_per_participant,
            ));
        }
        let role = Role::Whip {
            stream: stream.to_owned(),
            ufrag: ufrag(offer),
        };
        let (pid, _, answer) = self.open_http_session(role, stream, offer, |sfu, pid| {
            sfu.new_peer_with(pid, PcKind::Publisher, true, false)
        })?;
        let mut answer = crate::sdp::follow_offer_order(&answer, offer);
        if self.config.whip_prefer_h264 {
            answer = crate::sdp::prefer_h264_over_vp8(&answer);
        }
        if self.config.opus_dtx {
            answer = crate::sdp::request_opus_dtx(&answer);
        }
        info!(participant = %pid, stream, "WHIP session started");
        Ok(self.http_session(pid, answer))
    }

    /// Parses `offer`, makes the session's participant and its one peer (`make_peer`), and
    /// answers. On failure nothing is left behind.
    fn open_http_session(
        &mut self,
        role: Role,
        stream: &str,
        offer: &str,
        make_peer: impl FnOnce(&mut Sfu, ParticipantId) -> crate::ids::PeerId,
    ) -> Result<(ParticipantId, crate::ids::PeerId, String), HttpSessionError> {
        let mlines = offer.lines().filter(|l| l.starts_with("m=")).count();
        if mlines > MAX_HTTP_MLINES {
            return Err(HttpSessionError::BadSdp(format!(
                "{mlines} m-lines, the most a WHIP/WHEP offer may have is {MAX_HTTP_MLINES}"
            )));
        }
        let parsed = SdpOffer::from_sdp_string(offer)
            .map_err(|e| HttpSessionError::BadSdp(crate::sdp::client_error(&e)))?;
        let pid = ParticipantId(self.next_id());
        let peer_id = make_peer(self, pid);
        self.note_candidates(peer_id, offer);
        self.insert_http_participant(pid, role, stream, peer_id);
        let answer = self
            .peers
            .get_mut(&peer_id)
            .map(|p| p.rtc.sdp_api().accept_offer(parsed));
        self.drain(peer_id);
        match answer {
            Some(Ok(a)) => Ok((pid, peer_id, a.to_sdp_string())),
            Some(Err(e)) => {
                self.drop_http_participant(pid);
                Err(HttpSessionError::BadSdp(e.to_string()))
            }
            None => Err(HttpSessionError::BadSdp("peer vanished".into())),
        }
    }

    /// True when a WHIP publisher or a room participant publishes as `stream`.
    pub fn has_stream(&self, stream: &str) -> bool {
        self.origin_of(stream).is_some()
    }

    /// WHEP: a client plays `stream`, published over WHIP or by a room participant
    /// (`ROOM/NAME`, or `ROOM/PA_n`). RTP is forwarded as to a room subscriber; `max_height`
    /// caps the simulcast or SVC layer it gets, as a room subscriber's does.
    pub fn whep_play(
        &mut self,
        now: Instant,
        stream: &str,
        offer: &str,
        max_height: Option<u32>,
    ) -> Result<HttpSession, HttpSessionError> {
        self.now = now;
        let source = self
            .resolve_source(stream)
            .ok_or_else(|| HttpSessionError::NotFound(stream.to_owned()))?;
        if self.source_tracks(source).is_empty() {
            return Err(HttpSessionError::NoMediaYet(stream.to_owned()));
        }
        let role = Role::Whep {
            stream: stream.to_owned(),
            frames: false,
            ufrag: ufrag(offer),
        };
        // Layers to choose between: simulcast, or a codec that may carry SVC layers.
        let layered = self.source_tracks(source).iter().any(|t| {
            t.kind == TrackKind::Video
                && (t.rids.len() > 1
                    || t.layers.len() > 1
                    || t.codec
                        .is_some_and(|c| matches!(c.spec().codec, Codec::Vp9 | Codec::Av1)))
        });
        let (pid, peer_id, answer) = self.open_http_session(role, stream, offer, |sfu, pid| {
            sfu.new_peer_with(pid, PcKind::Subscriber, true, layered)
        })?;
        // Pair the viewer's m-lines with the source's tracks, in order, by kind.
        let mut pending: Vec<(TrackId, TrackKind, PayloadParams)> = self
            .source_tracks(source)
            .into_iter()
            .filter_map(|t| Some((t.id, t.kind, t.codec?)))
            .collect();
        let mut keep: HashMap<String, Vec<u8>> = HashMap::new();
        let mut bound = Vec::new();
        let mut free = Vec::new();
        let mut missing = Vec::new();
        for section in media_sections(offer).into_iter().filter(|s| s.receives) {
            let kind = section.kind;
            let Some(i) = pending.iter().position(|(_, k, _)| *k == kind) else {
                continue;
            };
            let (tid, _, codec) = pending.remove(i);
            let local = self
                .peers
                .get(&peer_id)
                .and_then(|p| p.rtc.codec_config().match_params(codec).copied());
            let Some(local) = local else {
                missing.push(codec.spec().codec.to_string());
                continue;
            };
            let mid = Mid::from(section.mid.as_str());
            // The codec, its RTX, and RED for Opus (as a room subscriber's m-line has: the
            // viewer gets the publisher's redundancy where it offered RED).
            keep.insert(
                section.mid.clone(),
                std::iter::once(*local.pt())
                    .chain(local.resend().map(|r| *r))
                    .chain(local.red().map(|r| *r))
                    .collect(),
            );
            bound.push((tid, mid, kind, codec));
            free.push(mid);
        }
        if bound.is_empty() {
            self.drop_http_participant(pid);
            return Err(HttpSessionError::NoCommonCodec(if missing.is_empty() {
                "the offer receives no audio or video".into()
            } else {
                missing.join(", ")
            }));
        }
        let answer = restrict_payload_types(&answer, &keep);
        if let Some(p) = self.participants.get_mut(&pid) {
            for (tid, mid, kind, codec) in bound {
                p.subs.insert(
                    tid,
                    Sub {
                        want: true,
                        max_height,
                        mid: Some(mid),
                        negotiated: false,
                        stopping: false,
                        last_out: None,
                        media: Some((kind, Some(codec.spec()))),
                    },
                );
                p.sub_mids.insert(mid, tid);
            }
        }
        self.answer_accepted(pid);
        info!(participant = %pid, stream, source = %source, "WHEP session started");
        Ok(self.http_session(pid, answer))
    }

    /// WHEP for a stream that lives in the hub: the viewer's peer packetizes frames handed in
    /// with [`Self::viewer_frame`] once [`SfuEvent::ViewerConnected`] says it can take them.
    pub fn whep_play_frames(
        &mut self,
        now: Instant,
        stream: &str,
        tracks: &[FrameTrack],
        offer: &str,
    ) -> Result<HttpSession, HttpSessionError> {
        self.now = now;
        let role = Role::Whep {
            stream: stream.to_owned(),
            frames: true,
            ufrag: ufrag(offer),
        };
        let (pid, peer_id, answer) = self.open_http_session(role, stream, offer, |sfu, pid| {
            // Frame mode: str0m packetizes what `viewer_frame` writes. No estimate (one layer),
            // so none of the header extensions that exist for one (session.rs).
            let rtc = Rtc::builder()
                .set_ice_lite(true)
                .set_extension_map(crate::session::extensions_without_estimates())
                .clear_codecs()
                .enable_opus(true, false)
                .enable_h264(true)
                .set_stats_interval(Some(crate::quality::STATS_INTERVAL))
                .build(now);
            sfu.add_peer(rtc, pid, PcKind::Subscriber, false)
        })?;
        let params: Vec<PayloadParams> = self
            .peers
            .get(&peer_id)
            .map(|p| p.rtc.codec_config().params().to_vec())
            .unwrap_or_default();
        let mut pending = tracks.to_vec();
        let mut keep: HashMap<String, Vec<u8>> = HashMap::new();
        let mut outs = Vec::new();
        for section in media_sections(offer).into_iter().filter(|s| s.receives) {
            let Some(i) = pending.iter().position(|t| t.kind() == section.kind) else {
                continue;
            };
            let track = pending.remove(i);
            let Some(chosen) = pick_params(&params, track, &section.pts) else {
                continue;
            };
            let mid = Mid::from(section.mid.as_str());
            keep.insert(
                section.mid.clone(),
                std::iter::once(*chosen.pt())
                    .chain(chosen.resend().map(|r| *r))
                    .collect(),
            );
            outs.push(FrameOut {
                kind: track.kind(),
                mid,
                pt: chosen.pt(),
                clock: chosen.spec().clock_rate.get(),
                waiting_keyframe: true,
            });
        }
        if outs.is_empty() {
            self.drop_http_participant(pid);
            return Err(HttpSessionError::NoCommonCodec(
                "the offer takes neither H264 (packetization-mode 1) video nor Opus audio".into(),
            ));
        }
        // The resend history of a forwarded leg (negotiate.rs): str0m's default is 3 s and up
        // to 1,000 packets, and here each viewer holds its own packetized copy of the stream
        // (nothing shared between viewers as in forwarding), so the default made ~700 KiB a
        // viewer of a 1 Mbit/s stream.
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            let mut direct = peer.rtc.direct_api();
            for out in &outs {
                if let Some(tx) = direct.stream_tx_by_mid(out.mid, None) {
                    tx.set_rtx_cache(
                        crate::negotiate::RTX_HISTORY_PACKETS,
                        crate::negotiate::RTX_HISTORY,
                        Some(crate::negotiate::RTX_SHARE_CAP),
                    );
                }
            }
        }
        if let Some(h) = self
            .participants
            .get_mut(&pid)
            .and_then(|p| p.http.as_mut())
        {
            h.frame_outs = outs;
        }
        info!(participant = %pid, stream, "WHEP session started (from the hub)");
        Ok(self.http_session(pid, restrict_payload_types(&answer, &keep)))
    }

    /// One frame for a WHEP viewer of a hub stream. `data` is Annex B H.264 or an Opus packet;
    /// `pts_us` on the source's clock (only differences matter).
    pub fn viewer_frame(
        &mut self,
        now: Instant,
        viewer: ParticipantId,
        track: FrameTrack,
        keyframe: bool,
        pts_us: u64,
        data: Vec<u8>,
    ) {
        self.now = now;
        let Some(p) = self.participants.get_mut(&viewer) else {
            return;
        };
        let peer_id = p.subscriber;
        let outs = p.http.as_mut().map(|h| h.frame_outs.iter_mut());
        let Some(out) = outs.and_then(|mut o| o.find(|o| o.kind == track.kind())) else {
            return;
        };
        if out.waiting_keyframe && out.kind == TrackKind::Video && !keyframe {
            return;
        }
        out.waiting_keyframe = false;
        let (mid, pt, clock) = (out.mid, out.pt, out.clock);
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        if !peer.rtc.is_connected() {
            return;
        }
        let ticks = (pts_us as u128 * clock as u128 / 1_000_000) as u64;
        let Some(freq) = str0m::media::Frequency::new(clock) else {
            return;
        };
        if let Some(w) = peer.rtc.writer(mid) {
            match w.write(pt, now, MediaTime::new(ticks, freq), data) {
                Ok(()) => self.stats.rtp_out += 1,
                Err(e) => debug!(participant = %viewer, "frame not written: {e}"),
            }
        }
        self.drain(peer_id);
        self.process_events();
    }

    /// PATCH with a trickle ICE fragment (RFC 8840) for session `token`.
    pub fn http_session_patch(
        &mut self,
        now: Instant,
        token: &str,
        fragment: &str,
    ) -> Result<(), HttpSessionError> {
        self.now = now;
        let pid = self
            .http_session_by_token(token)
            .ok_or(HttpSessionError::UnknownSession)?;
        let Some(p) = self.participants.get(&pid) else {
            return Err(HttpSessionError::UnknownSession);
        };
        let known_ufrag = match &p.role {
            Role::Whip { ufrag, .. } | Role::Whep { ufrag, .. } => ufrag.as_deref(),
            Role::Member | Role::Mirror { .. } => None,
        };
        if let (Some(new), Some(old)) = (ufrag(fragment), known_ufrag)
            && new != old
        {
            return Err(HttpSessionError::IceRestartUnsupported);
        }
        let peer_id = p.publisher;
        let mut cands = Vec::new();
        for line in fragment.lines().map(str::trim) {
            let Some(c) = line.strip_prefix("a=candidate:") else {
                continue;
            };
            // Browsers hide host addresses behind mDNS names (`….local`) when the page has no
            // camera permission; the server cannot resolve them, and the browser's own checks
            // reach us anyway (we learn its address from them).
            if c.split_whitespace()
                .nth(4)
                .is_some_and(|a| a.ends_with(".local"))
            {
                continue;
            }
            let c = Candidate::from_sdp_string(&format!("candidate:{c}"))
                .map_err(|e| HttpSessionError::BadFragment(format!("{line}: {e}")))?;
            cands.push(c);
        }
        if let Some(peer) = self.peers.get(&peer_id)
            && peer.candidates_added + cands.len() > MAX_REMOTE_CANDIDATES
        {
            return Err(HttpSessionError::BadFragment(format!(
                "more than {MAX_REMOTE_CANDIDATES} candidates on one session"
            )));
        }
        self.note_candidates(peer_id, fragment);
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            peer.candidates_added += cands.len();
            for c in cands {
                peer.rtc.add_remote_candidate(c);
            }
        }
        self.drain(peer_id);
        self.process_events();
        Ok(())
    }

    /// DELETE of session `token`.
    pub fn end_http_session(&mut self, now: Instant, token: &str) -> Result<(), HttpSessionError> {
        self.now = now;
        let pid = self
            .http_session_by_token(token)
            .ok_or(HttpSessionError::UnknownSession)?;
        info!(participant = %pid, "HTTP session ended by the client");
        self.remove_participant(pid, crate::signal::LeaveReason::Left);
        self.process_events();
        Ok(())
    }

    /// Ends an HTTP session from the server's side (its stream name was taken over, the
    /// server is going away).
    pub fn kick_http_session(&mut self, now: Instant, pid: ParticipantId) {
        self.now = now;
        if self
            .participants
            .get(&pid)
            .is_some_and(|p| p.role != Role::Member)
        {
            self.remove_participant(pid, crate::signal::LeaveReason::Timeout);
            self.process_events();
        }
    }

    fn http_session_by_token(&self, token: &str) -> Option<ParticipantId> {
        self.participants
            .values()
            .find(|p| p.role != Role::Member && p.resume_token == token)
            .map(|p| p.id)
    }

    fn http_session(&self, pid: ParticipantId, answer: String) -> HttpSession {
        HttpSession {
            participant: pid,
            token: self
                .participants
                .get(&pid)
                .map(|p| p.resume_token.clone())
                .unwrap_or_default(),
            answer,
        }
    }

    /// `stream` names the session in logs; its participant belongs to no room.
    fn insert_http_participant(
        &mut self,
        pid: ParticipantId,
        role: Role,
        stream: &str,
        peer: crate::ids::PeerId,
    ) {
        let token = format!("{:016x}{:016x}", self.rng.u64(..), self.rng.u64(..));
        let room = RoomName::internal(match &role {
            Role::Whip { .. } => format!("whip:{stream}"),
            _ => format!("whep:{pid}"),
        });
        let session = Participant::new(
            pid,
            role,
            stream,
            room,
            (peer, peer),
            crate::grant::Grant::all(),
        );
        self.participants.insert(
            pid,
            Participant {
                // Without ICE for HTTP_SESSION_ICE_TIMEOUT from now, it ends.
                http: Some(crate::sfu::HttpSide {
                    media_lost_at: Some(self.now),
                    frame_outs: Vec::new(),
                }),
                resume_token: token,
                ..session
            },
        );
    }

    fn drop_http_participant(&mut self, pid: ParticipantId) {
        if let Some(p) = self.participants.remove(&pid)
            && let Some(mut peer) = self.peers.remove(&p.publisher)
        {
            peer.rtc.disconnect();
        }
    }

    /// The participant publishing as `stream`: a WHIP publisher, or `ROOM/NAME` (`ROOM/PA_n`).
    pub(crate) fn resolve_source(&self, stream: &str) -> Option<ParticipantId> {
        let whip = self.participants.values().find(|p| {
            matches!(&p.role, Role::Whip { stream: s, .. } | Role::Mirror { stream: s, .. }
                    if s == stream)
        });
        if let Some(p) = whip {
            return Some(p.id);
        }
        let (room, who) = stream.split_once('/')?;
        let room = RoomName::parse(room).ok()?;
        self.rooms
            .get(&room)?
            .participants
            .iter()
            .copied()
            .find(|pid| {
                self.participants
                    .get(pid)
                    .is_some_and(|p| p.name == who || pid.to_string() == who)
            })
    }

    /// A source's announced tracks, camera and microphone before screen share.
    pub(crate) fn source_tracks(&self, source: ParticipantId) -> Vec<&crate::sfu::Track> {
        let mut v: Vec<_> = self
            .tracks
            .values()
            .filter(|t| t.owner == source && t.codec.is_some())
            .collect();
        v.sort_by_key(|t| {
            (
                matches!(t.source, TrackSource::Screen | TrackSource::ScreenAudio),
                t.id,
            )
        });
        v
    }

    /// A track a WHEP viewer received went away: its m-line waits for the next track of the
    /// same kind and codec from the same stream name.
    pub(crate) fn release_viewer_mid(&mut self, viewer: ParticipantId, track: TrackId) {
        let Some(p) = self.participants.get_mut(&viewer) else {
            return;
        };
        if !matches!(p.role, Role::Whep { .. }) {
            return;
        }
        if let Some(sub) = p.subs.remove(&track)
            && let Some(mid) = sub.mid
            && let Some((kind, codec)) = sub.media
        {
            p.sub_mids.remove(&mid);
            p.free_mids.push(FreeMid {
                mid,
                kind,
                codec,
                last_out: sub.last_out,
            });
        }
    }

    /// A track was announced: WHEP viewers of its stream name with a free m-line of its kind
    /// and codec take it (a republish under the same name continues their playback).
    pub(crate) fn bind_viewers(&mut self, tid: TrackId) {
        let Some(t) = self.tracks.get(&tid) else {
            return;
        };
        let (owner, kind, spec) = (t.owner, t.kind, t.codec.map(|c| c.spec()));
        let viewers: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| match &p.role {
                Role::Whep {
                    stream,
                    frames: false,
                    ..
                } => self.resolve_source(stream) == Some(owner),
                _ => false,
            })
            .map(|p| p.id)
            .collect();
        for v in viewers {
            let Some(p) = self.participants.get_mut(&v) else {
                continue;
            };
            let Some(i) = p
                .free_mids
                .iter()
                .position(|f| f.kind == kind && f.codec == spec)
            else {
                continue;
            };
            let free = p.free_mids.remove(i);
            p.subs.insert(
                tid,
                Sub {
                    want: true,
                    max_height: None,
                    mid: Some(free.mid),
                    negotiated: false,
                    stopping: false,
                    last_out: free.last_out,
                    media: Some((kind, spec)),
                },
            );
            p.sub_mids.insert(free.mid, tid);
            debug!(viewer = %v, track = %tid, "WHEP viewer follows the new track");
            self.answer_accepted(v);
        }
    }

    pub(crate) fn http_session_closed(&mut self, pid: ParticipantId) {
        if self
            .participants
            .get(&pid)
            .is_some_and(|p| p.role != Role::Member)
        {
            self.remove_participant(pid, crate::signal::LeaveReason::Left);
        }
    }

    pub(crate) fn http_session_ice(&mut self, pid: ParticipantId, state: IceConnectionState) {
        let now = self.now;
        let Some(h) = self
            .participants
            .get_mut(&pid)
            .and_then(|p| p.http.as_mut())
        else {
            return;
        };
        match state {
            IceConnectionState::Connected | IceConnectionState::Completed => h.media_lost_at = None,
            IceConnectionState::Disconnected => {
                h.media_lost_at.get_or_insert(now);
            }
            _ => {}
        }
    }

    pub(crate) fn http_session_connected(&mut self, pid: ParticipantId) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        if let Role::Whep { frames: true, .. } = p.role {
            for o in p.http.iter_mut().flat_map(|h| &mut h.frame_outs) {
                o.waiting_keyframe = true;
            }
            self.out.push_back(Output::Event(SfuEvent::ViewerConnected {
                participant: pid,
            }));
        }
    }
}

/// The first `a=ice-ufrag:` of an SDP or fragment.
fn ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(|u| u.trim().to_owned())
}

/// The payload type to send a frame track with: for H.264, packetization mode 1 and the
/// baseline-compatible profile the viewer ranks first; for Opus, Opus.
fn pick_params(
    params: &[PayloadParams],
    track: FrameTrack,
    offered_order: &[u8],
) -> Option<PayloadParams> {
    let mut usable: Vec<PayloadParams> = params
        .iter()
        .filter(|p| match track {
            FrameTrack::Opus => p.spec().codec == Codec::Opus,
            FrameTrack::H264 => {
                let f = p.spec().format;
                p.spec().codec == Codec::H264
                    && f.packetization_mode == Some(1)
                    && f.profile_level_id.is_none_or(|id| {
                        // Constrained baseline (42e0xx / 42c0xx) decodes what RTMP encoders
                        // send with `-profile:v baseline`; other profiles are a fallback.
                        (id >> 16) == 0x42
                    })
            }
        })
        .copied()
        .collect();
    usable.sort_by_key(|p| {
        offered_order
            .iter()
            .position(|pt| *pt == *p.pt())
            .unwrap_or(usize::MAX)
    });
    usable.first().copied().or_else(|| {
        params
            .iter()
            .find(|p| match track {
                FrameTrack::Opus => p.spec().codec == Codec::Opus,
                FrameTrack::H264 => {
                    p.spec().codec == Codec::H264 && p.spec().format.packetization_mode == Some(1)
                }
            })
            .copied()
    })
}
