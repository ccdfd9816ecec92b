//! WHEP (WebRTC-HTTP Egress Protocol): `POST /whep/{path}` with an SDP offer answers
//! 201 with the SDP answer and the session's `Location`; `DELETE` on it ends the
//! session. No viewer credentials, as for `/hls/`; CORS for players on other origins.
//! In a cluster, a node that does not have the stream live passes both on to the node
//! that owns it (which answers with its own UDP address: `webrtc.public_ips`).

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;

use super::proxy::ClusterProxy;
use super::viewers::{Viewers, client_ip};
use crate::delivery::memory::LiveStore;
use crate::keys::PublishPath;
use crate::webrtc::{OfferError, WebRtc};

/// An SDP offer is a few KB; Chromium's with every codec is under 10.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
const SDP: &str = "application/sdp";

fn cors(mut answer: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    answer
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_EXPOSE_HEADERS, "Location, ETag"));
    answer
}

fn refuse(status: actix_web::http::StatusCode, why: &str) -> HttpResponse {
    cors(HttpResponse::build(status))
        .content_type(mime::TEXT_PLAIN_UTF_8)
        .body(format!("{why}\n"))
}

/// The address the viewer reached this server at (the host candidate to announce when
/// `webrtc.public_ips` is not set): the Host header's IP, else the connection's.
fn reached(req: &HttpRequest) -> Option<IpAddr> {
    let host = req.connection_info().host().to_owned();
    let ip = host
        .rsplit_once(':')
        .map_or(host.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    ip.or(Some(req.app_config().local_addr().ip()))
        .filter(|ip| !ip.is_unspecified())
}

/// The owner's answer, when another node of the cluster has the stream live.
async fn from_owner(
    req: &HttpRequest,
    live: &LiveStore,
    proxy: Option<web::Data<ClusterProxy>>,
    stream: &str,
    body: Option<Bytes>,
) -> Option<HttpResponse> {
    if live.get(stream).is_some() {
        return None;
    }
    proxy?.forward_with(req, stream, body).await
}

async fn offer(
    req: HttpRequest,
    webrtc: Option<web::Data<WebRtc>>,
    (live, proxy): (web::Data<LiveStore>, Option<web::Data<ClusterProxy>>),
    viewers: Option<web::Data<Viewers>>,
    path: web::Path<String>,
    body: Bytes,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let Some(webrtc) = webrtc else {
        return refuse(
            StatusCode::NOT_FOUND,
            "WebRTC is off on this server (webrtc.udp_addr)",
        );
    };
    let Ok(stream) = PublishPath::parse(&path) else {
        return refuse(StatusCode::NOT_FOUND, "no such stream");
    };
    // Behind a trusted proxy, or passed on by another node, the client is the one named
    // in X-Forwarded-For (`viewers::client_ip`).
    let internal = proxy.as_ref().is_some_and(|p| p.is_internal(&req));
    let trusted = viewers.as_ref().map_or(&[][..], |v| v.trusted());
    let client = client_ip(&req, trusted, internal);
    if let Some(answer) = from_owner(&req, &live, proxy, stream.as_str(), Some(body.clone())).await
    {
        return answer;
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.trim().to_ascii_lowercase().starts_with(SDP) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a WHEP offer is Content-Type: application/sdp",
        );
    }
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return refuse(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text");
    };
    match webrtc
        .offer(stream.as_str(), sdp, reached(&req), client)
        .await
    {
        Ok(answer) => {
            let location = format!("/whep/{}/{}", stream.as_str(), answer.id);
            cors(HttpResponse::Created())
                .content_type(SDP)
                .insert_header((header::LOCATION, location))
                .body(answer.sdp)
        }
        Err(e) => {
            let status = match e {
                OfferError::NoStream => StatusCode::NOT_FOUND,
                OfferError::Unfit(_) => StatusCode::CONFLICT,
                OfferError::NoH264 => StatusCode::NOT_ACCEPTABLE,
                OfferError::BadOffer(_) => StatusCode::BAD_REQUEST,
                OfferError::TooManyPending => StatusCode::TOO_MANY_REQUESTS,
                OfferError::Full | OfferError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            };
            tracing::debug!(stream = stream.as_str(), error = %e, "WHEP offer refused");
            let mut answer = refuse(status, &e.to_string());
            if matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            ) {
                // Places free up as sessions connect or time out.
                answer
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            }
            answer
        }
    }
}

async fn end(
    req: HttpRequest,
    webrtc: Option<web::Data<WebRtc>>,
    (live, proxy): (web::Data<LiveStore>, Option<web::Data<ClusterProxy>>),
    path: web::Path<(String, u64)>,
) -> HttpResponse {
    let (stream, id) = path.into_inner();
    if let Some(answer) = from_owner(&req, &live, proxy, &stream, None).await {
        return answer;
    }
    let closed = match webrtc {
        Some(webrtc) => webrtc.close(&stream, id).await,
        None => false,
    };
    if closed {
        cors(HttpResponse::Ok()).finish()
    } else {
        refuse(
            actix_web::http::StatusCode::NOT_FOUND,
            "no such WHEP session",
        )
    }
}

/// CORS preflight: a player on another origin POSTs application/sdp and DELETEs.
async fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "POST, DELETE, OPTIONS",
        ))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Content-Type, Authorization",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .insert_header(("Accept-Post", SDP))
        .finish()
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/whep")
            .app_data(web::PayloadConfig::new(MAX_OFFER_BYTES))
            .route("/{path}", web::post().to(offer))
            .route(
                "/{path}",
                web::method(actix_web::http::Method::OPTIONS).to(preflight),
            )
            .route("/{path}/{id}", web::delete().to(end))
            .route(
                "/{path}/{id}",
                web::method(actix_web::http::Method::OPTIONS).to(preflight),
            ),
    );
}
