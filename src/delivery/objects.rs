//! What the bucket gets of a stream's outputs and of its recordings: each as a spool
//! item (kind, key below the stream, body). Pure.

use std::time::Duration;

use super::spool::{ItemKind, ItemMeta};
use crate::hls::packager::Output;
use crate::hls::recording::RecordingOutput;
use crate::media::chunks::Chunks;

/// A stream's output as a spool item: its key below the stream, and its body; `None`
/// for what the bucket does not get.
pub fn stream_item(
    output: Output,
    delete_grace: Option<Duration>,
    fence: Option<u64>,
    now_ms: u64,
) -> Option<(ItemMeta, Chunks)> {
    let (kind, key, body) = match output {
        Output::Init {
            rendition,
            name,
            data,
        } => (
            ItemKind::Segment,
            format!("{rendition}/{name}"),
            data.into(),
        ),
        Output::Segment {
            rendition,
            name,
            data,
            ..
        } => (ItemKind::Segment, format!("{rendition}/{name}"), data),
        Output::Playlist { rendition, text } => (
            ItemKind::Playlist,
            format!("{rendition}/index.m3u8"),
            text.into(),
        ),
        Output::Master { text } => (ItemKind::Master, "master.m3u8".to_owned(), text.into()),
        Output::Thumbnail { data } => {
            (ItemKind::Thumbnail, "thumbnail.jpg".to_owned(), data.into())
        }
        Output::Remove { rendition, name } => {
            // No grace configured: keep every segment for replay.
            let grace = delete_grace?;
            let meta = ItemMeta {
                kind: ItemKind::Delete,
                key: format!("{rendition}/{name}"),
                not_before_ms: now_ms + grace.as_millis() as u64,
                fence: None,
            };
            return Some((meta, Chunks::default()));
        }
        // CDNs get plain playlists and whole segments; parts stay on Kawa.
        Output::Part { .. } | Output::Live { .. } => return None,
    };
    Some((
        ItemMeta {
            kind,
            key,
            not_before_ms: 0,
            // Segment names are unique to their writer; playlists are shared.
            fence: fence.filter(|_| matches!(kind, ItemKind::Playlist | ItemKind::Master)),
        },
        body,
    ))
}

/// A recording's output as a spool item, under `recordings/{id}/` below the stream.
/// The journal stays local: S3 gets the finished playlists.
pub fn recording_item(id: u64, output: RecordingOutput) -> Option<(ItemMeta, Chunks)> {
    let key = format!(
        "{}/{}",
        crate::recordings::RecordingInfo::s3_folder(id),
        output.file()
    );
    let (kind, body) = match output {
        // The stream's own object, uploaded before this item: copied in the bucket.
        RecordingOutput::Keep { rendition, name } => {
            (ItemKind::Copy, format!("{rendition}/{name}").into())
        }
        RecordingOutput::Playlist { text, .. } => (ItemKind::Playlist, text.into()),
        RecordingOutput::Master { text } => (ItemKind::Master, text.into()),
        RecordingOutput::Journal(_) => return None,
    };
    let meta = ItemMeta {
        kind,
        key,
        not_before_ms: 0,
        // A recording's keys are its own, whoever owns the path now.
        fence: None,
    };
    Some((meta, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::recording::JournalEntry;

    #[test]
    fn a_kept_segment_is_a_copy_of_the_streams_object() {
        let keep = RecordingOutput::Keep {
            rendition: "source".into(),
            name: "5_3.m4s".into(),
        };
        let (meta, body) = recording_item(5, keep).unwrap();
        assert_eq!(meta.kind, ItemKind::Copy);
        assert_eq!(meta.key, "recordings/5/source/5_3.m4s");
        assert_eq!(body.to_vec(), b"source/5_3.m4s");
        assert_eq!(meta.fence, None);
        let line = RecordingOutput::Journal(JournalEntry::Master {
            master: crate::hls::playlist::MasterPlaylist { variants: vec![] },
        });
        assert!(recording_item(5, line).is_none(), "the journal stays local");
    }

    #[test]
    fn deletes_wait_their_grace_and_playlists_carry_the_fence() {
        let remove = || Output::Remove {
            rendition: "source".into(),
            name: "5_0.m4s".into(),
        };
        assert!(
            stream_item(remove(), None, None, 0).is_none(),
            "no grace: kept"
        );
        let (meta, _) = stream_item(remove(), Some(Duration::from_secs(2)), Some(9), 1000).unwrap();
        assert_eq!(
            (meta.kind, meta.not_before_ms, meta.fence),
            (ItemKind::Delete, 3000, None)
        );
        let playlist = Output::Playlist {
            rendition: "source".into(),
            text: "#EXTM3U\n".into(),
        };
        let (meta, _) = stream_item(playlist, None, Some(9), 0).unwrap();
        assert_eq!(
            (meta.key.as_str(), meta.fence),
            ("source/index.m3u8", Some(9))
        );
    }
}
