//! The `run` command line: the config file's path and the settings, one section per layer
//! (each both a flag group and a file section), laid over by the file section by section.
use std::path::PathBuf;

use clap::Parser;
use dns_userspace::{
    config::{self, ConfigError, Invalid},
    forward::settings::{CacheSettings, ForwardSettings},
    model::{config::ZoneSettings, ZoneConfig},
    node::settings::NodeSettings,
    ops::settings::OpsSettings,
    source::settings::SourceSettings,
};
use serde::{Deserialize, Serialize};

#[derive(Parser, Clone, Debug)]
pub struct RunArgs {
    /// Configuration file (YAML; see docs/node.md), laid over these flags and reloaded when it
    /// changes. A bad file is refused with its line and field; the running config stays.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
}

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
    fn validate(&self) -> Result<(), Invalid> {
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

impl RunArgs {
    /// The flags with `--config` (if given) laid over them; the error names the line and
    /// field of whatever the file gets wrong, including values only checked here.
    pub fn effective(&self) -> anyhow::Result<Settings> {
        let Some(path) = &self.config else {
            self.settings
                .validate()
                .map_err(|e| anyhow::anyhow!("{e} (or its flag)"))?;
            return Ok(self.settings.clone());
        };
        let (s, text) = config::load(&self.settings, path)?;
        s.validate()
            .map_err(|e| ConfigError::invalid(&path.display().to_string(), &text, e))?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::RunArgs;

    fn flags(extra: &[&str]) -> RunArgs {
        let mut a = vec!["xdns", "--listen", "10.96.0.10", "--manifests", "/m"];
        a.extend(extra);
        RunArgs::parse_from(a)
    }

    #[test]
    fn one_field_is_both_the_flag_and_the_file_key() {
        let f = flags(&[
            "--ttl",
            "10",
            "--no-loadbalance",
            "--forward-timeout-ms",
            "500",
        ]);
        let s = &f.settings;
        assert_eq!((s.zone.ttl, s.zone.loadbalance), (10, false));
        assert_eq!(s.forward.timeout, Duration::from_millis(500));
        assert!(s.forward.enabled && !flags(&["--no-forward"]).settings.forward.enabled);
        let text = "kubernetes:\n  loadbalance: true\nforward:\n  timeout: 2s\nops:\n  log: true\n";
        let over = dns_userspace::config::overlay(s, "c.yaml", text).unwrap();
        assert_eq!((over.zone.ttl, over.zone.loadbalance), (10, true));
        assert_eq!(over.forward.timeout, Duration::from_secs(2));
        assert!(over.ops.log_queries);
        assert_eq!(
            over.node, s.node,
            "sections the file leaves out keep the flags"
        );
    }

    #[test]
    fn a_reload_keeps_what_only_a_restart_changes() {
        let running = flags(&["--ttl", "30"]).settings;
        let new = RunArgs::parse_from(["xdns", "--listen", "10.96.0.11", "--ttl", "10"]).settings;
        let r = running.reload(new);
        assert!(r.restart_needed && !r.new_resolver);
        assert_eq!(r.settings.node, running.node);
        assert_eq!(r.settings.source, running.source);
        // Everything else is the new file's.
        assert_eq!(r.settings.zone.ttl, 10);
        let lb = running.reload(flags(&["--no-loadbalance"]).settings);
        assert!(lb.new_resolver && !lb.restart_needed);
        let cache = running.reload(flags(&["--cache-ttl", "5"]).settings);
        assert!(cache.new_resolver);
        assert!(!running.reload(running.clone()).new_resolver);
    }

    #[test]
    fn every_overlay_config_is_a_good_file() {
        let overlays = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/overlays");
        let mut seen = 0;
        for e in std::fs::read_dir(&overlays).unwrap() {
            let conf = e.unwrap().path().join("config.yaml");
            if !conf.exists() {
                continue;
            }
            let a = RunArgs::parse_from(["xdns", "--config", conf.to_str().unwrap()]);
            let (s, _) = dns_userspace::config::load(&a.settings, &conf)
                .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
            assert!(
                s.node.check().is_ok(),
                "{}: serves something",
                conf.display()
            );
            assert_eq!(s.ops.lameduck, Duration::from_secs(5), "{}", conf.display());
            seen += 1;
        }
        assert_eq!(seen, 2, "accelerator and node-local");
    }
}
