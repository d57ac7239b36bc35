//! AV1: OBUs in the low-overhead bitstream format (each with its size field), the sequence
//! header fields that MP4's `av1C` (AV1 Codec ISO Media File Format Binding §2.3) and the
//! `CODECS` string need, and that record itself.
//!
//! The sequence header is read only as far as the picture size and colour configuration
//! (AV1 specification §5.5); nothing after it.

/// Why AV1 data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Av1Error {
    /// The data ends before the fields needed.
    #[error("AV1 data cut short")]
    Truncated,
    /// No sequence header OBU where one was expected.
    #[error("no sequence header OBU")]
    NoSequenceHeader,
    /// A field with a value the specification reserves.
    #[error("invalid AV1 {0}")]
    Invalid(&'static str),
}

/// OBU type of a sequence header (AV1 spec §6.2.2).
pub const OBU_SEQUENCE_HEADER: u8 = 1;
/// OBU type of a temporal delimiter.
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;
/// OBU type of a tile list (large-scale tile decoding only; never carried in MP4 or RTP).
pub const OBU_TILE_LIST: u8 = 8;

/// Reads an unsigned LEB128 number: (value, bytes used).
pub fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in data.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Appends `value` as unsigned LEB128.
pub fn write_leb128(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The OBUs of a temporal unit in the low-overhead format: (type, the whole OBU).
pub fn obus(data: &[u8]) -> impl Iterator<Item = Result<(u8, &[u8]), Av1Error>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parse = |rest: &[u8]| -> Result<usize, Av1Error> {
            let h = *rest.first().ok_or(Av1Error::Truncated)?;
            let header = if h & 0x04 != 0 { 2 } else { 1 };
            if h & 0x02 == 0 {
                // No size field: the OBU runs to the end.
                return Ok(rest.len());
            }
            let (size, used) = leb128(rest.get(header..).ok_or(Av1Error::Truncated)?)
                .ok_or(Av1Error::Truncated)?;
            let end = header + used + usize::try_from(size).map_err(|_| Av1Error::Truncated)?;
            if end > rest.len() {
                return Err(Av1Error::Truncated);
            }
            Ok(end)
        };
        match parse(rest) {
            Ok(end) => {
                let (obu, tail) = rest.split_at(end);
                rest = tail;
                Some(Ok(((obu[0] >> 3) & 0x0f, obu)))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

/// Whether the first frame in a temporal unit is a key frame: its frame header (in a frame
/// or frame header OBU) starts with `show_existing_frame` = 0 and `frame_type` = KEY_FRAME (AV1
/// spec §5.9.2; streams with `reduced_still_picture_header` are still pictures and not
/// looked at here).
pub fn is_key_frame(temporal_unit: &[u8]) -> bool {
    for obu in obus(temporal_unit) {
        let Ok((kind, obu)) = obu else { return false };
        if kind != 3 && kind != 6 {
            continue; // not a frame header or frame OBU
        }
        let h = obu[0];
        let mut at = if h & 0x04 != 0 { 2 } else { 1 };
        if h & 0x02 != 0 {
            let Some((_, used)) = obu.get(at..).and_then(leb128) else {
                return false;
            };
            at += used;
        }
        // show_existing_frame (1 bit) = 0, frame_type (2 bits) = 0.
        return obu.get(at).is_some_and(|b| b & 0xe0 == 0);
    }
    false
}

/// What a sequence header says about the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Config {
    /// `seq_profile`: 0 main, 1 high, 2 professional.
    pub profile: u8,
    /// `seq_level_idx` of the first operating point.
    pub level: u8,
    /// `seq_tier` of the first operating point (high tier).
    pub tier: bool,
    /// Bits per sample: 8, 10 or 12.
    pub bit_depth: u8,
    /// No chroma planes.
    pub monochrome: bool,
    /// Chroma halved horizontally.
    pub subsampling_x: bool,
    /// Chroma halved vertically.
    pub subsampling_y: bool,
    /// `chroma_sample_position`.
    pub chroma_sample_position: u8,
    /// `max_frame_width_minus_1 + 1`.
    pub width: u32,
    /// `max_frame_height_minus_1 + 1`.
    pub height: u32,
    /// The sequence header OBU, with its size field (the record's `configOBUs`).
    pub sequence_header: Vec<u8>,
}

/// The shared reader, failing as cut-short data.
struct Bits<'a>(crate::bits::Bits<'a>);

impl Bits<'_> {
    fn f(&mut self, n: u32) -> Result<u32, Av1Error> {
        self.0.read(n).ok_or(Av1Error::Truncated)
    }

    fn flag(&mut self) -> Result<bool, Av1Error> {
        Ok(self.f(1)? == 1)
    }

    /// `uvlc()` (AV1 spec §4.10.3).
    fn uvlc(&mut self) -> Result<u32, Av1Error> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros >= 32 {
                return Ok(u32::MAX);
            }
        }
        Ok(self.f(zeros)? + ((1u32 << zeros) - 1))
    }
}

