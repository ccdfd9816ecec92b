//! Prometheus metrics, all under `kawa_`. Process-wide families are statics; per-stream
//! series are held by a [`StreamMetrics`] and removed when it drops, so a stream's series
//! disappear when the stream ends (bounded cardinality). Labels carry publish paths and
//! rendition names only, never keys or tokens.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub rtmp_connections_open: IntGauge,
    pub rtmp_connections_accepted: IntCounter,
    pub rtmp_connections_closed: IntCounterVec,
    pub srt_connections_open: IntGauge,
    pub srt_connections_closed: IntCounterVec,
    pub ingest_paced: IntCounter,
    pub publish_attempts: IntCounterVec,
    pub live_streams: IntGauge,
    pub live_edges: IntGauge,
    pub transcoders_alive: IntGauge,
    pub actor_restarts: IntCounterVec,
    pub actor_panics: IntCounterVec,
    pub actors_alive: IntGaugeVec,
    pub tasks_alive: IntGaugeVec,
    pub redis_connections: IntGauge,
    pub ingest_bytes: IntCounterVec,
    pub ingest_frames: IntCounterVec,
    pub keyframe_interval: prometheus::GaugeVec,
    pub keyframe_interval_too_long: IntGaugeVec,
    pub frames_dropped: IntCounterVec,
    pub segments: IntCounterVec,
    pub segment_duration: HistogramVec,
    pub glass_to_playlist: HistogramVec,
    pub ffmpeg_restarts: IntCounterVec,
    pub ffmpeg_running: IntGaugeVec,
    pub upload_seconds: HistogramVec,
    pub upload_failures: IntCounterVec,
    pub upload_queue_depth: IntGaugeVec,
    pub stream_viewers: IntGaugeVec,
    pub recordings_active: IntGauge,
    pub recorded_bytes: IntCounter,
    pub recordings_finished: IntCounterVec,
    pub recordings_deleted: IntCounterVec,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric")
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        registry: Registry::new(),
        rtmp_connections_open: IntGauge::new(
            "kawa_rtmp_connections_open",
            "RTMP connections open now",
        )
        .expect("valid metric"),
        rtmp_connections_accepted: IntCounter::new(
            "kawa_rtmp_connections_accepted_total",
            "RTMP connections accepted",
        )
        .expect("valid metric"),
        rtmp_connections_closed: counter_vec(
            "kawa_rtmp_connections_closed_total",
            "RTMP connections closed, by result",
            &["result"],
        ),
        srt_connections_open: IntGauge::new(
            "kawa_srt_connections_open",
            "SRT callers handled now (their key being checked, or publishing)",
        )
        .expect("valid metric"),
        srt_connections_closed: counter_vec(
            "kawa_srt_connections_closed_total",
            "SRT callers done, by result (refused, timeout, closed_by_peer, ...)",
            &["result"],
        ),
        ingest_paced: IntCounter::new(
            "kawa_ingest_paced_total",
            "Times a publisher ahead of real time was held back (its socket not read)",
        )
        .expect("valid metric"),
        publish_attempts: counter_vec(
            "kawa_publish_attempts_total",
            "RTMP publish attempts, by result",
            &["result"],
        ),
        live_streams: IntGauge::new("kawa_live_streams", "Streams with a publisher now")
            .expect("valid metric"),
        live_edges: IntGauge::new(
            "kawa_live_edges",
            "Streams' live edges in memory: live, or ended and kept for hls.retention_seconds",
        )
        .expect("valid metric"),
        transcoders_alive: IntGauge::new(
            "kawa_transcoders_alive",
            "Transcoder actors alive (one per encode; more means a leak)",
        )
        .expect("valid metric"),
        actor_restarts: counter_vec(
            "kawa_actor_restarts_total",
            "Actor restarts, by actor kind",
            &["actor"],
        ),
        actors_alive: IntGaugeVec::new(
            Opts::new(
                "kawa_actors_alive",
                "Actors running, by kind (sessions, transcoders, uploaders, RTMP connections): back to where it was when streams end",
            ),
            &["actor"],
        )
        .expect("valid metric"),
        tasks_alive: IntGaugeVec::new(
            Opts::new(
                "kawa_tasks_alive",
                "Tasks alive on Kawa's runtimes, read at each scrape: the system's (registry, uploaders, cluster), the stream arbiters' (connections, sessions), the HTTP workers'",
            ),
            &["runtime"],
        )
        .expect("valid metric"),
        redis_connections: IntGauge::new(
            "kawa_redis_connections",
            "Connections open in Kawa's Redis pools, read at each scrape: each is a task on the runtime that opened it (up to 16 per pool), kept while the process lives",
        )
        .expect("valid metric"),
        actor_panics: counter_vec(
            "kawa_actor_panics_total",
            "Panics caught in actor handlers, by actor kind (each is a restart, a stop or an escalation)",
            &["actor"],
        ),
        ingest_bytes: counter_vec(
            "kawa_stream_ingest_bytes_total",
            "Media bytes received from the publisher",
            &["stream", "kind"],
        ),
        ingest_frames: counter_vec(
            "kawa_stream_ingest_frames_total",
            "Frames received from the publisher",
            &["stream", "kind"],
        ),
        keyframe_interval: prometheus::GaugeVec::new(
            Opts::new(
                "kawa_stream_keyframe_interval_seconds",
                "Time between the last two keyframes",
            ),
            &["stream"],
        )
        .expect("valid metric"),
        keyframe_interval_too_long: IntGaugeVec::new(
            Opts::new(
                "kawa_stream_keyframe_interval_too_long",
                "1 when the encoder's keyframes come further apart than a segment may last \
                 (segments are cut between keyframes; set the keyframe interval to \
                 hls.segment_seconds)",
            ),
            &["stream"],
        )
        .expect("valid metric"),
        frames_dropped: counter_vec(
            "kawa_stream_frames_dropped_total",
            "Frames dropped because a consumer fell behind",
            &["stream"],
        ),
        segments: counter_vec(
            "kawa_stream_segments_total",
            "HLS segments published, per rendition",
            &["stream", "rendition"],
        ),
        segment_duration: histogram_vec(
            "kawa_stream_segment_duration_seconds",
            "Duration of published HLS segments",
            &["stream", "rendition"],
            vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 12.0],
        ),
        glass_to_playlist: histogram_vec(
            "kawa_stream_glass_to_playlist_seconds",
            "From the ingest of a segment's last media to its listing in the playlist",
            &["stream"],
            vec![0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0],
        ),
        ffmpeg_restarts: counter_vec(
            "kawa_stream_ffmpeg_restarts_total",
            "FFmpeg restarts after it died mid-stream",
            &["stream"],
        ),
        ffmpeg_running: IntGaugeVec::new(
            Opts::new(
                "kawa_stream_ffmpeg_running",
                "1 while the stream's FFmpeg runs",
            ),
            &["stream"],
        )
        .expect("valid metric"),
        upload_seconds: histogram_vec(
            "kawa_upload_seconds",
            "Time to upload one object, per stream and sink",
            &["stream", "sink"],
            vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
        ),
        upload_failures: counter_vec(
            "kawa_upload_failures_total",
            "Failed upload attempts (each is retried)",
            &["stream", "sink"],
        ),
        upload_queue_depth: IntGaugeVec::new(
            Opts::new(
                "kawa_upload_queue_depth",
                "Uploads waiting, per stream and sink",
            ),
            &["stream", "sink"],
        )
        .expect("valid metric"),
        stream_viewers: IntGaugeVec::new(
            Opts::new(
                "kawa_stream_viewers",
                "Distinct clients that read the stream's playlists in the last 30 s",
            ),
            &["stream"],
        )
        .expect("valid metric"),
        recordings_active: IntGauge::new(
            "kawa_recordings_active",
            "Broadcasts this node is recording now",
        )
        .expect("valid metric"),
        recorded_bytes: IntCounter::new(
            "kawa_recorded_bytes_total",
            "Bytes of segments kept in recordings",
        )
        .expect("valid metric"),
        recordings_finished: counter_vec(
            "kawa_recordings_finished_total",
            "Recordings finished: when their broadcast ended, or after a restart",
            &["how"],
        ),
        recordings_deleted: counter_vec(
            "kawa_recordings_deleted_total",
            "Recordings deleted, over the API or past their retention",
            &["reason"],
        ),
    };
    let r = &m.registry;
    let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
        Box::new(m.rtmp_connections_open.clone()),
        Box::new(m.rtmp_connections_accepted.clone()),
        Box::new(m.rtmp_connections_closed.clone()),
        Box::new(m.srt_connections_open.clone()),
        Box::new(m.srt_connections_closed.clone()),
        Box::new(m.ingest_paced.clone()),
        Box::new(m.publish_attempts.clone()),
        Box::new(m.live_streams.clone()),
        Box::new(m.live_edges.clone()),
        Box::new(m.transcoders_alive.clone()),
        Box::new(m.actor_restarts.clone()),
        Box::new(m.actor_panics.clone()),
        Box::new(m.actors_alive.clone()),
        Box::new(m.tasks_alive.clone()),
        Box::new(m.redis_connections.clone()),
        Box::new(m.ingest_bytes.clone()),
        Box::new(m.ingest_frames.clone()),
        Box::new(m.keyframe_interval.clone()),
        Box::new(m.keyframe_interval_too_long.clone()),
        Box::new(m.frames_dropped.clone()),
        Box::new(m.segments.clone()),
        Box::new(m.segment_duration.clone()),
        Box::new(m.glass_to_playlist.clone()),
        Box::new(m.ffmpeg_restarts.clone()),
        Box::new(m.ffmpeg_running.clone()),
        Box::new(m.upload_seconds.clone()),
        Box::new(m.upload_failures.clone()),
        Box::new(m.upload_queue_depth.clone()),
        Box::new(m.stream_viewers.clone()),
        Box::new(m.recordings_active.clone()),
        Box::new(m.recorded_bytes.clone()),
        Box::new(m.recordings_finished.clone()),
        Box::new(m.recordings_deleted.clone()),
        Box::new(prometheus::process_collector::ProcessCollector::for_self()),
    ];
    for c in collectors {
        r.register(c).expect("metric names are unique");
    }
    // Series that should read 0 rather than be absent before the first event.
    for result in ["accepted", "bad_key", "duplicate", "store_error", "failed"] {
        m.publish_attempts.with_label_values(&[result]);
    }
    for result in [
        "closed_by_peer",
        "refused",
        "timeout",
        "protocol_error",
        "panic",
        "disconnected",
        "limit",
    ] {
        m.rtmp_connections_closed.with_label_values(&[result]);
        m.srt_connections_closed.with_label_values(&[result]);
    }
    for actor in crate::actors::supervision::ActorKind::ALL {
        m.actor_restarts.with_label_values(&[actor.label()]);
        m.actor_panics.with_label_values(&[actor.label()]);
        if actor != crate::actors::supervision::ActorKind::Registry {
            m.actors_alive.with_label_values(&[actor.label()]);
        }
    }
    for how in ["ended", "recovered"] {
        m.recordings_finished.with_label_values(&[how]);
    }
    for reason in ["api", "retention"] {
        m.recordings_deleted.with_label_values(&[reason]);
    }
    m
});

