//! Real parts for integration tests: a `kawa` process, a `redis-server`, free ports.
#![allow(dead_code)] // each test binary uses a different subset

pub mod cluster;
pub mod hooks;
pub mod rtmp;
pub mod s3;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token-7f3a";

/// `tests/player`: the browser and hls.js scripts (`npm ci` there installs them).
pub fn player_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/player")
}

/// Runs a script of tests/player (Chromium through playwright-core) with `args`: the
/// JSON report it prints last, its whole output (for messages), and whether it exited 0.
pub async fn node_report(script: &str, args: Vec<String>) -> (serde_json::Value, String, bool) {
    let script = script.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(player_dir())
            .arg(&script)
            .args(&args)
            .output()
            .expect("node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().last().unwrap_or_else(|| panic!("{report}"));
    let r = serde_json::from_str(line).unwrap_or_else(|_| panic!("{report}"));
    (r, report, output.status.success())
}

/// A port nobody listens on right now (the OS picks; the listener is closed at once).
/// A self-signed certificate for localhost and 127.0.0.1 (EC P-256, openssl), and its
/// key: (cert, key) paths. Not a CA: rustls takes a self-signed certificate as its own
/// anchor only so; curl and OpenSSL take it either way.
pub fn make_certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    (cert.display().to_string(), key.display().to_string())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `addr` accepts TCP connections.
pub fn wait_for_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis-server` on a free loopback port, with an append-only file so that a restart
/// keeps its data. Killed on drop.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the README's test command installs it)");
        self.child = Some(child);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            "redis-server",
        );
    }

    /// SIGSTOP: a Redis that hangs (connections stay open, nothing answers).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL: the way a crashed or OOM-killed Redis goes away.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `kawa serve` on free loopback ports, logging to a file. Killed on drop.
pub struct Kawa {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub rtmp: SocketAddr,
    /// The SRT listener, when the builder turned it on ([`KawaBuilder::srt`]).
    pub srt: Option<SocketAddr>,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    config_file: Option<PathBuf>,
    child: Option<Child>,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

pub struct KawaBuilder {
    env: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    admin_token: Option<String>,
    config: Option<String>,
}

impl KawaBuilder {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// SRT ingest on a free loopback UDP port.
    pub fn srt(self) -> Self {
        self.env("KAWA_SRT__ADDR", "127.0.0.1:0")
    }

    pub fn redis(self, redis: &RedisServer) -> Self {
        self.env("KAWA_STORE__REDIS_URL", &redis.url())
    }

    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// A config file (TOML) layered over the defaults.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Start without `KAWA_ADMIN_TOKEN`, so Kawa generates one.
    pub fn no_admin_token(mut self) -> Self {
        self.admin_token = None;
        self
    }

    pub fn start(self) -> Kawa {
        let (dir, data_dir) = match self.data_dir {
            Some(d) => (None, d),
            None => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().to_owned();
                (Some(dir), path)
            }
        };
        // Port 0 everywhere: Kawa binds what the OS gives it and logs the addresses, so
        // tests running in parallel can never race for a port.
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut kawa = Kawa {
            http: unbound,
            grpc: unbound,
            rtmp: unbound,
            srt: None,
            log_path: data_dir.join("kawa.log"),
            data_dir,
            config_file: None,
            child: None,
            env: self.env,
            _dir: dir,
        };
        if let Some(token) = self.admin_token {
            kawa.env.push(("KAWA_ADMIN_TOKEN".into(), token));
        }
        if let Some(config) = self.config {
            std::fs::create_dir_all(&kawa.data_dir).unwrap();
            let path = kawa.data_dir.join("kawa-test.toml");
            std::fs::write(&path, config).unwrap();
            kawa.config_file = Some(path);
        }
        kawa.launch();
        kawa
    }
}

impl Kawa {
    pub fn builder() -> KawaBuilder {
        KawaBuilder {
            env: Vec::new(),
            data_dir: None,
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            config: None,
        }
    }

    pub fn start() -> Self {
        Self::builder().start()
    }

    fn launch(&mut self) {
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kawa"));
        cmd.arg("serve");
        if let Some(config) = &self.config_file {
            cmd.arg("--config").arg(config);
        }
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "debug")
            .env("KAWA_DATA_DIR", &self.data_dir)
            .env("KAWA_HTTP__ADDR", "127.0.0.1:0")
            .env("KAWA_GRPC__ADDR", "127.0.0.1:0")
            .env("KAWA_RTMP__ADDR", "127.0.0.1:0")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // The log survives restarts: wait for this start's line, not an earlier one.
        let started_at = self.logs().matches("kawa is up").count();
        self.child = Some(cmd.spawn().expect("spawn kawa"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = loop {
            let logs = self.logs();
            if let Some(line) = logs
                .lines()
                .filter(|l| l.contains("kawa is up"))
                .nth(started_at)
            {
                break line.to_owned();
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kawa exited during start-up ({status}):\n{logs}");
            }
            assert!(Instant::now() < deadline, "kawa did not start:\n{logs}");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The line is text (`http=127.0.0.1:1234`) or JSON (`"http":"127.0.0.1:1234"`).
        let json: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        let field = |name: &str| -> Option<String> {
            match &json {
                Some(v) => v["fields"][name].as_str().map(str::to_owned),
                None => {
                    let prefix = format!("{name}=");
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(prefix.as_str()))
                        .map(str::to_owned)
                }
            }
        };
        let addr = |name: &str| -> SocketAddr {
            field(name)
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {name} address in: {line}"))
        };
        self.srt = field("srt").and_then(|a| a.parse().ok());
        self.http = addr("http");
        self.grpc = addr("grpc");
        self.rtmp = addr("rtmp");
        wait_for_port(self.http, "kawa HTTP");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("kawa is running").id()
    }

    /// PIDs of the FFmpeg children Kawa runs now.
    pub fn ffmpeg_children(&self) -> Vec<u32> {
        ffmpeg_children_of(self.pid())
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp)
    }

    /// A publisher's URL and container for `ingest` (`rtmp` or `srt`), for benchmarks
    /// that compare the two front doors.
    pub fn ingest_url(&self, ingest: &str, key: &str) -> (String, &'static str) {
        match ingest {
            "srt" => (
                self.srt_url(&format!("#!::r=live/{key},m=publish"), None),
                "mpegts",
            ),
            _ => (self.rtmp_url(key), "flv"),
        }
    }

    /// An SRT caller URL for FFmpeg with this streamid (any form) and passphrase.
    pub fn srt_url(&self, stream_id: &str, passphrase: Option<&str>) -> String {
        let addr = self.srt.expect("started with KawaBuilder::srt");
        let mut url = format!("srt://{addr}?streamid={stream_id}&latency=120000");
        if let Some(passphrase) = passphrase {
            url.push_str(&format!("&passphrase={passphrase}"));
        }
        url
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Everything Kawa wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the same Kawa again (same ports, data directory and settings).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Kawa {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A reqwest client with the admin token and a hard deadline per request, so a hang
/// fails the test instead of stalling it.
pub fn admin_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `GET /api/v1/streams/{path}` as the admin, as JSON.
/// ffprobe's JSON for `target` (a file or URL), with `args` choosing what it shows.
pub fn ffprobe_json(args: &[&str], target: &str) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A number from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A process's resident memory in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The body of `GET path` on Kawa's HTTP, or `None` unless it answers 2xx.
pub async fn fetch_text(kawa: &Kawa, path: &str) -> Option<String> {
    let response = reqwest::get(kawa.url(path)).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// Kawa's `/metrics` text.
/// The init segment each segment of a media playlist needs (`EXT-X-MAP` applies to
/// every segment after it until the next one).
pub fn segment_maps(playlist: &m3u8_rs::MediaPlaylist) -> Vec<String> {
    let mut current = String::new();
    playlist
        .segments
        .iter()
        .map(|s| {
            if let Some(map) = &s.map {
                current = map.uri.clone();
            }
            current.clone()
        })
        .collect()
}

/// Segment `index` of a rendition (`/hls/{stream}/{rendition}`) as a player reads it:
/// its init segment, then the segment, in one file ffprobe can open.
pub async fn playable_segment(
    kawa: &Kawa,
    rendition_path: &str,
    playlist: &m3u8_rs::MediaPlaylist,
    index: usize,
) -> tempfile::NamedTempFile {
    let init = &segment_maps(playlist)[index];
    assert!(
        !init.is_empty(),
        "segment {index} has no EXT-X-MAP before it"
    );
    let mut bytes = Vec::new();
    for name in [init.as_str(), playlist.segments[index].uri.as_str()] {
        let url = kawa.url(&format!("{rendition_path}/{name}"));
        let body = reqwest::get(&url).await.unwrap();
        assert!(body.status().is_success(), "{url}: {}", body.status());
        bytes.extend_from_slice(&body.bytes().await.unwrap());
    }
    let file = tempfile::Builder::new().suffix(".mp4").tempfile().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    file
}

pub async fn metrics_text(kawa: &Kawa) -> String {
    reqwest::get(kawa.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn stream_info(kawa: &Kawa, path: &str) -> serde_json::Value {
    admin_get(kawa, &format!("/api/v1/streams/{path}")).await
}

/// `GET url` (a path and query on `kawa`) as the admin, as JSON.
pub async fn admin_get(kawa: &Kawa, url: &str) -> serde_json::Value {
    admin_client()
        .get(kawa.url(url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Arms a panic in the next handler of an `actor` kind ("session", "registry",
/// "transcoder", "uploader", "connection") for `path` (any when `None`), through the
/// fault-injection hook that `scripts/test.sh` builds in.
pub async fn inject_panic(kawa: &Kawa, actor: &str, path: Option<&str>) {
    inject_panic_during(kawa, actor, path, None).await;
}

/// [`inject_panic`] into one handler of the actor (`during`, as the actor names it).
pub async fn inject_panic_during(
    kawa: &Kawa,
    actor: &str,
    path: Option<&str>,
    during: Option<&str>,
) {
    let response = admin_client()
        .post(kawa.url("/debug/faults"))
        .json(&serde_json::json!({ "actor": actor, "path": path, "during": during }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        reqwest::StatusCode::NO_CONTENT,
        "the fault hook answers only in a build with `--features fault-injection` (scripts/test.sh)"
    );
}

/// The value of one metric line (`name{labels}`, as printed) on `kawa`.
pub async fn metric_value(kawa: &Kawa, series: &str) -> Option<f64> {
    let text = metrics_text(kawa).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Creates a stream over the API and returns its key.
pub async fn create_stream(kawa: &Kawa, path: &str) -> String {
    let created: serde_json::Value = admin_client()
        .post(kawa.url("/api/v1/streams"))
        .json(&serde_json::json!({ "publish_path": path }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["stream_key"].as_str().expect("a key").to_owned()
}

/// An ffmpeg publisher sending `seconds` of testsrc2 + sine in real time (-re), like
/// OBS: 320x240, 25 fps, a keyframe every second, AAC 44.1 kHz stereo.
pub struct Publisher {
    child: Child,
    pub stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// x265 as the HEVC publishers use it: fast, a keyframe every second at 25 fps, quiet.
pub const X265: [&str; 6] = [
    "-c:v",
    "libx265",
    "-preset",
    "ultrafast",
    "-x265-params",
    "keyint=25:min-keyint=25:log-level=error",
];

/// ffmpeg's inputs for a test picture (`testsrc2`, 320x240 at `fps`) and a tone, for
/// `seconds`: what the publishers below encode, each their own way.
pub fn test_source(fps: u32, seconds: u32) -> Vec<String> {
    [
        "-f".to_owned(),
        "lavfi".to_owned(),
        "-i".to_owned(),
        format!("testsrc2=size=320x240:rate={fps}"),
        "-f".to_owned(),
        "lavfi".to_owned(),
        "-i".to_owned(),
        "sine=frequency=440:sample_rate=44100".to_owned(),
        "-t".to_owned(),
        seconds.to_string(),
    ]
    .into()
}

impl Publisher {
    pub fn start(url: &str, seconds: u32) -> Self {
        Self::start_sized(url, seconds, "320x240")
    }

    pub fn start_sized(url: &str, seconds: u32, size: &str) -> Self {
        Self::start_encoded(url, seconds, size, "flv")
    }

    /// The same picture and tone as [`Self::start`], as MPEG-TS to an `srt://` URL.
    pub fn start_srt(url: &str, seconds: u32) -> Self {
        Self::start_encoded(url, seconds, "320x240", "mpegts")
    }

    fn start_encoded(url: &str, seconds: u32, size: &str, format: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("publisher.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "error", "-re"])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size={size}:rate=25"),
            ])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", &seconds.to_string()])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-g",
                "25",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:a", "aac", "-ac", "2", "-b:a", "64k", "-f", format, url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("ffmpeg must be installed (scripts/test.sh installs it)");
        Self {
            child,
            stderr_path,
            _dir: dir,
        }
    }

    /// An ffmpeg publisher with these arguments between `-re` and the output (`-f flv
    /// URL`): real encoders' habits (forced keyframes, gaps, one track only).
    pub fn start_ffmpeg(url: &str, args: &[&str]) -> Self {
        let mut all = vec!["-hide_banner", "-nostdin", "-v", "error", "-re"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-f", "flv", url]);
        Self::start_program("ffmpeg", &all)
    }

    /// Any publishing program (`gst-launch-1.0 ...`), installed by scripts/test.sh.
    pub fn start_program(program: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("publisher.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{program} (scripts/test.sh installs it): {e}"));
        Self {
            child,
            stderr_path,
            _dir: dir,
        }
    }

    /// Publishes a file in real time, looping, without re-encoding (so the publisher
    /// costs next to no CPU: what is measured is the server).
    pub fn start_file_loop(url: &str, file: &Path) -> Self {
        Self::start_file_loop_as(url, file, "flv")
    }

    /// [`Self::start_file_loop`] in any container: `mpegts` for an `srt://` URL.
    pub fn start_file_loop_as(url: &str, file: &Path, format: &str) -> Self {
        Self::loop_file("ffmpeg", tempfile::tempdir().unwrap(), url, file, format)
    }

    /// [`Self::start_file_loop_as`] with another FFmpeg (`program`), keeping `dir` (which
    /// may hold `file`) while it runs.
    pub fn loop_file(
        program: &str,
        dir: tempfile::TempDir,
        url: &str,
        file: &Path,
        format: &str,
    ) -> Self {
        let stderr_path = dir.path().join("publisher.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = Command::new(program)
            .args(["-hide_banner", "-nostdin", "-v", "error", "-re"])
            .args(["-stream_loop", "-1", "-i"])
            .arg(file)
            .args(["-c", "copy", "-f", format, url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{program} (scripts/test.sh installs it): {e}"));
        Self {
            child,
            stderr_path,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits up to `limit` for the publisher to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL: a crashed encoder or a pulled network cable.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A moto S3 server (`moto_server` from PyPI) on a free loopback port. Killed on drop.
pub struct MotoServer {
    pub port: u16,
    child: Child,
}

impl MotoServer {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto[server] must be installed (scripts/test.sh installs it)");
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), "moto_server");
        Self { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's process (SIGSTOP freezes the store).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: an S3 that hangs (connections are accepted, nothing answers).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }

    /// A client with the test credentials (moto refuses anonymous reads by default).
    pub async fn client(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new("test", "test", None, None, "tests");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates a bucket that anyone may read, as a CDN origin for public streams is.
    pub async fn public_bucket(&self, bucket: &str) {
        let client = self.client().await;
        client.create_bucket().bucket(bucket).send().await.unwrap();
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/*"}}]}}"#
        );
        client
            .put_bucket_policy()
            .bucket(bucket)
            .policy(policy)
            .send()
            .await
            .unwrap();
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of a server, which a test can take down and bring back on the
/// same port: from Kawa's side, the S3 endpoint dies and returns. (Killing moto itself
/// would lose its objects, which live only in its memory.)
pub struct TcpRelay {
    pub port: u16,
    target: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TcpRelay {
    pub async fn start(target: SocketAddr) -> Self {
        let mut relay = Self {
            port: free_port(),
            target,
            task: None,
        };
        relay.up().await;
        relay
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Accepts connections again.
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Closes the listener and cuts every open connection.
    pub async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Kawa {
    /// SIGKILL: a crashed node.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL, then start again with the same data directory and settings.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Starts a killed or stopped Kawa again (new ports, same data directory).
    pub fn start_again(&mut self) {
        self.launch();
    }
}

/// Polls `check` until it gives a value, or fails the test after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A ladder that fits the 320x240 test source: the source plus two scaled rungs.
pub const SMALL_LADDER: &str = r#"
[hls]
retention_seconds = 300

[[hls.rungs]]
name = "180p"
height = 180
video_kbps = 300

[[hls.rungs]]
name = "120p"
height = 120
video_kbps = 150
"#;

/// PIDs of the FFmpeg children of process `me`.
pub fn ffmpeg_children_of(me: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm_part, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) && comm_part.ends_with("(ffmpeg") {
            pids.push(pid);
        }
    }
    pids
}

/// Least-squares slope of `(x, y)` points (0 for fewer than two distinct x): the
/// benchmarks' RSS slopes, in MiB per hour with x in hours.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = (points.iter()).fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let num: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    if den == 0.0 { 0.0 } else { num / den }
}
