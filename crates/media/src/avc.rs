//! H.264 helpers: the `avcC` record (ISO/IEC 14496-15 5.3.3.1), picture size from an SPS
//! (ITU-T H.264 7.3.2.1.1), and length-prefixed ↔ Annex B access units. The WebRTC path uses
//! the Annex B conversion to packetize what RTMP publishers send.

use crate::bits::Bits;

/// What was wrong with H.264 data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AvcError {
    /// The avcC record ended early.
    #[error("the avcC record ends inside its {0}")]
    Truncated(&'static str),
    /// configurationVersion was not 1.
    #[error("avcC configurationVersion is {0}, expected 1")]
    Version(u8),
    /// NAL length size was not 1, 2 or 4.
    #[error("NAL unit length size {0} is not 1, 2 or 4")]
    LengthSize(u8),
    /// A NAL unit's length ran past the end of the access unit.
    #[error("a NAL unit claims {claimed} bytes but only {left} remain in the access unit")]
    NalOverrun {
        /// The length field's value.
        claimed: usize,
        /// Bytes left after the length field.
        left: usize,
    },
    /// The access unit ended inside a length field.
    #[error("the access unit ends inside a NAL unit length field")]
    LengthFieldCut,
}

/// A parsed `AVCDecoderConfigurationRecord`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// AVCProfileIndication (profile_idc).
    pub profile: u8,
    /// profile_compatibility (the constraint flags byte).
    pub compatibility: u8,
    /// AVCLevelIndication (level_idc).
    pub level: u8,
    /// Bytes in each NAL unit length prefix: 1, 2 or 4.
    pub nal_length_size: u8,
    /// Sequence parameter sets, NAL header byte included.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets, NAL header byte included.
    pub pps: Vec<Vec<u8>>,
}

impl AvcConfig {
    /// Parses an avcC record. Trailing high-profile extension bytes are ignored.
    pub fn parse(avcc: &[u8]) -> Result<AvcConfig, AvcError> {
        let mut r = ByteReader { buf: avcc, pos: 0 };
        let head = r.take(5).ok_or(AvcError::Truncated("header"))?;
        if head[0] != 1 {
            return Err(AvcError::Version(head[0]));
        }
        let nal_length_size = (head[4] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(AvcError::LengthSize(3));
        }
        let sps_count = r.u8().ok_or(AvcError::Truncated("SPS count"))? & 0x1f;
        let sps = r.sets(sps_count, "SPS list")?;
        let pps_count = r.u8().ok_or(AvcError::Truncated("PPS count"))?;
        let pps = r.sets(pps_count, "PPS list")?;
        Ok(AvcConfig {
            profile: head[1],
            compatibility: head[2],
            level: head[3],
            nal_length_size,
            sps,
            pps,
        })
    }

    /// One SPS and one PPS (NAL header bytes included) as a configuration with 4-byte NAL
    /// lengths; `None` when the SPS is too short to hold profile and level.
    pub fn from_parameter_sets(sps: &[u8], pps: &[u8]) -> Option<AvcConfig> {
        (sps.len() >= 4 && !pps.is_empty()).then(|| AvcConfig {
            profile: sps[1],
            compatibility: sps[2],
            level: sps[3],
            nal_length_size: 4,
            sps: vec![sps.to_vec()],
            pps: vec![pps.to_vec()],
        })
    }

    /// The `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15 §5.3.3.1) bytes. Sets longer than
    /// 65535 bytes, or more than 31 SPS / 255 PPS, cannot be written and are left out.
    pub fn to_bytes(&self) -> Vec<u8> {
        let sps: Vec<&Vec<u8>> = self
            .sps
            .iter()
            .filter(|s| s.len() <= 0xffff)
            .take(31)
            .collect();
        let pps: Vec<&Vec<u8>> = self
            .pps
            .iter()
            .filter(|p| p.len() <= 0xffff)
            .take(255)
            .collect();
        let mut v = vec![
            1,
            self.profile,
            self.compatibility,
            self.level,
            0xfc | (self.nal_length_size.clamp(1, 4) - 1),
            0xe0 | sps.len() as u8,
        ];
        for s in sps {
            v.extend_from_slice(&(s.len() as u16).to_be_bytes());
            v.extend_from_slice(s);
        }
        v.push(pps.len() as u8);
        for p in pps {
            v.extend_from_slice(&(p.len() as u16).to_be_bytes());
            v.extend_from_slice(p);
        }
        v
    }

    /// Picture size from the first SPS, when it parses.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        sps_dimensions(self.sps.first()?)
    }
}

struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn sets(&mut self, count: u8, what: &'static str) -> Result<Vec<Vec<u8>>, AvcError> {
        (0..count)
            .map(|_| {
                let len = self.take(2).ok_or(AvcError::Truncated(what))?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                Ok(self.take(len).ok_or(AvcError::Truncated(what))?.to_vec())
            })
            .collect()
    }
}

/// The NAL units of a length-prefixed access unit, without their prefixes.
pub fn nal_units(au: &[u8], nal_length_size: u8) -> NalUnits<'_> {
    NalUnits {
        rest: au,
        size: usize::from(nal_length_size),
    }
}

/// Iterator returned by [`nal_units`]; yields an error once and stops on a bad length.
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    rest: &'a [u8],
    size: usize,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<&'a [u8], AvcError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        if !matches!(self.size, 1 | 2 | 4) {
            self.rest = &[];
            return Some(Err(AvcError::LengthSize(self.size as u8)));
        }
        let Some((len, rest)) = self.rest.split_at_checked(self.size) else {
            self.rest = &[];
            return Some(Err(AvcError::LengthFieldCut));
        };
        let claimed = len
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        let Some((nal, rest)) = rest.split_at_checked(claimed) else {
            self.rest = &[];
            return Some(Err(AvcError::NalOverrun {
                claimed,
                left: rest.len(),
            }));
        };
        self.rest = rest;
        Some(Ok(nal))
    }
}

