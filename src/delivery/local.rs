//! The local sink: a stream's HLS files under `DATA_DIR/hls/{path}/`, served by Kawa,
//! and its recordings under `DATA_DIR/recordings/{path}/{id}/`.
//!
//! A reader (Kawa's HTTP, or anyone watching the folder) never sees half a file: a
//! playlist is swapped into place whole, other small files are renamed into place, and a
//! segment is written under its own name before the playlist that lists it. Retired
//! segment files are reused for new segments (see [`SPARES`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::memory::LiveStream;
use crate::hls::packager::Output;
use crate::hls::recording::{RecordingBatch, RecordingOutput};

pub struct LocalSink {
    root: PathBuf,
    /// `DATA_DIR/recordings/{path}`.
    recordings: PathBuf,
}

impl LocalSink {
    pub fn new(root: PathBuf, recordings: PathBuf) -> Self {
        Self { root, recordings }
    }

    /// A recording's output (see [`write_recording`]).
    pub fn apply_recording(&self, id: u64, output: &RecordingOutput) -> io::Result<()> {
        write_recording(&self.recordings.join(id.to_string()), &self.root, output)
    }

    pub fn apply(&self, output: &Output) -> io::Result<()> {
        match output {
            Output::Init {
                rendition,
                name,
                data,
            } => write_atomic(&self.root.join(rendition), name, data),
            // Under its own name at once: no reader asks for a segment before the
            // playlist that lists it is written, after it (as nginx-rtmp writes its
            // fragments). A rename per segment was 2 % of a stream's CPU.
            Output::Segment {
                rendition,
                name,
                data,
                ..
            } => write_segment(&self.root.join(rendition), name, data.pieces()),
            Output::Playlist { rendition, text } => {
                replace_by_exchange(&self.root.join(rendition), "index.m3u8", text.as_bytes())
            }
            Output::Master { text } => write_atomic(&self.root, "master.m3u8", text.as_bytes()),
            Output::Thumbnail { data } => write_atomic(&self.root, "thumbnail.jpg", data),
            Output::Remove { rendition, name } => retire(&self.root.join(rendition), name),
            // The live edge lives in memory (`memory::LiveStore`).
            Output::Part { .. } | Output::Live { .. } => Ok(()),
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
                let _ = remove(&dir.join(exchange_name("index.m3u8")));
                for spare in SPARES {
                    let _ = remove(&dir.join(spare));
                }
                let _ = std::fs::remove_dir(&dir);
            }
            let _ = remove(&self.root.join("master.m3u8"));
            let _ = remove(&self.root.join("thumbnail.jpg"));
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

/// A recording's output in its folder `dir`: a kept file of the stream (under
/// `stream_root`) is hard-linked (the live window deletes its own link later; the
/// recording's stays), playlists are written, journal lines appended.
pub fn write_recording(dir: &Path, stream_root: &Path, output: &RecordingOutput) -> io::Result<()> {
    match output {
        RecordingOutput::Keep { rendition, name } => {
            let dir = dir.join(rendition);
            std::fs::create_dir_all(&dir)?;
            let (from, to) = (stream_root.join(rendition).join(name), dir.join(name));
            match std::fs::hard_link(&from, &to) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                // Another file system (a recordings folder mounted elsewhere).
                Err(_) => std::fs::copy(&from, &to).map(drop),
                Ok(()) => Ok(()),
            }
        }
        RecordingOutput::Playlist { rendition, text } => {
            write_atomic(&dir.join(rendition), "index.m3u8", text.as_bytes())
        }
        RecordingOutput::Master { text } => write_atomic(dir, "master.m3u8", text.as_bytes()),
        RecordingOutput::Journal(entry) => {
            use std::io::Write;
            std::fs::create_dir_all(dir)?;
            let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
            line.push(b'\n');
            // One write per line: a crash leaves at most the last line cut short.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(crate::hls::recording::JOURNAL))?
                .write_all(&line)
        }
    }
}

pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    in_folder(dir, || std::fs::write(&tmp, data))?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Runs `write`, which writes a file in `dir`; if `dir` is missing, makes it and runs
/// `write` again. The folder exists but for the first file: made then, not looked up
/// every time.
fn in_folder(dir: &Path, write: impl Fn() -> io::Result<()>) -> io::Result<()> {
    match write() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            write()
        }
        other => other,
    }
}

