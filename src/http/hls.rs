//! Serving HLS: `/hls/{path}/master.m3u8`, `/hls/{path}/{rendition}/index.m3u8` and
//! the segments and parts beside it. A live stream's media playlists (with parts, and
//! blocking reloads) and its newest parts come from its edge in memory; everything else
//! from the data directory.
//!
//! Every path component is checked against a strict pattern before it touches the
//! file system, so no request can leave the HLS folder.

use std::path::PathBuf;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::files::sized;
use super::finished;
use super::proxy::{ClusterProxy, OwnerLookup};
use super::viewers::Viewers;
use crate::delivery::memory::{FileLookup, LiveStore, LiveStream, PlaylistLookup};
use crate::hls::low_latency::Directives;
use crate::keys::PublishPath;

pub(super) const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// CMAF init (`.mp4`) and media (`.m4s`) segments.
pub(super) const SEGMENT_TYPE: &str = "video/mp4";
/// Live playlists change every segment; a CDN may hold them a second.
const PLAYLIST_CACHE: &str = "public, max-age=1";
/// Segment names are never reused (they carry the stream's start time).
pub(super) const SEGMENT_CACHE: &str = "public, max-age=31536000, immutable";

/// `DATA_DIR/hls`.
#[derive(Clone)]
pub struct HlsRoot(pub PathBuf);

pub(super) fn rendition_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A held request is answered 503 after this many target durations (RFC 8216bis
/// §6.2.5.2).
const HOLD_TARGET_DURATIONS: u64 = 3;

/// Kawa's segment names: `{epoch_ms}_{sequence}.m4s`, parts
/// `{epoch_ms}_{sequence}_{part}.m4s`, and init segments `{epoch_ms}_{n}.mp4`.
pub(super) fn segment_ok(name: &str) -> bool {
    let fields = |stem: &str, counts: &[usize]| {
        let fields: Vec<&str> = stem.split('_').collect();
        counts.contains(&fields.len())
            && fields
                .iter()
                .all(|f| !f.is_empty() && f.len() <= 20 && f.bytes().all(|c| c.is_ascii_digit()))
    };
    match (name.strip_suffix(".m4s"), name.strip_suffix(".mp4")) {
        (Some(stem), _) => fields(stem, &[2, 3]),
        (_, Some(stem)) => fields(stem, &[2]),
        _ => false,
    }
}

use super::files::not_found;

async fn not_found_handler() -> HttpResponse {
    not_found()
}

fn plain(mut response: actix_web::HttpResponseBuilder, text: String) -> HttpResponse {
    response
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .content_type("text/plain")
        .body(text)
}

/// How a wait for the live edge ended.
enum Waited {
    Changed,
    /// The deadline passed.
    TimedOut,
    /// The stream left memory.
    Gone,
}

/// Waits for the live edge to change, up to `deadline` (set at the first wait).
async fn wait_for_change(
    changes: &mut tokio::sync::watch::Receiver<u64>,
    deadline: &mut Option<tokio::time::Instant>,
    target_duration: u64,
) -> Waited {
    let hold = Duration::from_secs(target_duration.max(1) * HOLD_TARGET_DURATIONS);
    let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + hold);
    match tokio::time::timeout_at(until, changes.changed()).await {
        Ok(Ok(())) => Waited::Changed,
        Ok(Err(_)) => Waited::Gone,
        Err(_) => Waited::TimedOut,
    }
}

/// A live rendition's playlist with parts, held until it has what the request's
/// `_HLS_msn`/`_HLS_part` ask for. `None`: not live here (the data directory answers).
async fn live_playlist(
    req: &HttpRequest,
    edge: &LiveStream,
    rendition: &str,
) -> Option<HttpResponse> {
    let directives = match Directives::parse(req.query_string()) {
        Ok(d) => d,
        Err(e) => return Some(plain(HttpResponse::BadRequest(), e.to_string())),
    };
    let mut changes = edge.subscribe();
    let mut deadline = None;
    loop {
        changes.borrow_and_update();
        match edge.playlist(rendition, &directives) {
            PlaylistLookup::Ready(text) => {
                return Some(
                    HttpResponse::Ok()
                        .content_type(PLAYLIST_TYPE)
                        .insert_header((header::CACHE_CONTROL, PLAYLIST_CACHE))
                        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
                        .body(text),
                );
            }
            PlaylistLookup::Refuse(e) => {
                return Some(plain(HttpResponse::BadRequest(), e.to_string()));
            }
            PlaylistLookup::Missing => return None,
            PlaylistLookup::Wait { target_duration } => {
                match wait_for_change(&mut changes, &mut deadline, target_duration).await {
                    Waited::Changed => {}
                    Waited::TimedOut => {
                        let text = "the playlist did not reach the requested part in time";
                        return Some(plain(HttpResponse::ServiceUnavailable(), text.into()));
                    }
                    Waited::Gone => return None,
                }
            }
        }
    }
}

