//! Who may allocate: static long-term users from config, and time-limited credentials in the
//! "TURN REST API" form coturn uses (draft-uberti-behave-turn-rest): the username is
//! `EXPIRY:USER` (EXPIRY in Unix seconds) and the password is
//! base64(HMAC-SHA1(shared secret, username)). A deployment that already hands out coturn
//! credentials can point the same secret at onair.

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Why a username was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// A time-limited username whose expiry has passed.
    #[error("credentials expired {0} s ago")]
    Expired(u64),
    /// Neither a static user nor a time-limited username (or no shared secret is configured).
    #[error("unknown user")]
    Unknown,
    /// A time-limited username valid further ahead than any credential this server issues
    /// (a leaked "forever" credential must not keep working).
    #[error("credentials valid for {0} s more, past the longest lifetime allowed")]
    TooLong(u64),
}

/// The credential store.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    users: HashMap<String, String>,
    secret: Option<Vec<u8>>,
    /// The longest a time-limited username may still be valid for (None: no bound).
    max_lifetime: Option<u64>,
}

/// A username and password to hand to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// `EXPIRY:USER`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
}

impl Credentials {
    /// A store with a shared secret for time-limited credentials (None: static users only).
    pub fn new(secret: Option<&str>) -> Self {
        Self {
            users: HashMap::new(),
            secret: secret.map(|s| s.as_bytes().to_vec()),
            max_lifetime: None,
        }
    }

    /// Refuses time-limited usernames that expire more than `secs` from now (the server's own
    /// credential lifetime, with some slack for another service minting with the secret).
    pub fn set_max_lifetime(&mut self, secs: u64) {
        self.max_lifetime = Some(secs);
    }

    /// Adds a static long-term user.
    pub fn add_user(&mut self, username: &str, password: &str) {
        self.users.insert(username.to_owned(), password.to_owned());
    }

    /// Whether time-limited credentials can be issued and checked.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The password for `username` at `now_unix` (seconds), or why there is none.
    pub fn password(&self, username: &str, now_unix: u64) -> Result<String, CredentialError> {
        if let Some(p) = self.users.get(username) {
            return Ok(p.clone());
        }
        let Some(secret) = &self.secret else {
            return Err(CredentialError::Unknown);
        };
        // coturn reads the timestamp as the part before the separator; the rest is the user.
        let Some(expiry) = username
            .split_once(':')
            .map_or(Some(username), |(t, _)| Some(t))
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return Err(CredentialError::Unknown);
        };
        if expiry < now_unix {
            return Err(CredentialError::Expired(now_unix - expiry));
        }
        if let Some(max) = self.max_lifetime
            && expiry - now_unix > max
        {
            return Err(CredentialError::TooLong(expiry - now_unix));
        }
        Ok(rest_password(secret, username))
    }

    /// Time-limited credentials for `user`, valid for `ttl_secs` from `now_unix`.
    pub fn issue(&self, user: &str, now_unix: u64, ttl_secs: u64) -> Option<Issued> {
        let secret = self.secret.as_ref()?;
        let username = format!("{}:{user}", now_unix + ttl_secs);
        let password = rest_password(secret, &username);
        Some(Issued { username, password })
    }

    /// The identity that quotas count: the USER part of a time-limited username (so a client
    /// cannot escape its quota by asking for fresh credentials), else the whole name.
    pub fn quota_key(username: &str) -> &str {
        match username.split_once(':') {
            Some((t, user)) if t.parse::<u64>().is_ok() => user,
            _ => username,
        }
    }
}

/// base64(HMAC-SHA1(secret, username)), coturn's `use-auth-secret` password.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length; the error arm cannot happen.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_valid_for_longer_than_allowed_are_refused() {
        let mut c = Credentials::new(Some("s"));
        c.set_max_lifetime(86_400);
        let now = 1_800_000_000;
        assert!(c.password(&format!("{}:u", now + 3600), now).is_ok());
        // The year 2100.
        assert!(matches!(
            c.password("4102444800:u", now),
            Err(CredentialError::TooLong(_))
        ));
    }

    #[test]
    fn rest_password_matches_a_known_vector() {
        // Computed independently: printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            rest_password(b"secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
    }

    #[test]
    fn issued_credentials_check_until_they_expire() {
        let c = Credentials::new(Some("s3cret"));
        let issued = c.issue("bob", 1000, 60).expect("secret set");
        assert_eq!(issued.username, "1060:bob");
        assert_eq!(
            c.password(&issued.username, 1000),
            Ok(issued.password.clone())
        );
        assert_eq!(c.password(&issued.username, 1060), Ok(issued.password));
        assert_eq!(
            c.password(&issued.username, 1061),
            Err(CredentialError::Expired(1))
        );
        assert_eq!(c.password("bob", 1000), Err(CredentialError::Unknown));
        assert_eq!(Credentials::quota_key("1060:bob"), "bob");
        assert_eq!(Credentials::quota_key("carol"), "carol");
    }

    #[test]
    fn static_users_need_no_secret() {
        let mut c = Credentials::new(None);
        c.add_user("alice", "pw");
        assert_eq!(c.password("alice", 0), Ok("pw".into()));
        assert!(c.issue("alice", 0, 60).is_none());
        assert_eq!(c.password("99999:alice", 0), Err(CredentialError::Unknown));
    }
}
