//! FLV audio and video tag bodies, as RTMP audio (type 8) and video (type 9) messages carry
//! them: the Adobe FLV spec v10.1 (annex E.4.2, E.4.3) and the Enhanced RTMP spec (Veovera
//! v1 and v2: `ExVideoTagHeader`, `ExAudioTagHeader`, FourCC codecs, ModEx).

use hub::Codec;

use crate::RtmpError;

/// A parsed video tag body. Slices borrow from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// Decoder configuration: `avcC`, `hvcC`, `av1C` or `vpcC`.
    SequenceStart {
        /// The codec.
        codec: Codec,
        /// The configuration record.
        config: &'a [u8],
    },
    /// One access unit.
    Frame {
        /// The codec.
        codec: Codec,
        /// FLV frame type 1 (key frame) or 4 (generated key frame).
        keyframe: bool,
        /// Composition time offset in milliseconds: pts = dts + this.
        composition_time: i32,
        /// H.264/H.265: length-prefixed NAL units; AV1: OBUs; VP8/VP9: a frame.
        data: &'a [u8],
    },
    /// The end of the sequence (the stream stops or the configuration changes).
    SequenceEnd {
        /// The codec.
        codec: Codec,
    },
    /// A tag that carries no picture (command frame, metadata): nothing to do.
    Other,
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// Decoder configuration: AudioSpecificConfig for AAC, the `OpusHead` for Opus.
    SequenceStart {
        /// The codec.
        codec: Codec,
        /// The configuration.
        config: &'a [u8],
    },
    /// One raw access unit (AAC without ADTS, an Opus packet).
    Frame {
        /// The codec.
        codec: Codec,
        /// The payload.
        data: &'a [u8],
    },
    /// The end of the sequence.
    SequenceEnd {
        /// The codec.
        codec: Codec,
    },
    /// A tag that carries no audio (multichannel config): nothing to do.
    Other,
}

const EX_VIDEO_CODED_FRAMES: u8 = 1;
const EX_VIDEO_CODED_FRAMES_X: u8 = 3;
const EX_MULTITRACK_VIDEO: u8 = 6;
const EX_MULTITRACK_AUDIO: u8 = 5;
const EX_MODEX: u8 = 7;

impl<'a> VideoTag<'a> {
    /// Parses the body of an RTMP video message (an FLV VIDEODATA).
    pub fn parse(body: &'a [u8]) -> Result<VideoTag<'a>, RtmpError> {
        let mut r = TagReader { buf: body };
        let first = r.u8("video tag header")?;
        let frame_type = (first >> 4) & 0x07;
        if first & 0x80 != 0 {
            return parse_ex_video(r, frame_type, first & 0x0f);
        }
        match first & 0x0f {
            7 => {}
            id => return Err(RtmpError::UnsupportedCodec(video_codec_name(id))),
        }
        let packet_type = r.u8("AVCPacketType")?;
        let composition_time = r.i24("composition time")?;
        if frame_type == 5 {
            return Ok(VideoTag::Other); // video info/command frame: no picture
        }
        match packet_type {
            0 => Ok(VideoTag::SequenceStart {
                codec: Codec::H264,
                config: r.buf,
            }),
            1 => Ok(VideoTag::Frame {
                codec: Codec::H264,
                keyframe: is_key(frame_type)?,
                composition_time,
                data: r.buf,
            }),
            2 => Ok(VideoTag::SequenceEnd { codec: Codec::H264 }),
            _ => Err(RtmpError::MalformedTag("AVCPacketType is not 0, 1 or 2")),
        }
    }
}

fn parse_ex_video(
    mut r: TagReader<'_>,
    frame_type: u8,
    packet_type: u8,
) -> Result<VideoTag<'_>, RtmpError> {
    let packet_type = r.skip_modex(packet_type)?;
    if packet_type == EX_MULTITRACK_VIDEO {
        return Err(RtmpError::Unsupported(
            "multitrack video (Enhanced RTMP v2)",
        ));
    }
    let fourcc = r.fourcc()?;
    let codec = match &fourcc {
        b"avc1" => Codec::H264,
        b"hvc1" => Codec::H265,
        b"av01" => Codec::Av1,
        b"vp09" => Codec::Vp9,
        b"vp08" => Codec::Vp8,
        other => return Err(RtmpError::UnsupportedCodec(fourcc_name(other))),
    };
    if frame_type == 5 {
        return Ok(VideoTag::Other); // command frame: one VideoCommand byte, no picture
    }
    match packet_type {
        0 => Ok(VideoTag::SequenceStart {
            codec,
            config: r.buf,
        }),
        EX_VIDEO_CODED_FRAMES | EX_VIDEO_CODED_FRAMES_X => {
            // Only AVC and HEVC CodedFrames carry a composition time; CodedFramesX means zero.
            let composition_time = match codec {
                Codec::H264 | Codec::H265 if packet_type == EX_VIDEO_CODED_FRAMES => {
                    r.i24("composition time")?
                }
                _ => 0,
            };
            Ok(VideoTag::Frame {
                codec,
                keyframe: is_key(frame_type)?,
                composition_time,
                data: r.buf,
            })
        }
        2 => Ok(VideoTag::SequenceEnd { codec }),
        // Metadata (AMF colour info) and MPEG2TSSequenceStart: nothing a reader needs.
        4 | 5 => Ok(VideoTag::Other),
        _ => Err(RtmpError::MalformedTag("unknown enhanced VideoPacketType")),
    }
}

