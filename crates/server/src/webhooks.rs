//! Webhooks (issue 19): what happens (rooms, participants, tracks, streams, recordings) is
//! POSTed as JSON to the configured URLs, signed the Standard Webhooks way
//! (<https://www.standardwebhooks.com>, whose libraries verify it in most languages):
//! `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,BASE64(HMAC-SHA256(secret,
//! "ID.TIMESTAMP.BODY"))`; the timestamp lets a receiver refuse replays.
//!
//! Nothing here may slow media: events go into a bounded queue with `try_send` (a full queue
//! drops the event and counts it); one task per receiver sends them in order, retrying a
//! failed delivery with backoff (1 s, 2 s, 4 s … 60 s) up to `webhooks.max_attempts` times, so
//! a receiver that is down gets them when it comes back; one that never answers holds only
//! its own queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Deliveries a receiver answered 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: AtomicU64,
    /// Events given up on (queue full, or every attempt failed).
    pub dropped: AtomicU64,
}

/// Where events go. Cheap to clone; `send` never waits.
#[derive(Clone)]
pub struct Webhooks {
    receivers: Arc<[mpsc::Sender<Arc<Delivery>>]>,
    secret: Arc<[u8]>,
    pub counters: Arc<WebhookCounters>,
}

/// One event, signed once for every receiver.
struct Delivery {
    id: String,
    timestamp: u64,
    body: Bytes,
    signature: String,
}

/// The settings (`webhooks.*`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub urls: Vec<String>,
    pub secret: String,
    pub queue: usize,
    pub max_attempts: u32,
    pub timeout: Duration,
}

