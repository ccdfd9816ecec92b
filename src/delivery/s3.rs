//! The S3 client (aws-sdk-s3), and how HLS objects are stored: key layout, Content-Type
//! and Cache-Control.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;

use super::spool::ItemKind;
use crate::config::S3Settings;

/// A bucket and key prefix with a client for them.
#[derive(Clone)]
pub struct S3Target {
    client: Client,
    bucket: String,
    prefix: String,
    conditional_writes: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct S3Error(String);

const UNSATISFIABLE: &str = "the requested range is not satisfiable";

impl S3Error {
    fn unsatisfiable() -> Self {
        S3Error(UNSATISFIABLE.to_owned())
    }

    /// The store answered 416 to a range.
    pub fn is_unsatisfiable(&self) -> bool {
        self.0 == UNSATISFIABLE
    }
}

/// An object being read for a viewer (see [`S3Target::open`]).
pub struct ObjectReader {
    pub length: Option<i64>,
    /// `Content-Range` of a ranged read.
    pub range: Option<String>,
    pub etag: Option<String>,
    /// `None` for a HEAD.
    pub body: Option<ByteStream>,
}

impl S3Target {
    /// Credentials come from the standard AWS chain (environment, profile, instance
    /// role). The SDK's own retries are off: the uploader retries with backoff and keeps
    /// order, which the SDK cannot know about.
    pub async fn connect(settings: &S3Settings) -> Self {
        let timeout = Duration::from_millis(settings.request_timeout_ms);
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeout.min(Duration::from_secs(3)))
                    .operation_timeout(timeout)
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::disabled());
        if !settings.endpoint.is_empty() {
            loader = loader.endpoint_url(&settings.endpoint);
        }
        let shared = loader.load().await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.force_path_style)
            .build();
        Self {
            client: Client::from_conf(config),
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.trim_matches('/').to_owned(),
            conditional_writes: settings.conditional_writes,
        }
    }

    /// Whether playlists are fenced with conditional puts (`s3.conditional_writes`).
    pub fn conditional_writes(&self) -> bool {
        self.conditional_writes
    }

    /// `{prefix}/{stream}/{key}`.
    pub fn object_key(&self, stream: &str, key: &str) -> String {
        if self.prefix.is_empty() {
            format!("{stream}/{key}")
        } else {
            format!("{}/{stream}/{key}", self.prefix)
        }
    }

    pub async fn put(&self, key: &str, kind: ItemKind, body: Vec<u8>) -> Result<(), S3Error> {
        let (content_type, cache_control) = headers(kind);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .cache_control(cache_control)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(drop)
            .map_err(|e| S3Error(describe(&e)))
    }

    /// Puts `key` only if it is as this node last left it (`If-Match` its ETag), or
    /// absent (`If-None-Match: *`): the atomic half of playlist fencing
    /// ([`super::fencing`]). Answers the new ETag, or the precondition that failed.
    pub async fn put_conditional(
        &self,
        key: &str,
        kind: ItemKind,
        body: Vec<u8>,
        condition: &Condition,
    ) -> Result<Conditional, S3Error> {
        let (content_type, cache_control) = headers(kind);
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .cache_control(cache_control)
            .body(ByteStream::from(body));
        let request = match condition {
            Condition::Matches(etag) => request.if_match(etag),
            Condition::Absent => request.if_none_match("*"),
        };
        match request.send().await {
            Ok(out) => Ok(Conditional::Written(
                out.e_tag().unwrap_or_default().to_owned(),
            )),
            // 412: written by someone else since; 404: the object to match is gone;
            // 409: a concurrent conditional write won.
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 404 | 409 | 412)) =>
            {
                Ok(Conditional::Refused)
            }
            Err(e) => Err(S3Error(describe(&e))),
        }
    }

    /// An object to pass on to a viewer as it is read (never whole in memory): its
    /// headers, and with `body` its bytes, of `range` (an HTTP `Range` value) if given.
    /// `None` when it does not exist.
    pub async fn open(
        &self,
        key: &str,
        range: Option<&str>,
        body: bool,
    ) -> Result<Option<ObjectReader>, S3Error> {
        let missing = |status: Option<u16>| status == Some(404);
        if !body {
            return match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(head) => Ok(Some(ObjectReader {
                    length: head.content_length(),
                    range: None,
                    etag: head.e_tag().map(str::to_owned),
                    body: None,
                })),
                Err(e) if missing(e.raw_response().map(|r| r.status().as_u16())) => Ok(None),
                Err(e) => Err(S3Error(describe(&e))),
            };
        }
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(str::to_owned))
            .send()
            .await;
        match answer {
            Ok(object) => Ok(Some(ObjectReader {
                length: object.content_length(),
                range: object.content_range().map(str::to_owned),
                etag: object.e_tag().map(str::to_owned),
                body: Some(object.body),
            })),
            Err(e) if missing(e.raw_response().map(|r| r.status().as_u16())) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                Err(S3Error::unsatisfiable())
            }
            Err(e) => Err(S3Error(describe(&e))),
        }
    }

    /// An object's ETag, `None` when it does not exist.
    pub async fn etag(&self, key: &str) -> Result<Option<String>, S3Error> {
        let answer = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match answer {
            Ok(head) => Ok(Some(head.e_tag().unwrap_or_default().to_owned())),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(S3Error(describe(&e))),
        }
    }

    /// An object's bytes, `None` when it does not exist; at most `limit` bytes.
    pub async fn get(&self, key: &str, limit: usize) -> Result<Option<Vec<u8>>, S3Error> {
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let object = match answer {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(S3Error(describe(&e))),
        };
        if object
            .content_length()
            .is_some_and(|n| n < 0 || n as usize > limit)
        {
            return Err(S3Error(format!("{key} is over {limit} bytes")));
        }
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| S3Error(describe(&e)))?
            .into_bytes();
        if body.len() > limit {
            return Err(S3Error(format!("{key} is over {limit} bytes")));
        }
        Ok(Some(body.to_vec()))
    }

    /// Copies `from` to `to` inside the bucket (a recording keeps a live segment this
    /// way: no bytes go through Kawa). `Ok(false)` when `from` does not exist.
    pub async fn copy(&self, from: &str, to: &str, kind: ItemKind) -> Result<bool, S3Error> {
        let (content_type, cache_control) = headers(kind);
        let answer = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .copy_source(format!("{}/{}", self.bucket, url_path(from)))
            .key(to)
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .content_type(content_type)
            .cache_control(cache_control)
            .send()
            .await;
        match answer {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            Err(e) => Err(S3Error(describe(&e))),
        }
    }

    /// The keys that start with `prefix`, at most `limit` of them.
    pub async fn list_keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, S3Error> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| S3Error(describe(&e)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            if keys.len() >= limit {
                keys.truncate(limit);
                return Ok(keys);
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(keys),
            }
        }
    }

    /// Deletes every object whose key starts with `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), S3Error> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        loop {
            // A thousand at a time (one DeleteObjects call), listed again from the start
            // after each: what is left is what remains to delete.
            let objects: Vec<ObjectIdentifier> = self
                .list_keys(prefix, 1000)
                .await?
                .into_iter()
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            if objects.is_empty() {
                return Ok(());
            }
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| S3Error(e.to_string()))?;
            let answer = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| S3Error(describe(&e)))?;
            if let Some(error) = answer.errors().first() {
                return Err(S3Error(format!(
                    "{}: {}",
                    error.key().unwrap_or("?"),
                    error.message().unwrap_or("not deleted")
                )));
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(drop)
            .map_err(|e| S3Error(describe(&e)))
    }
}

/// The precondition of a conditional put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `If-Match`: the object still has this ETag.
    Matches(String),
    /// `If-None-Match: *`: there is no such object.
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    /// Written; the object's new ETag.
    Written(String),
    /// The precondition did not hold: nothing was written.
    Refused,
}

/// Content-Type and Cache-Control for an object kind. Playlists change every segment;
/// segment names are never reused, so a CDN may keep them for good.
pub fn headers(kind: ItemKind) -> (&'static str, &'static str) {
    match kind {
        // CMAF init segments (`.mp4`) and media segments (`.m4s`), a recording's too.
        ItemKind::Segment | ItemKind::Copy => ("video/mp4", "public, max-age=31536000, immutable"),
        // A new picture every few seconds.
        ItemKind::Thumbnail => ("image/jpeg", "public, max-age=5"),
        ItemKind::Playlist | ItemKind::Master | ItemKind::Delete => {
            ("application/vnd.apple.mpegurl", "public, max-age=1")
        }
    }
}

/// A key as the path of a URL (`x-amz-copy-source`): every byte outside the unreserved
/// set and `/` percent-encoded. Kawa's keys are ASCII already; this keeps a prefix with
/// spaces working.
fn url_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The SDK's error with its cause chain, for the log (no credentials are in it).
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
