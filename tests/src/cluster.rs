//! A small landscape for distributed captures: "VMs" that each run
//! `pcap-agent serve` in their own namespace, and a control namespace where
//! `pcap-api serve` and the `pcap` CLI run, all joined by veths and speaking
//! real mutual TLS with certificates made for the run.
//!
//! ```text
//!  control ns: pcap-api (127.0.0.1:8443), pcap CLI
//!     vmN 10.200.N.1/24 ──veth── mgmt0 10.200.N.2/24 : vm ns N, pcap-agent :9494
//!                                 eth0 192.168.N.1/24 ──veth── eth0 192.168.N.2/24 : peer ns N
//! ```
//! Test traffic runs between a VM and its peer on `eth0`, away from the
//! agent's own gRPC connection on `mgmt0`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{
    netns::{Netns, pin_neighbours},
    pki::{Ca, Leaf, Validity},
    process::Running,
};

/// The port agents listen on.
pub const AGENT_PORT: u16 = 9494;
/// Where the API listens, inside the control namespace.
pub const API_ADDRESS: &str = "127.0.0.1:8443";
/// The bearer token of the test user `alice`.
pub const ALICE_TOKEN: &str = "alice-token-0123456789";
/// The bearer token of the test user `bob`.
pub const BOB_TOKEN: &str = "bob-token-9876543210";

/// One VM: its namespace (running the agent), the peer it exchanges test
/// traffic with, and its agent once started.
#[derive(Debug)]
pub struct Vm {
    pub index: usize,
    pub ns: Netns,
    pub peer: Netns,
    pub agent: Option<Running>,
}

impl Vm {
    /// The VM's management address, where its agent listens.
    pub fn address(&self) -> String {
        format!("10.200.{}.2", self.index)
    }

    /// The VM's address on its data interface `eth0`.
    pub fn data_address(&self) -> String {
        format!("192.168.{}.1", self.index)
    }

    /// The peer's address on `eth0`.
    pub fn peer_address(&self) -> String {
        format!("192.168.{}.2", self.index)
    }

    /// The origin name the API gives this VM.
    pub fn origin(&self) -> String {
        format!("vm-{}", self.index)
    }
}

/// Certificates of a cluster.
#[derive(Debug)]
pub struct Pki {
    pub ca: Ca,
    /// Presented by every agent: names `pcap-agent` and each VM address.
    pub agent: Leaf,
    /// The API's client certificate towards agents (`pcap-api`).
    pub api_client: Leaf,
    /// The API's server certificate towards the CLI (`pcap-api`, 127.0.0.1).
    pub api_server: Leaf,
}

impl Pki {
    /// A CA in `dir`, and certificates it signed: the agents' (names
    /// `pcap-agent` and `agent_addresses`) and the API's.
    pub fn new(dir: &Path, agent_addresses: &[String]) -> anyhow::Result<Self> {
        let ca = Ca::new(dir, "pcap-ca")?;
        let mut agent_names = vec!["pcap-agent"];
        agent_names.extend(agent_addresses.iter().map(String::as_str));
        Ok(Self {
            agent: ca.leaf("agent", &agent_names, Validity::Current)?,
            api_client: ca.leaf("api-client", &["pcap-api"], Validity::Current)?,
            api_server: ca.leaf("api-server", &["pcap-api", "127.0.0.1"], Validity::Current)?,
            ca,
        })
    }

    /// An agent configuration: listening on [`AGENT_PORT`] with the agents'
    /// certificate, clients checked against the CA, `eth0` captured by
    /// default; `extra` is appended verbatim.
    pub fn agent_config(&self, extra: &str) -> String {
        format!(
            "listen = \"0.0.0.0:{AGENT_PORT}\"\n\n\
             [tls]\ncertificate = {}\nprivate_key = {}\nclient_ca = {}\n\n\
             [capture]\ndefault_interfaces = [\"eth0\"]\n\n{extra}",
            quoted(&self.agent.certificate),
            quoted(&self.agent.private_key),
            quoted(&self.ca.certificate),
        )
    }

