//! Webhooks: Kawa asks the operator's system before a publish (`hooks.publish_url`: a
//! 2xx answer allows it) and tells it when a stream starts and ends (`hooks.events_url`,
//! retried with backoff). Each call is a JSON POST signed with HMAC-SHA256 (see
//! [`sign`]); bodies name the publish path, never a stream key.

mod sign;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

pub use sign::{SIGNATURE_HEADER, signature};

use crate::config::{HookDefault, HooksSettings, Secret};
use crate::keys::PublishPath;

/// First pause between attempts of an event; doubled each time.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// What happened, as the hook's JSON body says it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HookEvent {
    /// `publish`, `publish_started`, `unpublish` or `recording_ready`.
    pub event: &'static str,
    pub publish_path: String,
    /// The publisher's address (publish and publish_started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// RFC 3339.
    pub time: String,
    /// The recording (`recording_ready`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<crate::recordings::RecordingView>,
}

impl HookEvent {
    pub fn new(event: &'static str, path: &PublishPath, client_addr: Option<String>) -> Self {
        let time = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            event,
            publish_path: path.to_string(),
            client_addr,
            time,
            recording: None,
        }
    }

    /// `recording_ready`: a recording's VOD playlists are written.
    pub fn recording_ready(recording: crate::recordings::RecordingView) -> Self {
        let path = recording.info.publish_path.clone();
        Self {
            recording: Some(recording),
            ..Self::new("recording_ready", &path, None)
        }
    }
}

/// The publish hook's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Refuse,
}

pub struct Hooks {
    publish_url: Option<String>,
    events_url: Option<String>,
    secret: Secret,
    default: HookDefault,
    retries: u32,
    client: reqwest::Client,
}

impl Hooks {
    /// `None` when no hook URL is set.
    pub fn from_settings(settings: &HooksSettings) -> Option<Arc<Self>> {
        let url = |u: &String| (!u.is_empty()).then(|| u.clone());
        let (publish_url, events_url) = (url(&settings.publish_url), url(&settings.events_url));
        if publish_url.is_none() && events_url.is_none() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()
            .unwrap_or_default();
        Some(Arc::new(Self {
            publish_url,
            events_url,
            secret: settings.secret.clone(),
            default: settings.publish_default,
            retries: settings.retries,
            client,
        }))
    }

    async fn post(&self, url: &str, event: &HookEvent) -> Result<reqwest::StatusCode, String> {
        let body = serde_json::to_vec(event).unwrap_or_default();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let answer = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(self.secret.expose(), now, &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        Ok(answer.status())
    }

    /// Asks the publish hook (if there is one) whether `event`'s publish may go ahead.
    pub async fn ask_publish(&self, event: &HookEvent) -> Verdict {
        let Some(url) = &self.publish_url else {
            return Verdict::Allow;
        };
        match self.post(url, event).await {
            Ok(status) if status.is_success() => Verdict::Allow,
            Ok(status) => {
                tracing::info!(publish_path = %event.publish_path, %status, "the publish hook refused the publish");
                Verdict::Refuse
            }
            Err(e) => {
                let verdict = match self.default {
                    HookDefault::Allow => Verdict::Allow,
                    HookDefault::Refuse => Verdict::Refuse,
                };
                tracing::warn!(publish_path = %event.publish_path, error = %e, ?verdict, "the publish hook did not answer; hooks.publish_default decides");
                verdict
            }
        }
    }

    /// Tells the events hook (if there is one), in the background, retrying with backoff
    /// until it answers 2xx or the retries run out.
    pub fn notify(self: &Arc<Self>, event: HookEvent) {
        let Some(url) = self.events_url.clone() else {
            return;
        };
        let hooks = Arc::clone(self);
        tokio::spawn(async move {
            let mut pause = FIRST_RETRY;
            for attempt in 0..=hooks.retries {
                match hooks.post(&url, &event).await {
                    Ok(status) if status.is_success() => return,
                    Ok(status) => {
                        tracing::warn!(event = event.event, %status, attempt, "the events hook refused an event; will retry")
                    }
                    Err(e) => {
                        tracing::warn!(event = event.event, error = %e, attempt, "the events hook did not answer; will retry")
                    }
                }
                if attempt < hooks.retries {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
            tracing::error!(event = event.event, publish_path = %event.publish_path, "an event never reached the events hook");
        });
    }
}
