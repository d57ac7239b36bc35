//! `GET /rtws/APP` upgraded to a WebSocket speaking RTWebSocket. Two media mappings, told
//! apart by the metadata of the first flow the client opens:
//! - TC (`rtmp::tc`): RTMP messages, for the reference RTWebSocket players and ours;
//! - CMAF (`rtws_cmaf`): onair's per-track fMP4 for Media Source Extensions.
//!
//! Either way a player plays hub stream `APP/KEY` over prioritized flows whose stale frames
//! are abandoned instead of queued. Over TC a client may also publish `APP/KEY` (a browser with
//! WebCodecs where WebRTC is blocked).
//!
//! One task per connection: WebSocket messages go into the session, the hub reader's items go
//! in as tracks and frames, and whatever the session lets out (windows, congestion limit,
//! priorities) goes to the socket. A client that stops reading stalls only this task: its hub
//! reader falls behind and skips to the next keyframe, and the session's deadlines abandon
//! what was queued, so nothing grows.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use hub::{Hub, Item, Protocol, StreamName};
use rtmp::tc::{TcEvent, TcSession};
use tracing::{debug, info, warn};

use crate::access::{self, Access, StreamAction};
use crate::rtmp::flv_publish::FlvPublish;
use crate::ws::rtws_cmaf::{CmafEvent, CmafSession};

/// The largest WebSocket message accepted: a fragment is 1400 bytes; anything much larger is
/// not RTWebSocket.
const MAX_WS_MESSAGE: usize = 64 * 1024;

/// Messages waiting for a client's acks before it is let go (~30 s of 30 fps video and audio).
const MAX_BACKLOG: usize = 2048;

/// The WebSocket's read buffer: tungstenite's default (128 KiB, allocated up front) was most
/// of what a viewer cost; a player sends acks, a publisher 1400-byte fragments.
pub const WS_READ_BUFFER: usize = 8 * 1024;
/// Writes are flushed past this (each of our messages is flushed anyway).
pub const WS_WRITE_BUFFER: usize = 16 * 1024;

/// The `/rtws/APP` route; `transcode` is `rtmp.transcode_audio` (for publishes).
/// `deadline`: `limits.auth_deadline_secs`, by which a connection must play or publish.
pub fn router(hub: Hub, transcode: bool, access: Arc<Access>, deadline: Duration) -> Router {
    Router::new()
        .route("/rtws/{*app}", get(upgrade))
        .with_state((hub, transcode, access, deadline))
}

async fn upgrade(
    ws: WebSocketUpgrade,
    Path(app): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    State((hub, transcode, access, deadline)): State<(Hub, bool, Arc<Access>, Duration)>,
) -> Response {
    // `/rtws/APP?token=…`: an access token for what the connection publishes or plays (it
    // may also come in the stream name, as for RTMP, or in TC's `connect`).
    let url_token = access::query_token(query.as_deref()).map(str::to_owned);
    ws.max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .on_upgrade(move |socket| {
            let ctx = Ctx {
                hub,
                transcode,
                access,
                url_token,
                deadline,
            };
            session(socket, app, ctx)
        })
}

/// The app a client connected to: `connect`'s, or else the URL's. A client that takes its app
/// from the URL's path, as the reference `tcconn.js` does, names `rtws/APP?QUERY`: the route
/// and the query are not part of the app.
fn app_of<'a>(connect_app: &'a str, url_app: &'a str) -> &'a str {
    let app = connect_app.split('?').next().unwrap_or_default();
    let app = app.strip_prefix("rtws/").unwrap_or(app);
    if app.is_empty() { url_app } else { app }
}

/// The stream a play names: `APP/KEY`.
fn stream_name(app: &str, url_app: &str, key: &str) -> Option<StreamName> {
    let app = app_of(app, url_app);
    StreamName::parse(&format!(
        "{}/{}",
        app.trim_matches('/'),
        key.trim_matches('/')
    ))
    .ok()
}

/// Wall-clock microseconds since the UNIX epoch.
fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What the IO loop needs of a mapping.
trait Mapping {
    /// One binary WebSocket message; Err closes the connection with the reason.
    fn receive(&mut self, now: Instant, bytes: &[u8]) -> Result<(), String>;
    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
    /// The reader of the stream being played.
    fn reader(&mut self) -> Option<&mut hub::Reader>;
    /// An item of that reader (`None`: the stream ended).
    fn item(&mut self, now: Instant, item: Option<Item>);
    /// Acts on the session's events (plays found or not in the hub).
    fn act(&mut self, now: Instant, hub: &Hub, url_app: &str);
    /// Messages waiting on the connection (see `rtws::Connection::backlog`).
    fn backlog(&self) -> usize;
    /// Resolves when another publisher took the name this connection publishes.
    fn kicked(&self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        None
    }
    /// That happened.
    fn on_kicked(&mut self, _now: Instant) {}
    /// It plays or publishes a stream (or did).
    fn started(&self) -> bool;
}

