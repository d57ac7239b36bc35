//! The media loop's side of the stream hub: WHIP publishers and room participants registered
//! as hub streams, WHEP viewers counted as hub readers, and the bridges that carry frames of
//! hub-only streams (RTMP) to their WHEP viewers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use hub::{Codec, Hub, Item, Protocol, Publisher, Reader, StreamName, TrackInfo};
use sfu::signal::{TrackInfo as SfuTrack, TrackKind};
use sfu::{FrameTrack, ParticipantId, Sfu, SfuEvent};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::webrtc::shard::Command;

/// An HLS player counts as watching for this long after its last request.
const VIEWED_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// A stream as `GET /api/streams` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamStatus {
    pub name: StreamName,
    pub source: Protocol,
    pub tracks: Vec<TrackInfo>,
    /// The lower simulcast layers of its video carried for HLS variants (`hls.enabled`), each
    /// described like a track; not in `tracks`, which lists what the publisher sends.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<TrackInfo>,
    pub readers: std::collections::BTreeMap<Protocol, usize>,
    pub bitrate_kbps: u64,
    pub uptime_secs: u64,
    /// Times a reader fell behind and skipped to a keyframe.
    pub reader_skips: u64,
}

/// A WHEP viewer's ties to the hub: its reader registration and, for hub-only sources, the
/// bridge task feeding it frames.
struct Viewer {
    stream: StreamName,
    /// Held so the stream counts this viewer (SFU-forwarded viewers read nothing from it).
    _reader: Option<Reader>,
    bridge: Option<tokio::task::JoinHandle<()>>,
}

pub struct Streams {
    pub hub: Hub,
    /// The shard's `frames` queue (queues.rs): bounded, and a bridge waits when it is full.
    tx: mpsc::Sender<Command>,
    /// WHIP publishers and room participants, by participant.
    publishers: HashMap<ParticipantId, Publisher>,
    /// Their tracks in the hub's order (a frame's track index is the position here).
    tracks: HashMap<ParticipantId, Vec<(sfu::TrackId, TrackInfo)>>,
    viewers: HashMap<ParticipantId, Viewer>,
    /// Last bitrate sample per stream: (bytes, when, kbit/s).
    rates: HashMap<StreamName, (u64, Instant, u64)>,
}

impl Streams {
    pub fn new(hub: Hub, tx: mpsc::Sender<Command>) -> Streams {
        Streams {
            hub,
            tx,
            publishers: HashMap::new(),
            tracks: HashMap::new(),
            viewers: HashMap::new(),
            rates: HashMap::new(),
        }
    }

    /// Whether anyone watches each registered publisher's stream through the hub: a reader
    /// other than the HLS packager (which reads every stream) and the SFU's own WHEP viewers
    /// (the SFU counts those itself), or an HLS player in the last [`VIEWED_FOR`].
    pub fn hub_watched(&self, now: Instant) -> Vec<(ParticipantId, bool)> {
        self.publishers
            .iter()
            .map(|(pid, p)| {
                let watched = self.hub.stream(p.name()).is_some_and(|info| {
                    let readers = info.readers.iter().any(|(proto, n)| {
                        *n > 0 && !matches!(proto, Protocol::Hls | Protocol::Whep)
                    });
                    let played = info
                        .viewed
                        .is_some_and(|t| now.saturating_duration_since(t) < VIEWED_FOR);
                    readers || played
                });
                (*pid, watched)
            })
            .collect()
    }

    /// Keeps a WHIP publisher's hub registration for the life of its session.
    pub fn add_whip(&mut self, pid: ParticipantId, publisher: Publisher) {
        self.publishers.insert(pid, publisher);
    }

    /// Registers a WHEP viewer (SFU-forwarded) as a reader of its stream.
    pub fn add_viewer(&mut self, pid: ParticipantId, stream: StreamName) {
        let reader = self.hub.subscribe(&stream, Protocol::Whep);
        self.viewers.insert(
            pid,
            Viewer {
                stream,
                _reader: reader,
                bridge: None,
            },
        );
    }

    /// Registers a WHEP viewer of a hub-only stream; its bridge starts when its peer connects.
    pub fn add_frame_viewer(&mut self, pid: ParticipantId, stream: StreamName) {
        self.viewers.insert(
            pid,
            Viewer {
                stream,
                _reader: None,
                bridge: None,
            },
        );
    }

