//! `cf pcap`, the cf CLI plugin (`cf-pcap`), end to end. A stand-in for the
//! cf CLI written in Go with only Go's standard library (tests/cf-stub:
//! net/rpc with encoding/gob, the cf CLI's `CliRpcCmd` method signatures
//! and model types) serves the plugin RPC, runs `cf-pcap` as cf does, and
//! records every call. Cloud Controller and UAA are the test servers; the
//! landscape is the simulated Diego one of `cf_app.rs`.
//!
//! These tests need root (namespaces, eBPF) and Go (`cargo xtask setup`
//! installs Debian's golang-go).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context as _, ensure};
use pcap_tests::{
    TempDir,
    captures::{self, Capture},
    checks::{self, contains_all},
    landscape::{AppSpec, Landscape, org_guid, space_guid, write_cf_config},
    pki::Leaf,
    process::{Running, binary},
    reference,
    servers::{
        cloud_controller::{CcRole, CloudController},
        uaa::UaaUser,
    },
    stand_ins::{CF_SCOPES, CfLandscape, space_role, start_cloud_controller},
};
use serde_json::Value;

const STARTED: &str = "capturing on";
const APP: &str = "my-app";

/// `go`, as Debian's golang-go installs it.
fn go() -> anyhow::Result<PathBuf> {
    ["/usr/bin/go", "/usr/lib/go/bin/go"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("Go is missing: run `cargo xtask setup` (it installs Debian's golang-go)")
}

/// Builds tests/cf-stub once per test binary, offline, with its own caches.
fn stub() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let build = || -> anyhow::Result<PathBuf> {
                let dir = std::env::temp_dir().join("pcap-cf-stub");
                std::fs::create_dir_all(&dir)?;
                // Built under a name of this process, then renamed over the
                // last run's binary (atomic, even while another one runs it).
                let out = dir.join("cf-stub");
                let building = dir.join(format!("cf-stub.{}", std::process::id()));
                let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("cf-stub/main.go");
                let output = Command::new(go()?)
                    .args(["build", "-o"])
                    .arg(&building)
                    .arg(&source)
                    .env("GOCACHE", dir.join("cache"))
                    .env("GOPATH", dir.join("gopath"))
                    .env("GO111MODULE", "off")
                    .env("GOFLAGS", "")
                    .env("GOTOOLCHAIN", "local")
                    .output()
                    .context("running go build")?;
                ensure!(
                    output.status.success(),
                    "go build of {} failed: {}",
                    source.display(),
                    String::from_utf8_lossy(&output.stderr)
                );
                std::fs::rename(&building, &out)?;
                Ok(out)
            };
            build().map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// What the stand-in for cf is logged in to.
#[derive(Clone, Debug, Default)]
struct CfState {
    logged_in: bool,
    token: String,
    endpoint: String,
    skip_ssl: bool,
    space: Option<(String, String)>,
}

impl CfState {
    fn args(&self, record: &Path) -> Vec<String> {
        let mut args = vec![
            format!("-logged-in={}", self.logged_in),
            format!("-token={}", self.token),
            format!("-endpoint={}", self.endpoint),
            format!("-skip-ssl={}", self.skip_ssl),
            format!("-org-guid={}", org_guid("org")),
            "-org-name=org".to_owned(),
            format!("-record={}", record.display()),
        ];
        if let Some((guid, name)) = &self.space {
            args.push(format!("-space-guid={guid}"));
            args.push(format!("-space-name={name}"));
        }
        args
    }
}

/// The RPC methods the plugin called, in order, from the stub's record.
fn calls(record: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)?;
            Ok((
                value["method"].as_str().unwrap_or_default().to_owned(),
                value["arg"].clone(),
            ))
        })
        .collect()
}

/// The plugin run by the stand-in for cf as `cf install-plugin` or
/// `cf uninstall-plugin` do (`command`: `install` or `uninstall`),
/// recording its calls to cf in `record`.
fn stub_plugin(record: &Path, command: &str) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(stub()?)
        .arg(format!("-record={}", record.display()))
        .arg(binary("cf-pcap"))
        .arg(command)
        .output()?)
}

fn methods(record: &Path) -> anyhow::Result<Vec<String>> {
    Ok(calls(record)?.into_iter().map(|(m, _)| m).collect())
}

