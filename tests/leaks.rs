//! No leaks: 100 streams that start, encode their ladder on a transcoder worker, fall
//! back to the node when the worker is gone, move back to a worker that comes again,
//! deliver to S3 and end leave no actor, task or FFmpeg behind.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{Worker, node_builder};
use common::s3::BUCKET;
use common::{
    Kawa, MotoServer, Publisher, RedisServer, SMALL_LADDER, create_stream, ffmpeg_children_of,
    metrics_text,
};

/// `kawa_actors_alive` by kind, and `kawa_tasks_alive` (every runtime's).
async fn alive(kawa: &Kawa) -> (BTreeMap<String, i64>, i64) {
    let text = metrics_text(kawa).await;
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse().ok());
    let actors = text
        .lines()
        .filter_map(|l| {
            let kind = l
                .strip_prefix("kawa_actors_alive{actor=\"")?
                .split('"')
                .next()?;
            Some((kind.to_owned(), value(l)?))
        })
        .collect();
    if std::env::var("TEST_LEAKS_DEBUG").is_ok() {
        for l in text.lines().filter(|l| l.starts_with("kawa_tasks_alive{")) {
            eprintln!("{l}");
        }
    }
    let tasks = text
        .lines()
        .filter(|l| l.starts_with("kawa_tasks_alive{"))
        .filter_map(value)
        .sum();
    (actors, tasks)
}

/// `count` streams of 3 s, ten at a time.
async fn broadcasts(kawa: &Kawa, first: usize, count: usize) {
    for batch in (first..first + count).collect::<Vec<_>>().chunks(10) {
        let mut publishers = Vec::new();
        for i in batch {
            let key = create_stream(kawa, &format!("s{i}")).await;
            publishers.push(Publisher::start(&kawa.rtmp_url(&key), 3));
        }
        for mut p in publishers {
            p.wait_exit(Duration::from_secs(60))
                .expect("the publish ends");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_streams_leave_no_actor_task_or_ffmpeg_behind() {
    let redis = RedisServer::start();
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let worker = Worker::start(0, &redis);
    let kawa = node_builder(0, &redis, &moto)
        .config(SMALL_LADDER)
        .env("KAWA_HLS__PRESET", "ladder")
        .env("KAWA_CLUSTER__REMOTE_TRANSCODING", "true")
        .env("KAWA_HLS__RETENTION_SECONDS", "1")
        .env("KAWA_S3__DELETE_GRACE_SECONDS", "1")
        .start();
    // A first round of the same shape warms what the node keeps for good: its Redis
    // pool (up to 16 connections, each a task on the runtime that opened it) and its S3
    // client's connections. The count starts after it.
    let mut worker = Some(worker);
    let mut next_worker = 1;
    let mut round = async |first: usize, each: usize| {
        broadcasts(&kawa, first, each * 4).await;
        // The worker dies: these encode on the node...
        if let Some(mut w) = worker.take() {
            w.kill();
        }
        broadcasts(&kawa, first + each * 4, each * 3).await;
        // ...and with a worker back, encodes move to it.
        worker = Some(Worker::start(next_worker, &redis));
        next_worker += 1;
        broadcasts(&kawa, first + each * 7, each * 3).await;
    };
    round(0, 3).await;
    let (actors_before, tasks_before) = settle(&kawa, None).await;
    let heap_before = heap_bytes(&kawa).await;
    // 100 streams: 40 encoded on a worker, 30 on the node, 30 on the next worker.
    round(1000, 10).await;
    let logs = kawa.logs();
    assert!(logs.contains("no transcoder worker is alive; FFmpeg runs on this node"));
    assert!(logs.contains("encoding on a transcoder worker"));

    // Every stream ended; its session, FFmpeg, uploader and connection are gone, and
    // so are their tasks.
    // Up to ten more: the Redis pool (up to 8 connections, kept) and the S3 client's
    // pool (idle ones close after 90 s) hold a task per connection, and how many they
    // opened depends on how many streams ran at once, so on the machine's load (23 after
    // the warm-up, then 24 and 27 at the end, in runs beside a soak). A leak of one task
    // per stream would show as 100 or more.
    let (actors, tasks) = settle(&kawa, Some(tasks_before + 10)).await;
    eprintln!(
        "after the warm-up round: actors {actors_before:?}, tasks {tasks_before}; \
         after 100 more streams: actors {actors:?}, tasks {tasks}"
    );
    let worker = worker.expect("a worker");
    assert!(ffmpeg_children_of(worker.pid()).is_empty());
    let heap_after = heap_bytes(&kawa).await;
    eprintln!(
        "live heap: {heap_before} bytes after the warm-up, {heap_after} after 100 more streams"
    );
    // Every stream's edge, buffers and series went with it: 0.8 KiB a stream stays
    // (maps' capacity, 81 KiB in all, measured); a live edge kept would be hundreds.
    assert!(
        heap_after - heap_before < 1024 * 1024,
        "100 streams left {} KiB on the heap",
        (heap_after - heap_before) / 1024
    );
    let text = metrics_text(&kawa).await;
    assert!(text.contains("\nkawa_live_edges 0\n"), "live edges left");
}

/// The bytes live on the node's heap (`kawa_heap_live_bytes`, counted in test builds).
async fn heap_bytes(kawa: &Kawa) -> i64 {
    let text = metrics_text(kawa).await;
    (text.lines())
        .find_map(|l| l.strip_prefix("kawa_heap_live_bytes ")?.parse().ok())
        .expect("kawa_heap_live_bytes (a build with fault-injection)")
}

/// Waits until every actor has ended and no FFmpeg runs on the node, and (given a
/// count) until no more tasks are alive than that; answers what is alive then.
async fn settle(kawa: &Kawa, tasks_before: Option<i64>) -> (BTreeMap<String, i64>, i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (actors, tasks) = alive(kawa).await;
        let ffmpeg = ffmpeg_children_of(kawa.pid()).len();
        let idle = actors.values().all(|n| *n == 0) && ffmpeg == 0;
        if idle && tasks_before.is_none_or(|before| tasks <= before) {
            return (actors, tasks);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left: actors {actors:?}, tasks {tasks} (before {tasks_before:?}), {ffmpeg} FFmpeg"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
