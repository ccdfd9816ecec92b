//! Kawa's internal gRPC API (tonic): `KeyService` for ingest nodes that run apart from
//! the key manager.
//!
//! Internal by default: it listens on loopback unless configured otherwise, and then
//! (`grpc.token`) every call must carry the shared token. Requests are small and capped,
//! and so is the number served at once. Strings from callers are logged escaped (`?`), so
//! a newline in one cannot forge a log line.

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Response, Status};

use crate::keys::{Authorization, KeyManager};

/// Code generated from `proto/kawa.proto`.
pub mod worker;

pub mod proto {
    tonic::include_proto!("kawa.v1");
}

use proto::key_service_server::{KeyService, KeyServiceServer};
use proto::{AuthorizePublishRequest, AuthorizePublishResponse};

/// Largest request accepted: a key check is a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 4096;
/// Longest a call may take before it fails (a key check takes milliseconds).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KeyServiceImpl {
    keys: KeyManager,
    app: String,
    in_flight: Arc<Semaphore>,
}

impl KeyServiceImpl {
    pub fn new(keys: KeyManager, app: String, max_concurrent: usize) -> Self {
        Self {
            keys,
            app,
            in_flight: Arc::new(Semaphore::new(max_concurrent)),
        }
    }
}

/// The `authorization` metadata value for a shared token.
pub fn bearer(token: &str) -> Option<MetadataValue<Ascii>> {
    format!("Bearer {token}").parse().ok()
}

/// Refuses calls without the shared token (none is asked when it is empty).
#[derive(Clone)]
pub struct TokenCheck {
    expected: Option<Arc<[u8]>>,
}

impl TokenCheck {
    pub fn new(token: &str) -> Self {
        Self {
            expected: (!token.is_empty()).then(|| Arc::from(format!("Bearer {token}").as_bytes())),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if bool::from(given.ct_eq(expected)) {
            Ok(request)
        } else {
            tracing::info!("gRPC call refused: missing or wrong token");
            Err(Status::unauthenticated("missing or wrong token"))
        }
    }
}

fn refused(reason: &str) -> Response<AuthorizePublishResponse> {
    Response::new(AuthorizePublishResponse {
        allowed: false,
        publish_path: String::new(),
        reason: reason.to_owned(),
    })
}

#[tonic::async_trait]
impl KeyService for KeyServiceImpl {
    async fn authorize_publish(
        &self,
        request: Request<AuthorizePublishRequest>,
    ) -> Result<Response<AuthorizePublishResponse>, Status> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let req = request.into_inner();
        let client = req.client_addr.as_str();
        if req.app != self.app {
            tracing::info!(client = ?client, app = ?req.app, "publish refused: unknown app");
            return Ok(refused("unknown_app"));
        }
        match self.keys.authorize(&req.stream_key).await {
            Ok(Authorization::Allowed(path)) => Ok(Response::new(AuthorizePublishResponse {
                allowed: true,
                publish_path: path.to_string(),
                reason: String::new(),
            })),
            Ok(Authorization::UnknownKey) => {
                tracing::info!(client = ?client, "publish refused: unknown stream key");
                Ok(refused("unknown_key"))
            }
            Err(e) => {
                tracing::warn!(client = ?client, error = %e, "key check failed");
                Err(Status::unavailable("key store unavailable"))
            }
        }
    }
}

/// What the gRPC server needs besides its listener.
pub struct GrpcOptions {
    pub app: String,
    pub token: String,
    pub max_concurrent: usize,
}

/// Serves the gRPC API until `shutdown` resolves.
pub async fn serve(
    incoming: tonic::transport::server::TcpIncoming,
    keys: KeyManager,
    options: GrpcOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let service = KeyServiceServer::new(KeyServiceImpl::new(
        keys,
        options.app,
        options.max_concurrent,
    ))
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let streams = u32::try_from(options.max_concurrent).unwrap_or(u32::MAX);
    tonic::transport::Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .max_concurrent_streams(streams)
        .concurrency_limit_per_connection(options.max_concurrent)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            service,
            TokenCheck::new(&options.token),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
