//! Real etcd processes for tests.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::certs::TestCerts;
use crate::etcd::{EtcdConfig, EtcdStore};

/// How long a member may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One etcd member's fixed identity: name, ports and data directory.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP metrics and `/health` listener (works whether clients use TLS or not).
    metrics_port: u16,
    tls: Option<TestCerts>,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Member {
    fn new(root: &Path, name: &str) -> io::Result<Member> {
        Ok(Member {
            name: name.to_string(),
            client_port: super::free_port()?,
            peer_port: super::free_port()?,
            metrics_port: super::free_port()?,
            tls: None,
            data_dir: root.join(format!("{name}.etcd")),
            log: root.join(format!("{name}.log")),
        })
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&self, initial_cluster: &str, token: &str) -> io::Result<Child> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let log2 = log.try_clone()?;
        let mut cmd = Command::new("etcd");
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url()])
            .args(["--advertise-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", self.metrics_port),
            ])
            .args(["--initial-advertise-peer-urls", &self.peer_url()])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-token", token])
            .args(["--initial-cluster-state", "new"])
            .args(["--max-txn-ops", "100000"])
            .args(["--max-request-bytes", "67108864"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
    }

    /// Polls `/health` until it says true, the process dies, or the timeout passes.
    fn wait_healthy(&self, child: &mut Child) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "etcd {} exited with {status} while starting; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                )));
            }
            if health(self.metrics_port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "etcd {} not healthy after {START_TIMEOUT:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `GET /health` over plain HTTP/1.0.
fn health(port: u16) -> bool {
    http_get(port, "/health").is_some_and(|body| body.contains("\"health\":\"true\""))
}

/// The value of a metric without labels from `/metrics`.
fn metric(port: u16, name: &str) -> Option<f64> {
    let body = http_get(port, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    Some(body)
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn temp_root() -> io::Result<tempfile::TempDir> {
    let b = tempfile::Builder::new().prefix("palisade-etcd-").clone();
    if let Some(dir) = std::env::var_os("PALISADE_ETCD_TMPDIR") {
        return b.tempdir_in(dir);
    }
    // tmpfs makes fsync cheap, which keeps tests and benchmarks fast.
    match b.tempdir_in("/dev/shm") {
        Ok(d) => Ok(d),
        Err(_) => b.tempdir(),
    }
}

/// A single-member etcd on 127.0.0.1; killed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    member: Member,
    child: Option<Child>,
    token: String,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd on free ports in a fresh temporary directory and waits until it is
    /// healthy.
    pub fn start() -> io::Result<EtcdServer> {
        Self::start_inner(false)
    }

    /// Like [`EtcdServer::start`], but clients must use TLS with a client certificate:
    /// a CA, server and client certificates are made with `openssl` in the server's
    /// directory, and [`EtcdServer::config`] carries them.
    pub fn start_tls() -> io::Result<EtcdServer> {
        Self::start_inner(true)
    }

    fn start_inner(tls: bool) -> io::Result<EtcdServer> {
        // Ports are picked free and then released, so another process can take one before
        // etcd binds it: try again with fresh ports rather than fail the test.
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(tls) {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    fn start_once(tls: bool) -> io::Result<EtcdServer> {
        let dir = temp_root()?;
        let mut member = Member::new(dir.path(), "etcd0")?;
        if tls {
            member.tls = Some(TestCerts::generate(&dir.path().join("certs"))?);
        }
        let token = format!("palisade-test-{}", member.client_port);
        let mut server = EtcdServer {
            member,
            child: None,
            token,
            _dir: dir,
        };
        server.restart()?;
        Ok(server)
    }

    /// `127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.member.client_port)
    }

    /// `127.0.0.1:<port>` of the plain-HTTP listener serving `/metrics` and `/health`.
    pub fn metrics_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.member.metrics_port)
    }

    /// `etcd://127.0.0.1:<port>`, for `palisade --datastore`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    /// A client config for this server with short timeouts suited to tests (and the
    /// client certificate when the server uses TLS).
    pub fn config(&self) -> EtcdConfig {
        let mut c = test_config([self.endpoint()]);
        if let Some(t) = &self.member.tls {
            c.ca_file = Some(t.ca.clone());
            c.cert_file = Some(t.client_cert.clone());
            c.key_file = Some(t.client_key.clone());
        }
        c
    }

    /// Turns etcd authentication on with a `root` user of this password (via `etcdctl`);
    /// afterwards clients need `username`/`password` in their config.
    pub fn enable_auth(&self, password: &str) -> io::Result<()> {
        let ctl = |args: &[&str], may_fail: bool| -> io::Result<()> {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", self.endpoint()))
                .args(args)
                .stdin(Stdio::null())
                .output()?;
            if out.status.success() || may_fail {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "etcdctl {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                )))
            }
        };
        if self.member.tls.is_some() {
            return Err(io::Error::other(
                "enable_auth supports plain-text servers only",
            ));
        }
        ctl(&["role", "add", "root"], true)?;
        ctl(
            &[
                "user",
                "add",
                "root",
                &format!("--new-user-password={password}"),
            ],
            false,
        )?;
        ctl(&["user", "grant-role", "root", "root"], true)?;
        ctl(&["auth", "enable"], false)
    }

    /// The certificates, for a server started with [`EtcdServer::start_tls`].
    pub fn certs(&self) -> Option<&TestCerts> {
        self.member.tls.as_ref()
    }

    /// A connected store.
    pub async fn connect(&self) -> crate::Result<EtcdStore> {
        EtcdStore::connect(self.config()).await
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process (data and ports are kept for [`EtcdServer::restart`]).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the process again (same ports, same data) and waits until it is healthy.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let initial = format!("{}={}", self.member.name, self.member.peer_url());
        let mut child = self.member.spawn(&initial, &self.token)?;
        if let Err(e) = self.member.wait_healthy(&mut child) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Test timeouts: quick to notice a dead member, quick to give up.
pub(crate) fn test_config<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdConfig {
    let mut c = EtcdConfig::new(endpoints);
    c.connect_timeout = Duration::from_secs(1);
    c.request_timeout = Duration::from_secs(3);
    c.watch_give_up = Duration::from_secs(20);
    c
}

/// An etcd cluster of several members on loopback; every member is killed on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    children: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `size` members and waits until each reports healthy (a leader is elected).
    pub fn start(size: usize) -> io::Result<EtcdCluster> {
        let dir = temp_root()?;
        let members = (0..size.max(1))
            .map(|i| Member::new(dir.path(), &format!("etcd{i}")))
            .collect::<io::Result<Vec<_>>>()?;
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("palisade-cluster-{}", members[0].client_port);
        let mut cluster = EtcdCluster {
            children: Vec::new(),
            members,
            _dir: dir,
        };
        for m in &cluster.members {
            cluster.children.push(Some(m.spawn(&initial, &token)?));
        }
        for (m, c) in cluster.members.iter().zip(cluster.children.iter_mut()) {
            if let Some(child) = c.as_mut() {
                m.wait_healthy(child)?;
            }
        }
        Ok(cluster)
    }

    /// `127.0.0.1:<port>` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// `etcd://a,b,c`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    pub fn config(&self) -> EtcdConfig {
        test_config(self.endpoints())
    }

    pub async fn connect(&self) -> crate::Result<EtcdStore> {
        EtcdStore::connect(self.config()).await
    }

    /// The members that currently serve at least one watcher (from their metrics), so a
    /// test can kill the very member a client is watching through.
    pub fn members_with_watchers(&self) -> Vec<usize> {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                self.children[*i].is_some()
                    && metric(m.metrics_port, "etcd_debugging_mvcc_watcher_total")
                        .is_some_and(|n| n >= 1.0)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Kills member `index` (by its pid).
    pub fn kill_member(&mut self, index: usize) {
        if let Some(c) = self.children.get_mut(index) {
            kill(c);
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            kill(c);
        }
    }
}
