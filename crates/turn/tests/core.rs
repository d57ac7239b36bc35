//! The TURN core driven by hand-built STUN messages: the allocation handshake, and each
//! refusal with the STUN error code a client must see.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use turn::{Credentials, Output, PeerPolicy, Transport, Turn, TurnConfig};
use turn_server_proto::types::attribute::{
    ChannelNumber, Data, Lifetime, RequestedTransport, XorPeerAddress, XorRelayedAddress,
};
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, SEND};
use turn_server_proto::types::stun::attribute::{ErrorCode, Nonce, Realm, Username};
use turn_server_proto::types::stun::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, TransactionId,
};

const LISTEN: &str = "192.0.2.1:3478";
const RELAY: &str = "192.0.2.1:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn config() -> TurnConfig {
    let mut credentials = Credentials::new(Some("shared-secret"));
    credentials.add_user("alice", "wonderland");
    TurnConfig {
        realm: "onair".into(),
        credentials,
        policy: PeerPolicy::default(),
        max_allocations: 3,
        max_allocations_per_user: 2,
        allocation_bytes_per_sec: 0,
    }
}

struct Client {
    addr: SocketAddr,
    user: String,
    pass: String,
    nonce: Option<String>,
}

impl Client {
    fn new(port: u16, user: &str, pass: &str) -> Self {
        Self {
            addr: SocketAddr::new("198.51.100.7".parse().expect("ip"), port),
            user: user.into(),
            pass: pass.into(),
            nonce: None,
        }
    }

    fn creds(&self) -> MessageIntegrityCredentials {
        MessageIntegrityCredentials::LongTerm(LongTermKeyCredentials::new(
            self.user.clone(),
            self.pass.clone(),
            "onair".into(),
        ))
    }

    /// A signed request (unsigned until a nonce is known).
    fn request(
        &self,
        method: turn_server_proto::types::stun::message::Method,
        peer: Option<SocketAddr>,
    ) -> Vec<u8> {
        self.request_channel(method, peer, None)
    }

    /// A signed request, with a CHANNEL-NUMBER when given.
    fn request_channel(
        &self,
        method: turn_server_proto::types::stun::message::Method,
        peer: Option<SocketAddr>,
        channel: Option<u16>,
    ) -> Vec<u8> {
        let mut b = Message::builder_request(method, MessageWriteVec::new());
        if let Some(ch) = channel {
            b.add_attribute(&ChannelNumber::new(ch)).expect("attr");
        }
        let tid = b.transaction_id();
        let transport = RequestedTransport::new(RequestedTransport::UDP);
        if method == ALLOCATE {
            b.add_attribute(&transport).expect("attr");
        }
        let xor = peer.map(|p| XorPeerAddress::new(p, tid));
        if let Some(x) = &xor {
            b.add_attribute(x).expect("attr");
        }
        if let Some(nonce) = &self.nonce {
            b.add_attribute(&Username::new(&self.user).expect("user"))
                .expect("attr");
            b.add_attribute(&Realm::new("onair").expect("realm"))
                .expect("attr");
            b.add_attribute(&Nonce::new(nonce).expect("nonce"))
                .expect("attr");
            b.add_message_integrity(&self.creds(), IntegrityAlgorithm::Sha1)
                .expect("integrity");
        }
        b.finish()
    }
}

struct Harness {
    turn: Turn,
    now: Instant,
}

impl Harness {
    fn new(config: TurnConfig) -> Self {
        let now = Instant::now();
        let mut turn = Turn::new(config, now);
        turn.add_listener(Transport::Udp, addr(LISTEN));
        Self { turn, now }
    }

