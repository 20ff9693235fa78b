//! The bridge sysctls: traffic between two pods on one Linux bridge is bridged, not routed, and
//! meets the IP hooks (our rules) only with `br_netfilter` loaded and
//! `net.bridge.bridge-nf-call-iptables` (and `-ip6tables`) at 1. Both are per network
//! namespace on current kernels (checked on 6.18: setting one in a namespace leaves the host's
//! alone), so the agent checks them in the namespace it programs, through its runner.

use palisade_dataplane::CommandRunner;

/// The sysctl for IPv4 bridged traffic.
pub const IPV4: &str = "net.bridge.bridge-nf-call-iptables";
/// The sysctl for IPv6 bridged traffic.
pub const IPV6: &str = "net.bridge.bridge-nf-call-ip6tables";

fn path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// The current value of `name` (`None`: the file does not exist, `br_netfilter` is not
/// loaded).
fn read(runner: &dyn CommandRunner, name: &str) -> Option<String> {
    let out = runner.run("cat", &[&path(name)], None).ok()?;
    out.success().then(|| out.stdout.trim().to_string())
}

/// Checks the sysctls of the enabled families (`(ipv4, ipv6)`); where one is off and `set`
/// is true, loads `br_netfilter` if needed and sets it to 1. `Ok`: the sysctls it set (for
/// the log). `Err`: why the agent is not ready, naming the sysctl.
pub fn ensure_bridge_sysctls(
    runner: &dyn CommandRunner,
    set: bool,
    families: (bool, bool),
) -> Result<Vec<&'static str>, String> {
    let mut changed = Vec::new();
    let wanted = [(families.0, IPV4), (families.1, IPV6)];
    for name in wanted.iter().filter(|(on, _)| *on).map(|(_, n)| *n) {
        let mut value = read(runner, name);
        if value.is_none() && set {
            // Loads the module (global); its sysctls then appear in every namespace.
            let _ = runner.run("modprobe", &["br_netfilter"], None);
            value = read(runner, name);
        }
        if value.as_deref() == Some("1") {
            continue;
        }
        let shown = value
            .as_deref()
            .unwrap_or("missing (br_netfilter not loaded)");
        if !set {
            return Err(format!(
                "{name} is {shown}: bridged pod traffic would bypass the rules; set it to 1 \
                 (and load br_netfilter) or run with --set-bridge-sysctls=true"
            ));
        }
        let out = runner
            .run("sysctl", &["-q", "-w", &format!("{name}=1")], None)
            .map_err(|e| format!("cannot set {name}=1: {e}"))?;
        if !out.success() || read(runner, name).as_deref() != Some("1") {
            return Err(format!(
                "{name} is {shown} and cannot be set to 1: {}",
                out.stderr.trim()
            ));
        }
        changed.push(name);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_dataplane::{CommandOutput, RunnerError};
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Sysctl files in memory; `cat` reads them, `sysctl -w` writes them.
    struct Files(Mutex<HashMap<String, String>>);

    impl CommandRunner for Files {
        fn run(
            &self,
            program: &str,
            args: &[&str],
            _stdin: Option<&str>,
        ) -> Result<CommandOutput, RunnerError> {
            let mut f = self.0.lock().unwrap();
            Ok(match program {
                "cat" => match f.get(args[0]) {
                    Some(v) => CommandOutput::ok(format!("{v}\n")),
                    None => CommandOutput::failed(1, "No such file"),
                },
                "sysctl" => {
                    let (k, v) = args[2].split_once('=').unwrap();
                    f.insert(path(k), v.to_string());
                    CommandOutput::ok("")
                }
                _ => CommandOutput::failed(1, "no"),
            })
        }
    }

    fn files(v4: &str, v6: &str) -> Files {
        Files(Mutex::new(HashMap::from([
            (path(IPV4), v4.to_string()),
            (path(IPV6), v6.to_string()),
        ])))
    }

    #[test]
    fn off_sysctls_are_set_or_named() {
        let f = files("0", "1");
        assert_eq!(
            ensure_bridge_sysctls(&f, true, (true, true)),
            Ok(vec![IPV4])
        );
        assert_eq!(ensure_bridge_sysctls(&f, true, (true, true)), Ok(vec![]));
        let f = files("1", "0");
        let err = ensure_bridge_sysctls(&f, false, (true, true)).unwrap_err();
        assert!(
            err.contains(IPV6) && err.contains("--set-bridge-sysctls"),
            "{err}"
        );
        assert_eq!(ensure_bridge_sysctls(&f, false, (true, false)), Ok(vec![]));
    }
}
