//! A TC client of ours (an rtws::Connection speaking the mapping, with the flow rules of RFC
//! 7425 §5.3 and the reference client) against the server session: connect, createStream,
//! play and publish; the flows the server opens and what answers what, their priorities at
//! work, the media messages that arrive, and the flows it refuses.

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

/// The client's control flow and `connect`; returns the server's control flow (a return flow
/// of ours, stream 0) after checking the connect result on it.
fn connect(now: Instant, client: &mut Connection, server: &mut TcSession) -> u64 {
    client.open(0, 5, None, b"TC\x04\x00");
    let connect = Amf0Value::Object(
        [
            ("app".to_string(), Amf0Value::Utf8String("live".into())),
            (
                "tcUrl".to_string(),
                Amf0Value::Utf8String("ws://host/rtws/live?token=t".into()),
            ),
        ]
        .into_iter()
        .collect(),
    );
    // Two string arguments, as the reference client sends a URL's `user:password`.
    let args = vec![
        connect,
        Amf0Value::Utf8String("user".into()),
        Amf0Value::Number(3.0),
        Amf0Value::Utf8String("secret".into()),
    ];
    client.send(
        now,
        0,
        command("connect", 1.0, args),
        SendOptions::default(),
    );
    let ev = pump(now, client, server);
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
        .expect("a control flow answering ours");
    let result = ev
        .iter()
        .find_map(|e| match e {
            Event::Message { flow, data, .. } if *flow == control => Some(decode(data)),
            _ => None,
        })
        .expect("the connect result");
    assert_eq!(result.2[0], Amf0Value::Utf8String("_result".into()));
    assert!(format!("{:?}", result.2[3]).contains("NetConnection.Connect.Success"));
    // What the server may take credentials from: the strings, not the number.
    assert_eq!(server.connect_args(), ["user", "secret"]);
    assert_eq!(server.tc_url(), Some("ws://host/rtws/live?token=t"));
    control
}

/// connect + createStream on a fresh pair; returns the server's control flow and the stream ID.
fn connected(now: Instant, client: &mut Connection, server: &mut TcSession) -> (u64, u32) {
    let control = connect(now, client, server);
    client.send(
        now,
        0,
        command("createStream", 2.0, vec![Amf0Value::Null]),
        SendOptions::default(),
    );
    let ev = pump(now, client, server);
    let id = ev
        .iter()
        .filter_map(|e| match e {
            Event::Message { flow, data, .. } if *flow == control => Some(decode(data)),
            _ => None,
        })
        .find_map(|(_, _, v)| match (&v[0], v.get(3)) {
            (Amf0Value::Utf8String(n), Some(Amf0Value::Number(id))) if n == "_result" => {
                Some(*id as u32)
            }
            _ => None,
        })
        .expect("a stream ID");
    (control, id)
}

