//! Snapshots for the HTTP API and the dashboard: a room with its participants, each with its
//! connections (round trip, loss, jitter, rates, estimate, candidate pair, ICE state, grade),
//! the tracks it publishes (per simulcast layer) and the tracks it receives (the layer sent and
//! the layer wanted). WHIP and WHEP sessions are reported in the same shape. Figures are the
//! latest of str0m's once-a-second reports; `None` where the connection gave none (see
//! docs/quality.md for which figure comes from where).

use std::time::Duration;

use serde::Serialize;
use str0m::media::Mid;

use crate::ids::{ParticipantId, TrackId};
use crate::quality::{MediaQuality, PeerQuality};
use crate::sfu::{Peer, Role, Sfu};
use crate::signal::{PcKind, Quality, RoomMode, TrackKind, TrackSource};

/// A room as `GET /api/rooms/NAME` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RoomReport {
    /// Its name.
    pub name: String,
    /// SFU or peer-to-peer.
    pub mode: RoomMode,
    /// Who is in it.
    pub participants: Vec<ParticipantReport>,
}

/// A room member, a WHIP publisher or a WHEP viewer.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantReport {
    /// Its id.
    pub id: ParticipantId,
    /// Display name (room members) or the stream (WHIP/WHEP).
    pub name: String,
    /// `member`, `whip` or `whep`.
    pub role: &'static str,
    /// The stream a WHIP/WHEP session publishes or plays.
    pub stream: Option<String>,
    /// Its grade as last announced (the worst of its connections).
    pub quality: Option<Quality>,
    /// Its peer connections (a member has two, a WHIP/WHEP session one).
    pub connections: Vec<ConnectionReport>,
    /// What it publishes.
    pub tracks: Vec<TrackReport>,
    /// What it receives.
    pub subscriptions: Vec<SubscriptionReport>,
}

/// One peer connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionReport {
    /// Publisher (the client sends) or subscriber (the server sends).
    pub kind: PcKind,
    /// ICE as str0m last said (`new`, `checking`, `connected`, `completed`, `disconnected`).
    pub ice_state: Option<String>,
    /// The candidate pair in use.
    pub candidate: Option<CandidateReport>,
    /// Round trip, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Of what the client sent us, percent lost.
    pub loss_in_pct: Option<f64>,
    /// Of what we sent the client, percent lost.
    pub loss_out_pct: Option<f64>,
    /// Audio interarrival jitter, milliseconds.
    pub jitter_ms: Option<f64>,
    /// Everything received on it (media, RTCP, ICE), bits per second.
    pub bitrate_in_bps: u64,
    /// Everything sent on it, bits per second.
    pub bitrate_out_bps: u64,
    /// The bandwidth estimate towards the client (with `rooms.bandwidth_allocation`).
    pub estimate_bps: Option<u64>,
    /// Mean opinion score, 1 to 4.5.
    pub mos: Option<f64>,
    /// Its grade.
    pub quality: Option<Quality>,
}

/// The candidate pair a connection uses.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateReport {
    /// `udp`, `tcp` (ICE-TCP), …
    pub protocol: String,
    /// Our address.
    pub local: String,
    /// The client's address.
    pub remote: String,
    /// The client's candidate type: `host`, `srflx`, `relay` (as the client signalled it), or
    /// `prflx` (learnt from its checks).
    pub remote_type: String,
}

/// A published track.
#[derive(Debug, Clone, Serialize)]
pub struct TrackReport {
    /// Its id.
    pub id: TrackId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Camera, microphone, screen…
    pub source: TrackSource,
    /// Muted by its publisher.
    pub muted: bool,
    /// Codec, once media flows.
    pub codec: Option<String>,
    /// Audio that arrives as RED (RFC 2198): each packet carries the previous frame again.
    pub red: bool,
    /// One per simulcast layer, lowest first (one when not simulcast).
    pub layers: Vec<LayerReport>,
}

/// One layer of a published track, as received.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Its RID (simulcast).
    pub rid: Option<String>,
    /// Height from its last keyframe.
    pub height: Option<u32>,
    /// Media received, bits per second.
    pub bitrate_bps: u64,
    /// Percent lost (from our receiver reports).
    pub loss_pct: Option<f64>,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: Option<f64>,
    /// NACKs we sent for it.
    pub nacks: u64,
    /// Keyframe requests (PLI) we sent for it.
    pub plis: u64,
}

