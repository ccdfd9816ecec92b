//! Real parts for integration tests: a `kawa` process, a `redis-server`, free ports.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token-7f3a";

/// A port nobody listens on right now (the OS picks; the listener is closed at once).
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
    pub data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

pub struct KawaBuilder {
    env: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    admin_token: Option<String>,
}

impl KawaBuilder {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn redis(self, redis: &RedisServer) -> Self {
        self.env("KAWA_STORE__REDIS_URL", &redis.url())
    }

    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
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
        let ip = [127, 0, 0, 1];
        let mut kawa = Kawa {
            http: SocketAddr::from((ip, free_port())),
            grpc: SocketAddr::from((ip, free_port())),
            rtmp: SocketAddr::from((ip, free_port())),
            log_path: data_dir.join(format!("kawa-{}.log", free_port())),
            data_dir,
            child: None,
            env: self.env,
            _dir: dir,
        };
        if let Some(token) = self.admin_token {
            kawa.env.push(("KAWA_ADMIN_TOKEN".into(), token));
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
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "debug")
            .env("KAWA_DATA_DIR", &self.data_dir)
            .env("KAWA_HTTP__ADDR", self.http.to_string())
            .env("KAWA_GRPC__ADDR", self.grpc.to_string())
            .env("KAWA_RTMP__ADDR", self.rtmp.to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn kawa"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect_timeout(&self.http, Duration::from_millis(200)).is_err()
        {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kawa exited during start-up ({status}):\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "kawa did not start:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        wait_for_port(self.grpc, "kawa gRPC");
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
