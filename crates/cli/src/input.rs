//! Reading manifests from files and directories (recursive `*.yaml`, `*.yml`, `*.json`), then
//! handing their text to the model. `-` reads standard input.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use palisade_model::manifest::{self, ManifestError, Manifests};

/// Every manifest file under `paths`, in a stable order (directories walked recursively and
/// sorted; files named directly are taken whatever their extension).
pub fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            out.push(path.clone());
            continue;
        }
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            walk(path, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list directory {}", dir.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses every file; returns all documents or every parse error of every file.
/// I/O problems (missing file, unreadable directory) are returned as `Err`.
#[allow(dead_code)] // for commands that want the documents without a cluster
pub fn read_manifests(
    paths: &[PathBuf],
) -> Result<std::result::Result<Manifests, Vec<ManifestError>>> {
    let (all, errors) = read_manifests_partial(paths)?;
    Ok(if errors.is_empty() {
        Ok(all)
    } else {
        Err(errors)
    })
}

/// Parses every file and returns the documents that parsed together with the parse errors of
/// the others, so that a caller can also check the documents that did parse.
/// I/O problems are returned as `Err`.
pub fn read_manifests_partial(paths: &[PathBuf]) -> Result<(Manifests, Vec<ManifestError>)> {
    let files = manifest_files(paths)?;
    if files.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        anyhow::bail!(
            "no manifest files (*.yaml, *.yml, *.json) found in {}",
            names.join(", ")
        );
    }
    let mut all = Manifests::default();
    let mut errors = Vec::new();
    for file in files {
        let text = if file.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read standard input")?;
            s
        } else {
            std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?
        };
        let name = if file.as_os_str() == "-" {
            "<stdin>".to_string()
        } else {
            file.display().to_string()
        };
        // Documents that parsed are kept even when others of the same file did not, so that
        // `validate` lists every error at once.
        let (m, e) = manifest::parse_documents_partial(&name, &text);
        all.documents.extend(m.documents);
        for (kind, n) in m.skipped {
            *all.skipped.entry(kind).or_default() += n;
        }
        errors.extend(e);
    }
    Ok((all, errors))
}

/// Prints the one summary warning for skipped kinds, if any.
pub fn warn_skipped(manifests: &Manifests) {
    if manifests.skipped.is_empty() {
        return;
    }
    let list: Vec<String> = manifests
        .skipped
        .iter()
        .map(|(kind, n)| format!("{kind} ({n})"))
        .collect();
    eprintln!(
        "warning: skipped objects of kinds Palisade does not use: {}",
        list.join(", ")
    );
}

/// Reads, validates and converts manifests: the documents read, and the cluster or every
/// error (parse errors of files that did not parse plus validation errors of the documents of
/// those that did). I/O problems are returned as `Err`.
pub fn check(
    paths: &[PathBuf],
) -> Result<(
    Manifests,
    std::result::Result<palisade_model::Cluster, Vec<ManifestError>>,
)> {
    let (manifests, mut errors) = read_manifests_partial(paths)?;
    let cluster = palisade_model::convert::cluster(&manifests.documents);
    let result = match cluster {
        Ok(c) if errors.is_empty() => Ok(c),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.extend(e);
            errors.sort_by(|a, b| a.location.cmp(&b.location));
            Err(errors)
        }
    };
    Ok((manifests, result))
}

/// Reads, validates and converts manifests into a cluster. Every error is printed to stderr
/// and the function fails, so nothing is half-used.
pub fn load_cluster(paths: &[PathBuf]) -> Result<palisade_model::Cluster> {
    let (manifests, result) = check(paths)?;
    warn_skipped(&manifests);
    result.map_err(report)
}

fn report(errors: Vec<ManifestError>) -> anyhow::Error {
    report_in(&errors, "the manifests")
}

/// Prints every error and returns the one-line failure: `N error(s) in WHAT; nothing was used`.
pub fn report_in(errors: &[ManifestError], what: &str) -> anyhow::Error {
    for e in errors {
        eprintln!("error: {e}");
    }
    anyhow::anyhow!("{} error(s) in {what}; nothing was used", errors.len())
}