    /// Sends `data` from the client; returns the replies to it and the allocation asked for.
    fn send(&mut self, c: &Client, data: &[u8]) -> (Vec<Vec<u8>>, Vec<Output>) {
        self.turn
            .recv_client(Transport::Udp, addr(LISTEN), c.addr, data, self.now);
        let mut replies = Vec::new();
        let mut other = Vec::new();
        while let Some(o) = self.turn.poll_output() {
            match o {
                Output::Transmit(t) if t.to == c.addr => replies.push(t.data),
                o => other.push(o),
            }
        }
        (replies, other)
    }

    /// The one reply to a request, parsed.
    fn ask(&mut self, c: &Client, data: &[u8]) -> (Vec<u8>, Vec<Output>) {
        let (mut replies, other) = self.send(c, data);
        assert_eq!(
            replies.len(),
            1,
            "one reply expected, other outputs {other:?}"
        );
        (replies.remove(0), other)
    }

    /// 401 with a nonce, then a signed Allocate; returns the reply and the outputs.
    fn allocate(&mut self, c: &mut Client, relay: Option<SocketAddr>) -> Vec<u8> {
        if c.nonce.is_none() {
            let (reply, _) = self.ask(c, &c.request(ALLOCATE, None));
            assert_eq!(code(&reply), Some(401));
            let msg = Message::from_bytes(&reply).expect("reply");
            c.nonce = Some(msg.attribute::<Nonce>().expect("nonce").nonce().to_owned());
        }
        let (mut replies, other) = self.send(c, &c.request(ALLOCATE, None));
        if let Some(Output::Allocate {
            listener,
            transport,
            client,
            ipv6,
        }) = other.into_iter().next()
        {
            assert_eq!(client, c.addr);
            self.turn
                .allocated(listener, transport, client, ipv6, relay, self.now);
            while let Some(o) = self.turn.poll_output() {
                if let Output::Transmit(t) = o {
                    replies.push(t.data);
                }
            }
        }
        assert_eq!(replies.len(), 1);
        replies.remove(0)
    }
}

fn code(reply: &[u8]) -> Option<u16> {
    let msg = Message::from_bytes(reply).expect("a STUN reply");
    msg.attribute::<ErrorCode>().ok().map(|e| e.code())
}

#[test]
fn allocate_permit_and_relay_both_ways() {
    let mut h = Harness::new(TurnConfig {
        policy: PeerPolicy {
            allow_loopback: false,
            ..PeerPolicy::default()
        },
        ..config()
    });
    let mut c = Client::new(5000, "alice", "wonderland");
    let reply = h.allocate(&mut c, Some(addr(RELAY)));
    let msg = Message::from_bytes(&reply).expect("reply");
    assert!(msg.has_class(MessageClass::Success), "{msg}");
    let relayed = msg
        .attribute::<XorRelayedAddress>()
        .expect("relayed address")
        .addr(msg.transaction_id());
    assert_eq!(relayed, addr(RELAY));
    assert!(msg.attribute::<Lifetime>().is_ok());
    assert_eq!(h.turn.allocations(), 1);

    let peer = addr("203.0.113.9:7000");
    let (reply, _) = h.ask(&c, &c.request(CREATE_PERMISSION, Some(peer)));
    assert_eq!(code(&reply), None, "permission granted");

    // Send indication → a datagram from the relay to the peer.
    let mut b = Message::builder(
        MessageType::from_class_method(MessageClass::Indication, SEND),
        TransactionId::generate(),
        MessageWriteVec::new(),
    );
    let tid = b.transaction_id();
    b.add_attribute(&XorPeerAddress::new(peer, tid))
        .expect("attr");
    b.add_attribute(&Data::new(b"hello peer")).expect("attr");
    let (_, out) = h.send(&c, &b.finish());
    let sent: Vec<_> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].from, sent[0].to), (addr(RELAY), peer));
    assert_eq!(sent[0].data, b"hello peer");

    // The peer answers → a DATA indication to the client.
    h.turn.recv_peer(addr(RELAY), peer, b"hello client", h.now);
    let Some(Output::Transmit(t)) = h.turn.poll_output() else {
        panic!("expected a transmit to the client");
    };
    assert_eq!((t.from, t.to), (addr(LISTEN), c.addr));
    let msg = Message::from_bytes(&t.data).expect("data indication");
    assert!(msg.has_method(DATA));
    assert_eq!(
        msg.attribute::<Data>().expect("data").data(),
        b"hello client"
    );
    let stats = h.turn.stats();
    assert_eq!((stats.to_peer_packets, stats.to_client_packets), (1, 1));

    // A peer without permission is not relayed.
    h.turn
        .recv_peer(addr(RELAY), addr("203.0.113.10:7000"), b"x", h.now);
    assert!(h.turn.poll_output().is_none());
}