impl Av1Config {
    /// From the first sequence header OBU in `temporal_unit` (low-overhead format).
    pub fn from_temporal_unit(temporal_unit: &[u8]) -> Result<Av1Config, Av1Error> {
        for obu in obus(temporal_unit) {
            let (kind, obu) = obu?;
            if kind == OBU_SEQUENCE_HEADER {
                return Av1Config::from_sequence_header(obu);
            }
        }
        Err(Av1Error::NoSequenceHeader)
    }

    /// From one sequence header OBU (header, size field, payload).
    pub fn from_sequence_header(obu: &[u8]) -> Result<Av1Config, Av1Error> {
        let h = *obu.first().ok_or(Av1Error::Truncated)?;
        if (h >> 3) & 0x0f != OBU_SEQUENCE_HEADER {
            return Err(Av1Error::NoSequenceHeader);
        }
        let mut start = if h & 0x04 != 0 { 2 } else { 1 };
        if h & 0x02 != 0 {
            start += leb128(obu.get(start..).ok_or(Av1Error::Truncated)?)
                .ok_or(Av1Error::Truncated)?
                .1;
        }
        let mut b = Bits(crate::bits::Bits::new(
            obu.get(start..).ok_or(Av1Error::Truncated)?,
        ));
        let profile = b.f(3)? as u8;
        if profile > 2 {
            return Err(Av1Error::Invalid("seq_profile"));
        }
        b.f(1)?; // still_picture
        let reduced = b.flag()?;
        let (level, tier);
        if reduced {
            level = b.f(5)? as u8;
            tier = false;
        } else {
            let mut decoder_model = false;
            let mut buffer_delay_len = 0;
            if b.flag()? {
                // timing_info
                b.f(32)?;
                b.f(32)?;
                if b.flag()? {
                    b.uvlc()?;
                }
                decoder_model = b.flag()?;
                if decoder_model {
                    buffer_delay_len = b.f(5)? + 1;
                    b.f(32)?; // num_units_in_decoding_tick
                    b.f(5)?; // buffer_removal_time_length_minus_1
                    b.f(5)?; // frame_presentation_time_length_minus_1
                }
            }
            let initial_display_delay = b.flag()?;
            let points = b.f(5)? + 1;
            let (mut first_level, mut first_tier) = (0, false);
            for i in 0..points {
                b.f(12)?; // operating_point_idc
                let l = b.f(5)? as u8;
                let t = l > 7 && b.flag()?;
                if i == 0 {
                    (first_level, first_tier) = (l, t);
                }
                if decoder_model && b.flag()? {
                    b.f(buffer_delay_len)?; // decoder_buffer_delay
                    b.f(buffer_delay_len)?; // encoder_buffer_delay
                    b.f(1)?; // low_delay_mode_flag
                }
                if initial_display_delay && b.flag()? {
                    b.f(4)?;
                }
            }
            (level, tier) = (first_level, first_tier);
        }
        let width_bits = b.f(4)? + 1;
        let height_bits = b.f(4)? + 1;
        let width = b.f(width_bits)? + 1;
        let height = b.f(height_bits)? + 1;
        if !reduced && b.flag()? {
            // frame_id_numbers_present_flag
            b.f(4)?;
            b.f(3)?;
        }
        b.f(3)?; // use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
        if !reduced {
            b.f(4)?; // interintra_compound, masked_compound, warped_motion, dual_filter
            let order_hint = b.flag()?;
            if order_hint {
                b.f(2)?; // jnt_comp, ref_frame_mvs
            }
            let force_screen_content = if b.flag()? { 2 } else { b.f(1)? };
            if force_screen_content > 0 && !b.flag()? {
                b.f(1)?; // seq_force_integer_mv
            }
            if order_hint {
                b.f(3)?;
            }
        }
        b.f(3)?; // enable_superres, enable_cdef, enable_restoration
        // color_config (§5.5.2)
        let high_bitdepth = b.flag()?;
        let bit_depth = if profile == 2 && high_bitdepth {
            if b.flag()? { 12 } else { 10 }
        } else if high_bitdepth {
            10
        } else {
            8
        };
        let monochrome = profile != 1 && b.flag()?;
        let (mut cp, mut tc, mut mc) = (2, 2, 2);
        if b.flag()? {
            cp = b.f(8)?;
            tc = b.f(8)?;
            mc = b.f(8)?;
        }
        let (sx, sy, csp);
        if monochrome {
            b.f(1)?; // color_range
            (sx, sy, csp) = (true, true, 0);
        } else if cp == 1 && tc == 13 && mc == 0 {
            // sRGB: 4:4:4, full range.
            (sx, sy, csp) = (false, false, 0);
        } else {
            b.f(1)?; // color_range
            (sx, sy) = match profile {
                0 => (true, true),
                1 => (false, false),
                _ if bit_depth == 12 => {
                    let x = b.flag()?;
                    (x, x && b.flag()?)
                }
                _ => (true, false),
            };
            csp = if sx && sy { b.f(2)? as u8 } else { 0 };
        }
        // The record's configOBUs carry the OBU with its size field.
        let mut sequence_header = Vec::with_capacity(obu.len() + 2);
        if h & 0x02 != 0 {
            sequence_header.extend_from_slice(obu);
        } else {
            let header = if h & 0x04 != 0 { 2 } else { 1 };
            sequence_header.push(h | 0x02);
            sequence_header.extend_from_slice(&obu[1..header]);
            write_leb128((obu.len() - header) as u64, &mut sequence_header);
            sequence_header.extend_from_slice(&obu[header..]);
        }
        Ok(Av1Config {
            profile,
            level,
            tier,
            bit_depth,
            monochrome,
            subsampling_x: sx,
            subsampling_y: sy,
            chroma_sample_position: csp,
            width,
            height,
            sequence_header,
        })
    }

