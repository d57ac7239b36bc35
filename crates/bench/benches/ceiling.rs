//! The per-packet ceiling of an SFU's forwarding path on this machine, so the load
//! generator's figures can be stated as a fraction of it. Every case handles 1200-byte
//! RTP packets (12-byte header + 1188-byte payload); throughput is in packets.
//!
//! - `srtp_aes128gcm`: RFC 7714 AEAD_AES_128_GCM (IV = salt ^ ssrc/roc/seq, AAD = RTP
//!   header, 16-byte tag). `protect` = encrypt + tag, `unprotect` = decrypt + verify.
//!   - `str0m`: the cipher onair really uses, from `str0m::crypto::from_feature_flags()`
//!     (aws-lc-rs behind `dyn AeadAes128GcmCipher`), called as `SrtpContext` calls it.
//!   - `str0m+alloc`: the same plus the fresh `Vec` that `SrtpContext::protect_rtp`
//!     allocates for every outgoing packet.
//!   - `ring`, `aws-lc-rs`: `LessSafeKey` called directly, in place, to tell the
//!     library's own speed from str0m's wrapping. Their `unprotect` includes a 1.2 kB copy
//!     of the packet (in-place open destroys it), as str0m's out-of-place decrypt does.
//! - `srtp_aes128cm_sha1_80`: the legacy AES-CM + HMAC-SHA1-80 profile through the same
//!   provider (its aws-lc-rs backend rebuilds the AES key schedule and the HMAC key on
//!   every packet, so this is what str0m costs, not what the profile must cost).
//! - `udp_loopback`: kernel cost of sending to 127.0.0.1: one `send_to` per packet,
//!   `sendmmsg` of 32, and one UDP GSO `sendmsg` of 32 x 1200-byte segments. Only the
//!   sends are timed, in bursts that fit the receiver's queue, which is drained between
//!   bursts; each case prints sent vs received, and any loss means it measured drops.
//!   On loopback the receive path up to the socket queue (including GSO segmentation)
//!   runs inside the sender's syscall, standing in for the NIC driver of a real send.

use std::hint::black_box;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrIn};
use nix::sys::socket::{sendmmsg, sendmsg, setsockopt, sockopt};
use sfu::str0m::crypto::{AeadAes128Gcm, Aes128CmSha1_80, from_feature_flags};

const PACKET: usize = 1200;
const HDR: usize = 12;
const GCM_TAG: usize = AeadAes128Gcm::TAG_LEN;
const HMAC_TAG: usize = Aes128CmSha1_80::HMAC_TAG_LEN;
const BATCH: usize = 32;
const KEY: [u8; 16] = [0x42; 16];
const SSRC: u32 = 0x1234_5678;

/// A 1200-byte RTP packet (V=2, PT=96) with room for a GCM tag after it.
fn rtp_packet() -> [u8; PACKET + GCM_TAG] {
    let mut p = [0xab; PACKET + GCM_TAG];
    p[..8].copy_from_slice(&[0x80, 96, 0, 1, 0, 0, 0, 0]);
    p[8..HDR].copy_from_slice(&SSRC.to_be_bytes());
    p
}

fn gcm_iv(seq: u16) -> [u8; 12] {
    AeadAes128Gcm::rtp_iv([7; 12], SSRC, 0, seq)
}

/// ring and aws-lc-rs share `ring::aead`'s API, so one body benches both.
macro_rules! direct_gcm {
    ($g:expr, $name:literal, $aead:path, $protected:expr) => {{
        use $aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &KEY).expect("key"));
        let mut buf = rtp_packet();
        let mut seq = 0u16;
        $g.bench_function(concat!("protect/", $name), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let nonce = Nonce::assume_unique_for_key(gcm_iv(seq));
                let (hdr, body) = buf.split_at_mut(HDR);
                let (payload, tag_out) = body.split_at_mut(PACKET - HDR);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(&*hdr), payload)
                    .expect("seal");
                tag_out.copy_from_slice(tag.as_ref());
                black_box(&buf);
            })
        });
        $g.bench_function(concat!("unprotect/", $name), |b| {
            b.iter(|| {
                buf = $protected;
                let nonce = Nonce::assume_unique_for_key(gcm_iv(1));
                let (hdr, body) = buf.split_at_mut(HDR);
                let plain = key
                    .open_in_place(nonce, Aad::from(&*hdr), body)
                    .expect("open");
                black_box(plain);
            })
        });
    }};
}

