//! `/healthz` (the process answers) and `/readyz` (the key store answers too).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// Liveness: the process is up and its stream registry runs (without it no publish can
/// be accepted, so an orchestrator should restart the process).
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200), (status = 503)))]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if state.registry.connected() {
        HttpResponse::Ok().json(json!({"status": "ok"}))
    } else {
        tracing::error!("the stream registry is not running");
        HttpResponse::ServiceUnavailable().json(json!({"status": "registry_down"}))
    }
}

/// Readiness: the key store answers.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200), (status = 503)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.keys.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready", "store": "ok"})),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "not_ready", "store": "unavailable"}))
        }
    }
}
