//! Two connections wired back to back: messages, fragments, acks and windows, priorities,
//! deadlines, close and reject; and a peer that breaks the protocol.

use std::time::{Duration, Instant};

use rtws::wire::Message;
use rtws::{Config, Connection, Event, ProtocolError, SendOptions};

/// Moves everything either side wants to send to the other, until both are quiet. Returns the
/// messages that went from `a` to `b`.
fn pump(now: Instant, a: &mut Connection, b: &mut Connection) -> Vec<Vec<u8>> {
    let mut a_to_b = Vec::new();
    loop {
        let mut moved = false;
        while let Some(m) = a.poll_transmit(now) {
            b.receive(now, &m).expect("a speaks the protocol");
            a_to_b.push(m);
            moved = true;
        }
        while let Some(m) = b.poll_transmit(now) {
            a.receive(now, &m).expect("b speaks the protocol");
            moved = true;
        }
        if !moved {
            return a_to_b;
        }
    }
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn messages(c: &mut Connection) -> Vec<(u64, u64, Vec<u8>)> {
    events(c)
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { flow, number, data } => Some((flow, number, data)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_message_larger_than_a_fragment_arrives_whole_and_is_acked() {
    let now = Instant::now();
    let (mut a, mut b) = (
        Connection::new(Config::default()),
        Connection::new(Config::default()),
    );
    assert!(a.open(0, 3, None, b"TC\x04\x00"));
    let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    assert!(a.send(now, 0, big.clone(), SendOptions::default()));
    assert!(a.send(now, 0, b"small".to_vec(), SendOptions::default()));
    let wire = pump(now, &mut a, &mut b);
    // The open, then 5000 bytes as 1400 + 1400 + 1400 + 800 (three `3d`, one `1d`), then one.
    assert_eq!(wire[0], [0x10, 0x00, 0x54, 0x43, 0x04, 0x00]);
    let kinds: Vec<u8> = wire[1..].iter().map(|m| m[0]).collect();
    assert_eq!(kinds, [0x3d, 0x3d, 0x3d, 0x1d, 0x1d]);
    assert_eq!(wire[1].len(), 2 + 1400);
    let ev = events(&mut b);
    assert_eq!(
        ev[0],
        Event::FlowOpened {
            flow: 0,
            return_assoc: None,
            metadata: b"TC\x04\x00".to_vec()
        }
    );
    let got: Vec<_> = ev
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { number, data, .. } => Some((number, data)),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![(1, big), (2, b"small".to_vec())]);
    // b acked everything: a has nothing in flight (the 2800-byte ack window was reached, and
    // the rest is acked when the timer fires).
    assert!(a.inflight() > 0);
    let due = b.poll_timeout().expect("an ack is pending");
    assert!(due <= now + Duration::from_millis(250));
    b.handle_timeout(due);
    pump(due, &mut a, &mut b);
    assert_eq!(a.inflight(), 0);
}

#[test]
fn the_window_holds_the_sender_until_the_receiver_acks() {
    let now = Instant::now();
    let mut a = Connection::new(Config::default());
    a.open(1, 3, None, b"");
    a.poll_transmit(now); // the open
    // 70 fragments: more than the 65536 bytes assumed before the first ack.
    for _ in 0..70 {
        a.send(now, 1, vec![7; 1400], SendOptions::default());
    }
    let mut sent = 0;
    while let Some(m) = a.poll_transmit(now) {
        if m[0] == 0x1d {
            sent += m.len();
        }
    }
    assert!(sent <= 65_536 && sent > 60_000, "{sent}");
    // An ack opens the window again.
    a.receive(
        now,
        &Message::Ack {
            flow: 1,
            delta: sent as u64,
            advertisement: 1 << 20,
        }
        .to_vec(),
    )
    .unwrap();
    let mut more = 0;
    while let Some(m) = a.poll_transmit(now) {
        if m[0] == 0x1d {
            more += 1;
        }
    }
    assert!(more > 0, "sending resumed after the ack");
    // An ack for bytes never sent is a lie.
    let lie = Message::Ack {
        flow: 1,
        delta: 1 << 30,
        advertisement: 0,
    };
    assert!(matches!(
        a.receive(now, &lie.to_vec()),
        Err(ProtocolError::AckBeyondSent { flow: 1, .. })
    ));
}

#[test]
fn audio_at_a_higher_priority_goes_before_queued_video() {
    let now = Instant::now();
    let (mut a, mut b) = (
        Connection::new(Config::default()),
        Connection::new(Config::default()),
    );
    a.open(1, 4, None, b"video");
    a.open(2, 5, None, b"audio");
    for _ in 0..3 {
        a.send(now, 1, vec![1; 3000], SendOptions::default());
    }
    a.send(now, 2, vec![2; 100], SendOptions::default());
    pump(now, &mut a, &mut b);
    let got = messages(&mut b);
    assert_eq!(
        got[0].0,
        2,
        "audio first: {:?}",
        got.iter().map(|m| m.0).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), 4);
}

#[test]
fn a_late_frame_is_abandoned_with_the_frames_that_depend_on_it() {
    let now = Instant::now();
    let (mut a, mut b) = (
        Connection::new(Config::default()),
        Connection::new(Config::default()),
    );
    a.open(1, 4, None, b"video");
    pump(now, &mut a, &mut b);
    events(&mut b);
    let frame = |deps| SendOptions {
        start_within: Some(Duration::from_millis(100)),
        depends_on_previous: deps,
        ..SendOptions::default()
    };
    a.send(now, 1, b"key1".to_vec(), frame(false));
    a.send(now, 1, b"delta".to_vec(), frame(true));
    // Nothing is sent for 200 ms (a stalled connection): both miss their start deadline.
    let later = now + Duration::from_millis(200);
    a.send(later, 1, b"key2".to_vec(), frame(false));
    let wire = pump(later, &mut a, &mut b);
    assert_eq!(wire[0], [0x1a, 0x01, 0x01], "one abandon for two messages");
    let ev = events(&mut b);
    assert!(ev.contains(&Event::Abandoned { flow: 1, count: 2 }));
    assert!(ev.contains(&Event::Message {
        flow: 1,
        number: 3,
        data: b"key2".to_vec()
    }));
    // A keyframe that expires the queue: the GOP before it is dropped unsent (messages with
    // a deadline; one without, a sequence header, stays).
    let delta = SendOptions {
        start_within: Some(Duration::from_secs(10)),
        depends_on_previous: true,
        ..SendOptions::default()
    };
    a.send(later, 1, b"d1".to_vec(), delta);
    a.send(later, 1, b"d2".to_vec(), delta);
    a.send(
        later,
        1,
        b"key3".to_vec(),
        SendOptions {
            expire_queued: true,
            ..SendOptions::default()
        },
    );
    pump(later, &mut a, &mut b);
    let got = messages(&mut b);
    assert_eq!(
        got,
        vec![(1, 6, b"key3".to_vec())],
        "numbers count the abandoned"
    );
}

#[test]
fn close_reject_and_ping() {
    let now = Instant::now();
    let (mut a, mut b) = (
        Connection::new(Config::default()),
        Connection::new(Config::default()),
    );
    a.open(0, 3, None, b"control");
    a.send(now, 0, b"last words".to_vec(), SendOptions::default());
    a.close(0);
    pump(now, &mut a, &mut b);
    let ev = events(&mut b);
    assert!(ev.contains(&Event::FlowClosed { flow: 0 }));
    assert_eq!(events(&mut a), vec![Event::SendFlowClosed { flow: 0 }]);
    assert!(
        a.open(0, 3, None, b"again"),
        "the ID is free once the close was acked"
    );
    pump(now, &mut a, &mut b);
    events(&mut b);
    // b refuses a's flow: a drops its queue and still closes.
    b.reject(0, 7, "not here");
    a.send(now, 0, b"dropped".to_vec(), SendOptions::default());
    pump(now, &mut a, &mut b);
    let ev = events(&mut a);
    assert!(ev.contains(&Event::Rejected {
        flow: 0,
        code: Some(7),
        text: "not here".into()
    }));
    assert!(messages(&mut b).is_empty());
    // A return flow answering a flow the receiver does not have is refused.
    let mut c = Connection::new(Config::default());
    c.receive(
        now,
        &Message::Open {
            flow: 9,
            return_assoc: Some(42),
            metadata: b"",
        }
        .to_vec(),
    )
    .unwrap();
    assert_eq!(c.poll_transmit(now).unwrap()[0], 0x5e);
    assert!(events(&mut c).is_empty(), "the application never sees it");
    a.ping(b"t1");
    pump(now, &mut a, &mut b);
    assert_eq!(events(&mut a), vec![Event::Pong(b"t1".to_vec())]);
}

#[test]
fn a_peer_that_breaks_the_protocol_gets_a_reason() {
    let now = Instant::now();
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (vec![vec![0x1d, 0x81]], "malformed message: truncated vlu"),
        (vec![vec![0x1d, 0x05, 1, 2, 3]], "unknown flow 5"),
        (
            vec![vec![0x10, 0x01], vec![0x10, 0x01]],
            "flow 1 is already open",
        ),
        (vec![vec![0x1c, 0x03]], "unknown flow 3"),
        (vec![vec![0x5a, 0x01, 0x00, 0x00]], "unknown flow 1"),
    ];
    for (msgs, want) in cases {
        let mut c = Connection::new(Config::default());
        let err = msgs
            .iter()
            .map(|m| c.receive(now, m))
            .find_map(Result::err)
            .expect("an error");
        assert_eq!(err.to_string(), want);
    }
    // Unknown types and text are ignored.
    let mut c = Connection::new(Config::default());
    assert!(c.receive(now, &[0x99, 1, 2]).is_ok());
    // A message that never ends ("1 GB"): refused at the limit, memory stays bounded.
    let mut c = Connection::new(Config {
        max_message: 10_000,
        ..Config::default()
    });
    c.receive(now, &[0x10, 0x01]).unwrap();
    let mut frag = vec![0x3d, 0x01];
    frag.extend([0u8; 1400]);
    let err = (0..100)
        .map(|_| {
            // Keep the window open as a well-behaved receiver's acks would.
            while c.poll_transmit(now).is_some() {}
            c.receive(now, &frag)
        })
        .find_map(Result::err)
        .expect("refused");
    assert_eq!(
        err,
        ProtocolError::MessageTooLarge {
            flow: 1,
            limit: 10_000
        }
    );
    // A sender ignoring the window: past the 65536 bytes a sender may assume before our
    // first ack, and the 4000 that ack gave, with none of our later acks sent.
    let mut c = Connection::new(Config {
        recv_buffer: 4000,
        ..Config::default()
    });
    c.receive(now, &[0x10, 0x01]).unwrap();
    while c.poll_transmit(now).is_some() {} // the ack advertising 4000
    let mut data = vec![0x1d, 0x01];
    data.extend([0u8; 1400]);
    let err = (0..100)
        .map(|_| c.receive(now, &data))
        .find_map(Result::err)
        .expect("overrun");
    assert!(
        matches!(err, ProtocolError::WindowOverrun { flow: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_closed_window_is_never_exceeded_and_a_small_one_gets_small_fragments() {
    let now = Instant::now();
    let mut a = Connection::new(Config::default());
    a.open(1, 3, None, b"");
    a.poll_transmit(now);
    let ack = |delta, advertisement| {
        Message::Ack {
            flow: 1,
            delta,
            advertisement,
        }
        .to_vec()
    };
    // The receiver advertises nothing (paused): nothing goes, not even one fragment.
    a.receive(now, &ack(0, 0)).unwrap();
    a.send(now, 1, vec![5; 3000], SendOptions::default());
    assert_eq!(a.poll_transmit(now), None);
    // 100 bytes of room: a fragment of 98 payload bytes (2 of header), then nothing.
    a.receive(now, &ack(0, 100)).unwrap();
    let m = a.poll_transmit(now).expect("a fragment that fits");
    assert_eq!((m[0], m.len()), (0x3d, 100));
    assert_eq!(a.poll_transmit(now), None);
}
