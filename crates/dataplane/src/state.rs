//! The dataplane as the agent uses it: give it a [`DesiredState`], it renders (through
//! `palisade_render`) and reconciles; [`Dataplane`] hides which backend.

use std::sync::Arc;

use palisade_calc::DesiredState;
use palisade_render::{build, RenderConfig, RenderError};

use crate::error::DataplaneError;
use crate::from_ir::{iptables_program, nft_program, SetCache};
use crate::ipt::{IpsetSpec, IptablesBackend, IptablesProgram};
use crate::nft::{NftBackend, NftProgram, NftSet};
use crate::origins::rule_origins;
use crate::report::{ApplyReport, RuleCounter};
use crate::retry::{RetryPolicy, Sleeper};
use crate::runner::CommandRunner;
use crate::table::{Backend, Table};

/// A node's dataplane, whatever the backend. Object safe; the agent calls it from a
/// blocking task.
pub trait Dataplane: Send {
    /// `iptables` or `nftables`.
    fn backend_name(&self) -> &'static str;
    /// Renders `state` and makes the kernel match it.
    fn apply_state(&mut self, state: &DesiredState) -> Result<ApplyReport, DataplaneError>;
    /// Re-reads the kernel and repairs drift.
    fn resync(&mut self) -> Result<ApplyReport, DataplaneError>;
    /// Counters of our rules, attributed to policy rules and endpoint drops.
    fn counters(&self) -> Result<Vec<RuleCounter>, DataplaneError>;
    /// Removes everything this dataplane owns (chains, sets, jumps; the nft table's
    /// contents), leaving other programs' rules alone.
    fn remove_all(&mut self) -> Result<ApplyReport, DataplaneError>;
}

/// Which program a backend takes from a rendered ruleset.
pub trait FromRuleset: Backend {
    /// A converted set, cached between renders.
    type Set: Send + Sync;
    fn program(
        rs: &palisade_render::Ruleset,
        origins: &crate::origins::Origins,
        cache: &mut SetCache<Self::Set>,
    ) -> Result<Self::Program, DataplaneError>;
}

impl FromRuleset for IptablesBackend {
    type Set = IpsetSpec;
    fn program(
        rs: &palisade_render::Ruleset,
        o: &crate::origins::Origins,
        cache: &mut SetCache<IpsetSpec>,
    ) -> Result<IptablesProgram, DataplaneError> {
        iptables_program(rs, o, cache)
    }
}

impl FromRuleset for NftBackend {
    type Set = NftSet;
    fn program(
        rs: &palisade_render::Ruleset,
        o: &crate::origins::Origins,
        cache: &mut SetCache<NftSet>,
    ) -> Result<NftProgram, DataplaneError> {
        nft_program(rs, o, cache)
    }
}

/// A [`Table`] fed with [`DesiredState`]s.
pub struct StateDataplane<B: FromRuleset> {
    pub table: Table<B>,
    pub config: RenderConfig,
    cache: SetCache<B::Set>,
}

impl<B: FromRuleset> StateDataplane<B>
where
    B::Program: Default,
{
    pub fn new(
        backend: B,
        config: RenderConfig,
        runner: Arc<dyn CommandRunner>,
        sleeper: Arc<dyn Sleeper>,
        retry: RetryPolicy,
    ) -> Self {
        StateDataplane {
            table: Table::new(backend, B::Program::default(), runner, sleeper, retry),
            config,
            cache: SetCache::default(),
        }
    }

    /// The program `state` renders to.
    pub fn render(&mut self, state: &DesiredState) -> Result<B::Program, DataplaneError> {
        let rs = build(state, &self.config).map_err(render_err)?;
        let origins = rule_origins(state, &rs, &self.config);
        B::program(&rs, &origins, &mut self.cache)
    }
}

fn render_err(e: RenderError) -> DataplaneError {
    DataplaneError::from(e)
}

impl<B: FromRuleset> Dataplane for StateDataplane<B>
where
    B::Program: Default,
{
    fn backend_name(&self) -> &'static str {
        self.table.backend().name()
    }

    fn apply_state(&mut self, state: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        let program = self.render(state)?;
        self.table.apply(program)
    }

    fn resync(&mut self) -> Result<ApplyReport, DataplaneError> {
        self.table.resync()
    }

    fn counters(&self) -> Result<Vec<RuleCounter>, DataplaneError> {
        self.table.counters()
    }

    fn remove_all(&mut self) -> Result<ApplyReport, DataplaneError> {
        self.table.apply(B::Program::default())
    }
}

/// The iptables + ipset dataplane.
pub fn iptables_dataplane(
    config: RenderConfig,
    runner: Arc<dyn CommandRunner>,
    sleeper: Arc<dyn Sleeper>,
    retry: RetryPolicy,
) -> StateDataplane<IptablesBackend> {
    let mut families = Vec::new();
    if config.ipv4 {
        families.push(crate::ipt::Family::V4);
    }
    if config.ipv6 {
        families.push(crate::ipt::Family::V6);
    }
    StateDataplane::new(
        IptablesBackend::with_families(families),
        config,
        runner,
        sleeper,
        retry,
    )
}

/// The nftables dataplane.
pub fn nft_dataplane(
    config: RenderConfig,
    runner: Arc<dyn CommandRunner>,
    sleeper: Arc<dyn Sleeper>,
    retry: RetryPolicy,
) -> StateDataplane<NftBackend> {
    StateDataplane::new(NftBackend::new(), config, runner, sleeper, retry)
}

/// The nftables dataplane with element-only changes sent over netlink (see
/// [`crate::nft::netlink`]) inside `netns` (or the current namespace); everything else goes
/// through `runner` as `nft -f`. `runner` and `netns` must name the same namespace.
pub fn nft_dataplane_netlink(
    config: RenderConfig,
    netns: Option<String>,
    runner: Arc<dyn CommandRunner>,
    sleeper: Arc<dyn Sleeper>,
    retry: RetryPolicy,
) -> StateDataplane<NftBackend> {
    let writer = Arc::new(crate::nft::netlink::NetlinkElements::new(netns));
    StateDataplane::new(
        NftBackend::with_element_writer(writer),
        config,
        runner,
        sleeper,
        retry,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RecordingSleeper;
    use crate::runner::NoopRunner;

    #[test]
    fn the_noop_runner_accepts_everything() {
        let state = DesiredState::default();
        let runner: Arc<dyn CommandRunner> = Arc::new(NoopRunner);
        let sleeper: Arc<dyn Sleeper> = Arc::new(RecordingSleeper::new());
        let mut dps: Vec<Box<dyn Dataplane>> = vec![
            Box::new(iptables_dataplane(
                RenderConfig::default(),
                runner.clone(),
                sleeper.clone(),
                RetryPolicy::none(),
            )),
            Box::new(nft_dataplane(
                RenderConfig::default(),
                runner,
                sleeper,
                RetryPolicy::none(),
            )),
        ];
        for dp in dps.iter_mut() {
            let r = dp.apply_state(&state).unwrap();
            assert!(!r.wrote_nothing(), "{}", dp.backend_name());
            assert!(dp.counters().unwrap().is_empty());
        }
    }
}
