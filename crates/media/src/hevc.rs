//! H.265 (HEVC): the `hvcC` record (ISO/IEC 14496-15 §8.3.3.1) that enhanced RTMP's sequence
//! start carries, its `hvc1` CODECS string (ISO/IEC 14496-15 Annex E.3), and the picture size
//! from the SPS (ITU-T H.265 §7.3.2.2). Enough for HLS and recording to describe the track; the
//! record itself goes into MP4 as it came.

use crate::bits::{Bits, rbsp};

/// NAL unit types of the parameter sets.
const VPS: u8 = 32;
const SPS: u8 = 33;
const PPS: u8 = 34;

/// What was wrong with an `hvcC` record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HevcError {
    /// The record ended early.
    #[error("the hvcC record ends inside its {0}")]
    Truncated(&'static str),
    /// configurationVersion was not 1.
    #[error("hvcC configurationVersion is {0}, expected 1")]
    Version(u8),
    /// No SPS in the record: nothing says what the pictures are.
    #[error("the hvcC record has no SPS")]
    NoSps,
}

/// A parsed `hvcC` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    /// general_profile_space (0 to 3).
    pub profile_space: u8,
    /// general_tier_flag: the High tier.
    pub high_tier: bool,
    /// general_profile_idc (1 Main, 2 Main 10, …).
    pub profile_idc: u8,
    /// general_profile_compatibility_flags, as written (flag 0 the most significant bit).
    pub compatibility: u32,
    /// general_constraint_indicator_flags.
    pub constraints: [u8; 6],
    /// general_level_idc (30 × the level: 93 is level 3.1).
    pub level_idc: u8,
    /// chroma_format_idc (1 is 4:2:0).
    pub chroma_format: u8,
    /// Luma bit depth.
    pub bit_depth_luma: u8,
    /// Chroma bit depth.
    pub bit_depth_chroma: u8,
    /// sps_max_sub_layers (numTemporalLayers).
    pub temporal_layers: u8,
    /// sps_temporal_id_nesting_flag.
    pub temporal_id_nested: bool,
    /// Bytes of each NAL unit's length prefix in the samples (1, 2 or 4).
    pub nal_length_size: u8,
    /// The VPS, SPS and PPS NAL units (headers included), in that order of kind.
    pub vps: Vec<Vec<u8>>,
    /// Sequence parameter sets.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets.
    pub pps: Vec<Vec<u8>>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HevcError> {
        if self.0.len() < n {
            return Err(HevcError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HevcError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HevcError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

impl HevcConfig {
    /// Parses an `hvcC` record (the body of the box, as enhanced RTMP's sequence start has it).
    pub fn parse(hvcc: &[u8]) -> Result<HevcConfig, HevcError> {
        let mut r = Reader(hvcc);
        let version = r.u8("configurationVersion")?;
        if version != 1 {
            return Err(HevcError::Version(version));
        }
        let ptl = r.u8("profile")?;
        let compat = r.take(4, "compatibility flags")?;
        let constraints: [u8; 6] = r
            .take(6, "constraint flags")?
            .try_into()
            .map_err(|_| HevcError::Truncated("constraint flags"))?;
        let level_idc = r.u8("level")?;
        r.take(2, "min_spatial_segmentation_idc")?;
        r.u8("parallelismType")?;
        let chroma_format = r.u8("chromaFormat")? & 0x03;
        let bit_depth_luma = (r.u8("bitDepthLuma")? & 0x07) + 8;
        let bit_depth_chroma = (r.u8("bitDepthChroma")? & 0x07) + 8;
        r.u16("avgFrameRate")?;
        let b = r.u8("lengthSizeMinusOne")?;
        let arrays = r.u8("numOfArrays")?;
        let mut config = HevcConfig {
            profile_space: ptl >> 6,
            high_tier: ptl & 0x20 != 0,
            profile_idc: ptl & 0x1f,
            compatibility: u32::from_be_bytes([compat[0], compat[1], compat[2], compat[3]]),
            constraints,
            level_idc,
            chroma_format,
            bit_depth_luma,
            bit_depth_chroma,
            temporal_layers: (b >> 3) & 0x07,
            temporal_id_nested: b & 0x04 != 0,
            nal_length_size: (b & 0x03) + 1,
            vps: Vec::new(),
            sps: Vec::new(),
            pps: Vec::new(),
        };
        for _ in 0..arrays {
            let kind = r.u8("array")? & 0x3f;
            let count = r.u16("numNalus")?;
            for _ in 0..count {
                let len = r.u16("nalUnitLength")?;
                let nal = r.take(usize::from(len), "NAL unit")?.to_vec();
                match kind {
                    VPS => config.vps.push(nal),
                    SPS => config.sps.push(nal),
                    PPS => config.pps.push(nal),
                    _ => {} // SEI and others: not needed to describe the track
                }
            }
        }
        if config.sps.is_empty() {
            return Err(HevcError::NoSps);
        }
        Ok(config)
    }

    /// The record for a stream's VPS, SPS and PPS (NAL units with their two-byte headers, no
    /// start codes); NAL units are 4-byte length-prefixed. `None` when the SPS does not parse.
    pub fn from_parameter_sets(vps: &[u8], sps: &[u8], pps: &[u8]) -> Option<HevcConfig> {
        let info = SpsInfo::parse(sps)?;
        Some(HevcConfig {
            profile_space: info.ptl[0] >> 6,
            high_tier: info.ptl[0] & 0x20 != 0,
            profile_idc: info.ptl[0] & 0x1f,
            compatibility: u32::from_be_bytes([info.ptl[1], info.ptl[2], info.ptl[3], info.ptl[4]]),
            constraints: [
                info.ptl[5],
                info.ptl[6],
                info.ptl[7],
                info.ptl[8],
                info.ptl[9],
                info.ptl[10],
            ],
            level_idc: info.ptl[11],
            chroma_format: info.chroma_format,
            bit_depth_luma: info.bit_depth_luma,
            bit_depth_chroma: info.bit_depth_chroma,
            temporal_layers: info.max_sub_layers,
            temporal_id_nested: info.temporal_id_nesting,
            nal_length_size: 4,
            vps: vec![vps.to_vec()],
            sps: vec![sps.to_vec()],
            pps: vec![pps.to_vec()],
        })
    }

    /// The `hvcC` record's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![
            1,
            self.profile_space << 6 | u8::from(self.high_tier) << 5 | (self.profile_idc & 0x1f),
        ];
        out.extend(self.compatibility.to_be_bytes());
        out.extend(self.constraints);
        out.push(self.level_idc);
        out.extend([0xf0, 0x00]); // min_spatial_segmentation_idc 0
        out.push(0xfc); // parallelismType 0: unknown
        out.push(0xfc | (self.chroma_format & 0x03));
        out.push(0xf8 | (self.bit_depth_luma.saturating_sub(8) & 0x07));
        out.push(0xf8 | (self.bit_depth_chroma.saturating_sub(8) & 0x07));
        out.extend([0, 0]); // avgFrameRate: unspecified
        out.push(
            (self.temporal_layers & 0x07) << 3
                | u8::from(self.temporal_id_nested) << 2
                | (self.nal_length_size.clamp(1, 4) - 1),
        );
        let arrays = [(VPS, &self.vps), (SPS, &self.sps), (PPS, &self.pps)];
        out.push(arrays.iter().filter(|(_, n)| !n.is_empty()).count() as u8);
        for (kind, nals) in arrays {
            if nals.is_empty() {
                continue;
            }
            out.push(0x80 | kind); // array_completeness: every set of the kind is here
            out.extend((nals.len() as u16).to_be_bytes());
            for n in nals {
                out.extend((n.len() as u16).to_be_bytes());
                out.extend_from_slice(n);
            }
        }
        out
    }

    /// The RFC 6381 CODECS value: `hvc1.1.6.L93.B0` for Main at level 3.1.
    pub fn codecs(&self) -> String {
        let space = match self.profile_space {
            1 => "A",
            2 => "B",
            3 => "C",
            _ => "",
        };
        // The compatibility flags in reverse bit order, in hex without leading zeros.
        let mut s = format!(
            "hvc1.{space}{}.{:X}.{}{}",
            self.profile_idc,
            self.compatibility.reverse_bits(),
            if self.high_tier { 'H' } else { 'L' },
            self.level_idc
        );
        // Each constraint byte, trailing zero bytes left out.
        let used = self
            .constraints
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1);
        for b in &self.constraints[..used] {
            s.push_str(&format!(".{b:X}"));
        }
        s
    }

    /// Width and height after the conformance window, from the first SPS.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        let info = SpsInfo::parse(self.sps.first()?)?;
        Some((info.width, info.height))
    }
}