fn is_key(frame_type: u8) -> Result<bool, RtmpError> {
    match frame_type {
        1 | 4 => Ok(true),
        2 | 3 => Ok(false),
        _ => Err(RtmpError::MalformedTag("video frame type is not 1 to 5")),
    }
}

impl<'a> AudioTag<'a> {
    /// Parses the body of an RTMP audio message (an FLV AUDIODATA).
    pub fn parse(body: &'a [u8]) -> Result<AudioTag<'a>, RtmpError> {
        let mut r = TagReader { buf: body };
        let first = r.u8("audio tag header")?;
        match first >> 4 {
            10 => {}
            9 => return parse_ex_audio(r, first & 0x0f),
            format => return Err(RtmpError::UnsupportedCodec(audio_codec_name(format))),
        }
        // SoundRate/SoundSize/SoundType are fixed for AAC; the AudioSpecificConfig is the truth.
        match r.u8("AACPacketType")? {
            0 => Ok(AudioTag::SequenceStart {
                codec: Codec::Aac,
                config: r.buf,
            }),
            1 => Ok(AudioTag::Frame {
                codec: Codec::Aac,
                data: r.buf,
            }),
            _ => Err(RtmpError::MalformedTag("AACPacketType is not 0 or 1")),
        }
    }
}

fn parse_ex_audio(mut r: TagReader<'_>, packet_type: u8) -> Result<AudioTag<'_>, RtmpError> {
    let packet_type = r.skip_modex(packet_type)?;
    if packet_type == EX_MULTITRACK_AUDIO {
        return Err(RtmpError::Unsupported(
            "multitrack audio (Enhanced RTMP v2)",
        ));
    }
    let fourcc = r.fourcc()?;
    let codec = match &fourcc {
        b"mp4a" => Codec::Aac,
        b"Opus" => Codec::Opus,
        other => return Err(RtmpError::UnsupportedCodec(fourcc_name(other))),
    };
    match packet_type {
        0 => Ok(AudioTag::SequenceStart {
            codec,
            config: r.buf,
        }),
        1 => Ok(AudioTag::Frame { codec, data: r.buf }),
        2 => Ok(AudioTag::SequenceEnd { codec }),
        4 => Ok(AudioTag::Other), // MultichannelConfig: channel order, not needed here
        _ => Err(RtmpError::MalformedTag("unknown enhanced AudioPacketType")),
    }
}

/// A cursor over a tag body whose errors say which field was cut short.
struct TagReader<'a> {
    buf: &'a [u8],
}

impl<'a> TagReader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RtmpError> {
        let Some((head, rest)) = self.buf.split_at_checked(n) else {
            return Err(RtmpError::MalformedTag(what_truncated(what)));
        };
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, RtmpError> {
        Ok(self.take(1, what)?[0])
    }

    /// SI24, big-endian.
    fn i24(&mut self, what: &'static str) -> Result<i32, RtmpError> {
        let b = self.take(3, what)?;
        // Place the 24 bits at the top of an i32 and shift back down to sign-extend.
        Ok(i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8)
    }

