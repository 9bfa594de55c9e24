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
mod origins;
mod session;
mod sink;
mod status;
mod uaa;

use std::fs::File;
use std::io::{self, IsTerminal as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use pcap_proto::v1::{CaptureOptions, Limits, StartCapture, StaticTarget, Target, target};
use tonic::transport::Uri;

use crate::session::{Ending, Session};
use crate::sink::Sink;
use crate::status::{LimitsAsked, Report, code_name};

/// The largest snapshot length an agent accepts.
const MAX_SNAPLEN: u32 = 262_144;

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
}

#[derive(Debug, Args)]
struct CaptureArgs {
    /// The pcap-api to ask, e.g. https://pcap-api.example.com:8443.
    #[arg(long, value_name = "URL")]
    api: Uri,

    /// What to capture: a target name from the API's configuration.
    #[arg(long, value_name = "NAME")]
    target: String,

    /// Verify the API's certificate against this CA (PEM) instead of the
    /// system's roots.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,

    /// Do not verify the API's certificate, and allow http:// URLs.
    /// For development only: anyone in between can read the token.
    #[arg(long)]
    insecure: bool,

    /// The bearer token that identifies you to the API.
    #[arg(long, env = "PCAP_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// An interface to capture on each origin (repeatable); none means the
    /// target's default.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,

    /// Bytes kept of each packet, at most 262144; 0 means the maximum.
    #[arg(short = 's', long, value_name = "SNAPLEN", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_SNAPLEN)))]
    snaplen: u32,

    /// Stop after this many packets, over all origins.
    #[arg(short = 'c', long, value_name = "COUNT", value_parser = parse_positive)]
    count: Option<u64>,

    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_duration, allow_negative_numbers = true)]
    duration: Option<Duration>,

    /// Stop after this many bytes of packet data, over all origins.
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    max_bytes: Option<u64>,

    /// Write pcapng to FILE, or to stdout with `-w -`; without it, print one
    /// line per packet.
    #[arg(short = 'w', value_name = "FILE|-")]
    write: Option<PathBuf>,

    /// Write the capture to the API's object store instead of here: shows
    /// progress, and at the end a download link and its expiry (see `pcap
    /// captures`).
    #[arg(long, conflicts_with = "write")]
    store: bool,

    /// A tcpdump filter expression, e.g. `tcp port 443`.
    #[arg(value_name = "EXPRESSION")]
    expression: Vec<String>,
}

/// `-c` and `--max-bytes`: a whole number, at least 1.
fn parse_positive(text: &str) -> Result<u64, String> {
    match text.parse() {
        Ok(0) => Err("must be at least 1 (leave it out for no limit)".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// `--duration`: positive seconds, fractions allowed.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(format!(
            "the duration must be more than 0 seconds, not {text}"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text} seconds is too long"))
}

/// Where packets go.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Output {
    File(PathBuf),
    Stdout,
    Lines,
}

impl CaptureArgs {
    /// Checks what clap cannot check alone; the message says what is wrong.
    fn validate(&self) -> Result<(), String> {
        match (self.api.scheme_str(), self.api.host()) {
            (Some("https"), Some(_)) => {}
            (Some("http"), Some(_)) if self.insecure => {}
            (Some("http"), Some(_)) => {
                return Err(format!(
                    "--api {}: plain http:// would send the token unencrypted; \
                     use an https:// URL, or --insecure for development",
                    self.api
                ));
            }
            _ => {
                return Err(format!(
                    "--api {}: expected a URL like https://pcap-api.example.com:8443",
                    self.api
                ));
            }
        }
        if let Some(token) = &self.token
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err("the token (--token or PCAP_TOKEN) must be printable ASCII \
                        without spaces"
                .to_owned());
        }
        Ok(())
    }

    fn output(&self) -> Output {
        match &self.write {
            None => Output::Lines,
            Some(path) if path.as_os_str() == "-" => Output::Stdout,
            Some(path) => Output::File(path.clone()),
        }
    }

    fn start_request(&self) -> StartCapture {
        StartCapture {
            target: Some(Target {
                kind: Some(target::Kind::Static(StaticTarget {
                    name: self.target.clone(),
                })),
            }),
            options: Some(CaptureOptions {
                filter: self.expression.join(" "),
                snaplen: self.snaplen,
                interfaces: self.interfaces.clone(),
                limits: Some(Limits {
                    // Rounded up, so that a tiny duration is not "no limit".
                    duration_ms: self
                        .duration
                        .map_or(0, |d| d.as_nanos().div_ceil(1_000_000) as u64),
                    packets: self.count.unwrap_or(0),
                    bytes: self.max_bytes.unwrap_or(0),
                }),
            }),
            store: self.store,
        }
    }
}

