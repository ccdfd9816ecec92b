//! `kawa serve`: wires the stores, the HTTP and gRPC servers together and runs them
//! until SIGINT or SIGTERM.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, middleware, web};
use base64::Engine;

use crate::config::Settings;
use crate::grpc;
use crate::http::{self, AppState, PublicUrls, auth::AdminToken};
use crate::keys::{KeyManager, KeyStore, embedded::EmbeddedStore, redis::RedisStore};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("admin token file {path}: {source}")]
    AdminToken { path: PathBuf, source: io::Error },
    #[error("key store: {0}")]
    Store(#[from] crate::keys::StoreError),
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("{what} server failed: {reason}")]
    Server { what: &'static str, reason: String },
}

/// Where the admin token comes from, for the start-up log line (never the token).
enum TokenSource {
    Configured,
    File(PathBuf),
    Generated(PathBuf),
}

/// The configured token, or the one in `DATA_DIR/admin-token`, or a new one written there
/// with mode 0600.
fn admin_token(settings: &Settings) -> Result<(String, TokenSource), ServeError> {
    if !settings.admin_token.is_empty() {
        return Ok((
            settings.admin_token.expose().to_owned(),
            TokenSource::Configured,
        ));
    }
    let path = settings.data_dir.join("admin-token");
    let err = |source| ServeError::AdminToken {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok((text.trim().to_owned(), TokenSource::File(path)));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| err(io::Error::other(e.to_string())))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    write_private(&path, &token).map_err(err)?;
    Ok((token, TokenSource::Generated(path)))
}

fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

fn open_store(settings: &Settings) -> Result<Arc<dyn KeyStore>, ServeError> {
    let timeout = Duration::from_millis(settings.store.timeout_ms);
    if settings.store.redis_url.is_empty() {
        let path = settings.data_dir.join("keys.redb");
        tracing::info!(path = %path.display(), "key store: embedded");
        Ok(Arc::new(EmbeddedStore::open(&path)?))
    } else {
        tracing::info!("key store: redis");
        Ok(Arc::new(RedisStore::connect(
            settings.store.redis_url.expose(),
            timeout,
        )?))
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub async fn serve(settings: Settings) -> Result<(), ServeError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| ServeError::DataDir {
        path: settings.data_dir.clone(),
        source,
    })?;
    let (token, source) = admin_token(&settings)?;
    match &source {
        TokenSource::Configured => tracing::info!("admin token: from configuration"),
        TokenSource::File(path) => {
            tracing::info!(path = %path.display(), "admin token: read from file")
        }
        TokenSource::Generated(path) => {
            tracing::warn!(path = %path.display(), "admin token: generated and written to file (mode 0600)")
        }
    }
    let store = open_store(&settings)?;
    let keys = KeyManager::new(store, Duration::from_millis(settings.store.timeout_ms));
    let state = web::Data::new(AppState {
        keys: keys.clone(),
        admin_token: AdminToken::new(&token),
        public: PublicUrls::from_settings(&settings),
    });

    let http_addr = settings.http.addr;
    let http_server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::Compress::default())
            .configure(http::configure)
    })
    .disable_signals()
    .shutdown_timeout(5)
    .bind(http_addr)
    .map_err(|source| ServeError::Bind {
        what: "HTTP",
        addr: http_addr,
        source,
    })?
    .run();
    let http_handle = http_server.handle();

    let grpc_addr = settings.grpc.addr;
    let incoming = tonic::transport::server::TcpIncoming::bind(grpc_addr).map_err(|source| {
        ServeError::Bind {
            what: "gRPC",
            addr: grpc_addr,
            source,
        }
    })?;
    let (grpc_stop, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let grpc_server = tokio::spawn(grpc::serve(
        incoming,
        keys,
        settings.rtmp.app.clone(),
        async {
            let _ = grpc_stopped.await;
        },
    ));
    tracing::info!(http = %http_addr, grpc = %grpc_addr, "kawa is up");

    let http_task = tokio::spawn(http_server);
    tokio::pin!(http_task, grpc_server);
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        result = &mut http_task => {
            let reason = format!("{result:?}");
            return Err(ServeError::Server { what: "HTTP", reason });
        }
        result = &mut grpc_server => {
            let reason = match result {
                Ok(Err(e)) => e.to_string(),
                other => format!("{other:?}"),
            };
            return Err(ServeError::Server { what: "gRPC", reason });
        }
    }
    let _ = grpc_stop.send(());
    http_handle.stop(true).await;
    let _ = grpc_server.await;
    tracing::info!("stopped");
    Ok(())
}
