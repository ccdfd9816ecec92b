//! Any node answers any viewer: a request for a stream another node of the cluster owns
//! is forwarded to that node's internal address (blocking reloads included: the owner
//! holds the request, this node holds its viewer), and the owner's answer is passed on.
//!
//! Forwarded requests carry the cluster token; a request that carries it is never
//! forwarded again (no loops), and the token is compared in constant time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse};
use subtle::ConstantTimeEq;

use crate::cluster::Cluster;
use crate::delivery::s3::S3Target;

/// How long a path's owner is remembered (a lookup is two Redis reads).
const OWNER_CACHE: Duration = Duration::from_millis(500);
/// How long the owner may take to start its answer: longer than any blocking reload
/// (3 target durations).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the owner's answer may pause mid-body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer passed on (a recording's segment is a few MiB): past it the body
/// is cut short.
const MAX_FORWARDED_BYTES: u64 = 256 * 1024 * 1024;
/// Answers being passed on at once; a request beyond gets 503 with Retry-After.
const MAX_FORWARDS: usize = 1024;
/// Bounded cache: paths asked for that nobody owns must not grow it without end.
const MAX_CACHED: usize = 4096;
/// Request headers a player's request keeps on the way to the owner.
const REQUEST_HEADERS: [header::HeaderName; 4] = [
    header::RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::USER_AGENT,
];
/// Answer headers passed back to the player.
const ANSWER_HEADERS: [header::HeaderName; 10] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::CONTENT_RANGE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::ACCEPT_RANGES,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    // A WHEP session's address, and when to try again.
    header::LOCATION,
    header::RETRY_AFTER,
];

/// How fresh the answer to "who owns this path" must be.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OwnerLookup {
    /// One of up to [`OWNER_CACHE`] ago will do.
    Cached,
    /// Asked of Redis now: this node's edge for the path may have fallen behind another
    /// node's (its session waits for its publisher, who may have moved, or has ended
    /// while the path is published again elsewhere), and a player that asked the other
    /// node a moment ago must not be sent back in time.
    Fresh,
}

pub struct ClusterProxy {
    cluster: Arc<Cluster>,
    client: reqwest::Client,
    owners: Mutex<HashMap<String, (Instant, Option<String>)>>,
    forwards: Arc<tokio::sync::Semaphore>,
    /// The cluster's bucket: a node that took a stream over passes its predecessor's
    /// segments on from there until it has its own copies.
    s3: Option<S3Target>,
}

