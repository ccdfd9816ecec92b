//! Playlist fencing by conditional writes, against the S3-compatible server the tests
//! use (moto): a node's chain of `If-Match` puts holds while nobody else writes; once
//! another owner takes the object over, the old owner's next put is refused and
//! nothing it sends lands.

mod common;

use common::MotoServer;
use common::s3::{BUCKET, s3_text};
use kawa::delivery::fencing::{FenceStep, PlaylistFences};
use kawa::delivery::s3::{Condition, Conditional, S3Target};
use kawa::delivery::spool::ItemKind;

#[tokio::test]
async fn a_replaced_owners_conditional_put_never_lands() {
    let moto = MotoServer::start();
    moto.public_bucket(BUCKET).await;
    let client = moto.client().await;
    // Only this test runs in this binary (one process per test under nextest): the
    // SDK's default chain reads the credentials from the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let mut settings = kawa::config::Settings::load(None).unwrap().s3;
    settings.bucket = BUCKET.to_owned();
    settings.endpoint = moto.endpoint();
    settings.force_path_style = true;
    let target = S3Target::connect(&settings).await;
    assert!(target.conditional_writes(), "on by default");
    let key = "fenced/source/index.m3u8";
    let put = |body: &'static str, condition: Condition| {
        let target = &target;
        async move {
            target
                .put_conditional(
                    key,
                    ItemKind::Playlist,
                    body.as_bytes().to_vec(),
                    &condition,
                )
                .await
                .unwrap()
        }
    };

    // The old owner (token 5) creates the playlist and writes on its chain.
    let mut old = PlaylistFences::default();
    assert_eq!(old.step(key, 5), FenceStep::TakeOver { confirm: true });
    old.confirmed(5);
    let Conditional::Written(etag) = put("v1", Condition::Absent).await else {
        panic!("the first put of a new object")
    };
    old.written(key, 5, etag.clone());
    assert_eq!(
        put("again", Condition::Absent).await,
        Conditional::Refused,
        "If-None-Match: * on an object that exists"
    );
    let FenceStep::Write(condition) = old.step(key, 5) else {
        panic!("on the chain")
    };
    let Conditional::Written(etag2) = put("v2", condition).await else {
        panic!("the chain holds while nobody else writes")
    };
    old.written(key, 5, etag2.clone());

    // The new owner (token 6, on another node) takes the object over at its ETag.
    let current = target.etag(key).await.unwrap().expect("the object exists");
    assert_eq!(current, etag2);
    let Conditional::Written(_) = put("new owner", Condition::Matches(current)).await else {
        panic!("a take-over at the current ETag")
    };

    // The old owner's next playlist (a late one, queued before it lost the path) is
    // refused, and it writes nothing more under its token.
    let FenceStep::Write(condition) = old.step(key, 5) else {
        panic!("on the chain")
    };
    assert_eq!(put("stale", condition).await, Conditional::Refused);
    old.lost(5);
    assert_eq!(old.step(key, 5), FenceStep::Drop);
    let body = s3_text(&client, key).await.unwrap();
    assert_eq!(body, b"new owner");
    // A missing object cannot be matched either.
    assert_eq!(
        target
            .put_conditional(
                "fenced/none.m3u8",
                ItemKind::Playlist,
                b"x".to_vec(),
                &Condition::Matches(etag)
            )
            .await
            .unwrap(),
        Conditional::Refused
    );
}
