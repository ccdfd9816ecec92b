//! Metrics, the Grafana dashboard and logs, checked with a real Prometheus scraping a
//! real Kawa during a live test stream.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    ADMIN_TOKEN, Kawa, MotoServer, Publisher, create_stream, free_port, wait_for, wait_for_port,
};
use serde_json::Value;

/// A Prometheus server scraping Kawa every second. Killed on drop.
struct Prometheus {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(kawa: &Kawa) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: kawa\n    static_configs:\n      - targets: ['{}']\n",
                kawa.http
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus must be installed (scripts/test.sh installs it)");
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), "prometheus");
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    async fn query(&self, expr: &str) -> Value {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every PromQL expression in the dashboard, with Grafana's variables filled in.
fn dashboard_queries(stream: &str) -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/dashboards/kawa.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let expr = expr
                .replace("$stream", stream)
                .replace("$__rate_interval", "20s");
            queries.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    queries
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_a_live_stream() {
    let moto = MotoServer::start();
    moto.public_bucket("kawa-metrics").await;
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        // The WebRTC panels' series exist from a stream's first frame.
        .env("KAWA_WEBRTC__UDP_ADDR", "127.0.0.1:0")
        .env("KAWA_S3__BUCKET", "kawa-metrics")
        .env("KAWA_S3__ENDPOINT", &moto.endpoint())
        .env("KAWA_S3__FORCE_PATH_STYLE", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .start();
    let prometheus = Prometheus::start(&kawa);
    let key = create_stream(&kawa, "watched").await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    // A refused publish, so the error panels have something to show.
    let mut wrong = Publisher::start(&kawa.rtmp_url("kawa_sk_wrong"), 5);
    wrong.wait_exit(Duration::from_secs(10));

    let queries = dashboard_queries("watched");
    assert!(queries.len() >= 15, "the dashboard has its panels");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut empty = Vec::new();
        for (title, expr) in &queries {
            let answer = prometheus.query(expr).await;
            assert_eq!(
                answer["status"], "success",
                "{title}: {expr} failed: {answer}"
            );
            if answer["data"]["result"]
                .as_array()
                .is_none_or(|r| r.is_empty())
            {
                empty.push(format!("{title}: {expr}"));
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queries without data:\n{}",
            empty.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The stream template variable finds the stream.
    let values: Value = reqwest::get(format!(
        "http://127.0.0.1:{}/api/v1/label/stream/values",
        prometheus.port
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(
        values["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "watched")
    );
}

#[tokio::test]
async fn metrics_pass_promtool_and_a_streams_series_leave_when_it_ends() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .start();
    let key = create_stream(&kawa, "brief").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 5);
    let metrics_url = kawa.url("/metrics");
    let during = wait_for("segment metrics", Duration::from_secs(20), || async {
        let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        text.contains("kawa_stream_segments_total{rendition=\"source\",stream=\"brief\"}")
            .then_some(text)
    })
    .await;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (scripts/test.sh installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(during.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [key.as_str(), ADMIN_TOKEN] {
        assert!(!during.contains(secret), "a secret in the metrics");
    }

    assert!(
        publisher
            .wait_exit(Duration::from_secs(20))
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if !text.contains("stream=\"brief\"") {
            assert!(text.contains("kawa_live_streams 0"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ended stream's series are still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn json_logs_carry_spans_and_ffmpeg_errors() {
    // An x264 preset FFmpeg does not know: its complaint must reach Kawa's log.
    let kawa = Kawa::builder()
        .env("KAWA_LOG__FORMAT", "json")
        .env("KAWA_HLS__X264_PRESET", "no-such-preset")
        .config("[[hls.rungs]]\nname = \"120p\"\nheight = 120\nvideo_kbps = 150\n")
        .start();
    let key = create_stream(&kawa, "logged").await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 20);
    let deadline = Instant::now() + Duration::from_secs(20);
    let ffmpeg_line = loop {
        let logs = kawa.logs();
        let found = logs
            .lines()
            .find(|l| l.contains("\"target\":\"ffmpeg\""))
            .map(str::to_owned);
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no FFmpeg output in the log:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ffmpeg: Value = serde_json::from_str(&ffmpeg_line).unwrap();
    assert_eq!(ffmpeg["level"], "WARN");
    assert_eq!(ffmpeg["span"]["publish_path"], "logged", "{ffmpeg_line}");

    let logs = kawa.logs();
    let mut publish = None;
    for line in logs.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            panic!("not a JSON line: {line}")
        };
        if entry["fields"]["message"] == "publish accepted" {
            publish = Some(entry);
        }
    }
    let publish = publish.expect("a publish line");
    assert_eq!(publish["span"]["publish_path"], "logged");
    assert!(publish["span"]["conn"].is_number(), "{publish}");
    assert!(!logs.contains(&key), "the key reached the log");
}
