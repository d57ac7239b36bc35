//! Streams that live in the hub (RTMP, RTWebSocket …) for WHEP viewers. A stream played here
//! gets one *hub source*: a participant without a peer ([`Role::Hub`]) whose tracks are
//! packetized from the hub's frames once ([`Sfu::hub_frame`]) and forwarded to every viewer
//! on this shard as a WebRTC publisher's packets are: one packetization per stream and shard,
//! each viewer's leg rewriting sequence numbers and timestamps, RTX from its resend history.
//! (Until 2026-12, each viewer's own peer packetized the frames in str0m's frame mode: a copy
//! of the stream per viewer, ~1.8× a forwarded viewer's memory and ~0.6× its packets per
//! CPU-second in `onair-bench rtmp-fanout`.)
//!
//! Nobody can be asked for a keyframe, so a viewer starts when its connection is up, with the
//! packets since the last keyframe (kept here, shared), and then the live ones.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::{Codec, CodecConfig, PayloadParams};
use str0m::media::Mid;
use str0m::rtp::Ssrc;
use tracing::{debug, info, warn};

use crate::ids::{ParticipantId, PeerId, RoomName, TrackId};
use crate::media::Cached;
use crate::sfu::{Participant, Role, Sfu, Track};
use crate::signal::{LeaveReason, TrackSource};
use crate::whip::FrameTrack;

/// The most kept for viewers that connect mid-GOP. Past it (a very long GOP) they wait for the
/// next keyframe instead.
const MAX_GOP_BYTES: usize = 4 << 20;

/// A hub stream as this shard's viewers receive it.
pub(crate) struct HubSource {
    pub(crate) pid: ParticipantId,
    tracks: Vec<HubTrack>,
    /// H.264 parameter sets, sent in front of every keyframe.
    parameter_sets: Vec<Vec<u8>>,
    /// Packets since the last video keyframe, every track's, in the order made; `None` while
    /// not keeping (before the first keyframe, or past [`MAX_GOP_BYTES`]).
    gop: Option<Vec<(TrackId, Cached)>>,
    gop_bytes: usize,
    warned: bool,
}

struct HubTrack {
    kind: FrameTrack,
    id: TrackId,
    params: PayloadParams,
    ssrc: Ssrc,
    next_seq: u64,
}

impl Sfu {
    /// Makes `stream`'s hub source here, with `tracks` (each once), unless it has one. Viewers
    /// join it with [`Sfu::whep_play_hub`]; its media comes with [`Sfu::hub_frame`].
    pub fn hub_source_open(&mut self, now: Instant, stream: &str, tracks: &[FrameTrack]) {
        self.now = now;
        if self.hub_sources.contains_key(stream) {
            return;
        }
        let pid = ParticipantId(self.next_id());
        let mut made = Vec::new();
        for (i, kind) in tracks.iter().copied().enumerate() {
            if made.iter().any(|t: &HubTrack| t.kind == kind) {
                continue;
            }
            let Some(params) = source_params(kind) else {
                continue;
            };
            let id = TrackId(self.next_id());
            let mid = Mid::from(format!("h{i}").as_str());
            let source = match kind {
                FrameTrack::H264 => TrackSource::Camera,
                FrameTrack::Opus => TrackSource::Microphone,
            };
            let track = Track {
                codec: Some(params),
                from_hub: true,
                ..Track::new(id, pid, (PeerId(0), mid), kind.kind(), source, Vec::new())
            };
            self.tracks.insert(id, track);
            made.push(HubTrack {
                kind,
                id,
                params,
                ssrc: Ssrc::from(self.rng.u32(..)),
                next_seq: u64::from(self.rng.u16(..)),
            });
        }
        let role = Role::Hub {
            stream: stream.to_owned(),
        };
        let room = RoomName::internal(format!("hub:{stream}"));
        // No peer: ids no peer has; no `http` side, so no ICE timeout either.
        let mut p = Participant::new(
            pid,
            role,
            stream,
            room,
            (PeerId(0), PeerId(0)),
            crate::grant::Grant::all(),
        );
        for t in &made {
            if let Some(track) = self.tracks.get(&t.id) {
                p.published.insert(track.mid, t.id);
            }
        }
        self.participants.insert(pid, p);
        info!(participant = %pid, stream, tracks = made.len(), "hub source opened");
        self.hub_sources.insert(
            stream.to_owned(),
            HubSource {
                pid,
                tracks: made,
                parameter_sets: Vec::new(),
                gop: None,
                gop_bytes: 0,
                warned: false,
            },
        );
    }

    /// True when `stream` has a hub source here.
    pub fn has_hub_source(&self, stream: &str) -> bool {
        self.hub_sources.contains_key(stream)
    }

    /// The H.264 parameter sets (SPS, then PPS; NAL header byte included) of `stream`'s
    /// video, sent in front of each keyframe from now on.
    pub fn hub_parameter_sets(&mut self, stream: &str, sets: Vec<Vec<u8>>) {
        if let Some(src) = self.hub_sources.get_mut(stream) {
            src.parameter_sets = sets;
        }
    }