    /// Mirrors what happened in the SFU.
    pub fn on_event(&mut self, sfu: &mut Sfu, event: SfuEvent) {
        match event {
            SfuEvent::MemberJoined {
                participant,
                room,
                name,
            } => {
                // `ROOM/NAME` when the name is a valid segment and free, else `ROOM/PA_n`.
                let now = Instant::now();
                let candidates = [format!("{room}/{name}"), format!("{room}/{participant}")];
                for c in candidates {
                    let Ok(n) = StreamName::parse(&c) else {
                        continue;
                    };
                    if let Ok(p) = self.hub.publish(n, Protocol::Room, now) {
                        self.publishers.insert(participant, p);
                        break;
                    }
                }
            }
            SfuEvent::MemberLeft { participant } => {
                self.publishers.remove(&participant);
                self.tracks.remove(&participant);
            }
            SfuEvent::TracksChanged {
                participant,
                tracks,
            } => {
                let Some(p) = self.publishers.get(&participant) else {
                    return;
                };
                let old = self.tracks.remove(&participant).unwrap_or_default();
                let mut list: Vec<(sfu::TrackId, TrackInfo)> = tracks
                    .iter()
                    .filter_map(|t| {
                        let mut info = hub_track(t)?;
                        // Keep a codec config learnt from the media (H.264 parameter sets).
                        if let Some((_, o)) =
                            old.iter().find(|(id, i)| *id == t.id && i.layer.is_none())
                        {
                            info.config = o.config.clone();
                        }
                        Some((t.id, info))
                    })
                    .collect();
                // The single-layer tracks (HLS variants) of tracks still there stay, after the
                // main ones.
                list.extend(
                    old.into_iter()
                        .filter(|(id, i)| i.layer.is_some() && tracks.iter().any(|t| t.id == *id)),
                );
                p.set_tracks(list.iter().map(|(_, i)| i.clone()).collect());
                self.tracks.insert(participant, list);
            }
            SfuEvent::Frame {
                participant,
                track,
                layer,
                frame,
            } => {
                let (Some(p), Some(list)) = (
                    self.publishers.get(&participant),
                    self.tracks.get_mut(&participant),
                ) else {
                    return;
                };
                let found = list
                    .iter()
                    .position(|(id, i)| *id == track && i.layer == layer);
                let mut changed = found.is_none();
                let index = match (found, layer) {
                    (Some(i), _) => i,
                    // A simulcast layer's first frame (`hub_layers`): it becomes a track of
                    // its own, described like its main track.
                    (None, Some(_)) => {
                        let Some(main) = list
                            .iter()
                            .find(|(id, i)| *id == track && i.layer.is_none())
                        else {
                            return;
                        };
                        let mut info = TrackInfo::new(main.1.codec);
                        info.layer = layer;
                        list.push((track, info));
                        list.len() - 1
                    }
                    (None, None) => return,
                };
                if p.take_keyframe_request() {
                    for (tid, info) in list.iter() {
                        if info.kind() == hub::MediaKind::Video && info.layer.is_none() {
                            sfu.request_hub_keyframe(*tid);
                        }
                    }
                }
                if let Some(config) = frame.config {
                    list[index].1.config = config.into();
                    if let Some((w, h)) = frame.size {
                        (list[index].1.width, list[index].1.height) = (Some(w), Some(h));
                    }
                    changed = true;
                }
                if changed {
                    p.set_tracks(list.iter().map(|(_, i)| i.clone()).collect());
                }
                let pts = frame.pts_us as i64;
                p.push(hub::Frame {
                    track: index,
                    pts,
                    dts: pts,
                    keyframe: frame.keyframe,
                    data: frame.data.into(),
                });
            }
            SfuEvent::ViewerConnected { participant } => {
                let Some(v) = self.viewers.get_mut(&participant) else {
                    return;
                };
                match self.hub.subscribe(&v.stream, Protocol::Whep) {
                    Some(reader) => {
                        let tx = self.tx.clone();
                        v.bridge = Some(tokio::spawn(bridge(reader, participant, tx)));
                    }
                    None => sfu.kick_http_session(Instant::now(), participant),
                }
            }
            SfuEvent::SessionEnded { participant } => {
                self.tracks.remove(&participant);
                if self.publishers.remove(&participant).is_some() {
                    info!(%participant, "WHIP stream ended");
                }
                if let Some(v) = self.viewers.remove(&participant)
                    && let Some(b) = v.bridge
                {
                    b.abort();
                }
            }
        }
    }

