//! Configuration: embedded defaults, then an optional TOML file, then `ONAIR_<SECTION>_<KEY>`
//! environment variables, in that order. Every key has an environment variable, derived from its
//! place in the file, so the two can never drift apart.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The whole configuration. See docs/configuration.md.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP: pages, signalling, API.
    pub http: Http,
    /// WebRTC media sockets.
    pub media: Media,
    /// Room limits and timings.
    pub rooms: Rooms,
    /// Published streams (WHIP, RTMP, room participants) and their readers.
    pub streams: Streams,
    /// RTMP ingest.
    pub rtmp: Rtmp,
    /// The embedded STUN/TURN server.
    pub turn: Turn,
    /// LL-HLS / HLS output of every stream.
    pub hls: Hls,
    /// Server-side recording to fragmented MP4.
    pub recording: Recording,
    /// Access control: token keys, what stays open.
    pub auth: Auth,
    /// Abuse limits at the front doors: connections and request rates per address, deadlines.
    pub limits: Limits,
    /// Signed event notifications to the operator's URLs.
    pub webhooks: Webhooks,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhooks {
    /// Where events are POSTed (`http://` or `https://`); empty: none are sent.
    pub urls: Vec<String>,
    /// Signs each event (Standard Webhooks: HMAC-SHA256); a `whsec_…` secret is base64 after
    /// the prefix. Required with `urls`. Printed redacted.
    pub secret: String,
    /// Events waiting per receiver; past it new ones are dropped (and counted).
    pub queue: usize,
    /// Attempts per event and receiver (1 s, 2 s, 4 s … apart, at most 60 s).
    pub max_attempts: u32,
    /// One attempt's time limit, milliseconds.
    pub timeout_ms: u64,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            urls: Vec::new(),
            secret: String::new(),
            queue: 1024,
            max_attempts: 8,
            timeout_ms: 5000,
        }
    }
}

impl Webhooks {
    /// As the sender takes them.
    pub fn settings(&self) -> crate::webhooks::Settings {
        crate::webhooks::Settings {
            urls: self.urls.clone(),
            secret: self.secret.clone(),
            queue: self.queue,
            max_attempts: self.max_attempts,
            timeout: std::time::Duration::from_millis(self.timeout_ms),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections one address (an IPv4 address, an IPv6 /64) may hold open on each TCP front
    /// door (HTTP, RTMP); more are closed at once.
    pub connections_per_ip: u32,
    /// Costly requests (WHIP/WHEP, the API, WebSocket upgrades) one address may make per
    /// second, sustained…
    pub requests_per_second: u32,
    /// …and at once. Past them: 429 with Retry-After.
    pub request_burst: u32,
    /// An HTTP connection that moves no byte for this long is closed.
    pub idle_secs: u64,
    /// A request's headers must have arrived this long after the connection is ready for them.
    pub header_deadline_secs: u64,
    /// After connecting, a client must have joined (`/rtc`), played or published
    /// (RTWebSocket) or published (RTMP) within this, token checked, or it is let go.
    pub auth_deadline_secs: u64,
    /// Bytes one `/rtc` socket may send per second, sustained…
    pub signal_bytes_per_second: u32,
    /// …and at once; messages past them are dropped with `rate_limited`.
    pub signal_burst_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_per_ip: 200,
            requests_per_second: 20,
            request_burst: 100,
            idle_secs: 60,
            header_deadline_secs: 10,
            signal_bytes_per_second: 64 * 1024,
            signal_burst_bytes: 1024 * 1024,
            auth_deadline_secs: 10,
        }
    }
}

