//! `palisade controller`: watch the Kubernetes API and keep the datastore in step with it
//! (Namespaces, Pods, NetworkPolicies, ClusterNetworkPolicies, Nodes), with leader election between replicas, Prometheus
//! metrics and health endpoints. The logic lives in `palisade-kube`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use palisade_kube::startup::{self, Requirements};
use palisade_kube::{ControllerConfig, ElectionConfig, Elector, Metrics};
use tokio::sync::watch;

use super::datastore_args::DatastoreArgs;

const AFTER_HELP: &str = "\
Watches Namespaces, Pods, NetworkPolicies, ClusterNetworkPolicies
(policy.networking.k8s.io/v1alpha2) and Nodes and writes them into the datastore as
`palisade apply` would, with the owner `palisade-controller`. Objects stored by hand with
`palisade apply` are never touched (a clash is logged and counted). Pods without an IP,
finished or terminating pods and hostNetwork pods are not endpoints. Invalid objects are
logged, counted (palisade_controller_invalid_object), reported as a Warning Event on the
object (unless --no-events) and not stored.

ClusterNetworkPolicy is a CRD (deploy/05-crd-clusternetworkpolicy.yaml). Without it the
controller warns once (palisade_controller_crd_missing) and goes on without
ClusterNetworkPolicies; restart it after installing the CRD.

Several replicas may run: they elect a leader through a coordination.k8s.io/v1 Lease and
only the leader writes; a standby takes over within the lease duration.

At start-up the controller checks what it cannot work without and exits 1 with what to do
when something is missing: the lease namespace must exist (create it, or pass
--lease-namespace or --no-leader-election), and RBAC must let it list and watch Namespaces,
Pods, NetworkPolicies, Nodes and (if the CRD is installed) ClusterNetworkPolicies and get its
Lease.

HTTP on --metrics-addr: /metrics (Prometheus), /healthz, /readyz. Logging: RUST_LOG
(default info).

Example:
  palisade controller --datastore etcd://10.0.0.10:2379 --etcd-ca ca.pem \\
      --etcd-cert client.pem --etcd-key client-key.pem --metrics-addr 0.0.0.0:9096";

/// How long the start-up checks may take before the API server counts as unreachable.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `palisade controller`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// kubeconfig file. Without it: the in-cluster service account, else $KUBECONFIG or
    /// ~/.kube/config.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    datastore: DatastoreArgs,
    /// Only namespaces matching this Kubernetes label selector (e.g. `env=prod`,
    /// `team in (a,b)`), with their pods and policies, are written.
    #[arg(long, value_name = "SELECTOR", value_parser = label_selector)]
    namespace_selector: Option<String>,
    /// Name of the Lease used for leader election.
    #[arg(long, default_value = "palisade-controller", value_name = "NAME")]
    lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else palisade-system).
    #[arg(long, value_name = "NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's name in the Lease (default: the host name, which in a pod is its name).
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
    /// Seconds a Lease stays valid without renewal; a standby takes over after that.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    lease_duration: u64,
    /// Run without leader election (one replica only!).
    #[arg(long)]
    no_leader_election: bool,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9096", value_name = "ADDR")]
    metrics_addr: SocketAddr,
    /// Do not record Warning Events on invalid objects (by default the leader does).
    #[arg(long)]
    no_events: bool,
    /// Seconds between full resyncs of the datastore (repairs keys changed behind our back).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    resync_interval: u64,
}