/// A track a participant receives.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionReport {
    /// The track (`None` for a WHEP viewer of an RTMP/RTWebSocket stream).
    pub track_id: Option<TrackId>,
    /// Whose (`None` as above).
    pub publisher: Option<ParticipantId>,
    /// Audio or video.
    pub kind: TrackKind,
    /// The simulcast layer being sent (0 = lowest).
    pub layer: Option<usize>,
    /// The layer it should get: what the subscriber asks for, within what the allocator allows.
    pub target_layer: Option<usize>,
    /// The height the subscriber asked for at most.
    pub max_height: Option<u32>,
    /// Paused by the allocator (no layer fits its link).
    pub paused: bool,
    /// RED audio is forwarded whole (the subscriber negotiated RED); false when it gets the
    /// primary frames only, or the track has no RED.
    pub red: bool,
    /// Sent, bits per second (media and retransmissions).
    pub bitrate_bps: u64,
    /// Percent lost, from the client's receiver reports.
    pub loss_pct: Option<f64>,
    /// Jitter the client reports, milliseconds.
    pub jitter_ms: Option<f64>,
    /// NACKs the client sent.
    pub nacks: u64,
    /// Keyframe requests the client sent.
    pub plis: u64,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0)
}

fn pct(f: Option<f32>) -> Option<f64> {
    f.map(|f| (f64::from(f) * 1000.0).round() / 10.0)
}

fn ice_name(s: str0m::IceConnectionState) -> String {
    format!("{s:?}").to_ascii_lowercase()
}

impl Sfu {
    /// Names of the open rooms.
    pub fn room_names(&self) -> Vec<String> {
        self.rooms.keys().map(|n| n.to_string()).collect()
    }

    /// How many participants (members and HTTP sessions) have each grade, worst first.
    pub fn participants_by_quality(&self) -> Vec<(Quality, usize)> {
        use Quality::*;
        [Lost, Poor, Good, Excellent]
            .into_iter()
            .map(|g| {
                let n = self
                    .participants
                    .values()
                    .filter(|p| p.quality == Some(g))
                    .count();
                (g, n)
            })
            .collect()
    }

    /// A room with every participant's figures, or `None` when there is no such room.
    pub fn room_report(&self, name: &str) -> Option<RoomReport> {
        let (room_name, room) = self.rooms.iter().find(|(n, _)| n.to_string() == name)?;
        Some(RoomReport {
            name: room_name.to_string(),
            mode: room.mode,
            participants: room
                .participants
                .iter()
                .filter_map(|pid| self.participant_report(*pid))
                .collect(),
        })
    }

    /// WHIP publishers and WHEP viewers, with the same figures as room members.
    pub fn session_reports(&self) -> Vec<ParticipantReport> {
        self.participants
            .values()
            .filter(|p| {
                !matches!(
                    p.role,
                    Role::Member | Role::Mirror { .. } | Role::Hub { .. }
                )
            })
            .filter_map(|p| self.participant_report(p.id))
            .collect()
    }

    /// One participant's figures.
    pub fn participant_report(&self, pid: ParticipantId) -> Option<ParticipantReport> {
        let p = self.participants.get(&pid)?;
        let (role, stream) = match &p.role {
            Role::Member => ("member", None),
            Role::Whip { stream, .. } => ("whip", Some(stream.clone())),
            Role::Whep { stream, .. } => ("whep", Some(stream.clone())),
            Role::Mirror { stream, .. } => ("mirror", Some(stream.clone())),
            Role::Hub { stream } => ("hub", Some(stream.clone())),
        };
        let mut peers: Vec<_> = [p.publisher, p.subscriber]
            .into_iter()
            .filter_map(|id| self.peers.get(&id))
            .collect();
        peers.dedup_by_key(|peer| peer.kind);
        let connections = peers.iter().map(|peer| connection_report(peer)).collect();
        let mut tracks: Vec<TrackReport> = p
            .published
            .values()
            .filter_map(|t| self.track_report(*t))
            .collect();
        tracks.sort_by_key(|t| t.id);
        let subscriptions = self.subscription_reports(pid);
        Some(ParticipantReport {
            id: pid,
            name: p.name.clone(),
            role,
            stream,
            quality: p.quality,
            connections,
            tracks,
            subscriptions,
        })
    }

