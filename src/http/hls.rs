//! Serving HLS from the data directory: `/hls/{path}/master.m3u8`,
//! `/hls/{path}/{rendition}/index.m3u8` and the segments beside it.
//!
//! Every path component is checked against a strict pattern before it touches the
//! file system, so no request can leave the HLS folder.

use std::path::PathBuf;

use actix_files::NamedFile;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, Responder, web};

use crate::keys::PublishPath;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// CMAF init (`.mp4`) and media (`.m4s`) segments.
const SEGMENT_TYPE: &str = "video/mp4";
/// Live playlists change every segment; a CDN may hold them a second.
const PLAYLIST_CACHE: &str = "public, max-age=1";
/// Segment names are never reused (they carry the stream's start time).
const SEGMENT_CACHE: &str = "public, max-age=31536000, immutable";

/// `DATA_DIR/hls`.
#[derive(Clone)]
pub struct HlsRoot(pub PathBuf);

fn rendition_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Kawa's segment names: `{epoch_ms}_{sequence}.m4s`, and init segments
/// `{epoch_ms}_{n}.mp4`.
fn segment_ok(name: &str) -> bool {
    name.strip_suffix(".m4s")
        .or_else(|| name.strip_suffix(".mp4"))
        .and_then(|stem| stem.split_once('_'))
        .is_some_and(|(a, b)| {
            [a, b].iter().all(|part| {
                !part.is_empty() && part.len() <= 20 && part.bytes().all(|c| c.is_ascii_digit())
            })
        })
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .content_type("text/plain")
        .body("not found")
}

async fn not_found_handler() -> HttpResponse {
    not_found()
}

/// Serves a file as a file server should (actix-files): HEAD, `ETag` with
/// `If-None-Match` (304), `Last-Modified`, byte ranges, and the body streamed from disk
/// rather than read whole. Opening the file runs off the worker thread.
async fn file(
    req: &HttpRequest,
    path: PathBuf,
    content_type: &str,
    cache: &str,
    compressible: bool,
) -> HttpResponse {
    let Ok(file) = NamedFile::open_async(&path).await else {
        return not_found();
    };
    let mime = content_type
        .parse()
        .unwrap_or(mime::APPLICATION_OCTET_STREAM);
    let mut response = file
        .set_content_type(mime)
        .disable_content_disposition()
        .use_etag(true)
        .use_last_modified(true)
        .customize()
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            "Content-Length, Content-Range, ETag",
        ));
    if !compressible {
        // Video does not compress; tell the Compress middleware to leave it be.
        response = response.insert_header((header::CONTENT_ENCODING, "identity"));
    }
    response.respond_to(req).map_into_boxed_body()
}

async fn master(
    req: HttpRequest,
    root: web::Data<HlsRoot>,
    path: web::Path<String>,
) -> HttpResponse {
    let Ok(stream) = PublishPath::parse(&path) else {
        return not_found();
    };
    file(
        &req,
        root.0.join(stream.as_str()).join("master.m3u8"),
        PLAYLIST_TYPE,
        PLAYLIST_CACHE,
        true,
    )
    .await
}

async fn rendition_file(
    req: HttpRequest,
    root: web::Data<HlsRoot>,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let (stream, rendition, name) = path.into_inner();
    let Ok(stream) = PublishPath::parse(&stream) else {
        return not_found();
    };
    if !rendition_ok(&rendition) {
        return not_found();
    }
    let dir = root.0.join(stream.as_str()).join(&rendition);
    if name == "index.m3u8" {
        file(&req, dir.join(name), PLAYLIST_TYPE, PLAYLIST_CACHE, true).await
    } else if segment_ok(&name) {
        file(&req, dir.join(name), SEGMENT_TYPE, SEGMENT_CACHE, false).await
    } else {
        not_found()
    }
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
