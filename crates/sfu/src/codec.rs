//! What the forwarding path needs to know about codecs without depacketizing: where a
//! keyframe starts, so a subscriber can be switched onto a layer at a point it can decode.

use str0m::format::{Codec, detect_av1_keyframe, detect_h264_nalu, detect_vp8_keyframe};
use str0m::format::{detect_h264_keyframe, detect_vp9_keyframe};

const H264_SPS: u8 = 7;
const H264_FU_A: u8 = 28;

/// True when `payload` is the first RTP packet of a keyframe: a subscriber switched onto the
/// stream at this packet can decode from here on.
pub fn is_keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        // str0m's VP8 check already requires S=1 and partition 0.
        Codec::Vp8 => detect_vp8_keyframe(payload),
        Codec::Vp9 => detect_vp9_keyframe(payload),
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn audio_always_switchable() {
        assert!(is_keyframe_start(Codec::Opus, &[1, 2, 3]));
    }
}
