//! TLS server settings: a certificate chain and key from PEM files, or a self-signed
//! certificate made at start for development (clients that verify certificates, browsers
//! among them, will not accept it; TURN test tools and `curl -k` do).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate chain {path}: {source}")]
    Cert {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("certificate file {0} holds no certificate")]
    NoCert(String),
    #[error("reading private key {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate and key do not make a TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate onair serves.
pub struct Tls {
    pub config: Arc<ServerConfig>,
    /// Made at start, not configured: nothing that verifies certificates accepts it.
    pub self_signed: bool,
}

/// From `cert`/`key` PEM files, or self-signed for `names` (IPs and DNS names) when both are
/// None.
pub fn load(cert: Option<&Path>, key: Option<&Path>, names: &[IpAddr]) -> Result<Tls, TlsError> {
    let (chain, key, self_signed) = match (cert, key) {
        (Some(cert), Some(key)) => {
            let display = |p: &Path| p.display().to_string();
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|source| TlsError::Cert {
                    path: display(cert),
                    source,
                })?;
            if chain.is_empty() {
                return Err(TlsError::NoCert(display(cert)));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
                path: display(key),
                source,
            })?;
            (chain, key, false)
        }
        _ => {
            let mut sans: Vec<String> = names.iter().map(ToString::to_string).collect();
            sans.push("localhost".into());
            let key_pair = rcgen::KeyPair::generate()?;
            let cert = rcgen::CertificateParams::new(sans)?.self_signed(&key_pair)?;
            // rcgen serializes keys as PKCS#8.
            let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
            (vec![cert.der().clone()], key, true)
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Tls {
        config: Arc::new(config),
        self_signed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_when_none_is_configured() {
        let tls = load(None, None, &["127.0.0.1".parse().expect("ip")]).expect("tls");
        assert!(tls.self_signed);
    }

    #[test]
    fn missing_or_empty_files_are_clear_errors() {
        let e = load(
            Some(Path::new("/nonexistent/cert.pem")),
            Some(Path::new("/nonexistent/key.pem")),
            &[],
        )
        .err()
        .expect("an error");
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("onair-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here\n").expect("write");
        let e = load(Some(&empty), Some(&empty), &[])
            .err()
            .expect("an error");
        assert!(matches!(e, TlsError::NoCert(_)), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
