//! How to reach etcd: endpoints, TLS, auth and timeouts.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::error::{Result, StoreError};

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `host:port` of each member (or full `http://`/`https://` URLs).
    pub endpoints: Vec<String>,
    /// PEM CA bundle to verify the servers; setting it (or a client certificate) turns TLS on.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The TLS server name to verify (defaults to the endpoint's host).
    pub tls_domain: Option<String>,
    /// Username and password (etcd auth).
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long one request may take (also bounds the first check in [`EtcdStore::connect`]).
    pub request_timeout: Duration,
    /// How long a watch keeps trying to reconnect before it reports `Unavailable`.
    pub watch_give_up: Duration,
}

impl EtcdConfig {
    /// Plain-text config for these endpoints with the default timeouts (connect 3 s, request
    /// 5 s, watch give-up 30 s).
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            tls_domain: None,
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            watch_give_up: Duration::from_secs(30),
        }
    }

    pub(crate) fn describe(&self) -> String {
        self.endpoints.join(",")
    }

    pub(crate) fn connect_options(&self) -> Result<ConnectOptions> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_keep_alive(Duration::from_secs(5), self.request_timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => {
                opts = opts
                    .with_user(u.clone(), p.clone())
                    .with_auto_token_refresh(true)
            }
            (Some(u), None) => {
                return Err(StoreError::Config(format!(
                "etcd user {u:?} has no password (give --etcd-password or PALISADE_ETCD_PASSWORD)"
            )))
            }
            (None, Some(_)) => {
                return Err(StoreError::Config(
                    "an etcd password was given without a user".into(),
                ))
            }
            (None, None) => {}
        }
        if self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca, "CA")?));
            }
            match (&self.cert_file, &self.key_file) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(Identity::from_pem(
                        read_pem(c, "client certificate")?,
                        read_pem(k, "client key")?,
                    ))
                }
                (None, None) => {}
                _ => {
                    return Err(StoreError::Config(
                        "a client certificate needs both --etcd-cert and --etcd-key".into(),
                    ))
                }
            }
            if let Some(d) = &self.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            opts = opts.with_tls(tls);
        }
        Ok(opts)
    }
}

fn read_pem(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| StoreError::Config(format!("cannot read {what} file {}: {e}", path.display())))
}
