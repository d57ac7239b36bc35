//! Access tokens: who a client is and what it may do, signed by the operator's key.
//!
//! A token is a JWT (RFC 7519) signed with HS256 by one of the server's named keys; its header's
//! `kid` names the key, so a new key can be added, tokens minted with it, and the old one
//! removed once its tokens have expired (rotation). The claims:
//!
//! ```json
//! {"sub": "alice", "name": "Alice", "exp": 1796600000, "nbf": 1796596400,
//!  "room": {"room": "standup", "publish": ["camera", "microphone"], "subscribe": true, "data": true},
//!  "stream": {"publish": ["live/alice"], "play": ["live/*"]},
//!  "admin": false}
//! ```
//!
//! `room` grants one room (a name, `prefix*`, or `*`): joining it, publishing the sources
//! listed (absent: every source; `[]`: none), receiving others' tracks, sending data, staying
//! hidden from the others, and administering it. `stream` grants publishing and playing stream
//! names (WHIP, WHEP, RTMP …), each a name or `prefix/*`. `admin` is the server's HTTP API.
//!
//! Sans-IO: the time is passed in; nothing here reads a clock or a file.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Tokens are accepted this many seconds past their expiry and before their `nbf` (clocks of
/// the minting service and the server disagree a little).
pub const LEEWAY_SECS: u64 = 30;

/// Keys shorter than this are refused: an HS256 secret is only as strong as its length.
pub const MIN_KEY_BYTES: usize = 32;

/// The longest token accepted, in bytes (a token is parsed before anything is known of its
/// sender).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The identity (a participant's, a publisher's).
    pub sub: String,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, seconds since 1970.
    pub exp: u64,
    /// Not valid before, seconds since 1970.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since 1970.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// What it may do in a room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomGrant>,
    /// Which stream names it may publish and play.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamGrant>,
    /// The server's HTTP API (rooms, sessions, recordings, metrics).
    #[serde(default, skip_serializing_if = "is_false")]
    pub admin: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> bool {
    true
}

/// A room grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomGrant {
    /// The room: a name, `prefix*`, or `*`.
    pub room: String,
    /// The sources it may publish (`camera`, `microphone`, `screen`, `screen_audio`); absent:
    /// all of them, `[]`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// It receives the others' tracks.
    #[serde(default = "yes")]
    pub subscribe: bool,
    /// It may send data channel messages.
    #[serde(default = "yes")]
    pub data: bool,
    /// The others are not told it is there.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hidden: bool,
    /// It may administer the room (the admin API's room actions).
    #[serde(default, skip_serializing_if = "is_false")]
    pub admin: bool,
}

impl RoomGrant {
    /// Whether this grant covers `room`.
    pub fn covers(&self, room: &str) -> bool {
        matches_pattern(&self.room, room)
    }

    /// Whether it may publish a track of `source`.
    pub fn may_publish(&self, source: &str) -> bool {
        self.publish
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == source))
    }
}

/// A stream grant: names or `prefix/*` patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamGrant {
    /// Names it may publish (WHIP, RTMP, RTWebSocket).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// Names it may play (WHEP, LL-HLS, WebSocket players).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub play: Vec<String>,
}

impl StreamGrant {
    /// Whether it may publish `name`.
    pub fn may_publish(&self, name: &str) -> bool {
        self.publish.iter().any(|p| matches_pattern(p, name))
    }

    /// Whether it may play `name`.
    pub fn may_play(&self, name: &str) -> bool {
        self.play.iter().any(|p| matches_pattern(p, name))
    }
}

/// `*` matches everything; a pattern ending in `*` matches what starts with the rest; anything
/// else matches itself.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Why a token was not accepted. The message is for the client (no secret in it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token came.
    #[error("an access token is required")]
    Missing,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the access token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    /// Not a JWT, or its claims are not ours.
    #[error("the access token is malformed: {0}")]
    Malformed(String),
    /// Its `kid` names no configured key (or it names none and there are several).
    #[error("the access token's key '{0}' is not known here")]
    UnknownKey(String),
    /// Not HS256.
    #[error("the access token's algorithm {0} is not accepted (HS256 only)")]
    Algorithm(String),
    /// The signature does not verify with the key.
    #[error("the access token's signature is not valid")]
    BadSignature,
    /// Past `exp`.
    #[error("the access token expired at {exp} (now {now})")]
    Expired {
        /// Its expiry.
        exp: u64,
        /// The time it was checked.
        now: u64,
    },
    /// Before `nbf`.
    #[error("the access token is not valid before {nbf} (now {now})")]
    NotYetValid {
        /// Its start.
        nbf: u64,
        /// The time it was checked.
        now: u64,
    },
}

