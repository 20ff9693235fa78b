//! The process boundary: every kernel command goes through a [`CommandRunner`], so the
//! reconcile logic runs unchanged against the real kernel ([`ProcessRunner`], optionally inside
//! a network namespace), the in-memory kernel of [`crate::fake`], or nothing ([`NoopRunner`]).

use std::io::Write;
use std::process::{Command, Stdio};

use thiserror::Error;

/// What a finished command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status; `0` is success.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn ok(stdout: impl Into<String>) -> Self {
        CommandOutput {
            status: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    pub fn failed(status: i32, stderr: impl Into<String>) -> Self {
        CommandOutput {
            status,
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    pub fn success(&self) -> bool {
        self.status == 0
    }
}

#[derive(Debug, Error)]
pub enum RunnerError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot feed standard input to {program}: {source}")]
    Stdin {
        program: String,
        source: std::io::Error,
    },
}

/// Runs one program with arguments and optional standard input, synchronously (the agent
/// calls it from `spawn_blocking`). Object safe.
pub trait CommandRunner: Send + Sync {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, RunnerError>;
}

impl<T: CommandRunner + ?Sized> CommandRunner for std::sync::Arc<T> {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, RunnerError> {
        (**self).run(program, args, stdin)
    }
}

/// Runs real processes, in the current network namespace or, with [`ProcessRunner::in_netns`],
/// through `ip netns exec NAME`.
#[derive(Debug, Clone, Default)]
pub struct ProcessRunner {
    netns: Option<String>,
}

impl ProcessRunner {
    pub fn new() -> Self {
        ProcessRunner { netns: None }
    }

    /// Every command runs inside the named network namespace (`ip netns add NAME` made it).
    pub fn in_netns(name: impl Into<String>) -> Self {
        ProcessRunner {
            netns: Some(name.into()),
        }
    }

    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }
}

impl CommandRunner for ProcessRunner {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, RunnerError> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.as_str(), program]);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| RunnerError::Spawn {
            program: program.to_string(),
            source,
        })?;
        // Feed standard input from another thread while this one drains the output, so a
        // child that writes a lot before reading everything cannot deadlock us.
        let pipe = child.stdin.take();
        let fed = std::thread::scope(|scope| {
            let feeder = scope.spawn(move || -> std::io::Result<()> {
                if let (Some(text), Some(mut pipe)) = (stdin, pipe) {
                    match pipe.write_all(text.as_bytes()) {
                        // A child that exits early closes the pipe; its status tells the story.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                        other => other?,
                    }
                }
                Ok(())
            });
            let out = child.wait_with_output();
            let fed = feeder
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("stdin feeder panicked")));
            (out, fed)
        });
        let (out, fed) = fed;
        fed.map_err(|source| RunnerError::Stdin {
            program: program.to_string(),
            source,
        })?;
        let out = out.map_err(|source| RunnerError::Spawn {
            program: program.to_string(),
            source,
        })?;
        Ok(CommandOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Succeeds at everything and prints nothing: for dry runs and for agents without a kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopRunner;

impl CommandRunner for NoopRunner {
    fn run(
        &self,
        _program: &str,
        _args: &[&str],
        _stdin: Option<&str>,
    ) -> Result<CommandOutput, RunnerError> {
        Ok(CommandOutput::default())
    }
}

/// One command as it was run, for [`crate::ApplyReport`] and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub program: String,
    pub args: Vec<String>,
    pub stdin: Option<String>,
    pub status: i32,
    /// How long the command took.
    pub elapsed: std::time::Duration,
}

impl CommandRecord {
    /// `program arg1 arg2`, for logs.
    pub fn command_line(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}
