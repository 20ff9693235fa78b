//! The conformance fixtures under `conformance/` (see `conformance/README.md`): the base
//! cluster, the cases, their steps and expected reachability grids (or single pokes), parsed
//! into values a runner replays. `tests/conformance.rs` replays the Kubernetes suite
//! (`conformance/base`, `conformance/cases`) against `palisade matrix`, `tests/cnp_conformance.rs`
//! the ClusterNetworkPolicy suite (`conformance/cnp/base`, `conformance/cnp/cases`); a lab runner
//! can replay the same steps against real namespaces (apply/delete, then probe).
//!
//! Nothing here runs Palisade: it only reads fixtures and keeps the cumulative object set of
//! each step (base + everything applied so far, minus what was deleted; an applied object
//! replaces the one with the same kind, namespace and name).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Deserialize;
use serde_yaml::Value;

/// `conformance/` at the repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance")
}

/// The `*.yaml` files of a directory, sorted by name.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The ClusterNetworkPolicy suite: `conformance/cnp/` (its own `base/` and `cases/`).
pub fn cnp_root() -> PathBuf {
    root().join("cnp")
}

/// The slugs of every case file (`conformance/cases/<slug>.yaml`), sorted.
pub fn case_slugs() -> Result<Vec<String>> {
    case_slugs_in(&root())
}

/// The slugs of every case file of a suite (`<suite>/cases/<slug>.yaml`), sorted.
pub fn case_slugs_in(suite: &Path) -> Result<Vec<String>> {
    yaml_files(&suite.join("cases"))?
        .iter()
        .map(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("case file name {} is not UTF-8", p.display()))
        })
        .collect()
}

/// The identity of an object: kind, namespace (none for a Namespace) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// The key of a Kubernetes object given as YAML.
    pub fn of(object: &Value) -> Result<ObjectKey> {
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("object without a string kind"))?;
        let meta = object
            .get("metadata")
            .ok_or_else(|| anyhow!("{kind} without metadata"))?;
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{kind} without metadata.name"))?;
        let namespace = meta.get("namespace").and_then(Value::as_str);
        ensure!(
            cluster_scoped(kind) == namespace.is_none(),
            "{kind} {name}: metadata.namespace must be set on namespaced objects (only)"
        );
        Ok(ObjectKey {
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        })
    }
}

impl FromStr for ObjectKey {
    type Err = anyhow::Error;

    /// `networkpolicy ns/name`, `pod ns/name`, `namespace name`, `clusternetworkpolicy name`
    /// or `node name` (kind case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        let (kind, reference) = s
            .split_once(' ')
            .ok_or_else(|| anyhow!("{s:?}: expected \"<kind> <namespace>/<name>\""))?;
        let kind = match kind.to_ascii_lowercase().as_str() {
            "networkpolicy" => "NetworkPolicy",
            "pod" => "Pod",
            "namespace" => "Namespace",
            "clusternetworkpolicy" => "ClusterNetworkPolicy",
            "node" => "Node",
            other => bail!("{s:?}: unknown kind {other:?}"),
        };
        let (namespace, name) = match reference.trim().split_once('/') {
            Some((ns, name)) if !cluster_scoped(kind) => (Some(ns.to_string()), name.to_string()),
            None if cluster_scoped(kind) => (None, reference.trim().to_string()),
            _ => bail!("{s:?}: expected \"<kind> <namespace>/<name>\" or \"<kind> <name>\" for a cluster-scoped kind"),
        };
        ensure!(!name.is_empty(), "{s:?}: empty name");
        Ok(ObjectKey {
            kind: kind.to_string(),
            namespace,
            name,
        })
    }
}

/// Kinds without a namespace.
fn cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Namespace" | "Node" | "ClusterNetworkPolicy")
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A set of Kubernetes objects in a stable order (first apply decides the position).
#[derive(Debug, Clone, Default)]
pub struct Objects {
    items: Vec<(ObjectKey, Value)>,
}

impl Objects {
    /// The base cluster: every document of every `conformance/base/*.yaml`.
    pub fn base() -> Result<Objects> {
        Objects::base_of(&root())
    }