/// Why a key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not base64url (or base64).
    #[error("key '{0}' is not base64: generate one with `onair keys generate`")]
    NotBase64(String),
    /// Shorter than [`MIN_KEY_BYTES`].
    #[error("key '{name}' is {len} bytes; at least {MIN_KEY_BYTES} are needed")]
    TooShort {
        /// Its name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A token was to be minted and there is no such key (or none at all).
    #[error("no key named '{0}' is configured")]
    NoSuchKey(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The server's signing keys, by name.
#[derive(Clone, Default)]
pub struct Keys {
    keys: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Keys")
            .field("names", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keys {
    /// Keys from `name → base64url secret` (as configured, and as `onair keys generate` prints).
    pub fn from_config<'a>(
        entries: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<Keys, KeyError> {
        let mut keys = BTreeMap::new();
        for (name, secret) in entries {
            let trimmed = secret.trim().trim_end_matches('=');
            let bytes = URL_SAFE_NO_PAD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
                .map_err(|_| KeyError::NotBase64(name.clone()))?;
            if bytes.len() < MIN_KEY_BYTES {
                return Err(KeyError::TooShort {
                    name: name.clone(),
                    len: bytes.len(),
                });
            }
            keys.insert(name.clone(), bytes);
        }
        Ok(Keys { keys })
    }

    /// No key: tokens cannot be checked (auth is off).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Signs `claims` with key `kid` (the only key when `None` and there is one).
    pub fn mint(&self, kid: Option<&str>, claims: &Claims) -> Result<String, KeyError> {
        let (name, secret) = match kid {
            Some(k) => self
                .keys
                .get_key_value(k)
                .ok_or_else(|| KeyError::NoSuchKey(k.to_owned()))?,
            None => self
                .keys
                .iter()
                .next()
                .ok_or_else(|| KeyError::NoSuchKey("(any)".into()))?,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(name.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// Checks `token` at `now` (seconds since 1970) and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLong);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::Algorithm(format!("{:?}", header.alg)));
        }
        let secret = match &header.kid {
            Some(k) => self
                .keys
                .get(k)
                .ok_or_else(|| AuthError::UnknownKey(k.clone()))?,
            None if self.keys.len() == 1 => self.keys.values().next().ok_or(AuthError::Missing)?,
            None => return Err(AuthError::UnknownKey("(none named)".into())),
        };
        // Signature and shape here; the times below, against the time we were given (the
        // library would read the system clock).
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
        let data =
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
                .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed(e.to_string()),
            })?;
        let claims = data.claims;
        if now > claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if let Some(nbf) = claims.nbf
            && now.saturating_add(LEEWAY_SECS) < nbf
        {
            return Err(AuthError::NotYetValid { nbf, now });
        }
        Ok(claims)
    }
}

/// A new random key, base64url (what `onair keys generate` prints): 32 bytes from the
/// operating system's generator.
pub fn generate_key() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn keys() -> Keys {
        let a = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let b = URL_SAFE_NO_PAD.encode([9u8; 40]);
        let entries = [("k1".to_owned(), a), ("k2".to_owned(), b)];
        Keys::from_config(entries.iter().map(|(k, v)| (k, v))).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            sub: "alice".into(),
            name: Some("Alice".into()),
            exp: NOW + 3600,
            nbf: None,
            iat: Some(NOW),
            room: Some(RoomGrant {
                room: "standup".into(),
                publish: Some(vec!["camera".into()]),
                subscribe: true,
                data: false,
                hidden: false,
                admin: false,
            }),
            stream: Some(StreamGrant {
                publish: vec!["live/alice".into()],
                play: vec!["live/*".into()],
            }),
            admin: false,
        }
    }

    #[test]
    fn a_minted_token_verifies_with_its_key_and_keeps_its_grants() {
        let k = keys();
        for kid in ["k1", "k2"] {
            let t = k.mint(Some(kid), &claims()).unwrap();
            assert_eq!(k.verify(&t, NOW).unwrap(), claims());
        }
        let c = k
            .verify(&k.mint(Some("k1"), &claims()).unwrap(), NOW)
            .unwrap();
        let room = c.room.unwrap();
        assert!(room.covers("standup") && !room.covers("standup2"));
        assert!(room.may_publish("camera") && !room.may_publish("screen"));
        let stream = c.stream.unwrap();
        assert!(stream.may_publish("live/alice") && !stream.may_publish("live/bob"));
        assert!(stream.may_play("live/bob") && !stream.may_play("vod/x"));
    }

    #[test]
    fn defaults_of_a_room_grant_allow_what_a_member_does() {
        let g: RoomGrant = serde_json::from_str(r#"{"room":"r*"}"#).unwrap();
        assert!(g.subscribe && g.data && !g.hidden && !g.admin);
        assert!(g.may_publish("screen"));
        assert!(g.covers("r1") && !g.covers("x"));
        let none: RoomGrant = serde_json::from_str(r#"{"room":"*","publish":[]}"#).unwrap();
        assert!(!none.may_publish("camera") && none.covers("anything"));
    }

    #[test]
    fn bad_tokens_say_why() {
        let k = keys();
        let good = k.mint(Some("k1"), &claims()).unwrap();
        assert_eq!(k.verify("", NOW), Err(AuthError::Missing));
        assert!(matches!(k.verify("abc", NOW), Err(AuthError::Malformed(_))));
        assert_eq!(
            k.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW),
            Err(AuthError::TooLong)
        );
        // Expired (past the leeway), and not yet valid.
        assert!(matches!(
            k.verify(&good, NOW + 3600 + LEEWAY_SECS + 1),
            Err(AuthError::Expired { .. })
        ));
        assert!(k.verify(&good, NOW + 3600 + LEEWAY_SECS).is_ok());
        let mut later = claims();
        later.nbf = Some(NOW + 600);
        let t = k.mint(None, &later).unwrap();
        assert!(matches!(
            k.verify(&t, NOW),
            Err(AuthError::NotYetValid { .. })
        ));
        // Signed by a key this server does not have, under a name it does.
        let other = Keys::from_config(
            [("k1".to_owned(), URL_SAFE_NO_PAD.encode([1u8; 32]))]
                .iter()
                .map(|(a, b)| (a, b)),
        )
        .unwrap();
        let forged = other.mint(Some("k1"), &claims()).unwrap();
        assert_eq!(k.verify(&forged, NOW), Err(AuthError::BadSignature));
        // A tampered payload.
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut evil = claims();
        evil.admin = true;
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).unwrap());
        parts[1] = &payload;
        assert_eq!(
            k.verify(&parts.join("."), NOW),
            Err(AuthError::BadSignature)
        );
        // An unknown key name; `alg: none`.
        let unknown = Keys::from_config(
            [("k9".to_owned(), URL_SAFE_NO_PAD.encode([7u8; 32]))]
                .iter()
                .map(|(a, b)| (a, b)),
        )
        .unwrap()
        .mint(None, &claims())
        .unwrap();
        assert_eq!(
            k.verify(&unknown, NOW),
            Err(AuthError::UnknownKey("k9".into()))
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap())
        );
        assert!(k.verify(&none, NOW).is_err());
        // Claims without an identity or an expiry.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"k1"}"#);
        for body in [r#"{"exp":1900000000}"#, r#"{"sub":"x"}"#] {
            let t = format!("{header}.{}.sig", URL_SAFE_NO_PAD.encode(body));
            assert!(k.verify(&t, NOW).is_err(), "{body}");
        }
    }

    #[test]
    fn keys_must_be_long_base64() {
        let short = [("a".to_owned(), URL_SAFE_NO_PAD.encode([1u8; 16]))];
        assert!(matches!(
            Keys::from_config(short.iter().map(|(a, b)| (a, b))),
            Err(KeyError::TooShort { len: 16, .. })
        ));
        let junk = [("a".to_owned(), "not base64 !".to_owned())];
        assert!(matches!(
            Keys::from_config(junk.iter().map(|(a, b)| (a, b))),
            Err(KeyError::NotBase64(_))
        ));
        let generated = generate_key().unwrap();
        let ok = [("g".to_owned(), generated)];
        assert!(Keys::from_config(ok.iter().map(|(a, b)| (a, b))).is_ok());
        assert!(format!("{:?}", keys()).contains("k1"));
        assert!(
            !format!("{:?}", keys()).contains("BwcH"),
            "no secret in Debug"
        );
    }
}
