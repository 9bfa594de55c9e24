//! pcap: captures the traffic of an app's instances or of VMs through
//! pcap-api, into a pcapng file, to stdout, or as one line per packet.
//!
//! Two binaries share this library: `pcap` ([`main`]) and `cf-pcap`, the
//! cf CLI plugin ([`cf_plugin::main`]), which runs `pcap app`'s capture with
//! the login and target taken from cf over its plugin RPC.
//!
//! `main` parses and checks the arguments, opens the output and connects;
//! [`session`] runs the capture, [`sink`] writes what arrives, [`status`]
//! tells the user on stderr what happens.
#![forbid(unsafe_code)]

mod app;
mod bosh;
mod bosh_config;
mod captures;
mod cf_config;
pub mod cf_plugin;
mod connect;
mod extcap;
mod origins;
mod rewrite;
mod session;
mod sink;
mod status;
mod uaa;

use std::fs::File;
use std::io::{self, IsTerminal as _, Write};
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use pcap_proto::flags::{CaptureFlags, InterfaceFlags, RotationFlags, TcpdumpFlags};
use pcap_proto::options;
use pcap_proto::v1::{StartCapture, StaticTarget, Target, target};

use pcap_sink::rotate::Policy;

use crate::session::{Ending, Session};
use crate::sink::Sink;
use crate::status::{Report, code_name};

/// Capture packets of Cloud Foundry apps and VMs, without SSH.
#[derive(Debug, Parser)]
#[command(name = "pcap", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture the traffic of a target's VMs or app instances through pcap-api.
    ///
    /// Ctrl-C (or SIGTERM) stops the capture and waits for the packets
    /// already captured; a second Ctrl-C quits at once. The file is valid in
    /// every case.
    Capture(CaptureArgs),
    /// Capture the traffic of BOSH VMs, as a BOSH admin, through pcap-api.
    ///
    /// Uses the BOSH CLI's login (~/.bosh/config, or $BOSH_CONFIG) and
    /// refreshes its token when it has expired. Shows the instances first,
    /// and asks before capturing more than a few unless -n is given.
    Bosh(bosh::BoshArgs),
    /// Capture the traffic of a Cloud Foundry app's instances, with your cf
    /// CLI login.
    ///
    /// Uses ~/.cf/config.json (or $CF_HOME/.cf/config.json): the targeted
    /// API, org and space, and your token (refreshed when it has expired).
    /// Only each instance's own container traffic is captured.
    App(app::AppArgs),
    /// List and download the captures `pcap capture --store` left in the
    /// API's object store.
    Captures {
        #[command(subcommand)]
        command: captures::CapturesCommand,
    },
    /// Make pcap a Wireshark capture source (extcap): `pcap extcap install`
    /// links it into Wireshark's extcap folder.
    Extcap {
        #[command(subcommand)]
        command: extcap::ExtcapCommand,
    },
}

#[derive(Debug, Args)]
struct CaptureArgs {
    #[command(flatten)]
    connection: captures::Connection,

    /// What to capture: a target name from the API's configuration.
    #[arg(long, value_name = "NAME")]
    target: String,

    #[command(flatten)]
    interfaces: InterfaceFlags,

    #[command(flatten)]
    flags: RemoteFlags,

    #[command(flatten)]
    c2c: C2cFlag,
}

/// The capture flags of `pcap capture`, `pcap bosh`, `pcap app` and `cf
/// pcap`: the ones `pcap-agent capture` shares ([`CaptureFlags`]), and what
/// only a capture through the API has.
#[derive(Clone, Debug, Args)]
pub struct RemoteFlags {
    #[command(flatten)]
    capture: CaptureFlags,

    /// Stop after this many bytes of packet data, over all origins.
    #[arg(long, value_name = "N", value_parser = options::parse_positive)]
    max_bytes: Option<NonZeroU64>,

    /// Write the capture to the API's object store instead of here: shows
    /// progress, and at the end a download link and its expiry (see `pcap
    /// captures`).
    #[arg(long, conflicts_with = "write")]
    store: bool,

    /// -Q (applied by the agents, in the kernel), -n, and how lines are
    /// printed, as `pcap-agent capture` has them.
    #[command(flatten)]
    tcpdump: TcpdumpFlags,
}

impl RemoteFlags {
    /// Checks what clap cannot: the values of the flags; the message names
    /// the flag.
    fn check(&self) -> Result<(), String> {
        self.options(&[]).map(drop)?;
        let rotation = &self.capture.rotation;
        rotation
            .check(self.capture.write.as_deref())
            .map_err(|e| e.to_string())
    }

    fn options(&self, interfaces: &[String]) -> Result<options::CaptureOptions, String> {
        let mut options = self
            .capture
            .options(interfaces, self.max_bytes)
            .map_err(|e| e.to_string())?;
        options.direction = self.tcpdump.direction.unwrap_or_default();
        Ok(options)
    }

