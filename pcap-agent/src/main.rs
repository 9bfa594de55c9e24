//! The `pcap-agent` command.

// The ioctl of `ethtool_link` is the one exception, and says so.
#![deny(unsafe_code)]

use std::{
    fs::File,
    io::{self, IsTerminal as _},
    num::NonZeroU64,
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use pcap_agent::{
    c2c::{C2cOptions, C2cSink},
    capture::{self, Report, Spec, StopReason},
    datapath::{self, AttachMode},
    filter::Filter,
    iface::{ANY, Interface, link_type_name},
    output::{self, Format, Output},
    privileges, rtnl, serve,
};
use pcap_common::MAX_SNAPLEN;
use pcap_proto::{
    flags::{CaptureFlags, InterfaceFlags, TcpdumpFlags},
    options::CaptureOptions,
};
use tokio::signal::unix::{SignalKind, signal};

mod ethtool_link;
mod iface_list;
mod offline;

/// eBPF packet capture for Cloud Foundry hosts.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture packets on local interfaces, like tcpdump.
    Capture(Box<CaptureArgs>),
    /// Serve captures to pcap-api over gRPC with mutual TLS.
    ///
    /// Runs until SIGTERM or SIGINT, then stops every capture, lets each send
    /// its statistics, and exits 0. Log level from PCAP_LOG (default info).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The TOML configuration file (see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration, and every file it names, then exit: print
    /// `config OK` and exit 0, or the error and exit 1.
    #[arg(long)]
    check_config: bool,
}

// The flags pcap's remote captures have too come from `pcap_proto::flags`
// (-i, -s, -c, --duration, -w, the expression).
#[derive(Debug, Args)]
#[command(mut_arg("interfaces", |arg| arg
    .required_unless_present_any(["list_interfaces", "read"])))]
struct CaptureArgs {
    #[command(flatten)]
    interfaces: InterfaceFlags,
    #[command(flatten)]
    tcpdump: TcpdumpArgs,
    #[command(flatten)]
    capture: CaptureFlags,
    /// File format for -w.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Kernel ring buffer size in KiB (rounded up to a power of two), as tcpdump's -B.
    #[arg(
        short = 'B',
        long = "buffer-size",
        value_name = "KiB",
        default_value_t = 8192
    )]
    buffer_kib: u32,
    /// How to attach to the TC hooks.
    #[arg(long, value_enum, default_value_t)]
    attach: AttachMode,
    /// Container-to-container insight (on silk-vtep or the underlay): write
    /// each packet's VXLAN policy tag, its source app GUID (from the policy
    /// agent's iptables rules) and the kernel's OK_/DENY_C2C_ LOG verdict
    /// into its pcapng comment. Packets are held 200 ms for their verdict.
    #[arg(long)]
    c2c: bool,
    /// With --c2c: silk's container metadata store, to name overlay IPs
    /// (pcapng name resolution records).
    #[arg(long, value_name = "FILE", requires = "c2c")]
    container_metadata_store: Option<PathBuf>,
    /// With --c2c: app names for GUIDs, from a saved Cloud Controller
    /// response (`cf curl "/v3/apps?per_page=5000" > apps.json`).
    #[arg(long, value_name = "FILE", requires = "c2c")]
    cf_apps: Option<PathBuf>,
    /// Read the filter expression from FILE (an expression on the command line is then ignored).
    #[arg(short = 'F', value_name = "FILE")]
    filter_file: Option<PathBuf>,
}

