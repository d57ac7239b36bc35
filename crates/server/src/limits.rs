//! Abuse limits at the front doors: how many connections one address may hold, how fast it may
//! make the requests that cost the server something, and the counts of what was refused (for
//! `/metrics`). One unauthenticated client must not be able to take the server from everyone
//! else (issue 18).
//!
//! Addresses are counted whole for IPv4 and by /64 for IPv6 (one host holds a /64: counting
//! single IPv6 addresses would give it 2^64 budgets).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

/// The key an address is counted under.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

type Limiter = RateLimiter<
    IpAddr,
    governor::state::keyed::HashMapStateStore<IpAddr>,
    DefaultClock,
    governor::middleware::NoOpMiddleware,
>;

/// What one signalling socket may still send: a message that does not fit is dropped unread
/// (a client flooding its socket must not fill the media loop's queue).
pub struct SignalBudget(
    RateLimiter<
        governor::state::NotKeyed,
        governor::state::InMemoryState,
        DefaultClock,
        governor::middleware::NoOpMiddleware,
    >,
);

impl SignalBudget {
    /// Takes `bytes` from the budget; false when they do not fit now.
    pub fn take(&self, bytes: usize) -> bool {
        let kib = u32::try_from(bytes / 1024 + 1).unwrap_or(u32::MAX);
        let n = NonZeroU32::new(kib).unwrap_or(NonZeroU32::MIN);
        matches!(self.0.check_n(n), Ok(Ok(())))
    }
}

/// What was refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct Refused {
    /// Requests answered 429 (over the address's rate).
    pub rate: AtomicU64,
    /// Connections closed at once (the address holds its maximum).
    pub connections: AtomicU64,
    /// Connections closed for saying nothing for too long (idle or half-sent).
    pub idle: AtomicU64,
}

/// The limits' settings (`limits.*` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Connections one address may hold open on each TCP front door (HTTP, RTMP, TURN,
    /// ICE-TCP).
    pub connections_per_ip: u32,
    /// Sustained rate of costly requests per address (WHIP/WHEP, the API, WebSocket
    /// upgrades), per second…
    pub requests_per_second: u32,
    /// …with this many at once.
    pub request_burst: u32,
    /// An HTTP connection that sends and receives nothing for this long is closed.
    pub idle: Duration,
    /// A request's headers must arrive within this.
    pub header_deadline: Duration,
    /// A client must have joined, played or published this long after connecting.
    pub auth_deadline: Duration,
    /// What one `/rtc` socket may send, per second and at once.
    pub signal_bytes_per_second: u32,
    pub signal_burst_bytes: u32,
}

/// The server's limits, shared by every front door.
pub struct Limits {
    pub settings: Settings,
    /// Open connections per address, per front door.
    open: Mutex<HashMap<(Door, IpAddr), u32>>,
    requests: Limiter,
    pub refused: Refused,
}

/// Which front door a connection came through (each has its own per-address count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Door {
    Http,
    Rtmp,
    /// TURN over TCP and TLS.
    Turn,
    /// ICE-TCP on the media port.
    IceTcp,
}

/// A held connection slot: the count goes down when it is dropped.
pub struct Slot {
    limits: Arc<Limits>,
    key: (Door, IpAddr),
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl Limits {
    pub fn new(settings: Settings) -> Arc<Limits> {
        let rate = NonZeroU32::new(settings.requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.request_burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let limits = Arc::new(Limits {
            settings,
            open: Mutex::new(HashMap::new()),
            requests: RateLimiter::hashmap(Quota::per_second(rate).allow_burst(burst)),
            refused: Refused::default(),
        });
        // The rate table keeps an entry per address seen: forget those back at a full burst.
        let weak = Arc::downgrade(&limits);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tick.tick().await;
                    let Some(l) = weak.upgrade() else { return };
                    l.requests.retain_recent();
                    l.requests.shrink_to_fit();
                }
            });
        }
        limits
    }

    /// A slot for a new connection from `ip`, or `None` when that address holds its maximum
    /// (the caller closes the connection; counted).
    pub fn connect(self: &Arc<Limits>, door: Door, ip: IpAddr) -> Option<Slot> {
        let key = (door, key(ip));
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.settings.connections_per_ip {
            drop(open);
            self.refused.connections.fetch_add(1, Relaxed);
            return None;
        }
        *n += 1;
        Some(Slot {
            limits: self.clone(),
            key,
        })
    }

    /// Whether `ip` may make one more costly request now; when not, how long until it may.
    pub fn request(&self, ip: IpAddr) -> Result<(), Duration> {
        self.requests.check_key(&key(ip)).map_err(|not_until| {
            self.refused.rate.fetch_add(1, Relaxed);
            not_until.wait_time_from(DefaultClock::default().now())
        })
    }

    /// The inflow budget of one `/rtc` socket (counted in KiB).
    pub fn signal_budget(&self) -> SignalBudget {
        let kib = |b: u32| NonZeroU32::new((b / 1024).max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(kib(self.settings.signal_bytes_per_second))
            .allow_burst(kib(self.settings.signal_burst_bytes));
        SignalBudget(RateLimiter::direct(quota))
    }

    /// Connections open from `ip` through `door`.
    #[cfg(test)]
    fn open(&self, door: Door, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&(door, key(ip))).copied().unwrap_or(0)
    }
}

