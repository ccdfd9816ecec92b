//! Kawa's internal gRPC API (tonic): `KeyService` for ingest nodes that run apart from
//! the key manager.

use tonic::{Request, Response, Status};

use crate::keys::{Authorization, KeyManager};

/// Code generated from `proto/kawa.proto`.
pub mod proto {
    tonic::include_proto!("kawa.v1");
}

use proto::key_service_server::{KeyService, KeyServiceServer};
use proto::{AuthorizePublishRequest, AuthorizePublishResponse};

pub struct KeyServiceImpl {
    keys: KeyManager,
    app: String,
}

impl KeyServiceImpl {
    pub fn new(keys: KeyManager, app: String) -> Self {
        Self { keys, app }
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
        let req = request.into_inner();
        let client = req.client_addr.as_str();
        if req.app != self.app {
            tracing::info!(client, app = %req.app, "publish refused: unknown app");
            return Ok(refused("unknown_app"));
        }
        match self.keys.authorize(&req.stream_key).await {
            Ok(Authorization::Allowed(path)) => Ok(Response::new(AuthorizePublishResponse {
                allowed: true,
                publish_path: path.to_string(),
                reason: String::new(),
            })),
            Ok(Authorization::UnknownKey) => {
                tracing::info!(client, "publish refused: unknown stream key");
                Ok(refused("unknown_key"))
            }
            Err(e) => {
                tracing::warn!(client, error = %e, "key check failed");
                Err(Status::unavailable("key store unavailable"))
            }
        }
    }
}

/// Serves the gRPC API until `shutdown` resolves.
pub async fn serve(
    incoming: tonic::transport::server::TcpIncoming,
    keys: KeyManager,
    app: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(KeyServiceServer::new(KeyServiceImpl::new(keys, app)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