    fn output(&self) -> Output {
        match &self.capture.write {
            None => Output::Lines,
            Some(path) if path.as_os_str() == "-" => Output::Stdout,
            Some(path) if self.capture.rotation.is_set() => {
                Output::Files(path.clone(), self.capture.rotation.clone())
            }
            Some(path) => Output::File(path.clone()),
        }
    }

    /// The start request for `target`, on `interfaces` (none: the
    /// target's default).
    fn start_request(&self, target: target::Kind, interfaces: &[String]) -> StartCapture {
        StartCapture {
            target: Some(Target { kind: Some(target) }),
            options: Some(
                self.options(interfaces)
                    .expect("checked by RemoteFlags::check first")
                    .to_wire(),
            ),
            store: self.store,
        }
    }
}

/// Where packets go.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Output {
    File(PathBuf),
    /// `-w` with `-C`, `-G`, `-W` or `-z`.
    Files(PathBuf, RotationFlags),
    Stdout,
    Lines,
}

impl CaptureArgs {
    fn start_request(&self) -> StartCapture {
        let target = target::Kind::Static(StaticTarget {
            name: self.target.clone(),
        });
        let start = self
            .flags
            .start_request(target, &self.interfaces.interfaces);
        self.c2c.apply(start)
    }
}

/// `--c2c`, for the captures that reach silk-vtep or the underlay of
/// Diego cells: `pcap capture` and `pcap bosh`.
#[derive(Clone, Copy, Debug, Args)]
pub struct C2cFlag {
    /// Container-to-container insight (silk-vtep or the underlay of Diego
    /// cells): each packet's comment names its policy tag, source app and
    /// the kernel's LOG verdict, and the file names overlay IPs. App names
    /// come from Cloud Controller when the API has [cf] and you logged in
    /// with cf; otherwise apps are named by GUID.
    #[arg(long)]
    c2c: bool,
}

impl C2cFlag {
    /// `start`, asking for c2c insight when the flag is given. The request
    /// names no apps: the API fills them in.
    fn apply(self, mut start: StartCapture) -> StartCapture {
        if self.c2c
            && let Some(options) = start.options.as_mut()
        {
            options.c2c = Some(Box::default());
        }
        start
    }
}

/// The `pcap` binary's main.
pub fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if extcap::is_extcap_call(&argv) {
        return extcap::main(argv);
    }
    let args = match Cli::parse_from(argv).command {
        Command::Capture(args) => args,
        Command::Bosh(args) => return bosh::main(&args),
        Command::App(args) => return app::main(&args),
        Command::Captures { command } => return captures_main(&command),
        Command::Extcap { command } => return command.main(),
    };
    if let Err(message) = args.flags.check().and(args.connection.validate()) {
        usage_error("capture", message);
    }
    match runtime().block_on(capture(&args.connection, &args.flags, args.start_request())) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pcap: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// Ends the process as clap does for a bad argument of `pcap SUBCOMMAND`:
/// `message` says what is wrong, then the usage.
fn usage_error(subcommand: &str, message: String) -> ! {
    let mut command = Cli::command();
    command.build();
    command
        .find_subcommand_mut(subcommand)
        .expect("a subcommand of pcap")
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

/// The current-thread runtime every command runs on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can always be built")
}

