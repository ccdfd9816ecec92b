//! Stream keys: the secrets encoders publish with, and the stores that hold their hashes.
//!
//! A key is shown to the operator once (on create and rotate) and stored only as its
//! SHA-256. Checking a presented key is a lookup by that hash, so no comparison runs over
//! secret bytes. [`KeyManager`] puts the policy (generation, time limits) in front of a
//! [`KeyStore`] backend: [`embedded::EmbeddedStore`] (redb) or [`redis::RedisStore`].

pub mod authorizer;
pub mod embedded;
pub mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// A stream key in clear text. Only [`StreamKey::expose`] gives the text away; `Debug`
/// redacts it so a stray `?key` in a log line leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamKey(String);

/// Keys start with this marker so secret scanners and people recognise them.
const KEY_PREFIX: &str = "kawa_sk_";
/// 32 random bytes: twice the 128 bits the design asks for.
const KEY_RANDOM_BYTES: usize = 32;

impl StreamKey {
    /// A fresh key from the operating system's RNG, URL-safe base64.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_RANDOM_BYTES];
        getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Self(format!("{KEY_PREFIX}{text}"))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamKey(<redacted>)")
    }
}

/// SHA-256 of a stream key: what the stores keep and look keys up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// The hash of a key as an encoder presents it: OBS and ffmpeg users often append a
    /// query string (`key?foo=bar`), which is not part of the secret.
    pub fn of_presented(presented: &str) -> Self {
        let key = presented.split_once('?').map_or(presented, |(key, _)| key);
        Self::of(key)
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell hashes apart in a debugger.
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

/// A publish path: the name a stream is published and played under.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublishPath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("publish path must match [a-z0-9][a-z0-9_-]{{0,63}}")]
pub struct InvalidPublishPath;

impl PublishPath {
    pub fn parse(text: &str) -> Result<Self, InvalidPublishPath> {
        let bytes = text.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes
            .iter()
            .skip(1)
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
        if first_ok && rest_ok && bytes.len() <= 64 {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidPublishPath)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PublishPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PublishPath {
    type Error = InvalidPublishPath;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PublishPath> for String {
    fn from(value: PublishPath) -> Self {
        value.0
    }
}

/// What a store keeps per stream. The key itself is never here, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub publish_path: PublishPath,
    pub label: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub key_rotated_at: Option<OffsetDateTime>,
    /// Hex SHA-256 of the current key.
    pub key_hash: String,
    /// Record this stream's broadcasts; unset follows `recordings.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("publish path `{0}` is taken")]
    Conflict(PublishPath),
    #[error("no stream with publish path `{0}`")]
    NotFound(PublishPath),
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    #[error("key store data is corrupt: {0}")]
    Corrupt(String),
}

/// A key store backend. Implementations keep `StreamRecord`s by path and an index from
/// key hash to path, and change both together.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new record; `Conflict` when the path exists.
    async fn insert(&self, record: &StreamRecord) -> Result<(), StoreError>;
    async fn get(&self, path: &PublishPath) -> Result<Option<StreamRecord>, StoreError>;
    /// Every record, sorted by publish path.
    async fn list(&self) -> Result<Vec<StreamRecord>, StoreError>;
    /// Swaps the key hash of a record; the old hash stops resolving at once.
    async fn replace_key(
        &self,
        path: &PublishPath,
        new_hash: KeyHash,
        at: OffsetDateTime,
    ) -> Result<StreamRecord, StoreError>;
    async fn remove(&self, path: &PublishPath) -> Result<(), StoreError>;
    /// Sets (or, with `None`, clears) a stream's `record` flag.
    async fn set_record(
        &self,
        path: &PublishPath,
        record: Option<bool>,
    ) -> Result<StreamRecord, StoreError>;
    async fn path_for_key(&self, hash: KeyHash) -> Result<Option<PublishPath>, StoreError>;
    /// Checks the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The outcome of checking a presented stream key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    Allowed(PublishPath),
    UnknownKey,
}

/// Key policy over a store: key generation and a time limit on every store call, so a
/// stalled Redis turns into a quick `Unavailable` rather than a hung request.
#[derive(Clone)]
pub struct KeyManager {
    store: Arc<dyn KeyStore>,
    timeout: Duration,
}

impl KeyManager {
    pub fn new(store: Arc<dyn KeyStore>, timeout: Duration) -> Self {
        Self { store, timeout }
    }

    async fn timed<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        within(self.timeout, op).await
    }

    /// Creates a stream and its first key. The key is returned here and nowhere else.
    pub async fn create(
        &self,
        path: PublishPath,
        label: Option<String>,
    ) -> Result<(StreamRecord, StreamKey), StoreError> {
        let key = StreamKey::generate();
        let record = StreamRecord {
            publish_path: path,
            label,
            created_at: now(),
            key_rotated_at: None,
            key_hash: key.hash().to_hex(),
            record: None,
        };
        self.timed(self.store.insert(&record)).await?;
        Ok((record, key))
    }

    pub async fn get(&self, path: &PublishPath) -> Result<Option<StreamRecord>, StoreError> {
        self.timed(self.store.get(path)).await
    }

    pub async fn list(&self) -> Result<Vec<StreamRecord>, StoreError> {
        self.timed(self.store.list()).await
    }

    /// Issues a new key for a stream; the old key stops working at once.
    pub async fn rotate(
        &self,
        path: &PublishPath,
    ) -> Result<(StreamRecord, StreamKey), StoreError> {
        let key = StreamKey::generate();
        let record = self
            .timed(self.store.replace_key(path, key.hash(), now()))
            .await?;
        Ok((record, key))
    }

    pub async fn set_record(
        &self,
        path: &PublishPath,
        record: Option<bool>,
    ) -> Result<StreamRecord, StoreError> {
        self.timed(self.store.set_record(path, record)).await
    }

    pub async fn delete(&self, path: &PublishPath) -> Result<(), StoreError> {
        self.timed(self.store.remove(path)).await
    }

    pub async fn authorize(&self, presented_key: &str) -> Result<Authorization, StoreError> {
        let hash = KeyHash::of_presented(presented_key);
        Ok(match self.timed(self.store.path_for_key(hash)).await? {
            Some(path) => Authorization::Allowed(path),
            None => Authorization::UnknownKey,
        })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(self.store.ping()).await
    }
}

/// A store call with a time limit: a stalled store is `Unavailable`, not a hang.
pub async fn within<T>(
    timeout: Duration,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, op).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

fn now() -> OffsetDateTime {
    // Whole seconds: the API shows RFC 3339 times and nobody needs nanoseconds there.
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_url_safe_and_distinct() {
        let a = StreamKey::generate();
        let b = StreamKey::generate();
        assert_ne!(a, b);
        let body = a.expose().strip_prefix(KEY_PREFIX).unwrap();
        assert_eq!(body.len(), 43, "32 bytes of base64 without padding");
        assert!(
            body.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = StreamKey::generate();
        assert!(!format!("{key:?}").contains(key.expose()));
        assert!(!format!("{:?}", key.hash()).contains(&key.hash().to_hex()));
    }

    #[test]
    fn query_string_after_the_key_is_ignored() {
        let key = StreamKey::generate();
        let presented = format!("{}?bandwidth=6000", key.expose());
        assert_eq!(KeyHash::of_presented(&presented), key.hash());
        assert_eq!(KeyHash::from_hex(&key.hash().to_hex()), Some(key.hash()));
    }

    #[test]
    fn publish_paths_follow_the_documented_pattern() {
        for ok in ["alice", "a", "0stream", "my_stream-2", &"a".repeat(64)] {
            assert!(PublishPath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "_a",
            "-a",
            "a/b",
            "../x",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(PublishPath::parse(bad).is_err(), "{bad}");
        }
    }
}
