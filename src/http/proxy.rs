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

/// How long a path's owner is remembered (a lookup is two Redis reads).
const OWNER_CACHE: Duration = Duration::from_millis(500);
/// Longer than any blocking reload (3 target durations) and any segment transfer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
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
const ANSWER_HEADERS: [header::HeaderName; 8] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::CONTENT_RANGE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::ACCEPT_RANGES,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
];

pub struct ClusterProxy {
    cluster: Arc<Cluster>,
    client: reqwest::Client,
    owners: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl ClusterProxy {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            cluster,
            client,
            owners: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `req` came from another node of this cluster.
    pub fn is_internal(&self, req: &HttpRequest) -> bool {
        let expected = format!("Bearer {}", self.cluster.token().expose());
        req.headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes().ct_eq(expected.as_bytes()).into())
    }

    /// The internal URL of the node that owns `path`, when it is another live node.
    async fn owner_url(&self, path: &str) -> Option<String> {
        {
            let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, url)) = owners.get(path)
                && at.elapsed() < OWNER_CACHE
            {
                return url.clone();
            }
        }
        let url = match self.cluster.holder(path).await {
            Ok(Some(holder)) if holder.node != self.cluster.node_id() => {
                match self.cluster.node(&holder.node).await {
                    Ok(info) => info.map(|i| i.url),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot look up a stream's owner");
                        None
                    }
                }
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up a stream's owner");
                None
            }
        };
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
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
    pub async fn forward(&self, req: &HttpRequest, path: &str) -> Option<HttpResponse> {
        if self.is_internal(req) {
            return None;
        }
        let base = self.owner_url(path).await?;
        let mut url = format!("{base}{}", req.path());
        if !req.query_string().is_empty() {
            url.push('?');
            url.push_str(req.query_string());
        }
        let method = if req.method() == actix_web::http::Method::HEAD {
            reqwest::Method::HEAD
        } else {
            reqwest::Method::GET
        };
        let mut forwarded = self
            .client
            .request(method, &url)
            .bearer_auth(self.cluster.token().expose());
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
        let answer = match forwarded.send().await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %without_url(&e), "the stream's owner did not answer");
                return Some(HttpResponse::BadGateway().finish());
            }
        };
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
        match answer.bytes().await {
            Ok(body) => Some(response.body(body)),
            Err(e) => {
                tracing::warn!(error = %without_url(&e), "the stream's owner's answer broke off");
                Some(HttpResponse::BadGateway().finish())
            }
        }
    }
}

/// reqwest's errors name the URL; the node's address is fine to log, but keep lines short.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<owner>");
    }
    text
}
