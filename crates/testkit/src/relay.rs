//! A UDP relay that impairs what passes through it ([`crate::impair`]), for putting a real
//! client (Chromium, FFmpeg) on a bad path to the server: the client sends to the relay's
//! address as if it were the server's, and the relay forwards from a socket of its own per
//! client, so replies find their way back. Each direction has its own impairment, changeable
//! while it runs. The `onair-impair` binary wraps it for tests written in other languages.

use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::impair::{Impairment, Shaper};

/// Which way a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// Counts per direction: passed, lost (random or burst), dropped by a full rate-limit queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub lost: u64,
    pub overflowed: u64,
}

/// A running relay. Dropping it stops it.
pub struct Relay {
    /// Where clients send (the address to give them as the server's).
    pub local: SocketAddr,
    shapers: Arc<Mutex<[Shaper; 2]>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A datagram waiting for its time.
struct Pending {
    at: Instant,
    order: u64,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // The earliest first out of a max-heap.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.order).cmp(&(self.at, self.order))
    }
}

/// The most datagrams held at once; beyond it new ones are dropped (a relay in a test must
/// not grow without bound if its far side stops reading).
const MAX_PENDING: usize = 100_000;

impl Relay {
    /// Listens on `listen` and relays to `server`, impairing `up` (client to server) and
    /// `down` (server to client). `seed` fixes the random choices.
    pub async fn start(
        listen: SocketAddr,
        server: SocketAddr,
        up: Impairment,
        down: Impairment,
        seed: u64,
    ) -> std::io::Result<Relay> {
        let front = Arc::new(UdpSocket::bind(listen).await?);
        let local = front.local_addr()?;
        let shapers = Arc::new(Mutex::new([
            Shaper::new(up, seed),
            Shaper::new(down, seed.wrapping_add(1)),
        ]));
        let task = tokio::spawn(run(front, server, shapers.clone()));
        Ok(Relay {
            local,
            shapers,
            task,
        })
    }

    /// Changes one direction's impairment from now on.
    pub fn set(&self, dir: Direction, imp: Impairment) {
        if let Ok(mut s) = self.shapers.lock() {
            s[dir as usize].set(imp);
        }
    }

    /// What has happened to each direction so far.
    pub fn counts(&self, dir: Direction) -> Counts {
        self.shapers.lock().map_or(Counts::default(), |s| {
            let s = &s[dir as usize];
            Counts {
                passed: s.passed,
                lost: s.lost,
                overflowed: s.overflowed,
            }
        })
    }
}

/// One client's datagram, or a reply to one, arriving at the relay.
struct Arrived {
    dir: Direction,
    /// The socket it leaves by, and where to.
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
}

async fn run(front: Arc<UdpSocket>, server: SocketAddr, shapers: Arc<Mutex<[Shaper; 2]>>) {
    let (tx, mut rx) = mpsc::channel::<Arrived>(4096);
    // One socket towards the server per client address, so that replies can be told apart.
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let mut order = 0u64;
    let mut buf = vec![0u8; 65_536];
    let far = Duration::from_secs(3600);
    loop {
        let next = heap.peek().map(|p| p.at);
        tokio::select! {
            r = front.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let back = match clients.get(&from) {
                    Some(s) => s.clone(),
                    None => {
                        let bind: SocketAddr = if server.is_ipv4() {
                            ([0, 0, 0, 0], 0).into()
                        } else {
                            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                        };
                        let Ok(s) = UdpSocket::bind(bind).await else { continue };
                        let s = Arc::new(s);
                        tokio::spawn(replies(s.clone(), front.clone(), from, tx.clone()));
                        clients.insert(from, s.clone());
                        s
                    }
                };
                let _ = tx.try_send(Arrived { dir: Direction::Up, socket: back, to: server, data: buf[..n].to_vec() });
            }
            Some(a) = rx.recv() => {
                let at = {
                    let Ok(mut s) = shapers.lock() else { return };
                    s[a.dir as usize].on_datagram(Instant::now().into_std(), a.data.len())
                };
                if let Some(at) = at && heap.len() < MAX_PENDING {
                    order += 1;
                    heap.push(Pending { at: at.into(), order, socket: a.socket, to: a.to, data: a.data });
                }
            }
            _ = tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + far)), if next.is_some() => {
                let now = Instant::now();
                while heap.peek().is_some_and(|p| p.at <= now) {
                    if let Some(p) = heap.pop() {
                        let _ = p.socket.try_send_to(&p.data, p.to);
                    }
                }
            }
        }
    }
}

/// Replies from the server to one client: back through the front socket.
async fn replies(
    from_server: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    tx: mpsc::Sender<Arrived>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, _)) = from_server.recv_from(&mut buf).await {
        let a = Arrived {
            dir: Direction::Down,
            socket: front.clone(),
            to: client,
            data: buf[..n].to_vec(),
        };
        if tx.send(a).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the relay: what a client sends comes back, impaired both ways.
    #[tokio::test]
    async fn datagrams_go_both_ways_delayed_and_lost_as_asked() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut b).await {
                let _ = echo.send_to(&b[..n], from).await;
            }
        });
        let relay = Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            server,
            Impairment::parse("delay=30ms").unwrap(),
            Impairment::parse("delay=20ms").unwrap(),
            9,
        )
        .await
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let t0 = Instant::now();
        client.send_to(b"ping", relay.local).await.unwrap();
        let mut b = [0u8; 16];
        let (n, from) = client.recv_from(&mut b).await.unwrap();
        assert_eq!(&b[..n], b"ping");
        assert_eq!(from, relay.local, "replies come from the relay's address");
        let rtt = t0.elapsed();
        assert!(rtt >= Duration::from_millis(50), "{rtt:?}");
        assert!(rtt < Duration::from_millis(500), "{rtt:?}");

        // Everything lost downstream now: the server still answers, the client hears nothing.
        relay.set(Direction::Down, Impairment::parse("loss=100%").unwrap());
        for _ in 0..10 {
            client.send_to(b"x", relay.local).await.unwrap();
        }
        let heard =
            tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut b)).await;
        assert!(heard.is_err(), "a datagram got through a fully lossy path");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(relay.counts(Direction::Up).passed, 11);
        assert_eq!(relay.counts(Direction::Down).lost, 10);
    }
}
