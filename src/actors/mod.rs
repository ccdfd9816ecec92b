//! The actors: thin shells that receive a message, call the pure core, send a message.
//!
//! ```text
//! RtmpListener ── RtmpConnection (one per TCP connection; never restarted)
//! StreamRegistry (publish path -> live StreamSession; takeover policy)
//! StreamSession (one per live stream; GOP cache, packager, FFmpeg restart policy)
//! └── Transcoder (one FFmpeg child; the session starts a new one when it dies)
//! ```

pub mod registry;
pub mod restart;
pub mod rtmp_conn;
pub mod rtmp_listener;
pub mod session;
pub mod transcoder;
pub mod uploader;

/// One actix arbiter (a thread with its own event loop) per core; connections and sessions
/// are spread over them so Kawa uses every core.
#[derive(Clone)]
pub struct Arbiters(std::sync::Arc<[actix::ArbiterHandle]>);

impl Arbiters {
    /// `count` arbiters (at least one). They run until the process exits.
    pub fn start(count: usize) -> Self {
        let handles: Vec<_> = (0..count.max(1))
            .map(|_| {
                let arbiter = actix::Arbiter::new();
                let handle = arbiter.handle();
                // The arbiter's thread lives on when the `Arbiter` value is dropped.
                std::mem::forget(arbiter);
                handle
            })
            .collect();
        Self(handles.into())
    }

    /// The arbiter for the `n`th connection or session.
    pub fn pick(&self, n: u64) -> &actix::ArbiterHandle {
        &self.0[(n % self.0.len() as u64) as usize]
    }
}
