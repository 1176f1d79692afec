//! A hook for crash tests: `KINGLET_TRAIN_PAUSE=POINT:N` makes the trainer
//! stop for good the Nth time it reaches POINT, after saying so on stderr,
//! so that a test can SIGKILL it at exactly that moment instead of guessing
//! with timers (`tests/crash_safety.rs`). Without the variable a point costs
//! one load of a `OnceLock`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use kinglet_tools::io::Stage;

/// The environment variable naming the point and the hit to stop at.
pub const VAR: &str = "KINGLET_TRAIN_PAUSE";

/// The places a run can be stopped at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// A step's update is done; no file is being written.
    AfterStep,
    /// An atomic write's temporary file exists and is still empty.
    TempCreated,
    /// The temporary file holds every byte, fsynced, not yet renamed.
    TempWritten,
    /// The temporary file has been renamed over the target; the directory
    /// is not yet fsynced.
    Renamed,
}

impl Point {
    /// Every point, for parsing and for tests.
    pub const ALL: [Point; 4] = [
        Point::AfterStep,
        Point::TempCreated,
        Point::TempWritten,
        Point::Renamed,
    ];

    /// The point's name in [`VAR`].
    pub fn name(self) -> &'static str {
        match self {
            Point::AfterStep => "after-step",
            Point::TempCreated => "temp-created",
            Point::TempWritten => "temp-written",
            Point::Renamed => "renamed",
        }
    }
}

/// The atomic writer's stages are the points of a checkpoint write.
impl From<Stage> for Point {
    fn from(stage: Stage) -> Point {
        match stage {
            Stage::TempCreated => Point::TempCreated,
            Stage::TempWritten => Point::TempWritten,
            Stage::Renamed => Point::Renamed,
        }
    }
}

/// The line printed on stderr before stopping.
pub fn announcement(point: Point) -> String {
    format!("kinglet-train: paused at {} ({VAR})", point.name())
}

/// The point and hit number [`VAR`] asks for, if any (read once).
fn target() -> Option<(Point, u64)> {
    static TARGET: OnceLock<Option<(Point, u64)>> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let value = std::env::var(VAR).ok()?;
        let (name, hit) = value.rsplit_once(':')?;
        let point = Point::ALL.into_iter().find(|p| p.name() == name)?;
        Some((point, hit.parse().ok()?))
    })
}

/// Stops here for good if this is the hit of `point` that [`VAR`] names.
pub fn at(point: Point) {
    let Some((wanted, hit)) = target() else {
        return;
    };
    if wanted != point {
        return;
    }
    static HITS: AtomicU64 = AtomicU64::new(0);
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 == hit {
        eprintln!("{}", announcement(point));
        loop {
            std::thread::park();
        }
    }
}