#[test]
fn a_relay_toward_loopback_is_forbidden_by_default() {
    let mut h = Harness::new(config());
    let mut c = Client::new(5001, "alice", "wonderland");
    let reply = h.allocate(&mut c, Some(addr(RELAY)));
    assert_eq!(code(&reply), None);
    for peer in ["127.0.0.1:8080", "10.0.0.5:9000", "169.254.169.254:80"] {
        let (reply, _) = h.ask(&c, &c.request(CREATE_PERMISSION, Some(addr(peer))));
        assert_eq!(code(&reply), Some(403), "{peer}");
        // Signed with the user's key, like the library's own answers.
        let msg = Message::from_bytes(&reply).expect("reply");
        assert!(msg.validate_integrity(&c.creds()).is_ok());
    }
    let s = h.turn.stats();
    assert_eq!(s.refusals.get("loopback"), Some(&1));
    assert_eq!(s.refusals.get("private"), Some(&1));
    assert_eq!(s.refusals.get("link_local"), Some(&1));
}

#[test]
fn time_limited_credentials_work_until_they_expire() {
    let mut h = Harness::new(config());
    let creds = Credentials::new(Some("shared-secret"));
    let fresh = creds.issue("bob", unix_now(), 600).expect("secret");
    let mut c = Client::new(5002, &fresh.username, &fresh.password);
    assert_eq!(code(&h.allocate(&mut c, Some(addr(RELAY)))), None);

    let stale = creds.issue("bob", unix_now() - 700, 600).expect("secret");
    let mut c = Client::new(5003, &stale.username, &stale.password);
    assert_eq!(
        code(&h.allocate(&mut c, Some(addr("192.0.2.1:40001")))),
        Some(401)
    );
    assert_eq!(h.turn.stats().refusals.get("expired_credentials"), Some(&1));
}

#[test]
fn a_wrong_password_gets_401() {
    let mut h = Harness::new(config());
    let mut c = Client::new(5004, "alice", "not-the-password");
    assert_eq!(code(&h.allocate(&mut c, Some(addr(RELAY)))), Some(401));
    assert_eq!(h.turn.allocations(), 0);
    assert_eq!(h.turn.stats().refusals.get("bad_integrity"), Some(&1));
}

#[test]
fn quotas_per_user_and_per_server() {
    let mut h = Harness::new(config());
    let relay = |p: u16| Some(SocketAddr::new("192.0.2.1".parse().expect("ip"), p));
    for port in 0..2 {
        let mut c = Client::new(6000 + port, "alice", "wonderland");
        assert_eq!(code(&h.allocate(&mut c, relay(41000 + port))), None);
    }
    let mut third = Client::new(6002, "alice", "wonderland");
    assert_eq!(code(&h.allocate(&mut third, relay(41002))), Some(486));

    let issued = Credentials::new(Some("shared-secret"))
        .issue("carol", unix_now(), 600)
        .expect("secret");
    let mut c = Client::new(6003, &issued.username, &issued.password);
    assert_eq!(code(&h.allocate(&mut c, relay(41003))), None);
    let issued = Credentials::new(Some("shared-secret"))
        .issue("dave", unix_now(), 600)
        .expect("secret");
    let mut c = Client::new(6004, &issued.username, &issued.password);
    assert_eq!(code(&h.allocate(&mut c, relay(41004))), Some(508));
    assert_eq!(h.turn.allocations(), 3);
}