impl Limits {
    /// As the limiter takes them.
    pub fn settings(&self) -> crate::limits::Settings {
        crate::limits::Settings {
            connections_per_ip: self.connections_per_ip,
            requests_per_second: self.requests_per_second,
            request_burst: self.request_burst,
            idle: std::time::Duration::from_secs(self.idle_secs),
            header_deadline: std::time::Duration::from_secs(self.header_deadline_secs),
            auth_deadline: std::time::Duration::from_secs(self.auth_deadline_secs),
            signal_bytes_per_second: self.signal_bytes_per_second,
            signal_burst_bytes: self.signal_burst_bytes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Address for HTTP and WebSocket signalling.
    pub listen: SocketAddr,
    /// PEM certificate chain: with `tls_key`, `listen` speaks HTTPS (HTTP/2 and HTTP/1.1 by
    /// ALPN) instead of plain HTTP. Browsers give a page camera access only over HTTPS (or on
    /// localhost), so a public deployment needs this or a TLS-terminating proxy.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Media {
    /// Local IP for the media sockets.
    pub bind: IpAddr,
    /// The first media shard's UDP port; shard `i` uses `port + i`, and ICE-TCP listens on
    /// the same numbers (open `port` to `port + shards - 1` in the firewall).
    pub port: u16,
    /// Media shards: threads, each with its own sockets and SFU; a room lives on one, WHIP and
    /// WHEP sessions are spread over them. 0: one per core.
    pub shards: usize,
    /// Addresses put in ICE candidates. Empty means the bind address (which must then be a
    /// concrete address). Behind NAT, the public address.
    pub public_ips: Vec<IpAddr>,
    /// Offer a passive ICE-TCP candidate on `port` for clients whose UDP is blocked.
    pub ice_tcp: bool,
    /// Send a frame's packets to one viewer in one call (UDP GSO, Linux). A shard turns it
    /// off by itself if the kernel refuses; off here for a network device that mishandles it.
    pub gso: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rooms {
    /// Rooms open at once.
    pub max_rooms: usize,
    pub max_participants: usize,
    pub max_tracks_per_participant: usize,
    pub max_tracks_per_room: usize,
    /// Seconds a participant whose WebSocket dropped keeps its place and its media.
    pub reconnect_grace_secs: u64,
    /// Largest data channel message relayed, bytes.
    pub max_data_bytes: usize,
    /// Largest signalling message accepted, bytes.
    pub max_signal_bytes: usize,
    /// Keyframe requests for one layer closer than this are merged, milliseconds.
    pub keyframe_interval_ms: u64,
    /// Rooms that are always peer-to-peer (media browser to browser); `"call-*"` matches a
    /// prefix. Other rooms are p2p when their first member joins with `mode: "p2p"`.
    pub p2p_rooms: Vec<String>,
    /// Members of one peer-to-peer room (a mesh: each sends to every other).
    pub max_p2p_participants: usize,
    /// Estimate each subscriber's downlink and send it no higher a simulcast or SVC layer than
    /// the estimate carries (docs/configuration.md).
    pub bandwidth_allocation: bool,
    /// Tell simulcast publishers which layers anyone receives, so they pause the others.
    pub dynacast: bool,
    /// Ask publishers for Opus DTX (no packets while the microphone is silent).
    pub opus_dtx: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Streams {
    /// What a second publisher of a busy stream name gets: "refuse" or "takeover".
    pub on_conflict: hub::ConflictPolicy,
    /// Frames a reader may fall behind before it skips to the next keyframe.
    pub reader_queue: usize,
    /// Answer WHIP publishers that would send VP8 with H.264 first when they offer it, so the
    /// stream can be packaged (LL-HLS, recording) — while HLS or recording is on.
    pub whip_prefer_h264: bool,
    /// Streams published at once (WHIP, RTMP, RTWebSocket, room members' tracks).
    pub max_streams: usize,
    /// Bytes of each stream's frames since its last keyframe kept so that a new reader starts
    /// at once; 0 keeps none (readers wait for the next keyframe, memory per publisher falls
    /// by about a GOP).
    pub gop_cache_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rtmp {
    /// Accept RTMP publishers.
    pub enabled: bool,
    /// Address for RTMP (`rtmp://HOST/APP/KEY` publishes stream `APP/KEY`).
    pub listen: SocketAddr,
    /// Decode AAC and encode Opus so WebRTC viewers hear RTMP audio.
    pub transcode_audio: bool,
    /// Simultaneous RTMP connections.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Turn {
    /// Run STUN/TURN (UDP and TCP on `port`).
    pub enabled: bool,
    /// Local IP for the TURN listeners and the relay sockets.
    pub bind: IpAddr,
    /// STUN/TURN over UDP and TCP.
    pub port: u16,
    /// Addresses clients reach TURN at (URLs in `/api/ice-servers`, relayed addresses). Empty
    /// means media's advertised addresses.
    pub public_ips: Vec<IpAddr>,
    /// Relay sockets take ports from this range (open it in the firewall).
    pub relay_port_min: u16,
    /// Upper end of the relay port range.
    pub relay_port_max: u16,
    /// Realm of the long-term credentials.
    pub realm: String,
    /// Shared secret of time-limited (TURN REST API, coturn `static-auth-secret`) credentials.
    /// Empty: a random one per start, which is enough for onair's own clients.
    pub secret: String,
    /// Lifetime of the credentials onair hands out, seconds.
    pub credential_ttl_secs: u64,
    /// Static long-term users, `"name:password"`.
    pub users: Vec<String>,
    /// Allocations on the whole server.
    pub max_allocations: usize,
    /// Allocations per user.
    pub max_allocations_per_user: usize,
    /// Bandwidth per allocation and direction, kbit/s (0: unlimited).
    pub allocation_kbps: u64,
    /// Let relays reach loopback addresses (tests and single-machine setups only).
    pub allow_loopback_peers: bool,
    /// Let relays reach private and link-local addresses (a TURN server inside a LAN).
    pub allow_private_peers: bool,
    /// TURN over TLS on these ports (5349 is the standard one; add 443 where onair owns it).
    /// Empty: no TLS listener.
    pub tls_ports: Vec<u16>,
    /// PEM certificate chain for TURN over TLS. Unset (with `tls_key`): a self-signed
    /// certificate is made at start, which TURN test tools accept and browsers do not, so
    /// `turns:` URLs are only handed out with a configured certificate.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// Host name in the `turns:` URLs handed out (the name the certificate is for). Empty:
    /// the TURN IPs.
    pub tls_hostname: String,
    /// Local IPv6 address for IPv6 listeners and relays (clients on IPv6, and allocations that
    /// ask for an IPv6 relay), e.g. "::1" or "::". Empty: IPv4 only.
    pub bind_v6: String,
}

impl Default for Turn {
    fn default() -> Self {
        Turn {
            enabled: true,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 3478,
            public_ips: Vec::new(),
            relay_port_min: 49152,
            relay_port_max: 65535,
            realm: "onair".into(),
            secret: String::new(),
            credential_ttl_secs: 86400,
            users: Vec::new(),
            max_allocations: 10_000,
            max_allocations_per_user: 64,
            allocation_kbps: 20_000,
            allow_loopback_peers: false,
            allow_private_peers: false,
            tls_ports: vec![5349],
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_hostname: String::new(),
            bind_v6: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hls {
    /// Package every stream as LL-HLS at `/hls/NAME/index.m3u8`.
    pub enabled: bool,
    /// Segments are cut at the first keyframe this long after the last cut, milliseconds.
    pub segment_ms: u64,
    /// Parts (the low-latency unit) last at most this long, milliseconds.
    pub part_ms: u64,
    /// Complete segments kept per stream (the playlist's window, and the memory bound).
    pub window_segments: usize,
    /// A blocking playlist request waits at most this long, milliseconds (then 503).
    pub max_block_ms: u64,
    /// Seconds of each stream kept for players to seek back in (a DVR window); 0: only
    /// `window_segments`. Memory per stream is about its bitrate times this.
    pub dvr_window_s: u64,
    /// Serve AAC encoded from a stream's Opus (WebRTC sources), for native HLS players that
    /// take only AAC (Safari, iOS); off: Opus, which hls.js and Chromium play.
    pub aac_from_opus: bool,
}

impl Default for Hls {
    fn default() -> Self {
        Hls {
            enabled: true,
            segment_ms: 2000,
            part_ms: 200,
            window_segments: 15,
            max_block_ms: 6000,
            dvr_window_s: 0,
            aac_from_opus: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recording {
    /// Record the streams `streams` names.
    pub enabled: bool,
    /// Where the files go (created if missing).
    pub dir: String,
    /// Stream names to record: exact names, or prefixes ending in `*` (`"*"`: all).
    pub streams: Vec<String>,
    /// Recordings `POST /api/recordings` may have running at once (streams and rooms).
    pub max_active: usize,
    /// Gigabytes the recording directory may hold; past it recordings stop and new ones are
    /// refused.
    pub max_dir_gb: u64,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            enabled: false,
            dir: "recordings".into(),
            streams: vec!["*".into()],
            max_active: 64,
            max_dir_gb: 100,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Token signing keys by name: base64url secrets of at least 32 bytes (`onair keys
    /// generate`). With any, room joins and WHIP/WHEP need an access token signed by one of
    /// them (`onair token`). Printed redacted.
    pub keys: std::collections::BTreeMap<String, String>,
    /// Listening beyond loopback with no key is refused unless this is true (anyone who can
    /// reach the server may then join any room and publish any stream).
    pub allow_anonymous: bool,
    /// `/metrics` answers without a token (for a Prometheus that scrapes without one). The rest
    /// of the HTTP API needs an admin token whenever there are keys.
    pub open_metrics: bool,
    /// Playing streams (WHEP, LL-HLS, the WebSocket players) needs no token: a public
    /// broadcast whose publishers and rooms still need one.
    pub open_playback: bool,
}

impl Auth {
    /// The keys, checked.
    pub fn keys(&self) -> anyhow::Result<auth::Keys> {
        auth::Keys::from_config(&self.keys).context("auth.keys")
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

impl Default for Streams {
    fn default() -> Self {
        let d = hub::HubConfig::default();
        Streams {
            on_conflict: d.on_conflict,
            reader_queue: d.reader_queue,
            whip_prefer_h264: true,
            max_streams: d.max_streams,
            gop_cache_bytes: d.max_gop_bytes,
        }
    }
}

impl Default for Rtmp {
    fn default() -> Self {
        Rtmp {
            enabled: true,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 1935)),
            transcode_audio: true,
            max_connections: 256,
        }
    }
}

impl Default for Media {
    fn default() -> Self {
        Media {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 50000,
            shards: 0,
            public_ips: Vec::new(),
            ice_tcp: true,
            gso: true,
        }
    }
}

impl Default for Rooms {
    fn default() -> Self {
        let d = sfu::SfuConfig::default();
        Rooms {
            max_rooms: d.max_rooms,
            max_participants: d.max_participants_per_room,
            max_tracks_per_participant: d.max_tracks_per_participant,
            max_tracks_per_room: d.max_tracks_per_room,
            reconnect_grace_secs: d.reconnect_grace.as_secs(),
            max_data_bytes: d.max_data_bytes,
            max_signal_bytes: d.max_signal_bytes,
            keyframe_interval_ms: d.keyframe_min_interval.as_millis() as u64,
            p2p_rooms: d.p2p_rooms,
            max_p2p_participants: d.max_participants_per_p2p_room,
            bandwidth_allocation: d.bandwidth_allocation,
            dynacast: d.dynacast,
            opus_dtx: d.opus_dtx,
        }
    }
}

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let base = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<Config>(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => Config::default(),
        };
        let config = base.with_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `ONAIR_<SECTION>_<KEY>` overrides read through `get`.
    pub fn with_env(self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let mut value = toml::Value::try_from(&self)?;
        let Some(sections) = value.as_table_mut() else {
            bail!("config is not a table");
        };
        for (section, keys) in sections.iter_mut() {
            let Some(keys) = keys.as_table_mut() else {
                continue;
            };
            for (key, v) in keys.iter_mut() {
                let var = format!("ONAIR_{}_{}", section, key).to_uppercase();
                if let Some(text) = get(&var) {
                    *v = parse_env_value(&text, v).with_context(|| format!("{var}={text:?}"))?;
                }
            }
        }
        value
            .try_into()
            .context("environment overrides do not fit the configuration")
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.auth.keys()?;
        if !self.webhooks.urls.is_empty() && self.webhooks.secret.is_empty() {
            bail!(
                "webhooks.urls is set but webhooks.secret is empty: receivers could not tell our events from anyone's"
            );
        }
        for u in &self.webhooks.urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                bail!("webhooks.urls: {u:?} is not an http:// or https:// URL");
            }
        }
        let ip = self.http.listen.ip();
        if self.auth.keys.is_empty() && !ip.is_loopback() && !self.auth.allow_anonymous {
            bail!(
                "http.listen is {} (beyond loopback) and auth.keys is empty: anyone who reaches \
                 it could join any room and publish any stream. Either add a key (`onair keys \
                 generate`, then ONAIR_AUTH_KEYS='{{ main = \"KEY\" }}') and hand out tokens \
                 (`onair token`), or allow it with ONAIR_AUTH_ALLOW_ANONYMOUS=true",
                self.http.listen
            );
        }
        if self.media.public_ips.is_empty() && self.media.bind.is_unspecified() {
            bail!(
                "media.bind is {} but media.public_ips is empty: set the address clients reach \
                 (ONAIR_MEDIA_PUBLIC_IPS='[\"203.0.113.7\"]')",
                self.media.bind
            );
        }
        if self.media.port == 0 {
            bail!("media.port must not be 0: clients need a fixed port through firewalls");
        }
        if usize::from(self.media.port) + self.media_shards() - 1 > usize::from(u16::MAX) {
            bail!(
                "media.port {} + {} shards runs past port 65535",
                self.media.port,
                self.media_shards()
            );
        }
        if self.media.shards > 256 {
            bail!("media.shards {} is more than 256", self.media.shards);
        }
        if let Some(ip) = self.media.public_ips.iter().find(|ip| ip.is_unspecified()) {
            bail!("media.public_ips contains {ip}: list addresses clients can reach");
        }
        if self.http.tls_cert.is_empty() != self.http.tls_key.is_empty() {
            bail!("http.tls_cert and http.tls_key go together: set both or neither");
        }
        let t = &self.turn;
        if t.enabled {
            if let Some(ip) = t.public_ips.iter().find(|ip| ip.is_unspecified()) {
                bail!("turn.public_ips contains {ip}: list addresses clients can reach");
            }
            if t.port == 0 {
                bail!("turn.port must not be 0: clients are given this port in their TURN URLs");
            }
            if t.realm.trim().is_empty() {
                bail!("turn.realm must not be empty: it is part of every long-term credential");
            }
            if t.relay_port_min == 0 || t.relay_port_min > t.relay_port_max {
                bail!(
                    "turn.relay_port_min..turn.relay_port_max ({}..{}) is not a port range",
                    t.relay_port_min,
                    t.relay_port_max
                );
            }
            if let Some(u) = t.users.iter().find(|u| !u.contains(':')) {
                bail!("turn.users entry {u:?} must be \"name:password\"");
            }
            if t.credential_ttl_secs == 0 {
                bail!("turn.credential_ttl_secs must be at least 1");
            }
            if t.tls_cert.is_empty() != t.tls_key.is_empty() {
                bail!("turn.tls_cert and turn.tls_key go together: set both or neither");
            }
            if t.tls_ports.iter().any(|&p| p == 0 || p == t.port) {
                bail!(
                    "turn.tls_ports {:?} must be real ports other than turn.port",
                    t.tls_ports
                );
            }
            if !t.bind_v6.is_empty() && t.bind_v6.parse::<std::net::Ipv6Addr>().is_err() {
                bail!("turn.bind_v6 {:?} is not an IPv6 address", t.bind_v6);
            }
            if t.bind.is_ipv6() {
                bail!("turn.bind is IPv6 ({}); use turn.bind_v6 for IPv6", t.bind);
            }
        }
        if self.hls.dvr_window_s > 4 * 3600 {
            bail!(
                "hls.dvr_window_s ({}) is more than 4 hours: every stream's window is held in \
                 memory (about bitrate × window)",
                self.hls.dvr_window_s
            );
        }
        if self.hls.part_ms * 2 > self.hls.segment_ms {
            bail!(
                "hls.part_ms ({}) must be at most half of hls.segment_ms ({}): a segment holds \
                 several parts",
                self.hls.part_ms,
                self.hls.segment_ms
            );
        }
        if self.recording.enabled && self.recording.dir.trim().is_empty() {
            bail!("recording.dir must not be empty when recording is on");
        }
        let r = &self.rooms;
        for (key, v) in [
            ("rooms.max_rooms", r.max_rooms),
            ("rooms.max_participants", r.max_participants),
            ("rooms.max_p2p_participants", r.max_p2p_participants),
            (
                "rooms.max_tracks_per_participant",
                r.max_tracks_per_participant,
            ),
            ("rooms.max_tracks_per_room", r.max_tracks_per_room),
            ("rooms.max_data_bytes", r.max_data_bytes),
            ("rooms.max_signal_bytes", r.max_signal_bytes),
            ("streams.reader_queue", self.streams.reader_queue),
            ("streams.max_streams", self.streams.max_streams),
            ("rtmp.max_connections", self.rtmp.max_connections),
            ("turn.max_allocations", self.turn.max_allocations),
            ("recording.max_active", self.recording.max_active),
            ("recording.max_dir_gb", self.recording.max_dir_gb as usize),
            (
                "limits.connections_per_ip",
                self.limits.connections_per_ip as usize,
            ),
            (
                "limits.requests_per_second",
                self.limits.requests_per_second as usize,
            ),
            ("limits.request_burst", self.limits.request_burst as usize),
            ("limits.idle_secs", self.limits.idle_secs as usize),
            (
                "limits.auth_deadline_secs",
                self.limits.auth_deadline_secs as usize,
            ),
            (
                "limits.signal_bytes_per_second",
                self.limits.signal_bytes_per_second as usize,
            ),
            (
                "limits.signal_burst_bytes",
                self.limits.signal_burst_bytes as usize,
            ),
            (
                "limits.header_deadline_secs",
                self.limits.header_deadline_secs as usize,
            ),
            ("hls.window_segments", self.hls.window_segments),
            ("hls.segment_ms", self.hls.segment_ms as usize),
            ("hls.part_ms", self.hls.part_ms as usize),
            ("hls.max_block_ms", self.hls.max_block_ms as usize),
            (
                "turn.max_allocations_per_user",
                self.turn.max_allocations_per_user,
            ),
        ] {
            if v == 0 {
                bail!("{key} must be at least 1");
            }
        }
        Ok(())
    }

    /// Addresses advertised in ICE candidates.
    /// How many media shards run: `media.shards`, or one per core.
    pub fn media_shards(&self) -> usize {
        match self.media.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn advertised_ips(&self) -> Vec<IpAddr> {
        if self.media.public_ips.is_empty() {
            vec![self.media.bind]
        } else {
            self.media.public_ips.clone()
        }
    }

    /// The local IPv6 address of TURN's IPv6 listeners and relays, if any.
    pub fn turn_bind_v6(&self) -> Option<IpAddr> {
        self.turn
            .bind_v6
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    }

    /// Addresses clients reach TURN at.
    pub fn turn_ips(&self) -> Vec<IpAddr> {
        if !self.turn.public_ips.is_empty() {
            self.turn.public_ips.clone()
        } else if self.turn.bind.is_unspecified() {
            self.advertised_ips()
        } else if self.media.public_ips.is_empty() {
            vec![self.turn.bind]
        } else {
            self.media.public_ips.clone()
        }
    }

    /// The SFU's settings.
    pub fn sfu(&self) -> sfu::SfuConfig {
        let r = &self.rooms;
        sfu::SfuConfig {
            max_rooms: r.max_rooms,
            max_participants_per_room: r.max_participants,
            max_tracks_per_participant: r.max_tracks_per_participant,
            max_tracks_per_room: r.max_tracks_per_room,
            max_data_bytes: r.max_data_bytes,
            max_signal_bytes: r.max_signal_bytes,
            reconnect_grace: std::time::Duration::from_secs(r.reconnect_grace_secs),
            keyframe_min_interval: std::time::Duration::from_millis(r.keyframe_interval_ms),
            p2p_rooms: r.p2p_rooms.clone(),
            max_participants_per_p2p_room: r.max_p2p_participants,
            bandwidth_allocation: r.bandwidth_allocation,
            dynacast: r.dynacast,
            require_grant: !self.auth.keys.is_empty(),
            opus_dtx: r.opus_dtx,
            whip_prefer_h264: self.streams.whip_prefer_h264
                && (self.hls.enabled || self.recording.enabled),
            hub_layers: self.hls.enabled,
            ..sfu::SfuConfig::default()
        }
    }

    /// Segments kept per stream: the live window, or the DVR window when that is longer
    /// (segments can run a little over `segment_ms`, so one more is kept).
    pub fn hls_window_segments(&self) -> usize {
        let dvr = self.hls.dvr_window_s * 1000;
        let for_dvr = dvr.div_ceil(self.hls.segment_ms.max(1)) as usize + usize::from(dvr > 0);
        self.hls.window_segments.max(for_dvr)
    }

    /// The HLS segmenter's settings.
    pub fn segmenter(&self) -> hls::SegmenterConfig {
        hls::SegmenterConfig {
            target_duration: std::time::Duration::from_millis(self.hls.segment_ms),
            part_duration: std::time::Duration::from_millis(self.hls.part_ms),
            window_segments: self.hls_window_segments(),
            only: None,
            vp8: false,
            keep_every_frame: false,
            layer: None,
        }
    }

    /// The recorder's segmenter: one-second fragments (a kill loses at most that much).
    pub fn recording_segmenter(&self) -> hls::SegmenterConfig {
        hls::SegmenterConfig {
            target_duration: std::time::Duration::from_secs(4),
            part_duration: crate::recording::FRAGMENT,
            window_segments: 2,
            only: None,
            vp8: true,
            keep_every_frame: true,
            layer: None,
        }
    }

    /// The hub's settings.
    pub fn hub(&self) -> hub::HubConfig {
        hub::HubConfig {
            on_conflict: self.streams.on_conflict,
            reader_queue: self.streams.reader_queue,
            max_streams: self.streams.max_streams,
            max_gop_bytes: self.streams.gop_cache_bytes,
        }
    }

    /// The effective configuration as TOML, secrets replaced.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        for v in c.auth.keys.values_mut() {
            *v = "<redacted>".into();
        }
        if !c.turn.secret.is_empty() {
            c.turn.secret = "<redacted>".into();
        }
        if !c.webhooks.secret.is_empty() {
            c.webhooks.secret = "<redacted>".into();
        }
        for u in &mut c.turn.users {
            if let Some((name, _)) = u.split_once(':') {
                *u = format!("{name}:<redacted>");
            }
        }
        toml::to_string(&c).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }

    /// What a production deployment must change, one line each.
    pub fn production_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.advertised_ips().iter().all(|ip| ip.is_loopback()) {
            w.push(
                "media is only reachable on loopback: set media.bind/media.public_ips to the \
                 server's public address for remote clients"
                    .to_owned(),
            );
        }
        if self.media.bind.is_loopback() && self.media.public_ips.iter().any(|ip| !ip.is_loopback())
        {
            w.push(format!(
                "media.bind is {} but media.public_ips advertises {:?}: nothing from outside \
                 reaches a loopback socket; bind 0.0.0.0 or the interface's address",
                self.media.bind, self.media.public_ips
            ));
        }
        if self.turn.enabled
            && self.turn.bind.is_loopback()
            && self.turn_ips().iter().any(|ip| !ip.is_loopback())
        {
            w.push(format!(
                "turn.bind is {} but clients are told to reach TURN at {:?}: bind 0.0.0.0 or \
                 the interface's address",
                self.turn.bind,
                self.turn_ips()
            ));
        }
        if self.turn.enabled
            && self.turn_bind_v6().is_none()
            && self.turn.public_ips.iter().any(IpAddr::is_ipv6)
        {
            w.push(
                "turn.public_ips has an IPv6 address but turn.bind_v6 is empty: nothing listens \
                 there; set turn.bind_v6"
                    .to_owned(),
            );
        }
        if self.http.tls_cert.is_empty() {
            w.push(
                "no TLS: browsers need HTTPS for camera access anywhere but localhost (set \
                 http.tls_cert and http.tls_key, or put a TLS proxy in front)"
                    .to_owned(),
            );
        }
        if self.auth.keys.is_empty() {
            w.push(
                "auth is off: anyone who can reach this server can join any room and publish \
                 any stream (set auth.keys: `onair keys generate`)"
                    .to_owned(),
            );
        }
        w
    }
}

/// `ONAIR_…` variables in `vars` that name no configuration key (a typo would otherwise be
/// silently ignored). Variables the tools use (`ONAIR_CONFIG`, test settings) are not keys.
pub fn unknown_env_vars(vars: impl Iterator<Item = String>) -> Vec<String> {
    let Ok(toml::Value::Table(sections)) = toml::Value::try_from(Config::default()) else {
        return Vec::new();
    };
    let known: Vec<String> = sections
        .iter()
        .flat_map(|(section, keys)| {
            keys.as_table()
                .into_iter()
                .flat_map(|t| t.keys())
                .map(move |k| format!("ONAIR_{section}_{k}").to_uppercase())
        })
        .collect();
    vars.filter(|v| v.starts_with("ONAIR_"))
        .filter(|v| v != "ONAIR_CONFIG" && !v.starts_with("ONAIR_E2E_") && v != "ONAIR_BIN")
        .filter(|v| !known.contains(v))
        .collect()
}

/// Parses an environment value as the TOML type of the key it replaces, so that
/// `ONAIR_MEDIA_PORT=5000` is a number and `ONAIR_HTTP_LISTEN=0.0.0.0:80` a string.
fn parse_env_value(text: &str, current: &toml::Value) -> anyhow::Result<toml::Value> {
    if current.is_str() {
        return Ok(toml::Value::String(text.to_owned()));
    }
    let doc: toml::Table = toml::from_str(&format!("v = {text}"))?;
    doc.get("v").cloned().context("no value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_every_kind_of_key() {
        let env = |k: &str| match k {
            "ONAIR_HTTP_LISTEN" => Some("0.0.0.0:9000".to_owned()),
            "ONAIR_MEDIA_PORT" => Some("40000".to_owned()),
            "ONAIR_MEDIA_ICE_TCP" => Some("false".to_owned()),
            "ONAIR_MEDIA_PUBLIC_IPS" => Some(r#"["192.0.2.1"]"#.to_owned()),
            "ONAIR_ROOMS_RECONNECT_GRACE_SECS" => Some("3".to_owned()),
            "ONAIR_STREAMS_ON_CONFLICT" => Some("takeover".to_owned()),
            "ONAIR_RTMP_LISTEN" => Some("127.0.0.1:1936".to_owned()),
            _ => None,
        };
        let c = Config::default().with_env(env).unwrap();
        assert_eq!(c.http.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(c.media.port, 40000);
        assert!(!c.media.ice_tcp);
        assert_eq!(
            c.media.public_ips,
            vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.rooms.reconnect_grace_secs, 3);
        assert_eq!(c.streams.on_conflict, hub::ConflictPolicy::Takeover);
        assert_eq!(c.rtmp.listen.port(), 1936);
    }

    #[test]
    fn bad_env_values_are_named() {
        let env = |k: &str| (k == "ONAIR_MEDIA_PORT").then(|| "lots".to_owned());
        let e = Config::default().with_env(env).unwrap_err();
        assert!(format!("{e:#}").contains("ONAIR_MEDIA_PORT"), "{e:#}");
    }

    #[test]
    fn files_with_unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("[http]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").is_err());
        let c: Config = toml::from_str("[rooms]\nmax_participants = 3\n").unwrap();
        assert_eq!(c.rooms.max_participants, 3);
        assert_eq!(c.http.listen.port(), 8080);
    }

    #[test]
    fn misspelt_env_vars_are_found() {
        let vars = [
            "ONAIR_MEDIA_PORT",
            "ONAIR_MEDIA_PROT",
            "ONAIR_CONFIG",
            "PATH",
        ];
        let unknown = unknown_env_vars(vars.iter().map(|s| s.to_string()));
        assert_eq!(unknown, vec!["ONAIR_MEDIA_PROT".to_string()]);
    }

    #[test]
    fn bad_values_are_refused() {
        let mut c = Config::default();
        c.rooms.max_participants = 0;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.media.public_ips = vec!["0.0.0.0".parse().unwrap()];
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.turn.port = 0;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.turn.relay_port_min = 60000;
        c.turn.relay_port_max = 50000;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.turn.users = vec!["nopassword".into()];
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.http.tls_cert = "/etc/onair/cert.pem".into();
        let e = c.validate().expect_err("a certificate without its key");
        assert!(e.to_string().contains("http.tls_key"), "{e}");
        let mut c = Config::default();
        c.hls.dvr_window_s = 5 * 3600;
        assert!(c.validate().is_err());
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn a_dvr_window_keeps_enough_segments() {
        let mut c = Config::default();
        assert_eq!(c.hls_window_segments(), 15);
        c.hls.dvr_window_s = 1800; // 30 minutes of 2 s segments, and one spare
        assert_eq!(c.hls_window_segments(), 901);
        c.hls.dvr_window_s = 10; // shorter than the live window: the live window stands
        assert_eq!(c.hls_window_segments(), 15);
    }

    #[test]
    fn secrets_are_redacted() {
        let mut c = Config::default();
        c.auth
            .keys
            .insert("main".into(), format!("hunter2{}", "A".repeat(40)));
        c.turn.secret = "sesame".into();
        c.turn.users = vec!["alice:wonderland".into()];
        let t = c.redacted_toml();
        assert!(!t.contains("hunter2"));
        assert!(!t.contains("sesame"));
        assert!(!t.contains("wonderland"));
        assert!(t.contains("alice:<redacted>"));
        assert!(t.contains("<redacted>"));
    }
}
