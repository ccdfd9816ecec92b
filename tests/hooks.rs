//! Webhooks against a real HTTP receiver on loopback: the publish hook refuses one path
//! and allows another; the events hook hears publish_started and unpublish (answering
//! 500 at first, so the event is retried); every call carries a valid HMAC-SHA256
//! signature and no stream key.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Kawa, Publisher, create_stream, free_port, wait_for};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "hook-secret-0123456789";

#[derive(Debug, Clone)]
struct Call {
    path: String,
    signature: String,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 server: one request per connection, answered by `status`.
async fn receiver(port: u16, calls: Arc<Mutex<Vec<Call>>>, status: fn(&Call, usize) -> u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let calls = Arc::clone(&calls);
        tokio::spawn(async move {
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                data.extend_from_slice(&buf[..n]);
                if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            let length: usize = header("content-length").parse().unwrap_or(0);
            while data.len() < head_end + length {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                data.extend_from_slice(&buf[..n]);
            }
            let call = Call {
                path: head.split_whitespace().nth(1).unwrap_or("").to_owned(),
                signature: header("kawa-signature"),
                body: data[head_end..head_end + length].to_vec(),
            };
            let seen = {
                let mut calls = calls.lock().unwrap();
                calls.push(call.clone());
                calls.iter().filter(|c| c.path == call.path).count()
            };
            let code = status(&call, seen);
            let answer =
                format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = socket.write_all(answer.as_bytes()).await;
        });
    }
}

fn verify(call: &Call) {
    let (t, v1) = call
        .signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .unwrap_or_else(|| panic!("no signature: {call:?}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&call.body);
    assert_eq!(hex::encode(mac.finalize().into_bytes()), v1, "{call:?}");
}

fn json(call: &Call) -> Value {
    serde_json::from_slice(&call.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_decide_publishes_and_hear_of_streams_signed_and_without_keys() {
    let port = free_port();
    let calls = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(receiver(port, Arc::clone(&calls), |call, seen| {
        match (call.path.as_str(), json(call)["publish_path"].as_str()) {
            ("/publish", Some("blocked")) => 403,
            ("/publish", _) => 204,
            // The first event is answered 500: it must come again.
            (_, _) if seen == 1 => 500,
            _ => 200,
        }
    }));
    let kawa = Kawa::builder()
        .env(
            "KAWA_HOOKS__PUBLISH_URL",
            &format!("http://127.0.0.1:{port}/publish"),
        )
        .env(
            "KAWA_HOOKS__EVENTS_URL",
            &format!("http://127.0.0.1:{port}/events"),
        )
        .env("KAWA_HOOKS__SECRET", SECRET)
        .env("KAWA_HLS__PRESET", "passthrough")
        .start();
    let blocked_key = create_stream(&kawa, "blocked").await;
    let allowed_key = create_stream(&kawa, "allowed").await;

    let mut refused = Publisher::start(&kawa.rtmp_url(&blocked_key), 10);
    let status = refused
        .wait_exit(Duration::from_secs(15))
        .expect("refused publisher ends");
    assert!(
        !status.success(),
        "the hook's 403 did not refuse the publish"
    );
    assert!(kawa.logs().contains("refused_by_hook"));

    let mut allowed = Publisher::start(&kawa.rtmp_url(&allowed_key), 3);
    assert!(
        allowed
            .wait_exit(Duration::from_secs(20))
            .unwrap()
            .success()
    );
    let events = wait_for(
        "publish_started and unpublish",
        Duration::from_secs(30),
        || async {
            let calls = calls.lock().unwrap();
            let events: Vec<Value> = calls
                .iter()
                .filter(|c| c.path == "/events")
                .map(json)
                .collect();
            let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
            (names.contains(&"unpublish")
                && names.iter().filter(|n| **n == "publish_started").count() >= 1)
                .then(|| events.clone())
        },
    )
    .await;
    // The first event (publish_started) was answered 500 and sent again.
    let started = events
        .iter()
        .filter(|e| e["event"] == "publish_started")
        .count();
    assert!(started >= 2, "publish_started was not retried: {events:?}");
    assert!(
        events.iter().all(|e| e["publish_path"] == "allowed"),
        "{events:?}"
    );

    let calls = calls.lock().unwrap().clone();
    let asked = calls.iter().filter(|c| c.path == "/publish").count();
    assert_eq!(asked, 2, "one publish hook call per publish: {calls:?}");
    for call in &calls {
        verify(call);
        let text = String::from_utf8_lossy(&call.body);
        for key in [&blocked_key, &allowed_key] {
            assert!(
                !text.contains(key.as_str()),
                "a stream key in a hook body: {text}"
            );
        }
    }
}
