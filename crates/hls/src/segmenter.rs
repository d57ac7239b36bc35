//! Cuts a hub stream into CMAF parts and segments.
//!
//! Video drives the cuts (audio alone when there is no video): a part closes when a video
//! frame arrives at least a part duration after the part began; a segment closes at the first
//! keyframe at least a target duration after the segment began, so every segment starts with a
//! keyframe and its first part is INDEPENDENT. A sample's duration is only known when the next
//! sample of its track arrives, so each track holds one sample back; audio held back at a cut
//! takes the duration of the sample before it (AAC and Opus frames are of constant length).
//! Both tracks share one zero: the first frame's decode time.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hub::{Codec, Frame, MediaKind, TrackInfo};

use crate::HlsError;
use crate::fmp4::{self, Sample, TrackSpec};

/// How a stream is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// Segments are cut at the first keyframe at least this long after the segment began.
    pub target_duration: Duration,
    /// Parts close at the first frame at least this long after the part began.
    pub part_duration: Duration,
    /// Complete segments kept (the playlist's window).
    pub window_segments: usize,
    /// Package only this kind of track (a recording of one track per file); `None`: the first
    /// video and the first audio track.
    pub only: Option<MediaKind>,
    /// Take VP8 video (as `vp08`, which FFmpeg and browsers' MP4 readers play). Recordings do;
    /// HLS does not, as HLS players do not take VP8.
    pub vp8: bool,
    /// Keep every frame (recordings): a track that changes its configuration before the first
    /// complete segment ends the media built so far as a short segment of the old init,
    /// instead of dropping it. HLS starts over, as nothing has been served yet; so does this
    /// when the kinds of track change (a source's audio described before its video), which
    /// is a source still coming up, not a new picture size.
    pub keep_every_frame: bool,
    /// The video track to package: `None`, the stream's main video (its first video track);
    /// `Some(n)`, the track carrying simulcast layer n alone (an HLS variant).
    pub layer: Option<u8>,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            target_duration: Duration::from_secs(2),
            part_duration: Duration::from_millis(200),
            window_segments: 15,
            only: None,
            vp8: false,
            keep_every_frame: false,
            layer: None,
        }
    }
}

/// A part: one CMAF fragment.
#[derive(Debug, Clone)]
pub struct Part {
    /// `moof` + `mdat`.
    pub data: Bytes,
    /// Seconds of media.
    pub duration: f64,
    /// Starts with a keyframe (or holds audio only).
    pub independent: bool,
}

/// A segment: the parts since a keyframe.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Which init segment its fragments need (a track change starts a new one).
    pub init: u32,
    /// A track change happened right before it.
    pub discontinuity: bool,
    /// Its parts so far.
    pub parts: Vec<Part>,
    /// All parts, once complete.
    pub data: Option<Bytes>,
    /// Wall-clock time of its first sample.
    pub program_date_time: SystemTime,
}

impl Segment {
    /// Seconds of media so far.
    pub fn duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
    }
}

struct Track {
    /// Index in the hub's track list.
    hub_index: usize,
    spec: TrackSpec,
    held: Option<Sample>,
    /// Samples of the part being built.
    samples: Vec<Sample>,
    last_duration: u32,
}

/// Part durations of silence from the driver after which another track cuts parts itself.
const STALL_PARTS: i64 = 5;

/// The answer to a blocking playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The playlist has what was asked for.
    Ready,
    /// Not yet: hold the request.
    Wait,
    /// More than two segments ahead of the last one: 400 (RFC 8216bis §6.2.5.2).
    TooFar,
}

