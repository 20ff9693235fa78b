//! Running an agent for real: the kernel dataplane (optionally inside a network namespace),
//! the metrics server and the loop, until a shutdown signal.

use std::future::Future;
use std::sync::Arc;

use palisade_dataplane::{
    iptables_dataplane, nft_dataplane_netlink, CommandRunner, Dataplane, ProcessRunner,
    RetryPolicy, ThreadSleeper,
};
use palisade_store::Datastore;

use crate::agent::{Agent, AgentError};
use crate::config::{AgentConfig, DataplaneKind};
use crate::server;

/// The kernel dataplane `config` asks for, running its commands through `runner`, which
/// must run them in `config.netns` (or the current namespace). nftables sends element-only
/// changes over netlink into that namespace and everything else through `runner`.
pub fn build_dataplane(config: &AgentConfig, runner: Arc<dyn CommandRunner>) -> Box<dyn Dataplane> {
    let sleeper = Arc::new(ThreadSleeper);
    match config.dataplane {
        DataplaneKind::Iptables => Box::new(iptables_dataplane(
            config.render.clone(),
            runner,
            sleeper,
            RetryPolicy::default(),
        )),
        DataplaneKind::Nftables => Box::new(nft_dataplane_netlink(
            config.render.clone(),
            config.netns.clone(),
            runner,
            sleeper,
            RetryPolicy::default(),
        )),
    }
}

/// Runs real commands, inside `config.netns` if set.
pub fn kernel_runner(config: &AgentConfig) -> Arc<dyn CommandRunner> {
    match &config.netns {
        Some(ns) => Arc::new(ProcessRunner::in_netns(ns.clone())),
        None => Arc::new(ProcessRunner::new()),
    }
}

/// Runs the agent against the kernel with its metrics server until `shutdown` completes.
pub async fn run_agent(
    config: AgentConfig,
    store: Arc<dyn Datastore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    config.validate()?;
    let runner = kernel_runner(&config);
    let dataplane = build_dataplane(&config, Arc::clone(&runner));
    let mut agent = Agent::new(config.clone(), store, dataplane)?.with_kernel(runner);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_task = None;
    if let Some(addr) = config.metrics_addr {
        let listener = server::bind(addr)
            .await
            .map_err(|source| AgentError::Server {
                addr: addr.to_string(),
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| AgentError::Server {
            addr: addr.to_string(),
            source,
        })?;
        tracing::info!(%bound, "serving /metrics, /healthz, /readyz and /counters");
        agent = agent.with_metrics_addr(bound.to_string());
        let shared = agent.shared();
        let mut rx = stop_rx.clone();
        server_task = Some(tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            server::serve(listener, shared, stop).await
        }));
    }
    let result = agent.run(shutdown).await;
    let _ = stop_tx.send(true);
    if let Some(t) = server_task {
        let _ = t.await;
    }
    result
}
