//! `/api/v1/streams`: create, list, show, rotate and delete stream keys.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody};
use super::viewers::Viewers;
use crate::actors::registry::{GetLive, Kick, LivePaths};
use crate::actors::session::LiveStatus;
use crate::keys::{PublishPath, StreamKey, StreamRecord};

/// Labels are for people; a cap keeps a careless client from storing megabytes.
const MAX_LABEL_CHARS: usize = 200;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// The name the stream is published and played under: `[a-z0-9][a-z0-9_-]{0,63}`.
    #[schema(example = "alice")]
    pub publish_path: String,
    /// Free text for operators.
    pub label: Option<String>,
}

/// What OBS asks for under Settings → Stream (Service: Custom).
#[derive(Debug, Serialize, ToSchema)]
pub struct ObsSettings {
    /// OBS "Server".
    pub server: String,
    /// OBS "Stream Key".
    pub stream_key: String,
}

/// A stream with its key: returned only by create and rotate.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamWithKey {
    pub publish_path: String,
    pub stream_key: String,
    /// The RTMP URL to publish to (without the key).
    pub rtmp_url: String,
    pub obs: ObsSettings,
    pub playback_url: String,
    /// RFC 3339.
    pub created_at: String,
    pub label: Option<String>,
}

/// A stream as listed: never the key.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamInfo {
    pub publish_path: String,
    pub label: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null when the key was never rotated.
    pub key_rotated_at: Option<String>,
    pub rtmp_url: String,
    pub playback_url: String,
    /// Whether a publisher is live on this path now.
    pub live: bool,
    /// Distinct clients that read this stream's playlists from this node in the last
    /// 30 s (in a cluster: on the node that owns the stream).
    pub viewers: usize,
    /// A JPEG of the stream, a few seconds old, while it is live.
    pub thumbnail_url: Option<String>,
    /// Details of the live stream (only on `GET /api/v1/streams/{path}` while live).
    pub live_status: Option<LiveStatus>,
    /// Whether its broadcasts are recorded; null follows the server's
    /// `recordings.enabled`.
    pub record: Option<bool>,
}

/// What `PATCH /api/v1/streams/{path}` changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStream {
    /// Record this stream's broadcasts (`true`/`false`), or follow the server's
    /// `recordings.enabled` (`null`). Applies from the next publish.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<bool>)]
    pub record: Option<Option<bool>>,
}

/// Tells a field set to `null` (`Some(None)`) from a missing one (`None`).
fn explicit_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Option::<bool>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamList {
    pub streams: Vec<StreamInfo>,
    /// More streams follow: pass this as `after` for the next page.
    pub next: Option<String>,
}

/// Paging of the stream list, in publish path order.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Streams per page (1 to 1000; default 100).
    pub limit: Option<usize>,
    /// Start after this publish path (the `next` of the previous page).
    pub after: Option<String>,
    /// Only the streams that are live (`true`) or not (`false`).
    pub live: Option<bool>,
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn parse_path(text: &str) -> Result<PublishPath, ApiError> {
    PublishPath::parse(text).map_err(|e| ApiError::BadRequest("invalid_path", e.to_string()))
}

/// `…/hls/{path}/master.m3u8` → `…/hls/{path}/thumbnail.jpg`.
fn thumbnail_url(playback_url: &str) -> String {
    let base = playback_url
        .strip_suffix("master.m3u8")
        .unwrap_or(playback_url);
    format!("{base}thumbnail.jpg")
}

fn info(state: &AppState, req: &HttpRequest, record: StreamRecord, live: bool) -> StreamInfo {
    let urls = state.urls(req);
    let playback_url = urls.playback(&record.publish_path);
    StreamInfo {
        rtmp_url: urls.rtmp.clone(),
        publish_path: record.publish_path.to_string(),
        label: record.label,
        created_at: rfc3339(record.created_at),
        key_rotated_at: record.key_rotated_at.map(rfc3339),
        thumbnail_url: live.then(|| thumbnail_url(&playback_url)),
        playback_url,
        live,
        viewers: 0,
        live_status: None,
        record: record.record,
    }
}

fn with_key(
    state: &AppState,
    req: &HttpRequest,
    record: StreamRecord,
    key: StreamKey,
) -> StreamWithKey {
    let urls = state.urls(req);
    StreamWithKey {
        playback_url: urls.playback(&record.publish_path),
        obs: ObsSettings {
            server: urls.rtmp.clone(),
            stream_key: key.expose().to_owned(),
        },
        rtmp_url: urls.rtmp,
        publish_path: record.publish_path.to_string(),
        stream_key: key.expose().to_owned(),
        created_at: rfc3339(record.created_at),
        label: record.label,
    }
}

