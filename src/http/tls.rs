//! HTTPS for the HTTP listener (rustls), with HTTP/2 offered by ALPN: Safari plays
//! LL-HLS only over HTTP/2, and one connection then carries a viewer's held playlist
//! request and its part downloads.

use std::path::{Path, PathBuf};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("http.tls_cert {path}: {source}")]
    Certificate {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("http.tls_cert {path}: no certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("http.tls_key {path}: {source}")]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("http.tls_cert and http.tls_key do not go together: {0}")]
    Mismatch(rustls::Error),
    #[error("TLS: {0}")]
    Provider(rustls::Error),
}

/// The server's TLS configuration from PEM files: the certificate chain (leaf first)
/// and its private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificate {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    // The provider named, not the process default: more than one may be compiled in.
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Mismatch)?;
    // HTTP/2 first: what Safari needs for LL-HLS; HTTP/1.1 for everything else.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
