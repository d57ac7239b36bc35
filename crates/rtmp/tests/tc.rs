//! A TC player of ours (an rtws::Connection speaking the mapping) against the server session:
//! connect, createStream, play; the flows the server opens, their priorities at work, and the
//! media messages that arrive.

// clippy's allow-unwrap-in-tests does not reach helpers outside #[test] functions.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hub::{Codec, Frame, TrackInfo};
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rtmp::tc::{TcEvent, TcSession};
use rtws::{Config, Connection, Event, SendOptions};

fn command(name: &str, transaction: f64, args: Vec<Amf0Value>) -> Vec<u8> {
    let mut values = vec![
        Amf0Value::Utf8String(name.into()),
        Amf0Value::Number(transaction),
    ];
    values.extend(args);
    let body = rml_amf0::serialize(&values).unwrap();
    let mut m = vec![20, 0, 0, 0, 0];
    m.extend(body);
    m
}

/// Runs both ends until quiet; returns the client's events.
fn pump(now: Instant, client: &mut Connection, server: &mut TcSession) -> Vec<Event> {
    loop {
        let mut moved = false;
        while let Some(m) = client.poll_transmit(now) {
            server.receive(now, &m).expect("the client speaks TC");
            moved = true;
        }
        while let Some(m) = server.poll_transmit(now) {
            client
                .receive(now, &m)
                .expect("the server speaks RTWebSocket");
            moved = true;
        }
        if !moved {
            break;
        }
    }
    std::iter::from_fn(|| client.poll_event()).collect()
}

fn decode(data: &[u8]) -> (u8, u32, Vec<Amf0Value>) {
    let ts = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
    let values = if data[0] == 20 {
        rml_amf0::deserialize(&mut &data[5..]).unwrap()
    } else {
        Vec::new()
    };
    (data[0], ts, values)
}

