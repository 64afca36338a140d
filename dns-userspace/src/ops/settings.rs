//! The `ops` section: what an operator turns on a running daemon (query log, lameduck,
//! what happens at exit); applied on reload.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config;

#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpsSettings {
    /// Log one line per query (client, name, type, rcode, microseconds, path; CoreDNS
    /// `log`; file key `log`).
    #[arg(long = "log-queries")]
    #[serde(rename = "log")]
    pub log_queries: bool,
    /// On SIGTERM: not ready at once, still answering (and `/health` 200) for this long,
    /// then exit (CoreDNS `health { lameduck 5s }`; the DaemonSet sets 5). Seconds, or `5s`.
    #[arg(long = "lameduck-secs", default_value = "0", value_parser = config::secs)]
    #[serde(with = "config::span")]
    pub lameduck: Duration,
    /// On exit, detach from every interface and remove the pins (for an uninstall: set it
    /// in the file, which is reloaded, before deleting the DaemonSet). Without it the
    /// pinned programs keep answering until the next daemon adopts them.
    #[arg(long)]
    pub detach_on_exit: bool,
}