fn srtp_gcm(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_aes128gcm");
    g.throughput(Throughput::Elements(1));
    let provider = from_feature_flags().srtp_provider.aead_aes_128_gcm();
    let plain = rtp_packet();
    let (hdr, payload) = (&plain[..HDR], &plain[HDR..PACKET]);

    let mut enc = provider.create_cipher(KEY, true);
    let mut out = [0u8; PACKET + GCM_TAG];
    let mut seq = 0u16;
    g.bench_function("protect/str0m", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let out = &mut out[HDR..];
            enc.encrypt(&gcm_iv(seq), hdr, payload, out)
                .expect("encrypt");
            black_box(out);
        })
    });
    g.bench_function("protect/str0m+alloc", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let mut out = vec![0u8; PACKET + GCM_TAG];
            enc.encrypt(&gcm_iv(seq), hdr, payload, &mut out[HDR..])
                .expect("encrypt");
            out[..HDR].copy_from_slice(hdr);
            out
        })
    });

    // One packet protected by str0m at seq 1; every backend must open it, which also
    // cross-checks that all three implement the same RFC 7714 transform.
    enc.encrypt(&gcm_iv(1), hdr, payload, &mut out[HDR..])
        .expect("encrypt");
    out[..HDR].copy_from_slice(hdr);
    let protected = out;
    let mut dec = provider.create_cipher(KEY, false);
    let mut plain_out = [0u8; PACKET - HDR];
    g.bench_function("unprotect/str0m", |b| {
        b.iter(|| {
            let (aad, body) = protected.split_at(HDR);
            let n = dec
                .decrypt(&gcm_iv(1), &[aad], body, &mut plain_out)
                .expect("decrypt");
            black_box(&plain_out[..n]);
        })
    });

    direct_gcm!(g, "ring", ring::aead, protected);
    direct_gcm!(g, "aws-lc-rs", aws_lc_rs::aead, protected);
    g.finish();
}

fn srtp_cm(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_aes128cm_sha1_80");
    g.throughput(Throughput::Elements(1));
    let crypto = from_feature_flags();
    let cm = crypto.srtp_provider.aes_128_cm_sha1_80();
    let hmac = |k: &[u8], p: &[&[u8]]| crypto.sha1_hmac_provider.sha1_hmac(k, p);
    let (salt, auth_key, index) = ([7u8; 14], [9u8; 20], 1u64);
    let iv = Aes128CmSha1_80::rtp_iv(salt, SSRC, index);
    let plain = rtp_packet();

    // Sized as `SrtpContext` sizes it: CTR backends may write up to a block past the end.
    let mut out = [0u8; PACKET + 15];
    let mut enc = cm.create_cipher(KEY, true);
    let mut protect = |out: &mut [u8]| {
        enc.encrypt(&iv, &plain[HDR..PACKET], &mut out[HDR..])
            .expect("encrypt");
        out[..HDR].copy_from_slice(&plain[..HDR]);
        Aes128CmSha1_80::rtp_hmac(hmac, &auth_key, out, index, PACKET);
    };
    g.bench_function("protect/str0m", |b| b.iter(|| protect(black_box(&mut out))));

    protect(&mut out);
    let protected = &out[..PACKET + HMAC_TAG];
    let mut dec = cm.create_cipher(KEY, false);
    let mut plain_out = [0u8; PACKET - HDR + 15];
    g.bench_function("unprotect/str0m", |b| {
        b.iter(|| {
            let (authed, tag) = protected.split_at(PACKET);
            assert!(Aes128CmSha1_80::rtp_verify(
                hmac, &auth_key, authed, index, tag
            ));
            dec.decrypt(&iv, &authed[HDR..], &mut plain_out)
                .expect("decrypt");
            black_box(&plain_out);
        })
    });
    g.finish();
}

/// A loopback receiver drained between timed bursts, never during them: no reader
/// competes for the 2 cores or has to be woken per packet (a remote receiver costs the
/// sender neither), and each burst fits in its queue, so no timed send is a drop.
struct Sink {
    sock: UdpSocket,
    addr: SocketAddrV4,
    sent: u64,
    received: u64,
}

