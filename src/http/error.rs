//! The API's error body: `{"error": "<code>", "message": "<human text>"}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::keys::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A code (`invalid_json`, ...) and the message for people.
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("missing or wrong admin token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the key store is unavailable; try again shortly")]
    StoreUnavailable,
    #[error("internal error")]
    Internal,
}

/// What every failed API call returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code: `invalid_json`, `invalid_path`, `invalid_label`,
    /// `payload_too_large`, `method_not_allowed`, `unauthorized`, `not_found`, `conflict`,
    /// `store_unavailable`, `internal`.
    pub error: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(code, _) => code,
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::StoreUnavailable => "store_unavailable",
            Self::Internal => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(..) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(path) => {
                Self::Conflict(format!("publish path `{path}` is already taken"))
            }
            StoreError::NotFound(path) => Self::NotFound(format!("no stream `{path}`")),
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "key store unavailable");
                Self::StoreUnavailable
            }
            StoreError::Corrupt(reason) => {
                tracing::error!(%reason, "key store data is corrupt");
                Self::Internal
            }
        }
    }
}

impl From<crate::recordings::RecordingError> for ApiError {
    fn from(err: crate::recordings::RecordingError) -> Self {
        use crate::recordings::RecordingError as E;
        match err {
            E::Store(e) => e.into(),
            E::InProgress => Self::Conflict("the recording is still going".to_owned()),
            E::S3(_) | E::Files(_) => {
                tracing::error!(error = %err, "recording not deleted");
                Self::Internal
            }
        }
    }
}
