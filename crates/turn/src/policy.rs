//! Where a relay may send. A TURN server is a proxy that anyone with credentials can point at
//! any address, so by default it refuses the addresses an outsider should never reach through
//! it: loopback, private and link-local networks, and onair's own service ports (SSRF through
//! TURN). The SFU's media address is always allowed: relaying to it is the point.

use std::net::{IpAddr, SocketAddr};

/// Why a peer address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 127.0.0.0/8, ::1.
    #[error("loopback peer")]
    Loopback,
    /// RFC 1918, RFC 6598 shared space, IPv6 unique-local.
    #[error("private-network peer")]
    Private,
    /// 169.254.0.0/16, fe80::/10.
    #[error("link-local peer")]
    LinkLocal,
    /// 0.0.0.0, ::, multicast, broadcast, or another address that is never a peer.
    #[error("unroutable peer")]
    Unroutable,
    /// One of onair's own non-media ports (HTTP, RTMP, TURN itself).
    #[error("onair service port")]
    ServicePort,
}

impl Refusal {
    /// A short label for logs and the metrics' `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link_local",
            Self::Unroutable => "unroutable",
            Self::ServicePort => "service_port",
        }
    }
}

/// The relay policy.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Allow loopback peers (tests, single-machine setups).
    pub allow_loopback: bool,
    /// Allow private and link-local peers (a TURN server inside a private network).
    pub allow_private: bool,
    /// Always allowed: the SFU's media addresses.
    pub media: Vec<SocketAddr>,
    /// Always refused: onair's own non-media listeners.
    pub services: Vec<SocketAddr>,
}

impl PeerPolicy {
    /// Whether a relay may send to `peer`.
    pub fn check(&self, peer: SocketAddr) -> Result<(), Refusal> {
        let ip = canonical(peer.ip());
        if self.media.iter().any(|m| same(*m, peer)) {
            return Ok(());
        }
        if self.services.iter().any(|s| {
            s.port() == peer.port()
                && (canonical(s.ip()) == ip || s.ip().is_unspecified() || is_local(ip))
        }) {
            return Err(Refusal::ServicePort);
        }
        match ip {
            IpAddr::V4(v4) => {
                if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || peer.port() == 0
                {
                    return Err(Refusal::Unroutable);
                }
                if v4.is_loopback() {
                    return self.loopback();
                }
                if v4.is_link_local() {
                    return self.private(Refusal::LinkLocal);
                }
                let o = v4.octets();
                let shared = o[0] == 100 && (o[1] & 0xc0) == 64;
                if v4.is_private() || shared {
                    return self.private(Refusal::Private);
                }
                Ok(())
            }
            IpAddr::V6(v6) => {
                if v6.is_unspecified() || v6.is_multicast() || peer.port() == 0 {
                    return Err(Refusal::Unroutable);
                }
                if v6.is_loopback() {
                    return self.loopback();
                }
                let seg = v6.segments()[0];
                if (seg & 0xffc0) == 0xfe80 {
                    return self.private(Refusal::LinkLocal);
                }
                if (seg & 0xfe00) == 0xfc00 {
                    return self.private(Refusal::Private);
                }
                Ok(())
            }
        }
    }

    fn loopback(&self) -> Result<(), Refusal> {
        if self.allow_loopback {
            Ok(())
        } else {
            Err(Refusal::Loopback)
        }
    }

    fn private(&self, r: Refusal) -> Result<(), Refusal> {
        if self.allow_private { Ok(()) } else { Err(r) }
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// A media address bound to 0.0.0.0 matches the same port on any local address.
fn same(media: SocketAddr, peer: SocketAddr) -> bool {
    media.port() == peer.port()
        && (canonical(media.ip()) == canonical(peer.ip()) || media.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn default_policy_refuses_internal_addresses() {
        let p = PeerPolicy::default();
        assert_eq!(p.check(a("127.0.0.1:5000")), Err(Refusal::Loopback));
        assert_eq!(p.check(a("[::1]:5000")), Err(Refusal::Loopback));
        assert_eq!(
            p.check(a("[::ffff:127.0.0.1]:5000")),
            Err(Refusal::Loopback)
        );
        assert_eq!(p.check(a("10.1.2.3:5000")), Err(Refusal::Private));
        assert_eq!(p.check(a("192.168.1.1:5000")), Err(Refusal::Private));
        assert_eq!(p.check(a("172.20.0.1:5000")), Err(Refusal::Private));
        assert_eq!(p.check(a("100.64.0.1:5000")), Err(Refusal::Private));
        assert_eq!(p.check(a("[fd00::1]:5000")), Err(Refusal::Private));
        assert_eq!(p.check(a("169.254.169.254:80")), Err(Refusal::LinkLocal));
        assert_eq!(p.check(a("[fe80::1]:5000")), Err(Refusal::LinkLocal));
        assert_eq!(p.check(a("0.0.0.0:5000")), Err(Refusal::Unroutable));
        assert_eq!(p.check(a("224.0.0.1:5000")), Err(Refusal::Unroutable));
        assert_eq!(p.check(a("203.0.113.7:5000")), Ok(()));
        assert_eq!(p.check(a("[2001:db8::1]:5000")), Ok(()));
    }

    #[test]
    fn media_is_allowed_and_services_refused_even_when_loopback_is_allowed() {
        let p = PeerPolicy {
            allow_loopback: true,
            allow_private: false,
            media: vec![a("127.0.0.1:50000")],
            services: vec![a("127.0.0.1:8080"), a("0.0.0.0:1935")],
        };
        assert_eq!(p.check(a("127.0.0.1:50000")), Ok(()));
        assert_eq!(p.check(a("127.0.0.1:9999")), Ok(()));
        assert_eq!(p.check(a("127.0.0.1:8080")), Err(Refusal::ServicePort));
        assert_eq!(p.check(a("127.0.0.1:1935")), Err(Refusal::ServicePort));
        let strict = PeerPolicy {
            allow_loopback: false,
            ..p
        };
        assert_eq!(strict.check(a("127.0.0.1:50000")), Ok(()));
        assert_eq!(strict.check(a("127.0.0.1:9999")), Err(Refusal::Loopback));
    }
}