    /// The `AV1CodecConfigurationRecord` (`av1C`'s body): 4 bytes, then the sequence header.
    pub fn to_record(&self) -> Vec<u8> {
        let mut r = vec![
            0x81, // marker, version 1
            (self.profile << 5) | (self.level & 0x1f),
            (u8::from(self.tier) << 7)
                | (u8::from(self.bit_depth > 8) << 6)
                | (u8::from(self.bit_depth == 12) << 5)
                | (u8::from(self.monochrome) << 4)
                | (u8::from(self.subsampling_x) << 3)
                | (u8::from(self.subsampling_y) << 2)
                | (self.chroma_sample_position & 0x03),
            0, // no initial_presentation_delay
        ];
        r.extend_from_slice(&self.sequence_header);
        r
    }

    /// Reads a record [`Av1Config::to_record`] wrote (or any `av1C` body holding the
    /// sequence header).
    pub fn parse_record(record: &[u8]) -> Result<Av1Config, Av1Error> {
        if record.len() < 4 || record[0] != 0x81 {
            return Err(Av1Error::Invalid("av1C record"));
        }
        Av1Config::from_temporal_unit(&record[4..])
    }

    /// The `CODECS` string (AV1 ISOBMFF binding, Annex A): `av01.P.LLT.DD`.
    pub fn codecs(&self) -> String {
        format!(
            "av01.{}.{:02}{}.{:02}",
            self.profile,
            self.level,
            if self.tier { 'H' } else { 'M' },
            self.bit_depth
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_both_ways() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, 1 << 40] {
            let mut out = Vec::new();
            write_leb128(v, &mut out);
            assert_eq!(leb128(&out), Some((v, out.len())));
        }
        assert_eq!(leb128(&[0x80, 0x80]), None);
        assert_eq!(leb128(&[0xff; 9]), None);
    }