/// The codes of the onStatus messages among `ev`, with their flows.
fn statuses(ev: &[Event]) -> Vec<(u64, String)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Message { flow, data, .. } if data[0] == 20 => {
                let (_, _, v) = decode(data);
                match (v.first(), v.get(3)) {
                    (Some(Amf0Value::Utf8String(n)), Some(Amf0Value::Object(o)))
                        if n == "onStatus" =>
                    {
                        match o.get("code") {
                            Some(Amf0Value::Utf8String(c)) => Some((*flow, c.clone())),
                            _ => None,
                        }
                    }
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// The AMF0 values of the command messages on `flow` among `ev`.
fn on_flow(ev: &[Event], flow: u64) -> impl Iterator<Item = Vec<Amf0Value>> + '_ {
    ev.iter().filter_map(move |e| match e {
        Event::Message { flow: f, data, .. } if *f == flow && data[0] == 20 => Some(decode(data).2),
        _ => None,
    })
}

/// A fresh pair with stream `sid` playing "cam" (its play flow is the client's flow 1).
fn started(now: Instant) -> (Connection, TcSession, u64, u32) {
    let mut server = TcSession::new();
    let mut client = Connection::new(Config::default());
    let (control, sid) = connected(now, &mut client, &mut server);
    play(now, &mut client, control, 1, sid, "cam");
    pump(now, &mut client, &mut server);
    while server.poll_event().is_some() {}
    server.play_started(now, sid, "live/cam");
    (client, server, control, sid)
}

fn tracks() -> Arc<[TrackInfo]> {
    let mut video = TrackInfo::new(Codec::H264);
    video.config = Arc::from(&[1u8, 0x42, 0xc0, 0x1e, 0xff, 0xe0, 0x00][..]);
    let mut audio = TrackInfo::new(Codec::Aac);
    audio.config = Arc::from(&[0x11u8, 0x90][..]);
    Arc::from(vec![video, audio])
}

fn frame(track: usize, ms: i64, key: bool) -> Frame {
    Frame {
        track,
        pts: 10_000_000 + ms * 1000,
        dts: 10_000_000 + ms * 1000,
        keyframe: key,
        data: Arc::from(vec![0u8; 3000]),
    }
}

/// The client's play flow for `sid` (answering the server's control flow) and `play NAME`.
fn play(now: Instant, client: &mut Connection, control: u64, flow: u64, sid: u32, name: &str) {
    client.open(flow, 5, Some(control), &[b'T', b'C', 4, sid as u8]);
    client.send(
        now,
        flow,
        command(
            "play",
            0.0,
            vec![Amf0Value::Null, Amf0Value::Utf8String(name.into())],
        ),
        SendOptions::default(),
    );
}

/// The media messages among `ev`: (flow, type, timestamp).
fn media(ev: &[Event]) -> Vec<(u64, u8, u32)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Message { flow, data, .. } if data[0] == 8 || data[0] == 9 => {
                let (kind, ts, _) = decode(data);
                Some((*flow, kind, ts))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_tc_player_connects_plays_and_gets_media_on_flows_answering_its_control_flow() {
    let now = Instant::now();
    let mut server = TcSession::new();
    let mut client = Connection::new(Config::default());
    let (control, sid) = connected(now, &mut client, &mut server);
    assert_eq!(sid, 1);

    // play on a flow of the stream answering the server's control flow, with a tuning query.
    play(now, &mut client, control, 1, sid, "cam?videoLifetime=0.5");
    pump(now, &mut client, &mut server);
    assert_eq!(
        server.poll_event(),
        Some(TcEvent::Play {
            stream_id: 1,
            app: "live".into(),
            name: "cam".into(),
            query: Some("videoLifetime=0.5".into()),
        })
    );
    server.play_started(now, 1, "live/cam");
    server.tracks(now, 1, tracks());
    server.frame(now, 1, &frame(0, 0, true));
    server.frame(now, 1, &frame(1, 0, true));
    server.frame(now, 1, &frame(0, 33, false));
    server.frame(now, 1, &frame(1, 21, true));
    let ev = pump(now, &mut client, &mut server);
    // The stream's flows answer the client's control flow (flow 0), as the reference client
    // routes them: data (the statuses), then video and audio as their first messages come.
    let opened: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            Event::FlowOpened {
                flow,
                return_assoc: Some(0),
                metadata,
            } if metadata == b"TC\x04\x01" => Some(*flow),
            _ => None,
        })
        .collect();
    assert_eq!(opened.len(), 3, "data, video and audio flows: {ev:?}");
    assert!(
        !ev.iter()
            .any(|e| matches!(e, Event::FlowOpened { return_assoc: Some(a), .. } if *a != 0)),
        "no flow answers anything but the client's control flow: {ev:?}"
    );
    let (data, video_flow, audio_flow) = (opened[0], opened[1], opened[2]);
    // Stream begin (user control 0, stream 1) on the control flow; Reset then Start on data.
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Message { flow, data, .. }
        if *flow == control && data[..] == [4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]))
    );
    assert_eq!(
        statuses(&ev),
        [
            (data, "NetStream.Play.Reset".to_owned()),
            (data, "NetStream.Play.Start".to_owned())
        ]
    );
    // The sequence headers first, then frames, timestamps from the first frame; audio
    // (priority 5) is not held behind video (4).
    let msgs = media(&ev);
    let on = |f| {
        msgs.iter()
            .filter(|m| m.0 == f)
            .map(|m| m.2)
            .collect::<Vec<_>>()
    };
    assert_eq!(on(audio_flow), [0, 0, 21], "config, then frames");
    assert_eq!(on(video_flow), [0, 0, 33]);
    let first_audio_frame = msgs.iter().position(|m| m.0 == audio_flow && m.2 == 21);
    let last_video = msgs.iter().rposition(|m| m.0 == video_flow);
    assert!(first_audio_frame < last_video, "{msgs:?}");

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

    // The stream ends: a flow sync (user control 34, count 2) on audio and data each side of
    // UnpublishNotify and Stop, so the player takes them after the audio before them.
    server.play_ended(later, 1, "the stream ended");
    let ev = pump(later, &mut client, &mut server);
    let syncs: Vec<(u64, u32)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Message { flow, data, .. } if data.len() == 15 && data[5..7] == [0, 34] => {
                assert_eq!(data[11..], [0, 0, 0, 2], "count 2");
                Some((
                    *flow,
                    u32::from_be_bytes([data[7], data[8], data[9], data[10]]),
                ))
            }
            _ => None,
        })
        .collect();
    let mut sorted = syncs.clone();
    sorted.sort();
    let mut want = vec![(audio_flow, 0), (audio_flow, 1), (data, 0), (data, 1)];
    want.sort();
    assert_eq!(sorted, want, "{syncs:?}");
    assert_eq!(
        statuses(&ev),
        [
            (data, "NetStream.Play.UnpublishNotify".to_owned()),
            (data, "NetStream.Play.Stop".to_owned())
        ]
    );
    // Nothing more goes to a play that ended.
    server.frame(later, 1, &frame(0, 132, true));
    assert!(media(&pump(later, &mut client, &mut server)).is_empty());
}

