//! What the forwarding path needs to know about codecs without depacketizing: where a
//! keyframe starts, so a subscriber can be switched onto a layer at a point it can decode.

use str0m::format::detect_h264_keyframe;
use str0m::format::{Codec, detect_av1_keyframe, detect_h264_nalu, detect_vp8_keyframe};

const H264_SPS: u8 = 7;
const H264_FU_A: u8 = 28;

/// True when `payload` is the first RTP packet of a keyframe: a subscriber switched onto the
/// stream at this packet can decode from here on.
pub fn is_keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        // str0m's VP8 check already requires S=1 and partition 0.
        Codec::Vp8 => detect_vp8_keyframe(payload),
        // A keyframe picture starts with its base spatial layer's first packet.
        Codec::Vp9 => Vp9Desc::parse(payload).is_some_and(|d| d.keyframe && d.begin && d.sid == 0),
        Codec::Av1 => detect_av1_keyframe(payload),
        Codec::H264 => {
            // Chrome (and most encoders) send SPS/PPS in a STAP-A just before the IDR: switching
            // there gives the decoder its parameter sets. An IDR without them in front is
            // accepted only at its first fragment.
            if detect_h264_nalu(payload, H264_SPS) {
                return true;
            }
            if !detect_h264_keyframe(payload) {
                return false;
            }
            match payload.first().map(|b| b & 0x1f) {
                Some(H264_FU_A) => payload.get(1).is_some_and(|fu| fu & 0x80 != 0),
                _ => true,
            }
        }
        // Audio and anything unknown: every packet stands alone.
        _ => true,
    }
}

/// Picture heights a keyframe's first packet tells, lowest layer first: VP9's scalability
/// structure lists every spatial layer's; a VP8 key frame header or an H.264 SPS in front of an
/// IDR gives the one layer's. Empty when the packet says nothing. Only called on keyframe
/// starts, so the layer choice can use real heights instead of guessing from the declared size
/// (encoders lower their resolution under CPU or bandwidth pressure).
pub fn picture_heights(codec: Codec, payload: &[u8]) -> Vec<u32> {
    match codec {
        Codec::Vp9 => vp9_ss_heights(payload).unwrap_or_default(),
        Codec::Vp8 => vp8_key_height(payload).into_iter().collect(),
        Codec::H264 => h264_sps_height(payload).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// RFC 9628 §4.2: descriptor, then (V=1) the scalability structure with N_S+1 sizes (Y=1).
fn vp9_ss_heights(p: &[u8]) -> Option<Vec<u32>> {
    let b0 = *p.first()?;
    let (i, pf, l, f, v) = (
        b0 & 0x80 != 0,
        b0 & 0x40 != 0,
        b0 & 0x20 != 0,
        b0 & 0x10 != 0,
        b0 & 0x02 != 0,
    );
    if !v {
        return None;
    }
    let mut idx = 1;
    if i {
        idx += if *p.get(idx)? & 0x80 != 0 { 2 } else { 1 };
    }
    if l {
        idx += 1;
        if !f {
            idx += 1; // TL0PICIDX
        }
    }
    if f && pf {
        // Up to three P_DIFF bytes, each saying (N) whether another follows.
        for _ in 0..3 {
            let d = *p.get(idx)?;
            idx += 1;
            if d & 1 == 0 {
                break;
            }
        }
    }
    let ss = *p.get(idx)?;
    idx += 1;
    let layers = (ss >> 5) as usize + 1;
    if ss & 0x10 == 0 {
        return None; // no sizes given
    }
    let mut heights = Vec::with_capacity(layers);
    for _ in 0..layers {
        let h = p.get(idx + 2..idx + 4)?;
        heights.push(u16::from_be_bytes([h[0], h[1]]) as u32);
        idx += 4;
    }
    Some(heights)
}

/// RFC 7741 descriptor, then the VP8 key frame header (RFC 6386 §9.1): start code and sizes.
fn vp8_key_height(p: &[u8]) -> Option<u32> {
    let b0 = *p.first()?;
    let mut idx = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(1)?;
        idx = 2;
        if x & 0x80 != 0 {
            idx += if *p.get(idx)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            idx += 1;
        }
        if x & 0x30 != 0 {
            idx += 1;
        }
    }
    media::vp::vp8_keyframe(p.get(idx..)?)
        .ok()
        .map(|c| c.height)
}

/// An SPS alone or inside a STAP-A (RFC 6184 §5.7.1).
fn h264_sps_height(p: &[u8]) -> Option<u32> {
    let sps = match p.first()? & 0x1f {
        H264_SPS => p,
        24 => {
            let mut i = 1;
            loop {
                let len = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]) as usize;
                let nal = p.get(i + 2..i + 2 + len)?;
                if nal.first().is_some_and(|h| h & 0x1f == H264_SPS) {
                    break nal;
                }
                i += 2 + len;
            }
        }
        _ => return None,
    };
    media::avc::sps_dimensions(sps).map(|(_, h)| h)
}

/// The fields of a VP9 RTP payload descriptor (RFC 9628 §4.2) that layer selection needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9Desc {
    /// P=0: the picture is not predicted from an earlier picture.
    pub keyframe: bool,
    /// B: first packet of a layer frame.
    pub begin: bool,
    /// E: last packet of a layer frame.
    pub end: bool,
    /// Spatial layer (0 without layer indices).
    pub sid: u8,
    /// Temporal layer (0 without layer indices).
    pub tid: u8,
    /// L: layer indices are present (the stream is scalable).
    pub layered: bool,
}

