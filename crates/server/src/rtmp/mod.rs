//! RTMP ingest: a TCP listener (1935 by default) and one task per connection driving an
//! `rtmp::Session`. `rtmp://HOST/APP/KEY` publishes hub stream `APP/KEY` (`flv_publish`).

pub mod flv_publish;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hub::{Hub, Protocol};
use rtmp::{Event, Output, Session, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::limits::{Door, Limits};
use crate::rtmp::flv_publish::FlvPublish;

/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// A publisher's read buffer.
const READ_BUFFER: usize = 16 * 1024;

/// Binds the RTMP port and accepts connections until the process ends.
pub async fn start(
    config: &Config,
    hub: Hub,
    keys: Arc<crate::access::Access>,
    limits: Arc<Limits>,
) -> anyhow::Result<Option<SocketAddr>> {
    if !config.rtmp.enabled {
        return Ok(None);
    }
    let listener = TcpListener::bind(config.rtmp.listen)
        .await
        .with_context(|| format!("binding RTMP {}", config.rtmp.listen))?;
    let addr = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(config.rtmp.max_connections));
    let limits = limits.clone();
    let transcode = config.rtmp.transcode_audio;
    let auth_deadline = limits.settings.auth_deadline;
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!("RTMP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // One address may hold only its share (a trickle of bytes from one client must
            // not lock every real publisher out of the global cap).
            let Some(ip_slot) = limits.connect(Door::Rtmp, peer.ip()) else {
                debug!(%peer, "RTMP connection refused: limits.connections_per_ip reached");
                continue; // dropping the stream closes it
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                debug!(%peer, "RTMP connection refused: rtmp.max_connections reached");
                limits
                    .refused
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            };
            let hub = hub.clone();
            let keys = keys.clone();
            tokio::spawn(async move {
                let mut conn = Connection::new(hub, transcode, keys, auth_deadline);
                match conn.run(stream).await {
                    Ok(()) => debug!(%peer, "RTMP connection closed"),
                    // A publisher's failure is worth a warning; a connection that never
                    // published (a scanner, a slowloris) is not: one line per attempt would
                    // let an attacker fill the log.
                    Err(e) if conn.published => warn!(%peer, "RTMP connection closed: {e}"),
                    Err(e) => debug!(%peer, "RTMP connection closed: {e}"),
                }
                drop((slot, ip_slot));
            });
        }
    });
    Ok(Some(addr))
}

struct Connection {
    hub: Hub,
    transcode: bool,
    /// Token keys (`auth.keys`): a publish needs a token (`name?token=…`) when there are any.
    keys: Arc<crate::access::Access>,
    session: Session,
    publisher: Option<FlvPublish>,
    /// It published at some point.
    published: bool,
    /// `limits.auth_deadline_secs`: publishing by then, or closed.
    auth_deadline: Duration,
}

impl Connection {
    fn new(
        hub: Hub,
        transcode: bool,
        keys: Arc<crate::access::Access>,
        auth_deadline: Duration,
    ) -> Connection {
        Connection {
            hub,
            transcode,
            keys,
            session: Session::new(SessionConfig::default()),
            publisher: None,
            published: false,
            auth_deadline,
        }
    }

    async fn run(&mut self, mut socket: TcpStream) -> anyhow::Result<()> {
        let _ = socket.set_nodelay(true);
        // Small until it publishes: a thousand connections that never do (a scan, an attack)
        // must not cost 64 KiB each.
        let mut buf = vec![0u8; 4 * 1024];
        // Until it publishes, a connection has `limits.auth_deadline_secs` in all (handshake,
        // connect, publish with its token: OBS and FFmpeg take well under a second), however
        // it trickles its bytes; then `IDLE` between reads.
        let publish_deadline = self.auth_deadline;
        let publish_by = tokio::time::Instant::now() + publish_deadline;
        loop {
            let wait = if self.publisher.is_some() {
                IDLE
            } else {
                publish_by.saturating_duration_since(tokio::time::Instant::now())
            };
            // The hub's publisher alone is borrowed (the transcoder in FlvPublish is not Sync).
            let publisher = self.publisher.as_ref().map(FlvPublish::publisher);
            let kicked = async move {
                match publisher {
                    Some(p) => p.kicked().await,
                    None => std::future::pending().await,
                }
            };
            let n = tokio::select! {
                r = tokio::time::timeout(wait, socket.read(&mut buf)) => match r {
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) if self.publisher.is_some() => anyhow::bail!("silent for {IDLE:?}"),
                    Err(_) => anyhow::bail!("not publishing {publish_deadline:?} after connecting"),
                },
                _ = kicked => {
                    info!("RTMP publisher ended: another publisher took its stream name");
                    return Ok(());
                }
            };
            // A publisher's reads: 16 KiB is a dozen frames of 720p30 audio and video per
            // call; more only sits in memory (64 KiB: 48 KiB more per publisher) for no fewer
            // calls. (The session parses straight from it and keeps only a chunk a read
            // ends inside.) A timer and a takeover signal armed once per connection instead
            // of per read were measured: no change in the relay's CPU beyond the spread.
            if self.publisher.is_some() && buf.len() < READ_BUFFER {
                buf.resize(READ_BUFFER, 0);
            }
            let result = self.session.handle_input(&buf[..n]);
            let mut out = Vec::new();
            self.drain(&mut out)?;
            if !out.is_empty() {
                socket.write_all(&out).await?;
            }
            result?;
        }
    }

    /// Carries out everything the session queued; bytes for the client go into `out`.
    fn drain(&mut self, out: &mut Vec<u8>) -> anyhow::Result<()> {
        while let Some(o) = self.session.poll_output() {
            match o {
                Output::Send(bytes) => out.extend_from_slice(&bytes),
                Output::Event(Event::PublishRequested { request, app, key }) => {
                    match self.claim(&app, &key) {
                        Ok(p) => {
                            info!(stream = %p.name(), "RTMP publish started");
                            self.publisher = Some(p);
                            self.published = true;
                            self.session.accept_publish(request)?;
                        }
                        Err(reason) => {
                            let (name, _) = crate::access::split_token(&key);
                            warn!("RTMP publish of {app}/{name} refused: {reason}");
                            self.session.reject_publish(request, &reason)?;
                        }
                    }
                }
                Output::Event(Event::Tracks(tracks)) => {
                    if let Some(p) = &mut self.publisher {
                        p.set_tracks(tracks);
                    }
                }
                Output::Event(Event::Frame(f)) => {
                    if let Some(p) = &mut self.publisher {
                        p.push(f);
                    }
                }
                Output::Event(Event::PublishEnded) => {
                    if let Some(p) = self.publisher.take() {
                        info!(stream = %p.name(), "RTMP publish ended");
                    }
                }
                Output::Event(_) => {}
            }
        }
        Ok(())
    }

    fn claim(&self, app: &str, key: &str) -> Result<FlvPublish, String> {
        if self.publisher.is_some() {
            return Err("this connection already publishes a stream".into());
        }
        FlvPublish::claim(
            &self.hub,
            app,
            key,
            Protocol::Rtmp,
            self.transcode,
            &self.keys,
            None,
        )
    }
}