#[test]
fn flows_that_do_not_answer_the_control_flow_or_name_no_stream_are_refused() {
    let now = Instant::now();
    let mut server = TcSession::new();
    let mut client = Connection::new(Config::default());
    // Before the control flow: a stream flow is refused.
    client.open(5, 5, None, b"TC\x04\x01");
    let ev = pump(now, &mut client, &mut server);
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Event::Rejected {
                flow: 5,
                code: Some(0),
                ..
            }
        )),
        "{ev:?}"
    );

    let (control, sid) = connected(now, &mut client, &mut server);
    // A stream flow that answers nothing (as onair's own client once opened them), one that
    // names a stream never created, and one with the stream-ID flag clear: refused.
    client.open(1, 5, None, &[b'T', b'C', 4, sid as u8]);
    client.open(2, 5, Some(control), b"TC\x04\x09");
    client.open(3, 5, Some(control), b"TC\x00\x01");
    let ev = pump(now, &mut client, &mut server);
    for flow in [1, 2, 3] {
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::Rejected { flow: f, code: Some(0), .. } if *f == flow)),
            "flow {flow} refused: {ev:?}"
        );
    }
    // A second command flow for stream 0, answering the control flow, is one more way to
    // send commands: createStream on it is answered on the control flow.
    client.open(4, 5, Some(control), b"TC\x04\x00");
    client.send(
        now,
        4,
        command("createStream", 7.0, vec![Amf0Value::Null]),
        SendOptions::default(),
    );
    let ev = pump(now, &mut client, &mut server);
    let answered = on_flow(&ev, control)
        .any(|v| v[0] == Amf0Value::Utf8String("_result".into()) && v[1] == Amf0Value::Number(7.0));
    assert!(answered, "{ev:?}");
    assert!(
        !ev.iter()
            .any(|e| matches!(e, Event::Rejected { flow: 4, .. }))
    );
    // An unknown command asking for an answer gets NetConnection.Call.Failed as _error.
    client.send(
        now,
        0,
        command("nosuch", 8.0, vec![Amf0Value::Null]),
        SendOptions::default(),
    );
    let ev = pump(now, &mut client, &mut server);
    let failed = on_flow(&ev, control).any(|v| {
        v[0] == Amf0Value::Utf8String("_error".into())
            && format!("{:?}", v[3]).contains("NetConnection.Call.Failed")
    });
    assert!(failed, "{ev:?}");
}

