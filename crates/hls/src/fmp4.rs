//! CMAF boxes: the init segment (`ftyp` + `moov`) of a stream's tracks, and one fragment
//! (`moof` + `mdat`) per part. The box encoding is mp4-atom's; what goes in them is ours.

use hub::{Codec, TrackInfo};
use mp4_atom::{
    Audio, Av01, Av1c, Avc1, Avcc, Dinf, Dops, Dref, Encode, Esds, FourCC, Ftyp, Hdlr, Hvc1, Hvcc,
    Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsc, Stsd, Stsz,
    Stts, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url, Visual, Vmhd, Vp08, Vp09, VpcC,
    esds,
};

use crate::HlsError;

/// A track as it goes into the init segment.
#[derive(Debug, Clone)]
pub struct TrackSpec {
    /// `track_ID` (1-based).
    pub id: u32,
    /// Units per second of this track's times.
    pub timescale: u32,
    /// What the publisher said.
    pub info: TrackInfo,
}

impl TrackSpec {
    /// The timescale CMAF players expect: 90 kHz video, the sample rate for audio.
    pub fn new(id: u32, info: TrackInfo) -> Result<TrackSpec, HlsError> {
        let timescale = match info.codec {
            Codec::H264 | Codec::H265 | Codec::Vp8 | Codec::Vp9 | Codec::Av1 => 90_000,
            Codec::Opus => 48_000,
            Codec::Aac => {
                media::aac::AudioSpecificConfig::parse(&info.config)
                    .map_err(|e| HlsError::BadConfig(e.to_string()))?
                    .sample_rate
            }
            other => return Err(HlsError::Unsupported(other.name())),
        };
        Ok(TrackSpec {
            id,
            timescale,
            info,
        })
    }

    /// The picture size, when known (video).
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        Some(dimensions(&self.info)).filter(|&(w, h)| w > 0 && h > 0)
    }

    /// The RFC 6381 `CODECS` entry of this track.
    pub fn codecs(&self) -> String {
        match self.info.codec {
            Codec::H264 => match &self.info.config[..] {
                [_, profile, compat, level, ..] => {
                    format!("avc1.{profile:02x}{compat:02x}{level:02x}")
                }
                _ => "avc1.42e01f".into(),
            },
            Codec::Aac => {
                let aot = media::aac::AudioSpecificConfig::parse(&self.info.config)
                    .map_or(2, |a| a.object_type);
                format!("mp4a.40.{aot}")
            }
            Codec::Opus => "opus".into(),
            Codec::H265 => media::hevc::HevcConfig::parse(&self.info.config)
                .map_or_else(|_| "hvc1.1.6.L93.B0".into(), |c| c.codecs()),
            Codec::Av1 => media::av1::Av1Config::parse_record(&self.info.config)
                .map_or_else(|_| "av01.0.08M.08".into(), |c| c.codecs()),
            Codec::Vp9 | Codec::Vp8 => {
                let mut c = media::vp::VpConfig::parse_record(&self.info.config).unwrap_or(
                    media::vp::VpConfig {
                        profile: 0,
                        bit_depth: 8,
                        chroma_subsampling: 0,
                        full_range: false,
                        width: 0,
                        height: 0,
                    },
                );
                (c.width, c.height) = dimensions(&self.info);
                let vp9 = c.vp9_codecs();
                if self.info.codec == Codec::Vp8 {
                    vp9.replacen("vp09", "vp08", 1)
                } else {
                    vp9
                }
            }
            other => other.name().to_lowercase(),
        }
    }
}

/// `ftyp` + `moov` for `tracks`.
pub fn init_segment(tracks: &[TrackSpec]) -> Result<Vec<u8>, HlsError> {
    let ftyp = Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![
            FourCC::new(b"iso6"),
            FourCC::new(b"cmfc"),
            FourCC::new(b"mp41"),
        ],
    };
    let mut trak = Vec::new();
    for t in tracks {
        trak.push(track(t)?);
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: tracks.len() as u32 + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: tracks
                .iter()
                .map(|t| Trex {
                    track_id: t.id,
                    default_sample_description_index: 1,
                    ..Default::default()
                })
                .collect(),
        }),
        trak,
        ..Default::default()
    };
    let mut buf = Vec::new();
    ftyp.encode(&mut buf).map_err(encode_error)?;
    moov.encode(&mut buf).map_err(encode_error)?;
    Ok(buf)
}

fn encode_error(e: mp4_atom::Error) -> HlsError {
    HlsError::Encode(e.to_string())
}

