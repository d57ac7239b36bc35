//! The MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1): the fields a track description
//! and a decoder choice need.

/// Sampling frequencies by `samplingFrequencyIndex` (13 and 14 are reserved).
const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// audioObjectType of AAC LC.
pub const AOT_AAC_LC: u8 = 2;

/// Why an AudioSpecificConfig does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AscError {
    /// It ends before the fields it announces.
    #[error("the AudioSpecificConfig is {len} bytes, too short")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// A reserved `samplingFrequencyIndex` (13 or 14).
    #[error("the AudioSpecificConfig names reserved sample rate index {index}")]
    ReservedSampleRateIndex {
        /// The index.
        index: u8,
    },
}

/// What the start of an AudioSpecificConfig says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// audioObjectType (2 = AAC LC, 5 = SBR, 29 = PS, …).
    pub object_type: u8,
    /// Sampling frequency in Hz.
    pub sample_rate: u32,
    /// channelConfiguration (0 = in the program config element, 1–6 = that many, 7 = 8).
    pub channel_config: u8,
    /// GASpecificConfig's frameLengthFlag (960-sample frames), for the object types that have
    /// one; `None` for others.
    pub frame_length_960: Option<bool>,
}

impl AudioSpecificConfig {
    /// Parses the object type, frequency, channel configuration and (for the general audio
    /// object types) the frame length flag.
    pub fn parse(data: &[u8]) -> Result<AudioSpecificConfig, AscError> {
        let mut bits = Bits { data, pos: 0 };
        let short = AscError::TooShort { len: data.len() };
        let mut object_type = bits.take(5).ok_or(short)?;
        if object_type == 31 {
            object_type = 32 + bits.take(6).ok_or(short)?;
        }
        let index = bits.take(4).ok_or(short)?;
        let sample_rate = if index == 15 {
            bits.take(24).ok_or(short)?
        } else {
            *SAMPLE_RATES
                .get(index as usize)
                .ok_or(AscError::ReservedSampleRateIndex { index: index as u8 })?
        };
        let channel_config = bits.take(4).ok_or(short)? as u8;
        // GASpecificConfig follows for these object types (Table 1.15).
        let general = matches!(object_type, 1..=4 | 6 | 7 | 17 | 19..=23);
        let frame_length_960 = match general {
            true => Some(bits.take(1).ok_or(short)? == 1),
            false => None,
        };
        Ok(AudioSpecificConfig {
            // Escaped types go up to 95: they fit.
            object_type: object_type as u8,
            sample_rate,
            channel_config,
            frame_length_960,
        })
    }

    /// Channels, when the channel configuration names a count.
    pub fn channels(&self) -> Option<u8> {
        match self.channel_config {
            c @ 1..=6 => Some(c),
            7 => Some(8),
            _ => None,
        }
    }
}

/// Most-significant-bit-first reader; `None` when the data runs out.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_aac_lc_48k_mono() {
        // What FFmpeg's native AAC encoder sent for `-ar 48000` mono: 00010 0011 0001 0 + ext.
        let c = AudioSpecificConfig::parse(&[0x11, 0x88, 0x56, 0xe5, 0x00]).unwrap();
        assert_eq!(
            (
                c.object_type,
                c.sample_rate,
                c.channels(),
                c.frame_length_960
            ),
            (2, 48000, Some(1), Some(false))
        );
    }

    #[test]
    fn stereo_44k_explicit_rate_and_escapes() {
        // AAC LC, 44.1 kHz (index 4), 2 channels: 00010 0100 0010 000 = 0x12 0x10.
        let c = AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!((c.sample_rate, c.channels()), (44100, Some(2)));
        // Index 15: explicit 24-bit rate 8000 (0x001f40), channel config 7 → 8 channels.
        let c = AudioSpecificConfig::parse(&[0x17, 0x80, 0x0f, 0xa0, 0x38]).unwrap();
        assert_eq!((c.sample_rate, c.channels()), (8000, Some(8)));
        // Object type escape (31 → 32 + 6 bits): 11111 000010 0100 0010.
        let c = AudioSpecificConfig::parse(&[0xf8, 0x48, 0x40]).unwrap();
        assert_eq!((c.object_type, c.frame_length_960), (34, None));
        // 960-sample frames: 00010 0011 0010 1.
        let c = AudioSpecificConfig::parse(&[0x11, 0x94]).unwrap();
        assert_eq!(c.frame_length_960, Some(true));
    }

    #[test]
    fn short_or_reserved_are_errors() {
        assert_eq!(
            AudioSpecificConfig::parse(&[]),
            Err(AscError::TooShort { len: 0 })
        );
        assert_eq!(
            AudioSpecificConfig::parse(&[0x12]),
            Err(AscError::TooShort { len: 1 })
        );
        assert_eq!(
            AudioSpecificConfig::parse(&[0x16, 0x90]),
            Err(AscError::ReservedSampleRateIndex { index: 13 })
        );
    }
}