#[test]
fn installs_with_metadata_that_cf_accepts() -> anyhow::Result<()> {
    let dir = TempDir::new("cfp-install")?;
    let record = dir.join("install.jsonl");

    // cf install-plugin: SendMetadata, decoded by Go's gob and validated
    // with cf's rules by the stub.
    let output = stub_plugin(&record, "install")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "install failed: {stderr}");
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    ensure!(metadata["Name"] == "pcap", "{metadata}");
    let version: Vec<i64> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse().expect("a number"))
        .collect();
    ensure!(
        metadata["Version"]["Major"] == version[0]
            && metadata["Version"]["Minor"] == version[1]
            && metadata["Version"]["Build"] == version[2],
        "{metadata}"
    );
    ensure!(metadata["LibraryVersion"]["Major"] == 1, "{metadata}");
    let commands = metadata["Commands"].as_array().context("Commands")?;
    ensure!(commands.len() == 1, "{metadata}");
    let command = &commands[0];
    ensure!(
        command["Name"] == "pcap" && command["Alias"] == "",
        "{command}"
    );
    ensure!(!command["HelpText"].as_str().unwrap_or_default().is_empty());
    let usage = command["UsageDetails"]["Usage"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        usage.starts_with("cf pcap APP_NAME [--instance 0,2]") && usage.contains("[EXPRESSION]"),
        "{usage}"
    );
    let options = command["UsageDetails"]["Options"]
        .as_object()
        .context("Options")?;
    for option in
        "instance process api ca insecure snaplen count duration max-bytes w store".split(' ')
    {
        ensure!(
            options
                .get(option)
                .and_then(Value::as_str)
                .is_some_and(|d| !d.is_empty()),
            "option {option} is not described: {options:?}"
        );
    }
    ensure!(!options.contains_key("v"), "cf strips -v: {options:?}");
    ensure!(
        methods(&record)? == ["SetPluginMetadata"],
        "{:?}",
        methods(&record)?
    );

    Ok(())
}

#[test]
fn falls_back_to_app_pcap_uninstalls_and_refuses_to_run_alone() -> anyhow::Result<()> {
    let dir = TempDir::new("cfp-uninstall")?;
    let plugin = binary("cf-pcap");
    // A cf with a core `pcap` (RFC0048) refuses it; the fallback command
    // installs.
    let output = Command::new(stub()?)
        .args(["-core", "pcap"])
        .arg(&plugin)
        .arg("install")
        .output()?;
    checks::fails_with("installing beside a core pcap", &output, "names (pcap)")?;
    let output = Command::new(stub()?)
        .args(["-core", "pcap"])
        .arg(&plugin)
        .arg("install")
        .env("CF_PCAP_COMMAND", "app-pcap")
        .output()?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    ensure!(metadata["Commands"][0]["Name"] == "app-pcap", "{metadata}");
    ensure!(
        metadata["Commands"][0]["UsageDetails"]["Usage"]
            .as_str()
            .is_some_and(|u| u.starts_with("cf app-pcap APP_NAME")),
        "{metadata}"
    );

    // cf uninstall-plugin.
    let record = dir.join("uninstall.jsonl");
    let output = stub_plugin(&record, "uninstall")?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(methods(&record)?.is_empty());

    // On its own: says what it is and how to install it, exits 1.
    let output = Command::new(&plugin).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(1), "{:?}", output.status);
    contains_all(&stderr, &["cf CLI plugin", "cf install-plugin"])?;
    Ok(())
}

/// The landscape with Cloud Controller and its UAA, as in cf_app.rs.
struct Cf(CfLandscape);

impl std::ops::Deref for Cf {
    type Target = CfLandscape;

    fn deref(&self) -> &CfLandscape {
        &self.0
    }
}