/// The segmenter of one stream.
pub struct Segmenter {
    config: SegmenterConfig,
    tracks: Vec<Track>,
    /// Index into `tracks` of the track that drives the cuts.
    driver: usize,
    init: Option<(u32, Bytes)>,
    /// Earlier init segments that segments in the window still name.
    old_inits: Vec<(u32, Bytes)>,
    /// Decode time (µs) that is zero on every track.
    base_us: Option<i64>,
    /// Wall clock at `base_us`.
    wall_base: Option<SystemTime>,
    segments: VecDeque<Segment>,
    next_msn: u64,
    fragment_seq: u32,
    part_start_us: i64,
    segment_start_us: i64,
    part_starts_with_key: bool,
    /// Decode time (µs) of the driver's latest frame.
    last_driver_us: i64,
    /// When [`Segmenter::keyframe_request`] last said yes.
    last_keyframe_request: Option<std::time::Instant>,
    /// A video track is described only by its first keyframe (WebRTC's parameter sets or VP9
    /// header), which has not come yet.
    awaiting_config: bool,
    discontinuity: bool,
    /// Discontinuities that left the window (EXT-X-DISCONTINUITY-SEQUENCE).
    discontinuities_gone: u64,
    peak_bps: u64,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("tracks", &self.tracks.len())
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl Segmenter {
    /// A segmenter that waits for tracks.
    pub fn new(config: SegmenterConfig) -> Segmenter {
        Segmenter {
            config,
            tracks: Vec::new(),
            driver: 0,
            init: None,
            old_inits: Vec::new(),
            base_us: None,
            wall_base: None,
            segments: VecDeque::new(),
            next_msn: 0,
            fragment_seq: 1,
            part_start_us: 0,
            segment_start_us: 0,
            part_starts_with_key: false,
            last_driver_us: 0,
            last_keyframe_request: None,
            awaiting_config: false,
            discontinuity: false,
            discontinuities_gone: 0,
            peak_bps: 0,
        }
    }

    /// The publisher described its tracks (again). The first H.264 video track and the first
    /// AAC or Opus audio track are taken. Err when nothing can go into fMP4 HLS (VP8 video
    /// and no usable audio, say); a video track of another codec is an error too, rather than
    /// silently serving audio only.
    pub fn set_tracks(&mut self, infos: &[TrackInfo]) -> Result<(), HlsError> {
        if infos.is_empty() {
            return Ok(()); // an RTMP publisher before its metadata: wait
        }
        let wanted = |kind: MediaKind| self.config.only.is_none_or(|k| k == kind);
        let video = infos
            .iter()
            .position(|t| t.kind() == MediaKind::Video && t.layer == self.config.layer)
            .filter(|_| wanted(MediaKind::Video));
        if self.config.layer.is_some() && video.is_none() {
            // A variant of one simulcast layer is that layer's video or nothing.
            return Err(HlsError::NoTracks);
        }
        if let Some(v) = video {
            let ok = match infos[v].codec {
                Codec::H264 | Codec::H265 | Codec::Vp9 | Codec::Av1 => true,
                Codec::Vp8 => self.config.vp8,
                _ => false,
            };
            if !ok {
                return Err(HlsError::Unsupported(infos[v].codec.name()));
            }
        }
        let audio = infos
            .iter()
            .position(|t| matches!(t.codec, Codec::Aac | Codec::Opus))
            .filter(|_| wanted(MediaKind::Audio));
        let chosen: Vec<usize> = video.into_iter().chain(audio).collect();
        if chosen.is_empty() {
            return Err(HlsError::NoTracks);
        }
        // A track whose configuration has not arrived yet (RTMP sends it in its first tag):
        // wait for the next description.
        if chosen.iter().any(|&i| {
            matches!(
                infos[i].codec,
                Codec::H264 | Codec::H265 | Codec::Aac | Codec::Vp8 | Codec::Vp9 | Codec::Av1
            ) && infos[i].config.is_empty()
        }) {
            // Until it has come, package nothing new: a stream that began with its audio
            // alone would otherwise start without video and need a new init (and players a
            // new decoder set-up, which MSE cannot do for an added track) a moment later.
            // Segments already out stay as they are.
            // A recording keeps what it has (`keep_every_frame`): it is closed as it is.
            if self.config.keep_every_frame {
                self.finish()?;
            }
            if !self.has_segment() {
                self.start_over();
                self.init = None;
                self.tracks.clear();
            }
            self.awaiting_config = video.is_some_and(|v| infos[v].config.is_empty());
            return Ok(());
        }
        self.awaiting_config = false;
        let same = chosen.len() == self.tracks.len()
            && chosen
                .iter()
                .zip(&self.tracks)
                .all(|(&i, t)| t.spec.info == infos[i]);
        if same {
            // The same tracks, perhaps at new places in the list (another track came or went):
            // no new init segment, just follow them.
            for (&i, t) in chosen.iter().zip(&mut self.tracks) {
                t.hub_index = i;
            }
            return Ok(());
        }
        let mut tracks = Vec::new();
        for (n, &i) in chosen.iter().enumerate() {
            tracks.push(Track {
                hub_index: i,
                spec: TrackSpec::new(n as u32 + 1, infos[i].clone())?,
                held: None,
                samples: Vec::new(),
                last_duration: 0,
            });
        }
        let specs: Vec<TrackSpec> = tracks.iter().map(|t| t.spec.clone()).collect();
        let init = fmp4::init_segment(&specs)?;
        // Whatever was being built belongs to the old tracks: close it (with the frames still
        // held for the next part), and mark the discontinuity. Before the first complete
        // segment nothing has been served (playlists wait for one), so the new description
        // simply replaces the old: RTMP describes video, then audio; a WebRTC source's audio
        // may start before its video is described.
        let same_kinds = self.tracks.len() == tracks.len()
            && self
                .tracks
                .iter()
                .zip(&tracks)
                .all(|(a, b)| a.spec.info.kind() == b.spec.info.kind());
        if self.has_segment() || (self.config.keep_every_frame && same_kinds) {
            self.finish()?;
        }
        if self.has_segment() {
            self.discontinuity = true;
        } else {
            self.start_over();
        }
        let id = self.init.as_ref().map_or(0, |(id, _)| id + 1);
        if let Some(old) = self.init.replace((id, init.into())) {
            self.old_inits.push(old);
        }
        self.prune_inits();
        self.tracks = tracks;
        self.driver = 0; // video first when there is video
        self.base_us = None;
        Ok(())
    }

    /// The current init segment and its number.
    pub fn init(&self) -> Option<(u32, &Bytes)> {
        self.init.as_ref().map(|(id, b)| (*id, b))
    }

    /// An init segment by number, while a segment in the window needs it.
    pub fn init_by_id(&self, id: u32) -> Option<&Bytes> {
        self.init
            .iter()
            .chain(&self.old_inits)
            .find(|(i, _)| *i == id)
            .map(|(_, b)| b)
    }

    /// The tracks in the init segment.
    pub fn tracks(&self) -> impl Iterator<Item = &TrackSpec> {
        self.tracks.iter().map(|t| &t.spec)
    }

    /// Segments in the window, oldest first; the last may be incomplete.
    pub fn segments(&self) -> &VecDeque<Segment> {
        &self.segments
    }

    /// The segment has reached its target length and waits for a keyframe to end it. A
    /// source that makes keyframes only when asked (WebRTC) should be asked now.
    pub fn keyframe_due(&self) -> bool {
        // A video track waits for its first keyframe to describe it.
        if self.awaiting_config {
            return true;
        }
        let video = self
            .tracks
            .get(self.driver)
            .is_some_and(|t| t.spec.info.kind() == MediaKind::Video);
        match self.base_us {
            // Nothing starts before the video's first keyframe, and a WebRTC source sends one
            // only when asked: a reader that joined mid-GOP, or tracks that changed, wait here.
            None => video,
            Some(_) => {
                video
                    && self.last_driver_us - self.segment_start_us
                        >= self.config.target_duration.as_micros() as i64
            }
        }
    }

    /// No video packaged yet: waiting for a keyframe (or the configuration) to start.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.awaiting_config || self.base_us.is_none()
    }