/// Whether a request is one of those that cost the server (and so are rate-limited): creating
/// and changing sessions, WebSocket upgrades, the operator's API. Pages, the SDK, LL-HLS
/// (a player asks several times a second by design) and `/healthz` are not.
fn costly(method: &axum::http::Method, path: &str) -> bool {
    let api = path == "/api" || path.starts_with("/api/");
    let session = path.starts_with("/whip/") || path.starts_with("/whep/");
    let upgrade = path == "/rtc" || path.starts_with("/rtws/") || path.starts_with("/ws/");
    (session && method != axum::http::Method::OPTIONS) || api || upgrade
}

/// The rate check on every route: a costly request over its address's rate gets 429 with
/// `Retry-After` (whole seconds, at least 1).
pub async fn rate(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = peer
        && costly(req.method(), req.uri().path())
        && let Err(wait) = limits.request(ip)
    {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "too many requests from this address: try again in {secs} s (limits.requests_per_second)\n"
            ),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            connections_per_ip: 2,
            requests_per_second: 1,
            request_burst: 3,
            idle: Duration::from_secs(30),
            header_deadline: Duration::from_secs(10),
            auth_deadline: Duration::from_secs(10),
            signal_bytes_per_second: 64 * 1024,
            signal_burst_bytes: 256 * 1024,
        }
    }

    #[test]
    fn connections_are_counted_per_address_and_door_and_given_back() {
        let l = Limits::new(settings());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = l.connect(Door::Http, a).unwrap();
        let _s2 = l.connect(Door::Http, a).unwrap();
        assert!(
            l.connect(Door::Http, a).is_none(),
            "a third from the same address"
        );
        assert!(
            l.connect(Door::Rtmp, a).is_some(),
            "another door has its own count"
        );
        assert!(
            l.connect(Door::Http, b).is_some(),
            "another address is not affected"
        );
        assert_eq!(l.refused.connections.load(Relaxed), 1);
        drop(s1);
        assert_eq!(l.open(Door::Http, a), 1);
        assert!(l.connect(Door::Http, a).is_some());
    }

    #[test]
    fn ipv6_addresses_count_by_64() {
        let l = Limits::new(settings());
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        let _a = l.connect(Door::Http, x).unwrap();
        let _b = l.connect(Door::Http, y).unwrap();
        assert!(l.connect(Door::Http, x).is_none());
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn requests_past_the_burst_wait_and_other_addresses_do_not() {
        let l = Limits::new(settings());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.request(a).is_ok());
        }
        let wait = l.request(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(l.request("127.0.0.2".parse().unwrap()).is_ok());
        assert_eq!(l.refused.rate.load(Relaxed), 1);
    }

    #[test]
    fn a_signalling_socket_gets_its_burst_then_its_rate() {
        let l = Limits::new(settings());
        let b = l.signal_budget();
        // 256 KiB at once: three 64 KiB messages (65 KiB each as counted), not a fourth.
        assert!(b.take(64 * 1024) && b.take(64 * 1024) && b.take(64 * 1024));
        assert!(!b.take(64 * 1024));
        assert!(b.take(100), "a small one still fits");
    }

    #[test]
    fn only_costly_requests_are_rate_limited() {
        use axum::http::Method;
        assert!(costly(&Method::POST, "/whip/live/a"));
        assert!(costly(&Method::PATCH, "/whep/live/a/s1"));
        assert!(!costly(&Method::OPTIONS, "/whip/live/a"));
        assert!(costly(&Method::GET, "/rtc"));
        assert!(costly(&Method::GET, "/api/ice-servers"));
        assert!(costly(&Method::GET, "/ws/live/a"));
        assert!(!costly(&Method::GET, "/hls/live/a/media.m3u8"));
        assert!(!costly(&Method::GET, "/room.html"));
        assert!(!costly(&Method::GET, "/healthz"));
    }
}
