//! CMAF for Media Source Extensions at the lowest delay: one init segment per track (each
//! track goes to a `SourceBuffer` of its own, so audio and video travel and are dropped
//! apart), then one `moof`+`mdat` per frame, made the moment the frame arrives.
//!
//! A frame's duration is not known until the next one comes, and waiting for it would add a
//! frame of delay; the fragment says the previous frame's duration instead. MSE places each
//! frame by its own decode time (`tfdt`), so an estimate that is off only moves where the
//! buffered range ends for a moment.
//!
//! Used by the RTWebSocket CMAF mapping and the plain-WebSocket fallback.

use bytes::Bytes;
use hub::{Codec, Frame, MediaKind, TrackInfo};

use crate::HlsError;
use crate::fmp4::{self, Sample, TrackSpec};

/// How far before the first frame the timeline starts: a frame of the other track that comes
/// later but is stamped a little earlier (audio before the first video frame) still has a
/// time after zero.
const LEAD_US: i64 = 10_000_000;

/// A track's new init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveInit {
    /// Audio or video: which `SourceBuffer`.
    pub kind: MediaKind,
    /// The RFC 6381 codecs string for `addSourceBuffer`/`changeType`.
    pub codecs: String,
    /// `ftyp` + `moov` of this one track.
    pub init: Bytes,
}

/// One frame's fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFragment {
    /// Audio or video.
    pub kind: MediaKind,
    /// A frame a decoder can start at (every audio frame).
    pub keyframe: bool,
    /// `moof` + `mdat`.
    pub data: Bytes,
}

struct Track {
    hub_index: usize,
    spec: TrackSpec,
    seq: u32,
    last_dts: Option<u64>,
    last_duration: u32,
}

impl Track {
    fn kind(&self) -> MediaKind {
        self.spec.info.kind()
    }
}

/// How long a stream that has described one kind of track only is given to describe the
/// other before its inits go out anyway. A player adds every `SourceBuffer` before the first
/// init is appended, so a track that comes later cannot be played; RTMP and TC publishers
/// describe their tracks one sequence header at a time, a few milliseconds apart.
pub const WAIT_FOR_SECOND_KIND: std::time::Duration = std::time::Duration::from_millis(1000);

/// Hub tracks and frames in, per-track init segments and per-frame fragments out.
#[derive(Default)]
pub struct LiveCmaf {
    tracks: Vec<Track>,
    base_us: Option<i64>,
    /// A track list with one kind only, held since then (before any init went out).
    waiting: Option<(Vec<TrackInfo>, std::time::Instant)>,
    /// Inits went out: the kinds are settled.
    started: bool,
}

impl std::fmt::Debug for LiveCmaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCmaf")
            .field("tracks", &self.tracks.len())
            .finish()
    }
}

impl LiveCmaf {
    /// A fragmenter with no tracks yet.
    pub fn new() -> LiveCmaf {
        LiveCmaf::default()
    }

    /// The stream's tracks (first, and when they change). The first main video track and the
    /// first AAC or Opus track are taken; the init segments of those that are new or changed
    /// are returned, to go out before their next fragment. While a track's codec configuration
    /// has not arrived (RTMP sends it in its first tag), nothing changes.
    pub fn set_tracks(
        &mut self,
        infos: &[TrackInfo],
        now: std::time::Instant,
    ) -> Result<Vec<LiveInit>, HlsError> {
        self.describe(infos, now, false)
    }

