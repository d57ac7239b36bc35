//! A shard's outgoing UDP datagrams, sent a destination at a time with UDP GSO.
//!
//! A video frame is several packets, and the receive batch usually holds more than one of
//! them, so one flush has several datagrams for each viewer. Sent one `sendto` each, the
//! kernel builds and routes each on its own (the ceiling benchmark: 1.8 µs a packet on
//! loopback); one `sendmsg` with `UDP_SEGMENT` hands it a run of same-sized datagrams for one
//! destination at once (0.45 µs a packet). The run's last datagram may be shorter, as GSO
//! allows. Datagrams for different destinations have no order between them, so a flush is
//! regrouped by destination, keeping each destination's own order.
//!
//! A kernel or device that refuses GSO (an error other than a full buffer) turns it off for
//! the shard; datagrams then go one by one, as before.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

/// Segments per call: the kernel takes at most 64 (UDP_MAX_SEGMENTS), and all of them must
/// fit one 64 KiB datagram.
const MAX_SEGMENTS: usize = 64;
const MAX_BYTES: usize = 65_000;
/// What a flush holds before it sends: a fan-out's flush has one packet of a frame for every
/// viewer before the next packet's, so runs only form if all of them wait; this bounds the
/// memory that waiting takes (400 viewers of a 6-packet frame are ~3 MB).
const MAX_QUEUED_BYTES: usize = 4 << 20;

/// Datagrams waiting for the end of a flush.
pub struct Outbox {
    queued: Vec<(SocketAddr, Vec<u8>)>,
    queued_bytes: usize,
    gso: bool,
    /// Calls made and datagrams sent (the tests check that runs form).
    calls: u64,
    datagrams: u64,
}

impl Outbox {
    /// `gso`: runs in one call where the system allows (Linux), else one call a datagram.
    pub fn new(gso: bool) -> Self {
        Outbox {
            queued: Vec::new(),
            queued_bytes: 0,
            gso: gso && cfg!(target_os = "linux"),
            calls: 0,
            datagrams: 0,
        }
    }

    /// Queues a datagram; true when the queue should be sent now.
    pub fn push(&mut self, to: SocketAddr, data: Vec<u8>) -> bool {
        self.queued_bytes += data.len();
        self.queued.push((to, data));
        self.queued_bytes >= MAX_QUEUED_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Sends everything queued. A full socket buffer waits for room (as the one-by-one send
    /// did); any other error drops that datagram, as the network would.
    pub async fn send(&mut self, udp: &UdpSocket) {
        // Stable: each destination's datagrams keep their order.
        self.queued.sort_by_key(|(to, _)| *to);
        let queued = std::mem::take(&mut self.queued);
        self.queued_bytes = 0;
        let mut i = 0;
        while i < queued.len() {
            let n = self.run_len(&queued[i..]);
            self.send_run(udp, &queued[i..i + n]).await;
            i += n;
        }
        // Keep the allocation for the next flush.
        self.queued = queued;
        self.queued.clear();
    }

    /// How many datagrams from the front of `q` one call can carry: same destination, the
    /// first one's size (the last may be shorter), within the kernel's limits.
    fn run_len(&self, q: &[(SocketAddr, Vec<u8>)]) -> usize {
        let (to, first) = &q[0];
        let size = first.len();
        if !self.gso || size == 0 {
            return 1;
        }
        let cap = MAX_SEGMENTS.min(MAX_BYTES / size);
        let mut n = 1;
        let mut bytes = size;
        while n < q.len() && n < cap {
            let (t, d) = &q[n];
            if t != to || d.len() > size || bytes + d.len() > MAX_BYTES {
                break;
            }
            n += 1;
            bytes += d.len();
            if d.len() < size {
                break; // a shorter one ends the run
            }
        }
        n
    }

    async fn send_run(&mut self, udp: &UdpSocket, run: &[(SocketAddr, Vec<u8>)]) {
        let to = run[0].0;
        if run.len() == 1 {
            self.calls += 1;
            self.datagrams += 1;
            let data = &run[0].1;
            if let Err(e) = udp.try_send_to(data, to) {
                if e.kind() == io::ErrorKind::WouldBlock {
                    let _ = udp.send_to(data, to).await;
                } else {
                    debug!("udp send to {to}: {e}");
                }
            }
            return;
        }
        let segment = run[0].1.len() as u16;
        let iov: Vec<IoSlice<'_>> = run.iter().map(|(_, d)| IoSlice::new(d)).collect();
        let addr = SockaddrStorage::from(to);
        let fd = udp.as_raw_fd();
        let call = || {
            let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
            sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&addr)).map_err(io::Error::from)
        };
        let mut result = udp.try_io(Interest::WRITABLE, call);
        while matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            if udp.writable().await.is_err() {
                break;
            }
            result = udp.try_io(Interest::WRITABLE, call);
        }
        match result {
            Ok(_) => {
                self.calls += 1;
                self.datagrams += run.len() as u64;
            }
            Err(e) if is_unreachable(&e) => debug!("udp send to {to}: {e}"),
            Err(e) => {
                warn!("UDP GSO refused ({e}): sending datagrams one by one on this shard");
                self.gso = false;
                for (to, data) in run {
                    self.calls += 1;
                    self.datagrams += 1;
                    if let Err(e) = udp.try_send_to(data, *to) {
                        debug!("udp send to {to}: {e}");
                    }
                }
            }
        }
    }
}

