//! The segmenter and playlists on a synthetic stream: 30 fps H.264 with a keyframe every 2 s
//! and 48 kHz AAC, interleaved in time order as a publisher sends them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hls::playlist::{self, MediaOptions};
use hls::{HlsError, Readiness, Segmenter, SegmenterConfig};
use hub::{Codec, Frame, TrackInfo};
use mp4_atom::{Any, Decode, DecodeMaybe, Moof, Moov};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn tracks() -> Vec<TrackInfo> {
    // An SPS and PPS FFmpeg's libx264 wrote (the media crate's test vector).
    let sps = hex("6742c01eda0280bfe5c044000003000400000300f03c58ba80");
    let pps = hex("68ce0fc8");
    let avcc = media::avc::AvcConfig::from_parameter_sets(&sps, &pps)
        .expect("avcC")
        .to_bytes();
    let mut video = TrackInfo::new(Codec::H264);
    video.config = Arc::from(avcc);
    let mut audio = TrackInfo::new(Codec::Aac);
    // AAC LC, 48 kHz (index 3), stereo.
    audio.config = Arc::from(&[0x11u8, 0x90][..]);
    audio.sample_rate = Some(48_000);
    audio.channels = Some(2);
    vec![video, audio]
}

/// `secs` of media: (frame, wall clock) in send order.
fn stream(secs: f64) -> Vec<Frame> {
    let mut frames = Vec::new();
    let (mut v, mut a) = (0i64, 0i64);
    let video_us = 33_333;
    let audio_us = 1024 * 1_000_000 / 48_000;
    let end = (secs * 1e6) as i64;
    let mut n = 0;
    while v < end || a < end {
        if v <= a {
            frames.push(Frame {
                track: 0,
                pts: 1_000_000 + v,
                dts: 1_000_000 + v,
                keyframe: n % 60 == 0,
                data: vec![0, 0, 0, 4, 0x65, 1, 2, 3].into(),
            });
            n += 1;
            v += video_us;
        } else {
            frames.push(Frame {
                track: 1,
                pts: 1_000_000 + a,
                dts: 1_000_000 + a,
                keyframe: true,
                data: vec![0x21; 40].into(),
            });
            a += audio_us;
        }
    }
    frames
}

fn run(secs: f64, config: SegmenterConfig) -> Segmenter {
    let mut s = Segmenter::new(config);
    s.set_tracks(&tracks()).expect("tracks");
    let t0 = SystemTime::now();
    for f in stream(secs) {
        s.push(&f, t0 + Duration::from_micros((f.dts - 1_000_000) as u64))
            .expect("push");
    }
    s
}

#[test]
fn segments_start_at_keyframes_and_parts_stay_within_the_target() {
    let s = run(7.0, SegmenterConfig::default());
    let segs = s.segments();
    // 0–2, 2–4, 4–6 complete; 6–7 in progress.
    assert_eq!(
        segs.len(),
        4,
        "durations {:?}",
        segs.iter().map(|s| s.duration()).collect::<Vec<_>>()
    );
    for seg in segs.iter().take(3) {
        assert!(seg.data.is_some());
        assert!((seg.duration() - 2.0).abs() < 0.001, "{}", seg.duration());
        assert!(seg.parts[0].independent, "a segment starts with a keyframe");
        assert!(seg.parts[1..].iter().all(|p| !p.independent));
        for p in &seg.parts {
            assert!(p.duration <= 0.202 + 1e-9, "part of {} s", p.duration);
        }
        // All but the last part are at least 85 % of the target (RFC 8216bis §4.4.4.9).
        for p in &seg.parts[..seg.parts.len() - 1] {
            assert!(p.duration >= 0.17, "part of {} s", p.duration);
        }
        let joined: Vec<u8> = seg.parts.iter().flat_map(|p| p.data.to_vec()).collect();
        assert_eq!(seg.data.as_deref(), Some(&joined[..]));
    }
    assert!(segs[3].data.is_none());
    assert_eq!(s.next_part(), Some((3, segs[3].parts.len())));
}

