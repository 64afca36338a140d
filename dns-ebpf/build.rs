// bpf-linker links the object; rebuild when it changes (it is installed by `cargo xtask`).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // The name walk reads the packet eight bytes at a time at any offset: without this the
    // backend splits every unaligned load into eight byte loads. The verifier allows
    // unaligned packet and map access wherever the CPU does (x86-64, arm64).
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
}