#[test]
fn a_relay_socket_failure_is_508_and_frees_the_quota() {
    let mut h = Harness::new(config());
    let mut c = Client::new(6100, "alice", "wonderland");
    assert_eq!(code(&h.allocate(&mut c, None)), Some(508));
    assert_eq!(h.turn.allocations(), 0);
    let mut c = Client::new(6101, "alice", "wonderland");
    assert_eq!(code(&h.allocate(&mut c, Some(addr(RELAY)))), None);
}

#[test]
fn garbage_gets_400_or_silence_and_nothing_breaks() {
    let mut h = Harness::new(config());
    let c = Client::new(7000, "alice", "wonderland");
    // A STUN request header with a lying length.
    let mut lying = vec![0x00, 0x03, 0x01, 0x00, 0x21, 0x12, 0xa4, 0x42];
    lying.extend_from_slice(&[9; 12]);
    lying.extend_from_slice(&[0x00, 0x19, 0x00, 0x04]);
    let (reply, _) = h.ask(&c, &lying);
    assert_eq!(code(&reply), Some(400));
    // Not STUN at all: no answer (a reflector must not be built from us).
    let (replies, out) = h.send(&c, b"\xff\xfe junk that is not stun at all");
    assert!(replies.is_empty() && out.is_empty());
    // A ChannelData frame for a channel nobody bound.
    let (replies, out) = h.send(&c, &[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4]);
    assert!(replies.is_empty() && out.is_empty());
    // The server still allocates afterwards.
    let mut c = Client::new(7001, "alice", "wonderland");
    assert_eq!(code(&h.allocate(&mut c, Some(addr(RELAY)))), None);
    assert!(
        h.turn
            .stats()
            .refusals
            .get("malformed")
            .copied()
            .unwrap_or(0)
            >= 2
    );
}

#[test]
fn the_bandwidth_cap_drops_what_exceeds_it() {
    let mut h = Harness::new(TurnConfig {
        allocation_bytes_per_sec: 1000,
        ..config()
    });
    let mut c = Client::new(8000, "alice", "wonderland");
    assert_eq!(code(&h.allocate(&mut c, Some(addr(RELAY)))), None);
    let peer = addr("203.0.113.9:7000");
    let (reply, _) = h.ask(&c, &c.request(CREATE_PERMISSION, Some(peer)));
    assert_eq!(code(&reply), None);
    let mut delivered = 0;
    for _ in 0..20 {
        h.turn.recv_peer(addr(RELAY), peer, &[0u8; 100], h.now);
        while let Some(o) = h.turn.poll_output() {
            if matches!(o, Output::Transmit(_)) {
                delivered += 1;
            }
        }
    }
    assert_eq!(
        delivered, 10,
        "a 1000 B/s cap passes ten 100-byte packets at once"
    );
    h.now += Duration::from_millis(500);
    h.turn.recv_peer(addr(RELAY), peer, &[0u8; 100], h.now);
    assert!(
        h.turn.poll_output().is_some(),
        "refilled after half a second"
    );
    assert_eq!(h.turn.stats().refusals.get("bandwidth"), Some(&10));
}

#[test]
fn binding_answers_the_client_with_its_reflexive_address() {
    let mut h = Harness::new(config());
    let c = Client::new(9000, "alice", "wonderland");
    let req = Message::builder_request(
        turn_server_proto::types::stun::message::BINDING,
        MessageWriteVec::new(),
    )
    .finish();
    let (reply, _) = h.ask(&c, &req);
    let msg = Message::from_bytes(&reply).expect("binding response");
    assert!(msg.has_class(MessageClass::Success));
    let mapped = msg
        .attribute::<turn_server_proto::types::stun::attribute::XorMappedAddress>()
        .expect("xor-mapped-address")
        .addr(msg.transaction_id());
    assert_eq!(mapped, c.addr);
}

