//! AAC to Opus audio transcoding, so that a WebRTC (WHEP) viewer of an RTMP stream hears it;
//! and Opus to AAC ([`OpusToAac`]), so that a native HLS player hears a WebRTC source.
//!
//! RTMP publishers (FFmpeg, OBS) send AAC; browsers receiving WebRTC only take Opus. This crate
//! decodes AAC-LC with symphonia (pure Rust), resamples to 48 kHz with rubato when the source
//! runs at another rate (44.1 kHz is common from OBS), and encodes 20 ms Opus frames with
//! opus-pure (pure Rust; why this one: docs/audio.md).
//!
//! It is sans-IO like the rest of onair: no threads, no clock. The caller hands in access units
//! with their presentation time and gets Opus packets back with theirs.
//!
//! ```no_run
//! use transcode::{AacToOpus, OpusConfig};
//!
//! # fn main() -> Result<(), transcode::TranscodeError> {
//! // From the FLV AAC sequence header (AACPacketType 0): AAC-LC, 44.1 kHz, stereo.
//! let asc = [0x12, 0x10];
//! let mut transcoder = AacToOpus::new(&asc, OpusConfig::default())?;
//!
//! // For each FLV AAC raw frame (AACPacketType 1), with its timestamp in microseconds:
//! # let (aac_frame, pts_us): (&[u8], i64) = (&[], 0);
//! match transcoder.push(aac_frame, pts_us) {
//!     Ok(packets) => {
//!         for packet in packets {
//!             // Hand `packet.data` to the WebRTC track, stamped `packet.pts_us`.
//!             let _ = (packet.data, packet.pts_us, packet.duration_us);
//!         }
//!     }
//!     // A corrupt frame costs that frame (replaced by silence); the next one decodes.
//!     Err(e) => eprintln!("audio: {e}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! One stereo stream needs about 1 % of one core: measured 5.2 ms of CPU per second of audio
//! at 48 kHz and 8.8 ms at 44.1 kHz, where resampling adds the difference; Opus to AAC 3.2 ms
//! (`cargo run -p transcode --release --example cost`; libopus took 6.2, 9.9 and 3.3 ms in the
//! same run: docs/audio.md).

mod asc;
mod opus_to_aac;
mod resample;

pub use opus_to_aac::{AacConfig, AacFrame, OpusToAac};

use opus_pure::{Application, OpusEncoder as Encoder};
use symphonia_codec_aac::AacDecoder;
use symphonia_core::audio::Channels as SymphoniaChannels;
use symphonia_core::audio::Position;
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration, Timestamp};

use asc::AscInfo;
use resample::{OUT_RATE, To48k};

/// Samples per channel in one 20 ms Opus frame at 48 kHz.
const OPUS_FRAME: usize = 960;
const OPUS_FRAME_US: i64 = 20_000;
/// An input timestamp further than this from where the samples so far put it means the timeline
/// broke (publisher restart, dropped audio, a wrapped clock): start counting again from it.
/// Smaller differences are FLV's millisecond rounding and jitter, and are ignored so that the
/// output stays sample-exact.
const REANCHOR_US: i64 = 100_000;
/// The recommended maximum Opus packet size (RFC 6716's 1275 bytes a frame, with room).
const MAX_OPUS_PACKET: usize = 4000;