    /// An API configuration: listening on [`API_ADDRESS`] with the API's
    /// server certificate, presenting `client` to the agents, `users`
    /// (name, token), and one static target `target` of `agents` (TOML
    /// inline tables, a line each) on `eth0` that every one of `users` may
    /// capture; `extra` is appended verbatim.
    pub fn api_config(
        &self,
        client: &Leaf,
        users: &[(&str, &str)],
        target: &str,
        agents: &str,
        extra: &str,
    ) -> String {
        let mut config = format!(
            "listen = \"{API_ADDRESS}\"\n\n\
             [tls]\ncertificate = {}\nprivate_key = {}\n\n\
             [agents]\nca = {}\ncertificate = {}\nprivate_key = {}\nserver_name = \"pcap-agent\"\n\n",
            quoted(&self.api_server.certificate),
            quoted(&self.api_server.private_key),
            quoted(&self.ca.certificate),
            quoted(&client.certificate),
            quoted(&client.private_key),
        );
        for (name, token) in users {
            let _ = write!(
                config,
                "[[users]]\nname = \"{name}\"\ntoken = \"{token}\"\n\n"
            );
        }
        let names: Vec<String> = users.iter().map(|(name, _)| format!("{name:?}")).collect();
        let _ = write!(
            config,
            "[[targets]]\nname = \"{target}\"\ninterfaces = [\"eth0\"]\nallow = {{ users = [{}] }}\n\
             agents = [\n{agents}]\n\n{extra}",
            names.join(", ")
        );
        config
    }
}

/// VMs, the control namespace and the files of one landscape.
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub control: Netns,
    pub vms: Vec<Vm>,
    pub pki: Pki,
    pub api: Option<Running>,
    /// Where `pcap-agent`, `pcap-api` and `pcap` are (the test build's by
    /// default; benchmarks point it at a release build).
    pub bin_dir: PathBuf,
}

impl Cluster {
    /// Builds `vms` VMs and the certificates; starts nothing.
    pub fn new(dir: &Path, vms: usize) -> anyhow::Result<Self> {
        let control = Netns::new("ctl")?;
        let mut built = Vec::new();
        for index in 0..vms {
            built.push(build_vm(&control, index)?);
        }
        let addresses: Vec<String> = built.iter().map(Vm::address).collect();
        let pki = Pki::new(dir, &addresses)?;
        Ok(Self {
            dir: dir.to_owned(),
            control,
            vms: built,
            pki,
            api: None,
            bin_dir: default_bin_dir(),
        })
    }

    /// Writes an agent configuration; `extra` is appended verbatim (for
    /// example a `[limits]` table).
    pub fn agent_config(&self, extra: &str) -> anyhow::Result<PathBuf> {
        written(self.dir.join("agent.toml"), &self.pki.agent_config(extra))
    }

    /// Starts `pcap-agent serve` on every VM with the configuration at `config`.
    pub fn start_agents(&mut self, config: &Path) -> anyhow::Result<()> {
        for index in 0..self.vms.len() {
            self.start_agent(index, config)?;
        }
        Ok(())
    }

    /// (Re)starts the agent of VM `index`.
    pub fn start_agent(&mut self, index: usize, config: &Path) -> anyhow::Result<()> {
        let program = self.bin("pcap-agent");
        let vm = &mut self.vms[index];
        let what = format!("agent of vm-{index}");
        vm.agent = Some(serve(&vm.ns, &program, config, "listening", &what)?);
        Ok(())
    }

    /// Writes an API configuration with one static target `vms` holding
    /// every VM (interface `eth0`), users alice and bob, who may both
    /// capture it; `agents_tls` replaces the client
    /// certificate the API presents to agents; `extra` is appended.
    pub fn api_config(&self, agents_tls: Option<&Leaf>, extra: &str) -> anyhow::Result<PathBuf> {
        let client = agents_tls.unwrap_or(&self.pki.api_client);
        let agents = agents_toml(
            self.vms
                .iter()
                .map(|vm| (vm.origin(), format!("{}:{AGENT_PORT}", vm.address()))),
        );
        let users = [("alice", ALICE_TOKEN), ("bob", BOB_TOKEN)];
        let config = self.pki.api_config(client, &users, "vms", &agents, extra);
        written(self.dir.join("api.toml"), &config)
    }

    /// Starts `pcap-api serve` in the control namespace.
    pub fn start_api(&mut self, config: &Path) -> anyhow::Result<()> {
        self.api = Some(start_api(&self.control, &self.bin_dir, config)?);
        Ok(())
    }

