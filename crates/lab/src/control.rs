//! The lab daemon's control protocol: one JSON request per line on a unix socket, one JSON
//! response line back. The CLI's `lab apply`, `lab delete`, `lab probe`, `lab status` and
//! `lab down` are clients.
//!
//! ```text
//! → {"op":"cluster"}                       ← {"ok":true,"data":<Cluster>}
//! → {"op":"apply","namespaces":[..],"pods":[..],"policies":[..]}
//!                                          ← {"ok":true,"data":{"revision":12}} (agents in sync)
//! → {"op":"delete_policy","id":{..}}       ← {"ok":true,"data":{"revision":13}}
//! → {"op":"delete_policies","ids":[..]}    ← {"ok":true,"data":{"revision":14}} (one write)
//! → {"op":"serve","ports":[{"name":"","protocol":"TCP","port":80}]}
//! → {"op":"status"}   {"op":"ready"}   {"op":"shutdown"}
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use palisade_model::{Endpoint, EndpointId, NamedPort, Namespace, Policy, PolicyId, RuleNames};
use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Answers at once.
    Ping,
    /// Waits until every agent is in sync with the datastore.
    Ready,
    /// The lab's current cluster (namespaces, endpoints, policies).
    Cluster,
    /// Agents' status and the datastore revision.
    Status,
    /// The agents' status records as stored (`key`, `value`: the JSON text), for `palisade
    /// agent status` on a lab whose datastore lives in the daemon.
    AgentStatuses,
    /// Creates or replaces policies and namespaces; replaces the labels and ports of the
    /// lab's pods and creates the pods it does not have (namespace, veth, server); waits
    /// until every agent has programmed the result.
    Apply {
        #[serde(default)]
        namespaces: Vec<Namespace>,
        #[serde(default)]
        pods: Vec<Endpoint>,
        #[serde(default)]
        policies: Vec<Policy>,
        /// The rule names of ClusterNetworkPolicies among `policies` (kept in the datastore,
        /// so that `explain --datastore` can name their rules).
        #[serde(default)]
        rule_names: Vec<(PolicyId, RuleNames)>,
    },
    DeletePolicy {
        id: PolicyId,
    },
    /// Deletes a pod: from the datastore first (waiting until every agent has programmed
    /// that), then its namespace, veth and routes.
    DeletePod {
        id: EndpointId,
    },
    /// Deletes these policies in one datastore write and waits until every agent has
    /// programmed the result (`lab bench` removes a thousand at once).
    DeletePolicies {
        ids: Vec<PolicyId>,
    },
    /// Makes every pod serve these ports too (the prober asks for the ports it probes, so
    /// that a probe measures policy, not whether something listens).
    Serve {
        ports: Vec<NamedPort>,
    },
    /// Stops the agents and the servers, and exits.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response {
            ok: true,
            error: None,
            data,
        }
    }
    pub fn err(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(message.into()),
            data: serde_json::Value::Null,
        }
    }
}

/// The status of one node's agent, as the daemon reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub node: String,
    pub in_sync: bool,
    pub revision: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
}

/// Sends one request and reads the answer; a daemon-side failure becomes
/// [`LabError::Daemon`]. `timeout` bounds the wait for the answer.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<serde_json::Value> {
    let io = |what: &str, e| LabError::io(format!("{what} {}", socket.display()), e);
    let mut stream = UnixStream::connect(socket).map_err(|e| io("cannot connect to", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| io("cannot use", e))?;
    let mut line = serde_json::to_string(request)
        .map_err(|e| LabError::Daemon(format!("cannot encode request: {e}")))?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| io("cannot write to", e))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| io("no answer from", e))?;
    if answer.is_empty() {
        return Err(LabError::Daemon(
            "the daemon closed the connection without answering (see its log)".into(),
        ));
    }
    let response: Response = serde_json::from_str(&answer)
        .map_err(|e| LabError::Daemon(format!("unreadable answer {answer:?}: {e}")))?;
    if response.ok {
        Ok(response.data)
    } else {
        let message = response.error.unwrap_or_else(|| "failed".into());
        let message = message.strip_prefix("lab daemon: ").unwrap_or(&message);
        Err(LabError::Daemon(message.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let r: Request = serde_json::from_str(r#"{"op":"apply","policies":[]}"#).unwrap();
        assert_eq!(
            r,
            Request::Apply {
                namespaces: vec![],
                pods: vec![],
                policies: vec![],
                rule_names: vec![]
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::Ping).unwrap(),
            r#"{"op":"ping"}"#
        );
    }
}
