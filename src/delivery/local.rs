//! The local sink: a stream's HLS files under `DATA_DIR/hls/{path}/`, served by Kawa.
//!
//! Every file is written to a temporary name and renamed into place, so a reader (Kawa's
//! HTTP, or anyone watching the folder) never sees half a segment or half a playlist.

use std::io;
use std::path::{Path, PathBuf};

use crate::hls::packager::Output;

pub struct LocalSink {
    root: PathBuf,
}

impl LocalSink {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn apply(&self, output: &Output) -> io::Result<()> {
        match output {
            Output::Segment {
                rendition,
                name,
                data,
                ..
            } => write_atomic(&self.root.join(rendition), name, data),
            Output::Playlist { rendition, text } => {
                write_atomic(&self.root.join(rendition), "index.m3u8", text.as_bytes())
            }
            Output::Master { text } => write_atomic(&self.root, "master.m3u8", text.as_bytes()),
            Output::Remove { rendition, name } => remove(&self.root.join(rendition).join(name)),
        }
    }

    /// Removes the stream's segments, and its playlists when `playlists` is set (not when
    /// a newer publish of the same path owns them now).
    pub fn clean_up(&self, files: &[(String, String)], playlists: bool) {
        for (rendition, name) in files {
            let _ = remove(&self.root.join(rendition).join(name));
        }
        if playlists {
            let renditions: std::collections::BTreeSet<&String> =
                files.iter().map(|(r, _)| r).collect();
            for rendition in renditions {
                let dir = self.root.join(rendition);
                let _ = remove(&dir.join("index.m3u8"));
                let _ = std::fs::remove_dir(&dir);
            }
            let _ = remove(&self.root.join("master.m3u8"));
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dir.join(name))
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