/// The Prometheus text exposition of every metric.
/// The runtimes whose tasks `kawa_tasks_alive` counts, with what runs on them.
static RUNTIMES: std::sync::Mutex<Vec<(&'static str, tokio::runtime::Handle)>> =
    std::sync::Mutex::new(Vec::new());

/// Counts the current thread's runtime's tasks in `kawa_tasks_alive{runtime}` (once
/// per runtime).
pub fn register_runtime(runtime: &'static str) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut runtimes = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
    if !runtimes.iter().any(|(_, h)| h.id() == handle.id()) {
        runtimes.push((runtime, handle));
    }
}

/// Redis pools whose open connections `kawa_redis_connections` counts.
/// Weak: a pool dropped (a test's store) closes its connections and leaves the list.
type PoolSize = Box<dyn Fn() -> Option<usize> + Send>;
static REDIS_POOLS: std::sync::Mutex<Vec<PoolSize>> = std::sync::Mutex::new(Vec::new());

/// Counts `pool`'s connections in `kawa_redis_connections`: they are tasks that outlive
/// any stream, which a reader of `kawa_tasks_alive` needs to tell from a leak.
pub fn register_redis_pool(pool: &deadpool_redis::Pool) {
    let mut pools = REDIS_POOLS.lock().unwrap_or_else(|e| e.into_inner());
    pools.retain(|size| size().is_some());
    let weak = pool.weak();
    pools.push(Box::new(move || Some(weak.upgrade()?.status().size)));
}

/// An actor of `kind` started (`+1`) or stopped (`-1`).
pub fn actor_alive(kind: crate::actors::supervision::ActorKind, change: i64) {
    METRICS
        .actors_alive
        .with_label_values(&[kind.label()])
        .add(change);
}

/// Bytes live on the heap (a build with `fault-injection` counts them; see
/// `memory::Counted`).
#[cfg(feature = "fault-injection")]
static HEAP_LIVE: LazyLock<IntGauge> = LazyLock::new(|| {
    let gauge = IntGauge::new(
        "kawa_heap_live_bytes",
        "Bytes live on the heap (test builds)",
    )
    .expect("a valid metric");
    let _ = METRICS.registry.register(Box::new(gauge.clone()));
    gauge
});

pub fn render() -> String {
    METRICS.tasks_alive.reset();
    for (runtime, handle) in RUNTIMES.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let tasks = handle.metrics().num_alive_tasks() as i64;
        METRICS.tasks_alive.with_label_values(&[runtime]).add(tasks);
    }
    let pools = REDIS_POOLS.lock().unwrap_or_else(|e| e.into_inner());
    let connections: usize = (pools.iter()).filter_map(|size| size()).sum();
    METRICS.redis_connections.set(connections as i64);
    drop(pools);
    #[cfg(feature = "fault-injection")]
    HEAP_LIVE.set(crate::memory::live_heap_bytes() as i64);
    let mut out = Vec::new();
    let families = METRICS.registry.gather();
    // Encoding into a Vec cannot fail.
    let _ = TextEncoder::new().encode(&families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// One live stream's series. Dropping it removes them.
pub struct StreamMetrics {
    stream: String,
    removed: bool,
    renditions: std::cell::RefCell<Vec<String>>,
    pub video_bytes: IntCounter,
    pub audio_bytes: IntCounter,
    pub video_frames: IntCounter,
    pub audio_frames: IntCounter,
    pub frames_dropped: IntCounter,
    pub glass_to_playlist: Histogram,
    pub ffmpeg_restarts: IntCounter,
    pub ffmpeg_running: IntGauge,
}

impl StreamMetrics {
    pub fn new(stream: &str) -> Self {
        let m = &*METRICS;
        m.live_streams.inc();
        Self {
            stream: stream.to_owned(),
            removed: false,
            renditions: Default::default(),
            video_bytes: m.ingest_bytes.with_label_values(&[stream, "video"]),
            audio_bytes: m.ingest_bytes.with_label_values(&[stream, "audio"]),
            video_frames: m.ingest_frames.with_label_values(&[stream, "video"]),
            audio_frames: m.ingest_frames.with_label_values(&[stream, "audio"]),
            frames_dropped: m.frames_dropped.with_label_values(&[stream]),
            glass_to_playlist: m.glass_to_playlist.with_label_values(&[stream]),
            ffmpeg_restarts: m.ffmpeg_restarts.with_label_values(&[stream]),
            ffmpeg_running: m.ffmpeg_running.with_label_values(&[stream]),
        }
    }

    pub fn keyframe_interval(&self, seconds: f64) {
        if self.removed {
            return;
        }
        METRICS
            .keyframe_interval
            .with_label_values(&[&self.stream])
            .set(seconds);
    }

    pub fn keyframe_interval_too_long(&self) {
        if self.removed {
            return;
        }
        METRICS
            .keyframe_interval_too_long
            .with_label_values(&[&self.stream])
            .set(1);
    }

    pub fn segment(&self, rendition: &str, duration: f64) {
        if self.removed {
            return;
        }
        let labels = [self.stream.as_str(), rendition];
        METRICS.segments.with_label_values(&labels).inc();
        METRICS
            .segment_duration
            .with_label_values(&labels)
            .observe(duration);
        let mut known = self.renditions.borrow_mut();
        if !known.iter().any(|r| r == rendition) {
            known.push(rendition.to_owned());
        }
    }
}

impl StreamMetrics {
    /// The stream ended: its series leave the exposition now (later updates are not
    /// exported).
    pub fn remove(&mut self) {
        if std::mem::replace(&mut self.removed, true) {
            return;
        }
        let m = &*METRICS;
        m.live_streams.dec();
        let s = self.stream.as_str();
        for kind in ["video", "audio"] {
            let _ = m.ingest_bytes.remove_label_values(&[s, kind]);
            let _ = m.ingest_frames.remove_label_values(&[s, kind]);
        }
        let _ = m.keyframe_interval.remove_label_values(&[s]);
        let _ = m.keyframe_interval_too_long.remove_label_values(&[s]);
        let _ = m.frames_dropped.remove_label_values(&[s]);
        let _ = m.glass_to_playlist.remove_label_values(&[s]);
        let _ = m.ffmpeg_restarts.remove_label_values(&[s]);
        let _ = m.ffmpeg_running.remove_label_values(&[s]);
        for r in self.renditions.borrow().iter() {
            let _ = m.segments.remove_label_values(&[s, r]);
            let _ = m.segment_duration.remove_label_values(&[s, r]);
        }
    }
}

impl Drop for StreamMetrics {
    fn drop(&mut self) {
        self.remove();
    }
}

/// One stream's upload series for one sink; removed on drop.
pub struct UploadMetrics {
    labels: [String; 2],
    pub seconds: Histogram,
    pub failures: IntCounter,
    pub queue_depth: IntGauge,
}

impl UploadMetrics {
    pub fn new(stream: &str, sink: &str) -> Self {
        let m = &*METRICS;
        let labels = [stream, sink];
        Self {
            seconds: m.upload_seconds.with_label_values(&labels),
            failures: m.upload_failures.with_label_values(&labels),
            queue_depth: m.upload_queue_depth.with_label_values(&labels),
            labels: [stream.to_owned(), sink.to_owned()],
        }
    }
}

impl Drop for UploadMetrics {
    fn drop(&mut self) {
        let m = &*METRICS;
        let labels = [self.labels[0].as_str(), self.labels[1].as_str()];
        let _ = m.upload_seconds.remove_label_values(&labels);
        let _ = m.upload_failures.remove_label_values(&labels);
        let _ = m.upload_queue_depth.remove_label_values(&labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streams_series_disappear_when_it_ends() {
        let stream = StreamMetrics::new("metrics-test");
        stream.video_bytes.inc_by(10);
        stream.segment("source", 2.0);
        assert!(
            render().contains(
                "kawa_stream_ingest_bytes_total{kind=\"video\",stream=\"metrics-test\"} 10"
            )
        );
        assert!(render().contains(
            "kawa_stream_segments_total{rendition=\"source\",stream=\"metrics-test\"} 1"
        ));
        drop(stream);
        assert!(!render().contains("metrics-test"));
    }

    #[test]
    fn process_metrics_are_exported() {
        let text = render();
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(text.contains("kawa_publish_attempts_total{result=\"bad_key\"}"));
    }
}