/// tcpdump's flags for listing, reading files, directions and names, as
/// one group that other commands can flatten into theirs.
#[derive(Debug, Args)]
struct TcpdumpArgs {
    /// List the interfaces -i accepts, as `tcpdump -D` does, and exit.
    #[arg(short = 'D', long = "list-interfaces")]
    list_interfaces: bool,
    /// Read packets from a pcap or pcapng FILE (`-` for stdin) instead of
    /// capturing: the expression filters them exactly as `tcpdump -r` does.
    #[arg(short = 'r', value_name = "FILE")]
    read: Option<PathBuf>,
    /// -Q, -n and the printing flags, as the remote captures have them.
    #[command(flatten)]
    shared: TcpdumpFlags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs its captures; the command line stays quiet.
    let default_log = match cli.command {
        Command::Capture(_) => "warn",
        Command::Serve(_) => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PCAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Capture(args) => run_capture(&args),
        Command::Serve(args) => run_serve(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcap-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_capture(args: &CaptureArgs) -> anyhow::Result<()> {
    if args.tcpdump.list_interfaces {
        return iface_list::print(&mut io::stdout().lock());
    }
    // The snaplen and limits, checked as the agent service checks a
    // request's (the expression may still come from -F).
    let options = args.capture.options(&args.interfaces.interfaces, None)?;
    args.capture.rotation.check(args.capture.write.as_deref())?;
    if let Some(path) = &args.tcpdump.read {
        return run_offline(args, &options, path);
    }
    let spec = spec(args, &options)?;
    // Before attaching anything: name what is missing instead of EPERM.
    privileges::check_effective(&caps::CapsHashSet::new())?;
    let any = spec.datapath.any;
    let output = match &args.capture.write {
        None => Output::lines(
            Box::new(io::stdout()),
            args.tcpdump.shared.print.options(),
            args.tcpdump.shared.print.flush_each(),
        ),
        Some(path) if path.as_os_str() == "-" => {
            Output::file(args.format, Box::new(io::stdout()), true)
                .packet_buffered(args.tcpdump.shared.print.packet_buffered)
        }
        Some(path) if args.capture.rotation.is_set() => {
            Output::rotating(args.format, path, &args.capture.rotation)?
                .expect("rotation flags are given")
                .packet_buffered(args.tcpdump.shared.print.packet_buffered)
        }
        Some(path) => Output::file(
            args.format,
            Box::new(
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
            ),
            false,
        )
        .packet_buffered(args.tcpdump.shared.print.packet_buffered),
    };
    let mut output = output.any(any);
    let runtime = runtime()?;
    let report = runtime.block_on(async {
        let signalled = interrupt_or_terminate()?;
        let stop = async {
            signalled.await;
            StopReason::Signal
        };
        let listening = || {
            if any {
                // One link type for all in pcap and lines; pcapng keeps each
                // interface's own.
                let link_type = match (&args.capture.write, args.format) {
                    (Some(_), Format::Pcapng) => "per interface (pcapng)",
                    _ => link_type_name(pcap_format::linktype::LINKTYPE_LINUX_SLL2),
                };
                eprintln!(
                    "pcap-agent: listening on any ({} interfaces: {}), link-type {link_type}, \
                     snapshot length {} bytes",
                    spec.interfaces.len(),
                    spec.interfaces
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    spec.datapath.snaplen
                );
                return;
            }
            for interface in &spec.interfaces {
                eprintln!(
                    "pcap-agent: listening on {}, link-type {}, snapshot length {} bytes",
                    interface.name,
                    link_type_name(interface.link_type),
                    spec.datapath.snaplen
                );
            }
        };
        if args.c2c {
            let app_names = match &args.cf_apps {
                Some(path) => pcap_agent::c2c::apps::read(path)?,
                None => std::collections::HashMap::new(),
            };
            let mut sink = C2cSink::new(
                output,
                C2cOptions {
                    metadata_store: args.container_metadata_store.clone(),
                    app_names,
                    ..C2cOptions::default()
                },
            );
            return anyhow::Ok(capture::run(&spec, &mut sink, stop, listening).await?);
        }
        anyhow::Ok(capture::run(&spec, &mut output, stop, listening).await?)
    })?;
    print_report(&report);
    if report.stop == StopReason::InterfacesGone {
        // As tcpdump's "pcap_loop: The interface disappeared".
        anyhow::bail!(if report.interfaces.len() == 1 {
            "the interface disappeared"
        } else {
            "every interface disappeared"
        });
    }
    Ok(())
}

/// `-r FILE`: filter a capture file in user space, as `tcpdump -r`.
fn run_offline(
    args: &CaptureArgs,
    options: &CaptureOptions,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    if !args.interfaces.interfaces.is_empty() {
        anyhow::bail!(
            "-r reads packets from a file and -i captures them live: give one or the other"
        );
    }
    if args.tcpdump.shared.direction.is_some() {
        anyhow::bail!("-Q chooses the directions of a live capture: it does not apply to -r");
    }
    if args.c2c {
        anyhow::bail!("--c2c annotates a live capture: it does not apply to -r");
    }
    if args.capture.duration.is_some() {
        anyhow::bail!("--duration limits a live capture: with -r use -c to stop early");
    }
    let expression = expression(args)?;
    if expression.len() > pcap_proto::MAX_FILTER_BYTES {
        anyhow::bail!("{}", pcap_proto::filter_too_long(expression.len()));
    }
    let input = offline::open(path)?;
    let sink = match &args.capture.write {
        None => offline::Sink::Lines {
            writer: Box::new(io::stdout()),
            printer: pcap_format::summary::Printer::new(args.tcpdump.shared.print.options()),
            flush_each: args.tcpdump.shared.print.flush_each(),
        },
        Some(out) if out.as_os_str() == "-" => offline::Sink::File {
            format: args.format,
            writer: Box::new(io::stdout()),
            flush_each: args.tcpdump.shared.print.packet_buffered,
        },
        Some(out) if args.capture.rotation.is_set() => offline::Sink::Files {
            writer: output::rotating_writer(args.format, out, &args.capture.rotation, None)?
                .expect("rotation flags are given"),
            flush_each: args.tcpdump.shared.print.packet_buffered,
        },
        Some(out) => offline::Sink::File {
            format: args.format,
            writer: Box::new(io::BufWriter::new(
                File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
            )),
            flush_each: args.tcpdump.shared.print.packet_buffered,
        },
    };
    offline::run(
        input,
        &expression,
        options.limits.packets.map(NonZeroU64::get),
        sink,
    )
    .with_context(|| format!("reading {}", path.display()))?;
    Ok(())
}

/// The filter expression: from -F's file, else the command line.
fn expression(args: &CaptureArgs) -> anyhow::Result<String> {
    Ok(match &args.filter_file {
        Some(path) => {
            if !args.capture.expression.is_empty() {
                tracing::warn!("-F given: ignoring the expression on the command line");
            }
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read filter file {}", path.display()))?
        }
        None => args.capture.expression.join(" "),
    })
}

fn run_serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = serve::Config::load(&args.config)
        .with_context(|| format!("config {}", args.config.display()))?;
    if args.check_config {
        println!("config OK");
        return Ok(());
    }
    // Capabilities belong to threads: check, or drop to `[privileges] keep`,
    // before the runtime starts any.
    privileges::enforce(&config.privileges)?;
    // One thread serves gRPC; every capture runs on a thread of its own.
    let runtime = runtime()?;
    runtime.block_on(async {
        let stop = interrupt_or_terminate()?;
        anyhow::Ok(serve::run(config, stop).await?)
    })
}

/// The single-threaded runtime both modes run in.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Installs the SIGINT and SIGTERM handlers (inside the runtime); the
/// future ends at the first of either.
fn interrupt_or_terminate() -> anyhow::Result<impl Future<Output = ()>> {
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    })
}

