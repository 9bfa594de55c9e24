//! `pcap` as a Wireshark extcap program: Wireshark (or tshark) lists
//! "Cloud Foundry app", "BOSH VMs" and "local interface" as capture
//! interfaces, asks for their options, and runs `pcap --capture` with them,
//! reading the pcapng it writes to a fifo.
//!
//! The protocol (Wireshark's doc/extcap.adoc): `--extcap-interfaces`
//! prints `extcap` and `interface` sentences; `--extcap-dlts` and
//! `--extcap-config` (with `--extcap-interface NAME`) print the link type
//! and the `arg` sentences of one interface; `--capture --extcap-interface
//! NAME --fifo PATH [--extcap-capture-filter EXPR]` captures, with the
//! options as `--NAME VALUE`. Errors go to stderr with a non-zero exit,
//! which Wireshark shows.
//!
//! No capture code of its own: a capture is `pcap app`'s or `pcap bosh`'s
//! command line (checked by the same clap definitions, with `-w FIFO`), or
//! `pcap-agent capture -w -` with the fifo as its stdout, run as a child.
//! Wireshark 4.0 shows whatever an extcap program writes to stderr as an
//! error, so the child's stderr is kept and shown only when it fails.
//! Wireshark stops a capture by closing the fifo (the child's session
//! sends `stop` on the broken pipe and exits 0) or with SIGTERM, which is
//! passed on to the child (its own signal handling stops the capture).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::Cli;
#[cfg(test)]
use crate::Command as PcapCommand;

/// The Cloud Foundry app interface.
pub const APP: &str = "pcap_app";
/// The BOSH VMs interface.
pub const BOSH: &str = "pcap_bosh";
/// A local interface, captured by `pcap-agent capture` on this machine.
pub const LOCAL: &str = "pcap_local";

/// The help link Wireshark shows for the interfaces.
const HELP: &str = "https://github.com/cloudfoundry/pcap-release";

/// True when Wireshark runs us as an extcap program: the first argument is
/// one of the protocol's.
pub fn is_extcap_call(args: &[OsString]) -> bool {
    args.get(1).and_then(|a| a.to_str()).is_some_and(|a| {
        a.starts_with("--extcap-") || a == "--capture" || a.starts_with("--capture=")
    })
}

/// The arguments Wireshark passes, and every option of our interfaces'
/// configurations (each interface uses its own).
#[derive(Debug, Parser)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "the extcap protocol's flags, as Wireshark passes them"
)]
#[command(name = "pcap", about = "pcap as a Wireshark extcap program")]
struct ExtcapArgs {
    /// List the interfaces.
    #[arg(long)]
    extcap_interfaces: bool,
    /// Wireshark's version.
    #[arg(long, value_name = "VERSION", num_args = 0..=1, default_missing_value = "")]
    extcap_version: Option<String>,
    /// The interface the other calls are about.
    #[arg(long, value_name = "NAME")]
    extcap_interface: Option<String>,
    /// List the interface's link types.
    #[arg(long)]
    extcap_dlts: bool,
    /// List the interface's options.
    #[arg(long)]
    extcap_config: bool,
    /// Reload a selector's values (none of ours needs it).
    #[arg(long, value_name = "ARG")]
    extcap_reload_option: Option<String>,
    /// Capture into the fifo.
    #[arg(long)]
    capture: bool,
    #[arg(long, value_name = "PATH")]
    fifo: Option<PathBuf>,
    #[arg(long, value_name = "EXPRESSION")]
    extcap_capture_filter: Option<String>,
    /// Wireshark's toolbar control pipes: we have no controls.
    #[arg(long, value_name = "PATH")]
    extcap_control_in: Option<PathBuf>,
    #[arg(long, value_name = "PATH")]
    extcap_control_out: Option<PathBuf>,
    #[arg(long)]
    debug: bool,
    #[arg(long, value_name = "FILE")]
    debug_file: Option<PathBuf>,

