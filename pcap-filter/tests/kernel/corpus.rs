//! The tcpdump test-suite captures, and every expression of
//! `tests/expressions.txt` run over them by tcpdump and by our programs.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    thread,
    time::Instant,
};

use pcap_filter::{compile, compile::LINKTYPE_ETHERNET, translate::VlanSource};

use crate::{
    harness::{
        Loaded, Tag, accepted, max_test_run_len, numbered_pcap, require_root, spawn_tcpdump,
        tcpdump_ddd, tcpdump_read, temp_dir,
    },
    pcapfile,
};

/// Bytes `BPF_PROG_TEST_RUN` needs at least for a TC program (ETH_HLEN).
pub const MIN_RUN_LEN: usize = 14;
/// Bytes of an 802.1Q tag.
const TAG_LEN: usize = 4;

/// One packet of the corpus, as the tests run it.
pub struct Packet {
    /// Index into [`Corpus::files`].
    pub file: usize,
    /// Index of the packet in its file, as tcpdump reads it.
    pub index: usize,
    /// The captured bytes, cut to what `BPF_PROG_TEST_RUN` takes.
    pub data: Vec<u8>,
    /// Whether `BPF_PROG_TEST_RUN` takes the packet as it is.
    pub runs_plain: bool,
    /// Whether it takes the packet with bytes 12..16 as an out-of-band tag.
    pub runs_tagged: bool,
}

/// All packets of all corpus files, in one numbered file for tcpdump.
pub struct Corpus {
    /// File names.
    pub files: Vec<String>,
    /// Packets in file order.
    pub packets: Vec<Packet>,
    /// Every packet, seconds = index into `packets`, wire length = captured
    /// length: the packets exactly as the kernel tests see them.
    pub merged: PathBuf,
    /// Packets captured shorter than they were on the wire.
    pub snapped: usize,
    /// Packets cut to the test-run limit.
    pub cut: usize,
}

impl Corpus {
    /// `file:index` of a packet, for messages.
    pub fn name(&self, packet: usize) -> String {
        let p = &self.packets[packet];
        format!("{}#{}", self.files[p.file], p.index)
    }
}

/// Where the corpus is: `$PCAP_FILTER_CORPUS`, or the copy in the
/// workspace's `tests/corpus/`.
fn corpus_dir() -> PathBuf {
    std::env::var_os("PCAP_FILTER_CORPUS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/tcpdump-tests"),
        PathBuf::from,
    )
}

/// The corpus, read once per test binary.
pub fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(load)
}

fn load() -> Corpus {
    let dir = corpus_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".pcap"))
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no pcap files in {}", dir.display());
    // What libpcap reads from each file, in two threads.
    let halves: Vec<Vec<(usize, Vec<pcapfile::Record>)>> = thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let paths = &paths;
                s.spawn(move || {
                    paths
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % 2 == w)
                        .map(|(i, p)| (i, read_checked(p)))
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("reader"))
            .collect()
    });
    let mut per_file: Vec<(usize, Vec<pcapfile::Record>)> = halves.into_iter().flatten().collect();
    per_file.sort_by_key(|(i, _)| *i);
    let max = max_test_run_len();
    let probe = Prober::new();
    let (mut packets, mut snapped, mut cut) = (Vec::new(), 0, 0);
    for (file, records) in per_file {
        for (index, record) in records.into_iter().enumerate() {
            snapped += usize::from(record.data.len() < record.orig_len as usize);
            let mut data = record.data;
            if data.len() > max {
                data.truncate(max);
                cut += 1;
            }
            let runs_plain = probe.runs(&data, false);
            let runs_tagged = probe.runs(&data, true);
            packets.push(Packet {
                file,
                index,
                data,
                runs_plain,
                runs_tagged,
            });
        }
    }
    let merged = numbered_pcap(
        "corpus",
        LINKTYPE_ETHERNET,
        packets.iter().map(|p| p.data.clone()),
    );
    Corpus {
        files: paths
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect(),
        packets,
        merged,
        snapped,
        cut,
    }
}

