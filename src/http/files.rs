//! Media files for viewers, with memory a viewer cannot run up.
//!
//! actix-http copies each body chunk into a connection's write buffer and polls the body
//! again only once that buffer is below `h1_write_buffer_size`. So what a connection
//! that stops reading holds is about that size plus one chunk, plus whatever its body
//! keeps (actix-files keeps a 64 KiB read buffer and yields 64 KiB chunks: 0.9 MB held
//! per connection that pipelined segment requests and read nothing). Here every body
//! yields slices of at most [`CHUNK`] of one shared copy of the file, and the server's
//! write buffer is [`CHUNK`] too.
//!
//! Segments, init segments and recording files never change once written (a new one
//! gets a new name), so one copy in memory serves every viewer of a file: [`SharedFiles`]
//! keeps recently served files up to [`CACHE_BYTES`], checked against the file's length
//! and mtime. Copies alive (cached, or held by answers in flight) are capped at
//! [`LIVE_BYTES`]: past it a file not in memory is answered 503 with Retry-After, so
//! asking for many different files cannot run memory up either.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{self, HttpDate};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use tokio::sync::OnceCell;

/// The largest slice a body yields, and the server's per-connection write buffer.
pub const CHUNK: usize = 4096;
/// Files kept in memory after their answers are done.
const CACHE_BYTES: usize = 64 << 20;
/// File copies alive at once (cached or being sent).
const LIVE_BYTES: usize = 128 << 20;
/// A larger file is never read whole (a segment is a few MB at most).
const MAX_FILE: u64 = 32 << 20;

