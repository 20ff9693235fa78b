//! etcd-client errors sorted into [`StoreError`]s that say what to do.

use super::EtcdConfig;
use crate::error::StoreError;

pub(crate) fn unavailable(config: &EtcdConfig, reason: &str) -> StoreError {
    StoreError::Unavailable {
        endpoints: config.describe(),
        reason: reason.to_string(),
    }
}

/// Sorts etcd-client errors into ours: transport trouble is `Unavailable`, known server
/// refusals get their own variant, the rest is `Backend`.
pub(crate) fn map_error(config: &EtcdConfig, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    use tonic::Code;
    let endpoints = config.describe();
    match e {
        E::TransportError(t) => unavailable(config, &format!("transport: {t}")),
        E::IoError(io) => unavailable(config, &format!("i/o: {io}")),
        E::GRpcStatus(status) => {
            let msg = status.message().to_string();
            match status.code() {
                Code::DeadlineExceeded | Code::Cancelled if msg.contains("imeout") => unavailable(
                    config,
                    &format!("no answer within {:?}", config.request_timeout),
                ),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
                    unavailable(config, &format!("{:?}: {msg}", status.code()))
                }
                Code::Unknown if msg.contains("transport") || msg.contains("connection") => {
                    unavailable(config, &msg)
                }
                _ if msg.contains("user name is empty") => StoreError::Backend {
                    endpoints,
                    reason: "authentication failed: etcd requires a user (give --etcd-user and a password)".into(),
                },
                Code::Unauthenticated | Code::PermissionDenied => StoreError::Backend {
                    endpoints,
                    reason: format!(
                        "authentication failed: {msg} (check --etcd-user and the password)"
                    ),
                },
                Code::InvalidArgument
                    if msg.contains("too many operations") || msg.contains("too large") =>
                {
                    StoreError::BatchTooLarge {
                        ops: 0,
                        reason: format!(
                            "{msg} (start etcd with a larger --max-txn-ops / --max-request-bytes)"
                        ),
                    }
                }
                _ => StoreError::Backend {
                    endpoints,
                    reason: format!("{:?}: {msg}", status.code()),
                },
            }
        }
        E::WatchError(w) => unavailable(config, &format!("watch: {w}")),
        E::InvalidArgs(a) => StoreError::Config(a),
        E::InvalidUri(u) => StoreError::Config(format!("bad endpoint in {endpoints}: {u}")),
        other => StoreError::Backend {
            endpoints,
            reason: other.to_string(),
        },
    }
}