    /// The base cluster of a suite: every document of every `<suite>/base/*.yaml`.
    pub fn base_of(suite: &Path) -> Result<Objects> {
        let mut objects = Objects::default();
        for file in yaml_files(&suite.join("base"))? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = Value::deserialize(doc)
                    .with_context(|| format!("{}: not valid YAML", file.display()))?;
                if value.is_null() {
                    continue;
                }
                objects
                    .apply(value)
                    .with_context(|| format!("in {}", file.display()))?;
            }
        }
        Ok(objects)
    }

    /// Adds the object, or replaces the one with the same key in place.
    pub fn apply(&mut self, object: Value) -> Result<()> {
        let key = ObjectKey::of(&object)?;
        match self.items.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = object,
            None => self.items.push((key, object)),
        }
        Ok(())
    }

    /// Removes the object; deleting what is not there is a fixture error.
    pub fn delete(&mut self, key: &ObjectKey) -> Result<()> {
        let before = self.items.len();
        self.items.retain(|(k, _)| k != key);
        ensure!(
            self.items.len() < before,
            "cannot delete {key}: no such object"
        );
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Value)> {
        self.items.iter().map(|(k, v)| (k, v))
    }

    /// `ns/name` of every Pod, sorted (the order of `palisade matrix` and of the grids).
    pub fn pods(&self) -> Vec<String> {
        let mut pods: Vec<String> = self
            .items
            .iter()
            .filter(|(k, _)| k.kind == "Pod")
            .map(|(k, _)| format!("{}/{}", k.namespace.as_deref().unwrap_or_default(), k.name))
            .collect();
        pods.sort();
        pods
    }

    /// The same objects with every IPv4 address and CIDR (pod addresses, ipBlocks) mapped into
    /// IPv6 by [`ipv4_into_ipv6`].
    pub fn mapped_into_ipv6(&self) -> Objects {
        Objects {
            items: self
                .items
                .iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    map_strings(&mut v, &ipv4_into_ipv6);
                    (k.clone(), v)
                })
                .collect(),
        }
    }

    /// Every object as one multi-document YAML text.
    pub fn to_yaml(&self) -> Result<String> {
        let mut out = String::new();
        for (key, value) in &self.items {
            out.push_str("---\n");
            out.push_str(
                &serde_yaml::to_string(value).with_context(|| format!("cannot write {key}"))?,
            );
        }
        Ok(out)
    }
}

/// Embeds an IPv4 address or CIDR into `fd00::/96`: `a.b.c.d` becomes `fd00::a.b.c.d` and a
/// prefix `/n` becomes `/96+n`, which keeps every containment relation between addresses and
/// blocks. Any other text is returned unchanged.
pub fn ipv4_into_ipv6(text: &str) -> String {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let Ok(v4) = addr.parse::<std::net::Ipv4Addr>() else {
        return text.to_string();
    };
    let v6 = std::net::Ipv6Addr::from((0xfd00u128 << 112) | u128::from(u32::from(v4)));
    match len.map(str::parse::<u8>) {
        None => v6.to_string(),
        Some(Ok(n)) if n <= 32 => format!("{v6}/{}", 96 + n),
        Some(_) => text.to_string(),
    }
}

fn map_strings(value: &mut Value, f: &dyn Fn(&str) -> String) {
    match value {
        Value::String(s) => *s = f(s),
        Value::Sequence(items) => items.iter_mut().for_each(|v| map_strings(v, f)),
        Value::Mapping(m) => m.iter_mut().for_each(|(_, v)| map_strings(v, f)),
        Value::Tagged(t) => map_strings(&mut t.value, f),
        _ => {}
    }
}

/// A probe: destination port and protocol, written `80/TCP`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Probe {
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

impl FromStr for Probe {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (port, protocol) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("probe {s:?}: expected <port>/<protocol>, e.g. 80/TCP"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| anyhow!("probe {s:?}: port must be 1-65535"))?;
        ensure!(
            matches!(protocol, "TCP" | "UDP" | "SCTP"),
            "probe {s:?}: protocol must be TCP, UDP or SCTP"
        );
        Ok(Probe {
            port,
            protocol: protocol.to_string(),
        })
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// An expected reachability grid: `allowed[i][j]` is whether `pods[i]` can connect to
/// `pods[j]`. Text form: a header row `-` followed by the destination pods, then one row per
/// source pod, its name followed by `.` (allowed) or `X` (blocked) per destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    pub pods: Vec<String>,
    pub allowed: Vec<Vec<bool>>,
}