pub fn run(args: Args) -> Result<ExitCode> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Already initialised is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn run_async(args: Args) -> Result<ExitCode> {
    // The kubeconfig first: reading it needs no network, and a bad one is the likelier
    // mistake. Its error already names its cause, so it is not chained again.
    let client = palisade_kube::connect::client(args.kubeconfig.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("cannot set up the Kubernetes client: {e}"))?;
    let lease_namespace = args
        .lease_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "palisade-system".to_string());
    // What the controller cannot work without is asked once, now: a missing namespace or
    // grant ends the process with what to do, instead of a warning every few seconds.
    let requirements = Requirements {
        lease: (!args.no_leader_election)
            .then(|| (lease_namespace.clone(), args.lease_name.clone())),
    };
    match tokio::time::timeout(STARTUP_TIMEOUT, startup::check(&client, &requirements)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => anyhow::bail!("cannot start: {e}"),
        Err(_) => anyhow::bail!(
            "cannot start: the Kubernetes API server did not answer within {} s",
            STARTUP_TIMEOUT.as_secs()
        ),
    }
    let store = args.datastore.connect().await?;
    let metrics = Metrics::new();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (addr, server) =
        palisade_kube::metrics::serve(args.metrics_addr, metrics.clone(), shutdown.clone())
            .await
            .with_context(|| format!("cannot listen on --metrics-addr {}", args.metrics_addr))?;
    tracing::info!(%addr, datastore = %store.describe(), "palisade controller starting");

    tokio::spawn(async move {
        crate::signals::wait_for_shutdown().await;
        tracing::info!("shutting down");
        shutdown_tx.send_replace(true);
    });

    let identity = match args.identity {
        Some(i) => i,
        None => hostname().context("cannot tell the host name; pass --identity")?,
    };
    let (leader_tx, leader) = watch::channel(args.no_leader_election);
    let elector = if args.no_leader_election {
        None
    } else {
        let namespace = lease_namespace;
        let duration = Duration::from_secs(args.lease_duration.max(3));
        let cfg = ElectionConfig {
            lease_duration: duration,
            renew_deadline: duration * 2 / 3,
            retry_period: (duration / 7).max(Duration::from_millis(500)),
            ..ElectionConfig::new(&args.lease_name, &namespace, &identity)
        };
        tracing::info!(lease = %args.lease_name, %namespace, %identity, "leader election");
        Some(tokio::spawn(
            Elector::new(client.clone(), cfg).run(leader_tx, shutdown.clone()),
        ))
    };

    let config = ControllerConfig {
        namespace_selector: args.namespace_selector,
        resync_interval: Duration::from_secs(args.resync_interval.max(1)),
        events_instance: (!args.no_events).then_some(identity),
        ..Default::default()
    };
    palisade_kube::run(client, store, config, metrics, leader, shutdown).await;
    if let Some(e) = elector {
        let _ = e.await;
    }
    let _ = server.await;
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> Result<String> {
    if let Ok(h) = std::env::var("HOSTNAME") {
        if !h.trim().is_empty() {
            return Ok(h.trim().to_string());
        }
    }
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read /proc/sys/kernel/hostname")?;
    Ok(h.trim().to_string())
}

/// Checks the syntax of a Kubernetes label selector (`a=b,c!=d,e in (x,y),f notin (z),g,!h`)
/// so that a typo is refused at once rather than by every list call of the API server.
fn label_selector(text: &str) -> std::result::Result<String, String> {
    let bad = |why: &str| format!("bad label selector {text:?}: {why}");
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    };
    let value_ok = |v: &str| {
        v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    // Split on commas outside parentheses.
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(bad("unbalanced parentheses"));
        }
    }
    if depth != 0 {
        return Err(bad("unbalanced parentheses"));
    }
    parts.push(&text[start..]);
    for part in parts {
        let part = part.trim();
        let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
        let ok = if let [key, rest] = words[..] {
            let rest = rest.trim();
            let set = rest
                .strip_prefix("in")
                .or_else(|| rest.strip_prefix("notin"))
                .map(str::trim)
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'));
            match set {
                Some(values) => {
                    key_ok(key)
                        && values
                            .split(',')
                            .all(|v| !v.trim().is_empty() && value_ok(v.trim()))
                }
                None => false,
            }
        } else if let Some((k, v)) = part
            .split_once("!=")
            .or_else(|| part.split_once("=="))
            .or_else(|| part.split_once('='))
        {
            key_ok(k.trim()) && value_ok(v.trim())
        } else {
            key_ok(part.strip_prefix('!').unwrap_or(part))
        };
        if !ok {
            return Err(bad(&format!(
                "cannot read {part:?} (expected key=value, key!=value, key in (a,b), key notin (a,b), key or !key)"
            )));
        }
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod selector_tests {
    use super::label_selector;

    #[test]
    fn label_selectors_are_checked() {
        for good in [
            "env=prod",
            "env==prod,tier!=db",
            "team in (a,b)",
            "team notin (a, b),app",
            "!legacy,example.com/owner=x",
        ] {
            assert_eq!(label_selector(good).as_deref(), Ok(good), "{good}");
        }
        for bad in [
            "a in (", "a in b", "=x", "a=b,,c", "a b", "a in ()", "a=b c",
        ] {
            assert!(label_selector(bad).is_err(), "{bad} accepted");
        }
    }
}
