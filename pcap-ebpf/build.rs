use which::which;

/// Rebuild when bpf-linker changes: cargo doesn't know it links this crate.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found; run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