#[test]
fn the_init_segment_and_fragments_decode_with_continuous_times() {
    let s = run(4.5, SegmenterConfig::default());
    let (id, init) = s.init().expect("init");
    assert_eq!(id, 0);
    let mut buf = &init[..];
    let _ftyp = mp4_atom::Ftyp::decode(&mut buf).expect("ftyp");
    let moov = Moov::decode(&mut buf).expect("moov");
    assert_eq!(moov.trak.len(), 2);
    assert_eq!(moov.trak[0].mdia.mdhd.timescale, 90_000);
    assert_eq!(moov.trak[1].mdia.mdhd.timescale, 48_000);

    let mut next_video = 0u64;
    let mut seq = 0;
    for seg in s.segments() {
        for part in &seg.parts {
            let mut buf = &part.data[..];
            let moof = Moof::decode(&mut buf).expect("moof");
            let Some(Any::Mdat(mdat)) = Any::decode_maybe(&mut buf).expect("mdat") else {
                panic!("an mdat after the moof");
            };
            assert!(moof.mfhd.sequence_number > seq, "sequence numbers increase");
            seq = moof.mfhd.sequence_number;
            let video = &moof.traf[0];
            assert_eq!(video.tfhd.track_id, 1);
            let tfdt = video.tfdt.as_ref().expect("tfdt").base_media_decode_time;
            assert_eq!(tfdt, next_video, "video decode times follow on");
            let durations: u64 = video.trun[0]
                .entries
                .iter()
                .map(|e| u64::from(e.duration.unwrap_or(0)))
                .sum();
            next_video += durations;
            // Sizes add up to the mdat, and the first data offset points just past the moof.
            let sizes: u32 = moof
                .traf
                .iter()
                .flat_map(|t| t.trun[0].entries.iter().map(|e| e.size.unwrap_or(0)))
                .sum();
            assert_eq!(sizes as usize, mdat.data.len());
            let moof_len = part.data.len() - mdat.data.len() - 8;
            assert_eq!(video.trun[0].data_offset, Some(moof_len as i32 + 8));
            // Keyframe flags: sync only on the first sample of an independent part.
            let first = video.trun[0].entries[0].flags.expect("flags");
            assert_eq!(first == 0x0200_0000, part.independent);
        }
    }
    assert!(next_video >= 4 * 90_000, "{next_video}");
}

#[test]
fn the_media_playlist_has_the_low_latency_tags_and_parses() {
    let s = run(5.0, SegmenterConfig::default());
    let text = playlist::media(&s, "ab12", MediaOptions::default(), &[]);
    for tag in [
        "#EXT-X-VERSION:9",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,CAN-SKIP-UNTIL=12",
        "#EXT-X-PART-INF:PART-TARGET=0.200",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-MAP:URI=\"ab12-init0.mp4\"",
        "#EXT-X-PART:DURATION=0.200,URI=\"ab12-2.0.m4s\",INDEPENDENT=YES",
        "#EXTINF:2.000,\nab12-0.m4s",
        "#EXT-X-PROGRAM-DATE-TIME:",
    ] {
        assert!(text.contains(tag), "{tag} missing from\n{text}");
    }
    let (msn, part) = s.next_part().expect("next");
    assert!(text.ends_with(&format!(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ab12-{msn}.{part}.m4s\"\n"
    )));
    let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("m3u8-rs parses it");
    assert_eq!(parsed.target_duration, 2);
    assert_eq!(parsed.segments.len(), 2, "two complete segments");

    let ended = playlist::media(
        &s,
        "ab12",
        MediaOptions {
            ended: true,
            ..Default::default()
        },
        &[],
    );
    assert!(ended.ends_with("#EXT-X-ENDLIST\n"));
    assert!(!ended.contains("PRELOAD-HINT"));

    let main = playlist::multivariant(&[(&s, "media.m3u8")]);
    assert!(main.contains("CODECS=\"avc1.42c01e,mp4a.40.2\""), "{main}");
    let parsed = m3u8_rs::parse_master_playlist_res(main.as_bytes()).expect("parses");
    assert_eq!(parsed.variants.len(), 1);
    assert_eq!(parsed.variants[0].uri, "media.m3u8");
    assert!(parsed.variants[0].bandwidth > 0);
}

#[test]
fn delta_updates_skip_old_segments() {
    let s = run(
        30.0,
        SegmenterConfig {
            window_segments: 20,
            ..Default::default()
        },
    );
    let full = playlist::media(&s, "x", MediaOptions::default(), &[]);
    let delta = playlist::media(
        &s,
        "x",
        MediaOptions {
            skip: true,
            ..Default::default()
        },
        &[],
    );
    // 14 complete segments (28 s) + one in progress; CAN-SKIP-UNTIL is 12 s.
    assert!(!full.contains("EXT-X-SKIP"));
    let skipped: usize = delta
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS="))
        .expect("a skip tag")
        .parse()
        .expect("a number");
    assert_eq!(skipped, 8, "{delta}");
    let listed = delta.matches("#EXTINF").count();
    assert_eq!(listed + skipped, full.matches("#EXTINF").count());
    // Parts only for the last three target durations.
    assert!(full.matches("#EXT-X-PART:").count() < 45, "{full}");
}

