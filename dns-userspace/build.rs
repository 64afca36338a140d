use anyhow::{anyhow, Context as _};

// Builds dns-ebpf for bpfel-unknown-none with the nightly toolchain (aya-build), so the
// object can be embedded in the daemon. `cargo xtask` installs what this needs first.
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    // The object embeds dns-common's types and constants too (map sizes, key layouts):
    // a change there must rebuild it, or the daemon and the kernel disagree on a layout.
    let common = packages
        .iter()
        .find(|p| p.name.as_str() == "dns-common")
        .ok_or_else(|| anyhow!("dns-common package not found"))?;
    if let Some(dir) = common.manifest_path.parent() {
        println!("cargo:rerun-if-changed={dir}/src");
        println!("cargo:rerun-if-changed={}", common.manifest_path);
    }
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "dns-ebpf")
        .ok_or_else(|| anyhow!("dns-ebpf package not found"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("dns-ebpf manifest has no parent"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