    /// Whether to ask the source for a keyframe now: [`Segmenter::keyframe_due`], at most
    /// once a second (a lost request is repeated; the SFU throttles PLIs further).
    pub fn keyframe_request(&mut self, now: std::time::Instant) -> bool {
        let ask = self.keyframe_due()
            && self
                .last_keyframe_request
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if ask {
            self.last_keyframe_request = Some(now);
        }
        ask
    }

    /// A complete segment exists. Players start on it: hls.js reports a playlist of parts
    /// only as empty (`levelEmptyError`) and retries.
    pub fn has_segment(&self) -> bool {
        self.segments.iter().any(|s| s.data.is_some())
    }

    /// The configuration.
    pub fn config(&self) -> &SegmenterConfig {
        &self.config
    }

    /// EXT-X-DISCONTINUITY-SEQUENCE: discontinuities before the window.
    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuities_gone
    }

    /// Where the next part will be: (segment, part index).
    pub fn next_part(&self) -> Option<(u64, usize)> {
        let last = self.segments.back()?;
        Some(if last.data.is_some() {
            (last.msn + 1, 0)
        } else {
            (last.msn, last.parts.len())
        })
    }

    /// Whether a blocking playlist request for segment `msn` (and part `part`) can be
    /// answered now (RFC 8216bis §6.2.5.2).
    pub fn readiness(&self, msn: u64, part: Option<u64>) -> Readiness {
        let Some(last) = self.segments.back() else {
            return if msn <= 2 {
                Readiness::Wait
            } else {
                Readiness::TooFar
            };
        };
        if msn > last.msn + 2 {
            return Readiness::TooFar;
        }
        let ready = match part {
            // "contains Media Segment N or later": a complete segment.
            None => self
                .segments
                .iter()
                .any(|s| s.msn >= msn && s.data.is_some()),
            // Part M of segment N, or (past N's last part) the next segment's first.
            Some(m) => self.segments.iter().any(|s| {
                (s.msn == msn && s.parts.len() as u64 > m) || (s.msn > msn && !s.parts.is_empty())
            }),
        };
        if ready || self.segments.front().is_some_and(|f| msn < f.msn) {
            Readiness::Ready
        } else {
            Readiness::Wait
        }
    }

    /// The highest bitrate of a complete segment so far (for BANDWIDTH).
    pub fn peak_bps(&self) -> u64 {
        self.peak_bps
    }

    /// A frame from the hub; `now` is the wall clock, for PROGRAM-DATE-TIME.
    pub fn push(&mut self, frame: &Frame, now: SystemTime) -> Result<(), HlsError> {
        let Some(ti) = self.tracks.iter().position(|t| t.hub_index == frame.track) else {
            return Ok(()); // a track HLS does not carry
        };
        let is_driver = ti == self.driver;
        let base = match self.base_us {
            Some(b) => b,
            None => {
                // Start at the driver's first keyframe; everything before it is dropped.
                if !(is_driver && frame.keyframe) {
                    return Ok(());
                }
                self.base_us = Some(frame.dts);
                self.wall_base = Some(now);
                self.part_start_us = frame.dts;
                self.segment_start_us = frame.dts;
                self.part_starts_with_key = true;
                self.open_segment(frame.dts);
                frame.dts
            }
        };
        if frame.dts < base {
            return Ok(()); // from before the start (audio ahead of the first keyframe)
        }
        if is_driver {
            self.last_driver_us = frame.dts;
            let since_segment = frame.dts - self.segment_start_us;
            let since_part = frame.dts - self.part_start_us;
            let audio_only = self.tracks[self.driver].spec.info.kind() == MediaKind::Audio;
            // Half a frame of slack: 60 frames at 30 fps are 1.99998 s in microseconds (and
            // 1999 or 2000 ms from RTMP), and a 2 s GOP must still give 2 s segments.
            let slack = self.interval_us() / 2;
            let target = self.config.target_duration.as_micros() as i64;
            // A source that never sends another keyframe must not grow one segment without
            // bound: at ten targets the segment is cut anyway (the next one cannot be joined
            // at its start, but memory stays bounded).
            let overdue = since_segment >= 10 * target;
            if ((frame.keyframe || audio_only) && since_segment + slack >= target) || overdue {
                self.cut_part(frame.dts)?;
                self.close_segment();
                self.segment_start_us = frame.dts;
                self.open_segment(frame.dts);
                self.part_starts_with_key = frame.keyframe || audio_only;
            } else if self.part_full(since_part) {
                self.cut_part(frame.dts)?;
                self.part_starts_with_key = frame.keyframe || audio_only;
            }
        } else if frame.dts - self.part_start_us
            >= STALL_PARTS * self.config.part_duration.as_micros() as i64
        {
            // The driver went quiet while this track goes on (a publisher whose video stopped
            // and whose audio did not): cut by this track's clock, or its samples would pile up
            // in one part without bound.
            self.cut_part(frame.dts)?;
            let target = self.config.target_duration.as_micros() as i64;
            if frame.dts - self.segment_start_us >= 10 * target {
                self.close_segment();
                self.segment_start_us = frame.dts;
                self.open_segment(frame.dts);
            }
            self.part_starts_with_key = false;
        }
        let track = &mut self.tracks[ti];
        let scale = i128::from(track.spec.timescale);
        let to_ts = |us: i64| (i128::from(us - base) * scale / 1_000_000) as u64;
        let dts = to_ts(frame.dts);
        let pts = to_ts(frame.pts.max(base));
        let sample = Sample {
            dts,
            duration: 0,
            cts: (pts as i64 - dts as i64).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            keyframe: frame.keyframe || track.spec.info.kind() == MediaKind::Audio,
            data: Bytes::from_owner(frame.data.clone()),
        };
        if let Some(mut held) = track.held.replace(sample) {
            held.duration = u32::try_from(dts.saturating_sub(held.dts))
                .unwrap_or(u32::MAX)
                .max(1);
            track.last_duration = held.duration;
            track.samples.push(held);
        }
        Ok(())
    }

    /// Closes the part being built at `at_us`: every held sample that starts before the cut
    /// goes in (the driver's has its duration now; audio takes its previous one).
    fn cut_part(&mut self, at_us: i64) -> Result<(), HlsError> {
        let Some(base) = self.base_us else {
            return Ok(());
        };
        for (i, t) in self.tracks.iter_mut().enumerate() {
            let at = (i128::from(at_us - base) * i128::from(t.spec.timescale) / 1_000_000) as u64;
            if i == self.driver {
                if let Some(mut held) = t.held.take() {
                    held.duration = u32::try_from(at.saturating_sub(held.dts))
                        .unwrap_or(u32::MAX)
                        .max(1);
                    t.last_duration = held.duration;
                    t.samples.push(held);
                }
            } else if t.held.as_ref().is_some_and(|h| h.dts < at)
                && let Some(mut held) = t.held.take()
            {
                held.duration = t.last_duration.max(1);
                t.samples.push(held);
            }
        }
        let samples: Vec<(u32, Vec<Sample>)> = self
            .tracks
            .iter_mut()
            .map(|t| (t.spec.id, std::mem::take(&mut t.samples)))
            .collect();
        // The part's duration is the driver's samples', or (the driver stalled) the longest
        // other track's.
        let duration = samples
            .iter()
            .zip(&self.tracks)
            .map(|((_, s), t)| {
                s.iter().map(|x| f64::from(x.duration)).sum::<f64>() / f64::from(t.spec.timescale)
            })
            .enumerate()
            .fold(None, |best: Option<(bool, f64)>, (i, d)| {
                let driver = i == self.driver && d > 0.0;
                match best {
                    Some((true, _)) => best,
                    _ if driver => Some((true, d)),
                    Some((false, b)) => Some((false, b.max(d))),
                    None => Some((false, d)),
                }
            })
            .map_or(0.0, |(_, d)| d);
        if duration <= 0.0 {
            return Ok(());
        }
        let refs: Vec<(u32, &[Sample])> = samples.iter().map(|(id, s)| (*id, &s[..])).collect();
        let data = fmp4::fragment(self.fragment_seq, &refs)?;
        self.fragment_seq = self.fragment_seq.wrapping_add(1);
        if let Some(seg) = self.segments.back_mut() {
            seg.parts.push(Part {
                data: data.into(),
                duration,
                independent: self.part_starts_with_key,
            });
        }
        self.part_start_us = at_us;
        Ok(())
    }

    /// A part must not outlast PART-TARGET: it closes at the frame after which the next would
    /// take it past the target (judged by the last frame interval). 2 ms of slack absorbs the
    /// millisecond rounding of RTMP timestamps (33/34 ms frames), so a part may be up to 2 ms
    /// over the target.
    fn part_full(&self, since_part_us: i64) -> bool {
        since_part_us + self.interval_us() > self.config.part_duration.as_micros() as i64 + 2_000
    }

    /// The driver's last frame interval, microseconds.
    fn interval_us(&self) -> i64 {
        let t = &self.tracks[self.driver];
        i64::from(t.last_duration) * 1_000_000 / i64::from(t.spec.timescale.max(1))
    }

    fn open_segment(&mut self, start_us: i64) {
        let pdt = match (self.wall_base, self.base_us) {
            (Some(wall), Some(base)) => wall + Duration::from_micros((start_us - base) as u64),
            _ => SystemTime::now(),
        };
        self.segments.push_back(Segment {
            msn: self.next_msn,
            init: self.init.as_ref().map_or(0, |(id, _)| *id),
            discontinuity: std::mem::take(&mut self.discontinuity),
            parts: Vec::new(),
            data: None,
            program_date_time: pdt,
        });
        self.next_msn += 1;
    }

    /// Drops the segment being built (before any complete one): its media is not served.
    /// Media sequence numbers go on increasing, so a reader that took its parts (the
    /// recorder) never mistakes new parts for ones it has.
    fn start_over(&mut self) {
        self.segments.clear();
        self.discontinuity = false;
        self.base_us = None;
    }

    fn close_segment(&mut self) {
        let Some(seg) = self.segments.back_mut() else {
            return;
        };
        if seg.data.is_some() {
            return;
        }
        if seg.parts.is_empty() {
            // Nothing in it: it never existed.
            self.segments.pop_back();
            self.next_msn -= 1;
            return;
        }
        let mut all = Vec::with_capacity(seg.parts.iter().map(|p| p.data.len()).sum());
        for p in &seg.parts {
            all.extend_from_slice(&p.data);
        }
        let d = seg.duration();
        if d > 0.0 {
            self.peak_bps = self.peak_bps.max((all.len() as f64 * 8.0 / d) as u64);
        }
        // The parts become views of the segment's bytes: one copy in memory, not two.
        let all = Bytes::from(all);
        let mut at = 0;
        for p in &mut seg.parts {
            let len = p.data.len();
            p.data = all.slice(at..at + len);
            at += len;
        }
        seg.data = Some(all);
        let complete = self.segments.iter().filter(|s| s.data.is_some()).count();
        if complete > self.config.window_segments
            && let Some(gone) = self.segments.pop_front()
        {
            if gone.discontinuity {
                self.discontinuities_gone += 1;
            }
            self.prune_inits();
        }
    }

    /// Drops earlier init segments no segment in the window names any more.
    fn prune_inits(&mut self) {
        let segments = &self.segments;
        self.old_inits
            .retain(|(id, _)| segments.iter().any(|s| s.init == *id));
    }

    /// The stream ended: the last part and segment are closed.
    pub fn finish(&mut self) -> Result<(), HlsError> {
        if let Some(last) = self.tracks.get(self.driver).and_then(|t| t.held.as_ref()) {
            let scale = i128::from(self.tracks[self.driver].spec.timescale);
            let base = self.base_us.unwrap_or(0);
            let end_us = base
                + (i128::from(last.dts) * 1_000_000 / scale) as i64
                + (i128::from(self.tracks[self.driver].last_duration.max(1)) * 1_000_000 / scale)
                    as i64;
            self.cut_part(end_us)?;
        }
        self.close_segment();
        Ok(())
    }
}