#[test]
fn a_playback_token_rides_on_every_uri_of_the_media_playlist() {
    let s = run(10.0, SegmenterConfig::default());
    let report = playlist::RenditionReport::of(&s, "media-l0.m3u8").expect("a part");
    let text = playlist::media(
        &s,
        "x",
        MediaOptions {
            uri_query: Some("token=a.b.c"),
            ..Default::default()
        },
        &[report],
    );
    let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("parses");
    assert!(!parsed.segments.is_empty());
    for seg in &parsed.segments {
        assert!(seg.uri.ends_with(".m4s?token=a.b.c"), "{}", seg.uri);
    }
    // Init, parts, the preload hint and the rendition report: every quoted URI.
    let quoted: Vec<&str> = text
        .split("URI=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap_or_default())
        .collect();
    assert!(quoted.len() > 5, "{text}");
    for uri in quoted {
        assert!(uri.ends_with("?token=a.b.c"), "{uri}");
    }
    assert!(text.contains("-init0.mp4?token=a.b.c"));
    assert!(text.contains("PRELOAD-HINT:TYPE=PART,URI=\"x-"));
    assert!(text.contains("RENDITION-REPORT:URI=\"media-l0.m3u8?token=a.b.c\""));
}

#[test]
fn blocking_requests_wait_for_the_part_and_refuse_the_far_future() {
    let s = run(2.5, SegmenterConfig::default());
    let (msn, part) = s.next_part().expect("next");
    assert_eq!(msn, 1);
    assert_eq!(s.readiness(1, Some(part as u64 - 1)), Readiness::Ready);
    assert_eq!(s.readiness(1, Some(part as u64)), Readiness::Wait);
    assert_eq!(s.readiness(0, None), Readiness::Ready);
    assert_eq!(
        s.readiness(1, None),
        Readiness::Wait,
        "segment 1 is not complete"
    );
    assert_eq!(s.readiness(3, None), Readiness::Wait);
    assert_eq!(s.readiness(4, None), Readiness::TooFar);
    assert_eq!(s.readiness(4_000_000_000, Some(0)), Readiness::TooFar);
}

#[test]
fn vp8_and_trackless_streams_are_refused_with_a_reason() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    assert_eq!(
        s.set_tracks(&[TrackInfo::new(Codec::Vp8), TrackInfo::new(Codec::Opus)]),
        Err(HlsError::Unsupported("VP8"))
    );
    assert_eq!(
        s.set_tracks(&[TrackInfo::new(Codec::Pcmu)]),
        Err(HlsError::NoTracks)
    );
    assert_eq!(
        HlsError::Unsupported("VP8").to_string(),
        "HLS unavailable: VP8"
    );
    // Opus alone is fine (an audio-only stream).
    assert_eq!(s.set_tracks(&[TrackInfo::new(Codec::Opus)]), Ok(()));
}

