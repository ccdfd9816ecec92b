//! Recordings over HTTP: `/api/v1/recordings` lists, shows and deletes them (admin
//! token), and `/recordings/{path}/{id}/…` serves a finished recording's playlists and
//! segments, for any player: from this node's disk, else from S3 (a recording made on
//! another node, or one this node went on with after a failover).

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::error::{ApiError, ErrorBody};
use super::hls::{PLAYLIST_TYPE, SEGMENT_CACHE, SEGMENT_TYPE, file, rendition_ok, segment_ok};
use crate::keys::PublishPath;
use crate::recordings::{DeleteReason, RecordingInfo, RecordingStatus, RecordingView, Recordings};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// A VOD playlist never changes once written.
const RECORDING_PLAYLIST_CACHE: &str = "public, max-age=3600";

/// Filters and paging of the recordings list, by path then id.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this publish path's recordings.
    pub path: Option<String>,
    /// `recording` or `ready`.
    #[param(value_type = Option<String>)]
    pub status: Option<RecordingStatus>,
    /// Recordings per page (1 to 1000; default 100).
    pub limit: Option<usize>,
    /// Start after this recording (`{path}/{id}`, the `next` of the previous page).
    pub after: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordingList {
    pub recordings: Vec<RecordingView>,
    /// More follow: pass this as `after` for the next page.
    pub next: Option<String>,
}

fn parse(path: &str, id: &str) -> Result<(PublishPath, u64), ApiError> {
    let path = PublishPath::parse(path)
        .map_err(|e| ApiError::BadRequest("invalid_path", e.to_string()))?;
    let id = id.parse().map_err(|_| {
        ApiError::BadRequest("invalid_path", "a recording id is a number".to_owned())
    })?;
    Ok((path, id))
}

/// List recordings, by publish path then id.
#[utoipa::path(
    get, path = "/api/v1/recordings", tag = "recordings",
    params(ListQuery),
    responses(
        (status = 200, body = RecordingList),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list(
    _: Admin,
    recordings: web::Data<Arc<Recordings>>,
    query: web::Query<ListQuery>,
) -> Result<web::Json<RecordingList>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(
            "invalid_query",
            format!("limit must be 1 to {MAX_PAGE}"),
        ));
    }
    let path = match &query.path {
        Some(p) => Some(
            PublishPath::parse(p)
                .map_err(|e| ApiError::BadRequest("invalid_query", e.to_string()))?,
        ),
        None => None,
    };
    let mut page: Vec<RecordingInfo> = recordings
        .list()
        .await?
        .into_iter()
        .filter(|r| path.as_ref().is_none_or(|p| &r.publish_path == p))
        .filter(|r| query.status.is_none_or(|s| r.status == s))
        .filter(|r| {
            query.after.as_deref().is_none_or(|after| {
                // Index order: by path, then by id.
                let (p, id) = after.rsplit_once('/').unwrap_or((after, ""));
                (r.publish_path.as_str(), r.id) > (p, id.parse().unwrap_or(u64::MAX))
            })
        })
        .take(limit + 1)
        .collect();
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last()
            .map(|r| RecordingInfo::key(&r.publish_path, r.id))
            .unwrap_or_default()
    });
    Ok(web::Json(RecordingList {
        recordings: page.into_iter().map(|r| recordings.view(r)).collect(),
        next,
    }))
}

