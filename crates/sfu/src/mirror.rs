//! One stream's viewers on several shards. The server runs one `Sfu` per media shard (a
//! thread each); a WHIP publisher lives on one of them, and its WHEP viewers are spread over
//! all. The publisher's shard (the origin) *exports* the stream to each other shard that has
//! viewers: every packet it receives of the stream's tracks goes out once per such shard
//! ([`Sfu::take_exports`]), already parsed (layer, keyframe, RED rebuilt), and that shard's
//! *mirror* (a participant without a peer, [`Role::Mirror`]) feeds it to its own viewers
//! through the same forwarding as a publisher's packets. So the SRTP protection and sending
//! for a viewer happen on the viewer's shard: one broadcast uses every core.
//!
//! What goes back: keyframe requests ([`Output::MirrorKeyframe`]), and the end of a mirror
//! nobody watches ([`Output::MirrorClosed`]). When a source's track goes, the origin says so
//! ([`Output::ExportEnded`]) and the mirror drops it; a mirror left with no track goes. Its
//! viewers stay, waiting for a republish under the same name as viewers on the origin's shard
//! do, wherever it lands: a source announcing a track tells every shard
//! ([`Output::Announced`]), and a shard with viewers waiting for that name asks the new
//! origin for an export ([`Sfu::mirrors_wanted`]).

use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{Mid, Rid};
use tracing::{debug, info};

use crate::codec::Vp9Desc;
use crate::ids::{ParticipantId, PeerId, RoomName, TrackId};
use crate::media::Cached;
use crate::sfu::{Layer, Output, Participant, Role, Sfu, Track};
use crate::signal::{LeaveReason, TrackKind, TrackSource};

/// How often mirrors are checked for viewers.
const MIRROR_CHECK: Duration = Duration::from_secs(1);

/// A track of an exported stream, as the mirroring shard needs it.
#[derive(Debug, Clone)]
pub struct MirrorTrack {
    id: TrackId,
    kind: TrackKind,
    source: TrackSource,
    codec: PayloadParams,
    rids: Vec<Rid>,
    layers: usize,
    width: Option<u32>,
    height: Option<u32>,
    red: bool,
}

/// One packet of an exported track, on its way to another shard.
#[derive(Clone)]
pub struct MirrorPacket {
    pub(crate) track: TrackId,
    pub(crate) packet: Cached,
    pub(crate) in_params: Option<PayloadParams>,
    pub(crate) svc: Option<Vp9Desc>,
}

impl std::fmt::Debug for MirrorPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorPacket")
            .field("track", &self.track)
            .field("layer", &self.packet.layer)
            .field("bytes", &self.packet.payload.len())
            .finish()
    }
}

impl Sfu {
    /// Origin side: every packet of `stream`'s tracks (a WHIP publisher's or a room member's,
    /// as [`Sfu::has_stream`] finds it) is handed out for shard `shard` from now on. The
    /// tracks, for that shard's [`Sfu::mirror_open`]; `None` when no such stream is here, an
    /// empty list when its media has not started.
    pub fn export_stream(&mut self, stream: &str, shard: u32) -> Option<Vec<MirrorTrack>> {
        let source = self.origin_of(stream)?;
        let ids: Vec<TrackId> = self.source_tracks(source).iter().map(|t| t.id).collect();
        let mut out = Vec::with_capacity(ids.len());
        for tid in ids {
            let Some(t) = self.tracks.get_mut(&tid) else {
                continue;
            };
            let Some(codec) = t.codec else { continue };
            if !t.exports.iter().any(|(s, n)| *s == shard && n == stream) {
                t.exports.push((shard, stream.to_owned()));
                info!(track = %tid, shard, stream, "exported to another shard");
            }
            out.push(MirrorTrack {
                id: tid,
                kind: t.kind,
                source: t.source,
                codec,
                rids: t.rids.clone(),
                layers: t.layers.len(),
                width: t.width,
                height: t.height,
                red: t.red,
            });
        }
        Some(out)
    }

