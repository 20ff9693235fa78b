//! Runs commands through a [`CommandRunner`], records them and turns a non-zero exit into
//! a [`DataplaneError`].

use crate::error::DataplaneError;
use crate::runner::{CommandRecord, CommandRunner};

pub struct Exec<'a> {
    runner: &'a dyn CommandRunner,
    pub log: Vec<CommandRecord>,
}

impl<'a> Exec<'a> {
    pub fn new(runner: &'a dyn CommandRunner) -> Self {
        Exec {
            runner,
            log: Vec::new(),
        }
    }

    /// Runs the command; its standard output on success.
    pub fn run(
        &mut self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, DataplaneError> {
        tracing::debug!(
            program,
            ?args,
            stdin_bytes = stdin.map(str::len),
            "dataplane command"
        );
        let start = std::time::Instant::now();
        let out = self.runner.run(program, args, stdin);
        let elapsed = start.elapsed();
        let status = out.as_ref().map(|o| o.status).unwrap_or(-1);
        let record = CommandRecord {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: stdin.map(str::to_string),
            status,
            elapsed,
        };
        let line = record.command_line();
        self.log.push(record);
        let out = out?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(DataplaneError::CommandFailed {
                command: line,
                status: out.status,
                stderr: out.stderr.trim().to_string(),
            })
        }
    }
}
