//! Access tokens at the server's entry points (the `auth` crate checks them; this maps them to
//! what each entry point needs). With no key configured (`auth.keys` empty) every check
//! passes: the laptop demo needs no setup, and `config.rs` refuses to listen beyond loopback
//! that way unless `auth.allow_anonymous` says so.
//!
//! Checked: `/rtc` (the token in `join`, or `?access_token=`), WHIP/WHEP
//! (`Authorization: Bearer`), RTMP and RTWebSocket publishers (`name?token=…`, or the
//! WebSocket URL's `?token=`), the players (LL-HLS and the WebSocket ones: `?token=`; TC also
//! a `connect` argument), and the HTTP API ([`guard`]: `/api/*`, `/metrics` and
//! `/recordings/…` need the admin grant, `/api/ice-servers` any valid token).

use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sfu::signal::{ErrorCode, TrackSource};

/// Seconds since 1970, for token expiry.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The grant a `/rtc` join gets from its token, or the error to answer it with.
pub fn room_grant(
    keys: &auth::Keys,
    token: Option<&str>,
) -> Result<sfu::Grant, (ErrorCode, String)> {
    let token = token.map(str::trim).filter(|t| !t.is_empty()).ok_or((
        ErrorCode::Unauthorized,
        "an access token is required to join (\"token\" in join, or ?access_token= on /rtc)"
            .to_owned(),
    ))?;
    let claims = keys
        .verify(token, now_unix())
        .map_err(|e| (ErrorCode::Unauthorized, e.to_string()))?;
    let room = claims.room.ok_or((
        ErrorCode::Forbidden,
        "the access token grants no room".to_owned(),
    ))?;
    let publish = room.publish.map(|list| {
        list.iter()
            .filter_map(|s| serde_json::from_value::<TrackSource>(s.as_str().into()).ok())
            .collect()
    });
    Ok(sfu::Grant {
        room: room.room,
        publish,
        subscribe: room.subscribe,
        data: room.data,
        hidden: room.hidden,
        identity: Some(claims.sub),
        room_admin: room.admin,
    })
}

/// What an HTTP request wants to do with a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamAction {
    /// WHIP, RTMP, RTWebSocket publish.
    Publish,
    /// WHEP, LL-HLS, WebSocket play.
    Play,
}

/// `Authorization: Bearer TOKEN`, if the request carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A request refused: 401 (no token, or one that is not valid) or 403 (not granted).
#[derive(Debug)]
pub struct Denied {
    status: StatusCode,
    message: String,
}

impl Denied {
    /// Why, for clients that are not HTTP (an RTMP `onStatus`, a TC error).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// `name?token=…` (or `access_token=`): the name without its query, and the token. RTMP
/// clients carry the token this way (FFmpeg `rtmp://host/live/name?token=…`, OBS's stream key
/// `name?token=…`).
pub fn split_token(key: &str) -> (&str, Option<&str>) {
    let Some((name, query)) = key.split_once('?') else {
        return (key, None);
    };
    (name, query_token(Some(query)))
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        if self.status == StatusCode::UNAUTHORIZED {
            unauthorized(&self.message)
        } else {
            plain(self.status, &self.message)
        }
    }
}

/// The server's token policy: the keys, and what stays open while there are keys.
#[derive(Debug, Default)]
pub struct Access {
    keys: auth::Keys,
    /// `auth.open_playback`: playing streams (WHEP, LL-HLS, WebSocket players) needs no token.
    open_playback: bool,
}

impl Access {
    /// `auth.keys`, and whether playback stays open.
    pub fn new(keys: auth::Keys, open_playback: bool) -> Access {
        Access {
            keys,
            open_playback,
        }
    }

    /// No key: auth is off, every check passes.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether playing a stream needs a token (keys, and playback not left open).
    pub fn needs_play_token(&self) -> bool {
        !self.keys.is_empty() && !self.open_playback
    }

    /// The keys.
    pub fn keys(&self) -> &auth::Keys {
        &self.keys
    }

    /// Checks that `token` allows `action` on `stream`; why not, when it does not (401 with
    /// `WWW-Authenticate` for no or a bad token, 403 for a missing grant).
    pub fn check_stream(
        &self,
        token: Option<&str>,
        stream: &str,
        action: StreamAction,
    ) -> Result<(), Denied> {
        if self.keys.is_empty() || (action == StreamAction::Play && self.open_playback) {
            return Ok(());
        }
        let denied = |status, message: String| Denied { status, message };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(denied(
                StatusCode::UNAUTHORIZED,
                "an access token is required (Authorization: Bearer TOKEN, or ?token=)".into(),
            ));
        };
        let claims = self
            .keys
            .verify(token, now_unix())
            .map_err(|e| denied(StatusCode::UNAUTHORIZED, e.to_string()))?;
        let grant = claims.stream.unwrap_or_default();
        let allowed = match action {
            StreamAction::Publish => grant.may_publish(stream),
            StreamAction::Play => grant.may_play(stream),
        };
        if allowed {
            Ok(())
        } else {
            let what = match action {
                StreamAction::Publish => "publishing",
                StreamAction::Play => "playing",
            };
            Err(denied(
                StatusCode::FORBIDDEN,
                format!("the access token does not grant {what} '{stream}'"),
            ))
        }
    }
}

/// The token of a URL's query (`token=` or `access_token=`), as a player carries it.
pub fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| {
            kv.strip_prefix("token=")
                .or_else(|| kv.strip_prefix("access_token="))
        })
        .filter(|t| !t.is_empty())
}

/// What an HTTP path needs when keys are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Pages, the SDK, `/healthz`, and the entry points that check tokens themselves.
    Open,
    /// Any valid token (a client about to use the media: TURN credentials).
    AnyToken,
    /// A token with the admin grant (the operator's API, recordings, metrics).
    Admin,
}

