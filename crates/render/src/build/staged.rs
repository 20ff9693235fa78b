//! Staged policies in the dataplane. For an endpoint that a staged policy selects in a
//! direction (and only for it), its chain first jumps to a staged-evaluation chain:
//!
//! ```text
//!  pal-tw-/pal-fw-<iface>: clear staged-accept; jump pal-st-/pal-sf-<iface>; clear staged-deny;
//!             … the enforced tiers, unchanged, except at the verdicts:
//!             accept, staged-accept clear → NFLOG (rate-limited) "staged drop" key, then accept
//!             end-of-tier drop, staged-accept set → NFLOG "staged allow" key (instead of the
//!             plain drop log), then drop
//!  pal-st-/pal-sf-<iface>: the staged tiers (enforced and staged policies together), marks
//!             only: per tier clear accept|pass|staged-deny; jump to each policy's chain while
//!             none is set (the pal-si-/pal-so- form of a policy with Deny or Log rules or a
//!             staged one, where Deny sets staged-deny and returns); staged-deny → RETURN;
//!             accept → set staged-accept, RETURN; no pass (a Deny tier) → RETURN.
//!             After the last tier: set staged-accept.
//! ```
//!
//! Staged-accept is scratch mark 0, staged-deny scratch mark 1. The enforced verdict never
//! depends on them: the staged chain drops nothing, and the enforced rules only look at them
//! in log rules. Without drop logging there is nothing to report to, and nothing is rendered.

use palisade_calc::{DesiredState, LocalEndpoint};
use palisade_model::{Direction, EndpointId, TierAction};

use super::check_applies;
use super::rules::staged_jump_target;
use crate::config::RenderConfig;
use crate::error::RenderError;
use crate::ir::{Action, Chain, Match, Rule};
use crate::names;

/// The staged logging of one endpoint chain.
pub(crate) struct StagedLog<'a> {
    group: u16,
    direction: Direction,
    endpoint: &'a EndpointId,
    chain: String,
}

/// `Some` when `ep` has staged tiers in `direction` and drops are logged.
pub(crate) fn logging<'a>(
    cfg: &RenderConfig,
    ep: &'a LocalEndpoint,
    direction: Direction,
) -> Option<StagedLog<'a>> {
    let group = cfg.drop_log_group?;
    ep.tiers.staged(direction)?;
    Some(StagedLog {
        group,
        direction,
        endpoint: &ep.id,
        chain: names::staged_endpoint_chain(direction, &ep.iface),
    })
}

impl StagedLog<'_> {
    /// The first rules of the endpoint chain: run the staged evaluation.
    pub(crate) fn prologue(&self, cfg: &RenderConfig) -> Vec<Rule> {
        vec![
            Rule::new(vec![], Action::ClearMark(cfg.staged_accept_mark())),
            Rule::new(vec![], Action::Jump(self.chain.clone())),
            Rule::new(vec![], Action::ClearMark(cfg.staged_deny_mark())),
        ]
    }

    /// Before an accept: log when the accept mark is `accept` (the mark itself, or 0 for the
    /// final default allow) and the staged tiers did not accept.
    pub(crate) fn would_drop(&self, cfg: &RenderConfig, accept: u32) -> Rule {
        let site = names::DropSite::StagedDrop {
            direction: self.direction,
            endpoint: self.endpoint,
        };
        self.log(
            cfg,
            Match::Mark {
                value: accept,
                mask: cfg.accept_mark | cfg.staged_accept_mark(),
            },
            site,
        )
    }

    /// Before an end-of-tier drop: log when the staged tiers accepted.
    pub(crate) fn would_allow(&self, cfg: &RenderConfig, ep: &LocalEndpoint, tier: &str) -> Rule {
        let site = names::DropSite::StagedAllow {
            direction: self.direction,
            endpoint: &ep.id,
            tier,
        };
        let s = cfg.staged_accept_mark();
        self.log(
            cfg,
            Match::Mark {
                value: s,
                mask: cfg.pass_mark | s,
            },
            site,
        )
    }

    fn log(&self, cfg: &RenderConfig, when: Match, site: names::DropSite<'_>) -> Rule {
        Rule::new(
            std::iter::once(when).chain(cfg.drop_log_limit()).collect(),
            Action::Log {
                group: self.group,
                prefix: names::drop_log_prefix(site),
            },
        )
    }
}

/// The staged-evaluation chain of `ep` for `direction` (`None` without staged tiers there or
/// without drop logging).
pub(crate) fn staged_endpoint_chain(
    state: &DesiredState,
    cfg: &RenderConfig,
    ep: &LocalEndpoint,
    direction: Direction,
) -> Result<Option<Chain>, RenderError> {
    let Some(log) = logging(cfg, ep, direction) else {
        return Ok(None);
    };
    let tiers = ep.tiers.staged(direction).unwrap_or_default();
    let accept = cfg.accept_mark;
    let deny = cfg.staged_deny_mark();
    let staged_accept = cfg.staged_accept_mark();
    let decided = accept | cfg.pass_mark | deny;
    let is_set = |bit: u32| Match::Mark {
        value: bit,
        mask: bit,
    };
    let mut rules = Vec::new();
    for tier in tiers {
        rules.push(Rule::new(vec![], Action::ClearMark(decided)));
        if tier.tier == palisade_model::DEFAULT_TIER {
            rules.push(super::node_local_pass(cfg, direction));
        }
        for pid in &tier.policies {
            check_applies(state, ep, direction, &tier.tier, pid)?;
            let policy = &state.policies[pid];
            rules.push(Rule::new(
                vec![Match::Mark {
                    value: 0,
                    mask: decided,
                }],
                Action::Jump(staged_jump_target(policy, direction)),
            ));
        }
        rules.push(Rule::new(vec![is_set(deny)], Action::Return));
        rules.push(Rule::new(
            vec![is_set(accept)],
            Action::SetMark(staged_accept),
        ));
        rules.push(Rule::new(vec![is_set(staged_accept)], Action::Return));
        if tier.default_action == TierAction::Deny {
            rules.push(Rule::new(
                vec![Match::Mark {
                    value: 0,
                    mask: cfg.pass_mark,
                }],
                Action::Return,
            ));
        }
    }
    rules.push(Rule::new(vec![], Action::SetMark(staged_accept)));
    Ok(Some(
        Chain {
            name: log.chain,
            rules,
        }
        .seal(),
    ))
}
