//! Any bytes as a stream of RTWebSocket messages (each prefixed here by a length byte) into a
//! connection that also sends: nothing panics, and memory stays within the configured limits
//! (a message past `max_message` is an error, not a bigger buffer).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtws::wire::Message;
use rtws::{Config, Connection, SendOptions};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut c = Connection::new(Config {
        max_message: 64 * 1024,
        max_flows: 8,
        ..Config::default()
    });
    // Our own flow, so acks, rejects and close acks from the input have something to hit.
    c.open(1, 4, None, b"TC\x04\x01");
    c.send(now, 1, vec![0; 5000], SendOptions::default());
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (msg, after) = tail.split_at(n);
        rest = after;
        let _ = Message::parse(msg);
        if c.receive(now, msg).is_err() {
            return; // the connection closes
        }
        now += Duration::from_millis(u64::from(len % 64));
        c.handle_timeout(now);
        while c.poll_transmit(now).is_some() {}
        while c.poll_event().is_some() {}
    }
});
