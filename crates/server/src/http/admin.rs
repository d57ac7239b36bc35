//! The operator's actions over HTTP (issue 19), beside the listings of `http.rs`: remove a
//! participant, end a room, mute a track server-side, change a participant's grant, stop a
//! publisher. Under `/api/`, so with `auth.keys` they need a token with the admin grant
//! (`access::guard`), like the rest of the API.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use hub::StreamName;
use serde_json::json;
use sfu::admin::{AdminError, GrantUpdate};
use sfu::{ParticipantId, TrackId};
use tokio::sync::oneshot;

use crate::webrtc::engine::MediaHandle;
use crate::webrtc::shard::Command;

/// What the media loop is asked to do.
#[derive(Debug)]
pub enum AdminOp {
    Kick(String, ParticipantId),
    EndRoom(String),
    Mute(String, TrackId, bool),
    Grant(String, ParticipantId, GrantUpdate),
    StopStream(StreamName),
}

/// Why it could not.
#[derive(Debug, thiserror::Error)]
pub enum AdminOpError {
    #[error(transparent)]
    Sfu(#[from] AdminError),
    #[error("no stream named '{0}' is live")]
    NoStream(String),
}

pub type AdminReply = oneshot::Sender<Result<serde_json::Value, AdminOpError>>;

pub fn routes() -> Router<MediaHandle> {
    Router::new()
        .route("/api/rooms/{name}", delete(end_room))
        .route(
            "/api/rooms/{name}/participants/{pid}",
            delete(kick).patch(grant),
        )
        .route("/api/rooms/{name}/tracks/{track}/mute", post(mute))
        .route("/api/streams/{*name}", delete(stop_stream))
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

async fn ask(media: &MediaHandle, op: AdminOp) -> Response {
    let shard = match &op {
        AdminOp::Kick(room, _)
        | AdminOp::EndRoom(room)
        | AdminOp::Mute(room, ..)
        | AdminOp::Grant(room, ..) => media.room_shard(room),
        AdminOp::StopStream(name) => {
            // Stopped in the hub once; then every shard ends the WHIP session of it it has.
            if !media.hub().stop(name) {
                return error(
                    StatusCode::NOT_FOUND,
                    AdminOpError::NoStream(name.to_string()),
                );
            }
            let name = name.clone();
            let all = media
                .ask_all(|tx| Command::Admin(AdminOp::StopStream(name.clone()), tx))
                .await;
            return match all {
                Some(_) => axum::Json(json!({ "stopped": name.to_string() })).into_response(),
                None => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            };
        }
    };
    match media.ask(shard, |tx| Command::Admin(op, tx)).await {
        Some(Ok(body)) => axum::Json(body).into_response(),
        Some(Err(e)) => error(StatusCode::NOT_FOUND, e),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

fn participant(pid: &str) -> Result<ParticipantId, String> {
    pid.parse()
        .map_err(|_| format!("'{pid}' is not a participant id (PA_…)"))
}

/// `DELETE /api/rooms/ROOM`: every member is removed (`bye` with reason `kicked`).
async fn end_room(State(media): State<MediaHandle>, Path(room): Path<String>) -> Response {
    ask(&media, AdminOp::EndRoom(room)).await
}

/// `DELETE /api/rooms/ROOM/participants/PA_n`: the member is removed (`bye` `kicked`).
async fn kick(
    State(media): State<MediaHandle>,
    Path((room, pid)): Path<(String, String)>,
) -> Response {
    match participant(&pid) {
        Ok(pid) => ask(&media, AdminOp::Kick(room, pid)).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `PATCH /api/rooms/ROOM/participants/PA_n` with `{"publish": [...], "subscribe": bool,
/// "data": bool}` (any of them): the member's grant changes at once.
async fn grant(
    State(media): State<MediaHandle>,
    Path((room, pid)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let pid = match participant(&pid) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let update: GrantUpdate = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected {{\"publish\": [SOURCES], \"subscribe\": BOOL, \"data\": BOOL}}: {e}"
                ),
            );
        }
    };
    ask(&media, AdminOp::Grant(room, pid, update)).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteBody {
    muted: bool,
}

/// `POST /api/rooms/ROOM/tracks/TR_n/mute` with `{"muted": true|false}`: nothing of the
/// track is forwarded while muted; its owner and the room get `track_muted` with `by_server`.
async fn mute(
    State(media): State<MediaHandle>,
    Path((room, track)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(track) = track.parse::<TrackId>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("'{track}' is not a track id (TR_…)"),
        );
    };
    let body: MuteBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"muted\": BOOL}}: {e}"),
            );
        }
    };
    ask(&media, AdminOp::Mute(room, track, body.muted)).await
}

/// `DELETE /api/streams/NAME`: its publisher is stopped, whatever the protocol (an RTMP or
/// RTWebSocket connection closes, a WHIP session ends); its viewers see the end.
async fn stop_stream(State(media): State<MediaHandle>, Path(name): Path<String>) -> Response {
    match StreamName::parse(&name) {
        Ok(n) => ask(&media, AdminOp::StopStream(n)).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}
