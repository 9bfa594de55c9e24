//! `pcap`: see the library (`pcap_cli`).
#![forbid(unsafe_code)]

/// Received batches of a megabyte come and go; jemalloc reuses their pages
/// where glibc's malloc gives them back and faults fresh ones in.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    pcap_cli::main()
}
