//! What a crashed stream session restarts from. An encoder sends its codec configuration
//! and metadata once, at the start; the playlists' state is saved after every segment
//! (the same [`PathState`] a cluster keeps in Redis). A restarted core goes on from them:
//! the media sequence moves forward, the next segment carries a DISCONTINUITY, and the
//! publisher's next frames are packaged as if it had just reconnected.

use time::OffsetDateTime;

use super::core::{Action, StreamCore};
use crate::config::HlsSettings;
use crate::hls::resume::PathState;
use crate::media::frame::{CodecConfig, Frame};

#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// The playlists after the newest complete segment.
    pub state: Option<PathState>,
    pub config: CodecConfig,
    pub expect_video: Option<bool>,
}

impl Checkpoint {
    /// A core that goes on from this checkpoint, with file names under `epoch` (new
    /// names: the crashed core may have written parts of its next segment already).
    /// `crashed` lends only its generation counter and GOP cache; the cached GOP (kept
    /// only while a ladder encodes) is replayed so the restart has no gap, and whatever
    /// else the crashed core held is dropped.
    pub fn restart(
        &self,
        hls: HlsSettings,
        epoch: u64,
        crashed: &StreamCore,
        now: OffsetDateTime,
    ) -> (StreamCore, Vec<Action>) {
        let mut core = StreamCore::new(hls, epoch);
        core.continue_generations(crashed.next_generation());
        if let Some(state) = self.state.clone() {
            core.packager.resume(state);
        }
        let mut actions = core.on_config(self.config.clone());
        if let Some(has_video) = self.expect_video {
            core.set_expect_video(has_video);
        }
        for frame in replayable(crashed.cached_gop()) {
            actions.extend(core.on_frame(frame, now));
        }
        (core, actions)
    }
}

/// The GOP from its keyframe (audio cached before it is of no use to a new segment),
/// or all of it for an audio-only stream.
fn replayable(gop: Vec<Frame>) -> impl Iterator<Item = Frame> {
    let has_video = gop.iter().any(|f| matches!(f, Frame::Video(_)));
    gop.into_iter()
        .skip_while(move |f| has_video && !matches!(f, Frame::Video(v) if v.keyframe))
}