    /// WHIP publishers whose name another publisher took over.
    pub fn kicked(&self) -> Vec<ParticipantId> {
        self.publishers
            .iter()
            .filter(|(_, p)| p.is_kicked())
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Every live stream, with bitrates sampled since the previous call (at most once a
    /// second; the loop calls this every second).
    pub fn status(&mut self, sfu: &Sfu, now: Instant) -> Vec<StreamStatus> {
        let sfu_bytes: HashMap<&StreamName, u64> = self
            .publishers
            .iter()
            .map(|(pid, p)| (p.name(), sfu.bytes_published(*pid)))
            .collect();
        let mut out = Vec::new();
        for s in self.hub.streams() {
            // WebRTC sources: what arrived over RTP, all layers (their hub frames are a copy of
            // the top layer); others: what their publisher pushed into the hub.
            let bytes = sfu_bytes.get(&s.name).copied().unwrap_or(s.bytes_in);
            let entry = self
                .rates
                .entry(s.name.clone())
                .or_insert((bytes, s.started, 0));
            let elapsed = now.saturating_duration_since(entry.1).as_secs_f64();
            if elapsed >= 1.0 {
                entry.2 = ((bytes.saturating_sub(entry.0)) as f64 * 8.0 / 1000.0 / elapsed) as u64;
                *entry = (bytes, now, entry.2);
            }
            out.push(StreamStatus {
                bitrate_kbps: entry.2,
                uptime_secs: now.saturating_duration_since(s.started).as_secs(),
                name: s.name,
                source: s.source,
                layers: s
                    .tracks
                    .iter()
                    .filter(|t| t.layer.is_some())
                    .cloned()
                    .collect(),
                tracks: s.tracks.into_iter().filter(|t| t.layer.is_none()).collect(),
                readers: s.readers,
                reader_skips: s.skips,
            });
        }
        let live: std::collections::HashSet<&StreamName> = out.iter().map(|s| &s.name).collect();
        self.rates.retain(|n, _| live.contains(n));
        out
    }
}

impl Streams {
    /// Of `all` streams (from [`Streams::status`]), those this shard tells of: the WebRTC
    /// ones published here, and (`hub_only`) those no WebRTC publisher feeds.
    pub fn own(&self, all: Vec<StreamStatus>, hub_only: bool) -> Vec<StreamStatus> {
        let here: std::collections::HashSet<&StreamName> =
            self.publishers.values().map(|p| p.name()).collect();
        all.into_iter()
            .filter(|s| match s.source {
                Protocol::Whip | Protocol::Room => here.contains(&s.name),
                _ => hub_only,
            })
            .collect()
    }
}

/// The hub's view of a track the SFU announced.
fn hub_track(t: &SfuTrack) -> Option<TrackInfo> {
    let codec = match t.codec.as_deref()?.to_ascii_lowercase().as_str() {
        "h264" => Codec::H264,
        "h265" => Codec::H265,
        "vp8" => Codec::Vp8,
        "vp9" => Codec::Vp9,
        "av1" => Codec::Av1,
        "opus" => Codec::Opus,
        "pcmu" => Codec::Pcmu,
        "pcma" => Codec::Pcma,
        _ => return None,
    };
    let mut info = TrackInfo::new(codec);
    if t.kind == TrackKind::Video {
        info.width = t.width;
        info.height = t.height;
    }
    Some(info)
}

/// The WebRTC form of a hub track, when a WHEP viewer can receive it without transcoding.
pub fn frame_track(t: &TrackInfo) -> Option<FrameTrack> {
    if t.layer.is_some() {
        return None; // a lower simulcast layer's copy (HLS variants): the viewer has the main
    }
    match t.codec {
        Codec::H264 => Some(FrameTrack::H264),
        Codec::Opus => Some(FrameTrack::Opus),
        _ => None,
    }
}

/// Carries one hub stream to one WHEP viewer: H.264 to Annex B with the parameter sets in
/// front of every keyframe, Opus as it is; other tracks (AAC, which has an Opus twin when
/// transcoding is on) stay behind. Ends the viewer's session when the stream ends.
async fn bridge(mut reader: Reader, viewer: ParticipantId, tx: mpsc::Sender<Command>) {
    let mut tracks: Arc<[TrackInfo]> = Arc::from(Vec::new());
    let mut avc: Option<media::avc::AvcConfig> = None;
    let mut base: Option<i64> = None;
    let mut warned = false;
    while let Some(item) = reader.recv().await {
        let f = match item {
            Item::Tracks(t) => {
                avc = t
                    .iter()
                    .find(|t| t.codec == Codec::H264)
                    .and_then(|t| media::avc::AvcConfig::parse(&t.config).ok());
                tracks = t;
                continue;
            }
            Item::Frame(f) => f,
        };
        let Some(track) = tracks.get(f.track).and_then(frame_track) else {
            continue;
        };
        let data = match track {
            FrameTrack::Opus => f.data.to_vec(),
            FrameTrack::H264 => {
                let Some(config) = &avc else {
                    continue; // no parameter sets yet: nothing decodable
                };
                let sets = f.keyframe.then_some(config);
                match media::avc::to_annex_b(&f.data, 4, sets) {
                    Ok(d) => d,
                    Err(e) => {
                        if !warned {
                            warn!(%viewer, "dropping a malformed H.264 frame: {e}");
                            warned = true;
                        }
                        continue;
                    }
                }
            }
        };
        let base = *base.get_or_insert(f.pts);
        let cmd = Command::ViewerFrame {
            viewer,
            track,
            keyframe: f.keyframe,
            pts_us: (f.pts - base).max(0) as u64,
            data,
        };
        // Waits while the shard's frame queue is full: meanwhile the hub reader falls behind,
        // and the hub skips it to the next keyframe (the drop policy of every hub reader).
        if tx.send(cmd).await.is_err() {
            return;
        }
    }
    debug!(%viewer, "hub stream ended: ending the WHEP session");
    let _ = tx.send(Command::KickSession(viewer)).await;
}
