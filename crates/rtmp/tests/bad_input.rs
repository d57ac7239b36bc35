//! Hostile or broken clients: every case ends in an error value with a clear message, never a
//! panic, and the session never holds more than its limits.

mod common;

use common::*;
use rml_rtmp::sessions::ClientSessionEvent;
use rtmp::{RtmpError, Session, SessionConfig};

#[test]
fn garbage_instead_of_a_handshake() {
    let mut s = Session::new(SessionConfig::default());
    let err = s
        .handle_input(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "RTMP handshake failed: expected RTMP version 3, got byte 0x47 (not an RTMP client?)"
    );
    // The session stays failed with the same reason.
    assert_eq!(s.handle_input(&[3]).unwrap_err(), err);
    assert!(s.poll_output().is_none());

    let mut s = Session::new(SessionConfig::default());
    assert_eq!(
        s.handle_input(&[6; 10]).unwrap_err().to_string(),
        "RTMP handshake failed: the client asked for encrypted RTMP (RTMPE), which is not offered"
    );
}

#[test]
fn random_bytes_after_the_handshake_never_panic() {
    // A small xorshift so the test is the same every run.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let config = SessionConfig::default();
    for _ in 0..200 {
        let mut pair = Pair::new(config.clone());
        let len = (next() % 4096) as usize;
        let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        for piece in garbage.chunks(1 + (next() % 300) as usize) {
            if pair.server.handle_input(piece).is_err() {
                break;
            }
            while pair.server.poll_output().is_some() {}
        }
    }
}

#[test]
fn lying_chunk_sizes() {
    let mut pair = Pair::new(SessionConfig::default());
    pair.send_to_server(&chunk(2, 1, 0, 0, &0x7fff_ffffu32.to_be_bytes()));
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "client asked for chunk size 2147483647; accepted sizes are 1 to 1048576 bytes"
    );
    let mut pair = Pair::new(SessionConfig::default());
    pair.send_to_server(&chunk(2, 1, 0, 0, &0u32.to_be_bytes()));
    assert_eq!(
        pair.error.take(),
        Some(RtmpError::BadChunkSize {
            size: 0,
            limit: 1 << 20
        })
    );
    let mut pair = Pair::new(SessionConfig::default());
    pair.send_to_server(&chunk(2, 1, 0, 0, &[0, 1]));
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "malformed RTMP message: SetChunkSize shorter than 4 bytes"
    );
}

#[test]
fn a_message_length_that_lies() {
    let mut pair = Pair::new(SessionConfig::default());
    // Announces 16 MiB - 1 of video.
    let mut bytes = vec![0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0];
    bytes.extend([0; 100]);
    pair.send_to_server(&bytes);
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "RTMP message of 16777215 bytes exceeds the limit of 4194304 bytes"
    );
}

#[test]
fn a_client_that_stops_mid_frame_holds_at_most_the_buffer_limit() {
    let config = SessionConfig {
        max_buffered_bytes: 64 * 1024,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(config);
    // A 1 MiB message (allowed) in 128-byte chunks that never completes within 64 KiB.
    let mut bytes = vec![0x04, 0, 0, 0, 0x10, 0x00, 0x00, 9, 1, 0, 0, 0];
    bytes.extend([0; 128]);
    pair.send_to_server(&bytes);
    assert!(pair.error.is_none());
    for _ in 0..600 {
        let mut c = vec![0xc4];
        c.extend([0; 128]);
        pair.send_to_server(&c);
        if pair.error.is_some() {
            break;
        }
    }
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "client made the session buffer more than 65536 bytes"
    );
}

#[test]
fn one_huge_read_is_refused_at_the_limit() {
    let config = SessionConfig {
        max_buffered_bytes: 100_000,
        max_chunk_size: 1 << 22,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(config);
    pair.send_to_server(&chunk(2, 1, 0, 0, &(1u32 << 22).to_be_bytes()));
    assert!(pair.error.is_none());
    // One 3 MiB chunk arriving in a single read: parsed in pieces, refused when the held
    // bytes pass 100 kB rather than after copying all of it.
    let mut bytes = vec![0x04, 0, 0, 0, 0x30, 0x00, 0x00, 9, 1, 0, 0, 0];
    bytes.resize(3 << 20, 0);
    pair.send_to_server(&bytes);
    assert_eq!(
        pair.error.take(),
        Some(RtmpError::BufferLimit { limit: 100_000 })
    );
}

#[test]
fn thousands_of_chunk_stream_ids() {
    let mut pair = Pair::new(SessionConfig::default());
    let mut bytes = Vec::new();
    for csid in 0..5000u32 {
        // 3-byte basic header form: csid = 64 + lo + 256 * hi.
        bytes.extend([0x01, csid as u8, (csid >> 8) as u8]);
        bytes.extend([0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 0x17]);
    }
    pair.send_to_server(&bytes);
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "client used more than 64 chunk streams"
    );
}