/// The TC mapping: the stream it plays (stream ID, reader), the one it publishes.
struct Tc {
    tc: TcSession,
    playing: Option<(u32, hub::Reader)>,
    publishing: Option<(u32, FlvPublish)>,
    /// `rtmp.transcode_audio`: an Opus twin of a published AAC track.
    transcode: bool,
    /// Token policy: a publish or a play needs a token granting its name when there are keys.
    access: Arc<Access>,
    /// The token of the WebSocket URL (`?token=`), if any.
    url_token: Option<String>,
}

impl Tc {
    /// The access token this connection brought for a play or publish whose name had
    /// `query`: the name's `token=`, the WebSocket URL's, `connect`'s `tcUrl` query, or a
    /// `connect` argument shaped like a JWT (the reference client sends `connect(url, {},
    /// TOKEN)`, or a URL's user info, as arguments).
    fn token(&self, query: Option<&str>) -> Option<String> {
        let tc_url_query = self
            .tc
            .tc_url()
            .and_then(|u| u.split_once('?'))
            .map(|(_, q)| q);
        access::query_token(query)
            .or(self.url_token.as_deref())
            .or(access::query_token(tc_url_query))
            .or(self
                .tc
                .connect_args()
                .iter()
                .map(String::as_str)
                .find(|a| a.matches('.').count() == 2))
            .map(str::to_owned)
    }

    /// The reader for a play of `name`, if the token allows it and the stream is live; why
    /// not, for `NetStream.Play.Failed`.
    fn open_play(
        &self,
        hub: &Hub,
        app: &str,
        url_app: &str,
        name: &str,
        query: Option<&str>,
    ) -> Result<(StreamName, hub::Reader), PlayError> {
        let not_live = || PlayError::NotLive(format!("{app}/{name} is not live"));
        let n = stream_name(app, url_app, name).ok_or_else(not_live)?;
        let token = self.token(query);
        self.access
            .check_stream(token.as_deref(), n.as_str(), StreamAction::Play)
            .map_err(|d| PlayError::Refused(d.message().to_owned()))?;
        let reader = hub.subscribe(&n, Protocol::Rtws).ok_or_else(not_live)?;
        Ok((n, reader))
    }
}

/// Why a TC play did not start.
enum PlayError {
    /// No token, or one without the grant.
    Refused(String),
    /// No such stream live.
    NotLive(String),
}

