//! The lab daemon (`palisade lab daemon`, started detached by `lab up`): it holds the pod
//! servers, the datastore connection (for `embedded:`, the store itself) and the agents, and
//! answers the [`crate::control`] protocol on `/run/palisade/lab/<name>/daemon.sock`.
//!
//! ```text
//!  lab up ─► topology ─► state.json ─► daemon: servers ─► datastore (load cluster)
//!                                              ─► agents (in process, or `palisade agent`
//!                                                 processes for etcd) ─► socket
//! ```
//!
//! Agents: see [`crate::agents`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_model::{Cluster, Endpoint, EndpointId, Namespace, Policy, PolicyId};
use palisade_store::{keys, Datastore, DatastoreUrl, EtcdConfig, Op, StoredObject, OWNER_APPLY};

use crate::agents::{spawn_agent, AgentHandle};
pub use crate::agents::{AgentLauncher, AgentSpec, RunningAgent};
use crate::control::{AgentState, Request, Response};
use crate::error::{LabError, Result};
use crate::names::LabNames;
use crate::server::PodServer;
use crate::state::LabState;

/// How long `apply` and `ready` wait for the agents to program a change.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Most operations per datastore transaction (etcd's default limit is 128).
const BATCH: usize = 100;

struct Daemon {
    names: LabNames,
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn Datastore>,
    state: LabState,
    cluster: Mutex<Cluster>,
    /// By network namespace: the host-networked pods of a node share their node's.
    servers: Mutex<BTreeMap<String, PodServer>>,
    agents: Mutex<Vec<AgentHandle>>,
    /// Serializes writes, so each waits for its own revision.
    writes: Mutex<()>,
    /// The revision of the daemon's last write (agents' status writes do not count).
    last_write: std::sync::atomic::AtomicI64,
}

/// Pods made by one `apply`: where they went, and their endpoints with node and address.
#[derive(Default)]
struct AddedPods {
    plan: crate::plan::Plan,
    pods: Vec<crate::plan::PodPlan>,
    endpoints: Vec<Endpoint>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the daemon of lab `names` until a `shutdown` request. `launcher` starts in-process
/// agents (embedded datastore); `None` runs no agents in process.
pub fn run(names: LabNames, launcher: Option<Box<dyn AgentLauncher>>) -> Result<()> {
    let state = LabState::load(&names)?.ok_or_else(|| LabError::State {
        path: names.state_file(),
        reason: "no state file: run `palisade lab up`".into(),
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| LabError::io("cannot start the async runtime", e))?;
    let url: DatastoreUrl = state.datastore.parse()?;
    let store = runtime.block_on(palisade_store::connect(
        &url,
        EtcdConfig::new(Vec::<String>::new()),
    ))?;
    eprintln!("lab {}: datastore {}", names.name, store.describe());

    let mut servers = BTreeMap::new();
    for pod in &state.plan.pods {
        servers
            .entry(pod.netns.clone())
            .or_insert_with(|| server_of(pod))
            .serve(&pod.ports)?;
    }
    eprintln!("lab {}: {} pod servers up", names.name, servers.len());

    let daemon = Arc::new(Daemon {
        names: names.clone(),
        runtime,
        store,
        cluster: Mutex::new(state.cluster.clone()),
        servers: Mutex::new(servers),
        agents: Mutex::new(Vec::new()),
        writes: Mutex::new(()),
        last_write: std::sync::atomic::AtomicI64::new(0),
        state: state.clone(),
    });
    daemon.load_cluster(matches!(url, DatastoreUrl::Etcd { .. }))?;
    if state.agents {
        let started = daemon.start_agents(&url, launcher.as_deref())?;
        state.update(&names, |s| {
            s.agent_pids = started;
            s.daemon_pid = Some(std::process::id());
        })?;
    }

    let socket = names.socket();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| LabError::io(format!("cannot listen on {}", socket.display()), e))?;
    eprintln!("lab {}: listening on {}", names.name, socket.display());
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let d = daemon.clone();
        std::thread::spawn(move || d.serve_connection(conn));
    }
    Ok(())
}