fn segment_response(body: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    let mut body = body;
    body.content_type(SEGMENT_TYPE)
        .insert_header((header::CACHE_CONTROL, SEGMENT_CACHE))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::CONTENT_ENCODING, "identity"));
    body
}

/// A part, init or recent segment from the live edge; a request for the hinted next
/// part is held until it is made. `None`: the data directory answers.
async fn live_file(
    edge: &LiveStream,
    dir: PathBuf,
    rendition: &str,
    name: &str,
) -> Option<HttpResponse> {
    let mut changes = edge.subscribe();
    let mut deadline = None;
    loop {
        changes.borrow_and_update();
        match edge.file(rendition, name) {
            FileLookup::Found(pieces) => {
                return Some(segment_response(HttpResponse::Ok()).body(sized(pieces)));
            }
            FileLookup::InSegment {
                segment,
                offset,
                len,
            } => {
                let data = super::files::read_at(dir.join(segment), offset, len)
                    .await
                    .ok()?;
                return Some(segment_response(HttpResponse::Ok()).body(sized(vec![data.into()])));
            }
            FileLookup::Missing => return None,
            FileLookup::Wait { target_duration } => {
                let waited = wait_for_change(&mut changes, &mut deadline, target_duration).await;
                if !matches!(waited, Waited::Changed) {
                    return None;
                }
            }
        }
    }
}

/// Serves a file as a file server should (actix-files): HEAD, `ETag` with
/// `If-None-Match` (304), `Last-Modified`, byte ranges, and the body streamed from disk
/// rather than read whole. Opening the file runs off the worker thread.
pub(super) async fn file(
    req: &HttpRequest,
    path: PathBuf,
    content_type: &str,
    cache: &str,
    compressible: bool,
) -> HttpResponse {
    if !compressible {
        // Media: one shared copy, sent in small slices (see `files`).
        return super::files::SHARED
            .answer(req, &path, content_type, cache)
            .await;
    }
    super::files::from_disk(req, &path, content_type, cache, true).await
}

/// In a cluster, the owner's answer when another node owns the stream: this node has no
/// live edge for it; or its session waits for its publisher to reconnect, and the encoder
/// may have reconnected to another node (which took the path over: this edge is behind
/// it until the lease renewal tells this session so); or, for a playlist (`newest`), its
/// session ended: that copy (ENDLIST) would stop a player while the path is live again on
/// another node. An ended session's segments are its own, and stay served here.
async fn from_owner(
    req: &HttpRequest,
    live: &LiveStore,
    proxy: Option<&ClusterProxy>,
    stream: &PublishPath,
    newest: bool,
) -> Option<HttpResponse> {
    let mut lookup = OwnerLookup::Cached;
    if let Some(edge) = live.get(stream.as_str()) {
        let behind = if edge.ended() {
            newest
        } else {
            edge.awaiting_publisher()
        };
        if !behind {
            return None;
        }
        // Only while this edge may be behind: every such request asks Redis, since a
        // cached "nobody else" could be from the moment before the path moved (the
        // chaos benchmark saw 817 -> 814 from an ended session's playlist so).
        lookup = OwnerLookup::Fresh;
    }
    proxy?.forward(req, stream.as_str(), lookup).await
}

