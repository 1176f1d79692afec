//! The trainer's one error type: a readable message for the CLI's stderr line.

use std::fmt;

/// Something went wrong; the message says what and, where it helps, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainError {
    message: String,
}

impl TrainError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        TrainError {
            message: message.into(),
        }
    }

    /// The message, for tests that check what was said.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TrainError {}

/// Shorthand used across the trainer.
pub type Result<T> = std::result::Result<T, TrainError>;

/// Formats an error with its context: `bail!("cannot read {}", path)`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::TrainError::new(format!($($arg)*)))
    };
}