#[test]
fn a_tc_player_connects_plays_and_gets_media_on_separate_flows() {
    let now = Instant::now();
    let mut server = TcSession::new();
    let mut client = Connection::new(Config::default());
    // connect on flow 0, stream 0.
    client.open(0, 5, None, b"TC\x04\x00");
    let connect = Amf0Value::Object(
        [("app".to_string(), Amf0Value::Utf8String("live".into()))]
            .into_iter()
            .collect(),
    );
    client.send(
        now,
        0,
        command("connect", 1.0, vec![connect]),
        SendOptions::default(),
    );
    let ev = pump(now, &mut client, &mut server);
    // The server's control flow answers ours.
    let control = ev
        .iter()
        .find_map(|e| match e {
            Event::FlowOpened {
                flow,
                return_assoc: Some(0),
                metadata,
            } if metadata == b"TC\x04\x00" => Some(*flow),
            _ => None,
        })
        .expect("a control flow associated with flow 0");
    let result = ev
        .iter()
        .find_map(|e| match e {
            Event::Message { flow, data, .. } if *flow == control => Some(decode(data)),
            _ => None,
        })
        .expect("the connect result");
    assert_eq!(result.2[0], Amf0Value::Utf8String("_result".into()));
    assert!(format!("{:?}", result.2[3]).contains("NetConnection.Connect.Success"));

    client.send(
        now,
        0,
        command("createStream", 2.0, vec![Amf0Value::Null]),
        SendOptions::default(),
    );
    let ev = pump(now, &mut client, &mut server);
    let stream_id = ev
        .iter()
        .find_map(|e| match e {
            Event::Message { data, .. } => match decode(data).2.get(3) {
                Some(Amf0Value::Number(n)) => Some(*n as u32),
                _ => None,
            },
            _ => None,
        })
        .expect("a stream ID");
    assert_eq!(stream_id, 1);

    // play on the stream's own flow, with a tuning query.
    client.open(1, 5, None, b"TC\x04\x01");
    client.send(
        now,
        1,
        command(
            "play",
            3.0,
            vec![
                Amf0Value::Null,
                Amf0Value::Utf8String("cam?videoLifetime=0.5".into()),
            ],
        ),
        SendOptions::default(),
    );
    pump(now, &mut client, &mut server);
    assert_eq!(
        server.poll_event(),
        Some(TcEvent::Play {
            stream_id: 1,
            app: "live".into(),
            name: "cam".into()
        })
    );
    server.play_started(now, 1, "live/cam");
    let mut video = TrackInfo::new(Codec::H264);
    video.config = Arc::from(&[1u8, 0x42, 0xc0, 0x1e, 0xff, 0xe0, 0x00][..]);
    let mut audio = TrackInfo::new(Codec::Aac);
    audio.config = Arc::from(&[0x11u8, 0x90][..]);
    server.tracks(now, 1, Arc::from(vec![video, audio]));
    let frame = |track, ms: i64, key| Frame {
        track,
        pts: 10_000_000 + ms * 1000,
        dts: 10_000_000 + ms * 1000,
        keyframe: key,
        data: Arc::from(vec![0u8; 3000]),
    };
    server.frame(now, 1, &frame(0, 0, true));
    server.frame(now, 1, &frame(1, 0, true));
    server.frame(now, 1, &frame(0, 33, false));
    server.frame(now, 1, &frame(1, 21, true));
    let ev = pump(now, &mut client, &mut server);
    let opened: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            Event::FlowOpened {
                flow,
                return_assoc: Some(1),
                metadata,
            } if metadata == b"TC\x04\x01" => Some(*flow),
            _ => None,
        })
        .collect();
    assert_eq!(
        opened.len(),
        3,
        "data, audio and video flows for stream 1: {ev:?}"
    );
    let msgs: Vec<(u64, u8, u32)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Message { flow, data, .. } => {
                let (kind, ts, _) = decode(data);
                Some((*flow, kind, ts))
            }
            _ => None,
        })
        .collect();
    // Stream begin and Play.Start on the data flow; the sequence headers; then the frames,
    // audio (priority 5) ahead of video (4), timestamps from the first frame.
    let (data, audio_flow, video_flow) = (opened[0], opened[1], opened[2]);
    assert!(msgs.contains(&(data, 4, 0)) && msgs.contains(&(data, 20, 0)));
    let audio_ts: Vec<u32> = msgs
        .iter()
        .filter(|m| m.0 == audio_flow)
        .map(|m| m.2)
        .collect();
    let video_ts: Vec<u32> = msgs
        .iter()
        .filter(|m| m.0 == video_flow)
        .map(|m| m.2)
        .collect();
    // The flow sync (user control 34, syncID = the stream ID, count 3) first on audio and
    // video, then the config, then frames.
    assert_eq!(audio_ts, [0, 0, 0, 21], "sync, config, then frames");
    assert_eq!(video_ts, [0, 0, 0, 33]);
    let sync = [4u8, 0, 0, 0, 0, 0, 34, 0, 0, 0, 1, 0, 0, 0, 3];
    for flow in [data, audio_flow, video_flow] {
        assert!(
            ev.iter().any(|e| matches!(e, Event::Message { flow: f, data, .. } if *f == flow && data[..] == sync)),
            "flow {flow} has the flow sync"
        );
    }
    let first_audio_frame = msgs
        .iter()
        .position(|m| m.0 == audio_flow && m.2 == 21)
        .unwrap();
    let last_video = msgs.iter().rposition(|m| m.0 == video_flow).unwrap();
    assert!(
        first_audio_frame < last_video,
        "audio is not held behind video: {msgs:?}"
    );

    // A video frame queued while the connection is stalled misses its 0.5 s lifetime (the
    // play's query) and is abandoned, with the frame that depends on it.
    server.frame(now, 1, &frame(0, 66, false));
    server.frame(now, 1, &frame(0, 99, false));
    let later = now + Duration::from_millis(700);
    server.handle_timeout(later);
    let ev = pump(later, &mut client, &mut server);
    assert!(
        ev.contains(&Event::Abandoned {
            flow: video_flow,
            count: 2
        }),
        "{ev:?}"
    );
}

#[test]
fn a_flow_that_is_not_tc_is_refused_and_garbage_is_an_error() {
    let now = Instant::now();
    let mut server = TcSession::new();
    let mut client = Connection::new(Config::default());
    client.open(0, 5, None, b"XX");
    let ev = pump(now, &mut client, &mut server);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Rejected { flow: 0, .. })),
        "{ev:?}"
    );
    let mut server = TcSession::new();
    assert!(
        server.receive(now, &[0x1d, 0x09, 1]).is_err(),
        "data on a flow never opened"
    );
    let mut server = TcSession::new();
    server
        .receive(now, &[0x10, 0x00, b'T', b'C', 4, 0])
        .unwrap();
    let err = server.receive(now, &[0x1d, 0x00, 20, 0]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "flow 0: a TC message shorter than its header"
    );
}

/// connect + createStream on a fresh pair; returns the stream ID.
fn connected(now: Instant, client: &mut Connection, server: &mut TcSession) -> u32 {
    client.open(0, 5, None, b"TC\x04\x00");
    let connect = Amf0Value::Object(
        [("app".to_string(), Amf0Value::Utf8String("live".into()))]
            .into_iter()
            .collect(),
    );
    client.send(
        now,
        0,
        command("connect", 1.0, vec![connect]),
        SendOptions::default(),
    );
    client.send(
        now,
        0,
        command("createStream", 2.0, vec![Amf0Value::Null]),
        SendOptions::default(),
    );
    let ev = pump(now, client, server);
    ev.iter()
        .filter_map(|e| match e {
            Event::Message { data, .. } => Some(decode(data)),
            _ => None,
        })
        .find_map(|(_, _, v)| match (&v[0], v.get(3)) {
            (Amf0Value::Utf8String(n), Some(Amf0Value::Number(id))) if n == "_result" => {
                Some(*id as u32)
            }
            _ => None,
        })
        .unwrap()
}

