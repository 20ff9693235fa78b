//! Where `matrix` and `explain` get the cluster they compute over: manifests (`-f`), or what
//! the datastore holds (`--datastore` or `PALISADE_DATASTORE`): the namespaces, endpoints and
//! policies the agents enforce, read in one listing (one revision).

use std::path::PathBuf;

use anyhow::Result;
use palisade_model::Cluster;
use palisade_store::{keys, Datastore};

use crate::cmd::datastore_args::{self as ds, DatastoreArgs};
use crate::input;

/// `-f` or `--datastore`: exactly one.
#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// Manifest files or directories (searched recursively for *.yaml, *.yml, *.json);
    /// `-` reads standard input. Either this or --datastore.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1..)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub datastore: DatastoreArgs,
    /// Evaluate as if the staged policies (annotated `palisade.dev/staged: "true"`) were
    /// enforced. Without it they are left out: the cluster as it is enforced.
    #[arg(long)]
    pub staged: bool,
}

/// A command line that names no input, or two: a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The environment variable that stands for `--datastore`.
const DATASTORE_ENV: &str = "PALISADE_DATASTORE";

impl SourceArgs {
    /// Which input the command line chose. `-f` with an explicit `--datastore` is an error;
    /// `-f` with only `PALISADE_DATASTORE` in the environment reads the files (the command
    /// line is more specific than the environment).
    pub fn choice(&self) -> Result<Choice<'_>, UsageError> {
        let from_env = std::env::var(DATASTORE_ENV).ok();
        let explicit_datastore = self
            .datastore
            .datastore
            .as_ref()
            .is_some_and(|d| from_env.as_deref() != Some(d.as_str()));
        match (self.files.is_empty(), &self.datastore.datastore) {
            (false, _) if explicit_datastore => Err(UsageError(
                "give either -f/--filename (manifests) or --datastore (the live cluster), not both"
                    .into(),
            )),
            (false, _) => Ok(Choice::Files(&self.files)),
            (true, Some(_)) => Ok(Choice::Datastore(&self.datastore)),
            (true, None) => Err(UsageError(format!(
                "no input: pass -f/--filename PATH (manifests) or --datastore URL (the live \
                 cluster, etcd://HOST:PORT; or set {DATASTORE_ENV})"
            ))),
        }
    }

    /// For `matrix --what-if`: the datastore is the input (the -f files are the change).
    pub fn live_choice(&self) -> Result<Choice<'_>, UsageError> {
        match &self.datastore.datastore {
            Some(_) => Ok(Choice::Datastore(&self.datastore)),
            None => Err(UsageError(format!(
                "--what-if compares a change with the datastore: pass --datastore URL or set \
                 {DATASTORE_ENV} (to compare manifests: -f CURRENT --what-if-f NEW)"
            ))),
        }
    }

    /// The cluster: from the manifests, or from the datastore.
    pub fn load(&self) -> Result<Cluster> {
        Ok(self.staged_view(self.load_as_stored()?))
    }

    /// The cluster as `--staged` asks to see it.
    pub fn staged_view(&self, cluster: Cluster) -> Cluster {
        if self.staged {
            cluster.with_staged_enforced()
        } else {
            cluster
        }
    }

    /// The cluster as the input holds it (staged policies marked, not enforced).
    pub fn load_as_stored(&self) -> Result<Cluster> {
        match self.choice()? {
            Choice::Files(files) => input::load_cluster(files),
            Choice::Datastore(args) => ds::runtime()?.block_on(async {
                let store = args.connect().await?;
                load_live(store.as_ref()).await
            }),
        }
    }
}

/// The input chosen.
pub enum Choice<'a> {
    Files(&'a [PathBuf]),
    Datastore(&'a DatastoreArgs),
}

/// Everything the agents compute from, as one [`Cluster`]: one listing of the whole key
/// space (a consistent snapshot), default tiers, namespaces, nodes, endpoints, host-networked
/// pods (with their node's addresses) and policies with their rule names. A pod stored under
/// two keys (it moved, or became host-networked, and its old key is not deleted yet) counts
/// once, with its newest value. Values that cannot be decoded are reported and skipped, as
/// the agents skip them.
pub async fn load_live(store: &dyn Datastore) -> Result<Cluster> {
    let mut objects = ds::list_objects(store, keys::ROOT).await?;
    // Oldest first, so that the newest value of a pod stored twice wins.
    objects.sort_by_key(|s| s.kv.mod_revision);
    let mut cluster = Cluster::new();
    for s in objects {
        s.record.object.upsert_into(&mut cluster);
    }
    // Files give policies in a stable order; so does the datastore (by key).
    cluster.policies.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::{Probe, ProbeMatrix};
    use palisade_store::{EmbeddedStore, StoredObject, OWNER_APPLY};

    /// The embedded store (not reachable across processes, so tested here): what is stored
    /// is what the files say, and the matrix is the same.
    #[test]
    fn the_embedded_store_gives_the_cluster_of_the_files() {
        let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
        let files = input::load_cluster(&[seed]).unwrap();
        let store = EmbeddedStore::new();
        let live = ds::runtime().unwrap().block_on(async {
            let objects = files
                .namespaces
                .values()
                .cloned()
                .map(StoredObject::Namespace)
                .chain(files.endpoints.iter().cloned().map(StoredObject::Endpoint))
                .chain(files.policies.iter().cloned().map(StoredObject::Policy));
            for o in objects {
                let key = o.key().unwrap();
                store
                    .put(&key, o.encode(OWNER_APPLY).unwrap())
                    .await
                    .unwrap();
            }
            load_live(&store).await.unwrap()
        });
        assert_eq!(live.endpoints, files.endpoints);
        assert_eq!(live.namespaces, files.namespaces);
        assert_eq!(live.policies.len(), files.policies.len());
        let probes: Vec<Probe> = ["80", "53/udp", "icmp"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let rows = |c: &Cluster| -> Vec<ProbeMatrix> { palisade_engine::matrix(c, &probes).probes };
        assert_eq!(rows(&live), rows(&files));
    }
}