/// Why a transcoder could not be made, or a frame could not be transcoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranscodeError {
    /// The AudioSpecificConfig ended before its required fields.
    #[error("AAC AudioSpecificConfig too short ({len} bytes)")]
    AscTooShort { len: usize },
    /// The ASC names a reserved sampling-frequency index.
    #[error("AAC AudioSpecificConfig has reserved sampling-frequency index {index}")]
    BadSampleRateIndex { index: u8 },
    /// Only AAC-LC (object type 2) decodes; HE-AAC (5) and HE-AACv2 (29) are the usual others.
    #[error("AAC object type {object_type} is not supported: only AAC-LC (2) is")]
    UnsupportedObjectType { object_type: u8 },
    /// An explicit sampling frequency outside 7.35-96 kHz.
    #[error("AAC sample rate {rate} Hz is not supported")]
    UnsupportedSampleRate { rate: u32 },
    /// Only mono (1) and stereo (2) channel configurations are supported.
    #[error(
        "AAC channel configuration {channel_config} is not supported: only mono and stereo are"
    )]
    UnsupportedChannels { channel_config: u8 },
    /// 960-sample AAC frames.
    #[error("AAC frame length {frame_len} is not supported: only 1024 is")]
    UnsupportedFrameLength { frame_len: usize },
    /// The Opus bitrate is outside what Opus encoders accept (500 to 512000 bit/s).
    #[error("Opus bitrate {bitrate} bit/s is outside 500..=512000")]
    BadBitrate { bitrate: u32 },
    /// The AAC decoder refused the configuration.
    #[error("AAC decoder refused the stream: {reason}")]
    DecoderInit { reason: String },
    /// An access unit did not decode. It was replaced by silence and the transcoder goes on.
    #[error("corrupt AAC access unit ({len} bytes): {reason}")]
    Decode { len: usize, reason: String },
    /// The resampler failed (a bug rather than bad input).
    #[error("resampler: {reason}")]
    Resampler { reason: String },
    /// The Opus encoder refused to start or to encode a frame.
    #[error("Opus encoder: {reason}")]
    Encoder { reason: &'static str },
    /// Opus to AAC takes mono or stereo.
    #[error("Opus with {channels} channels is not supported: only mono and stereo are")]
    UnsupportedOpusChannels { channels: u8 },
    /// The Opus decoder refused to start.
    #[error("Opus decoder: {reason}")]
    OpusDecoderInit { reason: &'static str },
    /// A packet did not decode. The decoder's concealment took its place.
    #[error("corrupt Opus packet ({len} bytes): {reason}")]
    OpusDecode { len: usize, reason: &'static str },
    /// The AAC encoder refused its settings or a frame (it starts again).
    #[error("AAC encoder: {reason}")]
    AacEncoder { reason: String },
}

/// Opus encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusConfig {
    /// Target bitrate in bit/s (500 to 512000).
    pub bitrate: u32,
}

impl Default for OpusConfig {
    fn default() -> Self {
        // Transparent for stereo music at 20 ms frames; speech would do with half.
        OpusConfig { bitrate: 64_000 }
    }
}

/// One 20 ms Opus packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    pub data: Vec<u8>,
    /// Presentation time of the packet's first sample, in microseconds, on the input's timeline.
    pub pts_us: i64,
    pub duration_us: i64,
}

/// AAC access units in, Opus packets out. See the [crate] docs.
pub struct AacToOpus {
    info: AscInfo,
    decoder: AacDecoder,
    /// Kept to rebuild the decoder after it panicked.
    params: AudioCodecParameters,
    /// `None` when the source is already at 48 kHz.
    resampler: Option<To48k>,
    encoder: Encoder,
    /// Decoded (and resampled) interleaved 48 kHz samples not yet encoded.
    pcm: Vec<f32>,
    /// Scratch for one decoded access unit.
    decoded: Vec<f32>,
    opus_buf: Vec<u8>,
    clock: Option<Clock>,
}

/// Where the output timeline stands: both counts start at the anchor.
#[derive(Debug, Clone, Copy)]
struct Clock {
    anchor_us: i64,
    /// Source frames pushed since the anchor, at the source rate.
    in_frames: i64,
    /// 48 kHz frames encoded since the anchor.
    out_frames: i64,
}

