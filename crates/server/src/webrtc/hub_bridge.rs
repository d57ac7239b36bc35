//! The media loop's side of the stream hub: WHIP publishers and room participants registered
//! as hub streams, WHEP viewers counted as hub readers, and the feeds that carry frames of
//! hub-only streams (RTMP) to their hub source on this shard (the SFU's `hub_source.rs`),
//! whence they are forwarded to the WHEP viewers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use hub::{Codec, Hub, Item, Protocol, Publisher, Reader, StreamName, TrackInfo};
use sfu::signal::{TrackInfo as SfuTrack, TrackKind};
use sfu::{FrameTrack, ParticipantId, Sfu, SfuEvent};
use tokio::sync::mpsc;
use tracing::{debug, info};

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

/// A WHEP viewer's ties to the hub: it counts as a reader of its stream while it lives.
struct Viewer {
    stream: StreamName,
    /// Reads from the hub's source on this shard (`hub_sources`), rather than a WebRTC one.
    hub: bool,
    _counted: Option<hub::Watch>,
}

/// The task reading a stream from the hub for this shard's hub source of it (one per stream
/// and shard, whatever the number of viewers), and which one it is (a stream that ended and
/// was published again gets a new one).
struct HubFeed {
    id: u64,
    task: tokio::task::JoinHandle<()>,
}

pub struct Streams {
    pub hub: Hub,
    /// The shard's `frames` queue (queues.rs): bounded, and a feed waits when it is full.
    tx: mpsc::Sender<Command>,
    /// WHIP publishers and room participants, by participant.
    publishers: HashMap<ParticipantId, Publisher>,
    /// Their tracks in the hub's order (a frame's track index is the position here).
    tracks: HashMap<ParticipantId, Vec<(sfu::TrackId, TrackInfo)>>,
    viewers: HashMap<ParticipantId, Viewer>,
    /// Hub streams read for their hub source here, while it has viewers.
    hub_feeds: HashMap<StreamName, HubFeed>,
    /// The id the next feed gets.
    next_feed: u64,
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
            hub_feeds: HashMap::new(),
            next_feed: 0,
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

    /// Registers a WHEP viewer as a reader of its stream; `hub`: it plays the stream's hub
    /// source here.
    pub fn add_viewer(&mut self, pid: ParticipantId, stream: StreamName, hub: bool) {
        let counted = self.hub.watch(&stream, Protocol::Whep);
        self.viewers.insert(
            pid,
            Viewer {
                stream,
                hub,
                _counted: counted,
            },
        );
    }

    /// True while a viewer here plays `stream`'s hub source.
    pub fn has_hub_viewer(&self, stream: &StreamName) -> bool {
        self.viewers.values().any(|v| v.hub && v.stream == *stream)
    }

    /// Starts reading `stream` from the hub for its hub source here. False when the hub has
    /// no such stream.
    pub fn open_hub_feed(&mut self, stream: &StreamName) -> bool {
        let Some(reader) = self.hub.subscribe_uncounted(stream) else {
            return false;
        };
        self.next_feed += 1;
        let id = self.next_feed;
        let task = tokio::spawn(feed(reader, id, self.tx.clone()));
        self.hub_feeds.insert(stream.clone(), HubFeed { id, task });
        true
    }

    /// The feed `id` of `stream` ended with the stream: true when it is still the current one
    /// (the hub source goes); false for a feed already replaced.
    pub fn hub_feed_ended(&mut self, stream: &StreamName, id: u64) -> bool {
        if self.hub_feeds.get(stream).is_some_and(|f| f.id == id) {
            self.hub_feeds.remove(stream);
            return true;
        }
        false
    }

    /// Stops `stream`'s feed here, if it has one.
    pub fn close_hub_feed(&mut self, stream: &StreamName) {
        if let Some(f) = self.hub_feeds.remove(stream) {
            f.task.abort();
        }
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
            SfuEvent::SessionEnded { participant } => {
                self.tracks.remove(&participant);
                if self.publishers.remove(&participant).is_some() {
                    info!(%participant, "WHIP stream ended");
                }
                // The last viewer here of a hub stream gone: its feed and hub source go too.
                if let Some(v) = self.viewers.remove(&participant)
                    && v.hub
                    && !self.viewers.values().any(|o| o.hub && o.stream == v.stream)
                {
                    self.close_hub_feed(&v.stream);
                    sfu.hub_source_close(Instant::now(), v.stream.as_str());
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

/// Carries one hub stream to its hub source on one shard: the H.264 parameter sets when its
/// tracks change, then H.264 (4-byte NAL unit lengths, the hub's layout) and Opus frames as
/// they are; other tracks (AAC, which has an Opus twin when transcoding is on) stay behind.
/// Tells the shard when the stream ends.
async fn feed(mut reader: Reader, id: u64, tx: mpsc::Sender<Command>) {
    let stream = reader.name().clone();
    let mut tracks: Arc<[TrackInfo]> = Arc::from(Vec::new());
    let mut base: Option<i64> = None;
    while let Some(item) = reader.recv().await {
        let f = match item {
            Item::Tracks(t) => {
                let sets = t
                    .iter()
                    .find(|t| t.codec == Codec::H264 && t.layer.is_none())
                    .and_then(|t| media::avc::AvcConfig::parse(&t.config).ok())
                    .map(|c| c.sps.into_iter().chain(c.pps).collect());
                tracks = t;
                if let Some(sets) = sets {
                    let cmd = Command::HubParameterSets {
                        stream: stream.clone(),
                        sets,
                    };
                    if tx.send(cmd).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Item::Frame(f) => f,
        };
        let Some(track) = tracks.get(f.track).and_then(frame_track) else {
            continue;
        };
        let base = *base.get_or_insert(f.pts);
        let cmd = Command::HubFrame {
            stream: stream.clone(),
            track,
            keyframe: f.keyframe,
            pts_us: (f.pts - base).max(0) as u64,
            data: f.data.clone(),
        };
        // Waits while the shard's frame queue is full: meanwhile the hub reader falls behind,
        // and the hub skips it to the next keyframe (the drop policy of every hub reader).
        if tx.send(cmd).await.is_err() {
            return;
        }
    }
    debug!(%stream, "hub stream ended: ending its WHEP viewers here");
    let _ = tx.send(Command::HubFeedEnded { stream, id }).await;
}
