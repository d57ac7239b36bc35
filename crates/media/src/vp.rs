//! VP8 and VP9: what a keyframe says about the stream (profile, bit depth, picture size), and
//! the `VPCodecConfigurationRecord` that carries it in MP4 (`vpcC`, the WebM project's "VP
//! Codec ISO Media File Format Binding") and in Enhanced RTMP.
//!
//! Only keyframe headers are read: VP8's frame tag and start code (RFC 6386 §9.1) and VP9's
//! uncompressed header up to the frame size (VP9 bitstream specification §6.2).

/// Why a frame header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VpError {
    /// The frame ends before the fields needed.
    #[error("frame header cut short")]
    Truncated,
    /// Not a keyframe (only keyframes carry the picture size).
    #[error("not a keyframe")]
    NotKeyframe,
    /// The start or sync code is wrong.
    #[error("bad start code")]
    BadStartCode,
    /// A configuration record shorter than 8 bytes.
    #[error("VPCodecConfigurationRecord shorter than 8 bytes")]
    ShortRecord,
}

/// A VP8 or VP9 stream's configuration, as a keyframe tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VpConfig {
    /// VP9 profile 0–3 (VP8: the frame tag's version).
    pub profile: u8,
    /// Bits per sample: 8, 10 or 12.
    pub bit_depth: u8,
    /// `vpcC` chroma subsampling: 0 = 4:2:0 vertical, 1 = 4:2:0 colocated, 2 = 4:2:2,
    /// 3 = 4:4:4.
    pub chroma_subsampling: u8,
    /// Full-range samples.
    pub full_range: bool,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
}

impl VpConfig {
    /// The VP9 level for this picture size (by luma picture size only; the rate limits of each
    /// level are not checked, so a high frame rate may need a higher level than this).
    pub fn level(&self) -> u8 {
        let samples = u64::from(self.width) * u64::from(self.height);
        const LEVELS: [(u64, u8); 8] = [
            (36_864, 10),
            (73_728, 11),
            (122_880, 20),
            (245_760, 21),
            (552_960, 30),
            (983_040, 31),
            (2_228_224, 40),
            (8_912_896, 50),
        ];
        LEVELS
            .iter()
            .find(|(max, _)| samples <= *max)
            .map_or(60, |(_, l)| *l)
    }

    /// The 8-byte `VPCodecConfigurationRecord` (no codec initialization data); BT.709 colour.
    pub fn to_record(&self) -> Vec<u8> {
        vec![
            self.profile,
            self.level(),
            (self.bit_depth << 4) | (self.chroma_subsampling << 1) | u8::from(self.full_range),
            1, // colour primaries: BT.709
            1, // transfer characteristics: BT.709
            1, // matrix coefficients: BT.709
            0, // codec initialization data size (u16)
            0,
        ]
    }

    /// Reads a record written by [`VpConfig::to_record`] (or any `VPCodecConfigurationRecord`);
    /// the picture size is not in it and comes back as 0×0.
    pub fn parse_record(record: &[u8]) -> Result<VpConfig, VpError> {
        let r = record.get(..8).ok_or(VpError::ShortRecord)?;
        Ok(VpConfig {
            profile: r[0],
            bit_depth: r[2] >> 4,
            chroma_subsampling: (r[2] >> 1) & 0x07,
            full_range: r[2] & 1 == 1,
            width: 0,
            height: 0,
        })
    }

    /// The RFC 6381 / WebM `CODECS` string: `vp09.PP.LL.DD`.
    pub fn vp9_codecs(&self) -> String {
        format!(
            "vp09.{:02}.{:02}.{:02}",
            self.profile,
            self.level(),
            self.bit_depth
        )
    }
}

/// A VP8 keyframe's configuration (RFC 6386 §9.1: 3-byte frame tag, start code `9d 01 2a`,
/// then 14-bit width and height with 2-bit scales).
pub fn vp8_keyframe(frame: &[u8]) -> Result<VpConfig, VpError> {
    let f = frame.get(..10).ok_or(VpError::Truncated)?;
    if f[0] & 1 != 0 {
        return Err(VpError::NotKeyframe);
    }
    if f[3..6] != [0x9d, 0x01, 0x2a] {
        return Err(VpError::BadStartCode);
    }
    Ok(VpConfig {
        profile: (f[0] >> 1) & 0x07,
        bit_depth: 8,
        chroma_subsampling: 1,
        full_range: false,
        width: u32::from(u16::from_le_bytes([f[6], f[7]]) & 0x3fff),
        height: u32::from(u16::from_le_bytes([f[8], f[9]]) & 0x3fff),
    })
}

/// The shared reader, failing as a cut-short header.
struct Bits<'a>(crate::bits::Bits<'a>);

impl Bits<'_> {
    fn read(&mut self, n: u32) -> Result<u32, VpError> {
        self.0.read(n).ok_or(VpError::Truncated)
    }
}

/// Whether a VP9 frame (the first frame of a superframe) is a keyframe.
pub fn vp9_is_keyframe(frame: &[u8]) -> bool {
    vp9_keyframe(frame).is_ok()
}

