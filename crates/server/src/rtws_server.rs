//! `GET /rtws/APP` upgraded to a WebSocket speaking RTWebSocket's TC mapping: players (the
//! reference RTWebSocket players, ours) play hub stream `APP/KEY` as RTMP messages over
//! prioritized flows whose stale frames are abandoned instead of queued (`rtmp::tc`).
//!
//! One task per connection: WebSocket messages go into the session, the hub reader's items go
//! in as tracks and frames, and whatever the session lets out (windows, congestion limit,
//! priorities) goes to the socket. A client that stops reading stalls only this task: its hub
//! reader falls behind and skips to the next keyframe, and the session's deadlines abandon
//! what was queued, so nothing grows.

use std::time::Instant;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use hub::{Hub, Item, Protocol, StreamName};
use rtmp::tc::{TcEvent, TcSession};
use tracing::debug;

/// The largest WebSocket message accepted: a fragment is 1400 bytes; anything much larger is
/// not RTWebSocket.
const MAX_WS_MESSAGE: usize = 64 * 1024;

/// The `/rtws/APP` route.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/rtws/{*app}", get(upgrade))
        .with_state(hub)
}

async fn upgrade(
    ws: WebSocketUpgrade,
    Path(app): Path<String>,
    State(hub): State<Hub>,
) -> Response {
    ws.max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| session(socket, app, hub))
}

/// The stream a play names: `APP/KEY`, the app from `connect` or else the URL's.
fn stream_name(app: &str, url_app: &str, key: &str) -> Option<StreamName> {
    let app = if app.is_empty() { url_app } else { app };
    StreamName::parse(&format!(
        "{}/{}",
        app.trim_matches('/'),
        key.trim_matches('/')
    ))
    .ok()
}

async fn session(mut socket: WebSocket, url_app: String, hub: Hub) {
    let mut tc = TcSession::new();
    // The stream being played: (stream ID, its hub reader).
    let mut playing: Option<(u32, hub::Reader)> = None;
    let reason = loop {
        // Whatever may go now goes.
        let now = Instant::now();
        let mut failed = false;
        while let Some(m) = tc.poll_transmit(now) {
            if socket.send(Message::Binary(m.into())).await.is_err() {
                failed = true;
                break;
            }
        }
        if failed {
            break None;
        }
        let deadline = tc
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if let Err(e) = tc.receive(Instant::now(), &b) {
                        break Some(e.to_string());
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => {} // text, ping, pong: not RTWebSocket
            },
            item = async {
                match playing.as_mut() {
                    Some((_, r)) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                let Some(sid) = playing.as_ref().map(|(s, _)| *s) else {
                    continue;
                };
                match item {
                    Some(Item::Tracks(t)) => tc.tracks(now, sid, t),
                    Some(Item::Frame(f)) => tc.frame(now, sid, &f),
                    None => {
                        debug!(stream_id = sid, "RTWebSocket: the stream ended");
                        playing = None;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => tc.handle_timeout(Instant::now()),
        }
        while let Some(ev) = tc.poll_event() {
            let now = Instant::now();
            match ev {
                TcEvent::Play {
                    stream_id,
                    app,
                    name,
                } => match stream_name(&app, &url_app, &name)
                    .and_then(|n| hub.subscribe(&n, Protocol::Rtws).map(|r| (n, r)))
                {
                    Some((n, reader)) => {
                        debug!(stream = %n, stream_id, "RTWebSocket play");
                        tc.play_started(now, stream_id, &n.to_string());
                        playing = Some((stream_id, reader));
                    }
                    None => tc.play_failed(now, stream_id, &format!("{app}/{name} is not live")),
                },
                TcEvent::Stop { stream_id } => {
                    if playing.as_ref().is_some_and(|(s, _)| *s == stream_id) {
                        playing = None;
                    }
                }
            }
        }
    };
    if let Some(reason) = reason {
        debug!("RTWebSocket connection closed: {reason}");
        let frame = CloseFrame {
            code: axum::extract::ws::close_code::PROTOCOL,
            reason: reason.chars().take(120).collect::<String>().into(),
        };
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
}
