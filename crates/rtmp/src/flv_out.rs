//! FLV tag bodies from hub frames, for players that take RTMP messages (RTWebSocket's TC
//! mapping): the classic AVC and AAC tags, and Enhanced RTMP (FourCC) for H.265, VP9, AV1 and
//! Opus. The inverse of [`crate::flv`].

use hub::{Codec, Frame, TrackInfo};

/// The FourCC of an Enhanced RTMP codec.
fn video_fourcc(codec: Codec) -> Option<&'static [u8; 4]> {
    match codec {
        Codec::H265 => Some(b"hvc1"),
        Codec::Vp9 => Some(b"vp09"),
        Codec::Av1 => Some(b"av01"),
        _ => None,
    }
}

/// The sequence header (configuration record) of a video track, when it has one.
pub fn video_config(info: &TrackInfo) -> Option<Vec<u8>> {
    if info.config.is_empty() {
        return None;
    }
    let mut out = match info.codec {
        // Keyframe, AVC, AVCPacketType 0, composition time 0.
        Codec::H264 => vec![0x17, 0, 0, 0, 0],
        c => {
            // IsExHeader | keyframe | SequenceStart, FourCC.
            let mut v = vec![0x80 | 0x10];
            v.extend_from_slice(video_fourcc(c)?);
            v
        }
    };
    out.extend_from_slice(&info.config);
    Some(out)
}

/// A video frame's tag body. `None` for a codec FLV cannot carry (VP8).
pub fn video_frame(info: &TrackInfo, f: &Frame) -> Option<Vec<u8>> {
    let frame_type: u8 = if f.keyframe { 1 } else { 2 };
    // Composition time: pts − dts, in milliseconds, 24-bit signed.
    let cts = ((f.pts - f.dts) / 1000).clamp(-(1 << 23), (1 << 23) - 1) as i32;
    let cts = cts.to_be_bytes();
    let mut out = match info.codec {
        Codec::H264 => vec![frame_type << 4 | 7, 1, cts[1], cts[2], cts[3]],
        Codec::H265 => {
            // CodedFrames (1) with its composition time.
            let mut v = vec![0x80 | frame_type << 4 | 1];
            v.extend_from_slice(b"hvc1");
            v.extend_from_slice(&cts[1..]);
            v
        }
        c => {
            // CodedFramesX (3): no composition time (VP9 and AV1 have no B-frames).
            let mut v = vec![0x80 | frame_type << 4 | 3];
            v.extend_from_slice(video_fourcc(c)?);
            v
        }
    };
    out.extend_from_slice(&f.data);
    Some(out)
}

/// The sequence header of an audio track, when it needs one (AAC, Opus).
pub fn audio_config(info: &TrackInfo) -> Option<Vec<u8>> {
    match info.codec {
        // AAC, 44 kHz/16-bit/stereo flags (fixed for AAC), AACPacketType 0.
        Codec::Aac if !info.config.is_empty() => {
            let mut v = vec![0xaf, 0];
            v.extend_from_slice(&info.config);
            Some(v)
        }
        Codec::Opus => {
            // Enhanced audio: SoundFormat 9 (ExHeader), SequenceStart (0), `Opus`, then an
            // OpusHead (RFC 7845 §5.1) for the channel count and rate.
            let mut v = vec![0x90, b'O', b'p', b'u', b's'];
            v.extend_from_slice(b"OpusHead");
            v.push(1); // version
            v.push(info.channels.unwrap_or(2));
            v.extend_from_slice(&312u16.to_le_bytes()); // pre-skip: libopus's usual
            v.extend_from_slice(&info.sample_rate.unwrap_or(48_000).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // output gain
            v.push(0); // mapping family 0
            Some(v)
        }
        _ => None,
    }
}

/// An audio frame's tag body. `None` for a codec not carried (G.711 goes as WebRTC only).
pub fn audio_frame(info: &TrackInfo, f: &Frame) -> Option<Vec<u8>> {
    let mut out = match info.codec {
        Codec::Aac => vec![0xaf, 1],
        // Enhanced audio, CodedFrames (1).
        Codec::Opus => vec![0x91, b'O', b'p', b'u', b's'],
        _ => return None,
    };
    out.extend_from_slice(&f.data);
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::flv::{AudioTag, VideoTag};

    fn frame(pts: i64, dts: i64, keyframe: bool) -> Frame {
        Frame {
            track: 0,
            pts,
            dts,
            keyframe,
            data: Arc::from(&[0, 0, 0, 2, 0x65, 0x88][..]),
        }
    }

    #[test]
    fn what_is_written_parses_back() {
        let mut h264 = TrackInfo::new(Codec::H264);
        h264.config = Arc::from(&[1u8, 0x42, 0xc0, 0x1e, 0xff, 0xe0, 0x00][..]);
        let config = video_config(&h264).unwrap();
        assert!(matches!(
            VideoTag::parse(&config).unwrap(),
            VideoTag::SequenceStart {
                codec: Codec::H264,
                ..
            }
        ));
        let body = video_frame(&h264, &frame(40_000, 0, true)).unwrap();
        match VideoTag::parse(&body).unwrap() {
            VideoTag::Frame {
                codec,
                keyframe,
                composition_time,
                data,
            } => {
                assert_eq!((codec, keyframe, composition_time), (Codec::H264, true, 40));
                assert_eq!(data, &[0, 0, 0, 2, 0x65, 0x88]);
            }
            other => panic!("{other:?}"),
        }
        for codec in [Codec::H265, Codec::Vp9, Codec::Av1] {
            let mut info = TrackInfo::new(codec);
            info.config = Arc::from(&[1u8, 2, 3][..]);
            assert!(matches!(
                VideoTag::parse(&video_config(&info).unwrap()).unwrap(),
                VideoTag::SequenceStart { codec: c, .. } if c == codec
            ));
            let body = video_frame(&info, &frame(0, 0, false)).unwrap();
            assert!(matches!(
                VideoTag::parse(&body).unwrap(),
                VideoTag::Frame { codec: c, keyframe: false, .. } if c == codec
            ));
        }
        assert!(video_frame(&TrackInfo::new(Codec::Vp8), &frame(0, 0, true)).is_none());
        let mut aac = TrackInfo::new(Codec::Aac);
        aac.config = Arc::from(&[0x11u8, 0x90][..]);
        assert!(matches!(
            AudioTag::parse(&audio_config(&aac).unwrap()).unwrap(),
            AudioTag::SequenceStart {
                codec: Codec::Aac,
                ..
            }
        ));
        assert!(matches!(
            AudioTag::parse(&audio_frame(&aac, &frame(0, 0, true)).unwrap()).unwrap(),
            AudioTag::Frame {
                codec: Codec::Aac,
                ..
            }
        ));
        let opus = TrackInfo::new(Codec::Opus);
        assert!(matches!(
            AudioTag::parse(&audio_config(&opus).unwrap()).unwrap(),
            AudioTag::SequenceStart {
                codec: Codec::Opus,
                ..
            }
        ));
        assert!(matches!(
            AudioTag::parse(&audio_frame(&opus, &frame(0, 0, true)).unwrap()).unwrap(),
            AudioTag::Frame {
                codec: Codec::Opus,
                ..
            }
        ));
    }
}
