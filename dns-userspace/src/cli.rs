//! The `run` command line: the config file's path and the settings (one section per layer,
//! each both a flag group and a file section), which the file overlays section by section.
use std::path::PathBuf;

use clap::Parser;
use dns_userspace::{
    config::{self, ConfigError},
    settings::Settings,
};

#[derive(Parser, Clone, Debug)]
pub struct RunArgs {
    /// Configuration file (YAML; see docs/node.md), laid over these flags and reloaded when it
    /// changes. A bad file is refused with its line and field; the running config stays.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
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
