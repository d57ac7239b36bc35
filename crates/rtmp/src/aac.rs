//! The start of an MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1): enough for the
//! sample rate and channel count a track description needs.

/// What the first bytes of an AudioSpecificConfig say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// audioObjectType (2 = AAC LC, 5 = SBR, 29 = PS, ...).
    pub object_type: u8,
    /// Sampling frequency in Hz.
    pub sample_rate: u32,
    /// Channels, when channelConfiguration names a count (0 means "in the PCE").
    pub channels: Option<u8>,
}

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl AudioSpecificConfig {
    /// Parses the object type, frequency and channel configuration; `None` if cut short or
    /// the frequency index is reserved.
    pub fn parse(data: &[u8]) -> Option<AudioSpecificConfig> {
        let mut bits = Bits { data, pos: 0 };
        let mut object_type = bits.take(5)?;
        if object_type == 31 {
            object_type = 32 + bits.take(6)?;
        }
        let index = bits.take(4)?;
        let sample_rate = if index == 15 {
            bits.take(24)?
        } else {
            *SAMPLE_RATES.get(index as usize)?
        };
        let channels = match bits.take(4)? {
            0 => None,
            c @ 1..=6 => Some(c as u8),
            7 => Some(8),
            _ => None,
        };
        Some(AudioSpecificConfig {
            object_type: u8::try_from(object_type).ok()?,
            sample_rate,
            channels,
        })
    }
}

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
        // What FFmpeg's native AAC encoder sent for `-ar 48000` mono: 00010 0011 0001 + extension.
        assert_eq!(
            AudioSpecificConfig::parse(&[0x11, 0x88, 0x56, 0xe5, 0x00]),
            Some(AudioSpecificConfig {
                object_type: 2,
                sample_rate: 48000,
                channels: Some(1)
            })
        );
    }

    #[test]
    fn stereo_44k_explicit_rate_and_escapes() {
        // AAC LC, 44.1 kHz (index 4), 2 channels: 00010 0100 0010 000 = 0x12 0x10.
        assert_eq!(
            AudioSpecificConfig::parse(&[0x12, 0x10]).map(|c| (c.sample_rate, c.channels)),
            Some((44100, Some(2)))
        );
        // Index 15: explicit 24-bit rate 8000 (0x001f40), channel config 7 → 8 channels.
        // 00010 1111 000000000001111101000000 0111, zero padded.
        let asc = [0x17, 0x80, 0x0f, 0xa0, 0x38];
        assert_eq!(
            AudioSpecificConfig::parse(&asc).map(|c| (c.sample_rate, c.channels)),
            Some((8000, Some(8)))
        );
        // Object type escape (31 → 32 + 6 bits).
        let asc = [0xf8, 0x48, 0x40]; // 11111 000010 0100 0010
        assert_eq!(
            AudioSpecificConfig::parse(&asc).map(|c| c.object_type),
            Some(34)
        );
    }

    #[test]
    fn short_or_reserved_is_none() {
        assert_eq!(AudioSpecificConfig::parse(&[]), None);
        assert_eq!(AudioSpecificConfig::parse(&[0x12]), None);
        // Frequency index 13 is reserved.
        assert_eq!(AudioSpecificConfig::parse(&[0x16, 0x90]), None);
    }
}
