//! A file passed on from S3 as it is read (never whole in memory), Range and HEAD
//! included: a recording this node has no copy of, or a live stream's segment this node
//! took over and has not copied yet.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use crate::delivery::s3::S3Target;

/// Files being passed on from S3 at once (each holds an S3 connection until its viewer
/// has it all); a request beyond gets 503 with Retry-After.
const MAX_S3_READS: usize = 64;
static S3_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_S3_READS);

/// Object `key`, answered as a file server would; `kind` is its content type, cache
/// policy and whether the compression middleware may touch it.
pub async fn pass_on(
    req: &HttpRequest,
    s3: &S3Target,
    key: &str,
    (content_type, cache, compressible): (&str, &str, bool),
) -> HttpResponse {
    let Ok(permit) = S3_READS.try_acquire() else {
        return busy();
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|r| r.to_str().ok());
    let head = req.method() == actix_web::http::Method::HEAD;
    let object = match s3.open(key, range, !head).await {
        Ok(Some(object)) => object,
        Ok(None) => return HttpResponse::NotFound().finish(),
        Err(e) if e.is_unsatisfiable() => {
            return HttpResponse::RangeNotSatisfiable().finish();
        }
        Err(e) => {
            tracing::warn!(error = %e, "file not read from S3");
            return HttpResponse::BadGateway().finish();
        }
    };
    let mut answer = if object.range.is_some() {
        HttpResponse::PartialContent()
    } else {
        HttpResponse::Ok()
    };
    answer
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            "Content-Length, Content-Range, ETag",
        ));
    if let Some(etag) = &object.etag {
        answer.insert_header((header::ETAG, etag.as_str()));
    }
    if let Some(range) = &object.range {
        answer.insert_header((header::CONTENT_RANGE, range.as_str()));
    }
    if !compressible {
        answer.insert_header((header::CONTENT_ENCODING, "identity"));
    }
    let length = object.length.and_then(|n| u64::try_from(n).ok());
    match object.body {
        // A HEAD: the length said, no body sent (actix sends none for HEAD).
        None => match length {
            Some(length) => answer.body(actix_web::body::SizedStream::new(
                length,
                futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>(),
            )),
            None => answer.finish(),
        },
        Some(body) => {
            // The permit goes with the body: held until the viewer has it all.
            let chunks = s3_body(body, permit);
            match length {
                Some(length) => answer.no_chunking(length).streaming(chunks),
                None => answer.streaming(chunks),
            }
        }
    }
}

/// The object's bytes as the store sends them, one chunk at a time.
fn s3_body(
    body: aws_sdk_s3::primitives::ByteStream,
    permit: tokio::sync::SemaphorePermit<'static>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::unfold((body, permit), |(mut body, permit)| async move {
        match body.next().await? {
            Ok(chunk) => Some((Ok(chunk), (body, permit))),
            Err(e) => Some((Err(std::io::Error::other(e)), (body, permit))),
        }
    })
}

pub fn busy() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, "1"))
        .finish()
}