impl AacToOpus {
    /// `asc`: the AAC AudioSpecificConfig (from the FLV AAC sequence header / MP4 esds).
    pub fn new(asc: &[u8], config: OpusConfig) -> Result<AacToOpus, TranscodeError> {
        let info = AscInfo::parse(asc)?;
        if !(500..=512_000).contains(&config.bitrate) {
            return Err(TranscodeError::BadBitrate {
                bitrate: config.bitrate,
            });
        }

        let layout = if info.channels == 1 {
            Position::FRONT_CENTER
        } else {
            Position::FRONT_LEFT | Position::FRONT_RIGHT
        };
        let mut params = AudioCodecParameters::new();
        params
            .for_codec(CODEC_ID_AAC)
            .with_sample_rate(info.sample_rate)
            .with_channels(SymphoniaChannels::Positioned(layout))
            .with_extra_data(asc.into());
        let decoder =
            AacDecoder::try_new(&params, &AudioDecoderOptions::default()).map_err(|e| {
                TranscodeError::DecoderInit {
                    reason: e.to_string(),
                }
            })?;

        let resampler = if info.sample_rate == OUT_RATE {
            None
        } else {
            Some(To48k::new(info.sample_rate, info.channels, info.frame_len)?)
        };

        let mut encoder =
            Encoder::new(48_000, info.channels, Application::Audio).map_err(opus_error)?;
        encoder.bitrate_bps = config.bitrate as i32;
        Ok(AacToOpus {
            info,
            decoder,
            params,
            resampler,
            encoder,
            pcm: Vec::with_capacity(4 * OPUS_FRAME * info.channels),
            decoded: Vec::with_capacity(info.frame_len * info.channels),
            opus_buf: vec![0; MAX_OPUS_PACKET],
            clock: None,
        })
    }

    /// One raw AAC access unit (no ADTS header) and its presentation time in microseconds.
    ///
    /// Returns zero or more 20 ms Opus packets (48 kHz, the source's channel count). Their
    /// timestamps follow from the first `pts_us` plus the samples produced, and start again from
    /// `pts_us` when it jumps by more than 100 ms from where the samples put it.
    ///
    /// A corrupt access unit gives [`TranscodeError::Decode`]; it is replaced by silence so that
    /// the timeline keeps its length, and the next good one transcodes as usual.
    pub fn push(&mut self, aac: &[u8], pts_us: i64) -> Result<Vec<OpusPacket>, TranscodeError> {
        let clock = self.clock_for(pts_us);
        let ch = self.info.channels;

        let decode_result = self.decode(aac);
        if decode_result.is_err() {
            self.decoded.clear();
            self.decoded.resize(self.info.frame_len * ch, 0.0);
        }
        // Count what goes in, good or silence, so the next expected pts is right.
        let frames_in = self.decoded.len() / ch;
        self.clock = Some(Clock {
            in_frames: clock.in_frames + frames_in as i64,
            ..clock
        });

        match &mut self.resampler {
            Some(r) => r.push(&self.decoded, &mut self.pcm)?,
            None => self.pcm.extend_from_slice(&self.decoded),
        }
        // On a bad frame, report it now; the silence queued above goes out with the next push.
        decode_result?;
        self.encode_ready()
    }

    /// The clock to use for an access unit stamped `pts_us`, re-anchoring on a jump.
    fn clock_for(&mut self, pts_us: i64) -> Clock {
        let rate = i64::from(self.info.sample_rate);
        if let Some(clock) = self.clock {
            // Saturating: `pts_us` comes off the network and may be anything.
            let expected = clock
                .anchor_us
                .saturating_add(clock.in_frames * 1_000_000 / rate);
            if pts_us.abs_diff(expected) <= REANCHOR_US.unsigned_abs() {
                return clock;
            }
            // The timeline broke: what is buffered (under 20 ms, plus the resampler's filter
            // delay) belongs to the old one. Dropping it is cheaper to reason about than
            // stamping it on the new one.
            self.pcm.clear();
            if let Some(r) = &mut self.resampler {
                r.reset();
            }
        }
        let clock = Clock {
            anchor_us: pts_us,
            in_frames: 0,
            out_frames: 0,
        };
        self.clock = Some(clock);
        clock
    }