    /// [`LiveCmaf::set_tracks`]; `waited`: a one-kind list goes without waiting any more.
    fn describe(
        &mut self,
        infos: &[TrackInfo],
        now: std::time::Instant,
        waited: bool,
    ) -> Result<Vec<LiveInit>, HlsError> {
        let video = infos
            .iter()
            .position(|t| t.kind() == MediaKind::Video && t.layer.is_none());
        let audio = infos
            .iter()
            .position(|t| matches!(t.codec, Codec::Aac | Codec::Opus));
        let needs_config = |t: &TrackInfo| t.codec != Codec::Opus && t.config.is_empty();
        if video
            .into_iter()
            .chain(audio)
            .any(|i| needs_config(&infos[i]))
        {
            // Until every track's configuration has come, nothing changes: a player adds all
            // its SourceBuffers before the first init, so a track must not come late.
            return Ok(Vec::new());
        }
        if !self.started && !waited && (video.is_none() || audio.is_none()) {
            let since = self.waiting.as_ref().map_or(now, |w| w.1);
            if now < since + WAIT_FOR_SECOND_KIND {
                self.waiting = Some((infos.to_vec(), since));
                return Ok(Vec::new());
            }
        }
        self.waiting = None;
        let mut inits = Vec::new();
        let mut tracks = Vec::new();
        for i in video.into_iter().chain(audio) {
            let info = &infos[i];
            let old = self.tracks.iter().position(|t| t.kind() == info.kind());
            match old {
                Some(o) if self.tracks[o].spec.info == *info => {
                    let mut t = self.tracks.swap_remove(o);
                    t.hub_index = i;
                    tracks.push(t);
                }
                _ => {
                    let spec = TrackSpec::new(1, info.clone())?;
                    let init = fmp4::init_segment(std::slice::from_ref(&spec))?;
                    inits.push(LiveInit {
                        kind: info.kind(),
                        codecs: spec.codecs(),
                        init: init.into(),
                    });
                    // A new init of the same kind continues the old track's timeline.
                    let prev = old.map(|o| self.tracks.swap_remove(o));
                    tracks.push(Track {
                        hub_index: i,
                        spec,
                        seq: prev.as_ref().map_or(0, |p| p.seq),
                        last_dts: None,
                        last_duration: prev.map_or(0, |p| p.last_duration),
                    });
                }
            }
        }
        self.tracks = tracks;
        self.started |= !inits.is_empty();
        Ok(inits)
    }

    /// The inits of a one-kind track list held past [`WAIT_FOR_SECOND_KIND`]; call before
    /// [`LiveCmaf::fragment`].
    pub fn poll_inits(&mut self, now: std::time::Instant) -> Result<Vec<LiveInit>, HlsError> {
        match self.waiting.take() {
            Some((infos, since)) if now >= since + WAIT_FOR_SECOND_KIND => {
                self.describe(&infos, now, true)
            }
            w => {
                self.waiting = w;
                Ok(Vec::new())
            }
        }
    }

    /// The fragment of one frame; `None` for a frame of a track not taken (or not ready).
    pub fn fragment(&mut self, frame: &Frame) -> Option<Result<LiveFragment, HlsError>> {
        let base = *self.base_us.get_or_insert(frame.dts - LEAD_US);
        let track = self
            .tracks
            .iter_mut()
            .find(|t| t.hub_index == frame.track)?;
        let scale = i128::from(track.spec.timescale);
        let to_ts = |us: i64| (i128::from((us - base).max(0)) * scale / 1_000_000) as u64;
        let dts = to_ts(frame.dts);
        let pts = to_ts(frame.pts.max(frame.dts));
        if let Some(last) = track.last_dts
            && dts > last
        {
            track.last_duration = u32::try_from(dts - last).unwrap_or(u32::MAX);
        }
        track.last_dts = Some(dts);
        let duration = match track.last_duration {
            0 => default_duration(&track.spec),
            d => d,
        };
        track.seq = track.seq.wrapping_add(1);
        let keyframe = frame.keyframe || track.kind() == MediaKind::Audio;
        let sample = Sample {
            dts,
            duration,
            cts: i32::try_from(pts - dts).unwrap_or(i32::MAX),
            keyframe,
            data: Bytes::from_owner(frame.data.clone()),
        };
        let kind = track.kind();
        Some(
            fmp4::fragment(track.seq, &[(1, std::slice::from_ref(&sample))]).map(|data| {
                LiveFragment {
                    kind,
                    keyframe,
                    data: data.into(),
                }
            }),
        )
    }
}

