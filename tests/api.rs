//! The REST API over real HTTP against a real `kawa serve`, with each key store.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Kawa, RedisServer, admin_client, create_stream, stream_info};
use kawa::grpc::proto::AuthorizePublishRequest;
use kawa::grpc::proto::key_service_client::KeyServiceClient;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn authorize(kawa: &Kawa, key: &str) -> Value {
    let mut client = KeyServiceClient::connect(kawa.grpc_url()).await.unwrap();
    let reply = client
        .authorize_publish(AuthorizePublishRequest {
            app: "live".into(),
            stream_key: key.into(),
            client_addr: "127.0.0.1:5000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    json!({"allowed": reply.allowed, "publish_path": reply.publish_path, "reason": reply.reason})
}

async fn assert_error(response: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    // The message is for people: text, not the code again.
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty() && m != code),
        "{body}"
    );
}

/// Every endpoint, every documented status, and the key's effect at ingest.
async fn api_contract(kawa: &Kawa) {
    let http = admin_client();
    let anon = reqwest::Client::new();

    // Create.
    let created = http
        .post(kawa.url("/api/v1/streams"))
        .json(&json!({"publish_path": "alice", "label": "Alice's channel"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let key = created["stream_key"].as_str().unwrap().to_owned();
    assert!(key.len() >= 40, "{key}");
    assert_eq!(created["publish_path"], "alice");
    assert_eq!(created["label"], "Alice's channel");
    assert_eq!(created["obs"]["stream_key"], key.as_str());
    let rtmp_url = format!("rtmp://127.0.0.1:{}/live", kawa.rtmp.port());
    assert_eq!(created["rtmp_url"], rtmp_url.as_str());
    assert_eq!(created["obs"]["server"], rtmp_url.as_str());
    assert_eq!(
        created["playback_url"],
        format!(
            "http://127.0.0.1:{}/hls/alice/master.m3u8",
            kawa.http.port()
        )
        .as_str()
    );
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(authorize(kawa, &key).await["allowed"], true);
    assert_eq!(
        authorize(kawa, &format!("{key}?foo=bar")).await["publish_path"],
        "alice"
    );
    let wrong = authorize(kawa, "kawa_sk_wrong").await;
    assert_eq!(
        (&wrong["allowed"], &wrong["reason"]),
        (&json!(false), &json!("unknown_key"))
    );
    let mut grpc = KeyServiceClient::connect(kawa.grpc_url()).await.unwrap();
    let other_app = grpc
        .authorize_publish(AuthorizePublishRequest {
            app: "other".into(),
            stream_key: key.clone(),
            client_addr: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!other_app.allowed);
    assert_eq!(other_app.reason, "unknown_app");

    // Errors on create.
    let dup = http
        .post(kawa.url("/api/v1/streams"))
        .json(&json!({"publish_path": "alice"}))
        .send()
        .await
        .unwrap();
    assert_error(dup, StatusCode::CONFLICT, "conflict").await;
    for bad in ["Alice", "../etc", "", "a b", &"x".repeat(65)] {
        let r = http
            .post(kawa.url("/api/v1/streams"))
            .json(&json!({"publish_path": bad}))
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_path").await;
    }
    for body in [
        "{",
        "[]",
        "{\"publish_path\": 7}",
        "\u{0}\u{1}",
        "{\"label\": \"x\"}",
    ] {
        let r = http
            .post(kawa.url("/api/v1/streams"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_json").await;
    }
    let long_label = http
        .post(kawa.url("/api/v1/streams"))
        .json(&json!({"publish_path": "bob", "label": "x".repeat(201)}))
        .send()
        .await
        .unwrap();
    assert_error(long_label, StatusCode::BAD_REQUEST, "invalid_label").await;

    // Authentication on every route but health.
    for (method, path) in [
        ("POST", "/api/v1/streams"),
        ("GET", "/api/v1/streams"),
        ("GET", "/api/v1/streams/alice"),
        ("POST", "/api/v1/streams/alice/rotate"),
        ("DELETE", "/api/v1/streams/alice"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let none = anon
            .request(method.clone(), kawa.url(path))
            .send()
            .await
            .unwrap();
        assert_error(none, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let wrong = anon
            .request(method, kawa.url(path))
            .bearer_auth(format!("{ADMIN_TOKEN}x"))
            .json(&json!({"publish_path": "zed"}))
            .send()
            .await
            .unwrap();
        assert_error(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }

    // List and show: never the key.
    http.post(kawa.url("/api/v1/streams"))
        .json(&json!({"publish_path": "bob"}))
        .send()
        .await
        .unwrap();
    let list = http.get(kawa.url("/api/v1/streams")).send().await.unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    let list_text = list.text().await.unwrap();
    assert!(!list_text.contains(&key), "list leaks the key");
    let list: Value = serde_json::from_str(&list_text).unwrap();
    let paths: Vec<&str> = list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["publish_path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["alice", "bob"]);
    let one = http
        .get(kawa.url("/api/v1/streams/alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), StatusCode::OK);
    let one: Value = one.json().await.unwrap();
    assert_eq!(one["live"], false);
    assert!(one.get("stream_key").is_none());
    let missing = http
        .get(kawa.url("/api/v1/streams/nobody"))
        .send()
        .await
        .unwrap();
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;
    let bad = http
        .get(kawa.url("/api/v1/streams/NOPE"))
        .send()
        .await
        .unwrap();
    assert_error(bad, StatusCode::BAD_REQUEST, "invalid_path").await;

    // Rotate: the old key stops working at once.
    let rotated = http
        .post(kawa.url("/api/v1/streams/alice/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.unwrap();
    let new_key = rotated["stream_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    let refused = authorize(kawa, &key).await;
    assert_eq!(refused["allowed"], false);
    assert_eq!(refused["reason"], "unknown_key");
    assert_eq!(authorize(kawa, &new_key).await["allowed"], true);
    let shown = stream_info(kawa, "alice").await;
    assert!(shown["key_rotated_at"].is_string(), "{shown}");
    let r = http
        .post(kawa.url("/api/v1/streams/nobody/rotate"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;

    // Delete: the key stops working.
    let deleted = http
        .delete(kawa.url("/api/v1/streams/alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(authorize(kawa, &new_key).await["allowed"], false);
    let again = http
        .delete(kawa.url("/api/v1/streams/alice"))
        .send()
        .await
        .unwrap();
    assert_error(again, StatusCode::NOT_FOUND, "not_found").await;

    // Health needs no token.
    assert_eq!(
        anon.get(kawa.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        anon.get(kawa.url("/readyz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let r = http
        .get(kawa.url("/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

/// Keys outlive the Kawa process.
async fn keys_survive_restart(kawa: &mut Kawa) {
    let key = create_stream(kawa, "carol").await;
    kawa.restart();
    // A new client: the old one's pooled connections died with the old process.
    let http = admin_client();
    let shown = http
        .get(kawa.url("/api/v1/streams/carol"))
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), StatusCode::OK);
    assert_eq!(authorize(kawa, &key).await["publish_path"], "carol");
}

#[tokio::test]
async fn api_with_embedded_store() {
    let mut kawa = Kawa::start();
    api_contract(&kawa).await;
    keys_survive_restart(&mut kawa).await;
}

#[tokio::test]
async fn api_with_redis_store() {
    let redis = RedisServer::start();
    let mut kawa = Kawa::builder().redis(&redis).start();
    api_contract(&kawa).await;
    keys_survive_restart(&mut kawa).await;
}

#[tokio::test]
async fn redis_outage_gives_quick_503_and_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let kawa = Kawa::builder().redis(&redis).start();
    let key = create_stream(&kawa, "dora").await;

    redis.kill();
    // Each call must answer, not hang: the client gives up after 2 s.
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for (method, path) in [
        ("GET", "/api/v1/streams"),
        ("GET", "/api/v1/streams/dora"),
        ("POST", "/api/v1/streams/dora/rotate"),
        ("DELETE", "/api/v1/streams/dora"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = quick
            .request(method, kawa.url(path))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} did not answer within 2 s: {e}"));
        assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").await;
    }
    let create = quick
        .post(kawa.url("/api/v1/streams"))
        .header("authorization", &auth)
        .json(&json!({"publish_path": "erin"}))
        .send()
        .await
        .expect("create answers within 2 s");
    assert_error(create, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").await;
    let ready = quick.get(kawa.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health = quick.get(kawa.url("/healthz")).send().await.unwrap();
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "the process itself is fine"
    );
    let mut grpc = KeyServiceClient::connect(kawa.grpc_url()).await.unwrap();
    let status = grpc
        .authorize_publish(AuthorizePublishRequest {
            app: "live".into(),
            stream_key: key.clone(),
            client_addr: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = quick.get(kawa.url("/readyz")).send().await.unwrap();
        if ready.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kawa did not recover after redis returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = quick
        .get(kawa.url("/api/v1/streams/dora"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), StatusCode::OK);
    assert_eq!(authorize(&kawa, &key).await["allowed"], true);
}

#[tokio::test]
async fn keys_and_token_never_reach_the_logs() {
    let kawa = Kawa::start();
    let http = admin_client();
    let first = create_stream(&kawa, "frank").await;
    let rotated: Value = http
        .post(kawa.url("/api/v1/streams/frank/rotate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second = rotated["stream_key"].as_str().unwrap().to_owned();
    authorize(&kawa, &first).await;
    authorize(&kawa, &second).await;
    let logs = kawa.logs();
    assert!(
        logs.contains("stream key rotated"),
        "logging works at all:\n{logs}"
    );
    for secret in [first.as_str(), second.as_str(), ADMIN_TOKEN] {
        assert!(!logs.contains(secret), "a secret reached the log:\n{logs}");
    }
}

#[tokio::test]
async fn generated_admin_token_is_written_privately_and_works() {
    use std::os::unix::fs::PermissionsExt;
    let kawa = Kawa::builder().no_admin_token().start();
    let path = kawa.data_dir.join("admin-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(token.len() >= 32);
    let logs = kawa.logs();
    assert!(logs.contains(&path.display().to_string()), "{logs}");
    assert!(!logs.contains(&token));
    let r = reqwest::Client::new()
        .get(kawa.url("/api/v1/streams"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn openapi_document_describes_the_routes() {
    let kawa = Kawa::start();
    let doc: Value = reqwest::get(kawa.url("/api/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/streams",
        "/api/v1/streams/{path}",
        "/api/v1/streams/{path}/rotate",
        "/api/v1/recordings",
        "/api/v1/recordings/{path}/{id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
    // The path parameter carries its pattern, so clients can check it first.
    let param = &doc["paths"]["/api/v1/streams/{path}"]["get"]["parameters"][0];
    assert_eq!(
        param["schema"]["pattern"], "^[a-z0-9][a-z0-9_-]{0,63}$",
        "{param}"
    );
}

#[test]
fn invalid_setting_stops_start_up_with_exit_code_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kawa"))
        .arg("serve")
        .env("KAWA_HTTP__ADDR", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("KAWA_HTTP__ADDR"), "{stderr}");
}

#[tokio::test]
async fn http_is_done_as_clients_expect() {
    let kawa = Kawa::start();
    let http = admin_client();
    let anon = reqwest::Client::new();

    // The scheme of `Authorization` is case-insensitive.
    let lower = anon
        .get(kawa.url("/api/v1/streams"))
        .header("authorization", format!("bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), StatusCode::OK);

    // A body over the limit is 413, not 400.
    let big = http
        .post(kawa.url("/api/v1/streams"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"publish_path\": \"a\", \"label\": \"{}\"}}",
            "x".repeat(40_000)
        ))
        .send()
        .await
        .unwrap();
    assert_error(big, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // A known route with the wrong method is 405; an unknown one 404.
    let put = http.put(kawa.url("/api/v1/streams")).send().await.unwrap();
    assert_error(put, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let nothing = http.get(kawa.url("/api/v1/nothing")).send().await.unwrap();
    assert_error(nothing, StatusCode::NOT_FOUND, "not_found").await;

    // The list comes in pages, in path order.
    for path in ["p-a", "p-b", "p-c"] {
        create_stream(&kawa, path).await;
    }
    let page: Value = http
        .get(kawa.url("/api/v1/streams?limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<_> = page["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["publish_path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["p-a", "p-b"]);
    assert_eq!(page["next"], "p-b");
    let rest: Value = http
        .get(kawa.url("/api/v1/streams?limit=2&after=p-b"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["streams"][0]["publish_path"], "p-c");
    assert!(rest["next"].is_null());
    let bad = http
        .get(kawa.url("/api/v1/streams?limit=0"))
        .send()
        .await
        .unwrap();
    assert_error(bad, StatusCode::BAD_REQUEST, "invalid_query").await;

    // HLS files: HEAD, ETag and If-None-Match, byte ranges.
    let dir = kawa.data_dir.join("hls/p-a/source");
    std::fs::create_dir_all(&dir).unwrap();
    let segment: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    std::fs::write(dir.join("1_1.m4s"), &segment).unwrap();
    let url = kawa.url("/hls/p-a/source/1_1.m4s");
    let head = anon.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "10000");
    let etag = head.headers()["etag"].clone();
    let again = anon
        .get(&url)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let range = anon
        .get(&url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.headers()["content-range"], "bytes 100-199/10000");
    assert_eq!(range.bytes().await.unwrap(), &segment[100..200]);
    let missing = anon
        .head(kawa.url("/hls/p-a/source/1_2.ts"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
