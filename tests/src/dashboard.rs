//! The Grafana dashboard in `deploy/dashboards/`: the metrics its queries read, and which of
//! them a scrape does not export (a renamed metric breaks a panel silently otherwise).
use std::{collections::BTreeSet, path::Path};

/// Every `xdns_*` and `coredns_*` series name the dashboard's queries (panels and
/// variables) read.
pub fn queried_metrics() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dashboards/xdns.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut queries = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            queries.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().expect("variables") {
        if v["type"] == "query" {
            queries.push(v["query"].as_str().expect("query").to_owned());
        }
    }
    let mut names = BTreeSet::new();
    for q in &queries {
        for token in q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if token.starts_with("xdns_") || token.starts_with("coredns_") {
                names.insert(token.to_owned());
            }
        }
    }
    names
}

/// The queried names a scrape (Prometheus text) does not carry: a gauge by its name, a
/// counter as `<name>_total`, a histogram's `_bucket`, `_sum` and `_count`.
pub fn missing<'a>(queried: impl IntoIterator<Item = &'a String>, scrape: &str) -> Vec<String> {
    let mut exported = BTreeSet::new();
    for l in scrape.lines() {
        let Some(t) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = t.split(' ');
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                exported.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{s}"));
                }
            }
            _ => {
                exported.insert(name.to_owned());
            }
        }
    }
    queried
        .into_iter()
        .filter(|n| !exported.contains(*n))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_panel_and_checks_each_kind_by_its_series_names() {
        let q = queried_metrics();
        assert!(q.contains("xdns_kernel_packets_total"), "{q:?}");
        assert!(q.contains("xdns_kube_watch_failing"), "{q:?}");
        assert!(q.iter().any(|n| n.ends_with("_bucket")), "{q:?}");
        let scrape = "# TYPE a counter\na_total 1\n# TYPE b gauge\nb 2\n# TYPE c histogram\n";
        let want: Vec<String> = ["a", "a_total", "b", "b_total", "c_bucket", "c"]
            .map(String::from)
            .to_vec();
        assert_eq!(missing(&want, scrape), ["a", "b_total", "c"]);
    }
}