/// Bytes `offset..offset + len` of the file at `path`.
///
/// The buffer is allocated here, on the HTTP worker's thread, and only filled on a
/// blocking thread: a copy allocated there stays in that thread's allocator heap after
/// it is freed, until the thread allocates again, and a blocking thread may sleep for
/// long (mimalloc).
pub(super) async fn read_at(path: PathBuf, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut data = vec![0; usize::try_from(len).map_err(std::io::Error::other)?];
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(path)?.read_exact_at(&mut data, offset)?;
        Ok(data)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Bytes of file copies alive now.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Bytes counted in [`LIVE`] until this is dropped: from before a file is read (a read
/// whose request is cancelled gives them back) until its last slice is dropped.
struct Reserved(usize);

impl Reserved {
    fn take(len: usize) -> Option<Self> {
        if LIVE.fetch_add(len, Ordering::Relaxed) + len > LIVE_BYTES {
            LIVE.fetch_sub(len, Ordering::Relaxed);
            return None;
        }
        Some(Self(len))
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        LIVE.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// A file's bytes, counted in [`LIVE`] until the last slice of them is dropped.
struct Counted {
    data: Vec<u8>,
    _reserved: Reserved,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    len: u64,
    modified: SystemTime,
}

impl Version {
    fn etag(&self) -> String {
        let nanos = self
            .modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("\"{:x}-{nanos:x}\"", self.len)
    }
}

/// How long a cached file is served without looking at the disk again. Within it, a
/// burst of requests for one file costs one `stat`, and none waits on the blocking pool;
/// a file deleted meanwhile is served that much longer.
const RECHECK: Duration = Duration::from_secs(1);

/// A cached file nobody asked for in this long leaves memory, however much room is
/// left. The copy is there so that a burst of viewers shares one read, and a live
/// segment's burst comes as it appears; after it, a read from the page cache costs
/// microseconds. With 30 s, 50 streams read once each filled all of [`CACHE_BYTES`]
/// (soak bench).
const IDLE: Duration = Duration::from_secs(5);

struct Cached {
    data: Bytes,
    version: Version,
    used: u64,
    /// When it was last served.
    last: Instant,
    checked: Instant,
}

#[derive(Default)]
struct Cache {
    files: HashMap<PathBuf, Cached>,
    bytes: usize,
    tick: u64,
    swept: Option<Instant>,
}

impl Cache {
    /// The cached copy, if it was checked against the disk within [`RECHECK`].
    fn fresh(&mut self, path: &Path, now: Instant) -> Option<(Bytes, Version)> {
        self.sweep(now);
        self.tick += 1;
        let tick = self.tick;
        let cached = self.files.get_mut(path)?;
        if now.duration_since(cached.checked) > RECHECK {
            return None;
        }
        cached.used = tick;
        cached.last = now;
        Some((cached.data.clone(), cached.version))
    }

    /// The cached copy, if it is still `version` (checked now).
    fn get(&mut self, path: &Path, version: Version, now: Instant) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        let cached = self.files.get_mut(path)?;
        if cached.version != version {
            return None;
        }
        cached.used = tick;
        cached.last = now;
        cached.checked = now;
        Some(cached.data.clone())
    }

    /// Drops the files idle for longer than [`IDLE`], at most once a second.
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.swept = Some(now);
        let bytes = &mut self.bytes;
        self.files.retain(|_, c| {
            let idle = now.duration_since(c.last) > IDLE;
            if idle {
                *bytes -= c.data.len();
            }
            !idle
        });
    }

    fn insert(&mut self, path: PathBuf, data: Bytes, version: Version, now: Instant) {
        self.tick += 1;
        self.bytes += data.len();
        let cached = Cached {
            data,
            version,
            used: self.tick,
            last: now,
            checked: now,
        };
        if let Some(old) = self.files.insert(path, cached) {
            self.bytes -= old.data.len();
        }
        self.sweep(now);
        // Least recently used first; the cache holds a few hundred files at most.
        while self.bytes > CACHE_BYTES {
            let Some(oldest) = (self.files.iter())
                .min_by_key(|(_, c)| c.used)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some(old) = self.files.remove(&oldest) {
                self.bytes -= old.data.len();
            }
        }
    }
}

/// Sweeps the shared copies every [`IDLE`] from this thread (an HTTP worker's), so that
/// they leave memory when nothing is asked for: a sweep ran only when a file was asked
/// for, and the last burst's copies stayed (a few MiB after the chaos benchmark).
pub fn sweep_from_this_thread() {
    thread_local!(static SWEEPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if SWEEPING.with(|s| s.replace(true)) {
        return;
    }
    actix_web::rt::spawn(async {
        let mut tick = actix_web::rt::time::interval(IDLE);
        loop {
            tick.tick().await;
            SHARED.lock().sweep(Instant::now());
        }
    });
}

/// Recently served immutable files, shared by every answer that sends them.
#[derive(Default)]
pub struct SharedFiles {
    cache: Mutex<Cache>,
    /// Loads under way, which later requests for the same path wait on.
    loading: Mutex<HashMap<PathBuf, Arc<OnceCell<Loaded>>>>,
}

/// The process's one set: every route serving media files shares it.
pub static SHARED: std::sync::LazyLock<SharedFiles> =
    std::sync::LazyLock::new(SharedFiles::default);

#[derive(Clone)]
enum Loaded {
    File(Bytes, Version),
    Missing,
    /// Too many copies alive.
    Busy,
    /// Over [`MAX_FILE`]: streamed from the disk instead.
    TooLarge,
}

impl SharedFiles {
    /// The file at `path`, from memory, or read once however many ask for it at once.
    async fn load(&self, path: &Path) -> Loaded {
        if let Some((data, version)) = self.lock().fresh(path, Instant::now()) {
            return Loaded::File(data, version);
        }
        // One look at the disk per path at a time: without it, each request of a burst
        // that missed the cache read its own copy, and a viewer that reads nothing holds
        // its copy for as long as it stays connected.
        let flight = {
            let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            loading.entry(path.to_owned()).or_default().clone()
        };
        let loaded = flight.get_or_init(|| self.read(path)).await.clone();
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if loading.get(path).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            loading.remove(path);
        }
        loaded
    }

    /// The file at `path` checked against the disk: the cached copy if it is still
    /// current, else a new copy.
    async fn read(&self, path: &Path) -> Loaded {
        let Ok(meta) = tokio::fs::metadata(path).await else {
            return Loaded::Missing;
        };
        if !meta.is_file() {
            return Loaded::Missing;
        }
        let version = Version {
            len: meta.len(),
            modified: meta.modified().unwrap_or(UNIX_EPOCH),
        };
        if let Some(data) = self.lock().get(path, version, Instant::now()) {
            return Loaded::File(data, version);
        }
        if version.len > MAX_FILE {
            return Loaded::TooLarge;
        }
        let len = version.len as usize;
        let Some(reserved) = Reserved::take(len) else {
            return Loaded::Busy;
        };
        let Ok(data) = read_at(path.to_owned(), 0, len as u64).await else {
            // Changed or gone meanwhile: the next request reads it again.
            return Loaded::Missing;
        };
        let data = Bytes::from_owner(Counted {
            data,
            _reserved: reserved,
        });
        self.lock()
            .insert(path.to_owned(), data.clone(), version, Instant::now());
        Loaded::File(data, version)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers `req` with the file at `path` as a file server should: HEAD, `ETag` with
    /// `If-None-Match` (304), `Last-Modified`, one byte range (206, or 416).
    pub async fn answer(
        &self,
        req: &HttpRequest,
        path: &Path,
        content_type: &str,
        cache: &str,
    ) -> HttpResponse {
        self.answer_if_present(req, path, content_type, cache)
            .await
            .unwrap_or_else(not_found)
    }

    /// [`Self::answer`], or `None` when there is no such file.
    pub async fn answer_if_present(
        &self,
        req: &HttpRequest,
        path: &Path,
        content_type: &str,
        cache: &str,
    ) -> Option<HttpResponse> {
        let (data, version) = match self.load(path).await {
            Loaded::File(data, version) => (data, version),
            Loaded::Missing => return None,
            Loaded::TooLarge => {
                return Some(from_disk(req, path, content_type, cache, false).await);
            }
            Loaded::Busy => {
                return Some(
                    HttpResponse::ServiceUnavailable()
                        .insert_header((header::RETRY_AFTER, "1"))
                        .finish(),
                );
            }
        };
        Some(Self::respond(req, data, version, content_type, cache))
    }

    fn respond(
        req: &HttpRequest,
        data: Bytes,
        version: Version,
        content_type: &str,
        cache: &str,
    ) -> HttpResponse {
        let etag = version.etag();
        let mut answer = HttpResponse::Ok();
        answer
            .content_type(content_type)
            .insert_header((header::CACHE_CONTROL, cache))
            .insert_header((header::ETAG, etag.as_str()))
            .insert_header((header::LAST_MODIFIED, HttpDate::from(version.modified)))
            .insert_header((header::ACCEPT_RANGES, "bytes"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .insert_header((
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                "Content-Length, Content-Range, ETag",
            ))
            // Video does not compress; the Compress middleware leaves it be.
            .insert_header((header::CONTENT_ENCODING, "identity"));
        let matches = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        if matches {
            answer.status(actix_web::http::StatusCode::NOT_MODIFIED);
            return answer.finish();
        }
        let len = data.len() as u64;
        let range = req
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok());
        let body = match range {
            None => data,
            Some(range) => match actix_files::HttpRange::parse(range, len).as_deref() {
                Ok([first, ..]) => {
                    let (start, end) = (first.start, first.start + first.length);
                    answer
                        .status(actix_web::http::StatusCode::PARTIAL_CONTENT)
                        .insert_header((
                            header::CONTENT_RANGE,
                            format!("bytes {start}-{}/{len}", end - 1),
                        ));
                    data.slice(start as usize..end as usize)
                }
                _ => {
                    return HttpResponse::RangeNotSatisfiable()
                        .insert_header((header::CONTENT_RANGE, format!("bytes */{len}")))
                        .finish();
                }
            },
        };
        answer.body(sized(vec![body]))
    }
}

/// 404, readable by players on other origins.
pub(super) fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .content_type("text/plain")
        .body("not found")
}

/// Serves a file from the disk as a file server should (actix-files): HEAD, `ETag` with
/// `If-None-Match` (304), `Last-Modified`, byte ranges, the body read as it is sent
/// (64 KiB at a time). For playlists, and files too large to share in memory.
pub async fn from_disk(
    req: &HttpRequest,
    path: &Path,
    content_type: &str,
    cache: &str,
    compressible: bool,
) -> HttpResponse {
    use actix_web::Responder;
    let Ok(file) = actix_files::NamedFile::open_async(path).await else {
        return not_found();
    };
    let mime = content_type
        .parse()
        .unwrap_or(mime::APPLICATION_OCTET_STREAM);
    let mut response = file
        .set_content_type(mime)
        .disable_content_disposition()
        .use_etag(true)
        .use_last_modified(true)
        .customize()
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            "Content-Length, Content-Range, ETag",
        ));
    if !compressible {
        // Video does not compress; tell the Compress middleware to leave it be.
        response = response.insert_header((header::CONTENT_ENCODING, "identity"));
    }
    response.respond_to(req).map_into_boxed_body()
}

/// A body of `pieces` sent as slices of at most [`CHUNK`] (none copied).
pub fn sized(pieces: Vec<Bytes>) -> actix_web::body::SizedStream<SliceStream> {
    let size = pieces.iter().map(|p| p.len() as u64).sum();
    actix_web::body::SizedStream::new(size, SliceStream { pieces, next: 0 })
}

/// See [`sized`].
pub struct SliceStream {
    pieces: Vec<Bytes>,
    next: usize,
}

impl futures_util::Stream for SliceStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        while let Some(piece) = this.pieces.get_mut(this.next) {
            if piece.is_empty() {
                this.next += 1;
                continue;
            }
            let slice = piece.split_to(piece.len().min(CHUNK));
            return std::task::Poll::Ready(Some(Ok(slice)));
        }
        std::task::Poll::Ready(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[actix_web::test]
    async fn bodies_come_in_small_slices_of_the_same_bytes() {
        let data = Bytes::from(vec![7u8; 3 * CHUNK + 10]);
        let mut stream = SliceStream {
            pieces: vec![data.clone(), Bytes::new(), Bytes::from_static(b"end")],
            next: 0,
        };
        let mut sizes = Vec::new();
        while let Some(Ok(slice)) = stream.next().await {
            sizes.push(slice.len());
        }
        assert_eq!(sizes, [CHUNK, CHUNK, CHUNK, 10, 3]);
    }

    /// A file's version of `len` bytes.
    fn v(len: u64) -> Version {
        Version {
            len,
            modified: UNIX_EPOCH,
        }
    }

    #[test]
    fn the_cache_keeps_the_newest_version_and_evicts_the_least_recently_used() {
        let mut cache = Cache::default();
        let now = Instant::now();
        let big = CACHE_BYTES / 2 + 1;
        cache.insert("a".into(), Bytes::from(vec![0; big]), v(big as u64), now);
        cache.insert("b".into(), Bytes::from(vec![0; 10]), v(10), now);
        assert!(cache.get(Path::new("a"), v(big as u64), now).is_some());
        assert!(
            cache.get(Path::new("b"), v(11), now).is_none(),
            "another version"
        );
        cache.insert("c".into(), Bytes::from(vec![0; big]), v(big as u64), now);
        // "b" was used less recently than "a": it goes, then "a" (still over).
        assert!(cache.get(Path::new("b"), v(10), now).is_none());
        assert!(cache.get(Path::new("a"), v(big as u64), now).is_none());
        assert!(cache.get(Path::new("c"), v(big as u64), now).is_some());
        assert!(cache.bytes <= CACHE_BYTES);
        // Served without a look at the disk for a second after the last one.
        assert!(cache.fresh(Path::new("c"), now + RECHECK).is_some());
        assert!(cache.fresh(Path::new("c"), now + RECHECK * 2).is_none());
    }

    #[test]
    fn a_file_nobody_asked_for_lately_leaves_the_cache_with_room_to_spare() {
        let mut cache = Cache::default();
        let now = Instant::now();
        cache.insert("old".into(), Bytes::from(vec![0; 10]), v(10), now);
        cache.insert("asked".into(), Bytes::from(vec![0; 10]), v(10), now);
        let later = now + IDLE - Duration::from_secs(1);
        assert!(cache.get(Path::new("asked"), v(10), later).is_some());
        cache.insert(
            "new".into(),
            Bytes::from(vec![0; 10]),
            v(10),
            now + IDLE * 2 - Duration::from_secs(2),
        );
        assert!(cache.get(Path::new("old"), v(10), now).is_none());
        assert!(cache.get(Path::new("asked"), v(10), now).is_some());
        assert_eq!(cache.bytes, 20);
    }

    /// A burst of viewers asking for a file not yet in memory makes one copy of it, not
    /// one per request that missed the cache: the greedy-viewer test once held 550
    /// copies of a 200 KB segment (+113 MB) when its 3000 requests came in faster than
    /// the first read finished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_for_a_file_share_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.m4s");
        std::fs::write(&path, vec![5u8; 200_000]).unwrap();
        let files = std::sync::Arc::new(SharedFiles::default());
        let loads: Vec<_> = (0..64)
            .map(|_| {
                let (files, path) = (files.clone(), path.clone());
                tokio::spawn(async move {
                    match files.load(&path).await {
                        Loaded::File(data, _) => data.as_ptr() as usize,
                        _ => panic!("the file is there"),
                    }
                })
            })
            .collect();
        let mut copies = Vec::new();
        for load in loads {
            copies.push(load.await.unwrap());
        }
        copies.sort_unstable();
        copies.dedup();
        assert_eq!(copies.len(), 1, "{} copies of one file", copies.len());
    }
}