impl ClusterProxy {
    pub fn new(cluster: Arc<Cluster>, s3: Option<S3Target>) -> Self {
        // No overall timeout: a slow viewer may take long over a large answer (its pace
        // holds the owner's body back, nothing piles up here); the start of the answer
        // and each pause in its body have their own limits.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            cluster,
            client,
            owners: Mutex::new(HashMap::new()),
            forwards: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS)),
            s3,
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The cluster's bucket, if it has one.
    pub fn s3(&self) -> Option<&S3Target> {
        self.s3.as_ref()
    }

    /// Whether `req` came from another node of this cluster.
    pub fn is_internal(&self, req: &HttpRequest) -> bool {
        let expected = format!("Bearer {}", self.cluster.token().expose());
        req.headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes().ct_eq(expected.as_bytes()).into())
    }

    /// The internal URL of the node that owns `path`, when it is another live node.
    async fn owner_url(&self, path: &str, lookup: OwnerLookup) -> Option<String> {
        if lookup == OwnerLookup::Cached {
            let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, url)) = owners.get(path)
                && at.elapsed() < OWNER_CACHE
            {
                return url.clone();
            }
        }
        let looked_up = match self.cluster.holder(path).await {
            Ok(Some(holder)) if holder.node != self.cluster.node_id() => self
                .cluster
                .node(&holder.node)
                .await
                .map(|info| info.map(|i| i.url)),
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        };
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let url = match looked_up {
            Ok(url) => url,
            Err(e) => {
                // Redis is away (restarting, say): the owner it named last is still the
                // best guess, and owners go on publishing through an outage. Without
                // it, every viewer of another node's stream got this node's answer
                // (the chaos benchmark's readers waited 3.2 s at a Redis restart).
                tracing::warn!(error = %e, "cannot look up a stream's owner");
                let stale = owners.get(path).and_then(|(_, url)| url.clone());
                if stale.is_some() {
                    // Asked again after another OWNER_CACHE, not by every request.
                    owners.insert(path.to_owned(), (Instant::now(), stale.clone()));
                }
                return stale;
            }
        };
        if owners.len() >= MAX_CACHED {
            owners.retain(|_, (at, _)| at.elapsed() < OWNER_CACHE);
            if owners.len() >= MAX_CACHED {
                owners.clear();
            }
        }
        owners.insert(path.to_owned(), (Instant::now(), url.clone()));
        url
    }

    /// The owner's answer to `req` when another node owns `path`; `None` when this node
    /// should answer itself.
    pub async fn forward(
        &self,
        req: &HttpRequest,
        path: &str,
        lookup: OwnerLookup,
    ) -> Option<HttpResponse> {
        self.forward_request(req, path, None, lookup).await
    }

    /// [`Self::forward`] for a request with a body (a WHEP offer) or another method
    /// (its DELETE): the method, the body and its type go to the owner as they came.
    pub async fn forward_with(
        &self,
        req: &HttpRequest,
        path: &str,
        body: Option<bytes::Bytes>,
    ) -> Option<HttpResponse> {
        self.forward_request(req, path, body, OwnerLookup::Cached)
            .await
    }

    async fn forward_request(
        &self,
        req: &HttpRequest,
        path: &str,
        body: Option<bytes::Bytes>,
        lookup: OwnerLookup,
    ) -> Option<HttpResponse> {
        if self.is_internal(req) {
            return None;
        }
        let base = self.owner_url(path, lookup).await?;
        let mut url = format!("{base}{}", req.path());
        if !req.query_string().is_empty() {
            url.push('?');
            url.push_str(req.query_string());
        }
        let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut forwarded = self
            .client
            .request(method, &url)
            .bearer_auth(self.cluster.token().expose());
        if let Some(body) = body {
            if let Some(kind) = req.headers().get(header::CONTENT_TYPE) {
                forwarded = forwarded.header(header::CONTENT_TYPE.as_str(), kind.as_bytes());
            }
            forwarded = forwarded.body(body);
        }
        for name in &REQUEST_HEADERS {
            if let Some(value) = req.headers().get(name) {
                forwarded = forwarded.header(name.as_str(), value.as_bytes());
            }
        }
        // The owner counts viewers by address: pass on the viewer's (as this node
        // believes it, see `viewers::client_ip`).
        let trusted = req
            .app_data::<actix_web::web::Data<super::viewers::Viewers>>()
            .map_or(&[][..], |v| v.trusted());
        if let Some(client) = super::viewers::client_ip(req, trusted, false) {
            forwarded = forwarded.header("x-forwarded-for", client.to_string());
        }
        let Ok(permit) = Arc::clone(&self.forwards).try_acquire_owned() else {
            tracing::warn!("too many answers being passed on from owners; refusing one");
            return Some(
                HttpResponse::ServiceUnavailable()
                    .insert_header((header::RETRY_AFTER, "1"))
                    .finish(),
            );
        };
        let answer = match tokio::time::timeout(FORWARD_TIMEOUT, forwarded.send()).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tracing::warn!(error = %without_url(&e), "the stream's owner did not answer");
                return Some(HttpResponse::BadGateway().finish());
            }
            Err(_) => {
                tracing::warn!("the stream's owner did not answer in time");
                return Some(HttpResponse::GatewayTimeout().finish());
            }
        };
        if answer
            .content_length()
            .is_some_and(|n| n > MAX_FORWARDED_BYTES)
        {
            tracing::warn!("the stream's owner answered with more than may be passed on");
            return Some(HttpResponse::BadGateway().finish());
        }
        let status =
            StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut response = HttpResponse::build(status);
        for name in &ANSWER_HEADERS {
            if let Some(value) = answer.headers().get(name.as_str()) {
                response.insert_header((name.clone(), value.as_bytes()));
            }
        }
        // Already as compact as it gets (or video): not compressed again here.
        response.insert_header((header::CONTENT_ENCODING, "identity"));
        Some(response.streaming(relay(answer, permit)))
    }
}

/// The owner's body, chunk by chunk as the viewer takes it (nothing is buffered here
/// beyond a chunk), cut short past [`MAX_FORWARDED_BYTES`] or a pause of
/// [`BODY_READ_TIMEOUT`]. The permit is held until the body ends.
fn relay(
    answer: reqwest::Response,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some((answer, permit, 0u64)), |state| async move {
        let (mut answer, permit, sent) = state?;
        let cut = |why: String| {
            tracing::warn!(error = %why, "the stream's owner's answer broke off");
            Some((Err(std::io::Error::other(why)), None))
        };
        match tokio::time::timeout(BODY_READ_TIMEOUT, answer.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let sent = sent + chunk.len() as u64;
                if sent > MAX_FORWARDED_BYTES {
                    return cut("more than may be passed on".into());
                }
                Some((Ok(chunk), Some((answer, permit, sent))))
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => cut(without_url(&e)),
            Err(_) => cut("no data within the read timeout".into()),
        }
    })
}

/// reqwest's errors name the URL; the node's address is fine to log, but keep lines short.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<owner>");
    }
    text
}
