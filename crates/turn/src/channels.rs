//! The ChannelData fast path: media relayed over a bound channel without entering
//! turn-server-proto.
//!
//! Browsers relay media as ChannelData (RFC 8656 §12), so nearly every packet a TURN server
//! sees is one. turn-server-proto answers each by walking its client list, allocating a Vec,
//! reading the clock and entering a tracing span; at a thousand allocations that was most of
//! the CPU. The library stays the authority on every STUN request (allocations, permissions,
//! channels, refreshes, nonces); this table only mirrors the channel bindings and permissions
//! it granted, learned from the success responses it sends, with the RFC's lifetimes. A packet
//! the table cannot vouch for (no binding, or one past its lifetime here) goes to the library,
//! so the worst a stale table can do is send a packet down the slow path.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// RFC 8656 §9: a permission lasts 300 s from its last install or refresh.
pub(crate) const PERMISSION_NS: u64 = 300_000_000_000;
/// RFC 8656 §12: a channel binding lasts 600 s from its last bind or refresh.
pub(crate) const CHANNEL_NS: u64 = 600_000_000_000;

/// A client's side of a channel: which connection, which number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientChannel {
    /// 0 UDP, 1 TCP (see `core::key`).
    pub transport: u8,
    pub listener: SocketAddr,
    pub client: SocketAddr,
    pub channel: u16,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub relayed: SocketAddr,
    pub peer: SocketAddr,
    /// Nanoseconds on the core's clock.
    channel_until: u64,
    permission_until: u64,
}

/// A ChannelBind or CreatePermission the library is about to answer.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Bind {
        key: ClientChannel,
        relayed: SocketAddr,
        peer: SocketAddr,
    },
    Permit {
        relayed: SocketAddr,
        ips: Vec<IpAddr>,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Channels {
    by_client: HashMap<ClientChannel, Bound>,
    by_peer: HashMap<(SocketAddr, SocketAddr), ClientChannel>,
    /// Each allocation's bound channels (a handful), so that a permission refresh or the end
    /// of an allocation does not walk every binding on the server.
    by_relay: HashMap<SocketAddr, Vec<ClientChannel>>,
}

impl Channels {
    /// The library granted `p` at `now`.
    pub fn granted(&mut self, p: Pending, now: u64) {
        match p {
            Pending::Bind { key, relayed, peer } => {
                // A refresh of the same binding, or a new one. A binding the library refused
                // (number or peer already taken) never gets here; a number reused after its
                // binding expired may name another peer now.
                let old = self.by_client.insert(
                    key,
                    Bound {
                        relayed,
                        peer,
                        channel_until: now + CHANNEL_NS,
                        permission_until: now + PERMISSION_NS,
                    },
                );
                if let Some(old) = old.filter(|o| (o.relayed, o.peer) != (relayed, peer)) {
                    self.by_peer.remove(&(old.relayed, old.peer));
                }
                self.by_peer.insert((relayed, peer), key);
                let keys = self.by_relay.entry(relayed).or_default();
                if !keys.contains(&key) {
                    keys.push(key);
                }
                // The bind refreshed the permission of that IP for the other channels too.
                self.refresh_permission(relayed, peer.ip(), now);
            }
            Pending::Permit { relayed, ips } => {
                for ip in ips {
                    self.refresh_permission(relayed, ip, now);
                }
            }
        }
    }

    fn refresh_permission(&mut self, relayed: SocketAddr, ip: IpAddr, now: u64) {
        // Permissions without a channel need no entry here (their traffic is Send and Data
        // indications, which the library handles).
        for key in self.by_relay.get(&relayed).into_iter().flatten() {
            if let Some(b) = self.by_client.get_mut(key)
                && b.peer.ip() == ip
            {
                b.permission_until = now + PERMISSION_NS;
            }
        }
    }

    /// Where ChannelData from a client goes: (relayed, peer), if the binding and its
    /// permission are alive.
    pub fn to_peer(&self, key: &ClientChannel, now: u64) -> Option<(SocketAddr, SocketAddr)> {
        let b = self.by_client.get(key)?;
        (now < b.channel_until && now < b.permission_until).then_some((b.relayed, b.peer))
    }

    /// The channel a datagram from `peer` to `relayed` goes to the client on, if alive.
    pub fn to_client(
        &self,
        relayed: SocketAddr,
        peer: SocketAddr,
        now: u64,
    ) -> Option<ClientChannel> {
        let key = self.by_peer.get(&(relayed, peer))?;
        let b = self.by_client.get(key)?;
        let alive = now < b.channel_until && now < b.permission_until;
        (alive && b.relayed == relayed && b.peer == peer).then_some(*key)
    }

    /// The allocation behind `relayed` ended.
    pub fn remove_relay(&mut self, relayed: SocketAddr) {
        for key in self.by_relay.remove(&relayed).unwrap_or_default() {
            if let Some(b) = self.by_client.remove(&key) {
                self.by_peer.remove(&(b.relayed, b.peer));
            }
        }
    }

    /// Bindings held.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn a_binding_lives_as_long_as_its_channel_and_permission() {
        let mut c = Channels::default();
        let key = ClientChannel {
            transport: 0,
            listener: a("192.0.2.1:3478"),
            client: a("198.51.100.1:5000"),
            channel: 0x4000,
        };
        let (relayed, peer) = (a("192.0.2.1:40000"), a("203.0.113.9:7000"));
        c.granted(Pending::Bind { key, relayed, peer }, 0);
        assert_eq!(c.to_peer(&key, 1), Some((relayed, peer)));
        assert_eq!(c.to_client(relayed, peer, 1), Some(key));
        // Another port of the same IP is not the bound peer.
        assert_eq!(c.to_client(relayed, a("203.0.113.9:7001"), 1), None);
        // The permission runs out first unless refreshed.
        assert_eq!(c.to_peer(&key, PERMISSION_NS), None);
        c.granted(
            Pending::Permit {
                relayed,
                ips: vec![peer.ip()],
            },
            PERMISSION_NS - 1,
        );
        assert!(c.to_peer(&key, PERMISSION_NS + 1).is_some());
        // The channel itself ends after 600 s without a rebind.
        assert_eq!(c.to_peer(&key, CHANNEL_NS), None);
        c.remove_relay(relayed);
        assert_eq!(c.len(), 0);
        assert_eq!(c.to_client(relayed, peer, 1), None);
    }
}