/// Show one recording.
#[utoipa::path(
    get, path = "/api/v1/recordings/{path}/{id}", tag = "recordings",
    params(
        ("path" = String, Path, description = "Publish path", pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"),
        ("id" = u64, Path, description = "The recording's id (its start, Unix ms)"),
    ),
    responses(
        (status = 200, body = RecordingView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn get(
    _: Admin,
    recordings: web::Data<Arc<Recordings>>,
    ids: web::Path<(String, String)>,
) -> Result<web::Json<RecordingView>, ApiError> {
    let (path, id) = parse(&ids.0, &ids.1)?;
    match recordings.get(&path, id).await? {
        Some(info) => Ok(web::Json(recordings.view(info))),
        None => Err(ApiError::NotFound(format!("no recording {path}/{id}"))),
    }
}

/// Delete a finished recording: its S3 objects, its local files, its index entry.
#[utoipa::path(
    delete, path = "/api/v1/recordings/{path}/{id}", tag = "recordings",
    params(
        ("path" = String, Path, description = "Publish path", pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"),
        ("id" = u64, Path, description = "The recording's id (its start, Unix ms)"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "It is still recording", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn delete(
    _: Admin,
    recordings: web::Data<Arc<Recordings>>,
    ids: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (path, id) = parse(&ids.0, &ids.1)?;
    if recordings.delete(&path, id, DeleteReason::Api).await? {
        tracing::info!(publish_path = %path, recording = id, "recording deleted");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("no recording {path}/{id}")))
    }
}

/// A file of recording `id` of `path` (`relative` to its folder, checked by the caller):
/// from this node's disk, else (for a recording the index knows) passed on from S3 as
/// it is read, Range and HEAD included.
async fn recording_file(
    req: &HttpRequest,
    recordings: &Recordings,
    (path, id): (PublishPath, u64),
    relative: &str,
    (content_type, cache, compressible): (&str, &str, bool),
) -> HttpResponse {
    let local = RecordingInfo::local_dir(recordings.root(), &path, id).join(relative);
    if !compressible {
        // Media: one shared copy (usually no look at the disk at all).
        if let Some(answer) = (super::files::SHARED)
            .answer_if_present(req, &local, content_type, cache)
            .await
        {
            return answer;
        }
    } else if tokio::fs::try_exists(&local).await.unwrap_or(false) {
        return file(req, local, content_type, cache, compressible).await;
    }
    match recordings.s3() {
        // Boxed: the store's request is large, and most requests never make one.
        Some(s3) => {
            Box::pin(from_s3(
                req,
                recordings,
                s3,
                (path, id),
                relative,
                (content_type, cache, compressible),
            ))
            .await
        }
        None => HttpResponse::NotFound().finish(),
    }
}

/// A file of a recording this node has no copy of, from S3.
async fn from_s3(
    req: &HttpRequest,
    recordings: &Recordings,
    s3: &crate::delivery::s3::S3Target,
    (path, id): (PublishPath, u64),
    relative: &str,
    kind: (&str, &str, bool),
) -> HttpResponse {
    // Nothing reaches the bucket for a recording the index does not know.
    match recordings.get(&path, id).await {
        Ok(Some(_)) => {}
        Ok(None) => return HttpResponse::NotFound().finish(),
        Err(e) => {
            tracing::warn!(publish_path = %path, recording = id, error = %e, "recordings index unavailable");
            return super::s3_files::busy();
        }
    }
    let key = s3.object_key(
        path.as_str(),
        &format!("{}/{relative}", RecordingInfo::s3_folder(id)),
    );
    super::s3_files::pass_on(req, s3, &key, kind).await
}

/// `/recordings/{path}/{id}/master.m3u8`.
async fn master(
    req: HttpRequest,
    recordings: web::Data<Arc<Recordings>>,
    ids: web::Path<(String, String)>,
) -> HttpResponse {
    let Ok(ids) = parse(&ids.0, &ids.1) else {
        return HttpResponse::NotFound().finish();
    };
    let kind = (PLAYLIST_TYPE, RECORDING_PLAYLIST_CACHE, true);
    recording_file(&req, &recordings, ids, "master.m3u8", kind).await
}

/// `/recordings/{path}/{id}/{rendition}/{index.m3u8 | segment}`.
async fn rendition_file(
    req: HttpRequest,
    recordings: web::Data<Arc<Recordings>>,
    ids: web::Path<(String, String, String, String)>,
) -> HttpResponse {
    let (path, id, rendition, name) = ids.into_inner();
    let Ok(ids) = parse(&path, &id) else {
        return HttpResponse::NotFound().finish();
    };
    let playlist = name == "index.m3u8";
    // Checked before the name touches the file system or a key: no request leaves the
    // recording's folder.
    if !rendition_ok(&rendition) || !(playlist || segment_ok(&name)) {
        return HttpResponse::NotFound().finish();
    }
    let kind = if playlist {
        (PLAYLIST_TYPE, RECORDING_PLAYLIST_CACHE, true)
    } else {
        (SEGMENT_TYPE, SEGMENT_CACHE, false)
    };
    recording_file(&req, &recordings, ids, &format!("{rendition}/{name}"), kind).await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/recordings/{path}/{id}/master.m3u8", web::get().to(master))
        .route(
            "/recordings/{path}/{id}/master.m3u8",
            web::head().to(master),
        )
        .route(
            "/recordings/{path}/{id}/{rendition}/{name}",
            web::get().to(rendition_file),
        )
        .route(
            "/recordings/{path}/{id}/{rendition}/{name}",
            web::head().to(rendition_file),
        );
}
