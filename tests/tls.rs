//! HTTPS with HTTP/2, as Safari needs for LL-HLS: a certificate made by openssl, Kawa
//! serving the API and LL-HLS over it, and curl (a real HTTP/2 client) checking the
//! protocol it got. Broken TLS settings stop Kawa at start with a clear error.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ADMIN_TOKEN, Kawa, Publisher, make_certificate, wait_for};

/// curl over HTTPS (trusting `cert`) with HTTP/2: (HTTP version, status, body).
fn curl(cert: &str, url: &str, args: &[&str]) -> (String, u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "10", "--cacert", cert])
        .args(args)
        .args(["-w", "\n%{http_version} %{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, trailer) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (version, code) = trailer.split_once(' ').unwrap_or(("", "0"));
    (
        version.to_owned(),
        code.parse().unwrap_or(0),
        body.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_hls_is_served_over_https_with_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_certificate(dir.path());
    let kawa = Kawa::builder()
        .env("KAWA_HTTP__TLS_CERT", &cert)
        .env("KAWA_HTTP__TLS_KEY", &key)
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_HLS__SEGMENT_SECONDS", "1")
        .start();
    let base = format!(
        "https://localhost:{}",
        kawa.url("").rsplit(':').next().unwrap()
    );
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let (version, status, body) = curl(
        &cert,
        &format!("{base}/api/v1/streams"),
        &[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"publish_path":"secure"}"#,
        ],
    );
    assert_eq!((version.as_str(), status), ("2", 201), "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    // The playback URL a client is given is HTTPS too.
    assert!(
        created["playback_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{created}"
    );
    let key = created["stream_key"].as_str().unwrap();
    let _publisher = Publisher::start(&kawa.rtmp_url(key), 30);

    let playlist = format!("{base}/hls/secure/source/index.m3u8");
    let text = wait_for(
        "an LL-HLS playlist over HTTPS",
        Duration::from_secs(30),
        || {
            let (version, status, body) = curl(&cert, &playlist, &[]);
            async move {
                assert_eq!(version, "2", "{body}");
                (status == 200 && body.contains("#EXT-X-PART:")).then_some(body)
            }
        },
    )
    .await;
    // A blocking reload over the same protocol.
    let msn: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .unwrap()
        .parse()
        .unwrap();
    let segments = text.matches("#EXTINF").count() as u64;
    let (version, status, body) = curl(
        &cert,
        &format!("{playlist}?_HLS_msn={}", msn + segments),
        &[],
    );
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    // Plain HTTP is not served on the HTTPS port.
    let plain = reqwest::get(kawa.url("/healthz")).await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP answered on the HTTPS port"
    );
}

#[test]
fn broken_tls_settings_stop_kawa_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = make_certificate(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let garbage = garbage.display().to_string();
    for (env, expected) in [
        (vec![("KAWA_HTTP__TLS_CERT", cert.as_str())], "http.tls_key"),
        (
            vec![
                ("KAWA_HTTP__TLS_CERT", cert.as_str()),
                ("KAWA_HTTP__TLS_KEY", garbage.as_str()),
            ],
            "garbage.pem",
        ),
        (
            vec![
                ("KAWA_HTTP__TLS_CERT", garbage.as_str()),
                ("KAWA_HTTP__TLS_KEY", cert.as_str()),
            ],
            "no certificate",
        ),
    ] {
        let data = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_kawa"))
            .arg("serve")
            .env_clear()
            .env("KAWA_DATA_DIR", data.path())
            .env("KAWA_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KAWA_HTTP__ADDR", "127.0.0.1:0")
            .env("KAWA_GRPC__ADDR", "127.0.0.1:0")
            .env("KAWA_RTMP__ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{env:?}: {text}");
        assert!(text.contains(expected), "{env:?}: {text}");
        assert!(!text.contains(ADMIN_TOKEN));
    }
}
