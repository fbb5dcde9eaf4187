//! https and wss without a proxy: the HTTP server on rustls, its certificate read from PEM
//! files and read again on demand (SIGHUP) without dropping a connection.
//!
//! A reload builds a whole new rustls configuration and swaps it in for the handshakes that
//! follow; connections already open keep the session they made. A reload that fails (a file
//! missing, a key that does not match) changes nothing and says why, so a botched renewal
//! never takes the server off the air.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no PEM of the kind wanted.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match the certificate, say).
    #[error("certificate {cert} with key {key}: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// The server's certificate: where it is read from, and the configuration in use.
#[derive(Clone)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: RustlsConfig,
}

impl Tls {
    /// Read the certificate chain at `cert` and the private key at `key` (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let config = server_config(cert, key)?;
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            config: RustlsConfig::from_config(config),
        })
    }

    /// Read the files again and use them for every handshake from now on; on error the
    /// certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        self.config.reload_from_config(config);
        Ok(())
    }

    /// What the server's acceptor uses (it follows reloads).
    pub fn config(&self) -> RustlsConfig {
        self.config.clone()
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let file_error = |path: &Path, reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair_error = |reason: String| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pair_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| pair_error(e.to_string()))?;
    // HTTP/1.1: browsers open websockets over it (HTTP/2 would need extended CONNECT).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_bad_pair_is_refused_with_the_file_and_the_reason_and_a_reload_keeps_the_old() {
        let dir = std::env::temp_dir().join(format!("webrtcai-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = write(&dir, "cert.pem", &a.cert.pem());
        let key = write(&dir, "key.pem", &a.key_pair.serialize_pem());
        let tls = Tls::load(&cert, &key).unwrap();

        // b's key with a's certificate: refused, and the loaded pair stays.
        write(&dir, "key.pem", &b.key_pair.serialize_pem());
        let err = tls.reload().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("certificate {}", cert.display())),
            "{err}"
        );
        write(&dir, "cert.pem", "not a certificate");
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.contains("no certificate"), "{err}");
        let missing = Tls::load(&dir.join("missing.pem"), &key)
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("missing.pem"), "{missing}");

        // b's pair: taken.
        write(&dir, "cert.pem", &b.cert.pem());
        tls.reload().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
