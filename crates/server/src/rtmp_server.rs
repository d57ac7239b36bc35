//! RTMP ingest: a TCP listener (1935 by default) and one task per connection driving an
//! `rtmp::Session`. `rtmp://HOST/APP/KEY` publishes hub stream `APP/KEY`. With
//! `rtmp.transcode_audio`, AAC is also decoded and encoded to Opus once per stream, as an extra
//! track, so WebRTC viewers hear it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hub::{Codec, Frame, Hub, Protocol, Publisher, StreamName, TrackInfo};
use rtmp::{Event, Output, Session, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::Config;

/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(30);

/// Binds the RTMP port and accepts connections until the process ends.
pub async fn start(config: &Config, hub: Hub) -> anyhow::Result<Option<SocketAddr>> {
    if !config.rtmp.enabled {
        return Ok(None);
    }
    let listener = TcpListener::bind(config.rtmp.listen)
        .await
        .with_context(|| format!("binding RTMP {}", config.rtmp.listen))?;
    let addr = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(config.rtmp.max_connections));
    let transcode = config.rtmp.transcode_audio;
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
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                warn!(%peer, "RTMP connection refused: rtmp.max_connections reached");
                continue; // dropping the stream closes it
            };
            let hub = hub.clone();
            tokio::spawn(async move {
                let mut conn = Connection::new(hub, transcode);
                match conn.run(stream).await {
                    Ok(()) => debug!(%peer, "RTMP connection closed"),
                    Err(e) => warn!(%peer, "RTMP connection closed: {e}"),
                }
                drop(slot);
            });
        }
    });
    Ok(Some(addr))
}

/// AAC → Opus for one stream: the AAC track's index, the Opus twin's, and the transcoder.
struct AudioTwin {
    aac: usize,
    opus: usize,
    transcoder: transcode::AacToOpus,
    errors: u64,
}

struct Connection {
    hub: Hub,
    transcode: bool,
    session: Session,
    publisher: Option<Publisher>,
    twin: Option<AudioTwin>,
}

impl Connection {
    fn new(hub: Hub, transcode: bool) -> Connection {
        Connection {
            hub,
            transcode,
            session: Session::new(SessionConfig::default()),
            publisher: None,
            twin: None,
        }
    }

    async fn run(&mut self, mut socket: TcpStream) -> anyhow::Result<()> {
        let _ = socket.set_nodelay(true);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let kicked = async {
                match &self.publisher {
                    Some(p) => p.kicked().await,
                    None => std::future::pending().await,
                }
            };
            let n = tokio::select! {
                r = tokio::time::timeout(IDLE, socket.read(&mut buf)) => match r {
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => anyhow::bail!("silent for {IDLE:?}"),
                },
                _ = kicked => {
                    info!("RTMP publisher ended: another publisher took its stream name");
                    return Ok(());
                }
            };
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
                            self.session.accept_publish(request)?;
                        }
                        Err(reason) => {
                            warn!("RTMP publish of {app}/{key} refused: {reason}");
                            self.session.reject_publish(request, &reason)?;
                        }
                    }
                }
                Output::Event(Event::Tracks(tracks)) => self.set_tracks(tracks),
                Output::Event(Event::Frame(f)) => self.push(f),
                Output::Event(Event::PublishEnded) => {
                    if let Some(p) = self.publisher.take() {
                        info!(stream = %p.name(), "RTMP publish ended");
                    }
                    self.twin = None;
                }
                Output::Event(_) => {}
            }
        }
        Ok(())
    }

    fn claim(&self, app: &str, key: &str) -> Result<Publisher, String> {
        if self.publisher.is_some() {
            return Err("this connection already publishes a stream".into());
        }
        let name = StreamName::parse(&format!("{app}/{key}"))
            .map_err(|e| format!("'{app}/{key}': {e}"))?;
        // The stream-key check of the auth issue goes here.
        self.hub
            .publish(name, Protocol::Rtmp, Instant::now())
            .map_err(|e| e.to_string())
    }

    fn set_tracks(&mut self, mut tracks: Vec<TrackInfo>) {
        let Some(p) = &self.publisher else { return };
        self.twin = None;
        if self.transcode
            && let Some(aac) = tracks
                .iter()
                .position(|t| t.codec == Codec::Aac && !t.config.is_empty())
        {
            match transcode::AacToOpus::new(&tracks[aac].config, transcode::OpusConfig::default()) {
                Ok(transcoder) => {
                    let mut opus = TrackInfo::new(Codec::Opus);
                    opus.sample_rate = Some(48_000);
                    opus.channels = tracks[aac].channels.map(|c| c.min(2));
                    tracks.push(opus);
                    self.twin = Some(AudioTwin {
                        aac,
                        opus: tracks.len() - 1,
                        transcoder,
                        errors: 0,
                    });
                }
                Err(e) => warn!(stream = %p.name(), "no Opus for WebRTC viewers: {e}"),
            }
        }
        p.set_tracks(tracks);
    }

    fn push(&mut self, frame: Frame) {
        let Some(p) = &self.publisher else { return };
        if let Some(twin) = &mut self.twin
            && frame.track == twin.aac
        {
            match twin.transcoder.push(&frame.data, frame.pts) {
                Ok(packets) => {
                    for o in packets {
                        p.push(Frame {
                            track: twin.opus,
                            pts: o.pts_us,
                            dts: o.pts_us,
                            keyframe: true,
                            data: o.data.into(),
                        });
                    }
                }
                Err(e) => {
                    twin.errors += 1;
                    // One line per burst, not per frame.
                    if twin.errors.is_power_of_two() {
                        warn!(stream = %p.name(), errors = twin.errors, "AAC → Opus: {e}");
                    }
                }
            }
        }
        p.push(frame);
    }
}