fn spec(args: &CaptureArgs, options: &CaptureOptions) -> anyhow::Result<Spec> {
    let ring_bytes = args
        .buffer_kib
        .checked_mul(1024)
        .filter(|b| (4096..=1 << 30).contains(b))
        .with_context(|| format!("invalid -B {}: give 4 to 1048576 KiB", args.buffer_kib))?;
    let any = options.interfaces.iter().any(|name| name == ANY);
    let mut interfaces: Vec<Interface> = Vec::new();
    if any {
        if options.interfaces.len() > 1 {
            anyhow::bail!("-i any captures every interface: give it alone");
        }
        // Every interface pcap can capture; the capture adds those that
        // appear later.
        let links = rtnl::Rtnl::open()
            .and_then(|mut rtnl| rtnl.links())
            .context("listing the interfaces")?;
        interfaces.extend(
            links
                .iter()
                .filter_map(|l| Interface::new(&l.name, l.index, l.hardware_type).ok()),
        );
    }
    for name in options.interfaces.iter().filter(|_| !any) {
        let interface = Interface::lookup(name)?;
        if !interfaces.contains(&interface) {
            interfaces.push(interface);
        }
    }
    let expression = expression(args)?;
    let filter = if any {
        Filter::compile_any(&expression)?
    } else {
        Filter::compile(&expression, &interfaces)?
    };
    if !any
        && args.format == Format::Pcap
        && args.capture.write.is_some()
        && interfaces
            .iter()
            .any(|i| i.link_type != interfaces[0].link_type)
    {
        anyhow::bail!(
            "these interfaces have different link types, which classic pcap cannot hold: use --format pcapng"
        );
    }
    Ok(Spec {
        interfaces,
        datapath: datapath::Options {
            snaplen: options.snaplen_within(MAX_SNAPLEN),
            ring_bytes,
            attach: args.attach,
            directions: args.tcpdump.shared.direction.unwrap_or_default(),
            filter,
            any,
        },
        count: options.limits.packets.map(NonZeroU64::get),
        bytes: None,
        duration: options.limits.duration,
    })
}

/// tcpdump's three lines, then where every packet went.
fn print_report(report: &Report) {
    let total = report.total();
    let k = &total.kernel;
    eprintln!("{} packets captured", total.delivered);
    eprintln!("{} packets received by filter", k.matched);
    eprintln!("{} packets dropped by kernel", k.dropped());
    eprintln!(
        "per stage: {} seen, {} matched, {} written to ring, {} dropped (ring full), \
         {} dropped (copy failed), {} written out, {} not written (packet limit)",
        k.seen,
        k.matched,
        k.written,
        k.dropped_ring_full,
        k.dropped_copy_failed,
        total.delivered,
        total.after_limit
    );
}
