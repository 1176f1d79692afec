//! The trainer's one error type: what kind of thing went wrong (a variant
//! that callers and tests match on) and a readable message for the CLI's
//! one stderr line.

use kinglet::printable::Printable;
use std::fmt;
use std::io::Write;

/// Everything that can go wrong in the trainer. Each variant carries the
/// message the CLI prints, which says what and, where it helps, what to do.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainError {
    /// A flag, a model shape or a training setting cannot be used.
    Settings(String),
    /// The corpus cannot be trained on: empty, not UTF-8, too short for the
    /// context, or a character outside the vocabulary.
    Corpus(String),
    /// A file or directory could not be read, written or created.
    Io(String),
    /// The bytes are not a kinglet-train checkpoint.
    NotACheckpoint(String),
    /// A checkpoint of a format version this trainer does not read.
    CheckpointVersion(String),
    /// A checkpoint that ends early or fails its checksum: a torn or
    /// damaged file.
    CheckpointDamaged(String),
    /// A checkpoint whose checksum holds but whose contents do not fit
    /// together (config, vocabulary, QAT settings, sizes).
    BadCheckpoint(String),
    /// `--resume` with a checkpoint of another model, corpus or QAT setting.
    ResumeMismatch(String),
    /// The loss, the gradient norm or a weight stopped being finite.
    Diverged(String),
    /// A checkpoint cannot be exported as a model file.
    Export(String),
    /// The PyTorch reference dump is unusable, or the trainer differs from it.
    Reference(String),
    /// Fetching the TinyShakespeare corpus failed.
    Download(String),
    /// What a run needs does not fit the memory budget.
    Memory(String),
    /// In an MPI run, another rank failed and printed its error; this rank
    /// only ends with a failure status.
    OtherRank(String),
}

impl TrainError {
    /// The message, without the kind.
    pub fn message(&self) -> &str {
        self.parts().1
    }

    /// The same kind of error with its message rewritten by `f`, e.g. to
    /// name the file it concerns.
    pub fn map_message(self, f: impl FnOnce(&str) -> String) -> Self {
        let (kind, message) = self.parts();
        kind(f(message))
    }

    /// The same kind of error, its message prefixed with `prefix: `.
    pub fn context(self, prefix: impl fmt::Display) -> Self {
        self.map_message(|m| format!("{prefix}: {m}"))
    }

    /// Prints the CLI's one error line, `kinglet-train: error: …`, on
    /// stderr in one write (whatever the message holds: paths, file
    /// contents), so that MPI, which forwards each rank's output, cannot
    /// cut it in pieces.
    pub fn print(&self) {
        let line = format!("kinglet-train: error: {}\n", Printable(&self.to_string()));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn parts(&self) -> (fn(String) -> TrainError, &str) {
        use TrainError::*;
        match self {
            Settings(m) => (Settings, m),
            Corpus(m) => (Corpus, m),
            Io(m) => (Io, m),
            NotACheckpoint(m) => (NotACheckpoint, m),
            CheckpointVersion(m) => (CheckpointVersion, m),
            CheckpointDamaged(m) => (CheckpointDamaged, m),
            BadCheckpoint(m) => (BadCheckpoint, m),
            ResumeMismatch(m) => (ResumeMismatch, m),
            Diverged(m) => (Diverged, m),
            Export(m) => (Export, m),
            Reference(m) => (Reference, m),
            Download(m) => (Download, m),
            Memory(m) => (Memory, m),
            OtherRank(m) => (OtherRank, m),
        }
    }
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for TrainError {}

/// Shorthand used across the trainer.
pub type Result<T> = std::result::Result<T, TrainError>;

/// Returns an error of kind `$kind` with a formatted message:
/// `bail!(Io, "cannot read {}", path.display())`.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::error::TrainError::$kind(format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_kind() {
        let e = TrainError::Corpus("the file is empty".into()).context("a.txt");
        assert_eq!(e, TrainError::Corpus("a.txt: the file is empty".into()));
        assert_eq!(e.to_string(), "a.txt: the file is empty");
        let e =
            TrainError::Diverged("loss became NaN".into()).map_message(|m| format!("{m}; kept"));
        assert_eq!(e, TrainError::Diverged("loss became NaN; kept".into()));
    }
}