impl Cf {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let landscape = Landscape::builder()
            .cells(2)
            .app(AppSpec::new(APP, &[0, 1]));
        let users = vec![
            UaaUser::new("dev", "p", &CF_SCOPES),
            UaaUser::new("auditor", "p", &CF_SCOPES),
        ];
        // Two slots per user and agent: the capture test runs `pcap app`
        // and `cf pcap` as the same user at the same time.
        let cf_extra = "\n[limits]\nmax_captures_per_user_per_agent = 2";
        CfLandscape::start(tag, landscape, users, roles(), Landscape::cc_apps, cf_extra).map(Self)
    }

    /// cf logged in as `user`, targeting org `org`, space `dev`.
    fn logged_in(&self, user: &str) -> anyhow::Result<CfState> {
        Ok(CfState {
            logged_in: true,
            token: self.servers.uaa.access_token(user, "cf", 3600)?,
            endpoint: self.servers.cc_url.clone(),
            skip_ssl: false,
            space: Some((space_guid("dev"), "dev".to_owned())),
        })
    }

    /// `cf pcap ARGS` through the stand-in for cf, in the control
    /// namespace, in a process group of its own; the record file.
    fn cf_pcap(
        &self,
        state: &CfState,
        args: &[&str],
        tag: &str,
    ) -> anyhow::Result<(Command, PathBuf)> {
        let record = self.dir.join(format!("{tag}.jsonl"));
        // cf starts with SIGINT at its default action, as a shell's
        // foreground job does; a test run started in the background would
        // otherwise hand it down ignored, and Go keeps an ignored SIGINT.
        let mut command = self.landscape.control.command("env");
        command
            .arg("--default-signal=INT")
            .arg(stub()?)
            .args(state.args(&record))
            .arg(binary("cf-pcap"))
            .arg("pcap")
            .args(args)
            .args(["--api", &self.landscape.api_url()])
            .arg("--ca")
            .arg(&self.landscape.pki.ca.certificate)
            .env_remove("PCAP_API")
            .env("HOME", &*self.dir)
            .stdin(Stdio::null())
            .process_group(0);
        Ok((command, record))
    }

    /// A `cf pcap` that must fail before capturing: its stderr and record.
    fn refused(
        &self,
        state: &CfState,
        args: &[&str],
        tag: &str,
    ) -> anyhow::Result<(String, PathBuf)> {
        let (mut command, record) = self.cf_pcap(state, args, tag)?;
        let output = command.output()?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        // cf exits 1 when its plugin fails.
        ensure!(
            output.status.code() == Some(1),
            "{:?}: {stderr}",
            output.status
        );
        ensure!(!stderr.contains(STARTED), "something started: {stderr}");
        ensure!(
            !stderr.contains(&state.token) || state.token.is_empty(),
            "the token was printed"
        );
        self.landscape.assert_no_app_attached()?;
        Ok((stderr, record))
    }

    /// Cloud Controller's app lookups so far (pcap-api also asks for its
    /// root document).
    fn cc_seen(&self) -> Vec<(String, String)> {
        lookups(&self.servers.cc)
    }
}

fn lookups(cc: &CloudController) -> Vec<(String, String)> {
    cc.seen
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(target, _)| target.starts_with("/v3/apps?"))
        .cloned()
        .collect()
}

fn roles() -> Vec<CcRole> {
    vec![
        space_role("space_developer", "dev", "dev"),
        space_role("space_auditor", "auditor", "dev"),
    ]
}