/// Before a track's second frame: a frame of 30 fps video, 1024 AAC samples, 20 ms of Opus.
fn default_duration(spec: &TrackSpec) -> u32 {
    match spec.info.codec {
        Codec::Aac => 1024,
        Codec::Opus => 960,
        _ => spec.timescale / 30,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn avc() -> TrackInfo {
        // avcC of a 320x240 baseline stream: version, profile 66, compat, level 30, one SPS/PPS.
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40];
        let mut c = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, sps.len() as u8];
        c.extend_from_slice(&sps);
        c.extend_from_slice(&[1, 0, 4, 0x68, 0xce, 0x3c, 0x80]);
        TrackInfo {
            width: Some(320),
            height: Some(240),
            config: c.into(),
            ..TrackInfo::new(Codec::H264)
        }
    }

    fn frame(track: usize, ms: i64, keyframe: bool) -> Frame {
        Frame {
            track,
            pts: ms * 1000,
            dts: ms * 1000,
            keyframe,
            data: Arc::from(&[0u8, 0, 0, 2, 0x65, 0x88][..]),
        }
    }

    #[test]
    fn an_init_per_track_then_a_fragment_per_frame() {
        let mut l = LiveCmaf::new();
        let inits = l
            .set_tracks(&[avc(), TrackInfo::new(Codec::Opus)], now())
            .unwrap();
        assert_eq!(inits.len(), 2);
        assert_eq!(inits[0].kind, MediaKind::Video);
        assert_eq!(inits[0].codecs, "avc1.42c01e");
        assert_eq!(inits[1].codecs, "opus");
        assert_eq!(&inits[0].init[4..8], b"ftyp");
        let v = l.fragment(&frame(0, 1000, true)).unwrap().unwrap();
        assert!(v.keyframe);
        assert_eq!(&v.data[4..8], b"moof");
        let a = l.fragment(&frame(1, 990, false)).unwrap().unwrap();
        assert_eq!(a.kind, MediaKind::Audio);
        assert!(a.keyframe, "every audio frame is a sync sample");
        // The same tracks again (at other places): nothing new to send.
        let again = l
            .set_tracks(&[TrackInfo::new(Codec::Opus), avc()], now())
            .unwrap();
        assert!(again.is_empty());
        assert!(l.fragment(&frame(1, 1033, false)).unwrap().is_ok());
        // A new picture size: a new video init only.
        let bigger = TrackInfo {
            width: Some(640),
            ..avc()
        };
        let changed = l
            .set_tracks(&[TrackInfo::new(Codec::Opus), bigger], now())
            .unwrap();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].kind, MediaKind::Video);
    }

    fn now() -> std::time::Instant {
        std::time::Instant::now()
    }

    #[test]
    fn times_share_one_base_and_durations_follow_the_frames() {
        let mut l = LiveCmaf::new();
        let t = now();
        assert!(
            l.set_tracks(&[avc()], t).unwrap().is_empty(),
            "video alone waits"
        );
        assert_eq!(l.poll_inits(t + WAIT_FOR_SECOND_KIND).unwrap().len(), 1);
        let decode_time = |f: &LiveFragment| {
            let i = f.data.windows(4).position(|w| w == b"tfdt").unwrap();
            // version 1: 8-byte time after version+flags
            u64::from_be_bytes(f.data[i + 8..i + 16].try_into().unwrap())
        };
        let a = l.fragment(&frame(0, 5000, true)).unwrap().unwrap();
        let b = l.fragment(&frame(0, 5040, false)).unwrap().unwrap();
        assert_eq!(decode_time(&a), LEAD_US as u64 * 90_000 / 1_000_000);
        assert_eq!(decode_time(&b) - decode_time(&a), 3600);
        assert!(!b.keyframe);
        // A track not taken: nothing.
        assert!(l.fragment(&frame(3, 5080, false)).is_none());
    }

    #[test]
    fn a_track_without_its_configuration_waits() {
        let mut l = LiveCmaf::new();
        let bare = TrackInfo::new(Codec::H264);
        assert!(
            l.set_tracks(&[bare, TrackInfo::new(Codec::Opus)], now())
                .unwrap()
                .is_empty()
        );
        assert!(l.fragment(&frame(0, 0, true)).is_none());
        let both = l.set_tracks(&[avc(), TrackInfo::new(Codec::Opus)], now());
        assert_eq!(both.unwrap().len(), 2);
    }

    #[test]
    fn one_kind_waits_a_moment_for_the_other_and_then_goes_alone() {
        let mut l = LiveCmaf::new();
        let t = now();
        // RTMP: the video's sequence header, then the audio's a moment later.
        assert!(l.set_tracks(&[avc()], t).unwrap().is_empty());
        assert!(
            l.poll_inits(t + WAIT_FOR_SECOND_KIND / 2)
                .unwrap()
                .is_empty()
        );
        let later = t + WAIT_FOR_SECOND_KIND / 2;
        let both = l.set_tracks(&[avc(), TrackInfo::new(Codec::Opus)], later);
        assert_eq!(both.unwrap().len(), 2, "both inits at once");
        // An audio-only stream goes once the wait is over.
        let mut a = LiveCmaf::new();
        assert!(
            a.set_tracks(&[TrackInfo::new(Codec::Opus)], t)
                .unwrap()
                .is_empty()
        );
        assert!(a.poll_inits(t).unwrap().is_empty());
        assert_eq!(a.poll_inits(t + WAIT_FOR_SECOND_KIND).unwrap().len(), 1);
        // Once started, a track list change is sent at once.
        let mono = TrackInfo {
            channels: Some(1),
            ..TrackInfo::new(Codec::Opus)
        };
        assert_eq!(a.set_tracks(&[mono], t).unwrap().len(), 1);
    }
}
