//! `kawa serve`: wires the stores, the HTTP and gRPC servers together and runs them
//! until SIGINT or SIGTERM.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, middleware, web};
use base64::Engine;

use actix::Actor;

use crate::actors::registry::{EndAll, SessionCount, StreamRegistry};
use crate::actors::rtmp_conn::IngestContext;
use crate::actors::rtmp_listener::RtmpListener;
use crate::actors::session::SessionContext;
use crate::actors::uploader::Deliveries;
use crate::config::Settings;
use crate::delivery::memory::LiveStore;
use crate::delivery::s3::S3Target;
use crate::grpc;
use crate::http::hls::HlsRoot;
use crate::http::{self, AppState, PublicUrls, auth::AdminToken};
use crate::keys::authorizer::PublishAuthorizer;
use crate::keys::{KeyManager, KeyStore, embedded::EmbeddedStore, redis::RedisStore};
use crate::recordings::{RecordingIndex, Recordings};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("admin token file {path}: {source}")]
    AdminToken { path: PathBuf, source: io::Error },
    #[error("key store: {0}")]
    Store(#[from] crate::keys::StoreError),
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("rtmp.key_service_url: {0}")]
    KeyService(#[from] crate::keys::authorizer::AuthorizeError),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("{what} server failed: {reason}")]
    Server { what: &'static str, reason: String },
    #[error("the {0} exceeded its restart intensity; Kawa stopped so that it is started again")]
    Escalated(&'static str),
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

/// The key store, and the recordings index it keeps too.
type Stores = (Arc<dyn KeyStore>, Arc<dyn RecordingIndex>);

fn open_store(settings: &Settings) -> Result<Stores, ServeError> {
    let timeout = Duration::from_millis(settings.store.timeout_ms);
    if settings.store.redis_url.is_empty() {
        let path = settings.data_dir.join("keys.redb");
        tracing::info!(path = %path.display(), "key store: embedded");
        let store = Arc::new(EmbeddedStore::open(&path)?);
        Ok((store.clone(), store))
    } else {
        tracing::info!("key store: redis");
        let store = Arc::new(RedisStore::connect(
            settings.store.redis_url.expose(),
            timeout,
        )?);
        Ok((store.clone(), store))
    }
}

/// Recordings a crash interrupted: finished from their journals, their playlists queued
/// for S3 behind the segment copies still in the spool, then announced.
async fn finish_interrupted_recordings(
    recordings: &Recordings,
    cluster: Option<&crate::cluster::Cluster>,
    deliveries: &Deliveries,
    hooks: Option<&Arc<crate::hooks::Hooks>>,
) {
    for done in recordings.finish_interrupted(cluster).await {
        crate::metrics::METRICS
            .recordings_finished
            .with_label_values(&["recovered"])
            .inc();
        if let Some(uploader) = deliveries.uploader(done.info.publish_path.as_str()) {
            uploader.do_send(crate::actors::uploader::Deliver {
                outputs: Vec::new(),
                fence: None,
                recording: Some(done.batch),
            });
        }
        if let Some(hooks) = hooks {
            hooks.notify(crate::hooks::HookEvent::recording_ready(
                recordings.view(done.info),
            ));
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// How long shutdown waits for streams to write their last segments and ENDLIST.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Threads for each HTTP worker's file reads (segments, recordings). actix-web allows 512
/// divided by the cores, and tokio starts one whenever none is idle: 50 readers of 50
/// streams kept 52 alive, each thread's allocator heap holding the segment copies it
/// read until its own next allocation (soak bench: 350 MB with the readers, 63 MB
/// without; 170 MB with 4). Reads come from the page cache (the segments were just
/// written), so a few threads keep up.
const HTTP_BLOCKING_THREADS: usize = 4;

/// Ends every stream cleanly, so viewers (and the S3 copy) see ENDLIST rather than a
/// playlist that stopped moving. Uploads still queued stay in the spool for next start.
async fn end_streams(registry: &actix::Addr<StreamRegistry>) {
    let live = registry.send(EndAll).await.unwrap_or(0);
    if live > 0 {
        tracing::info!(streams = live, "ending live streams");
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while registry.send(SessionCount).await.unwrap_or(0) > 0 {
        if tokio::time::Instant::now() > deadline {
            tracing::warn!("streams still ending at shutdown; stopping anyway");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    let (store, recording_index) = open_store(&settings)?;
    let store_timeout = Duration::from_millis(settings.store.timeout_ms);
    let keys = KeyManager::new(store, store_timeout);
    let settings = Arc::new(settings);

    // HLS output of an earlier run is stale (no session survives a restart).
    let hls_root = settings.data_dir.join("hls");
    let _ = std::fs::remove_dir_all(&hls_root);
    std::fs::create_dir_all(&hls_root).map_err(|source| ServeError::DataDir {
        path: hls_root.clone(),
        source,
    })?;

    let s3 = if settings.s3.enabled() {
        tracing::info!(bucket = %settings.s3.bucket, endpoint = %settings.s3.endpoint, "S3 delivery on");
        Some(S3Target::connect(&settings.s3).await)
    } else {
        None
    };
    let cluster = crate::cluster::Cluster::from_settings(&settings)?;
    if let Some(cluster) = &cluster {
        tracing::info!(
            node = cluster.node_id(),
            "cluster on: stream ownership in Redis"
        );
    }
    let hooks = crate::hooks::Hooks::from_settings(&settings.hooks);
    let viewer_s3 = s3.clone();
    let recordings = Recordings::new(
        recording_index,
        settings.data_dir.join("recordings"),
        s3.clone(),
        store_timeout,
    );
    crate::recordings::spawn_sweeper(
        Arc::clone(&recordings),
        settings.recordings.retention_seconds,
    );
    let deliveries = Deliveries::new(
        s3,
        settings.data_dir.join("spool/s3"),
        settings.s3.delete_grace_seconds,
        cluster.clone(),
    );
    // Uploads an earlier run could not finish (an outage, a crash) go out first.
    deliveries.resume();
    finish_interrupted_recordings(&recordings, cluster.as_deref(), &deliveries, hooks.as_ref())
        .await;

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arbiters = crate::actors::Arbiters::start(cores);
    tracing::info!(
        arbiters = cores,
        "RTMP connections and stream sessions spread over one arbiter per core"
    );
    let live = Arc::new(LiveStore::default());
    let webrtc = match settings.webrtc.udp_addr() {
        Some(addr) => Some(
            crate::webrtc::WebRtc::start(&settings.webrtc, addr)
                .await
                .map_err(|source| ServeError::Bind {
                    what: "WebRTC",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    let (webrtc, webrtc_addr) = match webrtc {
        Some((webrtc, addr)) => (Some(webrtc), Some(addr)),
        None => (None, None),
    };
    let session_context = Arc::new(SessionContext {
        settings: Arc::clone(&settings),
        arbiters: arbiters.clone(),
        hls_root: hls_root.clone(),
        deliveries,
        live: Arc::clone(&live),
        cluster: cluster.clone(),
        hooks: hooks.clone(),
        keys: Some(keys.clone()),
        recordings: Some(Arc::clone(&recordings)),
        webrtc: webrtc.clone(),
    });
    let registry = StreamRegistry::new(
        settings.rtmp.takeover,
        Duration::from_millis(settings.rtmp.reconnect_grace_ms),
        session_context,
    )
    .start();
    let authorizer = if settings.rtmp.key_service_url.is_empty() {
        PublishAuthorizer::local(keys.clone(), settings.rtmp.app.clone())
    } else {
        tracing::info!("stream keys: checked by the key manager over gRPC");
        PublishAuthorizer::remote(
            &settings.rtmp.key_service_url,
            settings.grpc.token.expose(),
            store_timeout,
        )?
    };
    let rtmp_addr = settings.rtmp.addr;
    let rtmp_listener = tokio::net::TcpListener::bind(rtmp_addr)
        .await
        .map_err(|source| ServeError::Bind {
            what: "RTMP",
            addr: rtmp_addr,
            source,
        })?;
    // With port 0 the OS picks; everything below shows the real address.
    let rtmp_addr = rtmp_listener.local_addr().unwrap_or(rtmp_addr);
    let ingest_context = Arc::new(IngestContext {
        settings: Arc::clone(&settings),
        arbiters,
        authorizer,
        registry: registry.clone(),
        hooks,
    });
    let srt_addr = match settings.srt.addr() {
        Some(addr) => Some(
            crate::actors::srt::listen(addr, Arc::clone(&ingest_context))
                .await
                .map_err(|source| ServeError::Bind {
                    what: "SRT",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    RtmpListener::new(rtmp_listener, ingest_context).start();

    let tls = match settings.http.tls() {
        Some((cert, key)) => Some(http::tls::server_config(cert, key)?),
        None => None,
    };
    let http_addr = settings.http.addr;
    let http_listener =
        std::net::TcpListener::bind(http_addr).map_err(|source| ServeError::Bind {
            what: "HTTP",
            addr: http_addr,
            source,
        })?;
    let http_addr = http_listener.local_addr().unwrap_or(http_addr);
    // Inherited by every accepted connection: one whose peer takes nothing for this long
    // is closed by the kernel, and actix drops its buffers.
    if let Err(e) = socket2::SockRef::from(&http_listener)
        .set_tcp_user_timeout(Some(Duration::from_millis(settings.http.send_timeout_ms)))
    {
        tracing::warn!(error = %e, "cannot set http.send_timeout_ms on the HTTP socket");
    }
    if let Some(cluster) = &cluster {
        cluster.advertise_default(http_addr)?;
        cluster.spawn_heartbeat();
    }
    let state = web::Data::new(AppState {
        keys: keys.clone(),
        admin_token: AdminToken::new(&token),
        public: PublicUrls::new(&settings, http_addr.port(), rtmp_addr.port()),
        registry: registry.clone(),
    });
    let hls_root = web::Data::new(HlsRoot(hls_root));
    let thumbnail_every = web::Data::new(http::hls::ThumbnailEvery(Duration::from_secs(
        settings.hls.thumbnail_seconds,
    )));
    let live = web::Data::from(live);
    let proxy = cluster
        .clone()
        .map(|c| web::Data::new(http::proxy::ClusterProxy::new(c, viewer_s3)));
    let viewers = web::Data::new(http::viewers::Viewers::new(
        settings.http.trusted_proxies().clone(),
    ));
    let recordings = web::Data::new(recordings);
    let webrtc = webrtc.map(web::Data::new);

    crate::metrics::register_runtime("system");
    let http_server = HttpServer::new(move || {
        // Runs on each HTTP worker's thread: its tasks count too.
        crate::metrics::register_runtime("http");
        crate::memory::collect_on_this_thread();
        crate::http::files::sweep_from_this_thread();
        let mut app = App::new()
            .app_data(state.clone())
            .app_data(hls_root.clone())
            .app_data(thumbnail_every.clone())
            .app_data(live.clone())
            .app_data(viewers.clone())
            .app_data(recordings.clone());
        if let Some(proxy) = &proxy {
            app = app.app_data(proxy.clone());
        }
        if let Some(webrtc) = &webrtc {
            app = app.app_data(webrtc.clone());
        }
        app.wrap(middleware::Compress::default())
            .configure(http::configure)
    })
    .disable_signals()
    .worker_max_blocking_threads(HTTP_BLOCKING_THREADS)
    // Small: what a connection that stops reading holds (see `http::files`).
    .h1_write_buffer_size(http::files::CHUNK)
    .shutdown_timeout(5);
    let http_server = match &tls {
        Some(config) => http_server.listen_rustls_0_23(http_listener, config.clone()),
        None => http_server.listen(http_listener),
    }
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
    let grpc_addr = incoming.local_addr().unwrap_or(grpc_addr);
    let (grpc_stop, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let grpc_options = grpc::GrpcOptions {
        app: settings.rtmp.app.clone(),
        token: settings.grpc.token.expose().to_owned(),
        max_concurrent: settings.grpc.max_concurrent_requests,
    };
    let grpc_server = tokio::spawn(grpc::serve(incoming, keys, grpc_options, async {
        let _ = grpc_stopped.await;
    }));
    tracing::info!(http = %http_addr, https = tls.is_some(), rtmp = %rtmp_addr, srt = %srt_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()), webrtc = %webrtc_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()), grpc = %grpc_addr, "kawa is up");

    let http_task = tokio::spawn(http_server);
    tokio::pin!(http_task, grpc_server);
    let mut escalated = None;
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        what = crate::actors::supervision::escalated() => escalated = Some(what),
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
    end_streams(&registry).await;
    let _ = grpc_stop.send(());
    http_handle.stop(true).await;
    let _ = grpc_server.await;
    tracing::info!("stopped");
    match escalated {
        Some(what) => Err(ServeError::Escalated(what)),
        None => Ok(()),
    }
}
