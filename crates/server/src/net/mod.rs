//! Socket setup tokio does not offer: IPv6 sockets that stay IPv6-only, so that `[::]:3478`
//! and `0.0.0.0:3478` can both be bound (Linux lets an IPv6 wildcard socket take IPv4 too by
//! default, and the second bind then fails with "address in use").

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

pub mod batch;

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A non-blocking UDP socket bound to `addr`.
pub fn bind_udp(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let s = socket(addr, Type::DGRAM, Protocol::UDP)?;
    s.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// A listening TCP socket on `addr` (SO_REUSEADDR, as tokio's own bind sets it).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    tokio::net::TcpListener::from_std(s.into())
}

/// Most unsent bytes the kernel holds for an HTTP connection before it stops taking more.
/// Without a limit, a viewer on a slow link lets the kernel's send buffer grow to megabytes
/// (seconds of live media) that nothing in onair can see, drop or reorder; with it, the
/// backlog stays in our queues, where RTWebSocket's deadlines and the plain WebSocket's byte
/// budget act on it. Downloads (HLS, recordings) keep their speed: only what is not yet sent
/// is limited, not what is in flight.
const NOTSENT_LOWAT: u32 = 16 * 1024;

/// Options for every accepted HTTP(S) connection: no Nagle (RTWebSocket fragments, acks and
/// signalling are small writes that must go at once; Nagle held each ~10 ms) and
/// TCP_NOTSENT_LOWAT.
pub fn tune_http_stream(tcp: &tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
    #[cfg(target_os = "linux")]
    let _ = socket2::SockRef::from(tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_share_a_port() {
        let v4 = bind_udp("0.0.0.0:0".parse().expect("addr")).expect("v4");
        let port = v4.local_addr().expect("addr").port();
        // Hosts without IPv6 cannot bind [::] at all; that is not what this checks.
        match bind_udp(SocketAddr::from(([0u16; 8], port))) {
            Ok(v6) => assert_eq!(v6.local_addr().expect("addr").port(), port),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable, "{e}"),
        }
        let t4 = bind_tcp("0.0.0.0:0".parse().expect("addr")).expect("v4");
        let port = t4.local_addr().expect("addr").port();
        if let Err(e) = bind_tcp(SocketAddr::from(([0u16; 8], port))) {
            assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable, "{e}");
        }
    }
}
