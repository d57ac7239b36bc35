//! Many datagrams per system call (`recvmmsg`): the TURN thread's sockets and each media
//! shard's.
//!
//! A socket that wakes holds one datagram or dozens. Read one at a time, every wake costs a
//! `recvfrom` per datagram plus one more that fails with EAGAIN (so that tokio learns the
//! socket is drained). One `recvmmsg` takes everything queued, and when it returns fewer than
//! it asked for the queue was empty at that moment: that tells tokio the same thing without
//! the failing call.
//!
//! Every TURN socket is read on the one TURN thread, and no reader holds the buffers across an
//! await, so the thread has one set of buffers for all of them (`with_batch`) instead of one
//! per relay socket (a thousand allocations would otherwise keep a thousand 64 KiB buffers).
//! A media shard owns its batch, with slots the size of what WebRTC sends.

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per call.
pub const BATCH: usize = 32;
/// Room for the largest UDP payload: a TURN relay forwards whatever a peer sends, so a slot
/// smaller than that would truncate a legitimate datagram.
pub const LARGEST: usize = 65536;

/// Buffers and headers for one `recvmmsg`, and what it returned.
pub struct Batch {
    /// Bytes per datagram: a longer one is dropped.
    slot: usize,
    bufs: Vec<u8>,
    /// One set of headers per address family. The kernel shortens each header's address
    /// length to the address it wrote, and nix sets it only once, when the headers are made:
    /// an IPv6 datagram read through headers an IPv4 one used would get its address cut to 16
    /// bytes. A socket here is of one family only (IPv6 sockets are IPv6-only, `net`), so
    /// headers kept per family always have room for what comes.
    headers_v4: MultiHeaders<SockaddrStorage>,
    headers_v6: MultiHeaders<SockaddrStorage>,
    /// (length, sender) of each datagram of the last call, in arrival order.
    got: Vec<(usize, SocketAddr)>,
}