/// Datagrams per timed burst: well under the queue, at ~2-4 kB of skb per datagram.
const BURST: u64 = 512;

impl Sink {
    fn new() -> Sink {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind sink");
        // The forced variant passes rmem_max when privileged.
        let size = 16 << 20;
        let _ = setsockopt(&sock, sockopt::RcvBufForce, &size)
            .or_else(|_| setsockopt(&sock, sockopt::RcvBuf, &size));
        sock.set_nonblocking(true).expect("nonblocking");
        let SocketAddr::V4(addr) = sock.local_addr().expect("addr") else {
            unreachable!("bound to an IPv4 address")
        };
        Sink {
            sock,
            addr,
            sent: 0,
            received: 0,
        }
    }

    /// Times `iters` calls of `send`, each sending `per_call` datagrams, draining the
    /// queue untimed after every burst.
    fn time(&mut self, iters: u64, per_call: u64, mut send: impl FnMut()) -> Duration {
        let (mut total, mut left) = (Duration::ZERO, iters);
        while left > 0 {
            let n = left.min(BURST / per_call);
            let start = Instant::now();
            for _ in 0..n {
                send();
            }
            total += start.elapsed();
            (left, self.sent) = (left - n, self.sent + n * per_call);
            self.drain();
        }
        total
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 2048];
        while self.sock.recv(&mut buf).is_ok() {
            self.received += 1;
        }
    }

    /// Prints delivery for the case: any loss means the figure included drops.
    fn report(mut self, case: &str) {
        thread::sleep(Duration::from_millis(50)); // stragglers still in softirq
        self.drain();
        let lost = self.sent.saturating_sub(self.received);
        println!(
            "{case}: sent {}, received {}, lost {lost}",
            self.sent, self.received
        );
    }
}

fn sender() -> UdpSocket {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind sender")
}

fn udp(c: &mut Criterion) {
    let mut g = c.benchmark_group("udp_loopback");
    let packet = [0u8; PACKET];

    let (mut sink, sock) = (Sink::new(), sender());
    let dst = sink.addr;
    g.throughput(Throughput::Elements(1));
    g.bench_function("send_to", |b| {
        b.iter_custom(|iters| {
            sink.time(iters, 1, || {
                sock.send_to(&packet, dst).expect("send_to");
            })
        })
    });
    sink.report("udp_loopback/send_to");

    let (mut sink, sock) = (Sink::new(), sender());
    let fd = sock.as_raw_fd();
    let iovs = [[IoSlice::new(&packet)]; BATCH];
    let addrs = [Some(SockaddrIn::from(sink.addr)); BATCH];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let no_cmsgs: [ControlMessage; 0] = [];
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("sendmmsg_32", |b| {
        b.iter_custom(|iters| {
            // The results are not iterated: for sends, nix would read never-written
            // addresses. A short send shows up as loss in the report instead.
            sink.time(iters, BATCH as u64, || {
                sendmmsg(fd, &mut headers, &iovs, addrs, no_cmsgs, MsgFlags::empty())
                    .expect("sendmmsg");
            })
        })
    });
    sink.report("udp_loopback/sendmmsg_32");

    let (mut sink, sock) = (Sink::new(), sender());
    let dst = SockaddrIn::from(sink.addr);
    let super_packet = [0u8; PACKET * BATCH];
    let iov = [IoSlice::new(&super_packet)];
    let segment = PACKET as u16;
    let gso = [ControlMessage::UdpGsoSegments(&segment)];
    let send_gso = || sendmsg(sock.as_raw_fd(), &iov, &gso, MsgFlags::empty(), Some(&dst));
    // Kernels before 4.18 (or without UDP GSO) reject the cmsg: skip, don't fail.
    match send_gso() {
        Err(e) => println!("udp_loopback/gso_32: skipped, UDP GSO not supported here ({e})"),
        Ok(_) => {
            sink.sent += BATCH as u64;
            g.bench_function("gso_32", |b| {
                b.iter_custom(|iters| {
                    sink.time(iters, BATCH as u64, || {
                        send_gso().expect("gso sendmsg");
                    })
                })
            });
            sink.report("udp_loopback/gso_32");
        }
    }
    g.finish();
}

criterion_group!(benches, srtp_gcm, srtp_cm, udp);
criterion_main!(benches);
