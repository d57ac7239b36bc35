//! Any bytes from a TURN client, as UDP datagrams and as a TCP stream, and from a peer toward a
//! relay: the core never panics, answers each datagram with at most a few transmits, and keeps
//! no more than its TCP frame limit buffered. Datagrams are split at 0xFF 0xFE marks so the
//! fuzzer can build sequences (a 401 round, then a signed Allocate, then ChannelData).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use turn::{Credentials, Output, PeerPolicy, Transport, Turn, TurnConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let listen: SocketAddr = "192.0.2.1:3478".parse().expect("addr");
    let client: SocketAddr = "198.51.100.7:5000".parse().expect("addr");
    let relay: SocketAddr = "192.0.2.1:40000".parse().expect("addr");
    let mut credentials = Credentials::new(Some("secret"));
    credentials.add_user("alice", "wonderland");
    let mut now = Instant::now();
    let mut turn = Turn::new(
        TurnConfig {
            realm: "onair".into(),
            credentials,
            policy: PeerPolicy::default(),
            max_allocations: 4,
            max_allocations_per_user: 2,
            allocation_bytes_per_sec: 100_000,
        },
        now,
    );
    turn.add_listener(Transport::Udp, listen);
    turn.add_listener(Transport::Tcp, listen);
    let transport = if mode & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    for piece in data.split(|b| *b == 0xff) {
        if mode & 2 == 2 && piece.first() == Some(&0xfe) {
            turn.recv_peer(relay, "203.0.113.9:7000".parse().expect("addr"), piece, now);
        } else {
            turn.recv_client(transport, listen, client, piece, now);
        }
        let mut outputs = 0;
        while let Some(o) = turn.poll_output() {
            outputs += 1;
            assert!(outputs < 64, "one input produced too many outputs");
            if let Output::Allocate {
                listener,
                transport,
                client,
                ipv6,
            } = o
            {
                turn.allocated(listener, transport, client, ipv6, Some(relay), now);
            }
        }
        now += Duration::from_millis(u64::from(mode >> 2) * 100);
        turn.handle_timeout(now);
    }
});