impl Batch {
    /// A batch of [`BATCH`] slots of `slot` bytes.
    pub fn new(slot: usize) -> Self {
        Batch {
            slot,
            bufs: vec![0; BATCH * slot],
            headers_v4: MultiHeaders::preallocate(BATCH, None),
            headers_v6: MultiHeaders::preallocate(BATCH, None),
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Takes what is queued on `socket` (bound to an IPv6 address or not: `ipv6`), up to
    /// [`BATCH`] datagrams, without waiting; an empty batch when nothing was (the caller
    /// awaits `readable()` again). Readiness is cleared whenever the queue was drained, so the
    /// next `readable()` waits for new data.
    pub fn recv(&mut self, socket: &UdpSocket, ipv6: bool) -> io::Result<usize> {
        self.got.clear();
        let fd = socket.as_raw_fd();
        let headers = if ipv6 {
            &mut self.headers_v6
        } else {
            &mut self.headers_v4
        };
        let (bufs, got, slot) = (&mut self.bufs, &mut self.got, self.slot);
        let r = socket.try_io(Interest::READABLE, || {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = bufs
                .chunks_exact_mut(slot)
                .map(|s| [IoSliceMut::new(s)])
                .collect();
            let results = recvmmsg(fd, headers, &mut slices, MsgFlags::MSG_DONTWAIT, None)
                .map_err(io::Error::from)?;
            for m in results {
                // An address that is neither IPv4 nor IPv6 cannot come from a UDP socket.
                let Some(from) = m.address.as_ref().and_then(to_socket_addr) else {
                    continue;
                };
                // A datagram longer than the slot was cut (MSG_TRUNC); relaying a part of it
                // would corrupt it, so it is dropped, as a too-small buffer drops it anywhere.
                if m.flags.contains(MsgFlags::MSG_TRUNC) || m.bytes > slot {
                    continue;
                }
                got.push((m.bytes, from));
            }
            // Fewer than asked for: the queue is empty now. Saying "would block" makes tokio
            // clear the readiness (unless an event came in meanwhile), which spares the call
            // that would fail with EAGAIN.
            if got.len() < BATCH {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match r {
            Ok(()) => Ok(self.got.len()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(self.got.len()),
            Err(e) => Err(e),
        }
    }

    /// The datagrams of the last [`Batch::recv`].
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.got
            .iter()
            .zip(self.bufs.chunks_exact(self.slot))
            .map(|(&(n, from), slot)| (&slot[..n], from))
    }
}

fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    s.as_sockaddr_in6().map(|v6| {
        SocketAddr::V6(std::net::SocketAddrV6::new(
            v6.ip(),
            v6.port(),
            v6.flowinfo(),
            v6.scope_id(),
        ))
    })
}

thread_local! {
    static BATCH_BUFFERS: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's batch (made on first use). `f` must not await or call
/// `with_batch` again (the readers call it from synchronous code only).
pub fn with_batch<R>(f: impl FnOnce(&mut Batch) -> R) -> R {
    BATCH_BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        f(b.get_or_insert_with(|| Batch::new(LARGEST)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_what_is_queued_in_one_call_and_keeps_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let to = rx.local_addr().expect("addr");
        for i in 0..(BATCH + 5) {
            tx.send_to(&vec![i as u8; 10 + i], to).await.expect("send");
        }
        rx.readable().await.expect("readable");
        let mut seen = Vec::new();
        while seen.len() < BATCH + 5 {
            rx.readable().await.expect("readable");
            with_batch(|b| {
                b.recv(&rx, false).expect("recv");
                for (d, from) in b.datagrams() {
                    assert_eq!(from, tx.local_addr().expect("addr"));
                    seen.push(d.to_vec());
                }
            });
        }
        for (i, d) in seen.iter().enumerate() {
            assert_eq!(d.len(), 10 + i, "datagram {i} whole and in order");
            assert!(d.iter().all(|&x| x == i as u8));
        }
        // Drained: nothing more, and no error.
        assert_eq!(with_batch(|b| b.recv(&rx, false)).expect("recv"), 0);
    }

    /// A media shard's slots are an MTU and a bit: a longer datagram is dropped, not handed
    /// on cut, and those around it arrive whole.
    #[tokio::test]
    async fn a_datagram_longer_than_the_slot_is_dropped_alone() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let to = rx.local_addr().expect("addr");
        for len in [100, 3000, 2048, 200] {
            tx.send_to(&vec![1u8; len], to).await.expect("send");
        }
        let mut batch = Batch::new(2048);
        let mut lens = Vec::new();
        while lens.len() < 3 {
            rx.readable().await.expect("readable");
            batch.recv(&rx, false).expect("recv");
            lens.extend(batch.datagrams().map(|(d, _)| d.len()));
        }
        assert_eq!(lens, vec![100, 2048, 200]);
    }

    #[tokio::test]
    async fn a_largest_datagram_is_whole() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        crate::turn::socket_buffers(&rx, 1 << 20);
        let big = vec![7u8; 65507];
        tx.send_to(&big, rx.local_addr().expect("addr"))
            .await
            .expect("send");
        rx.readable().await.expect("readable");
        let lens = with_batch(|b| {
            b.recv(&rx, false).expect("recv");
            b.datagrams().map(|(d, _)| d.len()).collect::<Vec<_>>()
        });
        assert_eq!(lens, vec![65507]);
    }

    /// Sockets of both families share the thread's batch: each sender's address comes back
    /// whole (an IPv6 one read after IPv4 ones was once cut to 16 bytes).
    #[tokio::test]
    async fn addresses_stay_whole_across_families() {
        let v6: SocketAddr = "[::1]:0".parse().expect("addr");
        let (Ok(rx6), Ok(tx6)) = (UdpSocket::bind(v6).await, UdpSocket::bind(v6).await) else {
            return; // no IPv6 on this host: nothing to mix
        };
        let rx4 = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let tx4 = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        for round in 0..3 {
            for (rx, tx, ipv6) in [(&rx4, &tx4, false), (&rx6, &tx6, true)] {
                tx.send_to(&[round; 4], rx.local_addr().expect("addr"))
                    .await
                    .expect("send");
                let mut froms = Vec::new();
                while froms.is_empty() {
                    rx.readable().await.expect("readable");
                    with_batch(|b| {
                        b.recv(rx, ipv6).expect("recv");
                        froms.extend(b.datagrams().map(|(_, f)| f));
                    });
                }
                assert_eq!(froms, vec![tx.local_addr().expect("addr")], "round {round}");
            }
        }
    }
}