    // Cloud Foundry app.
    #[arg(long)]
    app: Option<String>,
    #[arg(long)]
    instances: Option<String>,
    #[arg(long)]
    process: Option<String>,
    #[arg(long)]
    follow: bool,

    // BOSH VMs.
    #[arg(long)]
    environment: Option<String>,
    #[arg(long)]
    deployment: Option<String>,
    #[arg(long)]
    groups: Option<String>,
    #[arg(long)]
    ids: Option<String>,
    #[arg(long)]
    interfaces: Option<String>,
    #[arg(long)]
    bosh_config: Option<PathBuf>,

    // Both remote ones.
    #[arg(long)]
    api: Option<String>,
    #[arg(long)]
    ca: Option<PathBuf>,

    // Local.
    #[arg(long)]
    interface: Option<String>,
    #[arg(long)]
    agent: Option<PathBuf>,

    // All.
    #[arg(long)]
    snaplen: Option<u32>,
}

/// Runs the extcap call `args` (the whole command line).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = match ExtcapArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
    let code = match run(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pcap: {}", crate::describe(&error));
            ExitCode::FAILURE
        }
    };
    if let Some(fifo) = args.fifo.as_deref().filter(|_| code != ExitCode::SUCCESS) {
        release_reader(fifo);
    }
    code
}

/// Opens the fifo's write end and closes it again. A capture that fails
/// before it writes (a missing option, a refusal) may never have opened the
/// fifo, and dumpcap waits for a writer in `select` with no deadline, not
/// even `-a duration`: Wireshark showed the error but the capture never
/// ended. A writer that comes and goes is end of file to dumpcap. The open
/// waits for dumpcap to open its read end, which it may do after this
/// process has already failed (a non-blocking open then finds no reader,
/// and dumpcap hung); it waits at most [`RELEASE_DEADLINE`], on a thread of
/// its own, so a fifo that nobody reads cannot hold the process. Only a
/// fifo is touched.
fn release_reader(fifo: &Path) {
    use std::os::unix::fs::FileTypeExt as _;
    if !std::fs::metadata(fifo).is_ok_and(|m| m.file_type().is_fifo()) {
        return;
    }
    let (opened, wait) = std::sync::mpsc::channel();
    let fifo = fifo.to_owned();
    let open = move || {
        let _ = File::options().write(true).open(&fifo);
        let _ = opened.send(());
    };
    if std::thread::Builder::new().spawn(open).is_ok() {
        let _ = wait.recv_timeout(RELEASE_DEADLINE);
    }
}

/// How long a failed capture waits for dumpcap to open the fifo.
const RELEASE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

