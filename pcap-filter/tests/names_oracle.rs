//! `names::find_name` against libpcap itself: a small C program compiles
//! expressions with the system's libpcap while its own `getaddrinfo`,
//! `getnetbyname_r` and `ether_hostton` (which libpcap's calls bind to)
//! note every name lookup and answer none. Every expression that makes
//! libpcap look a name up must be one `find_name` refuses, and an
//! expression libpcap compiles without a lookup must not be refused.
//!
//! The expressions are random sequences of keywords, names, numbers,
//! addresses and operators, with and without spaces between them.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use pcap_filter::names::find_name;
use proptest::{
    prelude::Rng as _,
    test_runner::{RngAlgorithm, TestRng},
};

const ORACLE: &str = r#"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/ether.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <string.h>

static int looked_up;

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res) {
    unsigned char address[16];
    if (node && !(hints && (hints->ai_flags & AI_NUMERICHOST)) &&
        inet_pton(AF_INET, node, address) != 1 && inet_pton(AF_INET6, node, address) != 1) {
        looked_up = 1;
        return EAI_NONAME;
    }
    int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **) =
        (int (*)(const char *, const char *, const struct addrinfo *, struct addrinfo **))
            dlsym(RTLD_NEXT, "getaddrinfo");
    return real(node, service, hints, res);
}

int getnetbyname_r(const char *name, struct netent *entry, char *buffer, size_t length,
                   struct netent **result, int *error) {
    looked_up = 1;
    *result = NULL;
    return 0;
}

int ether_hostton(const char *name, struct ether_addr *address) {
    looked_up = 1;
    return -1;
}

int main(void) {
    pcap_t *p = pcap_open_dead(DLT_EN10MB, 262144);
    char line[65536];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        struct bpf_program program;
        looked_up = 0;
        int compiled = pcap_compile(p, &program, line, 1, 0) == 0;
        if (compiled) pcap_freecode(&program);
        printf("%c%c\n", looked_up ? 'L' : '-', compiled ? 'C' : '-');
        fflush(stdout);
    }
    return 0;
}
"#;

/// Builds the oracle with the system's C compiler and libpcap.
fn oracle() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("names-oracle");
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let source = dir.join("oracle.c");
    std::fs::write(&source, ORACLE).expect("the oracle's source");
    let binary = dir.join("oracle");
    let status = Command::new("cc")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .args(["-lpcap", "-ldl"])
        .status()
        .expect("cc runs");
    assert!(status.success(), "cc could not build the oracle");
    binary
}

const WORDS: &[&str] = &[
    "host",
    "net",
    "port",
    "portrange",
    "src",
    "dst",
    "ether",
    "ip",
    "ip6",
    "tcp",
    "udp",
    "proto",
    "protochain",
    "and",
    "or",
    "not",
    "(",
    ")",
    "!",
    "&&",
    "||",
    "gateway",
    "type",
    "subtype",
    "llc",
    "mask",
    "foo",
    "bar.example",
    "gw.example",
    "http",
    "https",
    "domain",
    "80",
    "10.0.0.1",
    "10.0.0.0",
    "255.0.0.0",
    "fe80::1",
    "fe80::1/64",
    "::ffff:1.2.3.4",
    "00:11:22:33:44:55",
    "\\tcp",
    "\\foo",
    "\\1.2.3.4",
    "wlan",
    "mgt",
    "on",
    "eth0",
    "vlan",
    "100",
    "less",
    "[",
    "]",
    "=",
    "1",
    "/",
    "24",
    "link",
    "arp",
    "broadcast",
    "1.2.3.4.5",
    "x:",
    "1:2:",
    "abc::1",
    "decnet",
    "atalk",
    "10",
    "0x1f",
    "12ab",
    "0xzz",
    "a-b",
    "b_c",
    "http-alt",
    "1-10",
    "tcp[0]",
    "&",
    "2",
    "!=",
    "0",
    "len",
    ">=",
    "greater",
    "multicast",
    "icmp",
    "icmp-echo",
    "tcpflags",
    "dir",
    "tods",
    "reason",
    "action",
    "pass",
    "ifname",
    "rset",
    "ra",
    "ta",
    "addr1",
    "iso",
    "esis",
    "clnp",
    "netbeui",
    "src or dst",
    "ether src",
];

/// proptest's deterministic generator: the same expressions on every run.
fn expressions(count: usize) -> Vec<String> {
    let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut next = move || rng.next_u64();
    (0..count)
        .map(|_| {
            let len = 1 + (next() % 7) as usize;
            let words: Vec<&str> = (0..len)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect();
            if next() % 4 == 0 {
                words.concat()
            } else {
                words.join(" ")
            }
        })
        .collect()
}

#[test]
fn refuses_every_expression_libpcap_would_resolve_a_name_for() {
    let expressions = expressions(100_000);
    let mut child = Command::new(oracle())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the oracle starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = expressions.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("the oracle runs");
    writer.join().expect("no panic").expect("written");
    let verdicts: Vec<&str> = std::str::from_utf8(&output.stdout)
        .expect("ASCII")
        .lines()
        .collect();
    assert_eq!(verdicts.len(), expressions.len());
    let (mut lookups, mut compiled) = (0, 0);
    for (expression, verdict) in expressions.iter().zip(verdicts) {
        let refused = find_name(expression).is_some();
        match verdict {
            "LC" | "L-" => {
                lookups += 1;
                assert!(refused, "libpcap looks a name up for {expression:?}");
            }
            "-C" => {
                compiled += 1;
                assert!(!refused, "libpcap compiles {expression:?} without a lookup");
            }
            _ => {}
        }
    }
    // The corpus exercises both sides.
    assert!(
        lookups > 1000 && compiled > 1000,
        "{lookups} lookups, {compiled} compiled"
    );
}