/// The Standard Webhooks signature of `body`: base64 of HMAC-SHA256 over `ID.TIMESTAMP.BODY`.
pub fn sign(secret: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length: the error arm cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The secret's bytes: a `whsec_` secret (as Standard Webhooks libraries make them) is base64
/// after the prefix; anything else is used as it is.
fn secret_bytes(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

impl Webhooks {
    /// No receivers: events go nowhere.
    pub fn none() -> Webhooks {
        Webhooks {
            receivers: Arc::from(Vec::new()),
            secret: Arc::from(Vec::new()),
            counters: Arc::default(),
        }
    }

    /// One sending task per URL.
    pub fn start(settings: Settings) -> Webhooks {
        let counters = Arc::new(WebhookCounters::default());
        let receivers: Vec<_> = settings
            .urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(settings.queue.max(1));
                tokio::spawn(deliver_all(
                    url.clone(),
                    rx,
                    settings.max_attempts.max(1),
                    settings.timeout,
                    counters.clone(),
                ));
                tx
            })
            .collect();
        Webhooks {
            receivers: Arc::from(receivers),
            secret: Arc::from(secret_bytes(&settings.secret)),
            counters,
        }
    }

    /// Whether any receiver is configured.
    pub fn enabled(&self) -> bool {
        !self.receivers.is_empty()
    }

    /// Queues `event` (its type) with `fields` for every receiver; never waits.
    pub fn send(&self, event: &str, fields: Value) {
        if !self.enabled() {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!("evt_{:x}{:08x}", now.as_micros(), fastrand::u32(..));
        let mut body = json!({ "id": id, "event": event, "created_at": now.as_millis() as u64 });
        if let (Some(b), Value::Object(f)) = (body.as_object_mut(), fields) {
            b.extend(f);
        }
        let body = Bytes::from(body.to_string());
        let delivery = Arc::new(Delivery {
            signature: sign(&self.secret, &id, now.as_secs(), &body),
            id,
            timestamp: now.as_secs(),
            body,
        });
        for tx in self.receivers.iter() {
            if tx.try_send(delivery.clone()).is_err() {
                self.counters.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Turns the SFU's events into room webhooks: `room_started`/`room_finished` (first member in,
/// last out), `participant_joined`/`participant_left`, `track_published`/`track_unpublished`
/// (a member's announced tracks, compared with the last list).
#[derive(Default)]
pub struct RoomEvents {
    members: std::collections::HashMap<sfu::ParticipantId, (String, String)>,
    rooms: std::collections::HashMap<String, usize>,
    tracks: std::collections::HashMap<sfu::ParticipantId, Vec<sfu::signal::TrackInfo>>,
}

impl RoomEvents {
    pub fn on_sfu(&mut self, hooks: &Webhooks, e: &sfu::SfuEvent) {
        if !hooks.enabled() {
            return;
        }
        match e {
            sfu::SfuEvent::MemberJoined {
                participant,
                room,
                name,
            } => {
                let n = self.rooms.entry(room.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    hooks.send("room_started", json!({ "room": room }));
                }
                self.members
                    .insert(*participant, (room.clone(), name.clone()));
                hooks.send(
                    "participant_joined",
                    json!({ "room": room, "participant": { "id": participant.to_string(), "name": name } }),
                );
            }
            sfu::SfuEvent::MemberLeft { participant } => {
                let Some((room, name)) = self.members.remove(participant) else {
                    return;
                };
                for t in self.tracks.remove(participant).unwrap_or_default() {
                    hooks.send("track_unpublished", track_fields(&room, &name, &t));
                }
                hooks.send(
                    "participant_left",
                    json!({ "room": room, "participant": { "id": participant.to_string(), "name": name } }),
                );
                let gone = self.rooms.get_mut(&room).is_some_and(|n| {
                    *n -= 1;
                    *n == 0
                });
                if gone {
                    self.rooms.remove(&room);
                    hooks.send("room_finished", json!({ "room": room }));
                }
            }
            sfu::SfuEvent::TracksChanged {
                participant,
                tracks,
            } => {
                let Some((room, name)) = self.members.get(participant).cloned() else {
                    return; // a WHIP publisher: its stream's events say it
                };
                let before = self.tracks.remove(participant).unwrap_or_default();
                for t in tracks
                    .iter()
                    .filter(|t| !before.iter().any(|b| b.id == t.id))
                {
                    hooks.send("track_published", track_fields(&room, &name, t));
                }
                for t in before
                    .iter()
                    .filter(|b| !tracks.iter().any(|t| t.id == b.id))
                {
                    hooks.send("track_unpublished", track_fields(&room, &name, t));
                }
                self.tracks.insert(*participant, tracks.clone());
            }
            _ => {}
        }
    }
}

fn track_fields(room: &str, name: &str, t: &sfu::signal::TrackInfo) -> Value {
    json!({
        "room": room,
        "participant": { "id": t.participant_id.to_string(), "name": name },
        "track": { "id": t.id.to_string(), "kind": t.kind, "source": t.source, "codec": t.codec },
    })
}

/// Sends `stream_started`/`stream_ended` for every hub stream (any protocol), until the hub
/// goes.
pub async fn watch_streams(hooks: Webhooks, hub: hub::Hub) {
    if !hooks.enabled() {
        return;
    }
    let mut events = hub.events();
    loop {
        match events.recv().await {
            Ok(hub::HubEvent::Started(name, protocol)) => hooks.send(
                "stream_started",
                json!({ "stream": name.to_string(), "protocol": protocol }),
            ),
            Ok(hub::HubEvent::Ended(name)) => {
                hooks.send("stream_ended", json!({ "stream": name.to_string() }));
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                hooks.counters.dropped.fetch_add(n, Relaxed);
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends one receiver's events in order, each until it is delivered or its attempts run out.
async fn deliver_all(
    url: String,
    mut rx: mpsc::Receiver<Arc<Delivery>>,
    max_attempts: u32,
    timeout: Duration,
    counters: Arc<WebhookCounters>,
) {
    while let Some(d) = rx.recv().await {
        let mut backoff = Duration::from_secs(1);
        let mut attempt = 1;
        loop {
            match tokio::time::timeout(timeout, post(&url, &d)).await {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    counters.delivered.fetch_add(1, Relaxed);
                    break;
                }
                Ok(Ok(status)) => debug!(url, id = d.id, status, attempt, "webhook refused"),
                Ok(Err(e)) => debug!(url, id = d.id, attempt, "webhook failed: {e}"),
                Err(_) => debug!(url, id = d.id, attempt, "webhook timed out"),
            }
            counters.failed_attempts.fetch_add(1, Relaxed);
            if attempt >= max_attempts {
                counters.dropped.fetch_add(1, Relaxed);
                warn!(url, id = d.id, "webhook given up after {attempt} attempts");
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
            attempt += 1;
        }
    }
}

/// POSTs `d` to `url`; the status it got.
async fn post(url: &str, d: &Delivery) -> anyhow::Result<u16> {
    let uri: hyper::Uri = url.parse()?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => anyhow::bail!("not an http(s) URL"),
    };
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("no host"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    let _ = tcp.set_nodelay(true);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    if https {
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())?;
        let tls = tls_connector().connect(name, tcp).await?;
        send(tls, &authority, &path, d).await
    } else {
        send(tcp, &authority, &path, d).await
    }
}

async fn send<S>(io: S, authority: &str, path: &str, d: &Delivery) -> anyhow::Result<u16>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    // The connection is driven beside the request and dropped with it: a receiver that never
    // answers (or never closes) must not keep a task and a socket per attempt.
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("onair/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", d.timestamp.to_string())
        .header("webhook-signature", &d.signature)
        .body(Full::new(d.body.clone()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    // Read (and drop) the answer so the connection ends cleanly.
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// Aborts its task when dropped (a timed-out attempt drops the future holding it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// TLS to receivers, with the Mozilla roots (webpki-roots).
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The Standard Webhooks specification's example: secret
        // whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, id msg_p5jXN8AQM9LWM0D4loKWxJek, timestamp
        // 1614265330, body {"test": 2432232314}.
        let secret = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
