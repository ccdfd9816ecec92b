//! The SRT streamid (SRTO_STREAMID): where a caller says what it wants. Encoders put the
//! stream key there in one of three forms, all accepted so a streamer's existing
//! settings work:
//!
//! - the SRT Access Control form, `#!::r=live/KEY,m=publish` (OBS, FFmpeg, SRS docs);
//! - `publish:live/KEY` (SRS's and MediaMTX's older form);
//! - a bare `KEY` (or `live/KEY`).
//!
//! Pure: the streamid in, the app, the key and the mode out. The key is a secret: it is
//! never in `Debug` output or an error.

use std::fmt;

/// libsrt caps SRTO_STREAMID at 512 bytes; anything longer is not from an encoder.
pub const MAX_STREAM_ID: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("no streamid (set it to the stream key)")]
    Missing,
    #[error("streamid longer than {MAX_STREAM_ID} bytes")]
    TooLong,
    #[error("streamid has no stream key")]
    NoKey,
    /// `m=request` (play) or another mode: Kawa takes publishers only over SRT.
    #[error("streamid asks for mode {0:?}; only publish is served")]
    NotPublish(String),
}

/// What a caller asked for.
#[derive(Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The application (`live`), when the streamid names one; `None` for a bare key.
    pub app: Option<String>,
    pub key: String,
}

impl fmt::Debug for PublishRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishRequest")
            .field("app", &self.app)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Reads a streamid in any of the accepted forms.
pub fn parse(stream_id: Option<&str>) -> Result<PublishRequest, StreamIdError> {
    let id = stream_id.map(str::trim).ok_or(StreamIdError::Missing)?;
    if id.is_empty() {
        return Err(StreamIdError::Missing);
    }
    if id.len() > MAX_STREAM_ID {
        return Err(StreamIdError::TooLong);
    }
    let resource = if let Some(pairs) = id.strip_prefix("#!::") {
        access_control(pairs)?
    } else if let Some(rest) = id.strip_prefix("publish:") {
        rest
    } else {
        id
    };
    let (app, key) = match resource.split_once('/') {
        Some((app, key)) => (Some(app.to_owned()), key),
        None => (None, resource),
    };
    if key.is_empty() {
        return Err(StreamIdError::NoKey);
    }
    Ok(PublishRequest {
        app,
        key: key.to_owned(),
    })
}

/// The `#!::` form: comma-separated `name=value` pairs; `r` is the resource, `m` the mode
/// (publish when absent only if a resource is given, as SRS reads it).
fn access_control(pairs: &str) -> Result<&str, StreamIdError> {
    let mut resource = None;
    let mut mode = None;
    for pair in pairs.split(',') {
        match pair.split_once('=') {
            Some(("r", value)) => resource = Some(value),
            Some(("m", value)) => mode = Some(value),
            _ => {}
        }
    }
    if let Some(mode) = mode
        && mode != "publish"
    {
        // The mode is the caller's text: `{:?}` escapes it wherever it is shown.
        return Err(StreamIdError::NotPublish(mode.chars().take(16).collect()));
    }
    resource.ok_or(StreamIdError::NoKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(app: Option<&str>, key: &str) -> Result<PublishRequest, StreamIdError> {
        Ok(PublishRequest {
            app: app.map(str::to_owned),
            key: key.to_owned(),
        })
    }

    #[test]
    fn every_form_encoders_use() {
        assert_eq!(
            parse(Some("#!::r=live/abc123,m=publish")),
            request(Some("live"), "abc123")
        );
        assert_eq!(
            parse(Some("#!::m=publish,r=live/abc123")),
            request(Some("live"), "abc123")
        );
        assert_eq!(parse(Some("#!::r=abc123")), request(None, "abc123"));
        assert_eq!(
            parse(Some("publish:live/abc123")),
            request(Some("live"), "abc123")
        );
        assert_eq!(parse(Some("abc123")), request(None, "abc123"));
        assert_eq!(parse(Some("live/abc123")), request(Some("live"), "abc123"));
        // A key may hold a slash after the app's.
        assert_eq!(parse(Some("live/a/b")), request(Some("live"), "a/b"));
    }

    #[test]
    fn what_is_refused() {
        assert_eq!(parse(None), Err(StreamIdError::Missing));
        assert_eq!(parse(Some("  ")), Err(StreamIdError::Missing));
        assert_eq!(parse(Some("live/")), Err(StreamIdError::NoKey));
        assert_eq!(parse(Some("#!::m=publish")), Err(StreamIdError::NoKey));
        assert_eq!(
            parse(Some("#!::r=live/abc,m=request")),
            Err(StreamIdError::NotPublish("request".into()))
        );
        assert_eq!(
            parse(Some(&"k".repeat(MAX_STREAM_ID + 1))),
            Err(StreamIdError::TooLong)
        );
    }

    #[test]
    fn the_key_is_never_shown() {
        let request = parse(Some("#!::r=live/sekrit-key,m=publish")).unwrap();
        assert!(!format!("{request:?}").contains("sekrit"));
        let error = parse(Some("#!::r=live/sekrit-key,m=play")).unwrap_err();
        assert!(!error.to_string().contains("sekrit"));
    }
}