#[test]
fn pause_and_receive_video_hold_media_back_and_video_resumes_at_a_keyframe() {
    let now = Instant::now();
    let (mut client, mut server, _, sid) = started(now);
    server.tracks(now, sid, tracks());
    server.frame(now, sid, &frame(0, 0, true));
    let stream_command = |client: &mut Connection, name: &str, flag: bool| {
        client.send(
            now,
            1,
            command(name, 0.0, vec![Amf0Value::Null, Amf0Value::Boolean(flag)]),
            SendOptions::default(),
        );
    };
    assert_eq!(media(&pump(now, &mut client, &mut server)).len(), 3);
    stream_command(&mut client, "pause", true);
    pump(now, &mut client, &mut server);
    server.frame(now, sid, &frame(0, 33, false));
    server.frame(now, sid, &frame(1, 40, true));
    assert!(
        media(&pump(now, &mut client, &mut server)).is_empty(),
        "paused"
    );
    stream_command(&mut client, "pause", false);
    stream_command(&mut client, "receiveAudio", false);
    pump(now, &mut client, &mut server);
    server.frame(now, sid, &frame(0, 66, false));
    server.frame(now, sid, &frame(1, 60, true));
    server.frame(now, sid, &frame(0, 99, true));
    let ts: Vec<(u8, u32)> = media(&pump(now, &mut client, &mut server))
        .iter()
        .map(|m| (m.1, m.2))
        .collect();
    assert_eq!(ts, [(9, 99)], "no audio; video from the next keyframe");
    stream_command(&mut client, "receiveAudio", true);
    stream_command(&mut client, "receiveVideo", false);
    pump(now, &mut client, &mut server);
    server.frame(now, sid, &frame(0, 133, true));
    server.frame(now, sid, &frame(1, 140, true));
    let ts: Vec<u8> = media(&pump(now, &mut client, &mut server))
        .iter()
        .map(|m| m.1)
        .collect();
    assert_eq!(ts, [8], "audio only");
}

#[test]
fn delete_stream_ends_a_play_closes_its_flows_and_refuses_the_clients() {
    let now = Instant::now();
    let (mut client, mut server, control, sid) = started(now);
    pump(now, &mut client, &mut server);
    client.send(
        now,
        0,
        command(
            "deleteStream",
            0.0,
            vec![Amf0Value::Null, Amf0Value::Number(f64::from(sid))],
        ),
        SendOptions::default(),
    );
    let ev = pump(now, &mut client, &mut server);
    assert_eq!(server.poll_event(), Some(TcEvent::Stop { stream_id: sid }));
    assert!(
        ev.iter().any(|e| matches!(e, Event::FlowClosed { .. })),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Rejected { flow: 1, .. })),
        "{ev:?}"
    );
    // The stream ID is gone: a new flow for it is refused.
    client.open(2, 5, Some(control), &[b'T', b'C', 4, sid as u8]);
    let ev = pump(now, &mut client, &mut server);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Rejected { flow: 2, .. })),
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
    let (control, sid) = connected(now, &mut client, &mut server);
    let meta = [b'T', b'C', 4, sid as u8];
    client.open(1, 5, Some(control), &meta);
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
            name: "cam".into(),
            query: Some("x=1".into()),
        }]
    );
    server.publish_started(now, sid, "live/cam");
    let ev = pump(now, &mut client, &mut server);
    // On the stream's data flow, which answers the client's control flow (the reference
    // client hears a stream's statuses only there).
    let data_flow = ev
        .iter()
        .find_map(|e| match e {
            Event::FlowOpened {
                flow,
                return_assoc: Some(0),
                metadata,
            } if metadata[..] == meta => Some(*flow),
            _ => None,
        })
        .expect("the stream's data flow");
    assert_eq!(
        statuses(&ev),
        [(data_flow, "NetStream.Publish.Start".to_owned())]
    );
    // Audio on a flow of its own, as the reference client sends it (here below video, so
    // the video tags come first and the track order below is fixed).
    client.open(2, 4, Some(control), &meta);
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
        let flow = if kind == 8 { 2 } else { 1 };
        client.send(
            now,
            flow,
            tc_message(kind, ts, &body),
            SendOptions::default(),
        );
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
    let (control, sid) = connected(now, &mut client, &mut server);
    client.open(1, 5, Some(control), &[b'T', b'C', 4, sid as u8]);
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
