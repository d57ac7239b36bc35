//! What clients are told about onair's STUN/TURN: the URLs, and fresh time-limited
//! credentials (the join reply, WHIP/WHEP Link headers, `GET /api/ice-servers`).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use sfu::signal::IceServer;
use turn::Credentials;

use crate::config::Config;

/// What clients are told about our STUN/TURN: the URLs, and fresh time-limited credentials.
#[derive(Debug)]
pub struct IceServers {
    urls: Vec<String>,
    stun_urls: Vec<String>,
    credentials: Credentials,
    ttl_secs: u64,
}

impl IceServers {
    /// From the config; `secret` is the REST secret in force (the configured or a random one).
    pub fn new(config: &Config, secret: &str) -> Self {
        let t = &config.turn;
        if !t.enabled {
            return Self {
                urls: Vec::new(),
                stun_urls: Vec::new(),
                credentials: Credentials::new(None),
                ttl_secs: 0,
            };
        }
        let hosts: Vec<String> = config
            .turn_ips()
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            })
            .collect();
        let mut urls: Vec<String> = hosts
            .iter()
            .flat_map(|h| {
                [
                    format!("turn:{h}:{}?transport=udp", t.port),
                    format!("turn:{h}:{}?transport=tcp", t.port),
                ]
            })
            .collect();
        // turns: only with a configured certificate: browsers refuse the self-signed one, and
        // a URL that always fails only slows gathering down.
        if let Some(port) = t.tls_ports.first().filter(|_| !t.tls_cert.is_empty()) {
            if t.tls_hostname.is_empty() {
                urls.extend(
                    hosts
                        .iter()
                        .map(|h| format!("turns:{h}:{port}?transport=tcp")),
                );
            } else {
                urls.push(format!("turns:{}:{port}?transport=tcp", t.tls_hostname));
            }
        }
        let stun_urls = hosts
            .iter()
            .map(|h| format!("stun:{h}:{}", t.port))
            .collect();
        Self {
            urls,
            stun_urls,
            credentials: Credentials::new(Some(secret)),
            ttl_secs: t.credential_ttl_secs,
        }
    }

    /// `RTCIceServer` objects for `user` (who the credentials name; quotas count per user).
    pub fn for_user(&self, user: &str) -> Vec<IceServer> {
        if self.urls.is_empty() {
            return Vec::new();
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Some(issued) = self.credentials.issue(user, now, self.ttl_secs) else {
            return Vec::new();
        };
        vec![
            IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            },
            IceServer {
                urls: self.urls.clone(),
                username: Some(issued.username),
                credential: Some(issued.password),
            },
        ]
    }
}

/// The TURN user of a token's subject: `sub-` and its name, in characters a TURN username
/// carries without trouble.
pub fn subject_user(sub: &str) -> String {
    let name: String = sub
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.@".contains(*c))
        .take(64)
        .collect();
    format!("sub-{name}")
}

/// A REST secret for this run when none is configured: 24 bytes from the OS, base64.
pub fn random_secret() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(config: &Config) -> Vec<String> {
        IceServers::new(config, "secret")
            .for_user("alice")
            .into_iter()
            .flat_map(|s| s.urls)
            .collect()
    }

    #[test]
    fn turns_urls_only_with_a_configured_certificate() {
        let mut c = Config::default();
        assert_eq!(
            urls(&c),
            [
                "stun:127.0.0.1:3478",
                "turn:127.0.0.1:3478?transport=udp",
                "turn:127.0.0.1:3478?transport=tcp"
            ]
        );
        c.turn.tls_cert = "/etc/onair/cert.pem".into();
        c.turn.tls_key = "/etc/onair/key.pem".into();
        assert!(urls(&c).contains(&"turns:127.0.0.1:5349?transport=tcp".to_owned()));
        c.turn.tls_hostname = "turn.example.com".into();
        c.turn.tls_ports = vec![443, 5349];
        assert_eq!(
            urls(&c).last().map(String::as_str),
            Some("turns:turn.example.com:443?transport=tcp")
        );
    }
}