/// Finds the packets `BPF_PROG_TEST_RUN` refuses: fewer than 14 bytes, and
/// (since Linux 6.x) IPv4 or IPv6 EtherTypes with less than a whole
/// network header after the 14 bytes.
struct Prober(Loaded);

impl Prober {
    fn new() -> Self {
        let accept = [pcap_filter::CbpfInsn::stmt(0x06, 1)];
        Self(Loaded::ethernet(&accept, VlanSource::ControlBlock))
    }

    fn runs(&self, frame: &[u8], tagged: bool) -> bool {
        if frame.len() < MIN_RUN_LEN + if tagged { TAG_LEN } else { 0 } {
            return false;
        }
        if tagged {
            let (skb, tag) = untag(frame);
            self.0.try_verdict(&skb, Some(tag)).is_ok()
        } else {
            self.0.try_verdict(frame, None).is_ok()
        }
    }
}

/// The packets tcpdump reads from `path`, checked against our own reading
/// of the file: the same records, except that libpcap cuts records to the
/// file's snapshot length and stops at a record it finds invalid.
fn read_checked(path: &Path) -> Vec<pcapfile::Record> {
    let theirs = tcpdump_read(path);
    let bytes = std::fs::read(path).expect("corpus file");
    let ours = pcapfile::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(ours.link_type, 1, "{}: link type", path.display());
    assert!(
        theirs.len() <= ours.records.len(),
        "{}: tcpdump read more packets than we did",
        path.display()
    );
    let snaplen = ours.snaplen as usize;
    for (i, (a, b)) in theirs.iter().zip(&ours.records).enumerate() {
        assert!(
            a.data == b.data[..b.data.len().min(snaplen)] && a.orig_len == b.orig_len,
            "{} packet {i}: we read it differently from tcpdump",
            path.display()
        );
    }
    theirs
}

/// Expressions from `tests/expressions.txt`: one a line, `#` comments.
pub fn expressions() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expressions.txt");
    std::fs::read_to_string(path)
        .expect("expressions.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// `frame` as the skb holds it when the kernel has taken bytes 12..16 as an
/// out-of-band tag: what the capture puts back is `frame` again.
pub fn untag(frame: &[u8]) -> (Vec<u8>, Tag) {
    let tag = Tag {
        tpid: u16::from_be_bytes([frame[12], frame[13]]),
        tci: u16::from_be_bytes([frame[14], frame[15]]),
    };
    let mut skb = frame[..12].to_vec();
    skb.extend_from_slice(&frame[12 + TAG_LEN..]);
    (skb, tag)
}

/// What one expression did over the corpus.
struct Outcome {
    mismatches: Vec<String>,
    accepted: usize,
}

fn check_expression(corpus: &Corpus, expression: &str, out: &Path) -> Outcome {
    let mut mismatches = Vec::new();
    let program = compile(expression, LINKTYPE_ETHERNET)
        .unwrap_or_else(|e| panic!("{expression:?} does not compile: {e}"));
    let theirs_program = tcpdump_ddd(&corpus.merged, expression);
    if program != theirs_program {
        mismatches.push(format!(
            "{expression:?}: compiled program differs from tcpdump -ddd"
        ));
    }
    let child = spawn_tcpdump(&corpus.merged, out, expression);
    let plain = Loaded::ethernet(&program, VlanSource::Skb);
    let tagged = Loaded::ethernet(&program, VlanSource::ControlBlock);
    let mut ours = Vec::with_capacity(corpus.packets.len());
    for packet in &corpus.packets {
        let data = &packet.data;
        let plain_verdict = packet.runs_plain.then(|| plain.verdict(data, None) != 0);
        let tagged_verdict = packet.runs_tagged.then(|| {
            let (skb, tag) = untag(data);
            tagged.verdict(&skb, Some(tag)) != 0
        });
        ours.push((plain_verdict, tagged_verdict));
    }
    let theirs: BTreeSet<u32> = accepted(child, out, expression).into_iter().collect();
    for (i, &(plain_verdict, tagged_verdict)) in ours.iter().enumerate() {
        let expected = theirs.contains(&(i as u32));
        for (path, verdict) in [("plain", plain_verdict), ("vlan", tagged_verdict)] {
            if verdict.is_some_and(|v| v != expected) {
                mismatches.push(format!(
                    "{expression:?} {} ({path} path): tcpdump {}, we {}",
                    corpus.name(i),
                    verdict_word(expected),
                    verdict_word(!expected),
                ));
            }
        }
    }
    Outcome {
        mismatches,
        accepted: theirs.len(),
    }
}

fn verdict_word(accepted: bool) -> &'static str {
    if accepted { "accepts" } else { "rejects" }
}

