//! The dataplane as the agent uses it: give it a [`DesiredState`], it renders (through
//! `palisade_render`) and reconciles; [`Dataplane`] hides which backend.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use palisade_calc::{Delta, DesiredState};
use palisade_model::{EndpointId, PolicyId};
use palisade_render::config::SourceBinding;
use palisade_render::delta::Plan;
use palisade_render::{build, RenderConfig, RenderError, Ruleset};

use crate::error::DataplaneError;
use crate::from_ir::{iptables_program, nft_program, SetCache};
use crate::incremental::{named_ids, Incremental};
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
    /// Makes the kernel match `state`, reached from the state of the last successful apply
    /// through `deltas` (the calculator's, in order). Backends that can (nftables) convert
    /// only what the deltas name and patch the program; otherwise, and whenever the patch
    /// cannot be made, the same as [`Dataplane::apply_state`].
    fn apply_deltas(
        &mut self,
        state: &DesiredState,
        deltas: &[Delta],
    ) -> Result<ApplyReport, DataplaneError> {
        let _ = deltas;
        self.apply_state(state)
    }
    /// Whether [`Dataplane::apply_deltas`] patches, and whether it checks every patch.
    fn set_incremental(&mut self, mode: IncrementalMode) {
        let _ = mode;
    }
    /// Sets where each local pod address may enter (anti-spoofing, see
    /// [`RenderConfig::source_bindings`]); true when they changed, and then the next apply
    /// renders everything.
    fn set_source_bindings(&mut self, bindings: BTreeMap<IpAddr, Option<SourceBinding>>) -> bool {
        let _ = bindings;
        false
    }
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
    /// Whether [`FromRuleset::patch`] patches.
    const INCREMENTAL: bool = false;
    fn program(
        rs: &palisade_render::Ruleset,
        origins: &crate::origins::Origins,
        cache: &mut SetCache<Self::Set>,
    ) -> Result<Self::Program, DataplaneError>;
    /// Patches `program` with `plan` ([`Incremental`]); `Ok(false)`: this backend does not
    /// patch, render everything.
    fn patch(
        incr: &mut Incremental,
        program: &mut Self::Program,
        plan: &Plan,
        next: &DesiredState,
        cfg: &RenderConfig,
        ids: (&[&EndpointId], &[&PolicyId]),
    ) -> Result<bool, DataplaneError> {
        let _ = (incr, program, plan, next, cfg, ids);
        Ok(false)
    }
}

impl FromRuleset for IptablesBackend {
    type Set = IpsetSpec;
    const INCREMENTAL: bool = true;
    fn patch(
        incr: &mut Incremental,
        program: &mut IptablesProgram,
        plan: &Plan,
        next: &DesiredState,
        cfg: &RenderConfig,
        (endpoints, policies): (&[&EndpointId], &[&PolicyId]),
    ) -> Result<bool, DataplaneError> {
        incr.patch_ipt(program, plan, next, cfg, endpoints, policies)?;
        Ok(true)
    }
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
    const INCREMENTAL: bool = true;
    fn program(
        rs: &palisade_render::Ruleset,
        o: &crate::origins::Origins,
        cache: &mut SetCache<NftSet>,
    ) -> Result<NftProgram, DataplaneError> {
        nft_program(rs, o, cache)
    }
    fn patch(
        incr: &mut Incremental,
        program: &mut NftProgram,
        plan: &Plan,
        next: &DesiredState,
        cfg: &RenderConfig,
        (endpoints, policies): (&[&EndpointId], &[&PolicyId]),
    ) -> Result<bool, DataplaneError> {
        incr.patch_nft(program, plan, next, cfg, endpoints, policies)?;
        Ok(true)
    }
}

/// A [`Table`] fed with [`DesiredState`]s.
pub struct StateDataplane<B: FromRuleset> {
    pub table: Table<B>,
    pub config: RenderConfig,
    cache: SetCache<B::Set>,
    /// What the next incremental apply starts from; `None`: render everything next time.
    incr: Option<Incremental>,
    mode: IncrementalMode,
    /// Applies made by patching, and incremental applies that had to render everything
    /// because the patch could not be made.
    pub patched: u64,
    pub patch_fallbacks: u64,
}

/// How [`Dataplane::apply_deltas`] works.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IncrementalMode {
    /// Render everything for every apply.
    Off,
    /// Patch the program with what the deltas name (backends that can).
    #[default]
    On,
    /// Patch, then check the patched program against a full render of the same state (an
    /// error when they differ; tests and debugging: it costs a full render per apply).
    Verify,
}