fn track(t: &TrackSpec) -> Result<Trak, HlsError> {
    let info = &t.info;
    let video = info.kind() == hub::MediaKind::Video;
    let visual = |(w, h): (u32, u32)| Visual {
        data_reference_index: 1,
        width: w.min(u32::from(u16::MAX)) as u16,
        height: h.min(u32::from(u16::MAX)) as u16,
        horizresolution: 72.into(),
        vertresolution: 72.into(),
        frame_count: 1,
        compressor: "".into(),
        depth: 24,
    };
    let codec: mp4_atom::Codec = match info.codec {
        Codec::H264 => {
            let avcc = <Avcc as mp4_atom::Atom>::decode_body(&mut &info.config[..])
                .map_err(|e| HlsError::BadConfig(format!("avcC: {e}")))?;
            Avc1 {
                visual: visual(dimensions(info)),
                avcc,
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
            }
            .into()
        }
        Codec::H265 => {
            // The record goes in as the publisher sent it (enhanced RTMP's sequence start).
            let hvcc = <Hvcc as mp4_atom::Atom>::decode_body(&mut &info.config[..])
                .map_err(|e| HlsError::BadConfig(format!("hvcC: {e}")))?;
            Hvc1 {
                visual: visual(dimensions(info)),
                hvcc,
                ..Default::default()
            }
            .into()
        }
        Codec::Av1 => {
            let c = media::av1::Av1Config::parse_record(&info.config)
                .map_err(|e| HlsError::BadConfig(format!("av1C: {e}")))?;
            Av01 {
                visual: visual(dimensions(info)),
                av1c: Av1c {
                    seq_profile: c.profile,
                    seq_level_idx_0: c.level,
                    seq_tier_0: c.tier,
                    high_bitdepth: c.bit_depth > 8,
                    twelve_bit: c.bit_depth == 12,
                    monochrome: c.monochrome,
                    chroma_subsampling_x: c.subsampling_x,
                    chroma_subsampling_y: c.subsampling_y,
                    chroma_sample_position: c.chroma_sample_position,
                    initial_presentation_delay: None,
                    config_obus: c.sequence_header,
                },
                ..Default::default()
            }
            .into()
        }
        Codec::Vp8 | Codec::Vp9 => {
            let c = media::vp::VpConfig::parse_record(&info.config)
                .map_err(|e| HlsError::BadConfig(format!("vpcC: {e}")))?;
            let (w, h) = dimensions(info);
            let vpcc = VpcC {
                profile: c.profile,
                level: media::vp::VpConfig {
                    width: w,
                    height: h,
                    ..c
                }
                .level(),
                bit_depth: c.bit_depth,
                chroma_subsampling: c.chroma_subsampling,
                video_full_range_flag: c.full_range,
                color_primaries: 1,
                transfer_characteristics: 1,
                matrix_coefficients: 1,
                codec_initialization_data: Vec::new(),
            };
            if info.codec == Codec::Vp9 {
                Vp09 {
                    visual: visual((w, h)),
                    vpcc,
                    ..Default::default()
                }
                .into()
            } else {
                Vp08 {
                    visual: visual((w, h)),
                    vpcc,
                    ..Default::default()
                }
                .into()
            }
        }
        Codec::Aac => {
            let asc = media::aac::AudioSpecificConfig::parse(&info.config)
                .map_err(|e| HlsError::BadConfig(e.to_string()))?;
            let freq_index = info
                .config
                .first()
                .zip(info.config.get(1))
                .map_or(4, |(a, b)| ((a & 0x07) << 1) | (b >> 7));
            Mp4a {
                audio: audio(t, asc.channels().unwrap_or(2)),
                esds: Esds {
                    es_desc: esds::EsDescriptor {
                        es_id: t.id as u16,
                        dec_config: esds::DecoderConfig {
                            object_type_indication: 0x40,
                            stream_type: 5,
                            dec_specific: esds::DecoderSpecific {
                                profile: asc.object_type,
                                freq_index,
                                chan_conf: asc.channel_config,
                            },
                            ..Default::default()
                        },
                        sl_config: esds::SLConfig {},
                    },
                },
                btrt: None,
                taic: None,
            }
            .into()
        }
        Codec::Opus => {
            let channels = info.channels.unwrap_or(2);
            Opus {
                audio: audio(t, channels),
                dops: Dops {
                    output_channel_count: channels,
                    // RFC 7845 §5.1: 3840 samples at 48 kHz is the encoder default the
                    // spec recommends assuming when the source does not say.
                    pre_skip: 312,
                    input_sample_rate: 48_000,
                    output_gain: 0,
                },
                btrt: None,
            }
            .into()
        }
        other => return Err(HlsError::Unsupported(other.name())),
    };
    let (w, h) = if video { dimensions(info) } else { (0, 0) };
    Ok(Trak {
        tkhd: Tkhd {
            track_id: t.id,
            enabled: true,
            volume: if video { 0.into() } else { 1.into() },
            width: (w as u16).into(),
            height: (h as u16).into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: t.timescale,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: FourCC::new(if video { b"vide" } else { b"soun" }),
                name: "onair".into(),
            },
            minf: Minf {
                vmhd: video.then(Vmhd::default),
                smhd: (!video).then(Smhd::default),
                dinf: Dinf {
                    dref: Dref {
                        urls: vec![Url {
                            location: "".into(),
                        }],
                    },
                },
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![codec],
                    },
                    stts: Stts::default(),
                    stsc: Stsc::default(),
                    stsz: Stsz::default(),
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    })
}

