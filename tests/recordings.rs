//! Recordings with real parts: a 60 s broadcast of a small ladder recorded (its stream's
//! `record` flag set over REST, the index in a real Redis), then played from start to end
//! by ffprobe/FFmpeg from Kawa and from the S3 bucket (moto), and by hls.js in headless
//! Chromium; the `recording_ready` hook heard by a real HTTP receiver; the recording
//! deleted over REST everywhere. A second test: recordings on by default, a stream that
//! opts out, and retention deleting what is old.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{Balancer, ReconnectingPublisher, owner, recording_node};
use common::hooks::{SECRET, json, receiver, verify};
use common::s3::{BUCKET, PREFIX, s3_has, s3_text, with_s3};
use common::{
    Kawa, MotoServer, Publisher, RedisServer, SMALL_LADDER, admin_client, admin_get, create_stream,
    free_port, player_dir, wait_for,
};
use serde_json::{Value, json};

/// The test publisher cuts a keyframe every second; Kawa's segments are 2 s.
const SEGMENT_SECONDS: f64 = 2.0;
const SENT_SECONDS: u32 = 60;

async fn set_record(kawa: &Kawa, path: &str, record: Value) -> Value {
    let answer = admin_client()
        .patch(kawa.url(&format!("/api/v1/streams/{path}")))
        .json(&json!({ "record": record }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

async fn recordings(kawa: &Kawa, query: &str) -> Vec<Value> {
    let list = admin_get(kawa, &format!("/api/v1/recordings{query}")).await;
    list["recordings"].as_array().cloned().unwrap_or_default()
}

/// Frames FFmpeg decodes from `url` (every rendition of it is read from start to end),
/// and its duration as ffprobe reports it.
fn decode(url: &str) -> (u64, f64) {
    try_decode(url).unwrap_or_else(|| panic!("{url} does not decode"))
}

/// Video frames and seconds ffprobe reads from `url`, if it can.
fn try_decode(url: &str) -> Option<(u64, f64)> {
    let probe = |args: &[&str]| -> Option<Value> {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-of", "json"])
            .args(args)
            .arg(url)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    };
    let format = probe(&["-show_entries", "format=duration"])?;
    let duration: f64 = format["format"]["duration"].as_str()?.parse().ok()?;
    let streams = probe(&[
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=nb_read_frames",
    ])?;
    let frames = streams["streams"][0]["nb_read_frames"]
        .as_str()?
        .parse()
        .ok()?;
    Some((frames, duration))
}

fn assert_within_a_segment(what: &str, seconds: f64) {
    assert!(
        (seconds - f64::from(SENT_SECONDS)).abs() <= SEGMENT_SECONDS,
        "{what}: {seconds} s recorded of {SENT_SECONDS} s sent"
    );
}

/// hls.js plays `url` from start to end; its JSON report.
fn play_in_browser(url: &str) -> Value {
    let output = Command::new("node")
        .current_dir(player_dir())
        .args(["vod.mjs", url])
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().last().unwrap_or_else(|| panic!("{report}"));
    let result: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{report}"));
    assert!(
        output.status.success(),
        "hls.js did not play it to the end: {report}"
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_broadcast_plays_from_start_to_end_locally_in_s3_and_in_a_browser() {
    assert!(
        player_dir().join("node_modules/hls.js").is_dir(),
        "tests/player needs `npm ci` (scripts/test.sh runs it)"
    );
    let redis = RedisServer::start();
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let hook_port = free_port();
    let calls = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(receiver(hook_port, Arc::clone(&calls), |_, _| 204));
    let kawa = with_s3(Kawa::builder(), &moto.endpoint())
        .redis(&redis)
        .config(SMALL_LADDER)
        .env("KAWA_HLS__PRESET", "ladder")
        // Live segments leave the bucket a second after they leave the window: the
        // recording keeps its own copies.
        .env("KAWA_S3__DELETE_GRACE_SECONDS", "1")
        .env(
            "KAWA_HOOKS__EVENTS_URL",
            &format!("http://127.0.0.1:{hook_port}/events"),
        )
        .env("KAWA_HOOKS__SECRET", SECRET)
        .start();
    let key = create_stream(&kawa, "show").await;
    let other_key = create_stream(&kawa, "unrecorded").await;
    let shown = set_record(&kawa, "show", json!(true)).await;
    assert_eq!(shown["record"], true);
    assert_eq!(
        admin_get(&kawa, "/api/v1/streams/unrecorded").await["record"],
        Value::Null,
        "unset: follows recordings.enabled (off)"
    );

    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), SENT_SECONDS);
    let mut unrecorded = Publisher::start(&kawa.rtmp_url(&other_key), 4);
    unrecorded.wait_exit(Duration::from_secs(30));
    // While it goes on, the recording is listed as recording.
    let going = wait_for(
        "the recording to be indexed",
        Duration::from_secs(30),
        || async { recordings(&kawa, "?path=show").await.into_iter().next() },
    )
    .await;
    assert_eq!(going["status"], "recording", "{going}");
    assert!(going.get("playlist_url").is_none(), "{going}");
    let busy = admin_client()
        .delete(kawa.url(&format!("/api/v1/recordings/show/{}", going["id"])))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 409, "a recording still going is not deleted");

    let status = publisher
        .wait_exit(Duration::from_secs(u64::from(SENT_SECONDS) + 30))
        .expect("publisher ends");
    assert!(status.success(), "{}", publisher.stderr());
    let ready = wait_for("recording_ready", Duration::from_secs(30), || async {
        let calls = calls.lock().unwrap();
        calls
            .iter()
            .find(|c| json(c)["event"] == "recording_ready")
            .cloned()
    })
    .await;
    verify(&ready);
    let body = String::from_utf8_lossy(&ready.body).into_owned();
    assert!(!body.contains(&key), "a stream key in the hook: {body}");
    let hooked = json(&ready);
    assert_eq!(hooked["publish_path"], "show");

    let listed = recordings(&kawa, "").await;
    assert_eq!(
        listed.len(),
        1,
        "only the flagged stream recorded: {listed:?}"
    );
    let rec = &listed[0];
    assert_eq!(rec["status"], "ready");
    assert_eq!(rec["id"], going["id"]);
    assert_eq!(hooked["recording"]["id"], rec["id"]);
    assert_eq!(
        rec["renditions"],
        json!(["source", "180p", "120p"]),
        "every rendition recorded: {rec}"
    );
    assert_within_a_segment("the index", rec["duration_seconds"].as_f64().unwrap());

    // Kawa serves it: a VOD playlist, played whole by FFmpeg.
    let playlist_url = kawa.url(rec["playlist_url"].as_str().unwrap());
    let id = rec["id"].as_u64().unwrap();
    let source = reqwest::get(kawa.url(&format!("/recordings/show/{id}/source/index.m3u8")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(source.contains("#EXT-X-PLAYLIST-TYPE:VOD"), "{source}");
    assert!(source.ends_with("#EXT-X-ENDLIST\n"), "{source}");
    let (frames, duration) = decode(&playlist_url);
    assert_within_a_segment("ffprobe, from Kawa", duration);
    // 25 fps: every frame sent, give or take a segment's.
    let sent = u64::from(SENT_SECONDS) * 25;
    assert!(
        frames.abs_diff(sent) <= 50,
        "{frames} frames decoded of {sent} sent"
    );

    // The bucket has its own copy, playable from the CDN side.
    let s3_key = rec["s3_key"].as_str().unwrap().to_owned();
    assert_eq!(s3_key, format!("{PREFIX}/show/recordings/{id}/master.m3u8"));
    let client = moto.client().await;
    wait_for("the recording in S3", Duration::from_secs(60), || async {
        s3_has(&client, &s3_key).await.then_some(())
    })
    .await;
    let (s3_frames, s3_duration) = decode(&format!("{}/{BUCKET}/{s3_key}", moto.endpoint()));
    assert_within_a_segment("ffprobe, from S3", s3_duration);
    assert_eq!(s3_frames, frames);

    // hls.js in Chromium: the whole recording, to its `ended` event.
    let played = tokio::task::spawn_blocking(move || play_in_browser(&playlist_url))
        .await
        .unwrap();
    assert_eq!(played["ended"], true, "{played}");
    assert_eq!(played["live"], false, "{played}");
    assert_within_a_segment("hls.js's duration", played["duration"].as_f64().unwrap());
    assert!(
        played["played_seconds"].as_f64().unwrap() >= f64::from(SENT_SECONDS) - SEGMENT_SECONDS,
        "{played}"
    );
    eprintln!(
        "recorded {SENT_SECONDS} s: index {} s; ffprobe from Kawa {duration} s, {frames} frames; \
         from S3 {s3_duration} s, {s3_frames} frames; hls.js {played}",
        rec["duration_seconds"]
    );

    // Deleted over REST: gone from the index, the disk and the bucket.
    let deleted = admin_client()
        .delete(kawa.url(&format!("/api/v1/recordings/show/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let again = admin_client()
        .get(kawa.url(&format!("/api/v1/recordings/show/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    assert!(!kawa.data_dir.join(format!("recordings/show/{id}")).exists());
    let left = client
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(format!("{PREFIX}/show/recordings/"))
        .send()
        .await
        .unwrap();
    assert_eq!(left.key_count(), Some(0), "{left:?}");
    let gone = reqwest::get(kawa.url(&format!("/recordings/show/{id}/master.m3u8")))
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_on_by_default_let_a_stream_opt_out_and_expire() {
    let kawa = Kawa::builder()
        .env("KAWA_HLS__PRESET", "passthrough")
        .env("KAWA_RECORDINGS__ENABLED", "true")
        .env("KAWA_RECORDINGS__RETENTION_SECONDS", "4")
        .start();
    let key = create_stream(&kawa, "kept").await;
    let out_key = create_stream(&kawa, "private").await;
    // Bad input gets a specific error.
    let client = admin_client();
    for (method, url, body, status) in [
        (
            "PATCH",
            "/api/v1/streams/nobody",
            json!({"record": true}),
            404,
        ),
        (
            "PATCH",
            "/api/v1/streams/kept",
            json!({"record": "yes"}),
            400,
        ),
        ("PATCH", "/api/v1/streams/kept", json!({"recrd": true}), 400),
        ("GET", "/api/v1/recordings?limit=0", Value::Null, 400),
        ("GET", "/api/v1/recordings?status=done", Value::Null, 400),
        ("GET", "/api/v1/recordings/kept/latest", Value::Null, 400),
        ("DELETE", "/api/v1/recordings/kept/1", Value::Null, 404),
    ] {
        let request = client.request(method.parse().unwrap(), kawa.url(url));
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), status, "{method} {url} {body}");
    }
    for url in [
        "/recordings/kept/1/../../keys.redb",
        "/recordings/kept/1/source/..%2F..%2Fx.m4s",
    ] {
        let answer = reqwest::get(kawa.url(url)).await.unwrap();
        assert_eq!(answer.status(), 404, "{url}");
    }
    assert_eq!(
        set_record(&kawa, "private", json!(false)).await["record"],
        false
    );
    let mut a = Publisher::start(&kawa.rtmp_url(&key), 5);
    let mut b = Publisher::start(&kawa.rtmp_url(&out_key), 5);
    a.wait_exit(Duration::from_secs(30));
    b.wait_exit(Duration::from_secs(30));
    let ready = wait_for("the recording", Duration::from_secs(30), || async {
        recordings(&kawa, "?status=ready").await.into_iter().next()
    })
    .await;
    assert_eq!(ready["publish_path"], "kept");
    assert!(recordings(&kawa, "?path=private").await.is_empty());
    let dir = kawa
        .data_dir
        .join(format!("recordings/kept/{}", ready["id"]));
    assert!(dir.join("master.m3u8").is_file());

    // Past its retention, the sweeper deletes it.
    wait_for("retention", Duration::from_secs(30), || async {
        recordings(&kawa, "").await.is_empty().then_some(())
    })
    .await;
    assert!(!dir.exists(), "local files left behind");
    assert!(kawa.logs().contains("past its retention"));
    let metrics = common::metrics_text(&kawa).await;
    for line in [
        "kawa_recordings_active 0",
        "kawa_recordings_finished_total{how=\"ended\"} 1",
        "kawa_recordings_deleted_total{reason=\"retention\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    assert!(
        !metrics.contains("kawa_recorded_bytes_total 0\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_a_crash_interrupted_is_finished_when_kawa_starts_again() {
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let mut kawa = with_s3(Kawa::builder(), &moto.endpoint())
        .env("KAWA_RECORDINGS__ENABLED", "true")
        .start();
    let key = create_stream(&kawa, "crashed").await;
    let _publisher = Publisher::start(&kawa.rtmp_url(&key), 60);
    let going = wait_for("6 recorded segments", Duration::from_secs(40), || async {
        recordings(&kawa, "").await.into_iter().next().filter(|_| {
            // The index learns the count only at the end: count the kept files.
            let dir = kawa.data_dir.join("recordings/crashed");
            walk_count(&dir, ".m4s") >= 6
        })
    })
    .await;
    let id = going["id"].as_u64().unwrap();
    kawa.kill();
    let kept = walk_count(
        &kawa.data_dir.join(format!("recordings/crashed/{id}")),
        ".m4s",
    );
    kawa.start_again();

    let ready = wait_for(
        "the interrupted recording",
        Duration::from_secs(30),
        || async { recordings(&kawa, "?status=ready").await.into_iter().next() },
    )
    .await;
    assert_eq!(ready["id"], id);
    assert!(kawa.logs().contains("recording finished after a restart"));
    assert!(
        common::metrics_text(&kawa)
            .await
            .contains("kawa_recordings_finished_total{how=\"recovered\"} 1")
    );
    let seconds = ready["duration_seconds"].as_f64().unwrap();
    // Every segment kept before the kill is listed (the last may have been cut short
    // in the journal).
    assert!(
        (seconds - kept as f64 * SEGMENT_SECONDS).abs() <= SEGMENT_SECONDS,
        "{seconds} s listed, {kept} segments kept: {ready}"
    );
    let (frames, duration) = decode(&kawa.url(ready["playlist_url"].as_str().unwrap()));
    assert!((duration - seconds).abs() < 0.5, "{duration} vs {seconds}");
    assert!(
        frames.abs_diff((seconds * 25.0) as u64) <= 25,
        "{frames} frames in {seconds} s"
    );
    // The copies queued before the crash and the playlists after it reach the bucket.
    let s3_key = ready["s3_key"].as_str().unwrap().to_owned();
    let client = moto.client().await;
    // The copies resumed from the spool may land after the playlists (each is retried
    // on its own): the recording is whole in S3 once every frame decodes from there.
    let s3_url = format!("{}/{BUCKET}/{s3_key}", moto.endpoint());
    let s3_frames = wait_for(
        "the whole finished recording in S3",
        Duration::from_secs(60),
        || async {
            if !s3_has(&client, &s3_key).await {
                return None;
            }
            let (s3_frames, _) = try_decode(&s3_url)?;
            (s3_frames == frames).then_some(s3_frames)
        },
    )
    .await;
    eprintln!(
        "killed with {kept} segments kept: finished with {seconds} s listed; ffprobe \
         {duration} s, {frames} frames (S3: {s3_frames})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_goes_on_on_the_node_that_takes_over_a_killed_owners_path() {
    const PATH: &str = "relay";
    let redis = RedisServer::start();
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let mut nodes: Vec<Kawa> = (0..2).map(|i| recording_node(i, &redis, &moto)).collect();
    let balancer = Balancer::start(nodes.iter().map(|k| k.rtmp).collect()).await;
    let key = create_stream(&nodes[0], PATH).await;
    let publisher = ReconnectingPublisher::start(balancer.rtmp_url(&key));
    let recorded_on =
        |node: &Kawa| walk_count(&node.data_dir.join("recordings").join(PATH), ".m4s");

    let first = wait_for("the path's owner", Duration::from_secs(30), || async {
        owner(&redis, PATH)
    })
    .await;
    wait_for("4 segments recorded", Duration::from_secs(40), || async {
        (recorded_on(&nodes[first]) >= 4).then_some(())
    })
    .await;
    nodes[first].kill();
    let next = 1 - first;
    wait_for(
        "4 segments recorded on the new owner",
        Duration::from_secs(60),
        || async {
            (owner(&redis, PATH) == Some(next) && recorded_on(&nodes[next]) >= 4).then_some(())
        },
    )
    .await;
    // The encoder goes away for good: the stream ends on the new owner.
    drop(publisher);
    let kawa = &nodes[next];
    let rec = wait_for("the recording", Duration::from_secs(30), || async {
        recordings(kawa, "?status=ready").await.into_iter().next()
    })
    .await;
    assert_eq!(
        recordings(kawa, "").await.len(),
        1,
        "one recording of one broadcast"
    );
    assert_eq!(rec["node"], format!("node-{next}"), "{rec}");
    let id = rec["id"].as_u64().unwrap();

    // It lists the dead owner's segments, then the new owner's after a discontinuity.
    let text = reqwest::get(kawa.url(&format!("/recordings/{PATH}/{id}/source/index.m3u8")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let Ok(m3u8_rs::Playlist::MediaPlaylist(source)) = m3u8_rs::parse_playlist_res(text.as_bytes())
    else {
        panic!("{text}")
    };
    let epochs: std::collections::BTreeSet<&str> = source
        .segments
        .iter()
        .filter_map(|s| s.uri.split('_').next())
        .collect();
    assert_eq!(epochs.len(), 2, "both owners' segments: {text}");
    assert!(
        source.segments.iter().skip(1).any(|s| s.discontinuity),
        "{text}"
    );
    assert!(source.segments.len() >= 7, "{text}");

    // The new owner plays all of it (the first part from S3), and so does the bucket.
    let seconds = rec["duration_seconds"].as_f64().unwrap();
    let (frames, duration) = decode(&kawa.url(rec["playlist_url"].as_str().unwrap()));
    assert!((duration - seconds).abs() < 0.5, "{duration} vs {seconds}");
    assert!(
        frames.abs_diff((seconds * 25.0) as u64) <= 25,
        "{frames} frames in {seconds} s"
    );
    let s3_key = rec["s3_key"].as_str().unwrap().to_owned();
    let client = moto.client().await;
    wait_for("the recording in S3", Duration::from_secs(60), || async {
        s3_has(&client, &s3_key).await.then_some(())
    })
    .await;
    let (s3_frames, _) = decode(&format!("{}/{BUCKET}/{s3_key}", moto.endpoint()));
    assert_eq!(s3_frames, frames);

    // The dead owner comes back with its part on disk: the recording stays as it is.
    nodes[first].start_again();
    wait_for("the old owner back", Duration::from_secs(20), || async {
        common::fetch_text(&nodes[first], "/healthz").await
    })
    .await;
    let kawa = &nodes[next];
    assert_eq!(recordings(kawa, "").await, vec![rec.clone()]);
    assert!(
        !nodes[first]
            .logs()
            .contains("recording finished after a restart")
    );
    eprintln!(
        "node-{first} killed, node-{next} went on: one recording of {seconds} s, {} segments \
         from both, {frames} frames decoded from node-{next} and from S3",
        source.segments.len()
    );
}

/// Files under `dir` whose names end with `suffix`.
fn walk_count(dir: &std::path::Path, suffix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_count(&path, suffix)
            } else {
                usize::from(path.to_string_lossy().ends_with(suffix))
            }
        })
        .sum()
}

/// A recording this node has no files of is passed on from S3 as it is read: Range and
/// HEAD as for local files, and only for a recording the index knows.
#[tokio::test]
async fn a_recording_only_in_s3_is_streamed_with_range_and_head() {
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let client = moto.client().await;
    let kawa = with_s3(Kawa::builder(), &moto.endpoint())
        .env("KAWA_RECORDINGS__ENABLED", "true")
        .start();
    let key = create_stream(&kawa, "vod").await;
    let mut publisher = Publisher::start(&kawa.rtmp_url(&key), 6);
    publisher
        .wait_exit(Duration::from_secs(30))
        .expect("the publish ends");
    let rec = wait_for("the recording", Duration::from_secs(30), || async {
        recordings(&kawa, "?status=ready").await.into_iter().next()
    })
    .await;
    let id = rec["id"].as_u64().unwrap();
    let folder = format!("{PREFIX}/vod/recordings/{id}");
    let master_key = format!("{folder}/master.m3u8");
    wait_for("the recording in S3", Duration::from_secs(60), || async {
        s3_has(&client, &master_key).await.then_some(())
    })
    .await;
    // This node loses its copy (another node made it, or its disk was replaced).
    std::fs::remove_dir_all(kawa.data_dir.join(format!("recordings/vod/{id}"))).unwrap();

    let url = |rest: &str| kawa.url(&format!("/recordings/vod/{id}/{rest}"));
    let source = reqwest::get(url("source/index.m3u8")).await.unwrap();
    assert_eq!(source.status(), 200);
    let text = source.text().await.unwrap();
    let playlist = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("a playlist");
    let segment = &playlist.segments[0].uri;
    let whole = s3_text(&client, &format!("{folder}/source/{segment}"))
        .await
        .unwrap();
    assert!(whole.len() > 200);

    let got = reqwest::get(url(&format!("source/{segment}")))
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.content_length(), Some(whole.len() as u64));
    assert_eq!(got.bytes().await.unwrap(), whole);

    let part = reqwest::Client::new()
        .get(url(&format!("source/{segment}")))
        .header("Range", "bytes=10-109")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 10-109/{}", whole.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap(), whole[10..110]);

    let head = reqwest::Client::new()
        .head(url(&format!("source/{segment}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        whole.len().to_string().as_str()
    );
    assert!(head.bytes().await.unwrap().is_empty());

    // Objects under a recording the index does not know are not served.
    let unknown = id + 1;
    client
        .copy_object()
        .bucket(BUCKET)
        .copy_source(format!("{BUCKET}/{folder}/source/{segment}"))
        .key(format!(
            "{PREFIX}/vod/recordings/{unknown}/source/{segment}"
        ))
        .send()
        .await
        .unwrap();
    let refused = reqwest::get(kawa.url(&format!("/recordings/vod/{unknown}/source/{segment}")))
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
}