/// Runs `start` (`pcap capture`'s, `pcap bosh`'s or `pcap app`'s) through
/// `api`, with the output of `flags`: the exit code, or an error that ends
/// it with 1.
async fn capture(
    api: &captures::Connection,
    flags: &RemoteFlags,
    start: StartCapture,
) -> anyhow::Result<ExitCode> {
    // Before connecting, so that Ctrl-C is ours from the start.
    let mut signals = session::Signals::new().context("cannot install signal handlers")?;
    let output = flags.output();
    let limits = flags
        .options(&[])
        .expect("checked by RemoteFlags::check first")
        .limits;
    // Packet lines on the same terminal would break the status line.
    let status_line =
        io::stderr().is_terminal() && !(output == Output::Lines && io::stdout().is_terminal());
    let report = Report::new(status_line, limits);
    let kind = start.target.as_ref().and_then(|t| t.kind.as_ref());
    let (hint, unreachable_hint): (fn(tonic::Code) -> &'static str, &str) = match kind {
        Some(target::Kind::Bosh(_)) => (bosh::refusal_hint, ""),
        Some(target::Kind::CfApp(_)) => (app::refusal_hint, app::UNREACHABLE_HINT),
        _ => (refusal_hint, ""),
    };

    let channel = tokio::select! {
        channel = connect::connect(&api.api, api.ca.as_deref(), api.insecure) => match channel {
            Ok(channel) => channel,
            Err(error) => {
                let mut message = describe(&error);
                if message.to_lowercase().contains("certificate") {
                    message.push_str(" (check --ca, or use --insecure for development)");
                }
                eprintln!("pcap: cannot reach the API at {}: {message}{unreachable_hint}", api.api);
                return Ok(ExitCode::FAILURE);
            }
        },
        () = signals.recv() => {
            eprintln!("pcap: interrupted before the capture started");
            return Ok(ExitCode::from(130));
        }
    };

    let sink = open_sink(&output, &flags.tcpdump.print)?;
    let mut session = Session::new(sink, report);
    let ending = session
        .run(channel, start, api.token.as_deref(), &mut signals)
        .await;
    let finished = session.finish();
    let ending = ending?;
    // A reader that closed the output (Wireshark's fifo) ended the capture.
    if matches!(ending, Ending::OutputClosed) || finished.as_ref().is_err_and(session::broken_pipe)
    {
        return Ok(ExitCode::SUCCESS);
    }
    let (written, outcome) = finished?;
    let where_to = match &output {
        Output::File(path) => format!("{} holds", path.display()),
        Output::Files(path, _) => format!("the files of -w {} hold", path.display()),
        Output::Stdout => "stdout received".to_owned(),
        Output::Lines => "this run printed".to_owned(),
    };
    let packets = plural(written, "packet");
    Ok(match ending {
        Ending::Refused(status) => {
            eprintln!(
                "pcap: the API refused the capture: {}: {}{}",
                code_name(status.code()),
                status.message(),
                hint(status.code())
            );
            ExitCode::FAILURE
        }
        Ending::Lost(status) => {
            eprintln!(
                "pcap: connection to the API lost: {}: {}; {where_to} the {packets} received before that",
                code_name(status.code()),
                status.message(),
            );
            ExitCode::FAILURE
        }
        Ending::Finished | Ending::Abandoned | Ending::OutputClosed => {
            if outcome.nothing_started {
                eprintln!("pcap: the capture started on no origin");
                ExitCode::FAILURE
            } else if flags.store {
                report_stored(session.stored())
            } else {
                if output != Output::Lines {
                    eprintln!("pcap: {where_to} {packets}");
                }
                ExitCode::SUCCESS
            }
        }
    })
}

/// What `--store` left: the object and its download link, or that nothing
/// was stored.
fn report_stored(stored: Option<&pcap_proto::v1::Stored>) -> ExitCode {
    let Some(stored) = stored else {
        eprintln!("pcap: the API ended the capture without storing it");
        return ExitCode::FAILURE;
    };
    let capture = stored.capture.clone().unwrap_or_default();
    eprintln!(
        "pcap: stored capture {} ({} bytes of pcapng)",
        capture.id, capture.size
    );
    eprintln!(
        "pcap: download link, valid until {} UTC ({}):",
        captures::utc(stored.url_expires_ns),
        captures::until(stored.url_expires_ns)
    );
    println!("{}", stored.url);
    eprintln!(
        "pcap: later: pcap captures download {} (kept until {} UTC)",
        capture.id,
        if capture.expires_ns == 0 {
            "removed by hand".to_owned()
        } else {
            captures::utc(capture.expires_ns)
        }
    );
    ExitCode::SUCCESS
}

