//! Every setting, by section: each section is its layer's own struct (a clap group and a
//! serde section at once), gathered here as the flags and the file's top-level keys.
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::{
    config::Invalid,
    forward::settings::{CacheSettings, ForwardSettings},
    model::{config::ZoneSettings, ZoneConfig},
    node::settings::NodeSettings,
    ops::settings::OpsSettings,
    source::settings::SourceSettings,
};

/// Every setting, by section: the file's top-level keys are these fields' names.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[command(flatten, next_help_heading = "Source (restart to change)")]
    pub source: SourceSettings,
    /// The file's `kubernetes` section, as the Corefile's plugin.
    #[command(flatten, next_help_heading = "Zone")]
    #[serde(rename = "kubernetes")]
    pub zone: ZoneSettings,
    #[command(flatten, next_help_heading = "Forwarding")]
    pub forward: ForwardSettings,
    #[command(flatten, next_help_heading = "Cache")]
    pub cache: CacheSettings,
    #[command(flatten, next_help_heading = "Node (restart to change)")]
    pub node: NodeSettings,
    #[command(flatten, next_help_heading = "Operations")]
    pub ops: OpsSettings,
}

/// What a reload changes.
#[derive(Debug)]
pub struct Reloaded {
    /// The settings to run with: the file's, but the restart-only sections as they run.
    pub settings: Settings,
    /// Forwarding, cache or load balancing changed: a new resolver.
    pub new_resolver: bool,
    /// The file changes `node` or `source`, which wait for a restart.
    pub restart_needed: bool,
}

impl Settings {
    /// The zone's config: its section, with the addresses the node serves.
    pub fn zone_config(&self) -> Result<ZoneConfig, Invalid> {
        self.zone.zone_config(self.node.served_addrs())
    }

    /// Settings that parse but cannot be used, named by their file path.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.zone_config()?;
        if self.forward.enabled {
            self.forward.upstream_list()?;
            self.forward.stub_list()?;
        }
        Ok(())
    }

    /// `new` as it applies to a daemon running with these settings.
    pub fn reload(&self, mut new: Settings) -> Reloaded {
        let new_resolver = new.forward != self.forward
            || new.cache != self.cache
            || new.zone.loadbalance != self.zone.loadbalance;
        let restart_needed = new.node != self.node || new.source != self.source;
        new.node = self.node.clone();
        new.source = self.source.clone();
        Reloaded {
            settings: new,
            new_resolver,
            restart_needed,
        }
    }
}

/// The settings with every flag at its default, for reading a file on its own.
#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    settings: Settings,
}

impl Default for Settings {
    fn default() -> Self {
        Defaults::parse_from(["xdns"]).settings
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn flags(extra: &[&str]) -> Settings {
        let mut a = vec!["xdns", "--listen", "10.96.0.10", "--manifests", "/m"];
        a.extend(extra);
        Defaults::parse_from(a).settings
    }

    #[test]
    fn a_reload_keeps_what_only_a_restart_changes() {
        let running = flags(&["--ttl", "30"]);
        let new = Defaults::parse_from(["xdns", "--listen", "10.96.0.11", "--ttl", "10"]).settings;
        let r = running.reload(new);
        assert!(r.restart_needed && !r.new_resolver);
        assert_eq!(r.settings.node, running.node);
        assert_eq!(r.settings.source, running.source);
        // Everything else is the new file's.
        assert_eq!(r.settings.zone.ttl, 10);
        let lb = running.reload(flags(&["--no-loadbalance"]));
        assert!(lb.new_resolver && !lb.restart_needed);
        let cache = running.reload(flags(&["--cache-ttl", "5"]));
        assert!(cache.new_resolver);
        assert!(!running.reload(running.clone()).new_resolver);
    }
}