    fn fourcc(&mut self) -> Result<[u8; 4], RtmpError> {
        let b = self.take(4, "FourCC")?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    /// Enhanced RTMP v2 ModEx: skips modifier data, returns the real packet type.
    fn skip_modex(&mut self, mut packet_type: u8) -> Result<u8, RtmpError> {
        while packet_type == EX_MODEX {
            let mut size = usize::from(self.u8("ModEx data size")?) + 1;
            if size == 256 {
                let b = self.take(2, "ModEx data size")?;
                size = usize::from(u16::from_be_bytes([b[0], b[1]])) + 1;
            }
            // The only ModEx type so far is a nanosecond timestamp offset: finer than we keep.
            self.take(size, "ModEx data")?;
            packet_type = self.u8("ModEx packet type")? & 0x0f;
        }
        Ok(packet_type)
    }
}

fn what_truncated(what: &'static str) -> &'static str {
    match what {
        "video tag header" => "empty video tag",
        "audio tag header" => "empty audio tag",
        "AVCPacketType" => "video tag ends before its AVCPacketType",
        "composition time" => "video tag ends inside its composition time",
        "AACPacketType" => "audio tag ends before its AACPacketType",
        "FourCC" => "enhanced tag ends inside its FourCC",
        "ModEx data size" | "ModEx data" | "ModEx packet type" => {
            "enhanced tag ends inside its ModEx data"
        }
        _ => "tag ends early",
    }
}

fn video_codec_name(id: u8) -> String {
    match id {
        1 => "JPEG (FLV video codec 1)".into(),
        2 => "Sorenson H.263 (FLV video codec 2)".into(),
        3 => "Screen Video (FLV video codec 3)".into(),
        4 => "On2 VP6 (FLV video codec 4)".into(),
        5 => "On2 VP6 with alpha (FLV video codec 5)".into(),
        6 => "Screen Video 2 (FLV video codec 6)".into(),
        12 => "HEVC in the non-standard FLV codec id 12 (use Enhanced RTMP)".into(),
        id => format!("FLV video codec {id}"),
    }
}

fn audio_codec_name(format: u8) -> String {
    match format {
        0 => "linear PCM, platform endian (FLV sound format 0)".into(),
        1 => "ADPCM (FLV sound format 1)".into(),
        2 => "MP3 (FLV sound format 2)".into(),
        3 => "linear PCM, little endian (FLV sound format 3)".into(),
        4..=6 => format!("Nellymoser (FLV sound format {format})"),
        7 => "G.711 A-law (FLV sound format 7)".into(),
        8 => "G.711 mu-law (FLV sound format 8)".into(),
        11 => "Speex (FLV sound format 11)".into(),
        14 => "MP3 8 kHz (FLV sound format 14)".into(),
        15 => "device-specific sound (FLV sound format 15)".into(),
        f => format!("FLV sound format {f}"),
    }
}

fn fourcc_name(fourcc: &[u8; 4]) -> String {
    let text: String = fourcc
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    format!("FourCC '{text}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Byte layouts from FLV spec v10.1 E.4.3.1 (VIDEODATA: FrameType UB[4], CodecID UB[4],
    // AVCPacketType UI8, CompositionTime SI24) and E.4.2.1 (AUDIODATA: SoundFormat UB[4],
    // SoundRate UB[2], SoundSize UB[1], SoundType UB[1], AACPacketType UI8).

    #[test]
    fn avc_sequence_header() {
        let body = [0x17, 0x00, 0x00, 0x00, 0x00, 0x01, 0x42, 0xc0, 0x1e];
        assert_eq!(
            VideoTag::parse(&body).unwrap(),
            VideoTag::SequenceStart {
                codec: Codec::H264,
                config: &[0x01, 0x42, 0xc0, 0x1e]
            }
        );
    }

    #[test]
    fn avc_frames_with_signed_composition_time() {
        // Key frame, CTS +66 ms.
        let body = [0x17, 0x01, 0x00, 0x00, 0x42, 0, 0, 0, 1, 0x65];
        assert_eq!(
            VideoTag::parse(&body).unwrap(),
            VideoTag::Frame {
                codec: Codec::H264,
                keyframe: true,
                composition_time: 66,
                data: &[0, 0, 0, 1, 0x65]
            }
        );
        // Inter frame, CTS -2 ms (0xfffffe as SI24).
        let body = [0x27, 0x01, 0xff, 0xff, 0xfe, 0, 0, 0, 1, 0x41];
        let VideoTag::Frame {
            keyframe,
            composition_time,
            ..
        } = VideoTag::parse(&body).unwrap()
        else {
            panic!("a frame")
        };
        assert_eq!((keyframe, composition_time), (false, -2));
        // Disposable inter frame (3), generated key frame (4).
        assert!(matches!(
            VideoTag::parse(&[0x37, 1, 0, 0, 0]).unwrap(),
            VideoTag::Frame {
                keyframe: false,
                ..
            }
        ));
        assert!(matches!(
            VideoTag::parse(&[0x47, 1, 0, 0, 0]).unwrap(),
            VideoTag::Frame { keyframe: true, .. }
        ));
    }

    #[test]
    fn avc_end_of_sequence_and_command_frame() {
        assert_eq!(
            VideoTag::parse(&[0x17, 0x02, 0, 0, 0]).unwrap(),
            VideoTag::SequenceEnd { codec: Codec::H264 }
        );
        assert_eq!(
            VideoTag::parse(&[0x57, 0x01, 0, 0, 0, 0x00]).unwrap(),
            VideoTag::Other
        );
    }

    #[test]
    fn truncated_and_bad_video_tags() {
        let err = |b: &[u8]| VideoTag::parse(b).unwrap_err().to_string();
        assert_eq!(err(&[]), "malformed FLV tag: empty video tag");
        assert_eq!(
            err(&[0x17]),
            "malformed FLV tag: video tag ends before its AVCPacketType"
        );
        assert_eq!(
            err(&[0x17, 0x01, 0x00]),
            "malformed FLV tag: video tag ends inside its composition time"
        );
        assert_eq!(
            err(&[0x17, 0x03, 0, 0, 0]),
            "malformed FLV tag: AVCPacketType is not 0, 1 or 2"
        );
        assert_eq!(
            err(&[0x07, 0x01, 0, 0, 0]),
            "malformed FLV tag: video frame type is not 1 to 5"
        );
    }

    #[test]
    fn old_video_codecs_are_refused_by_name() {
        assert_eq!(
            VideoTag::parse(&[0x12, 0xaa]).unwrap_err(),
            RtmpError::UnsupportedCodec("Sorenson H.263 (FLV video codec 2)".into())
        );
        assert_eq!(
            VideoTag::parse(&[0x14]).unwrap_err(),
            RtmpError::UnsupportedCodec("On2 VP6 (FLV video codec 4)".into())
        );
    }

    // Enhanced RTMP: IsExHeader UB[1], VideoFrameType UB[3], VideoPacketType UB[4], FourCC.

    #[test]
    fn enhanced_hevc() {
        // 0x90 = ex header, key frame, SequenceStart.
        let body = [0x90, b'h', b'v', b'c', b'1', 0x01, 0x02];
        assert_eq!(
            VideoTag::parse(&body).unwrap(),
            VideoTag::SequenceStart {
                codec: Codec::H265,
                config: &[0x01, 0x02]
            }
        );
        // CodedFrames (1) has SI24 composition time for hvc1.
        let body = [
            0x91, b'h', b'v', b'c', b'1', 0x00, 0x00, 0x21, 0, 0, 0, 1, 0x26,
        ];
        assert_eq!(
            VideoTag::parse(&body).unwrap(),
            VideoTag::Frame {
                codec: Codec::H265,
                keyframe: true,
                composition_time: 33,
                data: &[0, 0, 0, 1, 0x26]
            }
        );
        // CodedFramesX (3): no composition time, inter frame (0xa_).
        let body = [0xa3, b'h', b'v', b'c', b'1', 0, 0, 0, 1, 0x02];
        assert_eq!(
            VideoTag::parse(&body).unwrap(),
            VideoTag::Frame {
                codec: Codec::H265,
                keyframe: false,
                composition_time: 0,
                data: &[0, 0, 0, 1, 0x02]
            }
        );
        assert_eq!(
            VideoTag::parse(&[0x92, b'h', b'v', b'c', b'1']).unwrap(),
            VideoTag::SequenceEnd { codec: Codec::H265 }
        );
    }

    #[test]
    fn enhanced_av1_and_vp9_have_no_composition_time() {
        let body = [0x91, b'a', b'v', b'0', b'1', 0x12, 0x00];
        assert_eq!(
            VideoTag::parse(&body).unwrap(),
            VideoTag::Frame {
                codec: Codec::Av1,
                keyframe: true,
                composition_time: 0,
                data: &[0x12, 0x00]
            }
        );
        let body = [0xa1, b'v', b'p', b'0', b'9', 0x86];
        assert!(matches!(
            VideoTag::parse(&body).unwrap(),
            VideoTag::Frame {
                codec: Codec::Vp9,
                keyframe: false,
                composition_time: 0,
                ..
            }
        ));
    }

    #[test]
    fn enhanced_modex_is_skipped() {
        // ModEx (7): size-1 = 2 → 3 bytes of nano offset, then type byte 0x03 (CodedFramesX).
        let body = [
            0x97, 0x02, 0x00, 0x01, 0x02, 0x03, b'a', b'v', b'c', b'1', 0xaa,
        ];
        assert_eq!(
            VideoTag::parse(&body).unwrap(),
            VideoTag::Frame {
                codec: Codec::H264,
                keyframe: true,
                composition_time: 0,
                data: &[0xaa]
            }
        );
        assert_eq!(
            VideoTag::parse(&[0x97, 0x05, 0x00]).unwrap_err(),
            RtmpError::MalformedTag("enhanced tag ends inside its ModEx data")
        );
    }

    #[test]
    fn enhanced_unknown_fourcc_and_multitrack() {
        assert_eq!(
            VideoTag::parse(&[0x90, b'a', b'b', 0x00, b'd'])
                .unwrap_err()
                .to_string(),
            "unsupported codec FourCC 'ab?d': publish H.264, H.265, AV1 or VP9 video and AAC or Opus audio"
        );
        assert_eq!(
            VideoTag::parse(&[0x96, 0x00]).unwrap_err(),
            RtmpError::Unsupported("multitrack video (Enhanced RTMP v2)")
        );
        assert_eq!(
            VideoTag::parse(&[0x90, b'h', b'v']).unwrap_err(),
            RtmpError::MalformedTag("enhanced tag ends inside its FourCC")
        );
    }

    #[test]
    fn aac_tags() {
        // 0xaf: AAC, 44 kHz, 16-bit, stereo (fixed values for AAC).
        assert_eq!(
            AudioTag::parse(&[0xaf, 0x00, 0x11, 0x90]).unwrap(),
            AudioTag::SequenceStart {
                codec: Codec::Aac,
                config: &[0x11, 0x90]
            }
        );
        assert_eq!(
            AudioTag::parse(&[0xaf, 0x01, 0x21, 0x10]).unwrap(),
            AudioTag::Frame {
                codec: Codec::Aac,
                data: &[0x21, 0x10]
            }
        );
        assert_eq!(
            AudioTag::parse(&[0xaf, 0x02]).unwrap_err(),
            RtmpError::MalformedTag("AACPacketType is not 0 or 1")
        );
        assert_eq!(
            AudioTag::parse(&[0xaf]).unwrap_err(),
            RtmpError::MalformedTag("audio tag ends before its AACPacketType")
        );
        assert_eq!(
            AudioTag::parse(&[]).unwrap_err(),
            RtmpError::MalformedTag("empty audio tag")
        );
    }

    #[test]
    fn old_audio_codecs_are_refused_by_name() {
        let name = |b: u8| match AudioTag::parse(&[b, 0]).unwrap_err() {
            RtmpError::UnsupportedCodec(name) => name,
            other => panic!("{other}"),
        };
        assert_eq!(name(0x2f), "MP3 (FLV sound format 2)");
        assert_eq!(name(0xb6), "Speex (FLV sound format 11)");
        assert_eq!(name(0x66), "Nellymoser (FLV sound format 6)");
    }

    #[test]
    fn enhanced_audio() {
        // SoundFormat 9 (ExHeader), AudioPacketType 0, FourCC.
        assert_eq!(
            AudioTag::parse(&[0x90, b'm', b'p', b'4', b'a', 0x11, 0x90]).unwrap(),
            AudioTag::SequenceStart {
                codec: Codec::Aac,
                config: &[0x11, 0x90]
            }
        );
        assert_eq!(
            AudioTag::parse(&[0x91, b'O', b'p', b'u', b's', 0xfc]).unwrap(),
            AudioTag::Frame {
                codec: Codec::Opus,
                data: &[0xfc]
            }
        );
        assert_eq!(
            AudioTag::parse(&[0x91, b'a', b'c', b'-', b'3']).unwrap_err(),
            RtmpError::UnsupportedCodec("FourCC 'ac-3'".into())
        );
    }
}
