//! A viewer's HTTP/2 connection over TLS (ALPN h2), as Safari plays LL-HLS: hyper's
//! HTTP/2 client on tokio-rustls, trusting one self-signed certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

pub struct H2 {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

/// The TLS settings every viewer shares: `cert` (PEM) trusted, h2 offered.
pub fn tls_config(cert: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(cert).filter_map(Result::ok) {
        roots.add(der).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

impl H2 {
    pub async fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            authority: addr.to_string(),
        })
    }

    /// GET `url` (its path and query: the connection's host); the status and body.
    pub async fn get(&mut self, url: &str) -> Option<(u16, Bytes)> {
        let request = hyper::Request::get(self.uri(url))
            .body(Full::new(Bytes::new()))
            .ok()?;
        self.send(request).await
    }

    /// POST a JSON body with a bearer token.
    pub async fn post_json(
        &mut self,
        url: &str,
        token: &str,
        json: String,
    ) -> Option<(u16, Bytes)> {
        let request = hyper::Request::post(self.uri(url))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json)))
            .ok()?;
        self.send(request).await
    }

    fn uri(&self, url: &str) -> String {
        let path = url.split_once("://").map_or(url, |(_, rest)| rest);
        let path = path.find('/').map_or("/", |i| &path[i..]);
        format!("https://{}{path}", self.authority)
    }

    async fn send(&mut self, request: hyper::Request<Full<Bytes>>) -> Option<(u16, Bytes)> {
        self.sender.ready().await.ok()?;
        let response = self.sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    }
}