/// A folder's retired segment files, kept to be written over as its next segments.
///
/// A live window retires a segment as it makes one. Deleting one file and creating
/// another for each was a sixth of a passthrough stream's CPU on ext4 (perf, peerbench
/// N=30): allocating an inode scans past every inode freed in the last minute
/// (`recently_deleted`), and freeing one drops its pages. A retired file is renamed to a
/// spare name instead, and the next segment renamed from it and written over it (as
/// PostgreSQL recycles its WAL files). A file that is also a recording's (a hard link)
/// is never reused.
const SPARES: [&str; 2] = [".spare0", ".spare1"];

/// Takes `dir/name` out of the live folder: kept as a spare if it can be reused, else
/// deleted.
fn retire(dir: &Path, name: &str) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(name);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_file() && meta.nlink() == 1 {
        for spare in SPARES {
            match rename2(&path, &dir.join(spare), libc::RENAME_NOREPLACE) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                // No RENAME_NOREPLACE on this file system.
                Err(_) => break,
            }
        }
    }
    remove(&path)
}

/// Writes the segment `dir/name`, over a spare file if the folder has one (see
/// [`SPARES`]), else into a new one (making `dir` for the first file).
fn write_segment(dir: &Path, name: &str, pieces: &[impl AsRef<[u8]>]) -> io::Result<()> {
    let path = dir.join(name);
    for spare in SPARES {
        if rename2(&dir.join(spare), &path, libc::RENAME_NOREPLACE).is_ok() {
            break;
        }
    }
    in_folder(dir, || write_over(&path, pieces))
}

/// The file that holds a replaced file's previous version (see [`replace_by_exchange`]).
fn exchange_name(name: &str) -> String {
    format!(".{name}.prev")
}

/// Replaces `dir/name` atomically, as [`write_atomic`] does, but without a new file each
/// time: the new bytes go into `.{name}.prev` (the version before last, rewritten), which
/// is then swapped with `name` (`renameat2(RENAME_EXCHANGE)`). A playlist is replaced at
/// every segment, and allocating and freeing an inode for it was about 8 % of a
/// passthrough stream's CPU on ext4 (perf). A reader that still holds the version before
/// last open when it is rewritten, a segment later, would see it change. Where the file
/// system cannot swap, a plain rename.
pub fn replace_by_exchange(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let spare = dir.join(exchange_name(name));
    let target = dir.join(name);
    in_folder(dir, || write_over(&spare, &[data]))?;
    match rename2(&spare, &target, libc::RENAME_EXCHANGE) {
        Ok(()) => Ok(()),
        // The first version (nothing to swap with), or no RENAME_EXCHANGE here.
        Err(_) => std::fs::rename(&spare, &target),
    }
}

/// `renameat2` with `flags` (`RENAME_EXCHANGE`, `RENAME_NOREPLACE`).
fn rename2(a: &Path, b: &Path, flags: libc::c_uint) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both are NUL-terminated paths that live across the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates (or truncates) `path` and writes the pieces into it, in one system call
/// when the kernel takes them all.
pub fn write_pieces(path: &Path, pieces: &[impl AsRef<[u8]>]) -> io::Result<()> {
    write_all_pieces(&mut std::fs::File::create(path)?, pieces).map(drop)
}

/// Writes the pieces over `path` (created if missing) and cuts what is left of its old
/// bytes: an old file's pages are written over, not freed and allocated again as a
/// truncation would.
fn write_over(path: &Path, pieces: &[impl AsRef<[u8]>]) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let len = write_all_pieces(&mut file, pieces)?;
    file.set_len(len)
}

