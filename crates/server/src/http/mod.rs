//! HTTP: pages, the `/rtc` signalling WebSocket, and a small JSON API.

pub mod accept;
pub mod admin;
pub mod metrics;
pub mod pages;

use axum::Router;
use axum::extract::Query;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sfu::signal::{ClientMessage, decode};
use tokio::sync::mpsc;
use tracing::debug;

use crate::http::pages as web;
use crate::webrtc::engine::MediaHandle;
use crate::webrtc::shard::{Command, ToConn};

/// Frames above this (or 4 × `max_signal_bytes`, if more) are refused by the WebSocket layer
/// itself before they are buffered
/// (close code 1009). Below it, frames above `max_signal_bytes` get an `error` reply and the
/// socket stays open. (It was 16 MiB: 120 sockets sending such frames held 1.9 GB.)
const WS_HARD_LIMIT: usize = 256 * 1024;

/// Messages waiting for one signalling socket; a client that lets more pile up is not reading
/// and is let go (an unbounded queue grew to 2.4 GB in 5 s for a socket that never read).
const SIGNAL_QUEUE: usize = 128;

/// A write to a signalling socket that takes longer than this ends the connection.
const WS_WRITE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A socket silent this long is treated as dropped (a vanished network sends no FIN). The SDK
/// pings every 15 s and the server sends WebSocket pings every 10 s, so any live client's
/// pongs count.
const WS_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
const WS_PING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

pub fn router(media: MediaHandle) -> Router {
    let mut r = Router::new()
        .route("/rtc", get(rtc))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{name}", get(room_report))
        .route("/api/sessions", get(sessions))
        .route("/api/streams", get(streams))
        .route("/api/ice-servers", get(ice_servers))
        .route("/metrics", get(crate::http::metrics::metrics))
        .route("/healthz", get(|| async { "ok\n" }));
    for (path, ctype, body) in web::FILES {
        r = r.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, *ctype),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    *body,
                )
            }),
        );
    }
    r.merge(crate::webrtc::whip::routes())
        .merge(crate::http::admin::routes())
        .with_state(media)
}

