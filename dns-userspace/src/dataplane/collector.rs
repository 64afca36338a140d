//! The kernel path's metrics (`xdns_kernel_*`): its counters and occupancy, read from the
//! pins at each scrape.
use std::{path::PathBuf, sync::Arc};

use dns_common::Counter as Reason;
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::snapshot::{Held, Snapshot};
use crate::ops::series::{const_counters, const_gauges, Labels};

/// The kernel path's counters and occupancy, from the pins.
#[derive(Debug)]
pub struct KernelCollector {
    pin_dir: PathBuf,
    /// The maps' sizes as the daemon writes them.
    held: Arc<Held>,
}

impl KernelCollector {
    pub fn new(pin_dir: PathBuf, held: Arc<Held>) -> Self {
        Self { pin_dir, held }
    }
}

impl Collector for KernelCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(s) = Snapshot::read_with(&self.pin_dir, Some(&self.held)) else {
            // No kernel path yet (or any more): no kernel series, rather than a failed scrape.
            return Ok(());
        };
        let rows: Vec<(Labels, u64)> = Reason::ALL
            .iter()
            .map(|r| (vec![("reason", r.name().to_owned())], s.counters.get(*r)))
            .collect();
        const_counters(
            &mut enc,
            "xdns_kernel_packets",
            "Packets the kernel path saw, by outcome: answered, or the reason it passed",
            &rows,
        )?;
        let mut rows: Vec<(Labels, u64)> = Vec::new();
        for i in &s.ifaces {
            for r in Reason::ALL.iter().filter(|r| r.per_iface()) {
                let n = i.counters.get(*r);
                if n > 0 || *r == Reason::Answered {
                    rows.push((
                        vec![
                            ("iface", i.iface.clone()),
                            ("mode", i.mode.to_string()),
                            ("reason", r.name().to_owned()),
                        ],
                        n,
                    ));
                }
            }
        }
        const_counters(
            &mut enc,
            "xdns_kernel_interface_packets",
            "DNS packets to the served addresses per interface and attach mode, by outcome",
            &rows,
        )?;
        let mut modes: std::collections::BTreeMap<String, i64> = Default::default();
        for i in s.ifaces.iter().filter(|i| i.present) {
            *modes.entry(i.mode.to_string()).or_default() += 1;
        }
        let rows: Vec<(Labels, i64)> = modes
            .into_iter()
            .map(|(m, n)| (vec![("mode", m)], n))
            .collect();
        const_gauges(
            &mut enc,
            "xdns_kernel_attached_interfaces",
            "Interfaces the kernel path is attached to, by mode",
            &rows,
        )?;
        let none: Labels = Vec::new();
        const_gauges(
            &mut enc,
            "xdns_kernel_records",
            "Names in the kernel's records map",
            &[(none.clone(), s.records as i64)],
        )?;
        const_gauges(
            &mut enc,
            "xdns_kernel_degraded",
            "1 while the kernel passes every query because its maps could not be made whole",
            &[(none.clone(), i64::from(s.degraded))],
        )?;
        const_gauges(
            &mut enc,
            "xdns_kernel_records_capacity",
            "Names the kernel's records map can hold",
            &[(none.clone(), i64::from(s.records_max))],
        )?;
        const_gauges(
            &mut enc,
            "xdns_kernel_target_records",
            "Names the kernel answers with one stored target (PTR, ExternalName CNAME)",
            &[(none, s.target_records as i64)],
        )
    }
}
