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
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct S3Error(String);

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
        }
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

/// Content-Type and Cache-Control for an object kind. Playlists change every segment;
/// segment names are never reused, so a CDN may keep them for good.
pub fn headers(kind: ItemKind) -> (&'static str, &'static str) {
    match kind {
        // CMAF init segments (`.mp4`) and media segments (`.m4s`).
        ItemKind::Segment => ("video/mp4", "public, max-age=31536000, immutable"),
        // A new picture every few seconds.
        ItemKind::Thumbnail => ("image/jpeg", "public, max-age=5"),
        ItemKind::Playlist | ItemKind::Master | ItemKind::Delete => {
            ("application/vnd.apple.mpegurl", "public, max-age=1")
        }
    }
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
