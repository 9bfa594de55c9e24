//! Loading the capture program, attaching it to interfaces, and reading its
//! ring buffer and counters.

use std::{io, os::fd::AsFd as _};

mod loader;

pub use loader::keep_spare;

use aya::{
    Ebpf, EbpfError,
    maps::{MapData, MapError, PerCpuHashMap, PerCpuValues, ProgramArray, RingBuf},
    programs::{LinkOrder, ProgramError, SchedClassifier, TcAttachType, tc::TcAttachOptions},
    util::KernelVersion,
};
use nix::errno::Errno;
use pcap_common::{Counters, MAX_SNAPLEN, slot};
use thiserror::Error;
use tracing::debug;

use crate::{
    filter::{Filter, FilterError},
    iface::Interface,
    tc_fallback::{self, direction_name},
};

/// The compiled eBPF object, built by `build.rs` from the `pcap-ebpf` crate.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pcap-ebpf"));

const INGRESS_PROGRAM: &str = "pcap_ingress";
const EGRESS_PROGRAM: &str = "pcap_egress";

/// The program the filter tail-calls on a match (and the entries without a
/// filter): it copies the packet into the ring.
const CAPTURE_PROGRAM: &str = "pcap_capture";

/// The reader is woken when this fraction of the ring is waiting to be read.
const WAKEUP_FRACTION: u32 = 4;

/// Our programs and the hooks they attach to.
const HOOKS: [(&str, TcAttachType); 2] = [
    (INGRESS_PROGRAM, TcAttachType::Ingress),
    (EGRESS_PROGRAM, TcAttachType::Egress),
];

/// The programs attached to TC hooks, by the names `bpftool prog` and
/// `tc filter show` print.
pub const ENTRY_PROGRAMS: [&str; 2] = [INGRESS_PROGRAM, EGRESS_PROGRAM];

/// How to hook the program into the interface's TC path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// TCX links where the kernel has them (6.6+), else clsact filters.
    #[default]
    Auto,
    /// TCX links only. They die with the process.
    Tcx,
    /// cls_bpf filters on a clsact qdisc (added if missing), for kernels
    /// before 6.6. Also for `-i any` on many interfaces: each TCX attach
    /// and detach waits for an RCU grace period, one after another (about
    /// 2.5 s to start with 101 interfaces, where this takes 0.1 s), but a
    /// capture killed with SIGKILL leaves its filters until the next
    /// pcap-agent run removes them.
    Tc,
}

/// Which directions to capture, as tcpdump's `-Q` (one model for the
/// local flag and the wire's `CaptureOptions.direction`).
pub use pcap_proto::options::Directions;

/// The hooks to attach for `directions`: only those, so the kernel never
/// runs the capture program (or copies anything) for the other direction.
fn hooks(directions: Directions) -> impl Iterator<Item = (&'static str, TcAttachType)> {
    HOOKS.into_iter().filter(move |(_, hook)| match directions {
        Directions::In => matches!(hook, TcAttachType::Ingress),
        Directions::Out => matches!(hook, TcAttachType::Egress),
        Directions::Inout => true,
    })
}

impl AttachMode {
    fn uses_tcx(self) -> bool {
        match self {
            Self::Auto => KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)),
            Self::Tcx => true,
            Self::Tc => false,
        }
    }
}

