//! Kawa with S3 delivery to a moto server, and reading what it put there.

use m3u8_rs::{MediaPlaylist, Playlist};

use super::KawaBuilder;

pub const BUCKET: &str = "kawa-live";
pub const PREFIX: &str = "live";

pub fn with_s3(builder: KawaBuilder, endpoint: &str) -> KawaBuilder {
    builder
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_S3__BUCKET", BUCKET)
        .env("KAWA_S3__PREFIX", PREFIX)
        .env("KAWA_S3__ENDPOINT", endpoint)
        .env("KAWA_S3__FORCE_PATH_STYLE", "true")
        .env("KAWA_S3__REQUEST_TIMEOUT_MS", "2000")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

pub async fn s3_text(client: &aws_sdk_s3::Client, key: &str) -> Option<Vec<u8>> {
    let object = client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .ok()?;
    Some(object.body.collect().await.ok()?.into_bytes().to_vec())
}

pub async fn s3_playlist(client: &aws_sdk_s3::Client, stream: &str) -> Option<MediaPlaylist> {
    s3_rendition_playlist(client, stream, "source").await
}

pub async fn s3_rendition_playlist(
    client: &aws_sdk_s3::Client,
    stream: &str,
    rendition: &str,
) -> Option<MediaPlaylist> {
    let body = s3_text(client, &format!("{PREFIX}/{stream}/{rendition}/index.m3u8")).await?;
    match m3u8_rs::parse_playlist_res(&body) {
        Ok(Playlist::MediaPlaylist(p)) => Some(p),
        _ => panic!(
            "invalid playlist in S3:\n{}",
            String::from_utf8_lossy(&body)
        ),
    }
}

pub async fn s3_has(client: &aws_sdk_s3::Client, key: &str) -> bool {
    client
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .is_ok()
}