/// A VP9 keyframe's configuration, from its uncompressed header (VP9 spec §6.2:
/// frame_marker, profile, show_existing_frame, frame_type, show_frame, error_resilient_mode,
/// frame_sync_code, color_config, frame_size).
pub fn vp9_keyframe(frame: &[u8]) -> Result<VpConfig, VpError> {
    let mut b = Bits(crate::bits::Bits::new(frame));
    if b.read(2)? != 2 {
        return Err(VpError::BadStartCode); // frame_marker
    }
    let low = b.read(1)?;
    let high = b.read(1)?;
    let profile = (high << 1 | low) as u8;
    if profile == 3 {
        b.read(1)?; // reserved_zero
    }
    if b.read(1)? == 1 {
        return Err(VpError::NotKeyframe); // show_existing_frame
    }
    if b.read(1)? != 0 {
        return Err(VpError::NotKeyframe); // frame_type: 0 is KEY_FRAME
    }
    b.read(2)?; // show_frame, error_resilient_mode
    if b.read(24)? != 0x49_83_42 {
        return Err(VpError::BadStartCode);
    }
    let bit_depth = if profile >= 2 {
        if b.read(1)? == 1 { 12 } else { 10 }
    } else {
        8
    };
    let color_space = b.read(3)?;
    let (full_range, chroma) = if color_space != 7 {
        let range = b.read(1)? == 1;
        let chroma = if profile == 1 || profile == 3 {
            let x = b.read(1)?;
            let y = b.read(1)?;
            b.read(1)?; // reserved_zero
            match (x, y) {
                (1, 0) => 2, // 4:2:2
                (0, 0) => 3, // 4:4:4
                _ => 0,      // 4:4:0 has no vpcC value; 4:2:0 is not allowed here
            }
        } else {
            0 // 4:2:0, chroma sited vertically between luma rows (VP9's own)
        };
        (range, chroma)
    } else {
        // sRGB: 4:4:4, full range.
        if profile == 1 || profile == 3 {
            b.read(1)?; // reserved_zero
        }
        (true, 3)
    };
    let width = b.read(16)? + 1;
    let height = b.read(16)? + 1;
    Ok(VpConfig {
        profile,
        bit_depth,
        chroma_subsampling: chroma,
        full_range,
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vp8_keyframe_header() {
        // Frame tag (key, version 0, show), start code, 640 and 360 with no scaling.
        let f = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
        let c = vp8_keyframe(&f).expect("keyframe");
        assert_eq!(
            (c.width, c.height, c.profile, c.bit_depth),
            (640, 360, 0, 8)
        );
        assert_eq!(
            vp8_keyframe(&[0x51, 0, 0, 0x9d, 1, 0x2a, 0, 0, 0, 0]),
            Err(VpError::NotKeyframe)
        );
        assert_eq!(vp8_keyframe(&f[..5]), Err(VpError::Truncated));
        let mut bad = f;
        bad[4] = 0;
        assert_eq!(vp8_keyframe(&bad), Err(VpError::BadStartCode));
    }

    /// A VP9 profile-0 keyframe header for `w`×`h`, written field by field.
    fn vp9_key(w: u32, h: u32) -> Vec<u8> {
        let mut bits: Vec<u8> = Vec::new();
        let mut put = |v: u32, n: u32| {
            for i in (0..n).rev() {
                bits.push(((v >> i) & 1) as u8);
            }
        };
        put(2, 2); // frame_marker
        put(0, 1); // profile_low_bit
        put(0, 1); // profile_high_bit
        put(0, 1); // show_existing_frame
        put(0, 1); // frame_type: key
        put(1, 1); // show_frame
        put(0, 1); // error_resilient_mode
        put(0x49_83_42, 24);
        put(2, 3); // color_space BT.709
        put(0, 1); // color_range: studio
        put(w - 1, 16);
        put(h - 1, 16);
        put(0, 8); // whatever follows
        bits.chunks(8)
            .map(|c| c.iter().fold(0u8, |a, b| (a << 1) | b) << (8 - c.len()))
            .collect()
    }

    #[test]
    fn a_vp9_keyframe_header_and_its_record() {
        let c = vp9_keyframe(&vp9_key(1280, 720)).expect("keyframe");
        assert_eq!(
            (c.width, c.height, c.profile, c.bit_depth),
            (1280, 720, 0, 8)
        );
        assert!(!c.full_range);
        assert_eq!(c.level(), 31);
        assert_eq!(c.vp9_codecs(), "vp09.00.31.08");
        let r = c.to_record();
        assert_eq!(r, vec![0, 31, 0x80, 1, 1, 1, 0, 0]);
        let back = VpConfig::parse_record(&r).expect("record");
        assert_eq!(
            (back.profile, back.bit_depth, back.chroma_subsampling),
            (0, 8, 0)
        );
        assert_eq!(VpConfig::parse_record(&r[..7]), Err(VpError::ShortRecord));
        // An inter frame (frame_type 1) is not a keyframe; a cut header is an error.
        let mut inter = vp9_key(1280, 720);
        inter[0] |= 0x04;
        assert_eq!(vp9_keyframe(&inter), Err(VpError::NotKeyframe));
        assert!(!vp9_is_keyframe(&inter));
        assert_eq!(
            vp9_keyframe(&vp9_key(320, 180)[..4]),
            Err(VpError::Truncated)
        );
        assert_eq!(vp9_keyframe(&[]), Err(VpError::Truncated));
    }
}