#[derive(Debug, Error)]
pub enum DatapathError {
    #[error(
        "loading the eBPF program was not permitted: run pcap-agent as root \
         (it needs {})",
        crate::privileges::needed_names()
    )]
    PermissionDenied,
    #[error("cannot load the eBPF program: {0}")]
    Load(#[source] Box<EbpfError>),
    #[error("the kernel rejected the eBPF program {name}: {source}")]
    Verify {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    /// As [`Self::Verify`], with only the end of the verifier's log (aya's
    /// error would carry all of it, up to megabytes).
    #[error("the kernel rejected the eBPF program {name}: {source}{log}")]
    Verifier {
        name: &'static str,
        #[source]
        source: io::Error,
        /// [`pcap_filter::sys::log_tail`] of the log.
        log: String,
    },
    #[error("cannot attach to {direction} of {interface}: {source}")]
    Attach {
        interface: String,
        direction: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error(transparent)]
    TcFallback(#[from] tc_fallback::TcFallbackError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, #[source] MapError),
    #[error("snaplen {0} is out of range: use 1 to {MAX_SNAPLEN}")]
    Snaplen(u32),
    #[error("cannot count CPUs: {0}")]
    Cpus(#[source] io::Error),
}

/// What one capture asks of the kernel.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bytes to copy per packet, 1..=262144.
    pub snaplen: u32,
    /// Ring buffer size in bytes; rounded up to a power of two.
    pub ring_bytes: u32,
    pub attach: AttachMode,
    /// Which directions to attach to (tcpdump's `-Q`).
    pub directions: Directions,
    /// Which packets to capture; `None` for all.
    pub filter: Option<Filter>,
    /// `-i any`: interfaces are added while the capture runs
    /// ([`Datapath::add`]), and loopback interfaces are captured on
    /// ingress only, as libpcap skips outgoing loopback packets (each is
    /// seen again as it comes in).
    pub any: bool,
}

/// Room in the counters for the interfaces an `-i any` capture may add.
const MAX_ANY_INTERFACES: u32 = 4096;

/// A loaded, attached capture program with its own ring buffer and counters.
///
/// Dropping it detaches everything it attached.
pub struct Datapath {
    ebpf: Ebpf,
    ring: Option<RingBuf<MapData>>,
    tc: Option<tc_fallback::Attachments>,
    /// The filter program, also held by the `FILTERS` program array.
    filter_program: Option<std::os::fd::OwnedFd>,
    nr_cpus: usize,
    detached: bool,
}

/// What a program instance is loaded for: its snap length and ring size
/// (a power of two). A spare (`loader::keep_spare`) serves only a capture
/// of the same shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    snaplen: u32,
    ring_bytes: u32,
}

impl Shape {
    pub(crate) fn of(snaplen: u32, ring_bytes: u32) -> Self {
        Self {
            snaplen,
            ring_bytes: ring_bytes.max(4096).next_power_of_two(),
        }
    }
}

/// Loads (and the kernel verifies) a fresh instance of the programs with
/// room for `counters` interfaces, and puts the capture program into its
/// `FILTERS` slot; nothing attached. The verifier is most of a capture's
/// start-up CPU, and most of its work is the capture program's copy (one
/// path per size class): the entries only count and tail-call, so that
/// one capture program serves both directions, with or without a filter.
pub(crate) fn load(shape: Shape, counters: u32) -> Result<Ebpf, DatapathError> {
    let snaplen = loader::interned(&loader::SNAPLENS, shape.snaplen);
    let wakeup = loader::interned(
        &loader::WAKEUPS,
        u64::from(shape.ring_bytes / WAKEUP_FRACTION),
    );
    let mut ebpf = loader::with_loader(|loader| {
        loader
            .override_global("SNAPLEN", snaplen, true)
            .override_global("WAKEUP_BYTES", wakeup, true)
            .map_max_entries("PACKETS", shape.ring_bytes)
            .map_max_entries("COUNTERS", counters)
            .load(EBPF_OBJECT)
    })
    .map_err(|e| match &e {
        EbpfError::MapError(MapError::CreateError { io_error, .. })
            if io_error.kind() == io::ErrorKind::PermissionDenied =>
        {
            DatapathError::PermissionDenied
        }
        _ => DatapathError::Load(Box::new(e)),
    })?;
    for name in ENTRY_PROGRAMS.into_iter().chain([CAPTURE_PROGRAM]) {
        program(&mut ebpf, name)
            .load()
            .map_err(|e| load_error(name, e))?;
    }
    install_capture_program(&mut ebpf)?;
    Ok(ebpf)
}

impl Datapath {
    /// Loads a fresh instance of the program and attaches it to the
    /// directions `options` asks for (both by default) of every interface.
    /// On error nothing stays attached.
    pub fn attach(interfaces: &[Interface], options: &Options) -> Result<Self, DatapathError> {
        if !(1..=MAX_SNAPLEN).contains(&options.snaplen) {
            return Err(DatapathError::Snaplen(options.snaplen));
        }
        // Whatever mode this capture uses, clean up after a crashed one.
        tc_fallback::recover_stale();
        let shape = Shape::of(options.snaplen, options.ring_bytes);
        let counters = if options.any {
            MAX_ANY_INTERFACES
        } else {
            interfaces.len().max(1) as u32
        };
        let mut ebpf = match loader::take_spare(shape, counters) {
            Some(ebpf) => ebpf,
            None => load(shape, counters)?,
        };
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?;
        let ring = RingBuf::try_from(ebpf.take_map("PACKETS").expect("PACKETS map"))
            .map_err(|e| DatapathError::Map("PACKETS", e))?;
        {
            let mut counters: PerCpuHashMap<_, u32, Counters> =
                PerCpuHashMap::try_from(ebpf.map_mut("COUNTERS").expect("COUNTERS map"))
                    .map_err(|e| DatapathError::Map("COUNTERS", e))?;
            for interface in interfaces {
                zero_counters(&mut counters, interface.index, nr_cpus)?;
            }
        }
        let filter_program = match &options.filter {
            Some(filter) => {
                let Some(aya::maps::Map::ProgramArray(filters)) = ebpf.map("FILTERS") else {
                    unreachable!("the eBPF object has a FILTERS program array");
                };
                Some(filter.install(interfaces, filters.fd().as_fd())?)
            }
            None => None,
        };
        let mut datapath = Self {
            ebpf,
            ring: Some(ring),
            tc: None,
            filter_program,
            nr_cpus,
            detached: false,
        };
        if !options.attach.uses_tcx() {
            datapath.tc = Some(tc_fallback::Attachments::new()?);
        }
        datapath.attach_hooks(interfaces, options)?;
        Ok(datapath)
    }

    /// Attaches the entry programs to the hooks `options` asks for of each
    /// interface: TCX links, or cls_bpf filters when `self.tc` is set.
    fn attach_hooks(
        &mut self,
        interfaces: &[Interface],
        options: &Options,
    ) -> Result<(), DatapathError> {
        let hooks = |interface: &Interface| {
            let loopback_in_only = options.any && interface.is_loopback();
            hooks(options.directions).filter(move |(_, attach_type)| {
                !(loopback_in_only && matches!(attach_type, TcAttachType::Egress))
            })
        };
        if let Some(attachments) = self.tc.as_mut() {
            let ebpf = &mut self.ebpf;
            let result = attachments.begin().and_then(|()| {
                interfaces.iter().try_for_each(|interface| {
                    attachments.prepare(interface)?;
                    hooks(interface).try_for_each(|(name, attach_type)| {
                        attachments.attach(interface, program(ebpf, name), attach_type)
                    })
                })
            });
            attachments.end();
            return Ok(result?);
        }
        // First on ingress and last on egress: we see what the wire sees,
        // before and after any other program has had its say.
        for interface in interfaces {
            for (name, attach_type) in hooks(interface) {
                let order = match attach_type {
                    TcAttachType::Egress => LinkOrder::last(),
                    _ => LinkOrder::first(),
                };
                program(&mut self.ebpf, name)
                    .attach_with_options(
                        &interface.name,
                        attach_type,
                        TcAttachOptions::TcxOrder(order),
                    )
                    .map_err(|e| DatapathError::Attach {
                        interface: interface.name.clone(),
                        direction: direction_name(attach_type),
                        source: Box::new(e),
                    })?;
                debug!(interface = interface.name, name, "attached TCX link");
            }
        }
        Ok(())
    }

    /// Adds `interface` to a running `-i any` capture, whose interfaces
    /// are now `all` (the new one included): its counters, the filter
    /// recompiled for `all` (replaced in its slots before the interface is
    /// attached, so that the new interface never meets a program of another
    /// link type), then its hooks.
    pub fn add(
        &mut self,
        interface: &Interface,
        all: &[Interface],
        options: &Options,
    ) -> Result<(), DatapathError> {
        {
            let mut counters: PerCpuHashMap<_, u32, Counters> =
                PerCpuHashMap::try_from(self.ebpf.map_mut("COUNTERS").expect("COUNTERS map"))
                    .map_err(|e| DatapathError::Map("COUNTERS", e))?;
            zero_counters(&mut counters, interface.index, self.nr_cpus)?;
        }
        if let Some(filter) = &options.filter {
            let Some(aya::maps::Map::ProgramArray(filters)) = self.ebpf.map("FILTERS") else {
                unreachable!("the eBPF object has a FILTERS program array");
            };
            self.filter_program = Some(filter.install(all, filters.fd().as_fd())?);
        }
        self.attach_hooks(std::slice::from_ref(interface), options)
    }

    /// The ring buffer. Taken by the reader; `None` once taken.
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// The program's counters for one interface, summed over CPUs.
    pub fn counters(&self, ifindex: u32) -> Result<Counters, DatapathError> {
        let counters: PerCpuHashMap<_, u32, Counters> =
            PerCpuHashMap::try_from(self.ebpf.map("COUNTERS").expect("COUNTERS map"))
                .map_err(|e| DatapathError::Map("COUNTERS", e))?;
        let per_cpu = counters
            .get(&ifindex, 0)
            .map_err(|e| DatapathError::Map("COUNTERS", e))?;
        Ok(per_cpu
            .iter()
            .take(self.nr_cpus)
            .fold(Counters::default(), |sum, c| sum.add(*c)))
    }

    /// Forgets interface `index`, which is gone: its TCX links and cls_bpf
    /// filters went with it, and nothing is to be detached from it.
    pub fn forget(&mut self, index: u32) {
        if let Some(tc) = self.tc.as_mut() {
            tc.forget(index);
        }
    }

    /// Detaches the program from every interface. Packets already in the ring
    /// stay there to be drained.
    pub fn detach(&mut self) {
        if self.detached {
            return;
        }
        self.detached = true;
        if let Some(tc) = self.tc.as_mut() {
            tc.detach_all();
        }
        for name in ENTRY_PROGRAMS {
            // Unloading a program detaches its TCX links; the program itself
            // lives on in the kernel until no link or fd refers to it.
            if let Err(e) = program(&mut self.ebpf, name).unload() {
                debug!(name, error = %e, "unload");
            }
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.detach();
        // A served capture ended: make the next one's programs now.
        loader::refill_spare();
    }
}

/// Sets an interface's counters to zero on every CPU.
fn zero_counters(
    counters: &mut PerCpuHashMap<&mut MapData, u32, Counters>,
    index: u32,
    nr_cpus: usize,
) -> Result<(), DatapathError> {
    let zeros = PerCpuValues::try_from(vec![Counters::default(); nr_cpus])
        .map_err(|e| DatapathError::Map("COUNTERS", MapError::IoError(e)))?;
    counters
        .insert(index, zeros, 0)
        .map_err(|e| DatapathError::Map("COUNTERS", e))
}

/// What a failed load of one of our programs means.
fn load_error(name: &'static str, e: ProgramError) -> DatapathError {
    match e {
        // EPERM is a lack of privilege; the verifier refuses with
        // EACCES, which io::ErrorKind also calls PermissionDenied.
        ProgramError::LoadError { io_error, .. }
            if io_error.raw_os_error() == Some(Errno::EPERM as i32) =>
        {
            DatapathError::PermissionDenied
        }
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            debug!(name, log, "the verifier's whole log");
            DatapathError::Verifier {
                name,
                source: io_error,
                log: pcap_filter::sys::log_tail(&log),
            }
        }
        e => DatapathError::Verify {
            name,
            source: Box::new(e),
        },
    }
}

/// Puts the capture program into its `FILTERS` slot.
fn install_capture_program(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let fd = program(ebpf, CAPTURE_PROGRAM)
        .fd()
        .and_then(|fd| Ok(fd.try_clone()?))
        .map_err(|e| DatapathError::Verify {
            name: CAPTURE_PROGRAM,
            source: Box::new(e),
        })?;
    let mut filters = ProgramArray::try_from(ebpf.map_mut("FILTERS").expect("FILTERS map"))
        .map_err(|e| DatapathError::Map("FILTERS", e))?;
    filters
        .set(slot::CAPTURE, &fd, 0)
        .map_err(|e| DatapathError::Map("FILTERS", e))
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut SchedClassifier {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .unwrap_or_else(|| panic!("the eBPF object has no classifier {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(errno: i32, log: &str) -> DatapathError {
        load_error(
            "pcap_ingress",
            ProgramError::LoadError {
                io_error: io::Error::from_raw_os_error(errno),
                verifier_log: aya_obj::VerifierLog::new(log.to_owned()),
            },
        )
    }

    #[test]
    fn a_refusal_is_told_from_a_lack_of_privilege() {
        assert!(matches!(
            refused(Errno::EPERM as i32, ""),
            DatapathError::PermissionDenied
        ));
        let long =
            "0: (b7) r0 = 0\n".repeat(200_000) + "invalid bpf_context access off=9992 size=8\n";
        let error = refused(Errno::EACCES as i32, &long);
        let message = error.to_string();
        assert!(
            message.starts_with(
                "the kernel rejected the eBPF program pcap_ingress: Permission denied (os error 13)\n"
            ),
            "{message}"
        );
        assert!(message.ends_with("invalid bpf_context access off=9992 size=8"));
        assert!(message.len() < pcap_filter::sys::SHOWN_LOG_BYTES + 200);
    }
}