impl Daemon {
    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Writes the whole cluster; for etcd, first removes whatever Palisade objects the store
    /// held (the lab owns the datastore it is given).
    fn load_cluster(&self, clear: bool) -> Result<()> {
        let mut ops = Vec::new();
        if clear {
            let listing = self.block(self.store.list(keys::ROOT))?;
            ops.extend(listing.items.into_iter().map(|kv| Op::delete(kv.key)));
        }
        let cluster = lock(&self.cluster).clone();
        // Host-networked pods as host endpoints (never workload endpoints), policies with
        // their rule names, and the nodes.
        for object in StoredObject::of_cluster(&cluster) {
            ops.push(put(&object)?);
        }
        self.write(ops)?;
        Ok(())
    }

    /// Writes `ops` in transactions of at most [`BATCH`]; the last revision.
    fn write(&self, ops: Vec<Op>) -> Result<i64> {
        let mut revision = self.block(self.store.current_revision())?;
        let mut ops = ops;
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(BATCH));
            revision = self.block(self.store.apply_batch(ops))?;
            ops = rest;
        }
        if let Some(marker) = self.marker()? {
            revision = marker;
        }
        self.last_write
            .store(revision, std::sync::atomic::Ordering::SeqCst);
        Ok(revision)
    }

    /// Rewrites one namespace unchanged, one revision after a write, and returns that
    /// revision. An agent may take a revision as applied after seeing only part of the
    /// events of a multi-key write at that revision (they can reach it in several batches);
    /// once it has applied the marker's revision it has seen every event before it.
    fn marker(&self) -> Result<Option<i64>> {
        let listing = self.block(self.store.list(keys::NAMESPACES))?;
        let Some(kv) = listing.items.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(self.block(self.store.put(&kv.key, kv.value))?))
    }

    fn start_agents(
        &self,
        url: &DatastoreUrl,
        launcher: Option<&dyn AgentLauncher>,
    ) -> Result<Vec<u32>> {
        let mut pids = Vec::new();
        let mut agents = lock(&self.agents);
        for node in &self.state.plan.nodes {
            let spec = AgentSpec {
                node: node.name.clone(),
                netns: node.netns.clone(),
                dataplane: self.state.dataplane.clone(),
                endpoint_match: self.state.endpoint_match,
                revoke: self.state.revoke,
                nft_layout: self.state.nft_layout.clone(),
                log_file: self
                    .names
                    .state_dir()
                    .join(format!("agent-{}.log", node.name)),
            };
            match (url, launcher) {
                (DatastoreUrl::Embedded, Some(l)) => {
                    let a = l
                        .start(&spec, self.store.clone(), self.runtime.handle())
                        .map_err(|e| {
                            LabError::Daemon(format!("agent for node {}: {e}", node.name))
                        })?;
                    agents.push(AgentHandle::InProcess(a));
                }
                (DatastoreUrl::Embedded, None) => {
                    return Err(LabError::Daemon(
                        "this palisade binary cannot run agents in process".into(),
                    ))
                }
                (DatastoreUrl::Etcd { .. }, _) => {
                    let child = spawn_agent(&spec, &url.to_string())?;
                    pids.push(child.id());
                    agents.push(AgentHandle::Process(child));
                }
            }
        }
        Ok(pids)
    }

    fn serve_connection(self: Arc<Self>, conn: UnixStream) {
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            return;
        }
        let request: std::result::Result<Request, _> = serde_json::from_str(&line);
        let shutdown = matches!(request, Ok(Request::Shutdown));
        let response = match request {
            Ok(r) => self
                .handle(r)
                .unwrap_or_else(|e| Response::err(e.to_string())),
            Err(e) => Response::err(format!("bad request: {e}")),
        };
        let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
        text.push('\n');
        let mut conn = conn;
        let _ = conn.write_all(text.as_bytes());
        let _ = conn.flush();
        if shutdown {
            eprintln!("lab {}: shut down", self.names.name);
            std::process::exit(0);
        }
    }

    fn handle(&self, request: Request) -> Result<Response> {
        Ok(match request {
            Request::Ping => Response::ok(serde_json::json!("pong")),
            Request::Ready => {
                let rev = self.last_write.load(std::sync::atomic::Ordering::SeqCst);
                self.wait_sync(rev)?;
                Response::ok(serde_json::json!({ "revision": rev }))
            }
            Request::Cluster => Response::ok(to_value(&*lock(&self.cluster))?),
            Request::Status => Response::ok(serde_json::json!({
                "revision": self.block(self.store.current_revision())?,
                "datastore": self.store.describe(),
                "agents": self.agent_states()?,
            })),
            Request::AgentStatuses => {
                let listing = self.block(self.store.list(keys::STATUS))?;
                let records: Vec<_> = listing
                    .items
                    .iter()
                    .map(|kv| {
                        serde_json::json!({
                            "key": kv.key,
                            "value": String::from_utf8_lossy(&kv.value),
                        })
                    })
                    .collect();
                Response::ok(serde_json::json!({ "statuses": records }))
            }
            Request::Apply {
                namespaces,
                pods,
                policies,
            } => {
                let rev = self.apply(namespaces, pods, policies)?;
                Response::ok(serde_json::json!({ "revision": rev }))
            }
            Request::DeletePolicy { id } => {
                let rev = self.delete_policies(std::slice::from_ref(&id))?;
                Response::ok(serde_json::json!({ "revision": rev }))
            }
            Request::DeletePod { id } => {
                let rev = self.delete_pod(&id)?;
                Response::ok(serde_json::json!({ "revision": rev }))
            }
            Request::DeletePolicies { ids } => {
                let rev = self.delete_policies(&ids)?;
                Response::ok(serde_json::json!({ "revision": rev }))
            }
            Request::Serve { ports } => {
                for server in lock(&self.servers).values_mut() {
                    server.serve(&ports)?;
                }
                Response::ok(serde_json::Value::Null)
            }
            Request::Shutdown => {
                self.stop_agents();
                let _ = std::fs::remove_file(self.names.socket());
                Response::ok(serde_json::Value::Null)
            }
        })
    }

    fn apply(
        &self,
        namespaces: Vec<Namespace>,
        pods: Vec<Endpoint>,
        policies: Vec<Policy>,
    ) -> Result<i64> {
        let _write = lock(&self.writes);
        let mut ops = Vec::new();
        let mut cluster = lock(&self.cluster).clone();
        let mut new_ports = Vec::new();
        for ns in namespaces {
            ops.push(put(&StoredObject::Namespace(ns.clone()))?);
            cluster.upsert_namespace(ns);
        }
        let mut new_pods = Vec::new();
        for pod in pods {
            if cluster.is_host_network(&pod.id) {
                return Err(LabError::Daemon(format!(
                    "pod {} is host-networked: `lab apply` cannot change it (it is made by `lab up`)",
                    pod.id
                )));
            }
            let Some(existing) = cluster.endpoint(&pod.id).cloned() else {
                new_pods.push(pod);
                continue;
            };
            let updated = Endpoint {
                labels: pod.labels,
                ports: pod.ports,
                ..existing
            };
            new_ports.push((updated.id.clone(), updated.ports.clone()));
            ops.push(put(&StoredObject::Endpoint(updated.clone()))?);
            cluster.upsert_endpoint(updated);
        }
        for p in policies {
            ops.push(put(&StoredObject::Policy(p.clone()))?);
            cluster.upsert_policy(p);
        }
        // New pods get their namespace, veth, routes and server before the datastore hears
        // of them; if anything fails, what was made is removed and nothing is written.
        let added = self.add_pods(new_pods)?;
        for ep in &added.endpoints {
            if !cluster.namespaces.contains_key(&ep.id.namespace) {
                let ns = Namespace::implicit(&ep.id.namespace);
                ops.push(put(&StoredObject::Namespace(ns))?);
            }
            ops.push(put(&StoredObject::Endpoint(ep.clone()))?);
            cluster.upsert_endpoint(ep.clone());
        }
        if !new_ports.is_empty() {
            let plan = self.current_plan()?;
            let mut servers = lock(&self.servers);
            for (id, ports) in new_ports {
                let server = plan.pod(&id).and_then(|p| servers.get_mut(&p.netns));
                if let Some(s) = server {
                    s.serve(&ports)?;
                }
            }
        }
        let rev = match self.write(ops) {
            Ok(rev) => rev,
            Err(e) => {
                self.remove_pods(&added.plan, &added.pods);
                return Err(e);
            }
        };
        *lock(&self.cluster) = cluster;
        self.wait_sync(rev)?;
        Ok(rev)
    }

    /// Makes pods the lab does not have yet (see [`crate::plan::place_pod`]): topology,
    /// server, and the state file (so `lab status`, `probe`, `exec` and `down` know them).
    fn add_pods(&self, pods: Vec<Endpoint>) -> Result<AddedPods> {
        let mut added = AddedPods::default();
        if pods.is_empty() {
            return Ok(added);
        }
        let mut plan = self.current_plan()?;
        let wiring = self.wiring();
        for mut ep in pods {
            let pod = crate::plan::place_pod(&self.names, &plan, wiring, &mut ep)?;
            plan.pods.push(pod.clone());
            added.pods.push(pod);
            added.endpoints.push(ep);
        }
        added.plan = plan;
        let made = (|| -> Result<()> {
            let mut created = Vec::new();
            for k in 0..added.pods.len() {
                let mut pod = added.pods[k].clone();
                let built = crate::topology::build_pod(
                    &self.names,
                    wiring,
                    &added.plan,
                    &mut pod,
                    &mut created,
                );
                // The addresses IPAM gave (or none yet) are what the datastore gets.
                added.endpoints[k].ips = pod.ips.clone();
                if let Some(p) = added.plan.pods.iter_mut().find(|p| p.id == pod.id) {
                    *p = pod.clone();
                }
                added.pods[k] = pod;
                self.state.update(&self.names, |s| {
                    s.netns.append(&mut created);
                })?;
                built?;
                let pod = &added.pods[k];
                let mut server = server_of(pod);
                server.serve(&pod.ports)?;
                lock(&self.servers).insert(pod.netns.clone(), server);
            }
            let pods = added.pods.clone();
            self.state
                .update(&self.names, |s| s.plan.pods.extend(pods))?;
            Ok(())
        })();
        if let Err(e) = made {
            self.remove_pods(&added.plan, &added.pods);
            return Err(e);
        }
        eprintln!("lab {}: {} pod(s) added", self.names.name, added.pods.len());
        Ok(added)
    }

    /// Deletes pod `id`: its endpoint from the datastore (and waits until every agent has
    /// programmed that), then its server, namespace, veth and routes.
    fn delete_pod(&self, id: &EndpointId) -> Result<i64> {
        let _write = lock(&self.writes);
        let mut cluster = lock(&self.cluster).clone();
        let Some(ep) = cluster.endpoint(id).cloned() else {
            return Err(LabError::Daemon(format!("pod {id} is not in the lab")));
        };
        if cluster.is_host_network(id) {
            return Err(LabError::Daemon(format!(
                "pod {id} is host-networked: it lives in its node's namespace until `lab down`"
            )));
        }
        cluster.endpoints.retain(|e| &e.id != id);
        let key = keys::endpoint(ep.node.as_deref(), &id.namespace, &id.name)?;
        let rev = self.write(vec![Op::delete(key)])?;
        *lock(&self.cluster) = cluster;
        self.wait_sync(rev)?;
        let plan = self.current_plan()?;
        if let Some(pod) = plan.pod(id) {
            self.remove_pods(&plan, std::slice::from_ref(pod));
        }
        Ok(rev)
    }

    fn wiring(&self) -> crate::plan::Wiring {
        crate::plan::Wiring {
            cni: self.state.cni,
            family: self.state.ip_family,
        }
    }

    /// The lab's plan as the state file has it now (pods added or removed since `up`
    /// included).
    fn current_plan(&self) -> Result<crate::plan::Plan> {
        Ok(LabState::load(&self.names)?
            .map(|s| s.plan)
            .unwrap_or_else(|| self.state.plan.clone()))
    }

    /// Removes pods made by [`Daemon::add_pods`] or `lab up` (best effort: `lab down`
    /// removes the rest): servers, topology, and their entries in the state file.
    fn remove_pods(&self, plan: &crate::plan::Plan, pods: &[crate::plan::PodPlan]) {
        for pod in pods {
            // The server's threads keep their sockets (and so the pod's namespace) until the
            // daemon exits; `remove_pod` deletes the veth, so nothing reaches them.
            if !pod.host_network {
                lock(&self.servers).remove(&pod.netns);
            }
            let _ = crate::topology::remove_pod(&self.names, plan, pod);
        }
        let ids: Vec<EndpointId> = pods.iter().map(|p| p.id.clone()).collect();
        let gone: Vec<String> = pods.iter().map(|p| p.netns.clone()).collect();
        let _ = self.state.update(&self.names, |s| {
            s.plan.pods.retain(|p| !ids.contains(&p.id));
            s.netns.retain(|n| !gone.contains(n));
        });
    }

    /// Deletes every policy of `ids` (all must be in the lab) in one write.
    fn delete_policies(&self, ids: &[PolicyId]) -> Result<i64> {
        let _write = lock(&self.writes);
        let mut cluster = lock(&self.cluster).clone();
        let mut ops = Vec::new();
        for id in ids {
            let before = cluster.policies.len();
            cluster.policies.retain(|p| &p.id != id);
            if cluster.policies.len() == before {
                return Err(LabError::Daemon(format!(
                    "networkpolicy {id} is not in the lab"
                )));
            }
            ops.push(Op::delete(keys::policy(
                &id.tier,
                id.namespace.as_deref(),
                &id.name,
            )?));
        }
        let rev = self.write(ops)?;
        *lock(&self.cluster) = cluster;
        self.wait_sync(rev)?;
        Ok(rev)
    }

    fn agent_states(&self) -> Result<Vec<AgentState>> {
        let listing = self.block(self.store.list(keys::STATUS))?;
        let mut by_node: BTreeMap<String, AgentState> = BTreeMap::new();
        for kv in listing.items {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&kv.value) else {
                continue;
            };
            let spec = &v["spec"];
            let Some(node) = spec["node"].as_str() else {
                continue;
            };
            by_node.insert(
                node.to_string(),
                AgentState {
                    node: node.to_string(),
                    in_sync: spec["inSync"].as_bool().unwrap_or(false),
                    revision: spec["revision"].as_i64().unwrap_or(0),
                    last_error: spec["lastError"].as_str().map(str::to_string),
                    metrics_addr: spec["metricsAddr"].as_str().map(str::to_string),
                },
            );
        }
        Ok(self
            .state
            .plan
            .nodes
            .iter()
            .map(|n| {
                by_node.remove(&n.name).unwrap_or(AgentState {
                    node: n.name.clone(),
                    ..Default::default()
                })
            })
            .collect())
    }

    /// Waits until every node's agent reports in sync at `revision` or later.
    fn wait_sync(&self, revision: i64) -> Result<()> {
        if !self.state.agents {
            return Ok(());
        }
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let states = self.agent_states()?;
            if states.iter().all(|s| s.in_sync && s.revision >= revision) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let behind: Vec<String> = states
                    .iter()
                    .filter(|s| !(s.in_sync && s.revision >= revision))
                    .map(|s| {
                        format!(
                            "{} (in sync: {}, revision {}{})",
                            s.node,
                            s.in_sync,
                            s.revision,
                            s.last_error
                                .as_ref()
                                .map(|e| format!(", last error: {e}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                return Err(LabError::Daemon(format!(
                    "agents did not reach revision {revision} within {}s: {}",
                    SYNC_TIMEOUT.as_secs(),
                    behind.join("; ")
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop_agents(&self) {
        let agents = std::mem::take(&mut *lock(&self.agents));
        for a in agents {
            match a {
                AgentHandle::InProcess(a) => a.stop(),
                AgentHandle::Process(mut child) => {
                    crate::topology::stop_process(child.id(), Duration::from_secs(3));
                    let _ = child.wait();
                }
            }
        }
    }
}

/// The server of a pod: in its own namespace on every address, or (host-networked) in its
/// node's on the node's addresses.
fn server_of(pod: &crate::plan::PodPlan) -> PodServer {
    if pod.host_network {
        PodServer::on_addresses(&pod.netns, &pod.id.to_string(), &pod.ips)
    } else {
        PodServer::new(&pod.netns, &pod.id.to_string())
    }
}

fn put(object: &StoredObject) -> Result<Op> {
    Ok(Op::put(object.key()?, object.encode(OWNER_APPLY)?))
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| LabError::Daemon(format!("cannot encode: {e}")))
}