/// Every expression, every corpus packet, both paths (skb as captured, and
/// bytes 12..16 held as an out-of-band VLAN tag): our verdict is tcpdump's.
#[test]
fn every_expression_agrees_with_tcpdump_on_every_corpus_packet() {
    require_root();
    let start = Instant::now();
    let corpus = corpus();
    let expressions = expressions();
    assert!(
        expressions.len() >= 300,
        "{} expressions",
        expressions.len()
    );
    let loaded_at = start.elapsed();
    let dir = temp_dir("expressions");
    let mismatches = Mutex::new(Vec::new());
    let accepted_counts = Mutex::new(Vec::new());
    let workers = thread::available_parallelism()
        .map_or(2, usize::from)
        .min(4);
    thread::scope(|s| {
        for w in 0..workers {
            let (expressions, dir, mismatches, accepted_counts) =
                (&expressions, &dir, &mismatches, &accepted_counts);
            s.spawn(move || {
                for (i, expression) in expressions.iter().enumerate() {
                    if i % workers != w {
                        continue;
                    }
                    let out = dir.join(format!("{i}.pcap"));
                    let outcome = check_expression(corpus, expression, &out);
                    std::fs::remove_file(&out).ok();
                    mismatches.lock().expect("lock").extend(outcome.mismatches);
                    accepted_counts
                        .lock()
                        .expect("lock")
                        .push((expression.clone(), outcome.accepted));
                }
            });
        }
    });
    let skipped = |tagged: bool| -> Vec<String> {
        (0..corpus.packets.len())
            .filter(|&i| {
                let p = &corpus.packets[i];
                !if tagged { p.runs_tagged } else { p.runs_plain }
            })
            .map(|i| corpus.name(i))
            .collect()
    };
    let (plain_skipped, tagged_skipped) = (skipped(false), skipped(true));
    let counts = accepted_counts.into_inner().expect("lock");
    let total = corpus.packets.len();
    let none = counts.iter().filter(|(_, n)| *n == 0).count();
    let all = counts.iter().filter(|(_, n)| *n == total).count();
    eprintln!(
        "{} expressions x {total} packets from {} files in {:.1?} (corpus read in {loaded_at:.1?}); \
         {} packets snapped short in their files, {} cut to {} bytes for BPF_PROG_TEST_RUN; \
         expressions tcpdump matches on no packet: {none}, on every packet: {all}",
        expressions.len(),
        corpus.files.len(),
        start.elapsed(),
        corpus.snapped,
        corpus.cut,
        max_test_run_len(),
    );
    eprintln!(
        "{} packets BPF_PROG_TEST_RUN refuses (under {MIN_RUN_LEN} bytes, or a truncated \
         IPv4/IPv6 header) were skipped: {}",
        plain_skipped.len(),
        plain_skipped.join(", ")
    );
    eprintln!(
        "{} packets were skipped on the VLAN path (BPF_PROG_TEST_RUN refuses them with \
         bytes 12..16 taken out as the tag)",
        tagged_skipped.len()
    );
    assert!(plain_skipped.len() <= 100, "too many packets skipped");
    assert!(
        tagged_skipped.len() <= 200,
        "too many packets skipped on the VLAN path"
    );
    let mismatches = mismatches.into_inner().expect("lock");
    assert!(
        mismatches.is_empty(),
        "{} mismatches with tcpdump:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(5000)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