/// The `pcap` binary's main.
pub fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Capture(args) => args,
        Command::Bosh(args) => return bosh::main(&args),
        Command::App(args) => return app::main(&args),
        Command::Captures { command } => return captures_main(&command),
    };
    if let Err(message) = args.validate() {
        let mut command = Cli::command();
        command.build();
        command
            .find_subcommand_mut("capture")
            .expect("capture is a subcommand")
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can always be built");
    match runtime.block_on(capture(&args, args.start_request())) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pcap: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// Runs `start` (`pcap capture`'s or `pcap bosh`'s) with `args`' connection
/// and output options: the exit code, or an error that ends it with 1.
async fn capture(args: &CaptureArgs, start: StartCapture) -> anyhow::Result<ExitCode> {
    // Before connecting, so that Ctrl-C is ours from the start.
    let mut signals = session::Signals::new().context("cannot install signal handlers")?;
    let output = args.output();
    let sink = open_sink(&output)?;
    let limits = LimitsAsked {
        packets: args.count,
        bytes: args.max_bytes,
        duration: args.duration,
    };
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
        channel = connect::connect(&args.api, args.ca.as_deref(), args.insecure) => match channel {
            Ok(channel) => channel,
            Err(error) => {
                let mut message = describe(&error);
                if message.to_lowercase().contains("certificate") {
                    message.push_str(" (check --ca, or use --insecure for development)");
                }
                eprintln!("pcap: cannot reach the API at {}: {message}{unreachable_hint}", args.api);
                return Ok(ExitCode::FAILURE);
            }
        },
        () = signals.recv() => {
            eprintln!("pcap: interrupted before the capture started");
            return Ok(ExitCode::from(130));
        }
    };

    let mut session = Session::new(sink, report);
    let ending = session
        .run(channel, start, args.token.as_deref(), &mut signals)
        .await;
    let finished = session.finish();
    let ending = ending?;
    let (written, outcome) = finished?;
    let where_to = match &output {
        Output::File(path) => format!("{} holds", path.display()),
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
        Ending::Finished | Ending::Abandoned => {
            if outcome.nothing_started {
                eprintln!("pcap: the capture started on no origin");
                ExitCode::FAILURE
            } else if args.store {
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
        let mut cli = Cli::command();
        cli.build();
        cli.find_subcommand_mut("captures")
            .expect("captures is a subcommand")
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can always be built");
    match runtime.block_on(command.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pcap: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// Opens the output before connecting, so that a bad path fails at once.
fn open_sink(output: &Output) -> anyhow::Result<Sink<Box<dyn Write>>> {
    let application = concat!("pcap ", env!("CARGO_PKG_VERSION"));
    Ok(match output {
        Output::File(path) => {
            let file: Box<dyn Write> = Box::new(
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
            );
            Sink::pcapng(file, false, application)
                .with_context(|| format!("cannot write {}", path.display()))?
        }
        Output::Stdout => {
            let stdout: Box<dyn Write> = Box::new(io::stdout());
            Sink::pcapng(stdout, true, application).context("cannot write to stdout")?
        }
        Output::Lines => Sink::lines(Box::new(io::BufWriter::new(io::stdout()))),
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
    use super::*;

    fn parse(args: &[&str]) -> Result<CaptureArgs, String> {
        let argv = ["pcap", "capture", "--target", "vms"].iter().chain(args);
        let Command::Capture(args) = Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        else {
            unreachable!("parsed `pcap capture`")
        };
        args.validate()?;
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
        assert_eq!(options.snaplen, 96);
        assert_eq!(options.interfaces, ["eth0", "eth1"]);
        assert_eq!(
            options.limits,
            Some(Limits {
                duration_ms: 1500,
                packets: 10,
                bytes: 1000
            })
        );
        assert_eq!(
            start.target.unwrap().kind,
            Some(target::Kind::Static(StaticTarget { name: "vms".into() }))
        );
        assert_eq!(args.output(), Output::Lines);
    }

    #[test]
    fn output_is_a_file_stdout_or_lines() {
        let file = parse(&["--api", "https://a", "-w", "x.pcapng"]).unwrap();
        assert_eq!(file.output(), Output::File("x.pcapng".into()));
        let stdout = parse(&["--api", "https://a", "-w", "-"]).unwrap();
        assert_eq!(stdout.output(), Output::Stdout);
    }

    #[test]
    fn tiny_durations_round_up_to_a_millisecond() {
        let args = parse(&["--api", "https://a", "--duration", "0.0001"]).unwrap();
        let limits = args.start_request().options.unwrap().limits.unwrap();
        assert_eq!(limits.duration_ms, 1);
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
