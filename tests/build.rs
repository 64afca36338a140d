//! Root-only tests (BPF, network namespaces) are marked ignored when the suite is built
//! without root, so a run that cannot do them reports them as ignored, never as passed.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(not_root)");
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        println!("cargo::rustc-cfg=not_root");
    }
}