fn tc_message(kind: u8, ts: u32, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&ts.to_be_bytes());
    m.extend_from_slice(body);
    m
}

#[test]
fn a_tc_publisher_is_answered_and_its_media_comes_out_as_hub_tracks_and_frames() {
    let now = Instant::now();
    let mut server = TcSession::new();
    let mut client = Connection::new(Config::default());
    let sid = connected(now, &mut client, &mut server);
    let meta = [b'T', b'C', 4, sid as u8];
    client.open(1, 5, None, &meta);
    client.send(
        now,
        1,
        command(
            "publish",
            0.0,
            vec![Amf0Value::Null, Amf0Value::Utf8String("cam?x=1".into())],
        ),
        SendOptions::default(),
    );
    // Media before the answer is dropped, not an error.
    client.send(
        now,
        1,
        tc_message(9, 0, &[0x27, 1, 0, 0, 0]),
        SendOptions::default(),
    );
    pump(now, &mut client, &mut server);
    let evs: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
    assert_eq!(
        evs,
        vec![TcEvent::Publish {
            stream_id: sid,
            app: "live".into(),
            name: "cam".into()
        }]
    );
    server.publish_started(now, sid, "live/cam");
    let ev = pump(now, &mut client, &mut server);
    let started = ev.iter().any(|e| match e {
        Event::Message { data, .. } => {
            let (_, _, v) = decode(data);
            format!("{v:?}").contains("NetStream.Publish.Start")
        }
        _ => false,
    });
    assert!(started, "{ev:?}");
    // An AVC sequence header and a keyframe; an Opus (Enhanced RTMP) header and a frame.
    let avcc = [
        1u8, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 10, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x05, 0x07, 0xec,
        0x04, 0x40, 1, 0, 4, 0x68, 0xce, 0x3c, 0x80,
    ];
    let mut seq = vec![0x17, 0, 0, 0, 0];
    seq.extend_from_slice(&avcc);
    let mut opus_head = vec![0x90, b'O', b'p', b'u', b's'];
    opus_head.extend_from_slice(b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00");
    for (kind, ts, body) in [
        (9u8, 0u32, seq),
        (9, 0, vec![0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88]),
        (8, 0, opus_head),
        (8, 20, vec![0x91, b'O', b'p', b'u', b's', 0xfc, 0xff]),
    ] {
        client.send(now, 1, tc_message(kind, ts, &body), SendOptions::default());
    }
    pump(now, &mut client, &mut server);
    let evs: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
    let tracks: Vec<Vec<Codec>> = evs
        .iter()
        .filter_map(|e| match e {
            TcEvent::Media {
                event: rtmp::Event::Tracks(t),
                ..
            } => Some(t.iter().map(|t| t.codec).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(tracks.last(), Some(&vec![Codec::H264, Codec::Opus]));
    let frames: Vec<(usize, i64, bool)> = evs
        .iter()
        .filter_map(|e| match e {
            TcEvent::Media {
                event: rtmp::Event::Frame(f),
                ..
            } => Some((f.track, f.pts, f.keyframe)),
            _ => None,
        })
        .collect();
    assert_eq!(frames, vec![(0, 0, true), (1, 20_000, true)]);
    // deleteStream ends it.
    client.send(
        now,
        0,
        command(
            "deleteStream",
            3.0,
            vec![Amf0Value::Null, Amf0Value::Number(f64::from(sid))],
        ),
        SendOptions::default(),
    );
    pump(now, &mut client, &mut server);
    let evs: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
    assert_eq!(evs, vec![TcEvent::Unpublish { stream_id: sid }]);
}

#[test]
fn a_publisher_with_a_bad_tag_is_an_error() {
    let now = Instant::now();
    let mut server = TcSession::new();
    let mut client = Connection::new(Config::default());
    let sid = connected(now, &mut client, &mut server);
    client.open(1, 5, None, &[b'T', b'C', 4, sid as u8]);
    client.send(
        now,
        1,
        command(
            "publish",
            0.0,
            vec![Amf0Value::Null, Amf0Value::Utf8String("cam".into())],
        ),
        SendOptions::default(),
    );
    pump(now, &mut client, &mut server);
    while server.poll_event().is_some() {}
    server.publish_started(now, sid, "live/cam");
    pump(now, &mut client, &mut server);
    // An AVC sequence header whose avcC is cut short.
    client.send(
        now,
        1,
        tc_message(9, 0, &[0x17, 0, 0, 0, 0, 1, 0x42]),
        SendOptions::default(),
    );
    let mut err = None;
    while let Some(m) = client.poll_transmit(now) {
        if let Err(e) = server.receive(now, &m) {
            err = Some(e);
        }
    }
    assert!(
        matches!(err, Some(rtmp::tc::TcError::BadMedia(_))),
        "{err:?}"
    );
}