    /// `curl --cacert CA` in the control namespace, with the API's client
    /// certificate (`--cert`, `--key`) when `client_certificate`.
    pub fn curl(&self, client_certificate: bool) -> Command {
        let mut command = self.control.command("curl");
        command.arg("--cacert").arg(&self.pki.ca.certificate);
        if client_certificate {
            let client = &self.pki.api_client;
            command
                .arg("--cert")
                .arg(&client.certificate)
                .arg("--key")
                .arg(&client.private_key);
        }
        command
    }

    /// `pcap capture` against the API as `token`, in the control namespace,
    /// with `args` after the connection options.
    pub fn cli(&self, token: &str, args: &[&str]) -> Command {
        self.cli_trusting(&self.pki.ca.certificate, token, args)
    }

    /// [`Self::cli`] with `--ca ca`.
    pub fn cli_trusting(&self, ca: &Path, token: &str, args: &[&str]) -> Command {
        let mut command = self.control.command(&self.bin("pcap"));
        command
            .args(["capture", "--api", &format!("https://{API_ADDRESS}")])
            .arg("--ca")
            .arg(ca)
            .args(["--target", "vms"])
            .env("PCAP_TOKEN", token)
            .args(args);
        command
    }
}

impl Cluster {
    fn bin(&self, name: &str) -> String {
        bin(&self.bin_dir, name)
    }
}

/// `PROGRAM serve --config CONFIG` in `ns`, logging at info, once its
/// stderr says `ready`; `what` names it in an error.
pub(crate) fn serve(
    ns: &Netns,
    program: &str,
    config: &Path,
    ready: &str,
    what: &str,
) -> anyhow::Result<Running> {
    let mut command = ns.command(program);
    command
        .args(["serve", "--config"])
        .arg(config)
        .env("PCAP_LOG", "info");
    let mut running = Running::spawn(&mut command)?;
    running.wait_for(ready, 1).context(what.to_owned())?;
    Ok(running)
}

/// Agents (origin, `host:port`) as lines of a TOML `agents = [...]` array:
/// `  { origin = "ORIGIN", address = "host:port" },`.
pub(crate) fn agents_toml(agents: impl Iterator<Item = (String, String)>) -> String {
    agents.fold(String::new(), |mut toml, (origin, address)| {
        let _ = writeln!(
            toml,
            "  {{ origin = \"{origin}\", address = \"{address}\" }},"
        );
        toml
    })
}

/// `pcap-api serve` of `bin_dir` in `ns` with `config`, once it serves.
pub(crate) fn start_api(ns: &Netns, bin_dir: &Path, config: &Path) -> anyhow::Result<Running> {
    serve(ns, &bin(bin_dir, "pcap-api"), config, "serving", "pcap-api")
}

/// Writes `contents` to `path`; the path.
pub(crate) fn written(path: PathBuf, contents: &str) -> anyhow::Result<PathBuf> {
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The path of binary `name` in `dir`, for [`Netns::command`].
pub(crate) fn bin(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("utf-8 path").to_owned()
}

/// A path as a TOML basic string.
pub(crate) fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// The directory of the test build's binaries, or the running program's
/// own when there is none (benchmarks then set `bin_dir`).
pub(crate) fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .skip(1)
        .take(2)
        .find(|dir| dir.join("pcap-agent").exists())
        .unwrap_or_else(|| exe.parent().expect("a program is in a directory"))
        .to_owned()
}

fn build_vm(control: &Netns, index: usize) -> anyhow::Result<Vm> {
    let ns = Netns::new(&format!("vm{index}"))?;
    let peer = Netns::new(&format!("pr{index}"))?;
    control.sh(&format!(
        "ip link add vm{index} type veth peer name mgmt0 netns {} && \
         ip addr add 10.200.{index}.1/24 dev vm{index} && ip link set vm{index} up",
        ns.name
    ))?;
    ns.sh(&format!(
        "ip addr add 10.200.{index}.2/24 dev mgmt0 && ip link set mgmt0 up && \
         ip link add eth0 type veth peer name eth0 netns {} && \
         sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1 && \
         ip addr add 192.168.{index}.1/24 dev eth0 && ip link set eth0 up",
        peer.name
    ))?;
    peer.sh(&format!(
        "sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1 && \
         ip addr add 192.168.{index}.2/24 dev eth0 && ip link set eth0 up"
    ))?;
    pin_neighbours(
        (&ns, "eth0", &format!("192.168.{index}.1")),
        (&peer, "eth0", &format!("192.168.{index}.2")),
    )?;
    Ok(Vm {
        index,
        ns,
        peer,
        agent: None,
    })
}