/// A file beside the stream's renditions (the master playlist, the thumbnail): from the
/// owner in a cluster, else from the data directory.
async fn stream_file(
    req: HttpRequest,
    root: web::Data<HlsRoot>,
    live: web::Data<LiveStore>,
    proxy: Option<web::Data<ClusterProxy>>,
    path: web::Path<String>,
    (name, content_type, cache, compressible): (&str, &str, &str, bool),
) -> HttpResponse {
    let Ok(stream) = PublishPath::parse(&path) else {
        return not_found();
    };
    if let Some(answer) = from_owner(
        &req,
        &live,
        proxy.as_ref().map(|p| p.get_ref()),
        &stream,
        true,
    )
    .await
    {
        return answer;
    }
    let file_path = root.0.join(stream.as_str()).join(name);
    file(&req, file_path, content_type, cache, compressible).await
}

async fn master(
    req: HttpRequest,
    root: web::Data<HlsRoot>,
    live: web::Data<LiveStore>,
    proxy: Option<web::Data<ClusterProxy>>,
    path: web::Path<String>,
) -> HttpResponse {
    // Live here: from memory (no file opened, no blocking thread woken per request).
    if let Some(text) = PublishPath::parse(&path)
        .ok()
        .and_then(|stream| live.get(stream.as_str()))
        .and_then(|edge| edge.master())
    {
        return HttpResponse::Ok()
            .content_type(PLAYLIST_TYPE)
            .insert_header((header::CACHE_CONTROL, PLAYLIST_CACHE))
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .body(text);
    }
    let kind = ("master.m3u8", PLAYLIST_TYPE, PLAYLIST_CACHE, true);
    stream_file(req, root, live, proxy, path, kind).await
}

/// How old a live stream's picture may be before a request asks for a newer one
/// (`hls.thumbnail_seconds`; zero: no pictures are made).
#[derive(Clone, Copy)]
pub struct ThumbnailEvery(pub Duration);

/// The longest a request waits for a new picture: the next keyframe, then FFmpeg.
const THUMBNAIL_WAIT: Duration = Duration::from_secs(12);

/// `thumbnail.jpg`: a live stream's picture, made when asked for and at most every
/// `hls.thumbnail_seconds`; after the stream, the last one made (data directory).
async fn thumbnail(
    req: HttpRequest,
    root: web::Data<HlsRoot>,
    live: web::Data<LiveStore>,
    proxy: Option<web::Data<ClusterProxy>>,
    every: Option<web::Data<ThumbnailEvery>>,
    path: web::Path<String>,
) -> HttpResponse {
    let every = every.map_or(Duration::ZERO, |e| e.0);
    if let Ok(stream) = PublishPath::parse(&path)
        && !every.is_zero()
        && let Some(edge) = live.get(stream.as_str())
        && let Some(jpeg) = live_thumbnail(&edge, every).await
    {
        return HttpResponse::Ok()
            .content_type("image/jpeg")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(jpeg);
    }
    let kind = ("thumbnail.jpg", "image/jpeg", "no-cache", false);
    stream_file(req, root, live, proxy, path, kind).await
}

/// A picture no older than `every`: the cached one, or one the session makes at its next
/// keyframe for this ask (an older one if none comes in time).
async fn live_thumbnail(edge: &LiveStream, every: Duration) -> Option<bytes::Bytes> {
    if let Some(jpeg) = edge.thumbnail.fresh(every) {
        return Some(jpeg);
    }
    let asked = std::time::Instant::now();
    let mut changes = edge.subscribe();
    edge.thumbnail.want();
    let deadline = tokio::time::Instant::now() + THUMBNAIL_WAIT;
    loop {
        if let Some((jpeg, made)) = edge.thumbnail.latest()
            && made >= asked
        {
            return Some(jpeg);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => return edge.thumbnail.latest().map(|(jpeg, _)| jpeg),
        }
    }
}

