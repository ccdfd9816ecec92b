//! The physical anchor for the viewers bench: nginx-rtmp (Debian's `nginx` with
//! `libnginx-mod-rtmp`) writing plain HLS to disk, and nginx's HTTP serving it, with
//! viewers that poll the playlist every target duration and fetch each new segment, as
//! a plain HLS player does.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::common::{free_port, wait_for_port};
use super::{Tally, unix_now};

pub struct Nginx {
    pub rtmp_port: u16,
    pub http_port: u16,
    child: Child,
}

const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

impl Nginx {
    /// nginx with two workers (the machine's two cores), HLS fragments of `fragment`
    /// seconds in a 12 s playlist, as peerbench runs it. `None` when it is not installed
    /// (`scripts/` installs it for the bench; the test suite does not need it).
    pub fn start(dir: &Path, fragment: u32) -> Option<Self> {
        if !Path::new(MODULE).exists() {
            return None;
        }
        let (rtmp_port, http_port) = (free_port(), free_port());
        let hls = dir.join("hls");
        std::fs::create_dir_all(&hls).unwrap();
        let d = dir.display();
        let conf = format!(
            "daemon off;
master_process on;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
load_module {MODULE};
events {{ worker_connections 8192; }}
rtmp {{
  server {{
    listen 127.0.0.1:{rtmp_port};
    chunk_size 4096;
    application live {{
      live on;
      hls on;
      hls_path {d}/hls;
      hls_fragment {fragment}s;
      hls_playlist_length 12s;
    }}
  }}
}}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{http_port};
    location /hls/ {{
      alias {d}/hls/;
      types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
      add_header Cache-Control no-cache;
    }}
  }}
}}
"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        // As root, workers run as nobody: the folder must be theirs to write.
        let _ = Command::new("chmod").args(["-R", "777"]).arg(dir).status();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        wait_for_port(([127, 0, 0, 1], http_port).into(), "nginx HTTP");
        wait_for_port(([127, 0, 0, 1], rtmp_port).into(), "nginx RTMP");
        Some(Self {
            rtmp_port,
            http_port,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rtmp_url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.rtmp_port)
    }

    pub fn playlist(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/hls/{name}.m3u8", self.http_port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: nginx's graceful stop, workers included.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HLS viewer of `playlist` until `stop`: the playlist every `target`, and each
/// segment it lists that this viewer has not fetched (from the newest three at the
/// start, as players begin), on one keep-alive connection. Records each segment's fetch
/// time (request to last byte).
pub async fn viewer(playlist: String, target: Duration, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let client = super::h1_client();
    let base = playlist.rsplit_once('/').map_or("", |(b, _)| b).to_owned();
    let mut fetched: Option<String> = None;
    // A random phase, as viewers who joined at different times.
    tokio::time::sleep(target.mul_f64(rand_unit())).await;
    let mut tick = tokio::time::interval(target);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let text = match client.get(&playlist).send().await {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            _ => None,
        };
        let Some(text) = text else {
            tally
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        };
        let segments: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        let start = match fetched
            .as_deref()
            .and_then(|f| segments.iter().position(|s| *s == f))
        {
            Some(i) => i + 1,
            None => segments.len().saturating_sub(3),
        };
        for segment in &segments[start..] {
            let asked = Instant::now();
            let got = match client.get(format!("{base}/{segment}")).send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            if got {
                tally
                    .parts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tally
                    .fetches
                    .lock()
                    .unwrap()
                    .push(asked.elapsed().as_secs_f64());
            } else {
                tally
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            fetched = Some((*segment).to_owned());
        }
    }
}

/// A number in [0, 1) from the clock's nanoseconds: spread enough for start phases.
fn rand_unit() -> f64 {
    (unix_now().fract() * 1e6).fract()
}
