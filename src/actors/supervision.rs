//! What every supervisor shares: restart intensity (OTP's "at most `max` restarts in
//! `period`, else escalate"), the panic guard actix lacks, and the fault-injection points
//! the crash tests arm.
//!
//! actix runs an actor as a task on its arbiter: a panic in a handler ends the task
//! without `stopped`, and an actix `Supervisor` (which restarts only an actor that
//! stopped) dies with it. So each actor kind runs its handlers through [`guard`] and turns
//! a panic into its own restart or stop, as the tree in `docs/DESIGN.md` says.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::metrics::METRICS;

/// The kinds of actor in the tree (the `actor` label of the panic and restart metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    Registry,
    Session,
    Transcoder,
    Uploader,
    Connection,
}

impl ActorKind {
    pub const ALL: [ActorKind; 5] = [
        ActorKind::Registry,
        ActorKind::Session,
        ActorKind::Transcoder,
        ActorKind::Uploader,
        ActorKind::Connection,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ActorKind::Registry => "registry",
            ActorKind::Session => "session",
            ActorKind::Transcoder => "transcoder",
            ActorKind::Uploader => "uploader",
            ActorKind::Connection => "connection",
        }
    }
}

/// A supervisor's restart intensity: more than `max` restarts within `period` and it
/// gives up on the child and escalates to its own parent.
#[derive(Debug, Clone)]
pub struct Intensity {
    max: usize,
    period: Duration,
    recent: VecDeque<Instant>,
}

impl Intensity {
    pub fn new(max: usize, period: Duration) -> Self {
        Self {
            max,
            period,
            recent: VecDeque::new(),
        }
    }

    /// A child failed at `now`: whether it may be restarted (and the restart is counted),
    /// or the supervisor must escalate.
    pub fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.period)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.max {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// Runs one handler of a `kind` actor; a panic comes back as its message, logged by the
/// caller, and counted in `kawa_actor_panics_total`.
pub fn guard<R>(kind: ActorKind, handler: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)).map_err(|panic| {
        METRICS
            .actor_panics
            .with_label_values(&[kind.label()])
            .inc();
        crate::telemetry::panic_message(&*panic)
    })
}

/// A supervisor restarted a `kind` child.
pub fn restarted(kind: ActorKind) {
    METRICS
        .actor_restarts
        .with_label_values(&[kind.label()])
        .inc();
}

static ROOT: tokio::sync::Notify = tokio::sync::Notify::const_new();
static ESCALATED: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// A top-level supervisor (the registry) gave up: the root shuts Kawa down as SIGTERM
/// would (every stream ends with ENDLIST) and exits non-zero, so the service manager
/// starts it again and, in a cluster, other nodes take the streams over.
pub fn escalate_to_root(what: &'static str) {
    if ESCALATED.set(what).is_ok() {
        tracing::error!(
            supervisor = what,
            "a top-level supervisor exceeded its restart intensity; shutting down"
        );
        ROOT.notify_one();
    }
}

/// Resolves when a top-level supervisor escalated, with its name.
pub async fn escalated() -> &'static str {
    loop {
        if let Some(what) = ESCALATED.get() {
            return what;
        }
        ROOT.notified().await;
    }
}

/// A place where the crash tests can make a `kind` actor panic (for `path`, the stream
/// it serves, or "" for actors that serve none). Compiled to nothing without the
/// `fault-injection` feature, which only the test suite turns on.
#[inline(always)]
pub fn fault_point(kind: ActorKind, path: &str) {
    fault_point_in(kind, path, "");
}

/// [`fault_point`] in the handler named `handler`: a fault armed `during` it fires only
/// here (a crash test that needs one moment of an actor's work, not the next one).
pub fn fault_point_in(kind: ActorKind, path: &str, handler: &str) {
    #[cfg(feature = "fault-injection")]
    faults::point(kind, path, handler);
    #[cfg(not(feature = "fault-injection"))]
    let _ = (kind, path, handler);
}

#[cfg(feature = "fault-injection")]
pub mod faults {
    //! Armed over `POST /debug/faults` (admin token): each armed fault panics the next
    //! handler of its actor kind that runs for its path (any path when it names none).

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::ActorKind;

    #[derive(Debug, Clone, serde::Deserialize)]
    pub struct Fault {
        pub actor: ActorKind,
        #[serde(default)]
        pub path: Option<String>,
        /// Only in this handler (see `fault_point_in`); any when absent.
        #[serde(default)]
        pub during: Option<String>,
    }

    static ARMED: AtomicUsize = AtomicUsize::new(0);
    static FAULTS: Mutex<Vec<Fault>> = Mutex::new(Vec::new());

    pub fn arm(fault: Fault) {
        FAULTS.lock().unwrap_or_else(|e| e.into_inner()).push(fault);
        ARMED.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn point(kind: ActorKind, path: &str, handler: &str) {
        // The hot path (every frame) reads one atomic when nothing is armed.
        if ARMED.load(Ordering::Relaxed) == 0 {
            return;
        }
        let hit = {
            let mut faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
            let found = faults.iter().position(|f| {
                f.actor == kind
                    && f.path.as_deref().is_none_or(|p| p == path)
                    && f.during.as_deref().is_none_or(|h| h == handler)
            });
            found.map(|i| faults.remove(i))
        };
        if hit.is_some() {
            ARMED.fetch_sub(1, Ordering::SeqCst);
            panic!("fault injected into a {} actor", kind.label());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intensity_allows_max_restarts_per_period_then_escalates() {
        let mut intensity = Intensity::new(3, Duration::from_secs(60));
        let start = Instant::now();
        for i in 0..3 {
            assert!(intensity.allow(start + Duration::from_secs(i)));
        }
        assert!(!intensity.allow(start + Duration::from_secs(10)));
        // The refusal is not counted: once the first restart leaves the period, one more.
        assert!(intensity.allow(start + Duration::from_secs(61)));
        assert!(!intensity.allow(start + Duration::from_secs(61)));
    }

    #[test]
    fn a_guarded_panic_comes_back_as_its_message() {
        let result: Result<(), String> = guard(ActorKind::Session, || panic!("boom {}", 7));
        assert_eq!(result.unwrap_err(), "boom 7");
        assert_eq!(guard(ActorKind::Session, || 5), Ok(5));
    }
}
