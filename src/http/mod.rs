//! Kawa's HTTP side (actix-web): the REST API under `/api/v1`, health checks, and (in
//! later modules) HLS and metrics.

pub mod auth;
pub mod error;
pub mod files;
mod finished;
pub mod health;
pub mod hls;
pub mod proxy;
pub mod recordings;
mod s3_files;
pub mod streams;
pub mod tls;
pub mod viewers;
pub mod watch;
pub mod whep;

use actix_web::{HttpRequest, HttpResponse, web};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::config::Settings;
use crate::keys::{KeyManager, PublishPath};
use auth::AdminToken;
use error::ApiError;

/// Largest JSON body the API accepts; requests are a path and a label.
const MAX_JSON_BYTES: usize = 16 * 1024;

/// Shared by every HTTP worker.
pub struct AppState {
    pub keys: KeyManager,
    pub registry: actix::Addr<crate::actors::registry::StreamRegistry>,
    pub admin_token: AdminToken,
    pub public: PublicUrls,
}

/// The configured public URLs; empty parts are filled from each request.
#[derive(Clone, Debug)]
pub struct PublicUrls {
    http_base: String,
    http_port: u16,
    rtmp_url: String,
    rtmp_port: u16,
    rtmp_app: String,
}

impl PublicUrls {
    /// `http_port` and `rtmp_port` are the bound ports (the OS picks them for port 0).
    pub fn new(s: &Settings, http_port: u16, rtmp_port: u16) -> Self {
        Self {
            http_base: s.http.public_url.trim_end_matches('/').to_owned(),
            http_port,
            rtmp_url: s.rtmp.public_url.trim_end_matches('/').to_owned(),
            rtmp_port,
            rtmp_app: s.rtmp.app.clone(),
        }
    }
}

/// The URLs a response shows for one request.
pub struct Urls {
    pub rtmp: String,
    http_base: String,
}

impl Urls {
    pub fn playback(&self, path: &PublishPath) -> String {
        format!("{}/hls/{path}/master.m3u8", self.http_base)
    }
}

impl AppState {
    pub fn urls(&self, req: &HttpRequest) -> Urls {
        let p = &self.public;
        let host = request_host(req);
        let rtmp = if p.rtmp_url.is_empty() {
            format!("rtmp://{host}:{}/{}", p.rtmp_port, p.rtmp_app)
        } else {
            p.rtmp_url.clone()
        };
        let http_base = if p.http_base.is_empty() {
            let scheme = req.connection_info().scheme().to_owned();
            format!("{scheme}://{host}:{}", p.http_port)
        } else {
            p.http_base.clone()
        };
        Urls { rtmp, http_base }
    }
}

/// The host name the client used to reach us, without its port.
fn request_host(req: &HttpRequest) -> String {
    let info = req.connection_info();
    url::Url::parse(&format!("http://{}", info.host()))
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "localhost".to_owned())
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Kawa API", description = "Stream keys, live status and recordings of the Kawa streaming server."),
    paths(
        streams::create_stream,
        streams::list_streams,
        streams::get_stream,
        streams::update_stream,
        streams::rotate_key,
        streams::delete_stream,
        streams::kick,
        recordings::list,
        recordings::get,
        recordings::delete,
        health::healthz,
        health::readyz,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Prometheus text format; no secrets are in any metric.
async fn metrics(
    state: Option<web::Data<AppState>>,
    viewers: Option<web::Data<viewers::Viewers>>,
) -> HttpResponse {
    // Viewer counts decay with time, not with events: they are read at each scrape, for
    // the live streams only (an ended stream's series go, like its other series).
    if let (Some(state), Some(viewers)) = (state, viewers) {
        let live = state
            .registry
            .send(crate::actors::registry::LivePaths)
            .await
            .unwrap_or_default();
        let gauge = &crate::metrics::METRICS.stream_viewers;
        gauge.reset();
        for (path, n) in viewers.counts() {
            if live.iter().any(|p| p.as_str() == path) {
                gauge.with_label_values(&[&path]).set(n as i64);
            }
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render())
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

async fn api_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such API route".to_owned()))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// A route whose other methods get 405 rather than 404.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let message = match &err {
        E::ContentType => "expected Content-Type: application/json".to_owned(),
        E::Overflow { .. } | E::OverflowKnownLength { .. } => {
            return ApiError::PayloadTooLarge(format!("body larger than {MAX_JSON_BYTES} bytes"))
                .into();
        }
        other => other.to_string(),
    };
    ApiError::BadRequest("invalid_json", message).into()
}

fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest("invalid_path", err.to_string()).into()
}

/// `POST /debug/faults`: arms a panic in an actor kind (the crash tests' hook; built
/// only with the `fault-injection` feature).
#[cfg(feature = "fault-injection")]
fn debug_routes(cfg: &mut web::ServiceConfig) {
    use crate::actors::supervision::faults;
    async fn arm(_: auth::Admin, fault: web::Json<faults::Fault>) -> HttpResponse {
        tracing::warn!(actor = fault.actor.label(), "a test armed a fault");
        faults::arm(fault.into_inner());
        HttpResponse::NoContent().finish()
    }
    cfg.route("/debug/faults", web::post().to(arm));
}

#[cfg(not(feature = "fault-injection"))]
fn debug_routes(_: &mut web::ServiceConfig) {}

/// Registers every route; `main` and tests share it.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_JSON_BYTES)
            .error_handler(json_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .app_data(
        web::QueryConfig::default()
            .error_handler(|err, _| ApiError::BadRequest("invalid_query", err.to_string()).into()),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(metrics))
    .configure(debug_routes)
    .configure(hls::configure)
    .configure(watch::configure)
    .configure(whep::configure)
    .configure(recordings::configure)
    .service(
        web::scope("/api/v1")
            .service(resource("/openapi.json").route(web::get().to(openapi_json)))
            .service(
                resource("/streams")
                    .route(web::post().to(streams::create_stream))
                    .route(web::get().to(streams::list_streams)),
            )
            .service(
                resource("/streams/{path}")
                    .route(web::get().to(streams::get_stream))
                    .route(web::patch().to(streams::update_stream))
                    .route(web::delete().to(streams::delete_stream)),
            )
            .service(resource("/recordings").route(web::get().to(recordings::list)))
            .service(
                resource("/recordings/{path}/{id}")
                    .route(web::get().to(recordings::get))
                    .route(web::delete().to(recordings::delete)),
            )
            .service(resource("/streams/{path}/rotate").route(web::post().to(streams::rotate_key)))
            .service(resource("/streams/{path}/kick").route(web::post().to(streams::kick)))
            .default_service(web::to(api_not_found)),
    );
}