fn audio(t: &TrackSpec, channels: u8) -> Audio {
    Audio {
        data_reference_index: 1,
        channel_count: u16::from(channels),
        sample_size: 16,
        // A 16.16 field: rates above 65535 Hz do not fit and are written as 0 (the mdhd
        // timescale is what players use).
        sample_rate: u16::try_from(t.timescale).unwrap_or(0).into(),
    }
}

fn dimensions(info: &TrackInfo) -> (u32, u32) {
    match (info.width, info.height, info.codec) {
        (Some(w), Some(h), _) => (w, h),
        (_, _, Codec::H264) => media::avc::AvcConfig::parse(&info.config)
            .ok()
            .and_then(|c| c.dimensions())
            .unwrap_or((0, 0)),
        (_, _, Codec::H265) => media::hevc::HevcConfig::parse(&info.config)
            .ok()
            .and_then(|c| c.dimensions())
            .unwrap_or((0, 0)),
        _ => (0, 0),
    }
}

/// One sample of a fragment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Decode time, in the track's timescale.
    pub dts: u64,
    /// Duration, in the track's timescale.
    pub duration: u32,
    /// Presentation minus decode time (B-frames make it non-zero).
    pub cts: i32,
    /// A sync sample (IDR for video; every audio sample).
    pub keyframe: bool,
    /// The bytes (length-prefixed NAL units for H.264).
    pub data: bytes::Bytes,
}

/// ISO/IEC 14496-12 §8.8.3.1 sample flags: sample_depends_on = 2 (no other sample) for sync
/// samples; sample_depends_on = 1 and sample_is_non_sync_sample for the rest.
const SYNC: u32 = 0x0200_0000;
const NON_SYNC: u32 = 0x0101_0000;

/// One `moof` + `mdat` holding `tracks`' samples (a traf per track with samples), sequence
/// number `seq`. Sample data is laid out track after track in the `mdat`.
pub fn fragment(seq: u32, tracks: &[(u32, &[Sample])]) -> Result<Vec<u8>, HlsError> {
    let tracks: Vec<_> = tracks.iter().filter(|(_, s)| !s.is_empty()).collect();
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: seq,
        },
        traf: tracks
            .iter()
            .map(|(id, samples)| Traf {
                tfhd: Tfhd {
                    track_id: *id,
                    default_base_is_moof: true,
                    ..Default::default()
                },
                tfdt: Some(Tfdt {
                    base_media_decode_time: samples[0].dts,
                }),
                trun: vec![Trun {
                    data_offset: Some(0),
                    entries: samples
                        .iter()
                        .map(|s| TrunEntry {
                            duration: Some(s.duration),
                            size: Some(s.data.len() as u32),
                            flags: Some(if s.keyframe { SYNC } else { NON_SYNC }),
                            cts: Some(s.cts),
                        })
                        .collect(),
                }],
                ..Default::default()
            })
            .collect(),
    };
    // The data offsets count from the start of the moof, whose size does not depend on them.
    let mut sized = Vec::new();
    moof.encode(&mut sized).map_err(encode_error)?;
    let mut offset = sized.len() + 8; // the mdat header
    for (traf, (_, samples)) in moof.traf.iter_mut().zip(&tracks) {
        traf.trun[0].data_offset = Some(offset as i32);
        offset += samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    // The mdat is written here, not with mp4-atom's `Mdat`: that takes its payload as an owned
    // Vec (a copy of every sample) and encodes a Vec<u8> one byte at a time, which was a fifth
    // of the server's CPU packaging 8 RTMP streams as LL-HLS. Here each sample is copied once,
    // straight after the moof.
    let mdat_size = u32::try_from(offset - sized.len())
        .map_err(|_| HlsError::Encode("a part of 4 GiB or more".into()))?;
    let mut buf = Vec::with_capacity(offset);
    moof.encode(&mut buf).map_err(encode_error)?;
    buf.extend_from_slice(&mdat_size.to_be_bytes());
    buf.extend_from_slice(b"mdat");
    for (_, samples) in &tracks {
        for s in samples.iter() {
            buf.extend_from_slice(&s.data);
        }
    }
    Ok(buf)
}
