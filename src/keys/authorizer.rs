//! Deciding whether an RTMP publish may go ahead: in this process (`kawa serve`) or by
//! asking a key manager over gRPC (ingest nodes that run apart from it).

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::{Authorization, KeyManager, PublishPath};
use crate::grpc::proto::AuthorizePublishRequest;
use crate::grpc::proto::key_service_client::KeyServiceClient;

/// Why a publish was refused, as the RTMP error and the logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownKey,
    UnknownApp,
    /// The publish hook (`hooks.publish_url`) said no.
    Hook,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownKey => "unknown_key",
            Self::UnknownApp => "unknown_app",
            Self::Hook => "refused_by_hook",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed(PublishPath),
    Refused(Refusal),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    #[error("key manager URL is invalid: {0}")]
    BadUrl(String),
    #[error("grpc.token has characters a gRPC header cannot carry")]
    BadToken,
}

#[derive(Clone)]
pub enum PublishAuthorizer {
    Local {
        keys: KeyManager,
        app: String,
    },
    Remote {
        client: KeyServiceClient<Channel>,
        /// `authorization` for the key manager's shared token, when there is one.
        token: Option<MetadataValue<Ascii>>,
        timeout: Duration,
    },
}

impl PublishAuthorizer {
    pub fn local(keys: KeyManager, app: String) -> Self {
        Self::Local { keys, app }
    }

    /// A client for a key manager's gRPC `KeyService`, sending `token` (the shared
    /// `grpc.token`; empty: none); connects on first use.
    pub fn remote(url: &str, token: &str, timeout: Duration) -> Result<Self, AuthorizeError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| AuthorizeError::BadUrl(e.to_string()))?
            .connect_timeout(timeout);
        let token = match token {
            "" => None,
            t => Some(crate::grpc::bearer(t).ok_or(AuthorizeError::BadToken)?),
        };
        Ok(Self::Remote {
            client: KeyServiceClient::new(endpoint.connect_lazy()),
            token,
            timeout,
        })
    }

    pub async fn authorize(
        &self,
        app: &str,
        stream_key: &str,
        client_addr: &str,
    ) -> Result<Decision, AuthorizeError> {
        match self {
            Self::Local {
                keys,
                app: expected,
            } => {
                if app != expected {
                    return Ok(Decision::Refused(Refusal::UnknownApp));
                }
                match keys.authorize(stream_key).await {
                    Ok(Authorization::Allowed(path)) => Ok(Decision::Allowed(path)),
                    Ok(Authorization::UnknownKey) => Ok(Decision::Refused(Refusal::UnknownKey)),
                    Err(e) => Err(AuthorizeError::Unavailable(e.to_string())),
                }
            }
            Self::Remote {
                client,
                token,
                timeout,
            } => {
                let mut client = client.clone();
                let mut request = tonic::Request::new(AuthorizePublishRequest {
                    app: app.to_owned(),
                    stream_key: stream_key.to_owned(),
                    client_addr: client_addr.to_owned(),
                });
                if let Some(token) = token {
                    request
                        .metadata_mut()
                        .insert("authorization", token.clone());
                }
                let reply = tokio::time::timeout(*timeout, client.authorize_publish(request))
                    .await
                    .map_err(|_| {
                        AuthorizeError::Unavailable("key manager did not answer in time".into())
                    })?
                    .map_err(|status| AuthorizeError::Unavailable(status.message().to_owned()))?
                    .into_inner();
                if reply.allowed {
                    let path = PublishPath::parse(&reply.publish_path).map_err(|_| {
                        AuthorizeError::Unavailable("key manager sent an invalid path".into())
                    })?;
                    Ok(Decision::Allowed(path))
                } else if reply.reason == Refusal::UnknownApp.as_str() {
                    Ok(Decision::Refused(Refusal::UnknownApp))
                } else {
                    Ok(Decision::Refused(Refusal::UnknownKey))
                }
            }
        }
    }
}