/// Re-prefixes every NAL unit with a 4-byte length (the hub's layout), checking the lengths.
pub fn to_four_byte_lengths(au: &[u8], nal_length_size: u8) -> Result<Vec<u8>, AvcError> {
    let mut out = Vec::with_capacity(au.len() + 8);
    for nal in nal_units(au, nal_length_size) {
        let nal = nal?;
        // A NAL unit is at most the access unit, which came in one RTMP message (< 16 MB).
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    Ok(out)
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Converts a length-prefixed access unit to Annex B (start codes). With `parameter_sets`, its
/// SPS and PPS go first, as a decoder joining at this (key)frame needs them.
pub fn to_annex_b(
    au: &[u8],
    nal_length_size: u8,
    parameter_sets: Option<&AvcConfig>,
) -> Result<Vec<u8>, AvcError> {
    let mut out = Vec::with_capacity(au.len() + 64);
    if let Some(config) = parameter_sets {
        for set in config.sps.iter().chain(&config.pps) {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(set);
        }
    }
    for nal in nal_units(au, nal_length_size) {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal?);
    }
    Ok(out)
}

/// Width and height in pixels from an SPS NAL unit (header byte included), after cropping.
/// `None` when the SPS does not parse; only the fields before the size are read.
pub fn sps_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    // Drop the NAL header and emulation prevention bytes (00 00 03 → 00 00).
    let rbsp = crate::bits::rbsp(sps.get(1..)?);
    let mut r = Bits::new(&rbsp);
    let profile_idc = r.read(8)?;
    r.read(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.read(1)? == 1;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.read(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.read(1)? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.read(1)? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.read(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()? {
                r.se()?; // each reads at least one bit, so a lying count runs out of data
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.read(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.read(1)?);
    if frame_mbs_only == 0 {
        r.read(1)?; // mb_adaptive_frame_field_flag
    }
    r.read(1)?; // direct_8x8_inference_flag
    let (mut left, mut right, mut top, mut bottom) = (0u64, 0u64, 0u64, 0u64);
    if r.read(1)? == 1 {
        left = r.ue()?.into();
        right = r.ue()?.into();
        top = r.ue()?.into();
        bottom = r.ue()?.into();
    }
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_x, crop_y) = match chroma_array_type {
        0 => (1, 2 - frame_mbs_only),
        1 => (2, 2 * (2 - frame_mbs_only)),
        2 => (2, 2 - frame_mbs_only),
        _ => (1, 2 - frame_mbs_only),
    };
    let width = (width_mbs * 16).checked_sub(crop_x * (left + right))?;
    let height =
        ((2 - frame_mbs_only) * height_map_units * 16).checked_sub(crop_y * (top + bottom))?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + i64::from(r.se()?) + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// What x264 (via FFmpeg) put in the FLV for 640x360 baseline and 1920x1080 high.
    const BASELINE_360P: &str =
        "0142c01effe100196742c01eda0280bfe5c044000003000400000300f03c58ba8001000468ce0fc8";
    const HIGH_1080P: &str = "01640028ffe1001b67640028acd940780227e5c044000003000400000300f03c60c65801000668ebe3cb22c0fdf8f800";

    #[test]
    fn parses_ffmpeg_avcc_and_sps_size() {
        let c = AvcConfig::parse(&hex(BASELINE_360P)).unwrap();
        assert_eq!((c.profile, c.compatibility, c.level), (0x42, 0xc0, 0x1e));
        assert_eq!(c.nal_length_size, 4);
        assert_eq!(
            c.sps,
            vec![hex("6742c01eda0280bfe5c044000003000400000300f03c58ba80")]
        );
        assert_eq!(c.pps, vec![hex("68ce0fc8")]);
        assert_eq!(c.dimensions(), Some((640, 360)));

        // High profile (chroma_format_idc etc. present), 1088 lines cropped to 1080, and the
        // high-profile extension bytes after the PPS are ignored.
        let c = AvcConfig::parse(&hex(HIGH_1080P)).unwrap();
        assert_eq!(c.profile, 100);
        assert_eq!(c.dimensions(), Some((1920, 1080)));
    }

    #[test]
    fn avcc_errors() {
        let full = hex(BASELINE_360P);
        assert_eq!(
            AvcConfig::parse(&full[..3]),
            Err(AvcError::Truncated("header"))
        );
        assert_eq!(
            AvcConfig::parse(&full[..5]),
            Err(AvcError::Truncated("SPS count"))
        );
        assert_eq!(
            AvcConfig::parse(&full[..10]),
            Err(AvcError::Truncated("SPS list"))
        );
        assert_eq!(
            AvcConfig::parse(&full[..full.len() - 1]),
            Err(AvcError::Truncated("PPS list"))
        );
        let mut bad = full.clone();
        bad[0] = 2;
        assert_eq!(AvcConfig::parse(&bad), Err(AvcError::Version(2)));
        bad[0] = 1;
        bad[4] = 0xfe;
        assert_eq!(AvcConfig::parse(&bad), Err(AvcError::LengthSize(3)));
        assert_eq!(
            AvcError::Truncated("PPS list").to_string(),
            "the avcC record ends inside its PPS list"
        );
    }

    #[test]
    fn garbage_sps_is_none_not_a_panic() {
        assert_eq!(sps_dimensions(&[]), None);
        assert_eq!(sps_dimensions(&[0x67]), None);
        assert_eq!(
            sps_dimensions(&[0x67, 0x64, 0, 0x28, 0, 0, 0, 0, 0, 0]),
            None
        );
        for len in 0..26 {
            let sps = hex("6742c01eda0280bfe5c044000003000400000300f03c58ba80");
            let _ = sps_dimensions(&sps[..len]);
        }
    }

    #[test]
    fn annex_b_with_and_without_parameter_sets() {
        let au = [0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 1, 0x06];
        assert_eq!(
            to_annex_b(&au, 4, None).unwrap(),
            vec![0, 0, 0, 1, 0x65, 0xaa, 0, 0, 0, 1, 0x06]
        );
        let config = AvcConfig::parse(&hex(BASELINE_360P)).unwrap();
        let out = to_annex_b(&au, 4, Some(&config)).unwrap();
        let mut expected = vec![0, 0, 0, 1];
        expected.extend(hex("6742c01eda0280bfe5c044000003000400000300f03c58ba80"));
        expected.extend([0, 0, 0, 1, 0x68, 0xce, 0x0f, 0xc8]);
        expected.extend([0, 0, 0, 1, 0x65, 0xaa, 0, 0, 0, 1, 0x06]);
        assert_eq!(out, expected);
        // One-byte lengths.
        assert_eq!(
            to_annex_b(&[1, 0x09, 2, 0x41, 0x9a], 1, None).unwrap(),
            vec![0, 0, 0, 1, 0x09, 0, 0, 0, 1, 0x41, 0x9a]
        );
    }

    #[test]
    fn lying_lengths_are_errors() {
        assert_eq!(
            to_annex_b(&[0, 0, 0, 5, 0x65], 4, None),
            Err(AvcError::NalOverrun {
                claimed: 5,
                left: 1
            })
        );
        assert_eq!(to_annex_b(&[0, 0], 4, None), Err(AvcError::LengthFieldCut));
        assert_eq!(
            to_annex_b(&[1, 0x09], 3, None),
            Err(AvcError::LengthSize(3))
        );
        assert_eq!(
            to_four_byte_lengths(&[0, 2, 0x65, 0x88, 0, 1, 0x06], 2).unwrap(),
            vec![0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 1, 0x06]
        );
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn a_written_record_parses_back() {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let c = AvcConfig::from_parameter_sets(&sps, &pps).unwrap();
        let bytes = c.to_bytes();
        assert_eq!(&bytes[..6], &[1, 0x42, 0xc0, 0x1e, 0xff, 0xe1]);
        assert_eq!(AvcConfig::parse(&bytes).unwrap(), c);
        assert!(AvcConfig::from_parameter_sets(&[0x67, 0x42], &pps).is_none());
        assert!(AvcConfig::from_parameter_sets(&sps, &[]).is_none());
    }
}