#[test]
fn a_track_change_starts_a_new_init_and_a_discontinuity() {
    let mut s = run(3.0, SegmenterConfig::default());
    let mut t = tracks();
    t[1].config = Arc::from(&[0x12u8, 0x10][..]); // 44.1 kHz now
    s.set_tracks(&t).expect("new tracks");
    assert_eq!(s.init().map(|(id, _)| id), Some(1));
    for f in stream(3.0) {
        s.push(&f, SystemTime::now()).expect("push");
    }
    let text = playlist::media(&s, "x", MediaOptions::default(), &[]);
    assert!(text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    assert!(text.contains("#EXT-X-MAP:URI=\"x-init1.mp4\""), "{text}");
}

#[test]
fn a_source_without_keyframes_still_gets_its_segments_cut() {
    // One keyframe at the start, none after: at ten target durations the segment is cut
    // anyway, so memory stays bounded.
    let mut s = Segmenter::new(SegmenterConfig::default());
    s.set_tracks(&tracks()).expect("tracks");
    for (i, mut f) in stream(25.0).into_iter().enumerate() {
        if f.track == 0 {
            f.keyframe = i == 0;
        }
        s.push(&f, SystemTime::now()).expect("push");
    }
    let segs = s.segments();
    assert_eq!(segs.len(), 2);
    assert!(
        (segs[0].duration() - 20.0).abs() < 0.05,
        "{}",
        segs[0].duration()
    );
    assert!(
        s.keyframe_due(),
        "a WebRTC source would be asked for a keyframe"
    );
    assert!(
        !segs[1].parts[0].independent,
        "the cut was not at a keyframe"
    );
    let t = std::time::Instant::now();
    assert!(s.keyframe_request(t));
    assert!(
        !s.keyframe_request(t + Duration::from_millis(900)),
        "at most once a second"
    );
    assert!(s.keyframe_request(t + Duration::from_millis(1000)));
}

#[test]
fn audio_goes_on_being_cut_when_video_stops() {
    // FFmpeg with `-t` on the video input only: video ends at 5 s, audio goes on to 30 s.
    let mut s = Segmenter::new(SegmenterConfig::default());
    s.set_tracks(&tracks()).expect("tracks");
    for f in stream(30.0) {
        if f.track == 0 && f.dts >= 1_000_000 + 5_000_000 {
            continue;
        }
        s.push(&f, SystemTime::now()).expect("push");
    }
    let total: f64 = s.segments().iter().map(|x| x.duration()).sum();
    assert!(total > 28.0, "audio kept being packaged: {total} s");
    let longest = s
        .segments()
        .iter()
        .flat_map(|x| x.parts.iter().map(|p| p.duration))
        .fold(0.0, f64::max);
    assert!(longest < 1.5, "parts stay short: {longest} s");
}

#[test]
fn one_kind_only_and_a_track_that_moves_in_the_list_keeps_its_init() {
    // A room recording's audio file: only the audio track, which stays the same track when
    // the video before it in the hub's list goes away (its index drops from 1 to 0).
    let config = SegmenterConfig {
        only: Some(hub::MediaKind::Audio),
        ..Default::default()
    };
    let mut s = Segmenter::new(config);
    let all = tracks();
    s.set_tracks(&all).expect("tracks");
    let t0 = SystemTime::now();
    let frames = stream(5.0);
    for f in &frames {
        s.push(f, t0).expect("push");
    }
    let (init, bytes) = s.init().map(|(i, b)| (i, b.clone())).expect("init");
    let mut buf = &bytes[..];
    let mut moov = None;
    while let Ok(Some(atom)) = Any::decode_maybe(&mut buf) {
        if let Any::Moov(m) = atom {
            moov = Some(m);
        }
    }
    assert_eq!(moov.expect("moov").trak.len(), 1, "one track in the init");
    let parts_before: usize = s.segments().iter().map(|g| g.parts.len()).sum();
    assert!(parts_before > 0);
    // The video track leaves: audio is now at index 0.
    s.set_tracks(&all[1..]).expect("audio alone");
    assert_eq!(s.init().map(|(i, _)| i), Some(init), "no new init segment");
    let audio_us = 1024 * 1_000_000 / 48_000;
    for k in 0..100 {
        let f = Frame {
            track: 0,
            pts: 7_000_000 + k * audio_us,
            dts: 7_000_000 + k * audio_us,
            keyframe: true,
            data: vec![0x21; 40].into(),
        };
        s.push(&f, t0).expect("push");
    }
    let parts_after: usize = s.segments().iter().map(|g| g.parts.len()).sum();
    assert!(
        parts_after > parts_before,
        "audio at its new index is still packaged"
    );
    assert!(!s.segments().iter().any(|g| g.discontinuity));
}

#[test]
fn vp9_is_packaged_as_vp09_and_vp8_only_where_allowed() {
    let record = media::vp::VpConfig {
        profile: 0,
        bit_depth: 8,
        chroma_subsampling: 0,
        full_range: false,
        width: 1280,
        height: 720,
    }
    .to_record();
    let mut video = TrackInfo::new(Codec::Vp9);
    video.config = Arc::from(record.clone());
    (video.width, video.height) = (Some(1280), Some(720));
    let mut s = Segmenter::new(SegmenterConfig::default());
    s.set_tracks(&[video.clone()]).expect("VP9 is packaged");
    let (_, init) = s.init().expect("init");
    let mut buf = &init[..];
    let mut entry = None;
    while let Ok(Some(atom)) = Any::decode_maybe(&mut buf) {
        if let Any::Moov(m) = atom {
            entry = m.trak[0].mdia.minf.stbl.stsd.codecs.first().cloned();
        }
    }
    match entry {
        Some(mp4_atom::Codec::Vp09(v)) => {
            assert_eq!((v.visual.width, v.visual.height), (1280, 720));
            assert_eq!((v.vpcc.profile, v.vpcc.level, v.vpcc.bit_depth), (0, 31, 8));
        }
        other => panic!("expected vp09, got {other:?}"),
    }
    // A VP9 track without its record yet: wait, no init.
    let mut s2 = Segmenter::new(SegmenterConfig::default());
    s2.set_tracks(&[TrackInfo::new(Codec::Vp9)]).expect("waits");
    assert!(s2.init().is_none());
    // VP8: refused by HLS, taken by a recording's segmenter.
    let mut vp8 = video;
    vp8.codec = Codec::Vp8;
    let mut hls = Segmenter::new(SegmenterConfig::default());
    assert_eq!(
        hls.set_tracks(&[vp8.clone()]),
        Err(HlsError::Unsupported("VP8"))
    );
    let mut rec = Segmenter::new(SegmenterConfig {
        vp8: true,
        ..Default::default()
    });
    rec.set_tracks(&[vp8]).expect("a recording takes VP8");
    assert!(rec.init().is_some());
}

#[test]
fn audio_waits_for_a_video_track_still_without_its_configuration() {
    // A WebRTC publisher: Opus flows at once, H.264's parameter sets come with its first
    // keyframe. Packaging the audio alone first would need a new init (and a new decoder
    // set-up in players) a moment later.
    let all = tracks();
    let mut bare_video = all[0].clone();
    bare_video.config = Arc::from(&[][..]);
    let mut s = Segmenter::new(SegmenterConfig::default());
    s.set_tracks(&[all[1].clone()]).expect("audio alone first");
    assert!(s.init().is_some());
    // Audio alone for a second: parts, but no complete segment, so nothing was served yet.
    let t0 = SystemTime::now();
    for f in stream(1.0).iter().filter(|f| f.track == 1) {
        let f = Frame {
            track: 0,
            ..f.clone()
        };
        s.push(&f, t0).expect("push");
    }
    assert!(!s.segments().is_empty() && !s.has_segment());
    s.set_tracks(&[bare_video, all[1].clone()])
        .expect("video announced");
    assert!(
        s.init().is_none(),
        "nothing is packaged until the video is described"
    );
    assert!(s.keyframe_due(), "and its keyframe is asked for");
    assert!(
        s.segments().is_empty(),
        "the audio-only start is dropped, unseen"
    );
    for f in stream(3.0).iter().filter(|f| f.track == 1) {
        s.push(f, t0).expect("push");
    }
    assert!(s.segments().is_empty());
    s.set_tracks(&all).expect("described");
    assert!(
        s.keyframe_due(),
        "described, and waiting for a keyframe to start at"
    );
    for f in stream(3.0) {
        s.push(&f, t0).expect("push");
    }
    assert!(!s.keyframe_due(), "started, and the segment is young");
    assert!(s.has_segment());
    assert!(!s.segments().iter().any(|g| g.discontinuity));
}

#[test]
fn an_av1_track_without_a_usable_record_is_a_clear_error() {
    let mut av1 = TrackInfo::new(Codec::Av1);
    // Still waiting for the first keyframe: no init, no error.
    let mut s = Segmenter::new(SegmenterConfig::default());
    s.set_tracks(&[av1.clone()]).expect("waits for its record");
    assert!(s.init().is_none());
    av1.config = Arc::from(&[0x81u8, 0, 0, 0][..]);
    let e = s
        .set_tracks(&[av1])
        .expect_err("no sequence header in the record");
    assert!(matches!(e, HlsError::BadConfig(_)), "{e}");
}

#[test]
fn a_reader_that_joins_mid_gop_asks_for_a_keyframe_at_once() {
    // A WebRTC source sends keyframes only when asked: a recorder or packager that starts
    // between two must ask, or it waits forever.
    let mut s = Segmenter::new(SegmenterConfig::default());
    s.set_tracks(&tracks()).expect("tracks");
    let t0 = SystemTime::now();
    for f in stream(1.0).iter().skip(1) {
        s.push(f, t0).expect("push"); // no keyframe among these
    }
    assert!(s.segments().is_empty());
    assert!(s.keyframe_due());
    assert!(s.keyframe_request(std::time::Instant::now()));
}

#[test]
fn a_recording_keeps_the_frames_before_an_early_picture_change() {
    // 1.5 s of media, shorter than the first segment's 2 s, then the video's configuration
    // changes (a WebRTC publisher's resolution ramping up).
    let changed = || {
        let mut t = tracks();
        let sps = hex("6742c01fda0280bfe5c044000003000400000300f03c58ba80");
        let avcc = media::avc::AvcConfig::from_parameter_sets(&sps, &hex("68ce0fc8"))
            .expect("avcC")
            .to_bytes();
        t[0].config = Arc::from(avcc);
        t
    };
    let frames_in = |s: &Segmenter, init: u32| -> f64 {
        s.segments()
            .iter()
            .filter(|g| g.init == init)
            .map(|g| g.duration())
            .sum()
    };
    // A recording: the 1.5 s become a complete (short) segment of the first init.
    let mut rec = run(
        1.5,
        SegmenterConfig {
            keep_every_frame: true,
            ..Default::default()
        },
    );
    rec.set_tracks(&changed()).expect("new tracks");
    assert_eq!(rec.init().map(|(id, _)| id), Some(1));
    let first = &rec.segments()[0];
    assert_eq!(first.init, 0);
    assert!(
        first.data.is_some(),
        "closed, so a file can be opened for it"
    );
    assert!(
        (frames_in(&rec, 0) - 1.5).abs() < 0.1,
        "every frame kept: {} s",
        frames_in(&rec, 0)
    );
    assert!(rec.init_by_id(0).is_some(), "its init is still there");
    // HLS: nothing was served yet, so it starts over with the new init.
    let mut live = run(1.5, SegmenterConfig::default());
    live.set_tracks(&changed()).expect("new tracks");
    assert!(live.segments().is_empty());
    // A recording whose kinds of track change (audio first, then video described) starts
    // over too: a source coming up is not worth a file of its own.
    let mut rec = Segmenter::new(SegmenterConfig {
        keep_every_frame: true,
        ..Default::default()
    });
    rec.set_tracks(&tracks()[1..]).expect("audio alone");
    let t0 = SystemTime::now();
    for f in stream(1.0).iter().filter(|f| f.track == 1) {
        let f = Frame {
            track: 0,
            ..f.clone()
        };
        rec.push(&f, t0).expect("push");
    }
    assert!(frames_in(&rec, 0) > 0.5);
    rec.set_tracks(&tracks()).expect("video described");
    assert!(rec.segments().is_empty(), "started over");
}

#[test]
fn a_simulcast_layer_variant_packages_that_layer_and_reports_the_others() {
    // The hub's list: the main video, audio, then a lower layer's video on its own.
    let mut list = tracks();
    let mut layer0 = list[0].clone();
    layer0.layer = Some(0);
    list.push(layer0);
    let variant = |layer| SegmenterConfig {
        layer,
        ..Default::default()
    };
    let mut main = Segmenter::new(variant(None));
    let mut low = Segmenter::new(variant(Some(0)));
    main.set_tracks(&list).expect("main");
    low.set_tracks(&list).expect("layer 0");
    let t0 = SystemTime::now();
    for f in stream(5.0) {
        // The same pictures on both video tracks (index 0, the main; index 2, layer 0).
        let copy = Frame {
            track: 2,
            ..f.clone()
        };
        for s in [&mut main, &mut low] {
            s.push(&f, t0).expect("push");
            if f.track == 0 {
                s.push(&copy, t0).expect("push");
            }
        }
    }
    // Each packages one video track and the audio.
    for s in [&main, &low] {
        assert_eq!(s.tracks().count(), 2);
        assert!(s.has_segment());
    }
    // A layer that is not in the list is no variant at all (not an audio-only one).
    let mut gone = Segmenter::new(variant(Some(1)));
    assert!(gone.set_tracks(&list).is_err());

    let report = playlist::RenditionReport::of(&low, "media-l0.m3u8").expect("a part");
    let last = low.segments().back().expect("segment");
    assert_eq!(report.last_msn, last.msn);
    assert_eq!(report.last_part, last.parts.len() - 1);
    let text = playlist::media(&main, "ab", MediaOptions::default(), &[report]);
    assert!(
        text.ends_with(&format!(
            "#EXT-X-RENDITION-REPORT:URI=\"media-l0.m3u8\",LAST-MSN={},LAST-PART={}\n",
            last.msn,
            last.parts.len() - 1
        )),
        "{text}"
    );
    m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("parses");
    let multi = playlist::multivariant(&[(&main, "media.m3u8"), (&low, "media-l0.m3u8")]);
    let parsed = m3u8_rs::parse_master_playlist_res(multi.as_bytes()).expect("parses");
    let uris: Vec<&str> = parsed.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(uris, ["media.m3u8", "media-l0.m3u8"]);
}