/// Errors that are about the destination, not GSO.
fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            nix::libc::ENETUNREACH
                | nix::libc::EHOSTUNREACH
                | nix::libc::ECONNREFUSED
                | nix::libc::EPERM
                | nix::libc::EACCES
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn received(rx: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < n {
            let (len, from) =
                tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv_from(&mut buf))
                    .await
                    .expect("in time")
                    .expect("recv");
            got.push((buf[..len].to_vec(), from));
        }
        got
    }

    /// Interleaved datagrams for two receivers arrive whole and, for each receiver, in the
    /// order they were queued; same-sized runs go in one call each.
    #[tokio::test]
    async fn each_destination_gets_its_datagrams_whole_and_in_order() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (ta, tb) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        let mut out = Outbox::new(true);
        // A frame of five packets (the last shorter) to each, interleaved as a fan-out
        // produces them, and one odd-sized packet to a.
        for k in 0..5u8 {
            let len = if k == 4 { 300 } else { 1200 };
            out.push(ta, vec![k; len]);
            out.push(tb, vec![100 + k; len]);
        }
        out.push(ta, vec![9; 1300]);
        out.send(&tx).await;
        let got_a = received(&a, 6).await;
        let got_b = received(&b, 5).await;
        let lens = |g: &[(Vec<u8>, SocketAddr)]| g.iter().map(|(d, _)| d.len()).collect::<Vec<_>>();
        assert_eq!(lens(&got_a), [1200, 1200, 1200, 1200, 300, 1300]);
        assert_eq!(lens(&got_b), [1200, 1200, 1200, 1200, 300]);
        for (k, (d, from)) in got_a.iter().take(5).enumerate() {
            assert!(d.iter().all(|&x| x == k as u8), "a's datagram {k}");
            assert_eq!(*from, tx.local_addr().expect("tx"));
        }
        for (k, (d, _)) in got_b.iter().enumerate() {
            assert!(d.iter().all(|&x| x == 100 + k as u8), "b's datagram {k}");
        }
        assert_eq!(out.datagrams, 11);
        // Linux has had UDP GSO since 4.18: a: five in one call, then the 1300-byte one; b:
        // five in one call.
        assert!(out.gso, "the kernel refused UDP GSO");
        assert_eq!(out.calls, 3);
        assert!(out.is_empty());
    }

    #[test]
    fn a_run_stops_at_a_larger_datagram_a_shorter_one_or_the_size_limit() {
        let to: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let other: SocketAddr = "127.0.0.1:10".parse().expect("addr");
        let out = Outbox::new(true);
        let q = |sizes: &[usize]| sizes.iter().map(|&s| (to, vec![0; s])).collect::<Vec<_>>();
        assert_eq!(out.run_len(&q(&[1200, 1200, 1300])), 2);
        assert_eq!(out.run_len(&q(&[1200, 500, 1200])), 2);
        assert_eq!(out.run_len(&q(&[1200; 100])), 54); // 54 × 1200 fits 65,000 bytes
        assert_eq!(out.run_len(&q(&[100; 100])), 64);
        let mixed = vec![(to, vec![0; 1200]), (other, vec![0; 1200])];
        assert_eq!(out.run_len(&mixed), 1);
    }
}