#[test]
fn tcp_streams_are_framed_and_garbage_closes_the_connection() {
    let mut h = Harness::new(config());
    h.turn.add_listener(Transport::Tcp, addr(LISTEN));
    let c = Client::new(9100, "alice", "wonderland");
    let req = c.request(ALLOCATE, None);
    // One request in two pieces, then a second glued to the end of the first.
    let mut stream = req.clone();
    stream.extend_from_slice(&req);
    let (a, b) = stream.split_at(7);
    let mut replies = Vec::new();
    for piece in [a, b] {
        h.turn
            .recv_client(Transport::Tcp, addr(LISTEN), c.addr, piece, h.now);
        while let Some(o) = h.turn.poll_output() {
            if let Output::Transmit(t) = o {
                assert_eq!(t.to, c.addr);
                replies.push(t.data);
            }
        }
    }
    assert_eq!(replies.len(), 2, "both requests answered");
    assert_eq!(code(&replies[0]), Some(401));
    // Bytes that start no STUN message or ChannelData frame end the connection.
    h.turn
        .recv_client(Transport::Tcp, addr(LISTEN), c.addr, b"\xffGARBAGE", h.now);
    assert!(matches!(
        h.turn.poll_output(),
        Some(Output::CloseTcp { .. })
    ));
    assert_eq!(h.turn.stats().refusals.get("malformed"), Some(&1));
}

#[test]
fn refused_allocates_do_not_use_up_the_server_quota() {
    // max_allocations is 3: five Allocates the library refuses (TCP relays are not offered)
    // must leave room for three real ones.
    let mut h = Harness::new(config());
    for port in 0..5 {
        let mut c = Client::new(9200 + port, "alice", "wonderland");
        let (reply, _) = h.ask(&c, &c.request(ALLOCATE, None));
        assert_eq!(code(&reply), Some(401));
        let msg = Message::from_bytes(&reply).expect("reply");
        c.nonce = Some(msg.attribute::<Nonce>().expect("nonce").nonce().to_owned());
        let mut b = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        b.add_attribute(&RequestedTransport::new(6)).expect("attr");
        b.add_attribute(&Username::new("alice").expect("user"))
            .expect("attr");
        b.add_attribute(&Realm::new("onair").expect("realm"))
            .expect("attr");
        b.add_attribute(&Nonce::new(c.nonce.as_deref().expect("nonce")).expect("nonce"))
            .expect("attr");
        b.add_message_integrity(&c.creds(), IntegrityAlgorithm::Sha1)
            .expect("integrity");
        let (replies, _) = h.send(&c, &b.finish());
        assert!(
            replies.iter().all(|r| code(r).is_some()),
            "a TCP relay is refused"
        );
    }
    let relay = |p: u16| Some(SocketAddr::new("192.0.2.1".parse().expect("ip"), p));
    let mut a = Client::new(9300, "alice", "wonderland");
    assert_eq!(code(&h.allocate(&mut a, relay(42000))), None);
    let issued = Credentials::new(Some("shared-secret"))
        .issue("erin", unix_now(), 600)
        .expect("secret");
    let mut b = Client::new(9301, &issued.username, &issued.password);
    assert_eq!(code(&h.allocate(&mut b, relay(42001))), None);
    let mut c = Client::new(9302, &issued.username, &issued.password);
    assert_eq!(code(&h.allocate(&mut c, relay(42002))), None);
    assert_eq!(h.turn.allocations(), 3);
}

