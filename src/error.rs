//! The one mapping from failures to what the user sees and the documented exit codes:
//! 0 green, 1 red or refused, 130 interrupted, 2 usage.

/// A refusal or failure worth one line to the user: lowercase, saying what to do next.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    pub fn refused(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: 1 }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: 2 }
    }
}

impl From<odu_core::IngestError> for CliError {
    fn from(e: odu_core::IngestError) -> Self {
        CliError::refused(e.to_string())
    }
}

pub type CliResult<T> = Result<T, CliError>;