impl Grid {
    pub fn parse(text: &str) -> Result<Grid> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let header = lines.next().ok_or_else(|| anyhow!("empty grid"))?;
        let mut cols = header.split_whitespace();
        ensure!(
            cols.next() == Some("-"),
            "grid header must start with \"-\", found {header:?}"
        );
        let pods: Vec<String> = cols.map(str::to_string).collect();
        let unique: BTreeSet<&String> = pods.iter().collect();
        ensure!(
            unique.len() == pods.len(),
            "grid header names a pod twice: {header:?}"
        );
        let mut allowed = Vec::new();
        for (i, line) in lines.enumerate() {
            let mut cells = line.split_whitespace();
            let from = cells.next().unwrap_or_default();
            let want = pods.get(i).map(String::as_str).unwrap_or("<none>");
            ensure!(
                from == want,
                "grid row {} is {from:?}, expected {want:?} (rows follow the header order)",
                i + 1
            );
            let row = cells
                .map(|c| match c {
                    "." => Ok(true),
                    "X" => Ok(false),
                    other => Err(anyhow!(
                        "grid row {from}: cell {other:?} is neither . nor X"
                    )),
                })
                .collect::<Result<Vec<bool>>>()?;
            ensure!(
                row.len() == pods.len(),
                "grid row {from} has {} cells for {} pods",
                row.len(),
                pods.len()
            );
            allowed.push(row);
        }
        ensure!(
            allowed.len() == pods.len(),
            "grid has {} rows for {} pods",
            allowed.len(),
            pods.len()
        );
        Ok(Grid { pods, allowed })
    }

    /// Every `(from, to, allowed)` cell.
    pub fn cells(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        self.allowed.iter().enumerate().flat_map(move |(i, row)| {
            row.iter()
                .enumerate()
                .map(move |(j, ok)| (self.pods[i].as_str(), self.pods[j].as_str(), *ok))
        })
    }
}

/// One probe of a step and the grid it must produce.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub probe: Probe,
    pub grid: Grid,
}

/// One connection attempt and its expected outcome (the form of the network-policy-api
/// conformance tests' `PokeServer` calls): `<ns>/<pod> -> <ns>/<pod> <port>/<PROTO> allowed`
/// (or `denied`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poke {
    pub from: String,
    pub to: String,
    pub probe: Probe,
    pub allowed: bool,
}

impl FromStr for Poke {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let [from, "->", to, probe, outcome] = words.as_slice() else {
            bail!(
                "poke {s:?}: expected \"<ns>/<pod> -> <ns>/<pod> <port>/<PROTO> allowed|denied\""
            );
        };
        for pod in [from, to] {
            ensure!(
                pod.contains('/'),
                "poke {s:?}: {pod:?} is not <namespace>/<pod>"
            );
        }
        let allowed = match *outcome {
            "allowed" => true,
            "denied" => false,
            other => bail!("poke {s:?}: outcome {other:?} is neither allowed nor denied"),
        };
        Ok(Poke {
            from: from.to_string(),
            to: to.to_string(),
            probe: probe.parse()?,
            allowed,
        })
    }
}

impl fmt::Display for Poke {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = if self.allowed { "allowed" } else { "denied" };
        write!(f, "{} -> {} {} {outcome}", self.from, self.to, self.probe)
    }
}

/// One step: objects to apply, objects to delete, then what must hold (whole grids, single
/// pokes, or both).
#[derive(Debug, Clone)]
pub struct Step {
    pub description: Option<String>,
    pub apply: Vec<Value>,
    pub delete: Vec<ObjectKey>,
    pub expect: Vec<Expectation>,
    pub pokes: Vec<Poke>,
}

impl Step {
    /// Every probe the step checks (grids first, then pokes), each once.
    pub fn probes(&self) -> Vec<Probe> {
        let mut out: Vec<Probe> = Vec::new();
        let all = self.expect.iter().map(|e| &e.probe);
        for p in all.chain(self.pokes.iter().map(|p| &p.probe)) {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }
}

/// One case file.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub source: String,
    pub notes: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    source: String,
    #[serde(default)]
    notes: Option<String>,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    apply: Vec<Value>,
    #[serde(default)]
    delete: Vec<String>,
    #[serde(default)]
    expect: Vec<RawExpectation>,
    #[serde(default)]
    pokes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectation {
    probe: String,
    reachability: String,
}

impl Case {
    /// Reads `conformance/cases/<slug>.yaml`; its `name` must be the slug.
    pub fn load(slug: &str) -> Result<Case> {
        Case::load_from(&root(), slug)
    }

