//! Kawa's loopback-only listener for FFmpeg's HLS output (`-method PUT`): each finished
//! segment and each playlist arrives as one request, which tells the session exactly
//! when a segment is complete. URLs carry a random per-FFmpeg token, so nothing else on
//! the machine can inject segments into a stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::Recipient;
use actix_web::{HttpResponse, web};
use base64::Engine;
use futures_util::StreamExt;

use crate::actors::session::FfmpegUpload;

/// FFmpeg files are a few MB; the cap only stops a runaway body.
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone)]
struct Target {
    session: Recipient<FfmpegUpload>,
    generation: u64,
}

/// Upload tokens of the running FFmpegs.
#[derive(Clone, Default)]
pub struct FfmpegUploads {
    targets: Arc<Mutex<HashMap<String, Target>>>,
}

impl FfmpegUploads {
    /// A new token for one FFmpeg generation of a session.
    pub fn register(&self, session: Recipient<FfmpegUpload>, generation: u64) -> String {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        self.lock().insert(
            token.clone(),
            Target {
                session,
                generation,
            },
        );
        token
    }

    pub fn unregister(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Target>> {
        // A poisoned map is still a valid map: keep serving.
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, token: &str) -> Option<Target> {
        self.lock().get(token).cloned()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Checks the token and names before a byte of the body is read, so a caller without a
/// token costs nothing, then reads the body up to the cap.
async fn upload(
    uploads: web::Data<FfmpegUploads>,
    path: web::Path<(String, String, String)>,
    mut payload: web::Payload,
) -> HttpResponse {
    let (token, rendition, file) = path.into_inner();
    if !valid_name(&rendition) || !valid_name(&file) {
        return HttpResponse::BadRequest().finish();
    }
    let Some(target) = uploads.find(&token) else {
        return HttpResponse::NotFound().finish();
    };
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return HttpResponse::BadRequest().finish();
        };
        if body.len() + chunk.len() > MAX_UPLOAD_BYTES {
            return HttpResponse::PayloadTooLarge().finish();
        }
        body.extend_from_slice(&chunk);
    }
    target.session.do_send(FfmpegUpload {
        generation: target.generation,
        rendition,
        file,
        body: body.freeze(),
    });
    HttpResponse::Created().finish()
}

/// Routes for the internal listener.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/ff/{token}/{rendition}/{file}",
        web::route().method(actix_web::http::Method::PUT).to(upload),
    )
    .route("/ff/{token}/{rendition}/{file}", web::post().to(upload))
    // FFmpeg may ask to delete old segments: nothing to do, Kawa owns its files.
    .route(
        "/ff/{token}/{rendition}/{file}",
        web::delete().to(HttpResponse::NoContent),
    );
}