    /// A sequence header as libaom writes one for 640×360, 8-bit 4:2:0, main profile,
    /// level 3.0 (idx 4), written field by field.
    pub(crate) fn sequence_header_obu(w: u32, h: u32) -> Vec<u8> {
        let mut bits = String::new();
        let mut put = |v: u32, n: u32| {
            for i in (0..n).rev() {
                bits.push(if (v >> i) & 1 == 1 { '1' } else { '0' });
            }
        };
        put(0, 3); // seq_profile
        put(0, 1); // still_picture
        put(0, 1); // reduced_still_picture_header
        put(0, 1); // timing_info_present_flag
        put(0, 1); // initial_display_delay_present_flag
        put(0, 5); // operating_points_cnt_minus_1
        put(0, 12); // operating_point_idc
        put(4, 5); // seq_level_idx
        put(15, 4); // frame_width_bits_minus_1
        put(15, 4); // frame_height_bits_minus_1
        put(w - 1, 16);
        put(h - 1, 16);
        put(0, 1); // frame_id_numbers_present_flag
        put(0, 3); // 128x128, filter_intra, intra_edge
        put(0, 4); // interintra, masked, warped, dual_filter
        put(1, 1); // enable_order_hint
        put(0, 2); // jnt_comp, ref_frame_mvs
        put(1, 1); // seq_choose_screen_content_tools
        put(1, 1); // seq_choose_integer_mv
        put(6, 3); // order_hint_bits_minus_1
        put(0, 3); // superres, cdef, restoration
        put(0, 1); // high_bitdepth
        put(0, 1); // mono_chrome
        put(0, 1); // color_description_present_flag
        put(0, 1); // color_range
        put(0, 2); // chroma_sample_position
        put(0, 1); // separate_uv_delta_q
        put(1, 1); // film_grain_params_present... then trailing bits
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        let payload: Vec<u8> = (0..bits.len() / 8)
            .map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).expect("bits"))
            .collect();
        let mut obu = vec![(OBU_SEQUENCE_HEADER << 3) | 0x02];
        write_leb128(payload.len() as u64, &mut obu);
        obu.extend(payload);
        obu
    }

    #[test]
    fn a_sequence_header_and_its_record() {
        let obu = sequence_header_obu(640, 360);
        let mut tu = vec![(OBU_TEMPORAL_DELIMITER << 3) | 0x02, 0];
        tu.extend_from_slice(&obu);
        tu.extend_from_slice(&[(6 << 3) | 0x02, 3, 1, 2, 3]); // a frame OBU
        let kinds: Vec<u8> = obus(&tu).map(|o| o.expect("obu").0).collect();
        assert_eq!(kinds, vec![2, 1, 6]);
        let c = Av1Config::from_temporal_unit(&tu).expect("config");
        assert_eq!((c.width, c.height, c.profile, c.level), (640, 360, 0, 4));
        assert_eq!(
            (c.bit_depth, c.subsampling_x, c.subsampling_y),
            (8, true, true)
        );
        assert_eq!(c.sequence_header, obu);
        assert_eq!(c.codecs(), "av01.0.04M.08");
        let r = c.to_record();
        assert_eq!(&r[..4], &[0x81, 0x04, 0x0c, 0]);
        assert_eq!(Av1Config::parse_record(&r), Ok(c));
        // Without its size field (as RTP carries it) the same OBU reads the same.
        let mut bare = vec![OBU_SEQUENCE_HEADER << 3];
        bare.extend_from_slice(&obu[2..]);
        assert_eq!(
            Av1Config::from_sequence_header(&bare).map(|c| c.sequence_header),
            Ok(obu.clone())
        );
        // Cut short, or missing: errors, never a panic.
        assert_eq!(
            Av1Config::from_sequence_header(&obu[..5]).err(),
            Some(Av1Error::Truncated)
        );
        assert_eq!(
            Av1Config::from_temporal_unit(&[0x32, 0]).err(),
            Some(Av1Error::NoSequenceHeader)
        );
        assert!(obus(&[0x0a, 0x05, 1]).any(|o| o.is_err()));
    }

    #[test]
    fn key_frames_are_told_by_their_frame_header() {
        // A frame OBU (type 6) with show_existing_frame 0 and frame_type 0 (KEY_FRAME)...
        let key = [(6 << 3) | 0x02, 2, 0x10, 0xff];
        // ...and one with frame_type 1 (INTER), after a temporal delimiter.
        let inter = [(2 << 3) | 0x02, 0, (6 << 3) | 0x02, 2, 0x20, 0xff];
        assert!(is_key_frame(&key));
        assert!(!is_key_frame(&inter));
        assert!(!is_key_frame(&[]));
        assert!(!is_key_frame(&[(6 << 3) | 0x02, 5]));
    }
}