/// Whether a NAL unit (its first header byte) starts a picture a decoder can begin at:
/// an IRAP picture (BLA, IDR or CRA, types 16 to 23).
pub fn is_irap(nal_header: u8) -> bool {
    (16..=23).contains(&((nal_header >> 1) & 0x3f))
}

/// What the SPS says, as far as it is read.
struct SpsInfo {
    /// general_profile_space … general_level_idc: 12 bytes.
    ptl: [u8; 12],
    max_sub_layers: u8,
    temporal_id_nesting: bool,
    chroma_format: u8,
    bit_depth_luma: u8,
    bit_depth_chroma: u8,
    width: u32,
    height: u32,
}

impl SpsInfo {
    fn parse(sps: &[u8]) -> Option<SpsInfo> {
        // Two bytes of NAL header, then the RBSP.
        let data = rbsp(sps.get(2..)?);
        let mut r = Bits::new(&data);
        r.read(4)?; // sps_video_parameter_set_id
        let max_sub_layers_minus1 = r.read(3)? as u8;
        let temporal_id_nesting = r.read(1)? == 1;
        // profile_tier_level(1, max_sub_layers_minus1): the general part is byte-aligned here.
        let mut ptl = [0u8; 12];
        for b in &mut ptl {
            *b = r.read(8)? as u8;
        }
        let mut sub_profile = [false; 8];
        let mut sub_level = [false; 8];
        for i in 0..usize::from(max_sub_layers_minus1) {
            sub_profile[i] = r.read(1)? == 1;
            sub_level[i] = r.read(1)? == 1;
        }
        if max_sub_layers_minus1 > 0 {
            for _ in max_sub_layers_minus1..8 {
                r.read(2)?; // reserved_zero_2bits
            }
        }
        for i in 0..usize::from(max_sub_layers_minus1) {
            if sub_profile[i] {
                // 88 bits of sub-layer profile.
                r.read(32)?;
                r.read(32)?;
                r.read(24)?;
            }
            if sub_level[i] {
                r.read(8)?;
            }
        }
        r.ue()?; // sps_seq_parameter_set_id
        let chroma_format = r.ue()?;
        let mut separate_colour_plane = false;
        if chroma_format == 3 {
            separate_colour_plane = r.read(1)? == 1;
        }
        let width = r.ue()?;
        let height = r.ue()?;
        let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
        if r.read(1)? == 1 {
            left = r.ue()?;
            right = r.ue()?;
            top = r.ue()?;
            bottom = r.ue()?;
        }
        let bit_depth_luma = u8::try_from(r.ue()?).ok()?.checked_add(8)?;
        let bit_depth_chroma = u8::try_from(r.ue()?).ok()?.checked_add(8)?;
        let array_type = if separate_colour_plane {
            0
        } else {
            chroma_format
        };
        let (sub_w, sub_h): (u32, u32) = match array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let crop_w = u64::from(sub_w) * (u64::from(left) + u64::from(right));
        let crop_h = u64::from(sub_h) * (u64::from(top) + u64::from(bottom));
        Some(SpsInfo {
            ptl,
            max_sub_layers: max_sub_layers_minus1 + 1,
            temporal_id_nesting,
            chroma_format: u8::try_from(chroma_format).ok()?,
            bit_depth_luma,
            bit_depth_chroma,
            width: u32::try_from(u64::from(width).checked_sub(crop_w)?).ok()?,
            height: u32::try_from(u64::from(height).checked_sub(crop_h)?).ok()?,
        })
    }
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

