// bpf-linker links the object; rebuild when it changes (it is installed by `cargo xtask`).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
