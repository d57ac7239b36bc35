//! The few fields of an AAC AudioSpecificConfig (ISO/IEC 14496-3, 1.6.2.1) that decide whether we
//! can transcode a stream.
//!
//! symphonia parses the ASC again when it builds its decoder; we read it first ourselves so that a
//! publisher sending HE-AAC, 5.1 or a garbled sequence header gets an error naming the reason
//! instead of symphonia's generic "aac too complex".

use media::aac::{AOT_AAC_LC, AscError, AudioSpecificConfig};

use crate::TranscodeError;

/// What we need to know of the source stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AscInfo {
    pub(crate) sample_rate: u32,
    /// 1 or 2: the decoder (and our Opus encoder) handle no more.
    pub(crate) channels: usize,
    /// Frames (samples per channel) in one access unit.
    pub(crate) frame_len: usize,
}

impl AscInfo {
    pub(crate) fn parse(asc: &[u8]) -> Result<AscInfo, TranscodeError> {
        let c = AudioSpecificConfig::parse(asc).map_err(|e| match e {
            AscError::ReservedSampleRateIndex { index } => {
                TranscodeError::BadSampleRateIndex { index }
            }
            _ => TranscodeError::AscTooShort { len: asc.len() },
        })?;
        if c.object_type != AOT_AAC_LC {
            return Err(TranscodeError::UnsupportedObjectType {
                object_type: c.object_type,
            });
        }
        // An explicit rate (index 15) may be anything; the decoder's band tables go from 7.35 to
        // 96 kHz, and a silly value would only make the resampler ratio absurd.
        if !(7_350..=96_000).contains(&c.sample_rate) {
            return Err(TranscodeError::UnsupportedSampleRate {
                rate: c.sample_rate,
            });
        }
        let channels = match c.channel_config {
            1 => 1,
            2 => 2,
            // 0 means "see the program config element", which the decoder cannot read.
            other => {
                return Err(TranscodeError::UnsupportedChannels {
                    channel_config: other,
                });
            }
        };
        // 960-sample frames are a broadcast (DAB+) thing that the decoder does not implement.
        if c.frame_length_960 == Some(true) {
            return Err(TranscodeError::UnsupportedFrameLength { frame_len: 960 });
        }
        Ok(AscInfo {
            sample_rate: c.sample_rate,
            channels,
            frame_len: 1024,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_44k1_stereo() {
        // What FFmpeg's FLV muxer writes for 44.1 kHz stereo AAC-LC.
        let info = AscInfo::parse(&[0x12, 0x10]).unwrap();
        assert_eq!(
            info,
            AscInfo {
                sample_rate: 44_100,
                channels: 2,
                frame_len: 1024
            }
        );
    }

    #[test]
    fn lc_48k_mono() {
        let info = AscInfo::parse(&[0x11, 0x88]).unwrap();
        assert_eq!((info.sample_rate, info.channels), (48_000, 1));
    }

    #[test]
    fn explicit_rate() {
        // AOT 2, index 15, rate 32000 (0x007D00), channel config 2, frameLengthFlag 0.
        let mut bits: Vec<u8> = Vec::new();
        let s = concat!("00010", "1111", "000000000111110100000000", "0010", "0");
        for chunk in s.as_bytes().chunks(8) {
            let mut b = 0u8;
            for (i, c) in chunk.iter().enumerate() {
                if *c == b'1' {
                    b |= 0x80 >> i;
                }
            }
            bits.push(b);
        }
        let info = AscInfo::parse(&bits).unwrap();
        assert_eq!((info.sample_rate, info.channels), (32_000, 2));
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            AscInfo::parse(&[]),
            Err(TranscodeError::AscTooShort { len: 0 })
        ));
        assert!(matches!(
            AscInfo::parse(&[0x12]),
            Err(TranscodeError::AscTooShort { len: 1 })
        ));
        // HE-AAC (SBR, object type 5), 24 kHz core.
        assert!(matches!(
            AscInfo::parse(&[0x2B, 0x10, 0x88, 0x00]),
            Err(TranscodeError::UnsupportedObjectType { object_type: 5 })
        ));
        // Reserved sample-rate index 13.
        assert!(matches!(
            AscInfo::parse(&[0x16, 0x90]),
            Err(TranscodeError::BadSampleRateIndex { index: 13 })
        ));
        // 5.1 (channel config 6).
        assert!(matches!(
            AscInfo::parse(&[0x11, 0xB0]),
            Err(TranscodeError::UnsupportedChannels { channel_config: 6 })
        ));
        // 960-sample frames.
        assert!(matches!(
            AscInfo::parse(&[0x11, 0x94]),
            Err(TranscodeError::UnsupportedFrameLength { frame_len: 960 })
        ));
    }
}