    // Parameter sets FFmpeg's libx265 wrote for 640x360 at 30 fps (Main, level 2.1).
    const VPS_HEX: &str = "40010c01ffff01600000030090000003000003003f959809";
    const SPS_HEX: &str =
        "42010101600000030090000003000003003fa00502016965959a4932bc05a020000003002000000303c1";
    const PPS_HEX: &str = "4401c172b46240";

    #[test]
    fn libx265_parameter_sets_make_a_record_that_reads_back() {
        let (vps, sps, pps) = (hex(VPS_HEX), hex(SPS_HEX), hex(PPS_HEX));
        let c = HevcConfig::from_parameter_sets(&vps, &sps, &pps).unwrap();
        assert_eq!(c.profile_idc, 1, "Main");
        assert_eq!(c.level_idc, 63, "level 2.1");
        assert_eq!(c.dimensions(), Some((640, 360)));
        assert_eq!(
            (c.chroma_format, c.bit_depth_luma, c.bit_depth_chroma),
            (1, 8, 8)
        );
        // As FFmpeg writes it for this stream (the CODECS string hls.js and Safari read).
        assert_eq!(c.codecs(), "hvc1.1.6.L63.90");
        let bytes = c.to_bytes();
        // The header as libx265's own hvcC has it, up to the fields FFmpeg fills differently
        // (parallelismType, avgFrameRate, which we leave unspecified).
        assert_eq!(&bytes[..13], &hex("0101600000009000000000003f")[..]);
        let back = HevcConfig::parse(&bytes).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.nal_length_size, 4);
        assert_eq!((back.vps[0].clone(), back.pps[0].clone()), (vps, pps));
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let good = HevcConfig::from_parameter_sets(&hex(VPS_HEX), &hex(SPS_HEX), &hex(PPS_HEX))
            .unwrap()
            .to_bytes();
        for n in 0..good.len() {
            // Every truncation fails cleanly (or, cut inside a later array, still parses).
            let _ = HevcConfig::parse(&good[..n]);
        }
        assert_eq!(
            HevcConfig::parse(&[]),
            Err(HevcError::Truncated("configurationVersion"))
        );
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(HevcConfig::parse(&v2), Err(HevcError::Version(2)));
        // No arrays at all: nothing describes the pictures.
        let mut bare = good[..23].to_vec();
        bare[22] = 0;
        assert_eq!(HevcConfig::parse(&bare), Err(HevcError::NoSps));
        // A lying NAL length.
        let mut lying = good.clone();
        lying[24 + 2] = 0xff;
        assert!(HevcConfig::parse(&lying).is_err());
        // Garbage SPS: no size, no panic.
        for sps in [&[][..], &[0x42, 0x01], &[0x42, 0x01, 0xff, 0xff, 0xff]] {
            assert!(SpsInfo::parse(sps).is_none());
        }
    }

    #[test]
    fn irap_pictures_are_keyframes() {
        assert!(is_irap(19 << 1)); // IDR_W_RADL
        assert!(is_irap(21 << 1)); // CRA
        assert!(!is_irap(1 << 1)); // TRAIL_R
        assert!(!is_irap(SPS << 1));
    }
}