    fn track_report(&self, tid: TrackId) -> Option<TrackReport> {
        let t = self.tracks.get(&tid)?;
        let q = &self.peers.get(&t.peer)?.quality;
        let layers = if t.rids.is_empty() {
            vec![layer_report(
                None,
                t.layers.first().and_then(|l| l.height),
                &media(q, t.mid),
            )]
        } else {
            t.rids
                .iter()
                .enumerate()
                .map(|(i, rid)| {
                    let m = q
                        .media
                        .get(&(t.mid, Some(*rid)))
                        .cloned()
                        .unwrap_or_default();
                    layer_report(
                        Some(rid.to_string()),
                        t.layers.get(i).and_then(|l| l.height),
                        &m,
                    )
                })
                .collect()
        };
        Some(TrackReport {
            id: tid,
            kind: t.kind,
            source: t.source,
            muted: t.muted,
            codec: t.codec.as_ref().map(|c| c.spec().codec.to_string()),
            red: t.red,
            layers,
        })
    }

    fn subscription_reports(&self, pid: ParticipantId) -> Vec<SubscriptionReport> {
        let Some(p) = self.participants.get(&pid) else {
            return Vec::new();
        };
        let q = self.peers.get(&p.subscriber).map(|peer| &peer.quality);
        p.subs
            .iter()
            .filter(|(_, s)| s.want)
            .filter_map(|(tid, s)| {
                let t = self.tracks.get(tid)?;
                let down = t.downstream.iter().find(|d| d.subscriber == pid);
                let m = match (q, down) {
                    (Some(q), Some(d)) => media(q, d.mid),
                    _ => MediaQuality::default(),
                };
                let video = t.kind == TrackKind::Video;
                Some(SubscriptionReport {
                    track_id: Some(*tid),
                    publisher: Some(t.owner),
                    kind: t.kind,
                    layer: down.filter(|_| video).and_then(|d| d.fwd.current()),
                    target_layer: down.filter(|_| video).map(|d| d.fwd.target()),
                    max_height: s.max_height,
                    paused: down.is_some_and(|d| d.fwd.is_paused()),
                    red: down.is_some_and(|d| d.red),
                    bitrate_bps: m.bitrate as u64,
                    loss_pct: pct(m.loss),
                    jitter_ms: ms(m.jitter),
                    nacks: m.nacks,
                    plis: m.plis,
                })
            })
            .collect()
    }
}

/// An m-line's figures, its simulcast layers added up.
fn media(q: &PeerQuality, mid: Mid) -> MediaQuality {
    let mut out: Option<MediaQuality> = None;
    for ((m, _), v) in &q.media {
        if *m != mid {
            continue;
        }
        out = Some(match out {
            None => v.clone(),
            Some(mut o) => {
                o.bitrate += v.bitrate;
                o.loss = match (o.loss, v.loss) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                o.jitter = o.jitter.max(v.jitter);
                o.nacks += v.nacks;
                o.plis += v.plis;
                o
            }
        });
    }
    out.unwrap_or_default()
}

fn layer_report(rid: Option<String>, height: Option<u32>, m: &MediaQuality) -> LayerReport {
    LayerReport {
        rid,
        height,
        bitrate_bps: m.bitrate as u64,
        loss_pct: pct(m.loss),
        jitter_ms: ms(m.jitter),
        nacks: m.nacks,
        plis: m.plis,
    }
}

fn connection_report(peer: &Peer) -> ConnectionReport {
    let q = &peer.quality;
    let candidate = q.pair.map(|(proto, local, remote)| {
        // The client's candidates as signalled read "udp 192.0.2.1:5000 host".
        let remote_type = peer
            .remote_candidates
            .iter()
            .find_map(|c| {
                let mut f = c.split_whitespace();
                let (p, addr, typ) = (f.next()?, f.next()?, f.next()?);
                (p.eq_ignore_ascii_case(&proto.to_string()) && addr == remote.to_string())
                    .then(|| typ.to_owned())
            })
            .unwrap_or_else(|| "prflx".to_owned());
        CandidateReport {
            protocol: proto.to_string().to_ascii_lowercase(),
            local: local.to_string(),
            remote: remote.to_string(),
            remote_type,
        }
    });
    ConnectionReport {
        kind: peer.kind,
        ice_state: q.ice.map(ice_name),
        candidate,
        rtt_ms: ms(q.rtt),
        loss_in_pct: pct(q.loss_in),
        loss_out_pct: pct(q.loss_out),
        jitter_ms: ms(q.jitter),
        bitrate_in_bps: q.bitrate_in as u64,
        bitrate_out_bps: q.bitrate_out as u64,
        estimate_bps: peer.estimate.map(|e| e as u64),
        mos: q.mos.map(|m| (m * 100.0).round() / 100.0),
        quality: q.grade,
    }
}