/// Runs `pcap captures list|download`.
fn captures_main(command: &captures::CapturesCommand) -> ExitCode {
    if let Err(message) = command.connection().validate() {
        usage_error("captures", message);
    }
    match runtime().block_on(command.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pcap: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// Opens the output once the API is reached and before the capture starts,
/// as tcpdump opens its device before its file: a bad path fails before
/// anything is captured, and an unreachable API leaves an existing file as
/// it was.
fn open_sink(
    output: &Output,
    print: &pcap_proto::flags::PrintFlags,
) -> anyhow::Result<Sink<Box<dyn Write>>> {
    let application = concat!("pcap ", env!("CARGO_PKG_VERSION"));
    Ok(match output {
        Output::File(path) => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            // Someone reads a fifo as it is written (Wireshark): flush each message.
            let live = file
                .metadata()
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
            let file: Box<dyn Write> = Box::new(file);
            Sink::pcapng(file, live, application)
                .with_context(|| format!("cannot write {}", path.display()))?
        }
        Output::Stdout => {
            let stdout: Box<dyn Write> = Box::new(io::stdout());
            Sink::pcapng(stdout, true, application).context("cannot write to stdout")?
        }
        Output::Files(path, rotation) => {
            let policy = Policy::new(path, rotation)?.expect("rotation flags are given");
            Sink::rotating(policy, application)?
        }
        // Every message from the API is flushed: -l and -U hold already.
        Output::Lines => {
            Sink::lines_with(Box::new(io::BufWriter::new(io::stdout())), print.options())
        }
    })
}

/// The error and its causes, `: `-separated, each said once: tonic and
/// hyper repeat some.
fn describe(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// What to check when the API refuses with `code`.
fn refusal_hint(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => " (check --token or PCAP_TOKEN)",
        tonic::Code::PermissionDenied => " (your token does not allow this capture)",
        tonic::Code::NotFound => " (check --target)",
        tonic::Code::ResourceExhausted => " (too many captures are running; try again later)",
        tonic::Code::InvalidArgument => " (check the interfaces, snaplen and filter expression)",
        _ => "",
    }
}

/// "1 packet", "2 packets".
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use pcap_proto::v1::Limits;

    use super::*;

    fn parse(args: &[&str]) -> Result<CaptureArgs, String> {
        let argv = ["pcap", "capture", "--target", "vms"].iter().chain(args);
        let Command::Capture(args) = Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        else {
            unreachable!("parsed `pcap capture`")
        };
        args.flags.check()?;
        args.connection.validate()?;
        Ok(args)
    }

    fn error(args: &[&str]) -> String {
        parse(args).expect_err("should be refused")
    }

    #[test]
    fn builds_the_start_request() {
        let args = parse(&[
            "--api",
            "https://api:8443",
            "-i",
            "eth0",
            "-i",
            "eth1",
            "-s",
            "96",
            "-c",
            "10",
            "--duration",
            "1.5",
            "--max-bytes",
            "1000",
            "tcp",
            "port",
            "80",
        ])
        .unwrap();
        let start = args.start_request();
        let options = start.options.unwrap();
        assert_eq!(options.filter, "tcp port 80");
        assert_eq!(options.snaplen, Some(96));
        assert_eq!(options.interfaces, ["eth0", "eth1"]);
        assert_eq!(
            options.limits,
            Some(Limits {
                duration_ms: Some(1500),
                packets: Some(10),
                bytes: Some(1000)
            })
        );
        assert_eq!(
            start.target.unwrap().kind,
            Some(target::Kind::Static(StaticTarget { name: "vms".into() }))
        );
        assert_eq!(args.flags.output(), Output::Lines);
    }

    #[test]
    fn output_is_a_file_stdout_or_lines() {
        let file = parse(&["--api", "https://a", "-w", "x.pcapng"]).unwrap();
        assert_eq!(file.flags.output(), Output::File("x.pcapng".into()));
        let stdout = parse(&["--api", "https://a", "-w", "-"]).unwrap();
        assert_eq!(stdout.flags.output(), Output::Stdout);
    }

    #[test]
    fn c2c_asks_for_insight_with_no_names_of_its_own() {
        let plain = parse(&["--api", "https://a"]).unwrap();
        assert_eq!(plain.start_request().options.unwrap().c2c, None);
        let c2c = parse(&["--api", "https://a", "--c2c"]).unwrap();
        let insight = c2c.start_request().options.unwrap().c2c.unwrap();
        assert!(insight.app_names.is_empty());
    }

    #[test]
    fn tiny_durations_round_up_to_a_millisecond() {
        let args = parse(&["--api", "https://a", "--duration", "0.0001"]).unwrap();
        let limits = args.start_request().options.unwrap().limits.unwrap();
        assert_eq!(limits.duration_ms, Some(1));
    }

    #[test]
    fn refuses_bad_numbers() {
        assert!(error(&["--api", "https://a", "-s", "262145"]).contains("262145"));
        assert!(parse(&["--api", "https://a", "-s", "262144"]).is_ok());
        assert!(error(&["--api", "https://a", "-c", "0"]).contains("must be at least 1"));
        assert!(error(&["--api", "https://a", "-c", "ten"]).contains("not a whole number"));
        let negative = error(&["--api", "https://a", "--duration", "-1"]);
        assert!(negative.contains("more than 0 seconds"), "{negative}");
        assert!(error(&["--api", "https://a", "--duration", "0"]).contains("more than 0"));
        assert!(error(&["--api", "https://a", "--duration", "soon"]).contains("not a number"));
        assert!(error(&["--api", "https://a", "--max-bytes", "0"]).contains("--max-bytes"));
    }

    #[test]
    fn refuses_plain_http_unless_insecure() {
        let message = error(&["--api", "http://api:8080"]);
        assert!(
            message.contains("use an https:// URL, or --insecure"),
            "{message}"
        );
        assert!(parse(&["--api", "http://api:8080", "--insecure"]).is_ok());
        assert!(error(&["--api", "api:8443"]).contains("expected a URL like https://"));
        assert!(error(&["--api", "https://a", "--insecure", "--ca", "ca.crt"]).contains("--ca"));
    }

    #[test]
    fn refuses_a_token_that_cannot_be_a_header() {
        let message = error(&["--api", "https://a", "--token", "two words"]);
        assert!(message.contains("printable ASCII"), "{message}");
        assert!(!message.contains("two words"), "the token is never printed");
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
