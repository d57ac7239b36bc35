//! Codec configuration records, parsed and written in one place for every protocol: the RTMP
//! ingest reads them from FLV sequence headers, the transcoder checks them before decoding, the
//! WebRTC paths turn H.264 between its MP4 (length-prefixed) and Annex B forms, and the SFU
//! writes an `avcC` for what a browser publishes. Pure functions over bytes; no IO.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aac;
pub mod av1;
pub mod avc;
mod bits;
pub mod hevc;
pub mod vp;