#[test]
fn the_user_is_told_what_to_do() -> anyhow::Result<()> {
    let cf = Cf::new("cfp-messages")?;

    // Logged out: nothing asked of Cloud Controller.
    let logged_out = CfState {
        endpoint: cf.servers.cc_url.clone(),
        ..CfState::default()
    };
    let (stderr, record) = cf.refused(&logged_out, &[APP], "logged-out")?;
    ensure!(stderr.contains("run `cf login`"), "{stderr}");
    ensure!(
        methods(&record)? == ["IsLoggedIn"],
        "{:?}",
        methods(&record)?
    );
    ensure!(cf.cc_seen().is_empty(), "{:?}", cf.cc_seen());

    // Logged in, but cf cannot get a token (its refresh failed): cf's
    // error, and what to do.
    let mut no_token = cf.logged_in("dev")?;
    no_token.token = String::new();
    let (stderr, _) = cf.refused(&no_token, &[APP], "no-token")?;
    contains_all(&stderr, &["run `cf login` again", "You are not logged in"])?;
    ensure!(cf.cc_seen().is_empty(), "{:?}", cf.cc_seen());

    // No space targeted.
    let mut no_space = cf.logged_in("dev")?;
    no_space.space = None;
    let (stderr, _) = cf.refused(&no_space, &[APP], "no-space")?;
    ensure!(stderr.contains("cf target -s"), "{stderr}");
    ensure!(cf.cc_seen().is_empty(), "{:?}", cf.cc_seen());

    // An unknown app: looked up in the targeted space with cf's token.
    let dev = cf.logged_in("dev")?;
    let (stderr, record) = cf.refused(&dev, &["no-such-app"], "unknown")?;
    contains_all(&stderr, &["\"no-such-app\" not found", "space \"dev\""])?;
    let expected = format!(
        "/v3/apps?names=no-such-app&space_guids={}",
        space_guid("dev")
    );
    ensure!(
        cf.cc_seen() == [(expected, format!("Bearer {}", dev.token))],
        "{:?}",
        cf.cc_seen()
    );
    let asked = methods(&record)?;
    for method in [
        "IsLoggedIn",
        "AccessToken",
        "ApiEndpoint",
        "IsSSLDisabled",
        "GetCurrentSpace",
        "GetCurrentOrg",
    ] {
        ensure!(
            asked.contains(&method.to_owned()),
            "{method} not called: {asked:?}"
        );
    }
    ensure!(!asked.iter().any(|m| m.starts_with("GetApp")), "{asked:?}");

    // Not allowed: a space auditor.
    let auditor = cf.logged_in("auditor")?;
    let (stderr, _) = cf.refused(&auditor, &[APP], "auditor")?;
    contains_all(&stderr, &["PERMISSION_DENIED", "SpaceDeveloper"])?;

    // The pcap API cannot be reached.
    let record = cf.dir.join("unreachable2.jsonl");
    let output = cf
        .landscape
        .control
        .command(stub()?.to_str().context("utf-8")?)
        .args(dev.args(&record))
        .arg(binary("cf-pcap"))
        .args(["pcap", APP, "--api", "https://127.0.0.1:1", "--ca"])
        .arg(&cf.landscape.pki.ca.certificate)
        .env_remove("PCAP_API")
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(1), "{stderr}");
    contains_all(
        &stderr,
        &["cannot reach the API at https://127.0.0.1:1", "PCAP_API"],
    )?;

    // Cloud Controller with a self-signed certificate: refused, unless cf
    // says `cf api --skip-ssl-validation` (IsSSLDisabled).
    let self_signed = self_signed(&cf.dir)?;
    let (other_cc, other) = start_cloud_controller(
        &cf.landscape.control,
        &self_signed,
        &cf.servers.uaa,
        cf.landscape.cc_apps(),
        roles(),
    )?;
    let mut insecure_cc = cf.logged_in("dev")?;
    insecure_cc.endpoint = other.url();
    let (stderr, _) = cf.refused(&insecure_cc, &["no-such-app"], "self-signed")?;
    ensure!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    ensure!(lookups(&other_cc).is_empty());
    insecure_cc.skip_ssl = true;
    let (stderr, _) = cf.refused(&insecure_cc, &["no-such-app"], "skip-ssl")?;
    ensure!(stderr.contains("\"no-such-app\" not found"), "{stderr}");
    ensure!(lookups(&other_cc).len() == 1, "{:?}", lookups(&other_cc));
    Ok(())
}

/// A certificate for 127.0.0.1 that signs itself.
fn self_signed(dir: &Path) -> anyhow::Result<Leaf> {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
    let leaf = Leaf {
        certificate: dir.join("self-signed.crt"),
        private_key: dir.join("self-signed.key"),
    };
    std::fs::write(&leaf.certificate, certified.cert.pem())?;
    std::fs::write(&leaf.private_key, certified.signing_key.serialize_pem())?;
    Ok(leaf)
}

/// (origin, packet bytes), sorted.
fn packets(capture: &Capture) -> Vec<(String, Vec<u8>)> {
    let mut packets: Vec<(String, Vec<u8>)> = capture
        .packets
        .iter()
        .map(|p| {
            let interface = p.interface.clone().unwrap_or_default();
            let origin = interface
                .rsplit_once('/')
                .map_or(interface.as_str(), |(o, _)| o)
                .to_owned();
            (origin, p.data.clone())
        })
        .collect();
    packets.sort();
    packets
}

