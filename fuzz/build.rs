//! Exports the resolver functions `src/libpcap.rs` defines, so that
//! libpcap's name lookups reach them instead of the C library's.

fn main() {
    for symbol in [
        "getaddrinfo",
        "gethostbyname",
        "getnetbyname",
        "getnetbyname_r",
        "ether_hostton",
    ] {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={symbol}");
    }
}
