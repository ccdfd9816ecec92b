//! A Kawa cluster on loopback: real `redis-server` and moto, N `kawa serve` nodes sharing
//! them, a TCP balancer in front of their RTMP ports (what encoders reach), and an ffmpeg
//! publisher that reconnects when its connection breaks, as OBS does.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::s3::with_s3;
use super::{Kawa, MotoServer, RedisServer, SMALL_LADDER, free_port};

pub const CLUSTER_TOKEN: &str = "cluster-test-token-0123456789";
pub const LEASE_MS: u64 = 3000;

/// Node `i` of a cluster: its own data dir and ports, the shared Redis and bucket.
pub fn node(i: usize, redis: &RedisServer, moto: &MotoServer) -> Kawa {
    node_builder(i, redis, moto).start()
}

/// Node `i` with `rtmp.takeover` off: a publish never takes a path another node holds.
pub fn node_without_takeover(i: usize, redis: &RedisServer, moto: &MotoServer) -> Kawa {
    node_builder(i, redis, moto)
        .env("KAWA_RTMP__TAKEOVER", "false")
        .start()
}

/// Node `i` recording every stream; a dropped publisher ends its stream after 1 s.
pub fn recording_node(i: usize, redis: &RedisServer, moto: &MotoServer) -> Kawa {
    node_builder(i, redis, moto)
        .env("KAWA_RECORDINGS__ENABLED", "true")
        .env("KAWA_RTMP__RECONNECT_GRACE_MS", "1000")
        .start()
}

/// Node `i` with a small ladder encoded on transcoder workers.
pub fn ladder_node_with_s3(i: usize, redis: &RedisServer, moto: &MotoServer) -> Kawa {
    node_builder(i, redis, moto)
        .config(SMALL_LADDER)
        .env("KAWA_HLS__PRESET", "ladder")
        .env("KAWA_CLUSTER__REMOTE_TRANSCODING", "true")
        .start()
}

pub fn node_builder(i: usize, redis: &RedisServer, moto: &MotoServer) -> super::KawaBuilder {
    with_s3(Kawa::builder(), &moto.endpoint())
        .redis(redis)
        .env("KAWA_CLUSTER__ENABLED", "true")
        .env("KAWA_CLUSTER__NODE_ID", &format!("node-{i}"))
        .env("KAWA_CLUSTER__TOKEN", CLUSTER_TOKEN)
        .env("KAWA_CLUSTER__LEASE_MS", &LEASE_MS.to_string())
        .env("KAWA_HLS__RETENTION_SECONDS", "60")
}

/// A TCP balancer: each new connection goes to the next backend that accepts it.
pub struct Balancer {
    pub port: u16,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: Vec<SocketAddr>) -> Self {
        let port = free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let next = Arc::new(AtomicUsize::new(0));
        let backends = Arc::new(Mutex::new(backends));
        let shared = Arc::clone(&backends);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let backends = shared.lock().unwrap().clone();
                let next = Arc::clone(&next);
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..backends.len() {
                        let backend = backends[(first + i) % backends.len()];
                        let connect = tokio::net::TcpStream::connect(backend);
                        if let Ok(Ok(mut outbound)) =
                            tokio::time::timeout(Duration::from_millis(500), connect).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Self {
            port,
            backends,
            task,
        }
    }

    /// A node restarted on new ports.
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        *self.backends.lock().unwrap() = backends;
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An ffmpeg publisher (320x240 testsrc2, 25 fps, 2 s GOP, AAC) started again 200 ms
/// after each exit, for as long as it lives. Keeps the time of every (re)start.
///
/// It loops a clip encoded once per process and copies it: twenty live x264 encoders
/// take both cores of a small machine, and a starved server is not what a cluster test
/// or the chaos benchmark measures.
pub struct ReconnectingPublisher {
    stop: Arc<AtomicBool>,
    pub starts: Arc<Mutex<Vec<Instant>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// 20 s of the publisher's picture and sound, encoded once (kept until the process ends).
fn clip() -> &'static std::path::Path {
    static CLIP: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    &CLIP
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("publisher.flv");
            let status = Command::new("ffmpeg")
                .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
                .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
                .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
                .args(["-t", "20", "-c:v", "libx264", "-preset", "ultrafast"])
                .args(["-tune", "zerolatency", "-g", "50", "-pix_fmt", "yuv420p"])
                .args(["-c:a", "aac", "-ac", "2", "-b:a", "64k", "-f", "flv"])
                .arg(&path)
                .status()
                .expect("ffmpeg must be installed (scripts/test.sh installs it)");
            assert!(status.success(), "encoding the publisher's clip failed");
            (dir, path)
        })
        .1
}

fn publish(url: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-re"])
        .args(["-stream_loop", "-1", "-t", "900", "-i"])
        .arg(clip())
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg must be installed (scripts/test.sh installs it)")
}