impl Vp9Desc {
    /// Parses the descriptor at the start of a VP9 RTP payload; `None` if it is cut short.
    pub fn parse(payload: &[u8]) -> Option<Vp9Desc> {
        let b0 = *payload.first()?;
        let (i, p, l, b, e) = (
            b0 & 0x80 != 0,
            b0 & 0x40 != 0,
            b0 & 0x20 != 0,
            b0 & 0x08 != 0,
            b0 & 0x04 != 0,
        );
        let mut idx = 1;
        if i {
            let pid = *payload.get(idx)?;
            idx += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        let (mut sid, mut tid) = (0, 0);
        if l {
            let layer = *payload.get(idx)?;
            tid = layer >> 5;
            sid = (layer >> 1) & 0x07;
        }
        Some(Vp9Desc {
            keyframe: !p,
            begin: b,
            end: e,
            sid,
            tid,
            layered: l,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp9_descriptor_layers_and_switch_points() {
        // I=1 (15-bit picture id), P=0, L=1, B=1, E=0; TID=2 U=0 SID=1 D=1; TL0PICIDX.
        let d = Vp9Desc::parse(&[0xa8, 0x80, 0x01, (2 << 5) | (1 << 1) | 1, 7, 0]).unwrap();
        assert_eq!(
            (d.keyframe, d.begin, d.end, d.sid, d.tid, d.layered),
            (true, true, false, 1, 2, true)
        );
        assert!(!is_keyframe_start(
            Codec::Vp9,
            &[0xa8, 0x80, 0x01, (1 << 1) | 1, 7]
        ));
        // The base layer's first packet of a keyframe picture.
        assert!(is_keyframe_start(Codec::Vp9, &[0xa8, 0x80, 0x01, 0, 7]));
        // Predicted picture (P=1).
        assert!(!is_keyframe_start(Codec::Vp9, &[0xe8, 0x80, 0x01, 0, 7]));
        // Truncated: no panic, no keyframe.
        assert_eq!(Vp9Desc::parse(&[0xa0, 0x80]), None);
        assert!(!is_keyframe_start(Codec::Vp9, &[]));
        // Without layer indices (plain VP9): SID 0.
        let d = Vp9Desc::parse(&[0x0c, 1, 2]).unwrap();
        assert_eq!((d.sid, d.layered, d.begin, d.end), (0, false, true, true));
    }

    #[test]
    fn vp8_keyframe_start_needs_s_bit_and_p_clear() {
        // X=1, S=1, PID=0; ext: I=1; 7-bit picture id; VP8 header byte with P=0.
        let key = [0x90, 0x80, 0x01, 0x10, 0, 0];
        let delta = [0x90, 0x80, 0x01, 0x11, 0, 0];
        let middle = [0x80, 0x80, 0x01, 0x10, 0, 0];
        assert!(is_keyframe_start(Codec::Vp8, &key));
        assert!(!is_keyframe_start(Codec::Vp8, &delta));
        assert!(!is_keyframe_start(Codec::Vp8, &middle));
        assert!(!is_keyframe_start(Codec::Vp8, &[]));
    }

    #[test]
    fn h264_switch_points() {
        // STAP-A with SPS (0x67) inside.
        let stap = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce];
        assert!(is_keyframe_start(Codec::H264, &stap));
        // FU-A of an IDR: start fragment yes, middle fragment no.
        assert!(is_keyframe_start(Codec::H264, &[0x7c, 0x85, 1, 2]));
        assert!(!is_keyframe_start(Codec::H264, &[0x7c, 0x05, 1, 2]));
        // A non-IDR slice.
        assert!(!is_keyframe_start(Codec::H264, &[0x41, 1, 2]));
        assert!(!is_keyframe_start(Codec::H264, &[]));
    }

    #[test]
    fn picture_heights_from_keyframes() {
        // VP9: I=1 (7-bit id), P=0, L=1, F=0, B=1, V=1; layer byte; TL0PICIDX; SS with
        // N_S=2 (three layers), Y=1: 320x180, 640x360, 1280x720.
        let mut p = vec![0xaa, 0x01, 0x00, 0x05, (2 << 5) | 0x10];
        for (w, h) in [(320u16, 180u16), (640, 360), (1280, 720)] {
            p.extend_from_slice(&w.to_be_bytes());
            p.extend_from_slice(&h.to_be_bytes());
        }
        assert_eq!(picture_heights(Codec::Vp9, &p), vec![180, 360, 720]);
        p[0] &= !0x02; // V=0: no structure
        assert!(picture_heights(Codec::Vp9, &p).is_empty());
        // VP8: X=1, I=1 (7-bit), S=1; key frame tag, start code, 640x360.
        let vp8 = [
            0x90, 0x80, 0x05, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01,
        ];
        assert_eq!(picture_heights(Codec::Vp8, &vp8), vec![360]);
        // Truncated or not a key frame: nothing, no panic.
        assert!(picture_heights(Codec::Vp8, &vp8[..8]).is_empty());
        assert!(picture_heights(Codec::H264, &[0x78, 0x00]).is_empty());
        assert!(picture_heights(Codec::Vp9, &[0x02]).is_empty());
    }

    #[test]
    fn audio_always_switchable() {
        assert!(is_keyframe_start(Codec::Opus, &[1, 2, 3]));
    }
}
