//! Counters read straight from the kernel, without a running agent (`palisade counters
//! --netns NAME --dataplane X`): the node's desired state is computed from a datastore listing
//! (as the agent would), rendered to know which rule is which, and the kernel's counters of
//! those rules are read. Nothing is written.

use std::sync::Arc;

use palisade_calc::{Calculator, DesiredState};
use palisade_dataplane::ipt::IptablesBackend;
use palisade_dataplane::nft::NftBackend;
use palisade_dataplane::{
    iptables_dataplane, nft_dataplane, CommandRunner, DataplaneError, NoopRunner, RetryPolicy,
    RuleCounter, Table, ThreadSleeper,
};
use palisade_store::{keys, Datastore, Record, StoreError, SyncEvent};

use crate::config::{AgentConfig, DataplaneKind};
use crate::report::CountersReport;
use crate::status;
use crate::translate::{Translated, Translator};

#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error("cannot list the datastore: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read counters from the kernel: {0}")]
    Dataplane(#[from] DataplaneError),
}

/// The desired state of `config.node` as the datastore holds it now, and its revision.
pub async fn desired_state(
    config: &AgentConfig,
    store: &dyn Datastore,
) -> Result<(DesiredState, i64), DirectError> {
    let listing = store.list(keys::ROOT).await?;
    let mut translator = Translator::new();
    let mut updates = Vec::new();
    for kv in listing.items {
        let Ok(record) = Record::decode(&kv.key, &kv.value) else {
            continue;
        };
        let ev = SyncEvent::Update {
            key: kv.key,
            value: Some(record),
            revision: kv.mod_revision,
        };
        if let Translated::Update(u) = translator.translate(ev) {
            updates.push(u);
        }
    }
    let mut calc = Calculator::new(config.calc_config());
    calc.apply_all(updates);
    Ok((calc.state().clone(), listing.revision))
}

/// Reads the counters of the rules `state` renders to, through `runner`.
pub fn kernel_counters(
    config: &AgentConfig,
    state: &DesiredState,
    runner: Arc<dyn CommandRunner>,
) -> Result<Vec<RuleCounter>, DataplaneError> {
    let sleeper = Arc::new(ThreadSleeper);
    match config.dataplane {
        DataplaneKind::Iptables => {
            // Render with a no-op runner, read with the real one: nothing is written.
            let mut dp = iptables_dataplane(
                config.render.clone(),
                Arc::new(NoopRunner),
                sleeper.clone(),
                RetryPolicy::none(),
            );
            let program = dp.render(state)?;
            let backend = IptablesBackend::with_families(families(config));
            Table::new(backend, program, runner, sleeper, RetryPolicy::none()).counters()
        }
        DataplaneKind::Nftables => {
            let mut dp = nft_dataplane(
                config.render.clone(),
                Arc::new(NoopRunner),
                sleeper.clone(),
                RetryPolicy::none(),
            );
            let program = dp.render(state)?;
            Table::new(
                NftBackend::new(),
                program,
                runner,
                sleeper,
                RetryPolicy::none(),
            )
            .counters()
        }
    }
}

fn families(config: &AgentConfig) -> Vec<palisade_dataplane::ipt::Family> {
    let mut f = Vec::new();
    if config.render.ipv4 {
        f.push(palisade_dataplane::ipt::Family::V4);
    }
    if config.render.ipv6 {
        f.push(palisade_dataplane::ipt::Family::V6);
    }
    f
}

/// The whole report for `config.node`, read from the kernel through `runner`.
pub async fn report(
    config: &AgentConfig,
    store: &dyn Datastore,
    runner: Arc<dyn CommandRunner>,
) -> Result<CountersReport, DirectError> {
    let (state, revision) = desired_state(config, store).await?;
    let cfg = config.clone();
    let st = state.clone();
    let counters = tokio::task::spawn_blocking(move || kernel_counters(&cfg, &st, runner))
        .await
        .map_err(|e| DataplaneError::InvalidProgram {
            object: "counter task".into(),
            reason: e.to_string(),
        })??;
    Ok(CountersReport::new(
        &config.node,
        config.dataplane.as_str(),
        revision,
        status::summarize(&state),
        &counters,
    ))
}
