//! Loading generated programs, running packets through them, and asking
//! tcpdump for its verdicts.

use std::{
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
};

use pcap_filter::{
    CbpfInsn, InterfaceFilter, TailCall,
    compile::{LINKTYPE_ETHERNET, LINKTYPE_RAW},
    sys::{self, PROG_TYPE_SCHED_CLS, SK_BUFF_SIZE},
    translate::{VlanSource, build_filter_program_with, test_context, test_run_verdict},
};

use crate::pcapfile::{self, Record};

/// These tests load eBPF programs and run tcpdump.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the pcap-filter kernel tests need root (CAP_BPF)");
}

/// A scratch directory for this test binary.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("pcap-filter-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A VLAN tag held out of band: TPID and TCI.
pub use pcap_filter::translate::VlanTag as Tag;

/// A loaded filter program with its (empty) program array.
pub struct Loaded {
    prog: OwnedFd,
    _prog_array: OwnedFd,
}

impl Loaded {
    /// Builds and loads the program for one Ethernet filter.
    pub fn ethernet(program: &[CbpfInsn], vlan: VlanSource) -> Self {
        Self::one(program, LINKTYPE_ETHERNET, vlan)
    }

    /// Builds and loads the program for one raw-IP filter (no VLAN path).
    pub fn raw(program: &[CbpfInsn]) -> Self {
        Self::one(program, LINKTYPE_RAW, VlanSource::Skb)
    }

    fn one(program: &[CbpfInsn], link_type: u16, vlan: VlanSource) -> Self {
        Self::load(
            &[InterfaceFilter {
                program,
                link_type,
                ifindexes: &[],
            }],
            vlan,
        )
    }

    /// Builds and loads the program for `filters`, with an empty prog array.
    pub fn load(filters: &[InterfaceFilter<'_>], vlan: VlanSource) -> Self {
        let prog_array = sys::map_create_prog_array(1).expect("prog array");
        let prog = Self::load_with(filters, vlan, &prog_array);
        Self {
            prog,
            _prog_array: prog_array,
        }
    }

    /// Builds and loads the program tail-calling slot 0 of `prog_array`.
    pub fn load_with(
        filters: &[InterfaceFilter<'_>],
        vlan: VlanSource,
        prog_array: &OwnedFd,
    ) -> OwnedFd {
        use std::os::fd::AsRawFd as _;
        let tail_call = TailCall {
            prog_array_fd: prog_array.as_raw_fd(),
            index: 0,
        };
        let insns = build_filter_program_with(filters, tail_call, vlan).expect("translates");
        sys::prog_load(PROG_TYPE_SCHED_CLS, &insns, "GPL", "pcap_filter")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The program's fd.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Runs the program on `data`, returning cb[0]. Checks that it
    /// returned -1 as it always must.
    pub fn verdict(&self, data: &[u8], tag: Option<Tag>) -> u32 {
        verdict_of(self.fd(), data, ctx(tag, 0))
    }

    /// [`Loaded::verdict`], or the error `BPF_PROG_TEST_RUN` gave.
    pub fn try_verdict(&self, data: &[u8], tag: Option<Tag>) -> std::io::Result<u32> {
        try_verdict_of(self.fd(), data, ctx(tag, 0))
    }
}

/// A `struct __sk_buff` for ctx_in: the tag in cb[1..4] (see
/// `VlanSource::ControlBlock`) and `ifindex` if nonzero.
pub fn ctx(tag: Option<Tag>, ifindex: u32) -> [u8; SK_BUFF_SIZE] {
    test_context(tag, ifindex)
}

/// Runs `prog` once and returns cb[0], checking the return value is -1.
pub fn verdict_of(prog: std::os::fd::BorrowedFd<'_>, data: &[u8], ctx: [u8; SK_BUFF_SIZE]) -> u32 {
    try_verdict_of(prog, data, ctx)
        .unwrap_or_else(|e| panic!("test run of {} bytes {data:02x?}: {e}", data.len()))
}

fn try_verdict_of(
    prog: std::os::fd::BorrowedFd<'_>,
    data: &[u8],
    ctx: [u8; SK_BUFF_SIZE],
) -> std::io::Result<u32> {
    test_run_verdict(prog, data, &ctx)
}

/// The largest packet `BPF_PROG_TEST_RUN` takes for a TC program.
pub fn max_test_run_len() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        let accept = [CbpfInsn::stmt(0x06, 1)];
        let loaded = Loaded::ethernet(&accept, VlanSource::Skb);
        let fits = |len: usize| {
            sys::prog_test_run(loaded.fd(), &vec![0u8; len], Some(&ctx(None, 0)), 1).is_ok()
        };
        let (mut good, mut bad) = (14, 65_536);
        assert!(fits(good));
        while bad - good > 1 {
            let mid = usize::midpoint(good, bad);
            if fits(mid) {
                good = mid;
            } else {
                bad = mid;
            }
        }
        good
    })
}

