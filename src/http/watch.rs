//! `GET /watch/{path}`: a page that plays a stream in the browser, for operators checking
//! a stream and for sharing. hls.js (the npm package's light build, vendored by
//! `scripts/vendor-hlsjs.sh`) is served from the binary: no outside CDN. The page's
//! script waits for a stream that is not live yet and shows live/offline, the picture's
//! size and the latency behind live.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::keys::PublishPath;

const PAGE: &str = include_str!("watch/page.html");
const HLS_JS: &str = include_str!("watch/hls.light.min.js");
const WATCH_JS: &str = include_str!("watch/watch.js");
/// Scripts only from Kawa, media from Kawa (hls.js feeds it through blob: URLs).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
                   connect-src 'self'; media-src 'self' blob:; worker-src blob:";

async fn page(path: web::Path<String>) -> HttpResponse {
    // Publish paths are lowercase letters, digits, '_' and '-': nothing to escape.
    let Ok(stream) = PublishPath::parse(&path) else {
        return HttpResponse::NotFound()
            .content_type(mime::TEXT_PLAIN_UTF_8)
            .body("no such stream\n");
    };
    HttpResponse::Ok()
        .content_type(mime::TEXT_HTML_UTF_8)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(PAGE.replace("{{path}}", stream.as_str()))
}

async fn asset(name: web::Path<String>) -> HttpResponse {
    let body = match name.as_str() {
        "hls.light.min.js" => HLS_JS,
        "watch.js" => WATCH_JS,
        _ => return HttpResponse::NotFound().finish(),
    };
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        // Tied to this binary: an hour is fresh enough for a new version to arrive.
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/watch/assets/{name}", web::get().to(asset))
        .route("/watch/{path}", web::get().to(page));
}

#[cfg(test)]
mod tests {
    use actix_web::{App, test};

    use super::*;

    #[actix_web::test]
    async fn the_page_names_only_valid_paths_and_its_scripts_come_from_kawa() {
        let app = test::init_service(App::new().configure(configure)).await;
        let req = test::TestRequest::get()
            .uri("/watch/my-stream")
            .to_request();
        let res = test::call_service(&app, req).await;
        assert!(res.status().is_success());
        let csp = res.headers().get(header::CONTENT_SECURITY_POLICY).cloned();
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(body.contains(r#"data-master="/hls/my-stream/master.m3u8""#));
        assert!(csp.unwrap().to_str().unwrap().contains("script-src 'self'"));
        let req = test::TestRequest::get()
            .uri("/watch/%3Cscript%3E")
            .to_request();
        assert_eq!(test::call_service(&app, req).await.status(), 404);
        let req = test::TestRequest::get()
            .uri("/watch/assets/hls.light.min.js")
            .to_request();
        let res = test::call_service(&app, req).await;
        assert!(res.status().is_success());
        assert!(test::read_body(res).await.len() > 100_000);
        let req = test::TestRequest::get()
            .uri("/watch/assets/..%2Fmod.rs")
            .to_request();
        assert_eq!(test::call_service(&app, req).await.status(), 404);
    }
}