/// Writes every piece from where `file` stands, in one system call when the kernel
/// takes them all; the bytes written.
fn write_all_pieces(file: &mut std::fs::File, pieces: &[impl AsRef<[u8]>]) -> io::Result<u64> {
    use std::io::{IoSlice, Write};
    let len = pieces.iter().map(|p| p.as_ref().len() as u64).sum();
    let mut slices: Vec<IoSlice> = pieces.iter().map(|p| IoSlice::new(p.as_ref())).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What the writer does, in order.
enum Job {
    Apply(Vec<Output>, Option<RecordingBatch>),
    /// Answered once every job before it is done.
    Flush(tokio::sync::oneshot::Sender<()>),
    CleanUp {
        files: Vec<(String, String)>,
        playlists: bool,
    },
    /// Segments written from now on are reported to this edge (a restarted session's).
    Edge(Arc<LiveStream>),
}

/// Jobs a stream's writer holds while the disk is slow; past that, writes are refused
/// (and logged) rather than queued without bound.
const WRITER_QUEUE: usize = 512;

/// A stream's [`LocalSink`] run off the actor threads: jobs go, in order, to a task that
/// does the file work on tokio's blocking pool, so a slow disk stalls no RTMP connection
/// or session.
pub struct LocalWriter {
    jobs: tokio::sync::mpsc::Sender<Job>,
    span: tracing::Span,
}

impl LocalWriter {
    /// Starts the writer task on the current runtime. Each segment written is reported
    /// to `edge`, which then lets its parts go.
    pub fn spawn(sink: LocalSink, edge: Arc<LiveStream>, span: tracing::Span) -> Self {
        let (jobs, mut rx) = tokio::sync::mpsc::channel::<Job>(WRITER_QUEUE);
        let sink = Arc::new(sink);
        let task_span = span.clone();
        tokio::spawn(async move {
            let mut edge = edge;
            while let Some(job) = rx.recv().await {
                if let Job::Edge(new) = job {
                    edge = new;
                    continue;
                }
                let sink = Arc::clone(&sink);
                let span = task_span.clone();
                let edge = Arc::clone(&edge);
                let done = tokio::task::spawn_blocking(move || match job {
                    Job::Apply(outputs, recording) => {
                        for output in &outputs {
                            match sink.apply(output) {
                                Ok(()) => {
                                    if let Output::Segment { rendition, name, .. } = output {
                                        edge.segment_stored(rendition, name);
                                    }
                                }
                                Err(e) => {
                                    tracing::error!(parent: &span, error = %e, "writing HLS output failed");
                                }
                            }
                        }
                        for batch in recording.iter() {
                            for output in &batch.outputs {
                                if let Err(e) = sink.apply_recording(batch.id, output) {
                                    tracing::error!(parent: &span, error = %e, file = %output.file(), "writing a recording failed");
                                }
                            }
                        }
                        outputs
                    }
                    Job::Flush(done) => {
                        let _ = done.send(());
                        Vec::new()
                    }
                    Job::CleanUp { files, playlists } => {
                        sink.clean_up(&files, playlists);
                        Vec::new()
                    }
                    Job::Edge(_) => Vec::new(),
                })
                .await;
                // The written bytes are freed here, on the session's thread, which made
                // them: freed on the blocking thread, each went to mimalloc's delayed-free
                // list for this thread to collect later.
                match done {
                    Ok(written) => drop(written),
                    Err(_) => tracing::error!(parent: &task_span, "HLS writer job failed"),
                }
            }
        });
        Self { jobs, span }
    }

    pub fn apply(&self, outputs: Vec<Output>, recording: Option<RecordingBatch>) {
        self.send(Job::Apply(outputs, recording));
    }

    /// Resolves once everything sent before is on disk (or failed, and was logged).
    pub fn flushed(&self) -> impl Future<Output = ()> + use<> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Flush(tx));
        async move {
            let _ = rx.await;
        }
    }

    /// Reports the segments of every job sent from now on to `edge`.
    pub fn set_edge(&self, edge: Arc<LiveStream>) {
        self.send(Job::Edge(edge));
    }

    pub fn clean_up(&self, files: Vec<(String, String)>, playlists: bool) {
        self.send(Job::CleanUp { files, playlists });
    }

    fn send(&self, job: Job) {
        if self.jobs.try_send(job).is_err() {
            tracing::error!(parent: &self.span, "the disk is not keeping up: HLS output dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_swaps_with_its_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("source");
        for version in ["v1", "v2", "v3"] {
            replace_by_exchange(&sub, "index.m3u8", version.as_bytes()).unwrap();
            assert_eq!(
                std::fs::read(sub.join("index.m3u8")).unwrap(),
                version.as_bytes()
            );
        }
        // Two files between them, the same two inodes from the second version on.
        use std::os::unix::fs::MetadataExt;
        let inode = |n: &str| std::fs::metadata(sub.join(n)).unwrap().ino();
        let (current, spare) = (inode("index.m3u8"), inode(".index.m3u8.prev"));
        replace_by_exchange(&sub, "index.m3u8", b"v4").unwrap();
        assert_eq!(
            (inode("index.m3u8"), inode(".index.m3u8.prev")),
            (spare, current)
        );
        assert_eq!(std::fs::read(sub.join(".index.m3u8.prev")).unwrap(), b"v3");

        let sink = LocalSink::new(dir.path().to_path_buf(), dir.path().join("recordings"));
        write_segment(&sub, "1_0.m4s", &[&b"moof"[..], b"mdat"]).unwrap();
        assert_eq!(std::fs::read(sub.join("1_0.m4s")).unwrap(), b"moofmdat");
        write_segment(&sub, "1_1.m4s", &[b"moof"]).unwrap();
        retire(&sub, "1_1.m4s").unwrap();
        sink.clean_up(&[("source".into(), "1_0.m4s".into())], true);
        assert!(
            !sub.exists(),
            "the spare versions are cleaned up with the playlist"
        );
    }

    #[test]
    fn a_retired_segment_file_is_written_over_as_the_next_one() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("source");
        let inode = |n: &str| std::fs::metadata(sub.join(n)).unwrap().ino();
        write_segment(&sub, "1_0.m4s", &[vec![7u8; 10_000]]).unwrap();
        let first = inode("1_0.m4s");
        retire(&sub, "1_0.m4s").unwrap();
        assert!(!sub.join("1_0.m4s").exists(), "gone from the live folder");
        // A shorter segment over it: the same inode, only the new bytes.
        write_segment(&sub, "1_1.m4s", &[&b"moof"[..], b"mdat"]).unwrap();
        assert_eq!(inode("1_1.m4s"), first);
        assert_eq!(std::fs::read(sub.join("1_1.m4s")).unwrap(), b"moofmdat");
        // No spare left: a new file; a longer segment is whole.
        write_segment(&sub, "1_2.m4s", &[vec![1u8; 20_000]]).unwrap();
        assert_ne!(inode("1_2.m4s"), first);
        assert_eq!(
            std::fs::read(sub.join("1_2.m4s")).unwrap(),
            vec![1u8; 20_000]
        );
        // Retiring a name that is gone is not an error.
        retire(&sub, "1_9.m4s").unwrap();
    }

    #[test]
    fn a_segment_a_recording_links_is_deleted_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("source");
        write_segment(&sub, "1_0.m4s", &[b"kept"]).unwrap();
        let kept = dir.path().join("kept.m4s");
        std::fs::hard_link(sub.join("1_0.m4s"), &kept).unwrap();
        retire(&sub, "1_0.m4s").unwrap();
        write_segment(&sub, "1_1.m4s", &[b"next"]).unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"kept");
        assert!(!SPARES.iter().any(|s| sub.join(s).exists()));
    }

    #[test]
    fn a_folder_keeps_at_most_its_spares() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("source");
        for n in 0..4 {
            write_segment(&sub, &format!("1_{n}.m4s"), &[b"x"]).unwrap();
        }
        for n in 0..4 {
            retire(&sub, &format!("1_{n}.m4s")).unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(&sub).unwrap().collect();
        assert_eq!(left.len(), SPARES.len());
    }
}
