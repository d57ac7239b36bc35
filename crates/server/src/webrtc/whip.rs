//! WHIP (RFC 9725) and WHEP over HTTP: `POST /whip/NAME` publishes, `POST /whep/NAME` plays;
//! the `Location` of the answer (`/whip/NAME/session/TOKEN`) takes PATCH (trickle ICE) and
//! DELETE. Pages on other origins may call all of it (CORS).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hub::StreamName;
use sfu::HttpSessionError;
use tokio::sync::oneshot;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::access::{StreamAction, bearer};
use crate::webrtc::engine::MediaHandle;
use crate::webrtc::shard::{Command, SessionError};

/// SDP offers and trickle fragments larger than this are refused (413).
const MAX_BODY: usize = 64 * 1024;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Whip,
    Whep,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

pub fn routes() -> Router<MediaHandle> {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_MATCH,
        ])
        .expose_headers([header::LOCATION, header::LINK, header::ETAG])
        .max_age(std::time::Duration::from_secs(86400));
    Router::new()
        .route(
            "/whip/{*path}",
            post(|s, p, q, h, b| offer(Kind::Whip, s, p, q, h, b))
                .patch(patch)
                .delete(delete),
        )
        .route(
            "/whep/{*path}",
            post(|s, p, q, h, b| offer(Kind::Whep, s, p, q, h, b))
                .patch(patch)
                .delete(delete),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(cors)
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

fn error_response(e: SessionError) -> Response {
    let status = match &e {
        SessionError::Busy(hub::PublishError::TooMany(_)) => StatusCode::SERVICE_UNAVAILABLE,
        SessionError::Busy(_) => StatusCode::CONFLICT,
        SessionError::NothingPlayable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SessionError::Sfu(s) => match s {
            HttpSessionError::NotFound(_) | HttpSessionError::UnknownSession => {
                StatusCode::NOT_FOUND
            }
            HttpSessionError::NoCommonCodec(_) => StatusCode::NOT_ACCEPTABLE,
            HttpSessionError::IceRestartUnsupported => StatusCode::UNPROCESSABLE_ENTITY,
            HttpSessionError::NoMediaYet(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        },
    };
    let retry = matches!(e, SessionError::Sfu(HttpSessionError::NoMediaYet(_)));
    let mut r = text(status, e.to_string());
    if retry {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn unavailable() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down",
    )
}

async fn ask<T>(
    media: &MediaHandle,
    shard: usize,
    cmd: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Response> {
    media.ask(shard, cmd).await.ok_or_else(unavailable)
}

/// A session's shard is not in its URL: PATCH and DELETE ask every shard (a few, and rare),
/// and the one that knows the token answers.
async fn ask_owner(
    media: &MediaHandle,
    cmd: impl Fn(oneshot::Sender<Result<(), SessionError>>) -> Command,
) -> Result<Result<(), SessionError>, Response> {
    let all = media.ask_all(cmd).await.ok_or_else(unavailable)?;
    let unknown = |r: &Result<(), SessionError>| {
        matches!(r, Err(SessionError::Sfu(HttpSessionError::UnknownSession)))
    };
    Ok(all
        .into_iter()
        .find(|r| !unknown(r))
        .unwrap_or(Err(HttpSessionError::UnknownSession.into())))
}

/// Where a new session goes: a WHIP publisher to the next shard in turn; a WHEP viewer too,
/// whatever the stream (so one stream's viewers use every core). A viewer of a WHIP stream
/// away from its publisher's shard is fed by that shard's export (`sfu::mirror`): the tracks
/// for the viewer's shard to mirror are asked for here. Viewers of hub-only streams read the
/// hub on their own shard.
async fn session_shard(
    media: &MediaHandle,
    kind: Kind,
    stream: &StreamName,
    via_hub: bool,
) -> Result<(usize, Option<(u32, Vec<sfu::mirror::MirrorTrack>)>), Response> {
    let shard = media.next_shard();
    if kind == Kind::Whip || via_hub {
        return Ok((shard, None));
    }
    let name = stream.as_str().to_owned();
    let has = media
        .ask_all(|reply| Command::HasStream(name.clone(), reply))
        .await
        .ok_or_else(unavailable)?;
    let Some(origin) = has.iter().position(|h| *h) else {
        return Ok((shard, None)); // the hub's, or none: the shard's answer says which
    };
    if origin == shard {
        return Ok((shard, None));
    }
    let to = shard as u32;
    match media
        .ask(origin, |reply| Command::Export {
            stream: name.clone(),
            to,
            reply,
        })
        .await
    {
        Some(Some(tracks)) if !tracks.is_empty() => Ok((shard, Some((origin as u32, tracks)))),
        Some(Some(_)) => Err(error_response(HttpSessionError::NoMediaYet(name).into())),
        Some(None) => Err(error_response(HttpSessionError::NotFound(name).into())),
        None => Err(unavailable()),
    }
}

async fn offer(
    kind: Kind,
    State(media): State<MediaHandle>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let stream = match StreamName::parse(&path) {
        Ok(n) => n,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let action = match kind {
        Kind::Whip => StreamAction::Publish,
        Kind::Whep => StreamAction::Play,
    };
    if let Err(r) = media
        .auth
        .check_stream(bearer(&headers), stream.as_str(), action)
    {
        return r.into_response();
    }
    if !content_type_is(&headers, SDP) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the offer must be sent as Content-Type: {SDP}"),
        );
    }
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text");
    };
    // `?via=hub`: the hub's frames, repacketized, even for a WebRTC source.
    let via_hub = query_value(query.as_deref(), "via") == Some("hub");
    let (shard, mirror) = match session_shard(&media, kind, &stream, via_hub).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let reply = ask(&media, shard, |reply| match kind {
        Kind::Whip => Command::WhipOffer {
            stream: stream.clone(),
            offer,
            reply,
        },
        Kind::Whep => Command::WhepOffer {
            stream: stream.clone(),
            offer,
            via_hub,
            // `?max_height=360`: the simulcast/SVC layer no taller than that.
            max_height: query_value(query.as_deref(), "max_height").and_then(|v| v.parse().ok()),
            mirror,
            reply,
        },
    })
    .await;
    let session = match reply {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return error_response(e),
        Err(r) => return r,
    };
    let location = format!("/{}/{}/session/{}", kind.prefix(), stream, session.token);
    let mut response = (StatusCode::CREATED, session.answer).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", session.token)) {
        h.insert(header::ETAG, v);
    }
    // RFC 9725 §4.6: the STUN/TURN servers, with credentials for this session.
    for link in ice_server_links(&media.ice.for_user(&session.token)) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    response
}

