//! One publish: FLV tags in, the hub's track list and frames out.

use std::sync::Arc;

use hub::{Codec, Frame, MediaKind, TrackInfo};
use tracing::debug;

use crate::flv::{AudioTag, VideoTag};
use crate::{Event, RtmpError};
use media::aac::AudioSpecificConfig;
use media::avc::{self, AvcConfig};

/// Turns the 32-bit millisecond timestamps of RTMP into a continuous timeline.
///
/// Audio and video share one RTMP clock but arrive interleaved, so a step is read as a signed
/// 32-bit difference: a small step back (audio just behind video) stays a step back, and the
/// wrap from 2^32-1 to 0 (after 49.7 days) is a step forward.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    last: Option<u32>,
    ms: i64,
}

impl Clock {
    /// Milliseconds on the continuous timeline.
    pub fn extend(&mut self, ts: u32) -> i64 {
        self.ms = match self.last {
            None => i64::from(ts),
            // Saturating: a client jumping 2^31 ms per message must not overflow (µs below).
            Some(last) => self
                .ms
                .saturating_add(i64::from(ts.wrapping_sub(last) as i32)),
        };
        self.last = Some(ts);
        self.ms
    }
}

/// The state of one publish.
#[derive(Debug, Default)]
pub(crate) struct Ingest {
    /// In order of first appearance, so a track's index never changes during a publish.
    tracks: Vec<TrackInfo>,
    /// NAL length size of the current H.264/H.265 configuration.
    nal_length_size: u8,
    clock: Clock,
}

impl Ingest {
    pub fn video(&mut self, ts: u32, body: &[u8], out: &mut Vec<Event>) -> Result<(), RtmpError> {
        match VideoTag::parse(body)? {
            VideoTag::SequenceStart { codec, config } => {
                let track = self.video_track(codec, config)?;
                self.set_track(track, out);
            }
            VideoTag::Frame {
                codec,
                keyframe,
                composition_time,
                data,
            } => {
                let Some(index) = self.index(MediaKind::Video, codec) else {
                    if needs_config(codec) {
                        debug!(
                            codec = codec.name(),
                            "video frame before its sequence header dropped"
                        );
                        return Ok(());
                    }
                    self.set_track(TrackInfo::new(codec), out);
                    return self.video(ts, body, out);
                };
                if data.is_empty() {
                    return Ok(());
                }
                let data: Arc<[u8]> = match codec {
                    Codec::H264 | Codec::H265 if self.nal_length_size == 4 => {
                        // Check the lengths anyway: readers trust the hub's layout.
                        for nal in avc::nal_units(data, 4) {
                            nal?;
                        }
                        data.into()
                    }
                    Codec::H264 | Codec::H265 => {
                        avc::to_four_byte_lengths(data, self.nal_length_size)?.into()
                    }
                    _ => data.into(),
                };
                let dts = self.clock.extend(ts);
                out.push(Event::Frame(Frame {
                    track: index,
                    dts: dts.saturating_mul(1000),
                    pts: dts
                        .saturating_add(i64::from(composition_time))
                        .saturating_mul(1000),
                    keyframe,
                    data,
                }));
            }
            VideoTag::SequenceEnd { codec } => debug!(codec = codec.name(), "video sequence end"),
            VideoTag::Other => {}
        }
        Ok(())
    }

    pub fn audio(&mut self, ts: u32, body: &[u8], out: &mut Vec<Event>) -> Result<(), RtmpError> {
        match AudioTag::parse(body)? {
            AudioTag::SequenceStart { codec, config } => {
                let mut track = TrackInfo::new(codec);
                match codec {
                    Codec::Aac => {
                        let asc = AudioSpecificConfig::parse(config).map_err(|_| {
                            RtmpError::MalformedTag("the AAC AudioSpecificConfig does not parse")
                        })?;
                        track.sample_rate = Some(asc.sample_rate);
                        track.channels = asc.channels();
                        track.config = config.into();
                    }
                    _ => {
                        // OpusHead: "OpusHead", version, channel count, ...; Opus runs at 48 kHz.
                        track.sample_rate = Some(48000);
                        track.channels = config.get(9).copied().filter(|c| *c > 0);
                    }
                }
                self.set_track(track, out);
            }
            AudioTag::Frame { codec, data } => {
                let Some(index) = self.index(MediaKind::Audio, codec) else {
                    debug!(
                        codec = codec.name(),
                        "audio frame before its sequence header dropped"
                    );
                    return Ok(());
                };
                if data.is_empty() {
                    return Ok(());
                }
                let t = self.clock.extend(ts).saturating_mul(1000);
                out.push(Event::Frame(Frame {
                    track: index,
                    pts: t,
                    dts: t,
                    keyframe: true,
                    data: data.into(),
                }));
            }
            AudioTag::SequenceEnd { codec } => debug!(codec = codec.name(), "audio sequence end"),
            AudioTag::Other => {}
        }
        Ok(())
    }