/// ChannelData with `payload` on channel `ch`.
fn channel_data(ch: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = ch.to_be_bytes().to_vec();
    v.extend_from_slice(&u16::try_from(payload.len()).expect("short").to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Everything the core wants sent, in order.
fn transmits(turn: &mut Turn) -> Vec<turn::Transmit> {
    let mut v = Vec::new();
    while let Some(o) = turn.poll_output() {
        if let Output::Transmit(t) = o {
            v.push(t);
        }
    }
    v
}

#[test]
fn channel_data_is_relayed_both_ways_while_the_binding_lives() {
    let mut h = Harness::new(TurnConfig {
        policy: PeerPolicy::default(),
        ..config()
    });
    let mut c = Client::new(9200, "alice", "wonderland");
    assert_eq!(code(&h.allocate(&mut c, Some(addr(RELAY)))), None);
    let peer = addr("203.0.113.9:7000");

    // Before any binding: ChannelData goes nowhere.
    h.turn.recv_client(
        Transport::Udp,
        addr(LISTEN),
        c.addr,
        &channel_data(0x4000, b"early"),
        h.now,
    );
    assert!(transmits(&mut h.turn).is_empty());

    // A channel number outside 0x4000..=0x4FFF is refused by the library: nothing learned.
    let (reply, _) = h.ask(
        &c,
        &c.request_channel(CHANNEL_BIND, Some(peer), Some(0x3000)),
    );
    assert_eq!(code(&reply), Some(400));
    assert_eq!(h.turn.channel_bindings(), 0);

    let (reply, _) = h.ask(
        &c,
        &c.request_channel(CHANNEL_BIND, Some(peer), Some(0x4001)),
    );
    assert_eq!(code(&reply), None, "channel bound");
    assert_eq!(
        h.turn.channel_bindings(),
        1,
        "the fast path learned the binding"
    );

    h.turn.recv_client(
        Transport::Udp,
        addr(LISTEN),
        c.addr,
        &channel_data(0x4001, b"to peer"),
        h.now,
    );
    let t = transmits(&mut h.turn);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].from, t[0].to, t[0].data.as_slice()),
        (addr(RELAY), peer, &b"to peer"[..])
    );

    h.turn.recv_peer(addr(RELAY), peer, b"to client", h.now);
    let t = transmits(&mut h.turn);
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].from, t[0].to), (addr(LISTEN), c.addr));
    assert_eq!(t[0].data, channel_data(0x4001, b"to client"));
    // Another port of the peer's IP has the permission but not the channel: a DATA indication.
    h.turn
        .recv_peer(addr(RELAY), addr("203.0.113.9:7001"), b"x", h.now);
    let t = transmits(&mut h.turn);
    assert_eq!(t.len(), 1);
    assert!(
        Message::from_bytes(&t[0].data)
            .expect("stun")
            .has_method(DATA)
    );
    // A wrong channel number is not relayed.
    h.turn.recv_client(
        Transport::Udp,
        addr(LISTEN),
        c.addr,
        &channel_data(0x4002, b"?"),
        h.now,
    );
    assert!(transmits(&mut h.turn).is_empty());
    let stats = h.turn.stats();
    assert_eq!((stats.to_peer_packets, stats.to_client_packets), (1, 2));

    // A CreatePermission at 290 s keeps the binding's permission alive past 300 s.
    h.now += Duration::from_secs(290);
    let (reply, _) = h.ask(&c, &c.request(CREATE_PERMISSION, Some(peer)));
    assert_eq!(code(&reply), None);
    h.now += Duration::from_secs(20);
    h.turn.recv_client(
        Transport::Udp,
        addr(LISTEN),
        c.addr,
        &channel_data(0x4001, b"a"),
        h.now,
    );
    assert_eq!(transmits(&mut h.turn).len(), 1, "still relayed at 310 s");

    // With no refresh, nothing passes after the permission's 300 s (library or fast path).
    h.now += Duration::from_secs(290);
    h.turn.recv_client(
        Transport::Udp,
        addr(LISTEN),
        c.addr,
        &channel_data(0x4001, b"b"),
        h.now,
    );
    h.turn.recv_peer(addr(RELAY), peer, b"c", h.now);
    let t = transmits(&mut h.turn);
    assert!(t.is_empty(), "expired at 600 s: {t:?}");
}