/// The value of `key` in a query string (`a=1&b=2`).
fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// `NAME/session/TOKEN` → TOKEN.
fn session_token(path: &str) -> Option<&str> {
    let (rest, token) = path.rsplit_once('/')?;
    let (_, word) = rest.rsplit_once('/')?;
    (word == "session" && !token.is_empty()).then_some(token)
}

async fn patch(
    State(media): State<MediaHandle>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = session_token(&path).map(str::to_owned) else {
        return text(
            StatusCode::NOT_FOUND,
            "PATCH goes to a session URL (its Location)",
        );
    };
    if !content_type_is(&headers, SDPFRAG) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a trickle ICE fragment must be sent as Content-Type: {SDPFRAG}"),
        );
    }
    let Ok(fragment) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "the fragment is not UTF-8 text");
    };
    match ask_owner(&media, |reply| Command::SessionPatch {
        token: token.clone(),
        fragment: fragment.clone(),
        reply,
    })
    .await
    {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => error_response(e),
        Err(r) => r,
    }
}

async fn delete(State(media): State<MediaHandle>, Path(path): Path<String>) -> Response {
    let Some(token) = session_token(&path).map(str::to_owned) else {
        return text(
            StatusCode::NOT_FOUND,
            "DELETE goes to a session URL (its Location)",
        );
    };
    match ask_owner(&media, |reply| Command::SessionDelete {
        token: token.clone(),
        reply,
    })
    .await
    {
        // A body, because FFmpeg's WHIP muxer logs an error on an empty one.
        Ok(Ok(())) => text(StatusCode::OK, "session ended"),
        Ok(Err(e)) => error_response(e),
        Err(r) => r,
    }
}

/// `Link: <turn:…>; rel="ice-server"; username="…"; credential="…"; credential-type="password"`,
/// one per URL.
fn ice_server_links(servers: &[sfu::signal::IceServer]) -> Vec<String> {
    let mut links = Vec::new();
    for s in servers {
        for url in &s.urls {
            let mut l = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                l.push_str(&format!(
                    "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                ));
            }
            links.push(l);
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values() {
        assert_eq!(
            query_value(Some("via=hub&max_height=360"), "max_height"),
            Some("360")
        );
        assert_eq!(query_value(Some("via=hub"), "via"), Some("hub"));
        assert_eq!(query_value(Some("vias=x"), "via"), None);
        assert_eq!(query_value(None, "via"), None);
    }

    #[test]
    fn session_tokens_come_from_session_urls_only() {
        assert_eq!(session_token("live/x/session/abc"), Some("abc"));
        assert_eq!(session_token("live/x"), None);
        assert_eq!(session_token("live/x/session/"), None);
        assert_eq!(session_token("session/abc"), None);
    }

    #[test]
    fn ice_servers_become_link_headers() {
        let servers = vec![
            sfu::signal::IceServer {
                urls: vec!["stun:127.0.0.1:3478".into()],
                username: None,
                credential: None,
            },
            sfu::signal::IceServer {
                urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
                username: Some("1700000000:x".into()),
                credential: Some("pw=".into()),
            },
        ];
        assert_eq!(
            super::ice_server_links(&servers),
            [
                "<stun:127.0.0.1:3478>; rel=\"ice-server\"",
                "<turn:127.0.0.1:3478?transport=udp>; rel=\"ice-server\"; username=\"1700000000:x\"; \
                 credential=\"pw=\"; credential-type=\"password\"",
            ]
        );
    }
}