async fn streams(State(media): State<MediaHandle>) -> Response {
    match media.streams().await {
        Some(s) => axum::Json(s).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

/// `GET /api/ice-servers`: `RTCIceServer` objects with fresh time-limited TURN credentials,
/// usable as-is in `new RTCPeerConnection({iceServers})`. The TURN user they name (whose
/// allocations `turn.max_allocations_per_user` counts) is the token's `sub` with auth on, the
/// client's address without: asking again gives fresh credentials for the same user, so the
/// quota holds (each call used to make a new user, and one client emptied the relay pool).
async fn ice_servers(
    State(media): State<MediaHandle>,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    claims: Option<axum::Extension<auth::Claims>>,
) -> Response {
    // The guard verified the token (auth on) and left its claims on the request.
    let subject = claims.map(|c| c.0.sub).filter(|s| !s.is_empty());
    let user = match (subject, connect) {
        (Some(sub), _) => crate::turn::ice_servers::subject_user(&sub),
        (None, Some(c)) => format!("ip-{}", crate::limits::key(c.0.0.ip())),
        (None, None) => "anonymous".to_owned(),
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(media.ice.for_user(&user)),
    )
        .into_response()
}

async fn rooms(State(media): State<MediaHandle>) -> Response {
    match media.status().await {
        Some(s) => axum::Json(s).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

/// `GET /api/rooms/NAME`: the room with its participants' connections' figures.
async fn room_report(
    State(media): State<MediaHandle>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let shard = media.room_shard(&name);
    match media
        .ask(shard, |tx| Command::RoomReport(name.clone(), tx))
        .await
    {
        Some(Some(r)) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(r)).into_response(),
        Some(None) => (StatusCode::NOT_FOUND, format!("no room named {name:?}\n")).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

/// `GET /api/sessions`: WHIP publishers and WHEP viewers with their connections' figures.
async fn sessions(State(media): State<MediaHandle>) -> Response {
    match media.sessions().await {
        Some(s) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(s)).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

/// `/rtc?access_token=…`: the token for clients that cannot put it in `join`.
#[derive(serde::Deserialize)]
struct RtcQuery {
    access_token: Option<String>,
}

async fn rtc(
    ws: WebSocketUpgrade,
    Query(query): Query<RtcQuery>,
    State(media): State<MediaHandle>,
) -> Response {
    // Small buffers: a member's socket carries small JSON messages, and tungstenite's 128 KiB
    // default read buffer would be most of what a member costs.
    let hard = WS_HARD_LIMIT.max(media.max_signal_bytes.saturating_mul(4));
    ws.max_message_size(hard)
        .max_frame_size(hard)
        .read_buffer_size(crate::ws::rtws::WS_READ_BUFFER)
        .write_buffer_size(crate::ws::rtws::WS_WRITE_BUFFER)
        .on_upgrade(move |socket| signalling(socket, media, query.access_token))
}

/// With keys configured, a `join` (not a resume: its resume token is the proof) needs a token
/// granting the room: the grant it gives, or why not. `None`: nothing to check.
fn join_grant(
    media: &MediaHandle,
    msg: &ClientMessage,
    query_token: Option<&str>,
) -> Option<Result<sfu::Grant, (sfu::signal::ErrorCode, String)>> {
    let ClientMessage::Join {
        token,
        resume: None,
        ..
    } = msg
    else {
        return None;
    };
    if media.auth.is_empty() {
        return None;
    }
    Some(crate::access::room_grant(
        media.auth.keys(),
        token.as_deref().or(query_token),
    ))
}

/// One signalling connection: frames in are decoded and handed to the media loop; messages
/// out come from it.
async fn signalling(mut socket: WebSocket, media: MediaHandle, query_token: Option<String>) {
    let conn = media.new_conn();
    let (tx, mut rx) = mpsc::channel(SIGNAL_QUEUE);
    // The socket lives on one media shard at a time: until it has joined, any (the next in
    // turn); its join takes it to the room's shard. Only the shard holds the sender (when it
    // lets go, `rx` ends and so does this task); this weak one is for moving it.
    let weak = tx.downgrade();
    let mut shard = media.next_shard();
    let mut joined = false;
    if !media.send(shard, Command::Connect(conn, tx)).await {
        return;
    }
    debug!(conn = conn.0, "signalling connected");
    let budget = media.limits.signal_budget();
    let mut last_refusal = None;
    let mut last_heard = tokio::time::Instant::now();
    let mut ping = tokio::time::interval(WS_PING_EVERY);
    // A socket must send a `join` (with its token, when there are keys) within
    // `limits.auth_deadline_secs`: one that never does holds nothing of ours for long.
    let deadline = media.limits.settings.auth_deadline;
    let mut join_by = Some(tokio::time::Instant::now() + deadline);
    loop {
        tokio::select! {
            () = async {
                match join_by {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                debug!(conn = conn.0, "no join within {deadline:?}: closing");
                let frame = axum::extract::ws::CloseFrame {
                    code: axum::extract::ws::close_code::POLICY,
                    reason: "no join in time (limits.auth_deadline_secs)".into(),
                };
                let _ = tokio::time::timeout(WS_WRITE_DEADLINE, socket.send(Message::Close(Some(frame)))).await;
                break;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > WS_IDLE {
                    debug!(conn = conn.0, "signalling silent for {WS_IDLE:?}: dropping");
                    break;
                }
                let sent = tokio::time::timeout(WS_WRITE_DEADLINE, socket.send(Message::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
            out = rx.recv() => match out {
                Some(ToConn::Text(t)) => {
                    let sent = tokio::time::timeout(WS_WRITE_DEADLINE, socket.send(Message::Text(t.into()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
                Some(ToConn::Joined) => joined = true,
                Some(ToConn::Close) | None => {
                    let _ = tokio::time::timeout(WS_WRITE_DEADLINE, socket.send(Message::Close(None))).await;
                    break;
                }
            },
            frame = socket.recv() => {
                last_heard = tokio::time::Instant::now();
                let bytes = match frame {
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Err(e)) if e.to_string().contains("too long") => {
                        // A frame over WS_HARD_LIMIT: say so with 1009, as documented.
                        debug!(conn = conn.0, "signalling frame too big: {e}");
                        let frame = axum::extract::ws::CloseFrame {
                            code: axum::extract::ws::close_code::SIZE,
                            reason: "message too big".into(),
                        };
                        let _ = tokio::time::timeout(WS_WRITE_DEADLINE, socket.send(Message::Close(Some(frame)))).await;
                        // The rest of the frame is still unread: closing now would reset the
                        // connection, and the client could lose the close frame to the reset.
                        // A moment for it to read that first.
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        break;
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                if !budget.take(bytes.len()) {
                    debug!(conn = conn.0, "signalling over its rate: {} bytes dropped", bytes.len());
                    // Told once a second at most: answering every dropped message would flood
                    // the client's own queue.
                    if last_refusal.is_some_and(|t: tokio::time::Instant| t.elapsed() < std::time::Duration::from_secs(1)) {
                        continue;
                    }
                    last_refusal = Some(tokio::time::Instant::now());
                    let cmd = Command::BadFrame(
                        conn,
                        sfu::signal::ErrorCode::RateLimited,
                        "too much signalling: message dropped (limits.signal_bytes_per_second)".into(),
                    );
                    if !media.send(shard, cmd).await {
                        break;
                    }
                    continue;
                }
                let decoded = decode(&bytes, media.max_signal_bytes);
                if let Ok(ClientMessage::Join { room, .. }) = &decoded {
                    let target = media.room_shard(room);
                    if !joined && target != shard {
                        let Some(tx) = weak.upgrade() else { break };
                        media.send(shard, Command::Disconnect(conn)).await;
                        shard = target;
                        if !media.send(shard, Command::Connect(conn, tx)).await {
                            break;
                        }
                    }
                }
                let cmd = match decoded {
                    Ok(msg) => match join_grant(&media, &msg, query_token.as_deref()) {
                        None => {
                            if matches!(msg, ClientMessage::Join { .. }) {
                                join_by = None;
                            }
                            Command::Message(conn, msg)
                        }
                        Some(Ok(grant)) => {
                            join_by = None;
                            if !media.send(shard, Command::Authorize(conn, grant)).await {
                                break;
                            }
                            Command::Message(conn, msg)
                        }
                        Some(Err((code, message))) => {
                            debug!(conn = conn.0, "join refused: {message}");
                            Command::BadFrame(conn, code, message)
                        }
                    },
                    Err(e) => {
                        debug!(conn = conn.0, "bad signalling frame: {e}");
                        Command::BadFrame(conn, e.code(), e.to_string())
                    }
                };
                if !media.send(shard, cmd).await {
                    break;
                }
            }
        }
    }
    media.send(shard, Command::Disconnect(conn)).await;
    debug!(conn = conn.0, "signalling closed");
}
