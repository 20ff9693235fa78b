//! `palisade lab daemon --name NAME` (hidden): the lab's background process, started by
//! `lab up`. With the embedded datastore, one agent per node runs inside it (the agent's own
//! loop, programming the node's namespace, with `/counters` on a free loopback port).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use palisade_agent::{AgentConfig, DataplaneKind};
use palisade_lab::agents::{AgentLauncher, AgentSpec, RunningAgent};
use palisade_lab::LabNames;
use palisade_store::Datastore;

pub fn run(names: LabNames) -> Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    palisade_lab::daemon::run(names, Some(Box::new(Launcher)))?;
    Ok(ExitCode::SUCCESS)
}

struct Launcher;

struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Handle,
}

impl AgentLauncher for Launcher {
    fn start(
        &self,
        spec: &AgentSpec,
        store: Arc<dyn Datastore>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Box<dyn RunningAgent>, String> {
        let mut config = AgentConfig::new(spec.node.clone());
        config.dataplane = spec
            .dataplane
            .parse::<DataplaneKind>()
            .map_err(|e| e.to_string())?;
        config.netns = Some(spec.netns.clone());
        config.render.endpoint_match = spec
            .endpoint_match
            .as_str()
            .parse()
            .map_err(|e: palisade_render::RenderError| e.to_string())?;
        config.metrics_addr = "127.0.0.1:0".parse().ok();
        if spec.revoke {
            config.established = palisade_agent::revoke::Established::Revoke;
        }
        // iptables always walks chains.
        if let Some(layout) = spec
            .nft_layout
            .as_ref()
            .filter(|_| spec.dataplane == "nftables")
        {
            config.render.nft_layout = layout
                .parse()
                .map_err(|e: palisade_render::RenderError| e.to_string())?;
        }
        config.validate().map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let node = spec.node.clone();
        let task = runtime.spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(e) = palisade_agent::run::run_agent(config, store, shutdown).await {
                tracing::error!(node = %node, "agent stopped: {e}");
            }
        });
        Ok(Box::new(InProcess {
            stop: Some(tx),
            task,
            runtime: runtime.clone(),
        }))
    }
}

impl RunningAgent for InProcess {
    fn stop(mut self: Box<Self>) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task;
        let _ = self
            .runtime
            .block_on(async move { tokio::time::timeout(Duration::from_secs(5), task).await });
    }
}
