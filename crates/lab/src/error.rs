//! The lab's error type: each variant names the command, file, namespace or object it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("lab name {name:?} is not valid: {why}")]
    Name { name: String, why: String },
    #[error("cannot place the pods: {0}")]
    Plan(String),
    #[error("network namespace {name}: {source}")]
    Netns {
        name: String,
        source: std::io::Error,
    },
    #[error("lab {name:?} is already up; `palisade lab down --name {name}` first")]
    AlreadyUp { name: String },
    #[error("lab daemon: {0}")]
    Daemon(String),
    #[error("pod {pod}: CNI plugin {plugin} failed: {message}")]
    Cni {
        pod: String,
        plugin: String,
        message: String,
    },
    #[error("datastore: {0}")]
    Store(#[from] palisade_store::StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;