    /// One frame of `stream`'s `track`, for its viewers here: H.264 with 4-byte NAL unit
    /// lengths (the hub's layout), or one Opus packet. `pts_us` on the source's clock.
    pub fn hub_frame(
        &mut self,
        now: Instant,
        stream: &str,
        track: FrameTrack,
        keyframe: bool,
        pts_us: u64,
        data: &[u8],
    ) {
        self.now = now;
        let Some(src) = self.hub_sources.get_mut(stream) else {
            return;
        };
        let Some(t) = src.tracks.iter_mut().find(|t| t.kind == track) else {
            return;
        };
        let payloads = match track {
            FrameTrack::Opus => vec![Arc::from(data)],
            FrameTrack::H264 => {
                let sets: &[Vec<u8>] = if keyframe { &src.parameter_sets } else { &[] };
                match crate::packetize::h264(sets, data, crate::packetize::MAX_PAYLOAD) {
                    Ok(p) => p,
                    Err(e) => {
                        if !src.warned {
                            warn!(stream, "dropping a malformed H.264 frame: {e}");
                            src.warned = true;
                        }
                        return;
                    }
                }
            }
        };
        let clock = t.params.spec().clock_rate.get();
        let time = (u128::from(pts_us) * u128::from(clock) / 1_000_000) as u32;
        let video = track == FrameTrack::H264;
        let last = payloads.len().saturating_sub(1);
        let tid = t.id;
        let mut packets = Vec::with_capacity(payloads.len());
        for (i, payload) in payloads.into_iter().enumerate() {
            let seq = t.next_seq;
            t.next_seq += 1;
            let key = video && keyframe && i == 0;
            let marker = video && i == last;
            packets.push(Cached::made(
                t.ssrc,
                seq,
                time,
                now,
                key,
                t.params.pt(),
                marker,
                payload,
            ));
        }
        if video && keyframe {
            src.gop = Some(Vec::new());
            src.gop_bytes = 0;
        }
        if let Some(gop) = &mut src.gop {
            src.gop_bytes += packets.iter().map(|p| p.payload.len()).sum::<usize>();
            if src.gop_bytes > MAX_GOP_BYTES {
                debug!(
                    stream,
                    "GOP too long to keep: new viewers wait for a keyframe"
                );
                src.gop = None;
            } else {
                gop.extend(packets.iter().map(|p| (tid, p.clone())));
            }
        }
        let params = src.tracks.iter().find(|t| t.id == tid).map(|t| t.params);
        let allocation = self.config.bandwidth_allocation;
        if let Some(track) = self.tracks.get_mut(&tid) {
            track.first_packet.get_or_insert(now);
            if let Some(l) = track.layers.first_mut() {
                l.last_seen = Some(now);
                if allocation {
                    l.rate.add(now, data.len());
                }
            }
            track.bytes_in += data.len() as u64;
            if track.server_muted {
                return;
            }
        }
        for p in packets {
            self.fan_out(tid, p, params, None);
        }
    }

    /// `stream` left the hub (or nobody here watches it): its hub source goes, and its viewers
    /// here with it (a viewer of a WebRTC stream waits for a republish; one of the hub ends
    /// as the stream does).
    pub fn hub_source_close(&mut self, now: Instant, stream: &str) {
        self.now = now;
        let Some(source) = self.hub_source_of(stream) else {
            return;
        };
        let viewers: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| matches!(&p.role, Role::Whep { stream: s, hub: true, .. } if s == stream))
            .map(|p| p.id)
            .collect();
        for v in viewers {
            self.remove_participant(v, LeaveReason::Timeout);
        }
        // Its entry in `hub_sources` goes with it.
        self.remove_participant(source, LeaveReason::Left);
        info!(stream, "hub source closed");
        self.process_events();
    }

    /// The participant standing for `stream`'s hub source here.
    pub(crate) fn hub_source_of(&self, stream: &str) -> Option<ParticipantId> {
        self.hub_sources.get(stream).map(|s| s.pid)
    }

    /// A viewer of a hub stream connected: it gets the packets since the last keyframe.
    pub(crate) fn replay_hub_gop(&mut self, viewer: ParticipantId, stream: &str) {
        let Some(gop) = self.hub_sources.get(stream).and_then(|s| s.gop.clone()) else {
            return;
        };
        let tracks: Vec<TrackId> = self
            .participants
            .get(&viewer)
            .map(|p| p.subs.keys().copied().collect())
            .unwrap_or_default();
        for tid in tracks {
            let packets: Vec<Cached> = gop
                .iter()
                .filter(|(t, _)| *t == tid)
                .map(|(_, p)| p.clone())
                .collect();
            self.forward_to(tid, viewer, &packets);
        }
        let packets = gop.len();
        debug!(participant = %viewer, stream, packets, "hub viewer starts at the last keyframe");
    }
}

/// The payload type and format a hub track is described with: those a WebRTC peer of ours
/// has for it (each viewer's own is matched to it when forwarding). H.264 as constrained
/// baseline (42e01f), which every browser offers and whose decoders take what RTMP encoders
/// send.
fn source_params(track: FrameTrack) -> Option<PayloadParams> {
    let mut config = CodecConfig::empty();
    config.enable_opus(true, false);
    config.enable_h264(true);
    let h264 = |p: &PayloadParams, exact: bool| {
        let f = p.spec().format;
        p.spec().codec == Codec::H264
            && f.packetization_mode == Some(1)
            && f.profile_level_id.is_some_and(|id| {
                if exact {
                    id == 0x42e01f
                } else {
                    id >> 16 == 0x42
                }
            })
    };
    match track {
        FrameTrack::Opus => config.find(|p| p.spec().codec == Codec::Opus),
        FrameTrack::H264 => config
            .find(|p| h264(p, true))
            .or_else(|| config.find(|p| h264(p, false))),
    }
    .copied()
}
