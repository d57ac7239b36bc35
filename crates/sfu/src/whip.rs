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
use str0m::media::Mid;
use str0m::{Candidate, IceConnectionState};
use tracing::{debug, info};

use crate::ids::{ParticipantId, RoomName, TrackId};
use crate::sdp::{media_sections, restrict_payload_types};
#[cfg(doc)]
use crate::sfu::HTTP_SESSION_ICE_TIMEOUT;
use crate::sfu::{FreeMid, MAX_HTTP_MLINES, MAX_REMOTE_CANDIDATES, Participant, Role, Sfu, Sub};
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
    pub(crate) fn kind(self) -> TrackKind {
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
        self.whep_play_from(now, stream, offer, max_height, false)
    }

    /// WHEP for a stream that lives in the hub (RTMP …): the viewer receives its hub source
    /// here ([`Sfu::hub_source_open`]), forwarded as any other source's packets are.
    pub fn whep_play_hub(
        &mut self,
        now: Instant,
        stream: &str,
        offer: &str,
    ) -> Result<HttpSession, HttpSessionError> {
        self.whep_play_from(now, stream, offer, None, true)
    }

    fn whep_play_from(
        &mut self,
        now: Instant,
        stream: &str,
        offer: &str,
        max_height: Option<u32>,
        hub: bool,
    ) -> Result<HttpSession, HttpSessionError> {
        self.now = now;
        let source = self
            .viewer_source(stream, hub)
            .ok_or_else(|| HttpSessionError::NotFound(stream.to_owned()))?;
        if self.source_tracks(source).is_empty() {
            return Err(HttpSessionError::NoMediaYet(stream.to_owned()));
        }
        let role = Role::Whep {
            stream: stream.to_owned(),
            hub,
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
            Role::Member | Role::Mirror { .. } | Role::Hub { .. } => None,
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

    /// The source a WHEP viewer of `stream` receives: the stream's hub source here (`hub`), or
    /// its WebRTC publisher.
    pub(crate) fn viewer_source(&self, stream: &str, hub: bool) -> Option<ParticipantId> {
        if hub {
            self.hub_source_of(stream)
        } else {
            self.resolve_source(stream)
        }
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
                Role::Whep { stream, hub, .. } => self.viewer_source(stream, *hub) == Some(owner),
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
        let Some(p) = self.participants.get(&pid) else {
            return;
        };
        if let Role::Whep {
            stream, hub: true, ..
        } = &p.role
        {
            let stream = stream.clone();
            self.replay_hub_gop(pid, &stream);
        }
    }
}

/// The first `a=ice-ufrag:` of an SDP or fragment.
fn ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(|u| u.trim().to_owned())
}
