//! Webhooks against a real HTTP receiver on loopback: the publish hook refuses one path
//! and allows another; the events hook hears publish_started and unpublish (answering
//! 500 at first, so the event is retried); every call carries a valid HMAC-SHA256
//! signature and no stream key.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::hooks::{SECRET, json, receiver, verify};
use common::{Kawa, Publisher, create_stream, free_port, wait_for};
use serde_json::Value;

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
