//! `palisade relay`: one list and one watch of the datastore, served to many agents (the
//! fan-out relay of docs/scale.md, in the manner of Calico's Typha). The logic lives in
//! `palisade_store::relay`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use palisade_store::{keys, Relay, RelayConfig};
use tokio::net::TcpListener;

use super::datastore_args::DatastoreArgs;

const AFTER_HELP: &str = "\
Lists the datastore's --prefix once, watches it, and serves lists and watches of it to
clients (the agents' syncers) over TCP: etcd sees one watcher per relay however many agents
there are. Each change is encoded once and the same bytes go to every client. A client that
asks for history older than the last --history-events events, or falls far behind, is told
to relist. On start-up it prints `listening on ADDR` once the first list is held.

Example:
  palisade relay --datastore etcd://10.0.0.10:2379 --listen 0.0.0.0:5473";

/// Arguments of `palisade relay`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    datastore: DatastoreArgs,
    /// Where agents connect (port 0: any free port; the one taken is printed).
    #[arg(long, default_value = "127.0.0.1:5473", value_name = "ADDR")]
    listen: SocketAddr,
    /// The prefix relayed.
    #[arg(long, default_value = keys::ROOT, value_name = "PREFIX")]
    prefix: String,
    /// Watch events kept for clients resuming from an older revision.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    history_events: usize,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let mut datastore = a.datastore.clone();
        // The relay's own etcd client waits as long as an agent would.
        datastore.etcd_timeout = datastore.etcd_timeout.max(30);
        let upstream = datastore.connect().await?;
        let listener = TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let addr = listener.local_addr()?;
        let relay = Relay::new(RelayConfig {
            prefix: a.prefix.clone(),
            history_events: a.history_events.max(1),
        });
        let follow = tokio::spawn({
            let relay = relay.clone();
            async move { relay.follow(upstream).await }
        });
        relay.ready().await;
        println!(
            "listening on {addr}, relaying {} from {}",
            a.prefix,
            a.datastore.datastore.as_deref().unwrap_or_default()
        );
        std::io::stdout().flush()?;
        tokio::select! {
            r = relay.serve(listener) => r.context("accepting relay clients")?,
            _ = follow => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}