impl ReconnectingPublisher {
    pub fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, starts) = (Arc::clone(&stop), Arc::clone(&starts));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    starts.lock().unwrap().push(Instant::now());
                    let mut child = publish(&url);
                    while child.try_wait().unwrap().is_none() {
                        if stop.load(Ordering::Relaxed) {
                            let _ = child.kill();
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        Self {
            stop,
            starts,
            thread: Some(thread),
        }
    }

    /// When the publisher last (re)connected.
    pub fn last_start(&self) -> Instant {
        *self.starts.lock().unwrap().last().unwrap()
    }

    pub fn start_count(&self) -> usize {
        self.starts.lock().unwrap().len()
    }
}

impl Drop for ReconnectingPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The node (index) that owns `path` now, read from its lease in Redis.
pub fn owner(redis: &RedisServer, path: &str) -> Option<usize> {
    let out = Command::new("redis-cli")
        .args(["-u", &redis.url(), "GET", &format!("kawa:lease:{path}")])
        .output()
        .ok()?;
    let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (_, node) = value.split_once(':')?;
    node.strip_prefix("node-")?.parse().ok()
}

/// A `kawa transcoder` worker on a free loopback port, in the cluster of `redis`.
/// Killed on drop.
pub struct Worker {
    pub id: String,
    child: Option<Child>,
    log_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    pub fn start(i: usize, redis: &RedisServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("worker.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let id = format!("worker-{i}");
        let child = Command::new(env!("CARGO_BIN_EXE_kawa"))
            .arg("transcoder")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "debug")
            .env("KAWA_DATA_DIR", dir.path())
            .env("KAWA_STORE__REDIS_URL", redis.url())
            .env("KAWA_CLUSTER__ENABLED", "true")
            .env("KAWA_CLUSTER__NODE_ID", &id)
            .env("KAWA_CLUSTER__TOKEN", CLUSTER_TOKEN)
            .env("KAWA_CLUSTER__LEASE_MS", LEASE_MS.to_string())
            .env("KAWA_TRANSCODER__ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn kawa transcoder");
        let mut worker = Self {
            id,
            child: Some(child),
            log_path,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !worker.logs().contains("kawa transcoder is up") {
            if let Some(status) = worker.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kawa transcoder exited ({status}):\n{}", worker.logs());
            }
            assert!(Instant::now() < deadline, "no worker:\n{}", worker.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        worker
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: a lost worker machine.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A node that encodes its (small) ladder on transcoder workers, without S3.
pub fn ladder_node(redis: &RedisServer) -> Kawa {
    Kawa::builder()
        .config(SMALL_LADDER)
        .redis(redis)
        .env("KAWA_HLS__PRESET", "ladder")
        .env("KAWA_CLUSTER__ENABLED", "true")
        .env("KAWA_CLUSTER__NODE_ID", "ladder-node")
        .env("KAWA_CLUSTER__TOKEN", CLUSTER_TOKEN)
        .env("KAWA_CLUSTER__LEASE_MS", &LEASE_MS.to_string())
        .env("KAWA_CLUSTER__REMOTE_TRANSCODING", "true")
        .start()
}

/// The init segments (`EXT-X-MAP`) a rung's live playlist names: one per encoder run.
pub async fn maps(kawa: &Kawa, path: &str, rendition: &str) -> Vec<String> {
    let url = kawa.url(&format!("/hls/{path}/{rendition}/index.m3u8"));
    let Ok(answer) = reqwest::get(url).await else {
        return Vec::new();
    };
    let text = answer.text().await.unwrap_or_default();
    let mut maps: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .map(|l| l.trim_end_matches('"').to_owned())
        .collect();
    maps.dedup();
    maps
}

/// A cluster of `kawa serve` nodes on a real Redis and moto bucket.
pub struct TestCluster {
    pub redis: RedisServer,
    pub moto: MotoServer,
    pub s3: aws_sdk_s3::Client,
    pub nodes: Vec<Kawa>,
    _worker: Option<Worker>,
}

impl TestCluster {
    /// `n` nodes; with `ladder`, they encode a small ladder on one transcoder worker.
    pub async fn start(n: usize, ladder: bool) -> Self {
        let redis = RedisServer::start();
        let moto = MotoServer::start();
        moto.public_bucket(super::s3::BUCKET).await;
        let s3 = moto.client().await;
        let worker = ladder.then(|| Worker::start(0, &redis));
        let nodes = (0..n)
            .map(|i| match ladder {
                true => ladder_node_with_s3(i, &redis, &moto),
                false => node(i, &redis, &moto),
            })
            .collect();
        Self {
            redis,
            moto,
            s3,
            nodes,
            _worker: worker,
        }
    }
}