    /// Origin side: the packets for other shards since the last call, each with its shard
    /// (the driver sends them on, one message per shard).
    pub fn take_exports(&mut self) -> std::vec::Drain<'_, (u32, MirrorPacket)> {
        self.exports.drain(..)
    }

    /// Origin side: shard `shard` no longer mirrors `stream`.
    pub fn unexport(&mut self, shard: u32, stream: &str) {
        for t in self.tracks.values_mut() {
            t.exports.retain(|(s, n)| !(*s == shard && n == stream));
        }
    }

    /// Origin side: a viewer on another shard needs a keyframe.
    pub fn exported_keyframe(&mut self, now: Instant, track: TrackId, layer: usize) {
        self.now = now;
        if self
            .tracks
            .get(&track)
            .is_some_and(|t| !t.exports.is_empty())
        {
            self.request_keyframe(track, layer);
            self.process_events();
        }
    }

    /// Mirror side: `stream`, published on shard `origin`, is mirrored here with `tracks`
    /// (made, or given the tracks it lacks), so that [`Sfu::whep_play`] finds it.
    pub fn mirror_open(
        &mut self,
        now: Instant,
        stream: &str,
        origin: u32,
        tracks: Vec<MirrorTrack>,
    ) {
        self.now = now;
        // The stream moved (republished on another shard): its old mirror's tracks are gone
        // or going, and viewers must resolve the name to the new one. The old origin stops
        // exporting to it, if it still does.
        let moved: Vec<(ParticipantId, u32)> = self
            .participants
            .values()
            .filter_map(|p| match &p.role {
                Role::Mirror {
                    stream: s,
                    origin: o,
                } if s == stream && *o != origin => Some((p.id, *o)),
                _ => None,
            })
            .collect();
        for (m, old) in moved {
            info!(participant = %m, stream, "mirror replaced: the stream moved to shard {origin}");
            self.remove_participant(m, LeaveReason::Left);
            self.out.push_back(Output::MirrorClosed {
                origin: old,
                stream: stream.to_owned(),
            });
        }
        let existing = self.participants.values().find(|p| {
            matches!(&p.role, Role::Mirror { stream: s, origin: o } if s == stream && *o == origin)
        });
        let pid = match existing {
            Some(p) => p.id,
            None => {
                let pid = ParticipantId(self.next_id());
                self.participants
                    .insert(pid, mirror_participant(pid, stream, origin));
                info!(participant = %pid, stream, origin, "mirror opened");
                pid
            }
        };
        for (i, mt) in tracks.into_iter().enumerate() {
            if self.tracks.contains_key(&mt.id) {
                continue;
            }
            // A mid of its own within the mirror (it has no peer, and `unpublish` forgets
            // the track by it).
            let mid = Mid::from(format!("x{i}").as_str());
            if let Some(p) = self.participants.get_mut(&pid) {
                p.published.insert(mid, mt.id);
            }
            let tid = mt.id;
            self.tracks.insert(tid, mirror_track(pid, mid, mt));
            self.bind_viewers(tid);
        }
        self.process_events();
    }

    /// Mirror side: packets from the origin shard, forwarded to the viewers here.
    pub fn mirror_packets(&mut self, now: Instant, packets: Vec<MirrorPacket>) {
        self.now = now;
        let allocation = self.config.bandwidth_allocation;
        for p in packets {
            let Some(track) = self.tracks.get_mut(&p.track) else {
                continue;
            };
            let layer = p.packet.layer;
            while track.layers.len() <= layer.min(crate::media::MAX_LAYERS - 1) {
                track.layers.push(Layer::default());
            }
            if let Some(l) = track.layers.get_mut(layer) {
                l.last_seen = Some(now);
                if allocation {
                    l.rate.add(now, p.packet.payload.len());
                }
            }
            track.first_packet.get_or_insert(now);
            track.bytes_in += p.packet.payload.len() as u64;
            if track.server_muted {
                continue;
            }
            self.fan_out(p.track, p.packet, p.in_params, p.svc);
        }
    }

    /// Mirror side: the origin's track `track` of `stream` is gone. The mirror drops it (its
    /// viewers' m-lines wait for the next track of their kind, as on the origin); a mirror
    /// with no track left goes.
    pub fn mirror_track_end(&mut self, now: Instant, stream: &str, track: TrackId) {
        self.now = now;
        let Some(owner) = self.tracks.get(&track).map(|t| t.owner) else {
            return;
        };
        let is_mirror = self
            .participants
            .get(&owner)
            .is_some_and(|p| matches!(&p.role, Role::Mirror { stream: s, .. } if s == stream));
        if !is_mirror {
            return;
        }
        self.unpublish(track);
        if self
            .participants
            .get(&owner)
            .is_some_and(|p| p.published.is_empty())
        {
            info!(participant = %owner, stream, "mirror ended: its source is gone");
            self.remove_participant(owner, LeaveReason::Left);
        }
        self.process_events();
    }

    /// Of the names a source on another shard just announced a track under, those this
    /// shard should mirror from there: WHEP viewers here asked for it, and have an m-line
    /// waiting for a track (a republish, or the stream's second track), and no source here
    /// publishes it. The driver asks that shard to export each ([`Sfu::export_stream`]) and
    /// opens the mirror with the answer ([`Sfu::mirror_open`]).
    pub fn mirrors_wanted(&self, names: &[String]) -> Vec<String> {
        names
            .iter()
            .filter(|name| {
                self.origin_of(name).is_none()
                    && self.participants.values().any(|p| {
                        matches!(&p.role, Role::Whep { stream, hub: false, .. } if stream == *name)
                            && !p.free_mids.is_empty()
                    })
            })
            .cloned()
            .collect()
    }

    /// The participant that publishes `stream` on this shard, mirrors left out.
    pub(crate) fn origin_of(&self, stream: &str) -> Option<ParticipantId> {
        self.resolve_source(stream).filter(|pid| {
            self.participants
                .get(pid)
                .is_some_and(|p| !matches!(p.role, Role::Mirror { .. }))
        })
    }

    /// Told once a second: mirrors whose tracks nobody here receives are closed, and their
    /// origin stops sending them.
    pub(crate) fn reap_mirrors(&mut self, now: Instant) {
        if now < self.next_mirror_check {
            return;
        }
        self.next_mirror_check = now + MIRROR_CHECK;
        let unwatched: Vec<(ParticipantId, String, u32)> = self
            .participants
            .values()
            .filter_map(|p| match &p.role {
                Role::Mirror { stream, origin } => Some((p.id, stream.clone(), *origin, p)),
                _ => None,
            })
            // Only a viewer receiving one of its tracks keeps a mirror. Viewers are bound when
            // it opens or gains a track (`mirror_open`), so one still waiting here wants a
            // track this mirror does not have (another codec): the stream's packets need not
            // cross for it. A later track of the stream is announced again.
            .filter(|(_, _, _, p)| {
                !p.published
                    .values()
                    .any(|tid| self.participants.values().any(|v| v.subs.contains_key(tid)))
            })
            .map(|(id, stream, origin, _)| (id, stream, origin))
            .collect();
        for (pid, stream, origin) in unwatched {
            debug!(participant = %pid, %stream, "mirror closed: nobody here watches it");
            self.remove_participant(pid, LeaveReason::Left);
            self.out.push_back(Output::MirrorClosed { origin, stream });
        }
    }

    /// A keyframe request for a mirrored track goes to its origin: true when `tid` is one.
    pub(crate) fn mirror_keyframe_request(&mut self, tid: TrackId, layer: usize) -> bool {
        let Some(owner) = self.tracks.get(&tid).map(|t| t.owner) else {
            return false;
        };
        let Some(Role::Mirror { origin, .. }) = self.participants.get(&owner).map(|p| &p.role)
        else {
            return false;
        };
        self.out.push_back(Output::MirrorKeyframe {
            origin: *origin,
            track: tid,
            layer,
        });
        true
    }

    /// Origin side: a track leaving tells the shards it was exported to.
    pub(crate) fn exports_ended(&mut self, track: TrackId, exports: &[(u32, String)]) {
        for (shard, stream) in exports {
            self.out.push_back(Output::ExportEnded {
                shard: *shard,
                stream: stream.clone(),
                track,
            });
        }
    }

    /// Origin side: a source's track was announced; with other shards, they hear of it under
    /// every name a WHEP viewer may have used for the source.
    pub(crate) fn announce_to_shards(&mut self, owner: ParticipantId) {
        if self.config.shard.count <= 1 {
            return;
        }
        let Some(p) = self.participants.get(&owner) else {
            return;
        };
        let names = match &p.role {
            Role::Whip { stream, .. } => vec![stream.clone()],
            Role::Member => {
                let room = p.room.as_str();
                vec![format!("{room}/{}", p.name), format!("{room}/{owner}")]
            }
            Role::Whep { .. } | Role::Mirror { .. } | Role::Hub { .. } => return,
        };
        self.out.push_back(Output::Announced { names });
    }
}

fn mirror_participant(pid: ParticipantId, stream: &str, origin: u32) -> Participant {
    let role = Role::Mirror {
        stream: stream.to_owned(),
        origin,
    };
    let room = RoomName::internal(format!("mirror:{stream}"));
    // No peer: ids no peer has (every shard's start at 1 or more). No ICE to lose either, so
    // it is never ended for want of it (it has no `http` side).
    let no_peer = (PeerId(0), PeerId(0));
    Participant::new(pid, role, stream, room, no_peer, crate::grant::Grant::all())
}

fn mirror_track(owner: ParticipantId, mid: Mid, mt: MirrorTrack) -> Track {
    let rids = mt.rids.clone();
    Track {
        red: mt.red,
        codec: Some(mt.codec),
        width: mt.width,
        height: mt.height,
        // The origin's layer count (SVC layers are learnt from packets, as at the origin).
        layers: (0..mt.layers.max(1)).map(|_| Layer::default()).collect(),
        ..Track::new(mt.id, owner, (PeerId(0), mid), mt.kind, mt.source, rids)
    }
}