    fn decode(&mut self, aac: &[u8]) -> Result<(), TranscodeError> {
        let packet = PacketRef::new(
            0,
            Timestamp::new(0),
            Duration::from(self.info.frame_len as u64),
            aac,
        );
        let decode_error = |reason: String| TranscodeError::Decode {
            len: aac.len(),
            reason,
        };
        if aac.is_empty() {
            return Err(decode_error("empty access unit".into()));
        }
        // symphonia's AAC decoder is safe Rust, but crafted input has made it index out of
        // bounds before (Symphonia issues #424, #512, both fixed). The AU comes from the network,
        // and one publisher's bad frame must not take down the server, so a panic is caught and
        // turned into a decode error; the decoder, whose state it may have left half-updated, is
        // rebuilt. (The panic hook still logs it, which is wanted: it is a decoder bug.)
        let decoder = &mut self.decoder;
        let decoded = &mut self.decoded;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoder
                .decode_ref(&packet)
                .map(|buf| buf.copy_to_vec_interleaved(decoded))
        }));
        let result = match result {
            Ok(result) => result,
            Err(_) => {
                self.decoder = AacDecoder::try_new(&self.params, &AudioDecoderOptions::default())
                    .map_err(|e| TranscodeError::DecoderInit {
                    reason: e.to_string(),
                })?;
                return Err(decode_error("the AAC decoder panicked on this unit".into()));
            }
        };
        match result {
            Ok(()) => {
                if self.decoded.len() != self.info.frame_len * self.info.channels {
                    let got = self.decoded.len();
                    return Err(decode_error(format!(
                        "decoded {got} samples, expected {}",
                        self.info.frame_len * self.info.channels
                    )));
                }
                Ok(())
            }
            Err(e) => {
                // The overlap-add state may hold half of a bad frame; a clean start is better
                // than a click's worth of garbage.
                self.decoder.reset();
                Err(decode_error(e.to_string()))
            }
        }
    }

    /// Encodes every complete 20 ms frame waiting in `pcm`.
    fn encode_ready(&mut self) -> Result<Vec<OpusPacket>, TranscodeError> {
        let ch = self.info.channels;
        let frame = OPUS_FRAME * ch;
        let mut packets = Vec::with_capacity(self.pcm.len() / frame);
        let mut consumed = 0;
        let mut result = Ok(());
        while self.pcm.len() - consumed >= frame {
            let input = &self.pcm[consumed..consumed + frame];
            consumed += frame;
            let Some(clock) = &mut self.clock else {
                break;
            };
            let pts_us = clock
                .anchor_us
                .saturating_add(clock.out_frames * 1_000_000 / i64::from(OUT_RATE));
            clock.out_frames += OPUS_FRAME as i64;
            match self.encoder.encode(input, OPUS_FRAME, &mut self.opus_buf) {
                Ok(len) => packets.push(OpusPacket {
                    data: self.opus_buf[..len].to_vec(),
                    pts_us,
                    duration_us: OPUS_FRAME_US,
                }),
                Err(e) => {
                    result = Err(opus_error(e));
                    break;
                }
            }
        }
        self.pcm.drain(..consumed);
        result.map(|()| packets)
    }
}

fn opus_error(e: opus_pure::Error) -> TranscodeError {
    TranscodeError::Encoder {
        reason: pure_reason(&e),
    }
}

/// A static reason for an opus-pure error (the error type carries one in most variants).
pub(crate) fn pure_reason(e: &opus_pure::Error) -> &'static str {
    match e {
        opus_pure::Error::InvalidArgument(w)
        | opus_pure::Error::InvalidPacket(w)
        | opus_pure::Error::InvalidStream(w)
        | opus_pure::Error::Internal(w) => w,
        opus_pure::Error::BufferTooSmall { .. } => "buffer too small",
        _ => "opus error",
    }
}