fn run(args: &ExtcapArgs) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    if args.extcap_interfaces {
        out.write_all(interfaces().as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.extcap_version.is_some() && args.extcap_interface.is_none() && !args.capture {
        // `--extcap-version` alone: the `extcap` sentence.
        let all = interfaces();
        out.write_all(all.lines().next().unwrap_or_default().as_bytes())?;
        out.write_all(b"\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(interface) = args.extcap_interface.as_deref() else {
        bail!("--extcap-interface is missing (one of {APP}, {BOSH}, {LOCAL})");
    };
    if args.extcap_dlts {
        dlts(interface)?;
        out.write_all(b"dlt {number=1}{name=EN10MB}{display=Ethernet}\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.extcap_config {
        out.write_all(config(interface)?.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    if !args.capture {
        bail!(
            "nothing to do: expected --extcap-interfaces, --extcap-dlts, --extcap-config or --capture"
        );
    }
    drop(out);
    let Some(fifo) = args.fifo.as_deref() else {
        bail!("--capture needs --fifo PATH");
    };
    let command = match interface {
        APP | BOSH => {
            let argv = remote_command(interface, args, fifo)?;
            // Checked here, so that a bad option is said at once.
            Cli::try_parse_from(&argv)?;
            let mut command =
                Command::new(std::env::current_exe().context("cannot find this program's path")?);
            command.args(&argv[1..]);
            command
        }
        LOCAL => local(args, fifo)?,
        other => bail!("unknown interface {other:?} (expected {APP}, {BOSH} or {LOCAL})"),
    };
    supervise(command, args.debug_file.as_deref())
}

/// Runs the capture `command`, passing SIGTERM and SIGINT on to it; its
/// stderr is shown only when it fails, and written to `log` as it comes.
/// Its exit code.
fn supervise(mut command: Command, log: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut log = log
        .map(|path| {
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))
        })
        .transpose()?;
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", command.get_program().display()))?;
    let mut stderr = child.stderr.take().expect("piped stderr");
    let said = std::thread::spawn(move || {
        let mut text = Vec::new();
        let mut chunk = [0; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut chunk) {
            text.extend_from_slice(&chunk[..n]);
            if let Some(log) = log.as_mut() {
                let _ = log.write_all(&chunk[..n]);
            }
        }
        text
    });
    let pid =
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("process ids fit in an i32"));
    let status = crate::runtime().block_on(async {
        let mut signals =
            crate::session::Signals::new().context("cannot install signal handlers")?;
        let wait = tokio::task::spawn_blocking(move || child.wait());
        tokio::pin!(wait);
        loop {
            tokio::select! {
                status = &mut wait => break anyhow::Ok(status.context("waiting for the capture")??),
                () = signals.recv() => {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
            }
        }
    })?;
    let said = said.join().unwrap_or_default();
    if status.success() {
        return Ok(ExitCode::SUCCESS);
    }
    io::stderr().write_all(&said)?;
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .filter(|&c| c != 0)
            .unwrap_or(1),
    ))
}

/// `--extcap-interfaces`.
fn interfaces() -> String {
    format!(
        "extcap {{version={}}}{{help={HELP}}}{{display=pcap: Cloud Foundry capture}}\n\
         interface {{value={APP}}}{{display=Cloud Foundry app (pcap)}}\n\
         interface {{value={BOSH}}}{{display=BOSH VMs (pcap)}}\n\
         interface {{value={LOCAL}}}{{display=Local interface on a cell (pcap-agent)}}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Fails for an interface that is not ours.
fn dlts(interface: &str) -> anyhow::Result<()> {
    match interface {
        APP | BOSH | LOCAL => Ok(()),
        other => bail!("unknown interface {other:?} (expected {APP}, {BOSH} or {LOCAL})"),
    }
}

/// One `arg` sentence.
struct Arg {
    call: &'static str,
    display: &'static str,
    kind: &'static str,
    /// Further `{key=value}` fields, written as they are.
    extra: String,
    tooltip: &'static str,
}

impl Arg {
    fn new(call: &'static str, display: &'static str, kind: &'static str) -> Self {
        Self {
            call,
            display,
            kind,
            extra: String::new(),
            tooltip: "",
        }
    }

    fn tooltip(mut self, tooltip: &'static str) -> Self {
        self.tooltip = tooltip;
        self
    }

    fn with(mut self, key: &str, value: &str) -> Self {
        let _ = write!(self.extra, "{{{key}={value}}}");
        self
    }

    fn required(self) -> Self {
        self.with("required", "true")
    }
}

fn snaplen() -> Arg {
    Arg::new("--snaplen", "Snap length", "unsigned")
        .tooltip("Bytes kept of each packet: 1 to 262144; 0 means all (262144)")
        .with("range", "0,262144")
        .with("default", "0")
}

fn api(required: bool) -> Arg {
    let arg = Arg::new("--api", "pcap API URL", "string").with("group", "Connection");
    if required {
        arg.required()
            .tooltip("The pcap API, e.g. https://pcap-api.example.com:8443")
    } else {
        arg.tooltip(
            "The pcap API; empty: Cloud Controller's URL with api. replaced by pcap. \
             (or PCAP_API)",
        )
    }
}

fn ca() -> Arg {
    Arg::new("--ca", "CA certificate (PEM)", "fileselect")
        .tooltip("Verify the pcap API's certificate against this CA as well as the system's roots")
        .with("mustexist", "true")
        .with("group", "Connection")
}

/// `--extcap-config` for `interface`.
fn config(interface: &str) -> anyhow::Result<String> {
    let mut args = match interface {
        APP => vec![
            Arg::new("--app", "App name", "string").required().tooltip(
                "The app's name, in the space `cf target` points at (your cf login is used)",
            ),
            Arg::new("--instances", "Instances", "string")
                .tooltip("Instance indices, comma-separated; empty: every instance")
                .with("validation", "^[0-9, ]*$"),
            Arg::new("--process", "Process type", "string").with("default", "web"),
            Arg::new("--follow", "Follow the app", "boolflag")
                .tooltip("Also capture instances that start during the capture"),
            snaplen(),
            api(false),
            ca(),
        ],
        BOSH => vec![
            Arg::new("--environment", "BOSH environment", "string")
                .required()
                .tooltip("An alias or director URL from the BOSH CLI's configuration"),
            Arg::new("--deployment", "Deployment", "string").required(),
            Arg::new("--groups", "Instance groups", "string")
                .required()
                .tooltip("Comma-separated"),
            Arg::new("--ids", "Instance IDs", "string")
                .tooltip("Comma-separated; empty: every instance of the groups"),
            Arg::new("--interfaces", "Interfaces", "string")
                .tooltip("Comma-separated; empty: the API's default interfaces"),
            snaplen(),
            api(true),
            ca(),
            Arg::new("--bosh-config", "BOSH CLI configuration", "fileselect")
                .tooltip("Default: ~/.bosh/config or BOSH_CONFIG")
                .with("mustexist", "true")
                .with("group", "Connection"),
        ],
        LOCAL => vec![
            Arg::new("--interface", "Interface", "string")
                .required()
                .tooltip("A network interface of this machine, e.g. eth0 (pcap-agent needs root)"),
            snaplen(),
            Arg::new("--agent", "pcap-agent", "fileselect")
                .tooltip("Default: pcap-agent next to pcap, else on PATH")
                .with("mustexist", "true"),
        ],
        other => bail!("unknown interface {other:?} (expected {APP}, {BOSH} or {LOCAL})"),
    };
    args.push(
        Arg::new("--debug-file", "Log file", "fileselect")
            .tooltip("Append the capture's messages (what pcap or pcap-agent prints) to this file")
            .with("mustexist", "false")
            .with("group", "Debug"),
    );
    let mut text = String::new();
    for (number, arg) in args.iter().enumerate() {
        let _ = write!(
            text,
            "arg {{number={number}}}{{call={}}}{{display={}}}{{type={}}}",
            arg.call, arg.display, arg.kind
        );
        if !arg.tooltip.is_empty() {
            let _ = write!(text, "{{tooltip={}}}", arg.tooltip);
        }
        text.push_str(&arg.extra);
        text.push('\n');
    }
    Ok(text)
}

/// Comma-separated values, trimmed, without empty ones.
fn list(value: Option<&str>) -> Vec<&str> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

/// A value Wireshark passes, unless it is empty.
fn given(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}

/// The `pcap app` or `pcap bosh` command line of the capture.
fn remote_command(
    interface: &str,
    args: &ExtcapArgs,
    fifo: &Path,
) -> anyhow::Result<Vec<OsString>> {
    let mut argv: Vec<OsString> = vec!["pcap".into()];
    let mut push = |items: &[&str]| argv.extend(items.iter().map(OsString::from));
    if interface == APP {
        let Some(app) = given(args.app.as_deref()) else {
            bail!("give the app's name (the App name option of the Cloud Foundry app interface)");
        };
        push(&["app"]);
        if let Some(process) = given(args.process.as_deref()) {
            push(&["--process", process]);
        }
        for index in list(args.instances.as_deref()) {
            push(&["--instance", index]);
        }
        if args.follow {
            push(&["--follow"]);
        }
        push(&["--", app]);
    } else {
        let (Some(environment), Some(deployment)) = (
            given(args.environment.as_deref()),
            given(args.deployment.as_deref()),
        ) else {
            bail!("give the BOSH environment and deployment (options of the BOSH VMs interface)");
        };
        let groups = list(args.groups.as_deref());
        if groups.is_empty() {
            bail!("give at least one instance group (an option of the BOSH VMs interface)");
        }
        if given(args.api.as_deref()).is_none() && std::env::var_os("PCAP_API").is_none() {
            bail!("give the pcap API URL (an option of the BOSH VMs interface)");
        }
        push(&["bosh", "-n", "-e", environment, "-d", deployment]);
        for group in groups {
            push(&["-g", group]);
        }
        for id in list(args.ids.as_deref()) {
            push(&["--id", id]);
        }
        for name in list(args.interfaces.as_deref()) {
            push(&["-i", name]);
        }
        if let Some(config) = &args.bosh_config {
            argv.extend(["--bosh-config".into(), config.into()]);
        }
    }
    // Options before `--` would be positionals after it: put them first.
    let split = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    let mut options: Vec<OsString> = Vec::new();
    if let Some(api) = given(args.api.as_deref()) {
        options.extend(["--api".into(), api.into()]);
    }
    if let Some(ca) = &args.ca {
        options.extend(["--ca".into(), ca.into()]);
    }
    if let Some(snaplen) = args.snaplen {
        options.extend(["-s".into(), snaplen.to_string().into()]);
    }
    options.extend(["-w".into(), fifo.into()]);
    argv.splice(split..split, options);
    if argv.iter().all(|a| a != "--") {
        argv.push("--".into());
    }
    if let Some(filter) = given(args.extcap_capture_filter.as_deref()) {
        argv.push(filter.into());
    }
    Ok(argv)
}

/// `pcap-agent capture` on the local interface, writing pcapng to the fifo
/// as its stdout (so that it flushes as it goes).
fn local(args: &ExtcapArgs, fifo: &Path) -> anyhow::Result<Command> {
    let Some(interface) = given(args.interface.as_deref()) else {
        bail!("give the interface (an option of the local interface)");
    };
    let agent = args.agent.clone().map_or_else(agent, Ok)?;
    let output = File::options()
        .write(true)
        .open(fifo)
        .with_context(|| format!("cannot open {}", fifo.display()))?;
    let mut command = Command::new(&agent);
    command.args(["capture", "-i", interface, "-w", "-"]);
    if let Some(snaplen) = args.snaplen {
        command.args(["-s", &snaplen.to_string()]);
    }
    if let Some(filter) = given(args.extcap_capture_filter.as_deref()) {
        command.args(["--", filter]);
    }
    command.stdout(output);
    Ok(command)
}

/// `pcap-agent`: next to this program (the one a link points at), else on
/// PATH.
fn agent() -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("pcap-agent")))
        .filter(|path| path.is_file());
    beside
        .or_else(|| on_path("pcap-agent"))
        .context("pcap-agent is neither next to pcap nor on PATH (set the pcap-agent option)")
}