async fn rendition_file(
    req: HttpRequest,
    root: web::Data<HlsRoot>,
    live: web::Data<LiveStore>,
    proxy: Option<web::Data<ClusterProxy>>,
    viewers: Option<web::Data<Viewers>>,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let (stream, rendition, name) = path.into_inner();
    let Ok(stream) = PublishPath::parse(&stream) else {
        return not_found();
    };
    if !rendition_ok(&rendition) {
        return not_found();
    }
    let playlist = name == "index.m3u8";
    let proxy_ref = proxy.as_ref().map(|p| p.get_ref());
    if let Some(answer) = from_owner(&req, &live, proxy_ref, &stream, playlist).await {
        return answer;
    }
    if playlist && let Some(viewers) = &viewers {
        let internal = proxy.as_ref().is_some_and(|p| p.is_internal(&req));
        viewers.seen(stream.as_str(), viewers.viewer_id(&req, internal));
    }
    if (playlist || segment_ok(&name))
        && let Some(edge) = live.get(stream.as_str())
    {
        if playlist && finished::edge_behind(proxy_ref, &edge, &stream, &rendition).await {
            return finished::unavailable();
        }
        let answer = if playlist {
            live_playlist(&req, &edge, &rendition).await
        } else {
            let dir = root.0.join(stream.as_str()).join(&rendition);
            live_file(&edge, dir, &rendition, &name).await
        };
        if let Some(response) = answer {
            return response;
        }
    }
    let dir = root.0.join(stream.as_str()).join(&rendition);
    if playlist && finished::copy_stale(proxy_ref, &dir.join(&name), &stream, &rendition).await {
        return finished::unavailable();
    }
    if playlist {
        file(&req, dir.join(name), PLAYLIST_TYPE, PLAYLIST_CACHE, true).await
    } else if segment_ok(&name) {
        let path = dir.join(&name);
        match super::files::SHARED
            .answer_if_present(&req, &path, SEGMENT_TYPE, SEGMENT_CACHE)
            .await
        {
            Some(answer) => answer,
            None => from_predecessor(&req, &live, proxy_ref, &stream, &rendition, &name)
                .await
                .unwrap_or_else(not_found),
        }
    } else {
        not_found()
    }
}

/// A segment this node's live playlist lists but its data dir does not have yet: it
/// took the stream over, and is still copying its predecessor's files. Passed on from
/// the cluster's bucket meanwhile; only names the playlist lists reach the bucket.
async fn from_predecessor(
    req: &HttpRequest,
    live: &LiveStore,
    proxy: Option<&ClusterProxy>,
    stream: &PublishPath,
    rendition: &str,
    name: &str,
) -> Option<HttpResponse> {
    let s3 = proxy?.s3()?;
    if !live.get(stream.as_str())?.lists(rendition, name) {
        return None;
    }
    let key = s3.object_key(stream.as_str(), &format!("{rendition}/{name}"));
    let kind = (SEGMENT_TYPE, SEGMENT_CACHE, false);
    Some(super::s3_files::pass_on(req, s3, &key, kind).await)
}

/// CORS preflight for players on other origins.
async fn preflight(_: HttpRequest) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Range, Origin, Accept",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .finish()
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/hls")
            .route("/{path}/master.m3u8", web::get().to(master))
            .route("/{path}/master.m3u8", web::head().to(master))
            .route("/{path}/thumbnail.jpg", web::get().to(thumbnail))
            .route("/{path}/thumbnail.jpg", web::head().to(thumbnail))
            .route("/{path}/{rendition}/{file}", web::get().to(rendition_file))
            .route("/{path}/{rendition}/{file}", web::head().to(rendition_file))
            .route(
                "/{tail:.*}",
                web::method(actix_web::http::Method::OPTIONS).to(preflight),
            )
            .default_service(web::to(not_found_handler)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kawa_names_pass() {
        assert!(segment_ok("1764244800123_42.m4s"));
        assert!(segment_ok("1764244800123_0.mp4"));
        assert!(segment_ok("1764244800123_42_3.m4s"));
        assert!(!segment_ok("1764244800123_42_3.mp4"));
        assert!(!segment_ok("1_2_3_4.m4s"));
        for bad in [
            "../x.m4s",
            "a_1.m4s",
            "1_.m4s",
            "_1.mp4",
            "1_2.m4s.bak",
            "1_2",
            "1_2.ts",
            ".1_2.m4s",
            "1/2_3.m4s",
        ] {
            assert!(!segment_ok(bad), "{bad}");
        }
        assert!(rendition_ok("480p") && rendition_ok("source"));
        assert!(!rendition_ok("..") && !rendition_ok("A") && !rendition_ok(""));
    }
}