#[test]
fn continuation_without_a_message() {
    let mut pair = Pair::new(SessionConfig::default());
    pair.send_to_server(&[0xc9, 0x00, 0x01]);
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "bad RTMP chunk: a compressed chunk header on a chunk stream with no message before it"
    );
}

#[test]
fn bad_app_names_are_refused_with_a_reply() {
    let mut pair = Pair::new(SessionConfig::default());
    pair.connect("live?token=1");
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "app name \"live?token=1\" is not allowed (use letters, digits, '.', '_' and '-')"
    );
    assert!(matches!(
        pair.client_events.last(),
        Some(ClientSessionEvent::ConnectionRequestRejected { .. })
    ));
}

#[test]
fn broken_commands() {
    let amf_string = |s: &str| {
        let mut v = vec![2, 0, s.len() as u8];
        v.extend(s.as_bytes());
        v
    };
    // A command that is only a name: rml_rtmp's own decoder would panic on it.
    let mut pair = Pair::new(SessionConfig::default());
    pair.send_to_server(&chunk(3, 20, 0, 0, &amf_string("connect")));
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "RTMP protocol violation: connect without an app name"
    );
    // Nested objects far deeper than any client sends.
    let mut pair = Pair::new(SessionConfig::default());
    let mut deep = amf_string("connect");
    deep.extend([0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for _ in 0..20 {
        deep.extend([3, 0, 1, b'a']);
    }
    pair.send_to_server(&chunk(3, 20, 0, 0, &deep));
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "malformed RTMP message: AMF0 values nested too deeply"
    );
    // Publishing before connect.
    let mut pair = Pair::new(SessionConfig::default());
    let mut publish = amf_string("publish");
    publish.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    publish.extend(amf_string("test"));
    pair.send_to_server(&chunk(3, 20, 1, 0, &publish));
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "RTMP protocol violation: a stream command before connect"
    );
}

#[test]
fn unsupported_codecs_are_refused_by_name() {
    let mut pair = Pair::publishing();
    pair.video(0, vec![0x12, 0x00, 0x00]); // Sorenson H.263 key frame
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "unsupported codec Sorenson H.263 (FLV video codec 2): publish H.264, H.265, AV1 or VP9 \
         video and AAC or Opus audio"
    );
    let mut pair = Pair::publishing();
    pair.audio(0, vec![0x2f, 0xff, 0xfb]); // MP3
    assert_eq!(
        pair.error.take(),
        Some(RtmpError::UnsupportedCodec(
            "MP3 (FLV sound format 2)".into()
        ))
    );
}

#[test]
fn malformed_tags_say_what_was_wrong() {
    let mut pair = Pair::publishing();
    pair.video(0, vec![0x17, 0x00, 0, 0, 0, 0x01, 0x42]);
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "malformed H.264 data: the avcC record ends inside its header"
    );
    let mut pair = Pair::publishing();
    pair.audio(0, vec![0xaf, 0x00, 0x16]);
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "malformed FLV tag: the AAC AudioSpecificConfig does not parse"
    );
}

#[test]
fn too_many_streams() {
    let mut pair = Pair::new(SessionConfig::default());
    pair.connect("live");
    let mut create = vec![2, 0, 12];
    create.extend(b"createStream");
    create.extend([0, 0x40, 0, 0, 0, 0, 0, 0, 0, 5]); // transaction 2.0, null
    for _ in 0..9 {
        pair.send_to_server(&chunk(3, 20, 0, 0, &create));
    }
    assert_eq!(
        pair.error.take().unwrap().to_string(),
        "client created more than 8 streams on one connection"
    );
}