/// `name` in a directory of PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// `pcap extcap install|uninstall`.
#[derive(Debug, Subcommand)]
pub enum ExtcapCommand {
    /// Link pcap into Wireshark's extcap folder, so that Wireshark lists
    /// "Cloud Foundry app (pcap)", "BOSH VMs (pcap)" and "Local interface on
    /// a cell (pcap-agent)" as capture interfaces. Prints where the link
    /// went.
    Install(FolderArgs),
    /// Remove the link `pcap extcap install` made.
    Uninstall(FolderArgs),
}

#[derive(Debug, clap::Args)]
pub struct FolderArgs {
    /// The extcap folder; default: Wireshark's personal extcap folder
    /// ("Personal Extcap path" of `tshark -G folders`; for Wireshark 4.0,
    /// the `extcap` folder of its "Personal configuration"), else its
    /// global one.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The link's name in the folder.
const LINK: &str = "pcap";

impl ExtcapCommand {
    pub fn main(&self) -> ExitCode {
        let result = match self {
            Self::Install(folder) => install(folder.dir.clone()),
            Self::Uninstall(folder) => uninstall(folder.dir.clone()),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("pcap: {}", crate::describe(&error));
                ExitCode::FAILURE
            }
        }
    }
}

fn install(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match dir {
        Some(dir) => dir,
        None => extcap_folder()?,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let link = dir.join(LINK);
    if let Ok(meta) = link.symlink_metadata() {
        if !meta.file_type().is_symlink() {
            bail!(
                "{} exists and is not a link: remove it first",
                link.display()
            );
        }
        std::fs::remove_file(&link)
            .with_context(|| format!("cannot replace {}", link.display()))?;
    }
    std::os::unix::fs::symlink(&exe, &link)
        .with_context(|| format!("cannot link {} to {}", link.display(), exe.display()))?;
    println!("{}", link.display());
    eprintln!(
        "pcap: linked {} to {}; restart Wireshark (or Capture > Refresh Interfaces) to see \
         its Cloud Foundry app, BOSH VMs and local interfaces",
        link.display(),
        exe.display()
    );
    Ok(())
}

fn uninstall(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match dir {
        Some(dir) => dir,
        None => extcap_folder()?,
    };
    let link = dir.join(LINK);
    match link.symlink_metadata() {
        Ok(meta) if meta.file_type().is_symlink() => {
            std::fs::remove_file(&link)
                .with_context(|| format!("cannot remove {}", link.display()))?;
            println!("{}", link.display());
            eprintln!("pcap: removed {}", link.display());
            Ok(())
        }
        Ok(_) => bail!(
            "{} is not a link made by pcap extcap install: left alone",
            link.display()
        ),
        Err(_) => bail!("{} does not exist: nothing to remove", link.display()),
    }
}

/// The folder to install into, from `tshark -G folders`: this Wireshark's
/// personal extcap folder (see [`folder_from`]), else its global one.
fn extcap_folder() -> anyhow::Result<PathBuf> {
    let output = Command::new("tshark")
        .args(["-G", "folders"])
        .output()
        .context("cannot run `tshark -G folders` to find Wireshark's extcap folder (install tshark, or give --dir)")?;
    if !output.status.success() {
        bail!(
            "`tshark -G folders` failed: {} (give --dir)",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    folder_from(&String::from_utf8_lossy(&output.stdout))
        .context("`tshark -G folders` shows no extcap folder (give --dir)")
}

/// The personal extcap folder of `tshark -G folders`' output, else the
/// global one. Newer Wireshark versions show "Personal Extcap path".
/// Wireshark 4.0 shows only "Extcap path" (the global folder, or
/// `WIRESHARK_EXTCAP_DIR`), yet its extcap code also searches the `extcap`
/// folder of its personal configuration (`~/.config/wireshark/extcap`),
/// for root too, so that is its personal folder.
fn folder_from(folders: &str) -> Option<PathBuf> {
    let entry = |label: &str| {
        folders.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == label).then(|| PathBuf::from(value.trim()))
        })
    };
    entry("Personal Extcap path")
        .or_else(|| entry("Personal configuration").map(|dir| dir.join("extcap")))
        .or_else(|| entry("Global Extcap path"))
        .or_else(|| entry("Extcap path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ExtcapArgs {
        ExtcapArgs::try_parse_from(std::iter::once("pcap").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn detects_extcap_calls() {
        let call = |a: &[&str]| is_extcap_call(&a.iter().map(OsString::from).collect::<Vec<_>>());
        assert!(call(&["pcap", "--extcap-interfaces"]));
        assert!(call(&["pcap", "--capture", "--extcap-interface", APP]));
        assert!(!call(&["pcap", "app", "x"]));
        assert!(!call(&["pcap"]));
    }

    #[test]
    fn accepts_what_wireshark_passes() {
        let args = parse(&["--extcap-interfaces", "--extcap-version=4.0.17"]);
        assert!(args.extcap_interfaces);
        assert_eq!(args.extcap_version.as_deref(), Some("4.0.17"));
        assert!(parse(&["--extcap-version", "--extcap-interfaces"]).extcap_interfaces);
        assert_eq!(
            parse(&["--extcap-version"]).extcap_version.as_deref(),
            Some("")
        );
    }

    #[test]
    fn app_capture_is_pcap_apps_command_line() {
        let args = parse(&[
            "--capture",
            "--extcap-interface",
            APP,
            "--fifo",
            "/tmp/f",
            "--app",
            "my app",
            "--instances",
            "0, 2",
            "--snaplen",
            "96",
            "--api",
            "https://pcap.x",
            "--ca",
            "/ca.pem",
            "--extcap-capture-filter",
            "icmp or tcp port 80",
        ]);
        let argv = remote_command(APP, &args, Path::new("/tmp/f")).unwrap();
        let text: Vec<_> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            text,
            [
                "pcap",
                "app",
                "--instance",
                "0",
                "--instance",
                "2",
                "--api",
                "https://pcap.x",
                "--ca",
                "/ca.pem",
                "-s",
                "96",
                "-w",
                "/tmp/f",
                "--",
                "my app",
                "icmp or tcp port 80"
            ]
        );
        assert!(matches!(
            Cli::try_parse_from(argv).unwrap().command,
            PcapCommand::App(_)
        ));
    }

    #[test]
    fn bosh_capture_is_pcap_boshs_command_line() {
        let args = parse(&[
            "--capture",
            "--extcap-interface",
            BOSH,
            "--fifo",
            "/tmp/f",
            "--environment",
            "lab",
            "--deployment",
            "cf",
            "--groups",
            "router,diego-cell",
            "--interfaces",
            "eth0",
            "--api",
            "https://pcap.x",
        ]);
        let argv = remote_command(BOSH, &args, Path::new("/tmp/f")).unwrap();
        assert!(matches!(
            Cli::try_parse_from(&argv).unwrap().command,
            PcapCommand::Bosh(_)
        ));
        let text: Vec<_> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(&text[..4], ["pcap", "bosh", "-n", "-e"]);
        assert!(text.windows(2).any(|w| w == ["-g", "diego-cell"]));
        assert!(text.windows(2).any(|w| w == ["-i", "eth0"]));
    }

    #[test]
    fn missing_required_options_are_errors() {
        let args = parse(&["--capture", "--extcap-interface", APP, "--fifo", "/tmp/f"]);
        let error = remote_command(APP, &args, Path::new("/tmp/f")).unwrap_err();
        assert!(error.to_string().contains("app's name"), "{error}");
    }

    #[test]
    fn config_sentences_are_numbered_per_interface() {
        for interface in [APP, BOSH, LOCAL] {
            let text = config(interface).unwrap();
            for (n, line) in text.lines().enumerate() {
                assert!(
                    line.starts_with(&format!("arg {{number={n}}}{{call=--")),
                    "{line}"
                );
                assert_eq!(
                    line.matches('{').count(),
                    line.matches('}').count(),
                    "{line}"
                );
            }
        }
        assert!(config("eth0").is_err());
    }

    #[test]
    fn finds_the_personal_folder_else_the_global_one() {
        // Wireshark 4.0: the personal configuration's extcap folder.
        let old = "Personal configuration:\t/root/.config/wireshark\n\
                   Extcap path:         \t/usr/lib/x86_64-linux-gnu/wireshark/extcap\n";
        assert_eq!(
            folder_from(old),
            Some(PathBuf::from("/root/.config/wireshark/extcap"))
        );
        let new = "Personal configuration:\t/home/u/.config/wireshark\n\
                   Personal Extcap path:\t/home/u/.local/lib/wireshark/extcap\n\
                   Global Extcap path:\t/usr/lib/wireshark/extcap\n";
        assert_eq!(
            folder_from(new),
            Some(PathBuf::from("/home/u/.local/lib/wireshark/extcap"))
        );
        let global_only = "Extcap path:\t/usr/lib/x86_64-linux-gnu/wireshark/extcap\n";
        assert_eq!(
            folder_from(global_only),
            Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/wireshark/extcap"))
        );
        assert_eq!(folder_from("Temp: /tmp\n"), None);
    }
}