fn need_of(path: &str, open_metrics: bool) -> Need {
    match path {
        "/api/ice-servers" => Need::AnyToken,
        "/metrics" if open_metrics => Need::Open,
        "/metrics" => Need::Admin,
        p if p == "/api" || p.starts_with("/api/") || p.starts_with("/recordings/") => Need::Admin,
        _ => Need::Open,
    }
}

/// The HTTP layer's check (a middleware on every route): with keys configured, the operator's
/// API needs `Authorization: Bearer` with a token granting `admin`, `/api/ice-servers` any
/// valid token. `state`: the keys, and `auth.open_metrics`.
pub async fn guard(
    State((access, open_metrics)): State<(Arc<Access>, bool)>,
    mut req: Request,
    next: Next,
) -> Response {
    if access.is_empty() {
        return next.run(req).await;
    }
    let need = need_of(req.uri().path(), open_metrics);
    if need == Need::Open {
        return next.run(req).await;
    }
    let Some(token) = bearer(req.headers()).filter(|t| !t.is_empty()) else {
        return unauthorized("an access token is required (Authorization: Bearer TOKEN)");
    };
    let claims = match access.keys.verify(token, now_unix()) {
        Ok(c) => c,
        Err(e) => return unauthorized(&e.to_string()),
    };
    if need == Need::Admin && !claims.admin {
        return plain(
            StatusCode::FORBIDDEN,
            "the access token does not grant the admin API (onair token --admin)",
        );
    }
    // Verified once: handlers that need who it is (`/api/ice-servers`) read it from here.
    req.extensions_mut().insert(claims);
    next.run(req).await
}

fn plain(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response()
}

fn unauthorized(msg: &str) -> Response {
    let mut r = plain(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"onair\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> auth::Keys {
        let k = [("main".to_owned(), "A".repeat(43))];
        auth::Keys::from_config(k.iter().map(|(a, b)| (a, b))).unwrap()
    }

    fn token(room: Option<auth::RoomGrant>, stream: Option<auth::StreamGrant>, exp: u64) -> String {
        let claims = auth::Claims {
            sub: "t".into(),
            name: None,
            exp,
            nbf: None,
            iat: None,
            room,
            stream,
            admin: false,
        };
        keys().mint(None, &claims).unwrap()
    }

    #[test]
    fn a_room_token_becomes_the_sfus_grant() {
        let t = token(
            Some(auth::RoomGrant {
                room: "r".into(),
                publish: Some(vec!["microphone".into(), "nonsense".into()]),
                subscribe: true,
                data: false,
                hidden: false,
                admin: false,
            }),
            None,
            now_unix() + 60,
        );
        let g = room_grant(&keys(), Some(&t)).unwrap();
        assert_eq!(g.publish, Some(vec![TrackSource::Microphone]));
        assert!(g.covers("r") && !g.data);
        assert_eq!(
            room_grant(&keys(), None).unwrap_err().0,
            ErrorCode::Unauthorized
        );
        let expired = token(None, None, 1);
        assert_eq!(
            room_grant(&keys(), Some(&expired)).unwrap_err().0,
            ErrorCode::Unauthorized
        );
        let streams_only = token(None, Some(auth::StreamGrant::default()), now_unix() + 60);
        assert_eq!(
            room_grant(&keys(), Some(&streams_only)).unwrap_err().0,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn stream_checks_answer_401_and_403() {
        let k = Access::new(keys(), false);
        let t = token(
            None,
            Some(auth::StreamGrant {
                publish: vec!["live/a".into()],
                play: vec!["live/*".into()],
            }),
            now_unix() + 60,
        );
        assert!(
            k.check_stream(Some(&t), "live/a", StreamAction::Publish)
                .is_ok()
        );
        assert!(
            k.check_stream(Some(&t), "live/b", StreamAction::Play)
                .is_ok()
        );
        let r = k
            .check_stream(Some(&t), "live/b", StreamAction::Publish)
            .unwrap_err()
            .into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = k
            .check_stream(None, "live/a", StreamAction::Play)
            .unwrap_err()
            .into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        let r = k
            .check_stream(Some("x.y.z"), "live/a", StreamAction::Play)
            .unwrap_err()
            .into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // No keys: open.
        assert!(
            Access::default()
                .check_stream(None, "live/a", StreamAction::Publish)
                .is_ok()
        );
        // auth.open_playback: playing needs nothing, publishing still a token.
        let open = Access::new(keys(), true);
        assert!(
            open.check_stream(None, "live/a", StreamAction::Play)
                .is_ok()
        );
        assert!(
            open.check_stream(None, "live/a", StreamAction::Publish)
                .is_err()
        );
        assert_eq!(query_token(Some("_HLS_msn=3&token=abc")), Some("abc"));
        assert_eq!(query_token(Some("token=")), None);
        assert_eq!(need_of("/api/rooms", false), Need::Admin);
        assert_eq!(need_of("/api/ice-servers", false), Need::AnyToken);
        assert_eq!(need_of("/metrics", false), Need::Admin);
        assert_eq!(need_of("/metrics", true), Need::Open);
        assert_eq!(need_of("/recordings/a.mp4", false), Need::Admin);
        assert_eq!(need_of("/room.html", false), Need::Open);
        assert_eq!(need_of("/whip/live/x", false), Need::Open);
        assert_eq!(split_token("cam?token=abc&x=1"), ("cam", Some("abc")));
        assert_eq!(split_token("cam?x=1&access_token=t"), ("cam", Some("t")));
        assert_eq!(split_token("cam"), ("cam", None));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
    }
}