impl Mapping for Tc {
    fn started(&self) -> bool {
        self.playing.is_some() || self.publishing.is_some()
    }
    fn kicked(&self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        self.publishing
            .as_ref()
            .map(|(_, p)| Box::pin(p.publisher().kick_signal()) as _)
    }
    fn on_kicked(&mut self, now: Instant) {
        if let Some((sid, p)) = self.publishing.take() {
            let reason = format!("another publisher took {}", p.name());
            info!(stream = %p.name(), "RTWebSocket publisher ended: {reason}");
            self.tc.publish_failed(now, sid, &reason);
        }
    }
    fn receive(&mut self, now: Instant, bytes: &[u8]) -> Result<(), String> {
        self.tc.receive(now, bytes).map_err(|e| e.to_string())
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.tc.poll_transmit(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.tc.poll_timeout()
    }
    fn backlog(&self) -> usize {
        self.tc.connection().backlog()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.tc.handle_timeout(now);
    }
    fn reader(&mut self) -> Option<&mut hub::Reader> {
        self.playing.as_mut().map(|(_, r)| r)
    }
    fn item(&mut self, now: Instant, item: Option<Item>) {
        let Some(sid) = self.playing.as_ref().map(|(s, _)| *s) else {
            return;
        };
        match item {
            Some(Item::Tracks(t)) => self.tc.tracks(now, sid, t),
            Some(Item::Frame(f)) => self.tc.frame(now, sid, &f),
            None => {
                debug!(stream_id = sid, "RTWebSocket: the stream ended");
                self.tc.play_ended(now, sid, "the stream ended");
                self.playing = None;
            }
        }
    }
    fn act(&mut self, now: Instant, hub: &Hub, url_app: &str) {
        while let Some(ev) = self.tc.poll_event() {
            match ev {
                TcEvent::Play {
                    stream_id,
                    app,
                    name,
                    query,
                } => match self.open_play(hub, &app, url_app, &name, query.as_deref()) {
                    Ok((n, reader)) => {
                        debug!(stream = %n, stream_id, "RTWebSocket play");
                        // One play per connection: another stream ID's play ends.
                        if let Some((old, _)) = self.playing.take()
                            && old != stream_id
                        {
                            self.tc.play_ended(now, old, "another play replaced it");
                        }
                        self.tc.play_started(now, stream_id, &n.to_string());
                        self.playing = Some((stream_id, reader));
                    }
                    Err(PlayError::Refused(reason)) => {
                        self.tc.play_refused(now, stream_id, &reason);
                    }
                    Err(PlayError::NotLive(reason)) => {
                        self.tc.play_failed(now, stream_id, &reason);
                    }
                },
                TcEvent::Stop { stream_id } => {
                    if self.playing.as_ref().is_some_and(|(s, _)| *s == stream_id) {
                        self.playing = None;
                    }
                }
                TcEvent::Publish {
                    stream_id,
                    app,
                    name,
                    query,
                } => {
                    let token = self.token(query.as_deref());
                    let app = app_of(&app, url_app);
                    let claimed = if self.publishing.is_some() {
                        Err("this connection already publishes a stream".to_owned())
                    } else {
                        FlvPublish::claim(
                            hub,
                            app,
                            &name,
                            Protocol::Rtws,
                            self.transcode,
                            &self.access,
                            token.as_deref(),
                        )
                    };
                    match claimed {
                        Ok(p) => {
                            info!(stream = %p.name(), "RTWebSocket publish started");
                            self.tc
                                .publish_started(now, stream_id, &p.name().to_string());
                            self.publishing = Some((stream_id, p));
                        }
                        Err(reason) => {
                            warn!("RTWebSocket publish of {app}/{name} refused: {reason}");
                            self.tc.publish_failed(now, stream_id, &reason);
                        }
                    }
                }
                TcEvent::Media { stream_id, event } => {
                    let Some((_, p)) = self.publishing.as_mut().filter(|(s, _)| *s == stream_id)
                    else {
                        continue;
                    };
                    match event {
                        rtmp::Event::Tracks(t) => p.set_tracks(t),
                        rtmp::Event::Frame(f) => p.push(f),
                        _ => {}
                    }
                }
                TcEvent::Unpublish { stream_id } => {
                    if self
                        .publishing
                        .as_ref()
                        .is_some_and(|(s, _)| *s == stream_id)
                        && let Some((_, p)) = self.publishing.take()
                    {
                        info!(stream = %p.name(), "RTWebSocket publish ended");
                    }
                }
            }
        }
    }
}

/// The CMAF mapping and the stream it plays.
struct Cmaf {
    s: CmafSession,
    reader: Option<hub::Reader>,
    /// Token policy, and the token of the WebSocket URL (`?token=`), if any.
    access: Arc<Access>,
    url_token: Option<String>,
}

impl Mapping for Cmaf {
    fn started(&self) -> bool {
        self.reader.is_some()
    }
    fn receive(&mut self, now: Instant, bytes: &[u8]) -> Result<(), String> {
        self.s.receive(now, bytes).map_err(|e| e.to_string())
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.s.poll_transmit(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.s.poll_timeout()
    }
    fn backlog(&self) -> usize {
        self.s.backlog()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.s.handle_timeout(now);
    }
    fn reader(&mut self) -> Option<&mut hub::Reader> {
        self.reader.as_mut()
    }
    fn item(&mut self, now: Instant, item: Option<Item>) {
        match item {
            Some(Item::Tracks(t)) => self.s.tracks(now, &t),
            Some(Item::Frame(f)) => self.s.frame(now, &f, wall_us()),
            None => {
                debug!("RTWebSocket CMAF: the stream ended");
                self.s.stream_ended();
                self.reader = None;
            }
        }
    }
    fn act(&mut self, _now: Instant, hub: &Hub, url_app: &str) {
        while let Some(ev) = self.s.poll_event() {
            match ev {
                CmafEvent::Play { key, query } => {
                    let token = access::query_token(query.as_deref()).or(self.url_token.as_deref());
                    let opened = stream_name("", url_app, &key)
                        .ok_or_else(|| format!("{url_app}/{key} is not live"))
                        .and_then(|n| {
                            self.access
                                .check_stream(token, n.as_str(), StreamAction::Play)
                                .map_err(|d| d.message().to_owned())?;
                            hub.subscribe(&n, Protocol::Rtws)
                                .map(|r| (n, r))
                                .ok_or_else(|| format!("{url_app}/{key} is not live"))
                        });
                    match opened {
                        Ok((n, reader)) => {
                            debug!(stream = %n, "RTWebSocket CMAF play");
                            self.s.play_started();
                            self.reader = Some(reader);
                        }
                        Err(reason) => self.s.play_failed(&reason),
                    }
                }
                CmafEvent::Stop => self.reader = None,
            }
        }
    }
}

/// Whether the client's first flow is a CMAF one (anything else is taken as TC).
fn opens_cmaf(first: &[u8]) -> bool {
    matches!(
        rtws::wire::Message::parse(first),
        Ok(Some(rtws::wire::Message::Open { metadata, .. })) if CmafSession::is_cmaf(metadata)
    )
}

/// What a connection's task is given.
struct Ctx {
    hub: Hub,
    transcode: bool,
    access: Arc<Access>,
    url_token: Option<String>,
    /// `limits.auth_deadline_secs`: playing or publishing by then, or closed.
    deadline: Duration,
}

async fn session(mut socket: WebSocket, url_app: String, ctx: Ctx) {
    let Ctx {
        hub,
        transcode,
        access,
        url_token,
        deadline,
    } = ctx;
    let start_by = tokio::time::Instant::now() + deadline;
    // The first flow the client opens says which mapping this is; what comes before it (a
    // ping, an ack window) is handed to that mapping too, in order.
    let mut early: Vec<axum::body::Bytes> = Vec::new();
    let first = tokio::time::timeout_at(start_by, async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Binary(b))) => {
                    // Pings, ack windows and unknown types may come first; anything else decides.
                    let before_any_flow = matches!(
                        rtws::wire::Message::parse(&b),
                        Ok(Some(
                            rtws::wire::Message::Ping(_)
                                | rtws::wire::Message::PingReply(_)
                                | rtws::wire::Message::AckWindow(_)
                        )) | Ok(None)
                    );
                    if !before_any_flow || early.len() >= 16 {
                        break Some(b);
                    }
                    early.push(b);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let Ok(Some(first)) = first else {
        debug!("RTWebSocket connection closed: no flow within {deadline:?}");
        return;
    };
    let cmaf = opens_cmaf(&first);
    early.push(first);
    let reason = if cmaf {
        let m = Cmaf {
            s: CmafSession::new(),
            reader: None,
            access,
            url_token,
        };
        run(&mut socket, m, &early, &url_app, &hub, start_by).await
    } else {
        let m = Tc {
            tc: TcSession::new(),
            playing: None,
            publishing: None,
            transcode,
            access,
            url_token,
        };
        run(&mut socket, m, &early, &url_app, &hub, start_by).await
    };
    if let Some(reason) = reason {
        debug!("RTWebSocket connection closed: {reason}");
        let frame = CloseFrame {
            code: axum::extract::ws::close_code::PROTOCOL,
            reason: reason.chars().take(120).collect::<String>().into(),
        };
        let _ = socket.send(Message::Close(Some(frame))).await;
        // Read until the client's close (or a moment): closing with its messages unread
        // would reset the TCP connection, and the client would never see the reason.
        let drain = async {
            while let Some(Ok(m)) = socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    }
}

/// The connection's life; `Some(reason)` when the client broke the protocol.
async fn run<M: Mapping>(
    socket: &mut WebSocket,
    mut m: M,
    first: &[axum::body::Bytes],
    url_app: &str,
    hub: &Hub,
    start_by: tokio::time::Instant,
) -> Option<String> {
    // Until it plays or publishes, the connection has until `start_by`.
    let mut start_by = Some(start_by);
    for b in first {
        if let Err(e) = m.receive(Instant::now(), b) {
            return Some(e);
        }
    }
    m.act(Instant::now(), hub, url_app);
    loop {
        // Whatever may go now goes.
        let now = Instant::now();
        while let Some(msg) = m.poll_transmit(now) {
            if socket.send(Message::Binary(msg.into())).await.is_err() {
                return None;
            }
        }
        // A client that takes the WebSocket's bytes but acknowledges nothing: the frames'
        // deadlines abandon them, but the entries queue behind what has no deadline.
        if m.backlog() > MAX_BACKLOG {
            return Some(format!(
                "the client acknowledges nothing: {} messages waiting",
                m.backlog()
            ));
        }
        if m.started() {
            start_by = None;
        }
        let kicked = m.kicked();
        let deadline = m
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if let Err(e) = m.receive(Instant::now(), &b) {
                        return Some(e);
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {} // text, ping, pong: not RTWebSocket
            },
            item = async {
                match m.reader() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => m.item(Instant::now(), item),
            _ = tokio::time::sleep_until(deadline) => m.handle_timeout(Instant::now()),
            () = async {
                match start_by {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => return Some("neither played nor published in time (limits.auth_deadline_secs)".into()),
            _ = async {
                match kicked {
                    Some(k) => k.await,
                    None => std::future::pending().await,
                }
            } => m.on_kicked(Instant::now()),
        }
        m.act(Instant::now(), hub, url_app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_is_connects_without_the_route_and_query() {
        assert_eq!(app_of("rtws/live?token=x", "other"), "live");
        assert_eq!(app_of("live", "other"), "live");
        assert_eq!(app_of("", "live"), "live");
        assert_eq!(app_of("rtws/", "live"), "live");
        assert_eq!(
            stream_name("rtws/live", "live", "cam").map(|n| n.to_string()),
            Some("live/cam".to_owned())
        );
    }
}
