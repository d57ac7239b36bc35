//! A whole publish as FFmpeg does it: connect `live`, publish `test`, H.264 + AAC, stop.

mod common;

use common::*;
use hub::{Codec, Frame, TrackInfo};
use rtmp::Event;

fn h264_track() -> TrackInfo {
    let mut t = TrackInfo::new(Codec::H264);
    t.config = hex(AVCC_360P).into();
    t.width = Some(640);
    t.height = Some(360);
    t
}

fn aac_track() -> TrackInfo {
    let mut t = TrackInfo::new(Codec::Aac);
    t.config = ASC_48K_MONO.as_slice().into();
    t.sample_rate = Some(48000);
    t.channels = Some(1);
    t
}

#[test]
fn ffmpeg_like_publish_yields_exact_tracks_and_frames() {
    let mut pair = Pair::publishing();
    assert!(matches!(
        pair.take_events().as_slice(),
        [Event::PublishRequested { app, key, .. }] if app == "live" && key == "test"
    ));

    // AVC sequence header: frame type 1, codec 7, AVCPacketType 0, CTS 0, avcC.
    let mut seq = vec![0x17, 0x00, 0, 0, 0];
    seq.extend(hex(AVCC_360P));
    pair.video(0, seq);
    assert_eq!(pair.take_events(), vec![Event::Tracks(vec![h264_track()])]);

    // Key frame at 1000 ms with CTS +66 ms: SEI + IDR slice, 4-byte lengths.
    let key_nals = [0, 0, 0, 2, 0x06, 0x05, 0, 0, 0, 3, 0x65, 0x88, 0x84];
    let mut key = vec![0x17, 0x01, 0x00, 0x00, 0x42];
    key.extend(key_nals);
    pair.video(1000, key);
    // Delta frame at 1033 ms, CTS 0.
    let mut delta = vec![0x27, 0x01, 0, 0, 0];
    delta.extend([0, 0, 0, 2, 0x41, 0x9a]);
    pair.video(1033, delta);
    assert_eq!(
        pair.take_events(),
        vec![
            Event::Frame(Frame {
                track: 0,
                dts: 1_000_000,
                pts: 1_066_000,
                keyframe: true,
                data: key_nals.as_slice().into(),
            }),
            Event::Frame(Frame {
                track: 0,
                dts: 1_033_000,
                pts: 1_033_000,
                keyframe: false,
                data: [0, 0, 0, 2, 0x41, 0x9a].as_slice().into(),
            }),
        ]
    );

    // AAC: sequence header, then two raw frames (1024 samples at 48 kHz ≈ 21.3 ms).
    let mut aseq = vec![0xaf, 0x00];
    aseq.extend(ASC_48K_MONO);
    pair.audio(1000, aseq);
    assert_eq!(
        pair.take_events(),
        vec![Event::Tracks(vec![h264_track(), aac_track()])]
    );
    pair.audio(1000, vec![0xaf, 0x01, 0x21, 0x10, 0x04]);
    pair.audio(1021, vec![0xaf, 0x01, 0x21, 0x10, 0x05]);
    assert_eq!(
        pair.take_events(),
        vec![
            Event::Frame(Frame {
                track: 1,
                dts: 1_000_000,
                pts: 1_000_000,
                keyframe: true,
                data: [0x21, 0x10, 0x04].as_slice().into(),
            }),
            Event::Frame(Frame {
                track: 1,
                dts: 1_021_000,
                pts: 1_021_000,
                keyframe: true,
                data: [0x21, 0x10, 0x05].as_slice().into(),
            }),
        ]
    );

    // A repeated, identical sequence header changes nothing.
    let mut seq = vec![0x17, 0x00, 0, 0, 0];
    seq.extend(hex(AVCC_360P));
    pair.video(1066, seq);
    assert!(pair.take_events().is_empty());

    // Stop: the client sends deleteStream.
    let results = pair.client.stop_publishing().unwrap();
    for r in results {
        pair.client_result(r);
    }
    assert_eq!(pair.take_events(), vec![Event::PublishEnded]);
    assert!(pair.error.is_none());
}

#[test]
fn timestamps_stay_continuous_across_the_32_bit_wrap() {
    let mut pair = Pair::publishing();
    pair.take_events();
    let mut seq = vec![0x17, 0x00, 0, 0, 0];
    seq.extend(hex(AVCC_360P));
    pair.video(0, seq);
    let frame = |pair: &mut common::Pair, ts: u32| {
        pair.video(ts, vec![0x27, 0x01, 0, 0, 0, 0, 0, 0, 1, 0x41]);
    };
    frame(&mut pair, u32::MAX - 19);
    frame(&mut pair, 13); // 33 ms later, after the wrap
    let dts: Vec<i64> = pair
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some(f.dts),
            _ => None,
        })
        .collect();
    let before = (i64::from(u32::MAX) - 19) * 1000;
    assert_eq!(dts, vec![before, before + 33_000]);
}

#[test]
fn media_before_accept_is_ignored_and_reject_reaches_the_client() {
    let mut pair = Pair::new(rtmp::SessionConfig::default());
    pair.auto_accept = false;
    pair.connect("live");
    let packet = pair
        .client
        .request_publishing("busy".into(), rml_rtmp::sessions::PublishRequestType::Live)
        .unwrap();
    pair.client_result(packet);
    let [Event::PublishRequested { request, .. }] = pair.take_events()[..] else {
        panic!("one publish request")
    };
    pair.server
        .reject_publish(request, "live/busy is already being published")
        .unwrap();
    pair.pump();
    assert_eq!(
        pair.client_events.last(),
        Some(
            &rml_rtmp::sessions::ClientSessionEvent::UnhandleableOnStatusCode {
                code: "NetStream.Publish.BadName".into()
            }
        )
    );
    // Answering twice (or a stale id) is an error value.
    assert_eq!(
        pair.server.accept_publish(request).unwrap_err().to_string(),
        format!("no pending publish request {request}")
    );
    assert!(pair.error.is_none());
}

#[test]
fn play_is_refused_cleanly() {
    let mut pair = Pair::new(rtmp::SessionConfig::default());
    pair.connect("live");
    let packet = pair.client.request_playback("test".into()).unwrap();
    pair.client_result(packet);
    assert_eq!(
        pair.client_events.last(),
        Some(
            &rml_rtmp::sessions::ClientSessionEvent::UnhandleableOnStatusCode {
                code: "NetStream.Play.Failed".into()
            }
        )
    );
    assert!(pair.take_events().is_empty());
    assert!(pair.error.is_none());
}

#[test]
fn ping_requests_are_answered() {
    let mut pair = Pair::new(rtmp::SessionConfig::default());
    // User control 6 (PingRequest) with timestamp 0x01020304, on csid 2.
    pair.server
        .handle_input(&chunk(2, 4, 0, 0, &[0, 6, 1, 2, 3, 4]))
        .unwrap();
    let reply = drain_bytes(&mut pair.server);
    // Type-0 chunk header (12 bytes) then PingResponse (7) with the same timestamp.
    assert_eq!(&reply[reply.len() - 6..], &[0, 7, 1, 2, 3, 4]);
}
