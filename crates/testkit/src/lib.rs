//! Test-only: a whole call in virtual time.
//!
//! [`Scenario`] holds one [`sfu::Sfu`] and any number of [`Client`]s, each a pair of str0m peer
//! connections (publisher and subscriber) speaking onair's signalling in-process. Datagrams
//! travel over emulated [`Link`]s with seeded loss and fixed delay. Time is virtual: each step
//! jumps to the earliest deadline of anything in the scenario, so ten seconds of a call run in
//! milliseconds and give the same answer every run.

#![forbid(unsafe_code)]

mod client;
pub mod impair;
mod link;
pub mod live;
pub mod relay;
pub mod server;
pub mod whep;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

pub use client::{Client, Publish, ReceivedFrame};
pub use link::Link;
use sfu::str0m::Candidate;
use sfu::str0m::net::Protocol;
use sfu::{ConnId, Output, Sfu, SfuConfig};

/// The SFU's address inside the scenario.
pub const SFU_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 5000);

/// A datagram on its way.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// One SFU, its clients, the network between them, and a virtual clock.
pub struct Scenario {
    /// The clock.
    pub now: Instant,
    /// The SFU under test.
    pub sfu: Sfu,
    /// The clients, indexed as added.
    pub clients: Vec<Client>,
    wire: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    sfu_deadline: Instant,
    rng: fastrand::Rng,
    /// Datagrams dropped by link emulation, both directions.
    pub dropped: u64,
    /// Rate-limited downlinks: when each client's queue empties.
    down_busy: std::collections::HashMap<SocketAddr, Instant>,
    /// Frames the SFU reassembled for the hub: (publisher, track, frame).
    pub hub_frames: Vec<(
        sfu::ParticipantId,
        sfu::TrackId,
        sfu::depacketize::AssembledFrame,
    )>,
    /// Frames of single simulcast layers (`hub_layers`): (publisher, track, layer, frame).
    pub hub_layer_frames: Vec<(
        sfu::ParticipantId,
        sfu::TrackId,
        u8,
        sfu::depacketize::AssembledFrame,
    )>,
}

impl Scenario {
    /// A scenario with an SFU configured by `config`; `seed` drives every random choice.
    pub fn new(config: SfuConfig, seed: u64) -> Scenario {
        // Any crypto provider works in tests; install the default once per process.
        let _ = std::panic::catch_unwind(|| {
            sfu::str0m::crypto::from_feature_flags().install_process_default()
        });
        let now = Instant::now();
        let cand = Candidate::host(SFU_ADDR, "udp").expect("a valid host candidate");
        Scenario {
            now,
            sfu: Sfu::new(config, vec![cand], seed, now),
            clients: Vec::new(),
            wire: BinaryHeap::new(),
            down_busy: std::collections::HashMap::new(),
            order: 0,
            sfu_deadline: now,
            rng: fastrand::Rng::with_seed(seed),
            dropped: 0,
            hub_frames: Vec::new(),
            hub_layer_frames: Vec::new(),
        }
    }