#[test]
fn captures_through_the_plugin_what_pcap_app_captures_and_survives_ctrl_c() -> anyhow::Result<()> {
    let cf = Cf::new("cfp-capture")?;
    let dev = cf.logged_in("dev")?;

    // `pcap app` with the same login from ~/.cf/config.json.
    let home = cf.dir.join("home-dev");
    write_cf_config(
        &home,
        &cf.servers.cc_url,
        cf.servers.uaa.url(),
        &dev.token,
        &cf.servers.uaa.refresh_token("dev", "cf")?,
    )?;
    let app_file = cf.dir.join("app.pcapng");
    let mut pcap_app = Running::spawn(cf.landscape.pcap_app(&home).args([
        APP,
        "-w",
        app_file.to_str().context("utf-8")?,
        "icmp",
    ]))?;

    let plugin_file = cf.dir.join("plugin.pcapng");
    let (mut command, record) = cf.cf_pcap(
        &dev,
        &[APP, "-w", plugin_file.to_str().context("utf-8")?, "icmp"],
        "capture",
    )?;
    let mut plugin = Running::spawn(&mut command)?;
    pcap_app.wait_for(STARTED, 2)?;
    plugin.wait_for(STARTED, 2)?;

    for instance in &cf.landscape.app(APP).instances {
        instance.ns.sh(&format!(
            "ping -q -c 5 -i 0.002 -s {} 169.254.0.1",
            100 + 100 * instance.index
        ))?;
    }

    // Ctrl-C in the terminal: SIGINT to the whole process group, cf (the
    // stub, which dies at once as cf does) and the plugin. The stderr pipe
    // they share ends when the plugin has exited.
    nix::sys::signal::killpg(plugin.pid(), nix::sys::signal::Signal::SIGINT)?;
    let (status, lines) = plugin.wait()?;
    let stderr = lines.join("\n");
    ensure!(!status.success(), "cf survived SIGINT: {status:?}");
    let (app_status, app_lines) = pcap_app.interrupt()?;
    ensure!(
        app_status.success(),
        "pcap app failed:\n{}",
        app_lines.join("\n")
    );
    ensure!(
        stderr.contains(&format!("{} holds", plugin_file.display())),
        "the plugin did not finish its file:\n{stderr}"
    );
    ensure!(!stderr.contains(&dev.token), "the token was printed");

    // The file the interrupted plugin wrote is valid for tshark and capinfos.
    reference::assert_readable(&plugin_file)?;
    let from_plugin = captures::read_file(&plugin_file)?;
    let from_app = captures::read_file(&app_file)?;
    let (plugin_packets, app_packets) = (packets(&from_plugin), packets(&from_app));
    ensure!(
        plugin_packets.len() >= 20,
        "too few packets: {}",
        plugin_packets.len()
    );
    ensure!(
        plugin_packets == app_packets,
        "the plugin's {} packets differ from pcap app's {}",
        plugin_packets.len(),
        app_packets.len()
    );
    for index in [0, 1] {
        ensure!(
            plugin_packets
                .iter()
                .filter(|(o, _)| *o == format!("{APP}/{index}"))
                .count()
                >= 10,
            "too few packets from {APP}/{index}"
        );
    }
    // Everything was asked of cf before the capture started.
    let asked = methods(&record)?;
    ensure!(
        asked.last().map(String::as_str) == Some("GetCurrentOrg"),
        "{asked:?}"
    );
    cf.landscape.assert_no_app_attached()?;

    streams_pcapng_to_stdout(&cf, &dev)?;
    cf.landscape.assert_no_app_attached()?;
    Ok(())
}

/// `cf pcap APP -w -`: pcapng on cf's stdout, as `| wireshark -k -i -`
/// reads it.
fn streams_pcapng_to_stdout(cf: &Cf, dev: &CfState) -> anyhow::Result<()> {
    let (mut command, _) = cf.cf_pcap(
        dev,
        &[APP, "--instance", "0", "-c", "4", "-w", "-", "icmp"],
        "stdout",
    )?;
    let mut streaming = Running::spawn(command.stdout(Stdio::piped()))?;
    let mut stdout = streaming.take_stdout().context("piped stdout")?;
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut bytes).map(|_| bytes)
    });
    streaming.wait_for(STARTED, 1)?;
    cf.landscape.app(APP).instances[0]
        .ns
        .sh("ping -q -c 5 -i 0.002 169.254.0.1")?;
    let (status, lines) = streaming.wait()?;
    ensure!(
        status.success(),
        "cf pcap -w - failed:\n{}",
        lines.join("\n")
    );
    let bytes = reader.join().expect("reader thread")?;
    let streamed = captures::parse(&bytes)?;
    ensure!(
        streamed.packets.len() == 4,
        "{} packets on stdout",
        streamed.packets.len()
    );
    Ok(())
}