/// Starts `tcpdump -r file -w out expr`; [`accepted`] reads the result.
pub fn spawn_tcpdump(file: &Path, out: &Path, expression: &str) -> Child {
    Command::new("tcpdump")
        .arg("-r")
        .arg(file)
        .arg("-w")
        .arg(out)
        .arg("--")
        .arg(expression)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump runs")
}

/// Waits for tcpdump and returns the seconds field of every packet it
/// wrote: our merged files number packets by their timestamps.
pub fn accepted(child: Child, out: &Path, expression: &str) -> Vec<u32> {
    let result = child.wait_with_output().expect("tcpdump");
    assert!(
        result.status.success(),
        "tcpdump failed for {expression:?}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let bytes = std::fs::read(out).expect("tcpdump output");
    let file = pcapfile::parse(&bytes).expect("tcpdump writes pcap");
    file.records.iter().map(|r| r.ts_sec).collect()
}

/// The packets of `file` that `tcpdump -r file expression` keeps, by
/// their seconds fields (see [`accepted`]); tcpdump writes them to a
/// scratch file beside `file`.
pub fn tcpdump_accepts(file: &Path, expression: &str) -> Vec<u32> {
    let out = file.with_extension("accepted.pcap");
    let accepted = accepted(spawn_tcpdump(file, &out, expression), &out, expression);
    std::fs::remove_file(&out).ok();
    accepted
}

/// The packets tcpdump reads from `file`, as it writes them back.
pub fn tcpdump_read(file: &Path) -> Vec<Record> {
    let out = Command::new("tcpdump")
        .arg("-r")
        .arg(file)
        .args(["-w", "-"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("tcpdump runs");
    pcapfile::parse(&out.stdout)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .records
}

/// The classic program `tcpdump -ddd -r file expr` prints.
pub fn tcpdump_ddd(file: &Path, expression: &str) -> Vec<CbpfInsn> {
    let out = Command::new("tcpdump")
        .args(["-ddd", "-r"])
        .arg(file)
        .arg("--")
        .arg(expression)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("tcpdump runs");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines()
        .skip(1)
        .map(|line| {
            let n: Vec<u32> = line
                .split_whitespace()
                .map(|w| w.parse().expect("number"))
                .collect();
            CbpfInsn::jump(n[0] as u16, n[3], n[1] as u8, n[2] as u8)
        })
        .collect()
}

/// Writes packets numbered by their timestamps (seconds = index), with the
/// wire length set to the captured length, to `TAG.pcap` in
/// [`temp_dir`]`(tag)`; its path.
pub fn numbered_pcap(
    tag: &str,
    link_type: u16,
    packets: impl IntoIterator<Item = Vec<u8>>,
) -> PathBuf {
    let path = temp_dir(tag).join(format!("{tag}.pcap"));
    let records: Vec<Record> = packets
        .into_iter()
        .enumerate()
        .map(|(i, data)| Record {
            ts_sec: i as u32,
            ts_frac: 0,
            orig_len: data.len() as u32,
            data,
        })
        .collect();
    std::fs::write(&path, pcapfile::write(u32::from(link_type), &records)).expect("write pcap");
    path
}