#[test]
fn channel_data_over_tcp_is_padded_to_four_bytes() {
    let mut h = Harness::new(config());
    h.turn.add_listener(Transport::Tcp, addr(LISTEN));
    let c = Client::new(9300, "alice", "wonderland");
    let tcp = |h: &mut Harness, data: &[u8]| {
        h.turn
            .recv_client(Transport::Tcp, addr(LISTEN), c.addr, data, h.now);
        transmits(&mut h.turn)
    };
    // The 401 round, then the Allocate, over TCP.
    let t = tcp(&mut h, &c.request(ALLOCATE, None));
    let msg = Message::from_bytes(&t[0].data).expect("401");
    let mut c = Client {
        nonce: Some(msg.attribute::<Nonce>().expect("nonce").nonce().to_owned()),
        ..c
    };
    c.addr = addr("198.51.100.7:9300");
    h.turn.recv_client(
        Transport::Tcp,
        addr(LISTEN),
        c.addr,
        &c.request(ALLOCATE, None),
        h.now,
    );
    let Some(Output::Allocate {
        listener,
        transport,
        client,
        ipv6,
    }) = h.turn.poll_output()
    else {
        panic!("an allocation asked for");
    };
    h.turn
        .allocated(listener, transport, client, ipv6, Some(addr(RELAY)), h.now);
    assert_eq!(code(&transmits(&mut h.turn)[0].data), None);
    let peer = addr("203.0.113.9:7000");
    let t = tcp(
        &mut h,
        &c.request_channel(CHANNEL_BIND, Some(peer), Some(0x4000)),
    );
    assert_eq!(code(&t[0].data), None);
    // Client → peer: a padded frame (5 bytes of payload + 3 of padding) arrives as 5 bytes.
    let mut framed = channel_data(0x4000, b"hello");
    framed.resize(12, 0);
    let t = tcp(&mut h, &framed);
    assert_eq!(
        (t.len(), t[0].to, t[0].data.as_slice()),
        (1, peer, &b"hello"[..])
    );
    // Peer → client: padded, with the length field unpadded.
    h.turn.recv_peer(addr(RELAY), peer, b"hello", h.now);
    let t = transmits(&mut h.turn);
    assert_eq!(t[0].transport, Transport::Tcp);
    assert_eq!(t[0].data, framed);
}

#[test]
fn an_allocation_expires_after_its_lifetime_and_its_relay_closes() {
    let mut h = Harness::new(config());
    let mut c = Client::new(9400, "alice", "wonderland");
    assert_eq!(code(&h.allocate(&mut c, Some(addr(RELAY)))), None);
    let peer = addr("203.0.113.9:7000");
    let (reply, _) = h.ask(
        &c,
        &c.request_channel(CHANNEL_BIND, Some(peer), Some(0x4000)),
    );
    assert_eq!(code(&reply), None);
    // The default lifetime is 600 s: alive just before, gone just after.
    h.now += Duration::from_secs(599);
    let next = h.turn.handle_timeout(h.now);
    assert!(next > h.now);
    assert!(h.turn.poll_output().is_none());
    assert_eq!(h.turn.allocations(), 1);
    h.now += Duration::from_secs(2);
    h.turn.handle_timeout(h.now);
    let closed: Vec<_> = std::iter::from_fn(|| h.turn.poll_output())
        .filter_map(|o| match o {
            Output::CloseRelay(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![addr(RELAY)]);
    assert_eq!(h.turn.allocations(), 0);
    assert_eq!(h.turn.channel_bindings(), 0, "the fast path forgot it too");
    // The quota it held is free again.
    let mut d = Client::new(9401, "alice", "wonderland");
    assert_eq!(code(&h.allocate(&mut d, Some(addr(RELAY)))), None);
}
