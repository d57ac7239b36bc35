//! What flows through the hub: tracks described once, then frames (access units).
//!
//! Conventions every publisher and reader relies on:
//! - H.264 and H.265 frames are length-prefixed NAL units (4-byte big-endian lengths, the
//!   MP4/FLV layout); the track's `config` holds the `avcC`/`hvcC` record with SPS/PPS.
//! - AAC frames are raw access units (no ADTS header); `config` holds the
//!   AudioSpecificConfig. Opus frames are raw Opus packets.
//! - VP8, VP9 and AV1 frames are whole frames (AV1 as a temporal unit of OBUs; a VP9 picture
//!   of several spatial layers as one superframe). For VP8 and VP9 the track's `config` holds
//!   the `VPCodecConfigurationRecord` (the body of MP4's `vpcC`) once a keyframe was seen,
//!   and `width`/`height` its picture size.
//! - Times are microseconds on the publisher's clock: only differences mean anything.

use std::sync::Arc;

use serde::Serialize;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// A codec the hub knows how to describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Codec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    H265,
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
    /// AV1.
    Av1,
    /// AAC (any object type the AudioSpecificConfig names).
    Aac,
    /// Opus.
    Opus,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl Codec {
    /// Audio or video.
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::H264 | Codec::H265 | Codec::Vp8 | Codec::Vp9 | Codec::Av1 => MediaKind::Video,
            Codec::Aac | Codec::Opus | Codec::Pcmu | Codec::Pcma => MediaKind::Audio,
        }
    }

    /// The usual name, as in SDP and in the API.
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::H265 => "H265",
            Codec::Vp8 => "VP8",
            Codec::Vp9 => "VP9",
            Codec::Av1 => "AV1",
            Codec::Aac => "AAC",
            Codec::Opus => "opus",
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

/// One track of a stream, as its publisher describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackInfo {
    /// The codec.
    pub codec: Codec,
    /// Codec configuration: `avcC`/`hvcC` for H.264/H.265, `VPCodecConfigurationRecord` for
    /// VP8/VP9, AudioSpecificConfig for AAC; empty when the codec needs none or it is not
    /// known yet.
    #[serde(skip)]
    pub config: Arc<[u8]>,
    /// Picture size, when known.
    pub width: Option<u32>,
    /// Picture height, when known.
    pub height: Option<u32>,
    /// Audio sample rate, when known.
    pub sample_rate: Option<u32>,
    /// Audio channels, when known.
    pub channels: Option<u8>,
    /// A lower simulcast layer (0 = the lowest) of the stream's main video, carried as a
    /// track of its own for readers that offer renditions (HLS variants). The main video
    /// track, the highest layer being sent, comes first in the list and is never one of these:
    /// a reader that wants one picture takes the first video track and skips these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<u8>,
}

impl TrackInfo {
    /// A track of `codec` with nothing else known yet.
    pub fn new(codec: Codec) -> TrackInfo {
        TrackInfo {
            codec,
            config: Arc::from(&[][..]),
            width: None,
            height: None,
            sample_rate: None,
            channels: None,
            layer: None,
        }
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }
}

/// One access unit of one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Index of the track in the stream's track list.
    pub track: usize,
    /// Presentation time, microseconds.
    pub pts: i64,
    /// Decoding time, microseconds (equal to `pts` without B-frames).
    pub dts: i64,
    /// A video frame a decoder can start at (IDR, key frame). Audio frames are all `true`.
    pub keyframe: bool,
    /// The payload, shared by every reader.
    pub data: Arc<[u8]>,
}