    /// Reads `<suite>/cases/<slug>.yaml`; its `name` must be the slug.
    pub fn load_from(suite: &Path, slug: &str) -> Result<Case> {
        let path = suite.join("cases").join(format!("{slug}.yaml"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let case = Case::parse(&text).with_context(|| format!("in {}", path.display()))?;
        ensure!(
            case.name == slug,
            "{}: name {:?} differs from the file name",
            path.display(),
            case.name
        );
        Ok(case)
    }

    pub fn parse(text: &str) -> Result<Case> {
        let raw: RawCase = serde_yaml::from_str(text).context("not a conformance case")?;
        ensure!(!raw.steps.is_empty(), "a case needs at least one step");
        let steps = raw
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| parse_step(s).with_context(|| format!("step {}", i + 1)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Case {
            name: raw.name,
            source: raw.source,
            notes: raw.notes,
            steps,
        })
    }

    /// The cumulative object set after each step, starting from `base`.
    pub fn states(&self, base: &Objects) -> Result<Vec<Objects>> {
        let mut current = base.clone();
        let mut out = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            for object in &step.apply {
                current
                    .apply(object.clone())
                    .with_context(|| format!("step {}: apply", i + 1))?;
            }
            for key in &step.delete {
                current
                    .delete(key)
                    .with_context(|| format!("step {}: delete", i + 1))?;
            }
            out.push(current.clone());
        }
        Ok(out)
    }
}

fn parse_step(raw: RawStep) -> Result<Step> {
    for object in &raw.apply {
        ObjectKey::of(object).context("apply")?;
    }
    let delete = raw
        .delete
        .iter()
        .map(|d| d.parse().context("delete"))
        .collect::<Result<Vec<ObjectKey>>>()?;
    ensure!(
        !raw.expect.is_empty() || !raw.pokes.is_empty(),
        "a step needs at least one expectation or poke"
    );
    let pokes = raw
        .pokes
        .iter()
        .map(|p| p.parse())
        .collect::<Result<Vec<Poke>>>()?;
    let mut seen = BTreeSet::new();
    let expect = raw
        .expect
        .into_iter()
        .map(|e| {
            let probe: Probe = e.probe.parse()?;
            ensure!(
                seen.insert(probe.to_string()),
                "probe {probe} is listed twice"
            );
            let grid = Grid::parse(&e.reachability).with_context(|| format!("probe {probe}"))?;
            Ok(Expectation { probe, grid })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Step {
        description: raw.description,
        apply: raw.apply,
        delete,
        expect,
        pokes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: &str = "-   x/a x/b\nx/a .   X\nx/b .   .\n";

    #[test]
    fn grid_reads_rows_as_sources_and_columns_as_destinations() {
        let g = Grid::parse(GRID).unwrap();
        assert_eq!(g.pods, ["x/a", "x/b"]);
        let cells: Vec<_> = g.cells().collect();
        assert_eq!(
            cells,
            [
                ("x/a", "x/a", true),
                ("x/a", "x/b", false),
                ("x/b", "x/a", true),
                ("x/b", "x/b", true)
            ]
        );
    }

    #[test]
    fn grid_refuses_malformed_text() {
        for (text, why) in [
            ("x/a x/b\nx/a . X\nx/b . .", "header"),
            ("- x/a x/b\nx/b . X\nx/a . .", "rows follow"),
            ("- x/a x/b\nx/a . o\nx/b . .", "neither"),
            ("- x/a x/b\nx/a .\nx/b . .", "1 cells"),
            ("- x/a x/b\nx/a . X", "1 rows"),
            ("- x/a x/a\nx/a . X\nx/a . .", "twice"),
        ] {
            let err = Grid::parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn ipv4_maps_into_ipv6_keeping_containment() {
        assert_eq!(ipv4_into_ipv6("10.0.1.1"), "fd00::a00:101");
        assert_eq!(ipv4_into_ipv6("10.0.1.0/24"), "fd00::a00:100/120");
        assert_eq!(ipv4_into_ipv6("0.0.0.0/0"), "fd00::/96");
        assert_eq!(ipv4_into_ipv6("10.0.0.0/33"), "10.0.0.0/33");
        assert_eq!(ipv4_into_ipv6("x"), "x");
        let pod: Value = serde_yaml::from_str(
            "{kind: Pod, metadata: {name: a, namespace: x, labels: {pod: a}}, status: {podIP: 10.0.1.1}}",
        )
        .unwrap();
        let policy: Value = serde_yaml::from_str(
            "{kind: NetworkPolicy, metadata: {name: p, namespace: x}, spec: {ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}}]}]}}",
        )
        .unwrap();
        let mut objects = Objects::default();
        objects.apply(pod).unwrap();
        objects.apply(policy).unwrap();
        let text = objects.mapped_into_ipv6().to_yaml().unwrap();
        assert!(text.contains("podIP: fd00::a00:101"), "{text}");
        assert!(text.contains("cidr: fd00::a00:0/112"), "{text}");
        assert!(text.contains("- fd00::a00:100/120"), "{text}");
        assert!(text.contains("pod: a"), "{text}");
    }

    #[test]
    fn probes_and_deletes_parse() {
        let p: Probe = "81/SCTP".parse().unwrap();
        assert_eq!((p.port, p.protocol.as_str()), (81, "SCTP"));
        assert!("0/TCP".parse::<Probe>().is_err());
        assert!("80/ICMP".parse::<Probe>().is_err());
        assert!("80".parse::<Probe>().is_err());
        let k: ObjectKey = "networkpolicy x/deny-all".parse().unwrap();
        assert_eq!(k.to_string(), "NetworkPolicy x/deny-all");
        let k: ObjectKey = "Namespace y".parse().unwrap();
        assert_eq!(k.to_string(), "Namespace y");
        assert!("networkpolicy deny-all".parse::<ObjectKey>().is_err());
        assert!("service x/a".parse::<ObjectKey>().is_err());
    }

    #[test]
    fn apply_replaces_in_place_and_delete_removes() {
        let doc = |name: &str, label: &str| -> Value {
            serde_yaml::from_str(&format!(
                "{{apiVersion: v1, kind: Namespace, metadata: {{name: {name}, labels: {{l: {label}}}}}}}"
            ))
            .unwrap()
        };
        let mut objects = Objects::default();
        objects.apply(doc("x", "one")).unwrap();
        objects.apply(doc("y", "one")).unwrap();
        objects.apply(doc("x", "two")).unwrap();
        let names: Vec<String> = objects.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(names, ["Namespace x", "Namespace y"]);
        assert!(objects.to_yaml().unwrap().contains("l: two"));
        objects.delete(&"namespace x".parse().unwrap()).unwrap();
        assert!(objects.delete(&"namespace x".parse().unwrap()).is_err());
        assert_eq!(objects.iter().count(), 1);
    }

    #[test]
    fn a_case_replays_its_steps_cumulatively() {
        let case = Case::parse(
            r#"
name: t
source: "s"
steps:
  - apply:
      - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: p, namespace: x}, spec: {}}
    expect:
      - {probe: 80/TCP, reachability: "-"}
  - delete: [networkpolicy x/p]
    expect:
      - {probe: 80/TCP, reachability: "-"}
"#,
        )
        .unwrap();
        let states = case.states(&Objects::default()).unwrap();
        assert_eq!(states[0].iter().count(), 1);
        assert_eq!(states[1].iter().count(), 0);
        assert!(Case::parse("name: t\nsource: s\nsteps: []\n").is_err());
        assert!(Case::parse("name: t\nsource: s\nbogus: 1\nsteps: []\n").is_err());
    }
}

/// `palisade matrix -o json`.
#[derive(Debug, Deserialize)]
pub struct MatrixOutput {
    pub pods: Vec<String>,
    pub probes: Vec<ProbeOutput>,
}

#[derive(Debug, Deserialize)]
pub struct ProbeOutput {
    pub port: u16,
    pub protocol: String,
    pub allowed: Vec<Vec<bool>>,
}

impl MatrixOutput {
    /// The verdict for one ordered pair on one probe; `Err` when the output lacks it.
    pub fn allowed(
        &self,
        from: &str,
        to: &str,
        probe: &Probe,
    ) -> std::result::Result<bool, String> {
        let got = self
            .probes
            .iter()
            .find(|p| p.port == probe.port && p.protocol == probe.protocol)
            .ok_or_else(|| format!("probe {probe} is absent from the matrix output"))?;
        let index = |pod: &str| {
            self.pods
                .iter()
                .position(|p| p == pod)
                .ok_or_else(|| format!("pod {pod} is missing from the matrix output"))
        };
        let (i, j) = (index(from)?, index(to)?);
        got.allowed
            .get(i)
            .and_then(|row| row.get(j))
            .copied()
            .ok_or_else(|| format!("the matrix has no cell for {from} -> {to}"))
    }
}

/// Writes the objects to a temporary directory and runs the real `palisade matrix` on them.
pub fn run_matrix(
    objects: &Objects,
    probes: &[Probe],
) -> std::result::Result<MatrixOutput, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temporary dir: {e}"))?;
    let yaml = objects.to_yaml().map_err(|e| format!("{e:#}"))?;
    std::fs::write(dir.path().join("cluster.yaml"), yaml)
        .map_err(|e| format!("cannot write the manifests: {e}"))?;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.arg("matrix").arg("-f").arg(dir.path());
    for p in probes {
        cmd.arg("--probe").arg(p.to_string());
    }
    cmd.args(["-o", "json"]);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run palisade: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "palisade matrix failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "palisade matrix printed no valid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