    fn video_track(&mut self, codec: Codec, config: &[u8]) -> Result<TrackInfo, RtmpError> {
        let mut track = TrackInfo::new(codec);
        match codec {
            Codec::H264 => {
                let avcc = AvcConfig::parse(config)?;
                if let Some((w, h)) = avcc.dimensions() {
                    track.width = Some(w);
                    track.height = Some(h);
                }
                self.nal_length_size = avcc.nal_length_size;
                // Frames are re-prefixed with 4-byte lengths, so the record must say so.
                track.config = with_length_size_4(config, 4);
            }
            Codec::H265 => {
                // hvcC: lengthSizeMinusOne is the low 2 bits of byte 21.
                let byte = config.get(21).ok_or(RtmpError::MalformedTag(
                    "the hvcC record is shorter than its fixed header",
                ))?;
                self.nal_length_size = (byte & 0x03) + 1;
                if self.nal_length_size == 3 {
                    return Err(avc::AvcError::LengthSize(3).into());
                }
                track.config = with_length_size_4(config, 21);
                // The picture size, when the record's SPS says it (HLS's RESOLUTION).
                if let Some((w, h)) = media::hevc::HevcConfig::parse(config)
                    .ok()
                    .and_then(|c| c.dimensions())
                {
                    track.width = Some(w);
                    track.height = Some(h);
                }
            }
            _ => track.config = config.into(),
        }
        Ok(track)
    }

    /// Adds or replaces the track of this kind and reports the list if it changed.
    fn set_track(&mut self, track: TrackInfo, out: &mut Vec<Event>) {
        match self.tracks.iter_mut().find(|t| t.kind() == track.kind()) {
            Some(existing) if *existing == track => return,
            Some(existing) => *existing = track,
            None => self.tracks.push(track),
        }
        out.push(Event::Tracks(self.tracks.clone()));
    }

    fn index(&self, kind: MediaKind, codec: Codec) -> Option<usize> {
        self.tracks
            .iter()
            .position(|t| t.kind() == kind && t.codec == codec)
    }
}

/// H.264/H.265 and AAC frames cannot be decoded without their configuration.
fn needs_config(codec: Codec) -> bool {
    matches!(codec, Codec::H264 | Codec::H265)
}

/// The record with lengthSizeMinusOne (low 2 bits of byte `at`) set to 3.
fn with_length_size_4(config: &[u8], at: usize) -> Arc<[u8]> {
    let mut config = config.to_vec();
    if let Some(b) = config.get_mut(at) {
        *b |= 0x03;
    }
    config.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_continuous_across_wrap_and_small_steps_back() {
        let mut c = Clock::default();
        assert_eq!(c.extend(1000), 1000);
        assert_eq!(c.extend(990), 990);
        assert_eq!(c.extend(1040), 1040);
        let mut c = Clock::default();
        assert_eq!(c.extend(u32::MAX - 9), i64::from(u32::MAX) - 9);
        assert_eq!(c.extend(20), i64::from(u32::MAX) + 21);
        // A client stepping 2^31 - 1 ms per message saturates instead of overflowing.
        let mut c = Clock::default();
        let mut ts = 0u32;
        for _ in 0..10_000_000 {
            ts = ts.wrapping_add(i32::MAX as u32);
            c.extend(ts);
        }
        assert_eq!(c.ms, i64::from(i32::MAX) * 10_000_000);
        c.ms = i64::MAX - 1;
        assert_eq!(c.extend(ts.wrapping_add(i32::MAX as u32)), i64::MAX);
    }

    #[test]
    fn two_byte_nal_lengths_become_four() {
        let mut ingest = Ingest::default();
        let mut out = Vec::new();
        // avcC with lengthSizeMinusOne = 1, no parameter sets.
        ingest
            .video(
                0,
                &[0x17, 0, 0, 0, 0, 1, 0x42, 0xc0, 0x1e, 0xfd, 0xe0, 0x00],
                &mut out,
            )
            .unwrap();
        let Some(Event::Tracks(tracks)) = out.pop() else {
            panic!("tracks")
        };
        assert_eq!(tracks[0].config[4], 0xff);
        ingest
            .video(
                40,
                &[0x17, 1, 0, 0, 0, 0, 2, 0x65, 0x88, 0, 1, 0x06],
                &mut out,
            )
            .unwrap();
        let Some(Event::Frame(frame)) = out.pop() else {
            panic!("frame")
        };
        assert_eq!(&frame.data[..], &[0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 1, 0x06]);
        assert_eq!((frame.dts, frame.pts), (40_000, 40_000));
        // A length that overruns the access unit is refused.
        let err = ingest
            .video(80, &[0x27, 1, 0, 0, 0, 0, 9, 0x41], &mut out)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed H.264 data: a NAL unit claims 9 bytes but only 1 remain in the access unit"
        );
    }

    #[test]
    fn frames_before_configuration_are_dropped_but_vp9_needs_none() {
        let mut ingest = Ingest::default();
        let mut out = Vec::new();
        ingest
            .video(0, &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65], &mut out)
            .unwrap();
        ingest.audio(0, &[0xaf, 1, 0x21], &mut out).unwrap();
        assert!(out.is_empty());
        ingest
            .video(0, &[0x91, b'v', b'p', b'0', b'9', 0x82], &mut out)
            .unwrap();
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[0], Event::Tracks(t) if t[0].codec == Codec::Vp9));
        assert!(matches!(&out[1], Event::Frame(f) if f.track == 0 && f.keyframe));
    }
}
