//! A TC session (RTWebSocket's RTMP mapping) that has accepted a publish, fed any bytes: as
//! messages on the publisher's stream flow (audio, video, commands through the RTMP ingest's
//! FLV and codec-configuration parsing) or as raw RTWebSocket messages. Nothing panics; a bad
//! message is an error that closes the connection.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtmp::tc::{TcEvent, TcSession};
use rtws::{Config, Connection, SendOptions};

/// AMF0: a string, a number, null, an object of string values.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(0x02);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn number(out: &mut Vec<u8>, n: f64) {
    out.push(0x00);
    out.extend_from_slice(&n.to_be_bytes());
}

fn command(name: &str, transaction: f64, tail: &[u8]) -> Vec<u8> {
    let mut m = vec![20, 0, 0, 0, 0];
    string(&mut m, name);
    number(&mut m, transaction);
    m.extend_from_slice(tail);
    m
}

/// Moves everything between the two ends; false when the server refused something.
fn pump(now: Instant, client: &mut Connection, server: &mut TcSession) -> bool {
    for _ in 0..64 {
        let mut moved = false;
        while let Some(m) = client.poll_transmit(now) {
            if server.receive(now, &m).is_err() {
                return false;
            }
            moved = true;
        }
        while let Some(m) = server.poll_transmit(now) {
            let _ = client.receive(now, &m);
            moved = true;
        }
        while client.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut server = TcSession::new();
    let mut client = Connection::new(Config::default());
    // connect, createStream (stream 1), publish "cam" on the stream's own flow.
    client.open(0, 5, None, b"TC\x04\x00");
    let mut app = vec![0x03];
    app.extend_from_slice(&3u16.to_be_bytes());
    app.extend_from_slice(b"app");
    string(&mut app, "live");
    app.extend_from_slice(&[0, 0, 9]);
    client.send(now, 0, command("connect", 1.0, &app), SendOptions::default());
    client.send(now, 0, command("createStream", 2.0, &[0x05]), SendOptions::default());
    // The stream flow answers the server's control flow (its first flow, ID 0).
    client.open(1, 5, Some(0), b"TC\x04\x01");
    let mut publish = vec![0x05];
    string(&mut publish, "cam");
    client.send(now, 1, command("publish", 0.0, &publish), SendOptions::default());
    if !pump(now, &mut client, &mut server) {
        return;
    }
    while let Some(ev) = server.poll_event() {
        if let TcEvent::Publish { stream_id, .. } = ev {
            server.publish_started(now, stream_id, "live/cam");
        }
    }
    // Then the input: chunks of (a length byte, a kind byte, bytes).
    let mut rest = data;
    while let [len, kind, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, after) = tail.split_at(n);
        rest = after;
        let result = if kind & 1 == 0 {
            // A whole TC message on the stream flow: the client fragments it.
            client.send(now, 1, chunk.to_vec(), SendOptions::default());
            pump(now, &mut client, &mut server)
        } else {
            server.receive(now, chunk).is_ok()
        };
        if !result {
            return; // the connection closes
        }
        while server.poll_event().is_some() {}
        now += Duration::from_millis(u64::from(kind >> 2));
        server.handle_timeout(now);
    }
});
