//! A tiny in-memory kernel behind the [`CommandRunner`] interface, so the reconcile logic is
//! tested without root. It understands the commands the backends run (`iptables-save`,
//! `iptables-restore`, their ip6 twins, `ipset`, `nft`), enforces what the real kernel
//! enforces that matters for ordering (no rule on a missing set or chain, no destroying a set
//! or chain in use), records every call, and fails on request.

pub mod ipset;
pub mod ipt;
pub mod nft;

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use crate::ipt::program::Family;
use crate::runner::{CommandOutput, CommandRecord, CommandRunner, RunnerError};

pub use self::ipset::{FakeIpsets, FakeSet};
pub use self::ipt::{FakeFilter, FakeRule};
pub use self::nft::{FakeNftChain, FakeNftRule, FakeNftSet, FakeNftTable};

/// Everything the fake kernel holds.
#[derive(Debug, Clone, Default)]
pub struct FakeState {
    pub v4: FakeFilter,
    pub v6: FakeFilter,
    pub ipsets: FakeIpsets,
    pub nft: Option<FakeNftTable>,
}

impl FakeState {
    pub fn filter(&mut self, f: Family) -> &mut FakeFilter {
        match f {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    fn sets_in_use(&self) -> BTreeSet<String> {
        let mut s = self.v4.sets_in_use();
        s.extend(self.v6.sets_in_use());
        s
    }
}

#[derive(Debug, Default)]
struct Inner {
    state: FakeState,
    calls: Vec<CommandRecord>,
    /// (program, remaining failures).
    failures: Vec<(String, u32)>,
}

/// The fake kernel. Share it with `Arc` between the table under test and the test.
#[derive(Debug, Default)]
pub struct FakeKernel {
    inner: Mutex<Inner>,
}

impl FakeKernel {
    pub fn new() -> Self {
        let k = FakeKernel::default();
        {
            let mut g = k.lock();
            g.state.v4 = FakeFilter::new();
            g.state.v6 = FakeFilter::new();
        }
        k
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock leaves consistent data behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `times` runs of `program` fail (status 1) without changing anything.
    pub fn fail_next(&self, program: &str, times: u32) {
        self.lock().failures.push((program.to_string(), times));
    }

    /// Every command run so far.
    pub fn calls(&self) -> Vec<CommandRecord> {
        self.lock().calls.clone()
    }

    /// The commands that wrote (those with standard input).
    pub fn writes(&self) -> Vec<CommandRecord> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.stdin.is_some())
            .cloned()
            .collect()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// A copy of the whole kernel state.
    pub fn state(&self) -> FakeState {
        self.lock().state.clone()
    }

    /// Changes the kernel directly (to simulate another program or an operator).
    pub fn edit<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.lock().state)
    }

    /// Runs a command as some other program would: not recorded, never fails on request.
    pub fn external(&self, program: &str, args: &[&str], stdin: Option<&str>) -> CommandOutput {
        dispatch(&mut self.lock().state, program, args, stdin)
    }
}

impl CommandRunner for FakeKernel {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, RunnerError> {
        let mut g = self.lock();
        let injected = g
            .failures
            .iter_mut()
            .find(|(p, n)| p == program && *n > 0)
            .map(|(_, n)| {
                *n -= 1;
            })
            .is_some();
        let out = if injected {
            CommandOutput::failed(1, format!("{program}: injected failure"))
        } else {
            dispatch(&mut g.state, program, args, stdin)
        };
        g.calls.push(CommandRecord {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: stdin.map(str::to_string),
            status: out.status,
            elapsed: std::time::Duration::ZERO,
        });
        Ok(out)
    }
}

fn result(r: Result<String, String>) -> CommandOutput {
    match r {
        Ok(s) => CommandOutput::ok(s),
        Err(e) => CommandOutput::failed(1, e),
    }
}

fn dispatch(
    state: &mut FakeState,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> CommandOutput {
    let family = match program {
        "iptables-save" | "iptables-restore" | "iptables" => Family::V4,
        _ => Family::V6,
    };
    match program {
        "iptables-save" | "ip6tables-save" => {
            CommandOutput::ok(state.filter(family).save(args.contains(&"-c")))
        }
        "iptables-restore" | "ip6tables-restore" => {
            let sets: BTreeSet<String> = state.ipsets.sets.keys().cloned().collect();
            let noflush = args.contains(&"--noflush");
            result(
                state
                    .filter(family)
                    .restore(stdin.unwrap_or(""), noflush, &sets)
                    .map(|_| String::new()),
            )
        }
        "ipset" => {
            let exist = args.contains(&"-exist");
            let words: Vec<&str> = args.iter().copied().filter(|a| *a != "-exist").collect();
            let in_use = state.sets_in_use();
            match words.first().copied() {
                Some("list") if words.get(1) == Some(&"-n") => {
                    CommandOutput::ok(state.ipsets.list_names())
                }
                Some("save") => result(state.ipsets.save(words.get(1).copied())),
                Some("restore") => result(
                    state
                        .ipsets
                        .restore(stdin.unwrap_or(""), exist, &in_use)
                        .map(|_| String::new()),
                ),
                Some(_) => result(
                    state
                        .ipsets
                        .command(&words, exist, &in_use)
                        .map(|_| String::new()),
                ),
                None => CommandOutput::failed(1, "ipset: no command"),
            }
        }
        "nft" => match args {
            ["-j", "list", "table", "inet", "palisade"] => match &state.nft {
                Some(t) => CommandOutput::ok(nft::list_json(t)),
                None => CommandOutput::failed(
                    1,
                    "Error: No such file or directory\nlist table inet palisade",
                ),
            },
            ["-f", "-"] => {
                result(nft::apply(&mut state.nft, stdin.unwrap_or("")).map(|_| String::new()))
            }
            _ => CommandOutput::failed(1, format!("nft: fake does not know {args:?}")),
        },
        other => CommandOutput::failed(
            127,
            format!("{other}: command not found in the fake kernel"),
        ),
    }
}