/// Create a stream and its first key.
#[utoipa::path(
    post, path = "/api/v1/streams", tag = "streams",
    request_body = CreateStream,
    responses(
        (status = 201, description = "Created; the key is shown only now", body = StreamWithKey),
        (status = 400, description = "Malformed JSON, invalid path or label", body = ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 409, description = "Publish path taken", body = ErrorBody),
        (status = 503, description = "Key store unavailable", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn create_stream(
    _: Admin,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<CreateStream>,
) -> Result<HttpResponse, ApiError> {
    let CreateStream {
        publish_path,
        label,
    } = body.into_inner();
    let path = parse_path(&publish_path)?;
    if label
        .as_ref()
        .is_some_and(|l| l.chars().count() > MAX_LABEL_CHARS)
    {
        return Err(ApiError::BadRequest(
            "invalid_label",
            format!("label must be at most {MAX_LABEL_CHARS} characters"),
        ));
    }
    let (record, key) = state.keys.create(path, label).await?;
    tracing::info!(publish_path = %record.publish_path, "stream created");
    Ok(HttpResponse::Created().json(with_key(&state, &req, record, key)))
}

/// List every stream (never the keys).
#[utoipa::path(
    get, path = "/api/v1/streams", tag = "streams",
    params(ListQuery),
    responses(
        (status = 200, body = StreamList),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_streams(
    _: Admin,
    state: web::Data<AppState>,
    viewers: Option<web::Data<Viewers>>,
    query: web::Query<ListQuery>,
    req: HttpRequest,
) -> Result<web::Json<StreamList>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(
            "invalid_query",
            format!("limit must be from 1 to {MAX_PAGE}"),
        ));
    }
    let mut records = state.keys.list().await?;
    records.sort_by(|a, b| a.publish_path.cmp(&b.publish_path));
    if let Some(after) = &query.after {
        records.retain(|r| r.publish_path.as_str() > after.as_str());
    }
    let live = state.registry.send(LivePaths).await.unwrap_or_default();
    if let Some(wanted) = query.live {
        records.retain(|r| live.contains(&r.publish_path) == wanted);
    }
    let next = (records.len() > limit).then(|| records[limit - 1].publish_path.to_string());
    records.truncate(limit);
    let streams = records
        .into_iter()
        .map(|r| {
            let is_live = live.contains(&r.publish_path);
            let watching = viewers
                .as_ref()
                .map_or(0, |v| v.count(r.publish_path.as_str()));
            StreamInfo {
                viewers: watching,
                ..info(&state, &req, r, is_live)
            }
        })
        .collect();
    Ok(web::Json(StreamList { streams, next }))
}

/// Show one stream (never the key).
#[utoipa::path(
    get, path = "/api/v1/streams/{path}", tag = "streams",
    params(("path" = String, Path, description = "Publish path", pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")),
    responses(
        (status = 200, body = StreamInfo),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn get_stream(
    _: Admin,
    state: web::Data<AppState>,
    viewers: Option<web::Data<Viewers>>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<web::Json<StreamInfo>, ApiError> {
    let path = parse_path(&path)?;
    let Some(record) = state.keys.get(&path).await? else {
        return Err(ApiError::NotFound(format!("no stream `{path}`")));
    };
    let watching = viewers.as_ref().map_or(0, |v| v.count(path.as_str()));
    let status = state.registry.send(GetLive { path }).await.ok().flatten();
    let mut shown = info(&state, &req, record, status.is_some());
    shown.live_status = status;
    shown.viewers = watching;
    Ok(web::Json(shown))
}

/// Change a stream's settings (its `record` flag).
#[utoipa::path(
    patch, path = "/api/v1/streams/{path}", tag = "streams",
    params(("path" = String, Path, description = "Publish path", pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")),
    request_body = UpdateStream,
    responses(
        (status = 200, body = StreamInfo),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn update_stream(
    _: Admin,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<UpdateStream>,
) -> Result<web::Json<StreamInfo>, ApiError> {
    let path = parse_path(&path)?;
    let record = match body.into_inner().record {
        Some(record) => state.keys.set_record(&path, record).await?,
        None => state
            .keys
            .get(&path)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no stream `{path}`")))?,
    };
    tracing::info!(publish_path = %path, record = ?record.record, "stream updated");
    let live = state
        .registry
        .send(GetLive { path })
        .await
        .ok()
        .flatten()
        .is_some();
    Ok(web::Json(info(&state, &req, record, live)))
}

/// Issue a new key; the old one stops working at once.
#[utoipa::path(
    post, path = "/api/v1/streams/{path}/rotate", tag = "streams",
    params(("path" = String, Path, description = "Publish path", pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")),
    responses(
        (status = 200, description = "The new key, shown only now", body = StreamWithKey),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn rotate_key(
    _: Admin,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<web::Json<StreamWithKey>, ApiError> {
    let path = parse_path(&path)?;
    let (record, key) = state.keys.rotate(&path).await?;
    tracing::info!(publish_path = %record.publish_path, "stream key rotated");
    // A leaked key is why keys get rotated: whoever publishes with it now goes too.
    state.registry.do_send(Kick {
        path: path.clone(),
        reason: "stream key rotated",
    });
    Ok(web::Json(with_key(&state, &req, record, key)))
}

/// Delete a stream; its key stops working at once.
#[utoipa::path(
    delete, path = "/api/v1/streams/{path}", tag = "streams",
    params(("path" = String, Path, description = "Publish path", pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn delete_stream(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let path = parse_path(&path)?;
    state.keys.delete(&path).await?;
    tracing::info!(publish_path = %path, "stream deleted");
    state.registry.do_send(Kick {
        path,
        reason: "stream deleted",
    });
    Ok(HttpResponse::NoContent().finish())
}

/// Disconnect the stream's publisher now.
#[utoipa::path(
    post, path = "/api/v1/streams/{path}/kick", tag = "streams",
    params(("path" = String, Path, description = "Publish path", pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")),
    responses(
        (status = 204, description = "The publisher was disconnected"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "Nobody publishes to this path", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn kick(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let path = parse_path(&path)?;
    let kicked = state
        .registry
        .send(Kick {
            path: path.clone(),
            reason: "kicked by an operator",
        })
        .await
        .unwrap_or(false);
    if kicked {
        tracing::info!(publish_path = %path, "publisher kicked");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("nobody publishes to `{path}`")))
    }
}