    /// Adds a client (not yet joined) on its own address with the given link.
    pub fn add_client(&mut self, name: &str, link: Link) -> usize {
        let idx = self.clients.len();
        let conn = ConnId(1000 + idx as u64);
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 1, idx as u8 + 1));
        self.clients
            .push(Client::new(name, conn, ip, link, self.now));
        self.sfu.connect(conn);
        idx
    }

    /// Client `idx` sends `join` for `room`.
    pub fn join(&mut self, idx: usize, room: &str) {
        let msg = self.clients[idx].join_message(room);
        self.signal(idx, msg);
    }

    /// Delivers a signalling message from client `idx` to the SFU, then settles.
    pub fn signal(&mut self, idx: usize, msg: sfu::signal::ClientMessage) {
        let conn = self.clients[idx].conn;
        self.sfu.handle_signal(self.now, conn, msg);
        self.settle();
    }

    /// Client `idx`'s signalling socket drops.
    pub fn drop_socket(&mut self, idx: usize) {
        let conn = self.clients[idx].conn;
        self.sfu.disconnect(self.now, conn);
        self.clients[idx].online = false;
        self.settle();
    }

    /// Runs the call for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let next = self.next_deadline().min(end).max(self.now);
            self.now = next;
            self.step();
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut t = self.sfu_deadline;
        if let Some(Reverse(p)) = self.wire.peek() {
            t = t.min(p.at);
        }
        for c in &self.clients {
            t = t.min(c.deadline());
        }
        // Never spin: at least a microsecond per step.
        t.max(self.now + Duration::from_micros(1))
    }

    fn step(&mut self) {
        let now = self.now;
        while self.wire.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(p)) = self.wire.pop() else {
                break;
            };
            if p.to == SFU_ADDR {
                self.sfu
                    .handle_receive(now, Protocol::Udp, p.from, p.to, &p.data);
            } else if let Some(c) = self.clients.iter_mut().find(|c| c.owns(p.to)) {
                c.receive(now, p.from, p.to, &p.data);
            }
        }
        if self.sfu_deadline <= now {
            self.sfu.handle_timeout(now);
        }
        for c in &mut self.clients {
            c.tick(now);
        }
        self.settle();
    }

    /// Moves everything queued: SFU outputs onto the wire and to clients, client outputs onto
    /// the wire and to the SFU, until nothing moves.
    pub fn settle(&mut self) {
        loop {
            let mut moved = false;
            loop {
                match self.sfu.poll_output() {
                    Output::Transmit(t) => {
                        moved = true;
                        self.send(t.source, t.destination, t.contents.to_vec());
                    }
                    Output::Signal(conn, msg) => {
                        moved = true;
                        if let Some(c) = self.clients.iter_mut().find(|c| c.conn == conn) {
                            c.on_signal(self.now, msg);
                        }
                    }
                    Output::Close(conn) => {
                        moved = true;
                        if let Some(c) = self.clients.iter_mut().find(|c| c.conn == conn) {
                            c.online = false;
                        }
                    }
                    // Hub mirroring is the server's business; scenarios keep only the frames
                    // reassembled for it.
                    Output::Event(sfu::SfuEvent::Frame {
                        participant,
                        track,
                        layer,
                        frame,
                    }) => {
                        moved = true;
                        match layer {
                            None => self.hub_frames.push((participant, track, frame)),
                            Some(l) => self.hub_layer_frames.push((participant, track, l, frame)),
                        }
                    }
                    Output::Event(_) => {}
                    // One SFU: no other shard to hand anything to (sfu/tests/shards.rs).
                    Output::MirrorKeyframe { .. }
                    | Output::MirrorClosed { .. }
                    | Output::ExportEnded { .. }
                    | Output::Announced { .. } => {}
                    Output::Timeout(t) => {
                        self.sfu_deadline = t;
                        break;
                    }
                }
            }
            for i in 0..self.clients.len() {
                let (packets, signals) = self.clients[i].take_outputs();
                for (from, to, data) in packets {
                    moved = true;
                    self.send(from, to, data);
                }
                for s in signals {
                    moved = true;
                    let conn = self.clients[i].conn;
                    if self.clients[i].online {
                        self.sfu.handle_signal(self.now, conn, s);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        // The client end of the path decides the link's behaviour, in either direction.
        let client_addr = if to == SFU_ADDR { from } else { to };
        let Some(c) = self.clients.iter().find(|c| c.owns(client_addr)) else {
            return; // nobody there any more
        };
        let up = to == SFU_ADDR;
        let link = c.link;
        let loss = if up { link.up_loss } else { link.down_loss };
        if loss > 0.0 && self.rng.f64() < loss {
            self.dropped += 1;
            return;
        }
        let mut leaves = self.now;
        if let (false, Some(rate)) = (up, link.down_rate) {
            // Behind what is queued already, at the link's rate (IP and UDP headers included).
            let busy = self.down_busy.entry(client_addr).or_insert(self.now);
            let start = (*busy).max(self.now);
            if start.saturating_duration_since(self.now) > link.queue {
                self.dropped += 1;
                return;
            }
            let bits = (data.len() + 28) as f64 * 8.0;
            *busy = start + Duration::from_secs_f64(bits / rate.max(1) as f64);
            leaves = *busy;
        }
        self.order += 1;
        self.wire.push(Reverse(InFlight {
            at: leaves + link.delay,
            order: self.order,
            from,
            to,
            data,
        }));
    }
}
