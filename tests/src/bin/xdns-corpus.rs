//! Writes seed inputs for the fuzz targets: the differential battery's corpus (every name of
//! the sample cluster, search-path expansions, random and pod names, several types, with and
//! without EDNS) as DNS messages, one file each. `cargo xtask fuzz` runs it first.
//!
//! Usage: xdns-corpus DIR KIND, KIND `kernel` (a selector byte first: family and hook, as
//! `kernel_vs_userspace` reads its input) or `plain` (the message alone).
use std::path::PathBuf;

use dns_userspace::model::{Records, ZoneConfig};
use tests::differ::{corpus_names, query, random_case, wire, Rng};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(kind)) = (args.next(), args.next()) else {
        eprintln!("usage: xdns-corpus DIR kernel|plain");
        std::process::exit(2);
    };
    if let Err(e) = write(PathBuf::from(dir), kind == "kernel") {
        eprintln!("xdns-corpus: {e}");
        std::process::exit(1);
    }
}

fn write(dir: PathBuf, selector: bool) -> Result<(), String> {
    let examples = tests::fixture::example_manifests();
    let view = dns_userspace::source::manifests::load_dir(&examples).map_err(|e| e.to_string())?;
    let zone = Records::build(
        &ZoneConfig::new("cluster.local", 30).map_err(|e| e.to_string())?,
        &view,
    );
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut rng = Rng(0x5eed_5eed_5eed_5eed);
    let names = corpus_names(&zone, &["shop", "default", "kube-system"], &mut rng);
    let mut n = 0;
    for (i, name) in names.iter().enumerate() {
        let zone_too = rng.below(8) == 0;
        let spelled = random_case(name, &mut rng, zone_too);
        let qtype = *rng.pick(&[1u16, 28, 33, 12]);
        let opt = (i % 2 == 0).then_some((1232, false));
        let mut bytes = Vec::new();
        if selector {
            bytes.push((i % 4) as u8);
        }
        bytes.extend(query(i as u16, &wire(&spelled), qtype, opt));
        std::fs::write(dir.join(format!("seed-{i:05}")), bytes).map_err(|e| e.to_string())?;
        n += 1;
    }
    println!("xdns-corpus: {n} seeds in {}", dir.display());
    Ok(())
}