impl<B: FromRuleset> StateDataplane<B>
where
    B::Program: Default + PartialEq,
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
            incr: None,
            mode: IncrementalMode::default(),
            patched: 0,
            patch_fallbacks: 0,
        }
    }

    /// The program `state` renders to.
    pub fn render(&mut self, state: &DesiredState) -> Result<B::Program, DataplaneError> {
        Ok(self.render_ir(state)?.0)
    }

    fn render_ir(&mut self, state: &DesiredState) -> Result<(B::Program, Ruleset), DataplaneError> {
        let rs = build(state, &self.config).map_err(render_err)?;
        let origins = rule_origins(state, &rs, &self.config);
        Ok((B::program(&rs, &origins, &mut self.cache)?, rs))
    }

    /// Patches the table's program for `deltas`; `Ok(false)`: the backend does not patch.
    fn patch(
        &mut self,
        incr: &mut Incremental,
        state: &DesiredState,
        deltas: &[Delta],
    ) -> Result<bool, DataplaneError> {
        let plan = incr.plan(state, deltas, &self.config)?;
        let (eps, pols) = named_ids(deltas);
        let program = self.table.desired_mut();
        if !B::patch(incr, program, &plan, state, &self.config, (&eps, &pols))? {
            return Ok(false);
        }
        incr.advance(state, deltas);
        Ok(true)
    }
}

fn render_err(e: RenderError) -> DataplaneError {
    DataplaneError::from(e)
}

impl<B: FromRuleset> Dataplane for StateDataplane<B>
where
    B::Program: Default + PartialEq,
{
    fn backend_name(&self) -> &'static str {
        self.table.backend().name()
    }

    fn apply_state(&mut self, state: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        self.incr = None;
        let (program, rs) = self.render_ir(state)?;
        let report = self.table.apply(program)?;
        if B::INCREMENTAL && self.mode != IncrementalMode::Off {
            self.incr = Some(Incremental::new(state, rs));
        }
        Ok(report)
    }

    fn apply_deltas(
        &mut self,
        state: &DesiredState,
        deltas: &[Delta],
    ) -> Result<ApplyReport, DataplaneError> {
        let Some(mut incr) = self.incr.take() else {
            return self.apply_state(state);
        };
        match self.patch(&mut incr, state, deltas) {
            Ok(true) if self.mode == IncrementalMode::Verify => {
                let full = self.render(state)?;
                if full != *self.table.desired() {
                    // Not written: the next apply renders everything.
                    return Err(DataplaneError::invalid(
                        "incremental program",
                        "differs from the full render of the same state",
                    ));
                }
            }
            Ok(true) => {}
            Ok(false) => return self.apply_state(state),
            Err(e) => {
                tracing::warn!(error = %e, "incremental render failed; rendering everything");
                self.patch_fallbacks += 1;
                return self.apply_state(state);
            }
        }
        // Taken again if the write fails: the program then holds the new state while the
        // kernel may not, and the caller applies everything again.
        let report = self.table.apply_current()?;
        self.incr = Some(incr);
        self.patched += 1;
        Ok(report)
    }

    fn set_incremental(&mut self, mode: IncrementalMode) {
        self.mode = mode;
        if mode == IncrementalMode::Off {
            self.incr = None;
        }
    }

    fn resync(&mut self) -> Result<ApplyReport, DataplaneError> {
        self.table.resync()
    }

    fn set_source_bindings(&mut self, bindings: BTreeMap<IpAddr, Option<SourceBinding>>) -> bool {
        if self.config.source_bindings == bindings {
            return false;
        }
        self.config.source_bindings = bindings;
        self.incr = None;
        true
    }

    fn counters(&self) -> Result<Vec<RuleCounter>, DataplaneError> {
        self.table.counters()
    }

    fn remove_all(&mut self) -> Result<ApplyReport, DataplaneError> {
        self.incr = None;
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

/// The nftables dataplane for a real kernel, inside `netns` (or the current namespace):
/// element changes over netlink (see [`crate::nft::netlink`]), scripts in-process through
/// libnftables (see [`crate::nft::libnft`]), updates in phases (see [`crate::nft::phased`]);
/// without libnftables, everything but element-only changes goes through `runner` as
/// `nft -f`. Reads go through `runner`. `runner` and `netns` must name the same namespace.
pub fn nft_dataplane_netlink(
    config: RenderConfig,
    netns: Option<String>,
    runner: Arc<dyn CommandRunner>,
    sleeper: Arc<dyn Sleeper>,
    retry: RetryPolicy,
) -> StateDataplane<NftBackend> {
    let writer = Arc::new(crate::nft::netlink::NetlinkElements::new(netns.clone()));
    let backend = match crate::nft::libnft::LibNftables::open(netns) {
        Ok(lib) => NftBackend::with_writers(writer, Arc::new(lib)),
        Err(e) => {
            tracing::warn!(error = %e, "libnftables unavailable: chain changes go through `nft -f`");
            NftBackend::with_element_writer(writer)
        }
    };
    StateDataplane::new(backend, config, runner, sleeper, retry)
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
