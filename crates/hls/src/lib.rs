//! LL-HLS and HLS for hub streams, sans-IO: a CMAF segmenter fed with hub frames, and the
//! playlists that describe what it made.
//!
//! - [`Segmenter`] turns frames into fMP4 parts (~200 ms, one `moof`+`mdat` each) grouped
//!   into segments that start at keyframes (~2 s), in a sliding window.
//! - [`playlist`] writes the multivariant playlist and the LL-HLS media playlist
//!   (EXT-X-PART, PRELOAD-HINT, SERVER-CONTROL, SKIP, PROGRAM-DATE-TIME).
//! - [`Segmenter::readiness`] answers blocking playlist reloads (`_HLS_msn`/`_HLS_part`); the
//!   IO layer holds the request until it says Ready.
//!
//! Supported: H.264, H.265 (`hvc1`), VP9 or AV1 video with AAC or Opus audio (either alone
//! too). VP8 goes into recordings (`vp08`, which FFmpeg and browsers' MP4 readers play) but HLS
//! players do not take it, so HLS refuses it with [`HlsError::Unsupported`].

mod fmp4;
pub mod live;
pub mod playlist;
mod query;
mod segmenter;

pub use fmp4::{Sample, TrackSpec, fragment, init_segment};
pub use query::{Query, QueryError};
pub use segmenter::{Part, Readiness, Segment, Segmenter, SegmenterConfig};

/// Why a stream cannot be (or stopped being) packaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HlsError {
    /// A codec fMP4 HLS cannot carry, or onair does not package yet.
    #[error("HLS unavailable: {0}")]
    Unsupported(&'static str),
    /// No video or audio track HLS can carry.
    #[error("HLS unavailable: no H.264, VP9, AV1, AAC or Opus track")]
    NoTracks,
    /// A codec configuration (avcC, AudioSpecificConfig) that does not parse.
    #[error("bad codec configuration: {0}")]
    BadConfig(String),
    /// A box failed to encode (a value out of its field's range).
    #[error("fMP4 encoding: {0}")]
    Encode(String),
}
