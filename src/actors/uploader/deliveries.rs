//! The uploaders of every stream path: one per path, created on first use, retired once
//! its stream has ended and everything it queued is delivered.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::prelude::*;

use super::Uploader;
use crate::cluster::Cluster;
use crate::delivery::s3::S3Target;

/// Path -> its uploader; an uploader removes itself when it retires.
pub(super) type Directory = Mutex<HashMap<String, Addr<Uploader>>>;

/// The uploaders, one per stream path.
pub struct Deliveries {
    target: Option<S3Target>,
    spool_root: PathBuf,
    delete_grace: Option<Duration>,
    cluster: Option<Arc<Cluster>>,
    uploaders: Arc<Directory>,
}

impl Deliveries {
    /// `target` is `None` when S3 is off.
    pub fn new(
        target: Option<S3Target>,
        spool_root: PathBuf,
        delete_grace_seconds: u64,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            target,
            spool_root,
            cluster,
            delete_grace: (delete_grace_seconds > 0)
                .then(|| Duration::from_secs(delete_grace_seconds)),
            uploaders: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The bucket, when S3 is on.
    pub fn target(&self) -> Option<&S3Target> {
        self.target.as_ref()
    }

    /// The stream's uploader (started if needed), or `None` when S3 is off. Call from
    /// within the actor system.
    pub fn uploader(&self, stream: &str) -> Option<Addr<Uploader>> {
        let target = self.target.as_ref()?;
        let mut uploaders = self.uploaders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(addr) = uploaders.get(stream).filter(|a| a.connected()) {
            return Some(addr.clone());
        }
        let (name, target, dir, grace, cluster) = (
            stream.to_owned(),
            target.clone(),
            self.spool_root.join(stream),
            self.delete_grace,
            self.cluster.clone(),
        );
        let directory: Weak<Directory> = Arc::downgrade(&self.uploaders);
        let addr = Supervisor::start(move |_| {
            Uploader::new(name, target, dir, grace, cluster).listed_in(directory)
        });
        uploaders.insert(stream.to_owned(), addr.clone());
        Some(addr)
    }

    /// Starts an uploader for every stream with uploads left by an earlier run.
    pub fn resume(&self) {
        if self.target.is_none() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.spool_root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pending = std::fs::read_dir(entry.path())
                .map(|d| {
                    d.flatten()
                        .any(|f| f.file_name().to_string_lossy().ends_with(".meta"))
                })
                .unwrap_or(false);
            if pending
                && crate::keys::PublishPath::parse(&name).is_ok()
                && let Some(uploader) = self.uploader(&name)
            {
                // Not live (Kawa is starting): it retires once its queue is delivered.
                uploader.do_send(super::StreamEnded);
            }
        }
    }
}
