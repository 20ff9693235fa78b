//! Datastore URLs: `etcd://host:port[,host:port...]` for etcd, `embedded:` for an in-process
//! store (gone when the process exits; for tests and demos).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::datastore::Datastore;
use crate::embedded::EmbeddedStore;
use crate::error::{Result, StoreError};
use crate::etcd::{EtcdConfig, EtcdStore};

/// Where the datastore is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreUrl {
    /// `host:port` of each etcd member.
    Etcd {
        endpoints: Vec<String>,
    },
    Embedded,
}

const EXPECTED: &str = "expected etcd://host:port[,host:port...] or embedded:";

impl FromStr for DatastoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: String| StoreError::Config(format!("bad datastore URL {s:?}: {why}"));
        let s = s.trim();
        if s == "embedded:" || s == "embedded://" {
            return Ok(DatastoreUrl::Embedded);
        }
        let rest = s
            .strip_prefix("etcd://")
            .ok_or_else(|| bad(EXPECTED.to_string()))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut endpoints = Vec::new();
        for ep in rest.split(',') {
            let (host, port) = ep
                .rsplit_once(':')
                .ok_or_else(|| bad(format!("endpoint {ep:?} has no port; {EXPECTED}")))?;
            if host.is_empty() || host.contains('/') || host.contains('@') {
                return Err(bad(format!(
                    "endpoint {ep:?} has no usable host; {EXPECTED}"
                )));
            }
            match port.parse::<u16>() {
                Ok(p) if p > 0 => {}
                _ => return Err(bad(format!("endpoint {ep:?} has a bad port {port:?}"))),
            }
            endpoints.push(ep.to_string());
        }
        Ok(DatastoreUrl::Etcd { endpoints })
    }
}

impl fmt::Display for DatastoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatastoreUrl::Etcd { endpoints } => write!(f, "etcd://{}", endpoints.join(",")),
            DatastoreUrl::Embedded => f.write_str("embedded:"),
        }
    }
}

/// Connects to the datastore at `url`. For etcd, `settings` gives TLS, auth and timeouts
/// (its `endpoints` are replaced by the URL's).
pub async fn connect(url: &DatastoreUrl, settings: EtcdConfig) -> Result<Arc<dyn Datastore>> {
    match url {
        DatastoreUrl::Embedded => Ok(Arc::new(EmbeddedStore::new())),
        DatastoreUrl::Etcd { endpoints } => {
            let config = EtcdConfig {
                endpoints: endpoints.clone(),
                ..settings
            };
            Ok(Arc::new(EtcdStore::connect(config).await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_good_urls() {
        assert_eq!(
            "etcd://127.0.0.1:2379,etcd-2:2379"
                .parse::<DatastoreUrl>()
                .unwrap(),
            DatastoreUrl::Etcd {
                endpoints: vec!["127.0.0.1:2379".into(), "etcd-2:2379".into()]
            }
        );
        assert_eq!(
            "embedded:".parse::<DatastoreUrl>().unwrap(),
            DatastoreUrl::Embedded
        );
    }

    #[test]
    fn rejects_bad_urls_clearly() {
        for bad in [
            "http://127.0.0.1:2379",
            "etcd://127.0.0.1",
            "etcd://:2379",
            "etcd://a:99999",
            "etcd://a:2379,",
            "127.0.0.1:2379",
        ] {
            let err = bad.parse::<DatastoreUrl>().unwrap_err().to_string();
            assert!(err.contains("bad datastore URL"), "{bad}: {err}");
        }
    }
}
