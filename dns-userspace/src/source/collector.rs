//! The API watches' metrics (`xdns_kube_*`), from their shared health at each scrape.
use std::{sync::Arc, time::Duration};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::kube::{KindHealth, WatchHealth};
use crate::ops::series::{const_counters, const_gauges, Labels};

/// The API watches' health: lists, errors, and whether each is failing now.
#[derive(Debug)]
pub struct WatchCollector {
    health: Arc<WatchHealth>,
}

impl WatchCollector {
    pub fn new(health: Arc<WatchHealth>) -> Self {
        Self { health }
    }
}

impl Collector for WatchCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kinds = self.health.kinds();
        let label = |h: &KindHealth| vec![("kind", h.kind.name().to_owned())];
        let rows: Vec<(Labels, u64)> = kinds.iter().map(|h| (label(h), h.lists)).collect();
        const_counters(
            &mut enc,
            "xdns_kube_lists",
            "Full lists completed per kind (the first and every relist)",
            &rows,
        )?;
        let rows: Vec<(Labels, u64)> = kinds.iter().map(|h| (label(h), h.errors)).collect();
        const_counters(
            &mut enc,
            "xdns_kube_watch_errors",
            "List and watch errors per kind (each is retried with backoff)",
            &rows,
        )?;
        let rows: Vec<(Labels, i64)> = kinds
            .iter()
            .map(|h| (label(h), i64::from(h.failing_for(Duration::ZERO).is_some())))
            .collect();
        const_gauges(
            &mut enc,
            "xdns_kube_watch_failing",
            "1 while a kind's watch is failing or has ended: its records are the last good ones",
            &rows,
        )
    }
}
