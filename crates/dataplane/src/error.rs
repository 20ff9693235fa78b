//! Errors of the dataplane, naming the command, chain, set or line they are about.

use thiserror::Error;

use crate::runner::RunnerError;

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error("command `{command}` failed with status {status}: {stderr}")]
    CommandFailed {
        command: String,
        status: i32,
        stderr: String,
    },
    #[error("cannot parse output of `{command}` at line {line_no}: {reason}: {line}")]
    Parse {
        command: String,
        line_no: usize,
        line: String,
        reason: String,
    },
    #[error("invalid rendered program: {object}: {reason}")]
    InvalidProgram { object: String, reason: String },
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("rendering failed: {0}")]
    Render(#[from] palisade_render::RenderError),
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        attempts: u32,
        last: Box<DataplaneError>,
    },
}

impl DataplaneError {
    pub(crate) fn invalid(object: impl Into<String>, reason: impl Into<String>) -> Self {
        DataplaneError::InvalidProgram {
            object: object.into(),
            reason: reason.into(),
        }
    }
}
