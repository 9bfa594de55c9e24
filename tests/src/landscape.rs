//! A simulated Diego landscape: cells joined by an underlay bridge, silk's
//! overlay (a `silk-vtep` VXLAN device with group policy on every cell),
//! app "containers" behind host-side `s-<ip>` veths, silk's container
//! metadata store, and iptables rules in the style of the VXLAN policy
//! agent, so that container-to-container traffic crosses `silk-vtep` with
//! the source app's policy tag exactly as on a real cell.
//!
//! ```text
//!  control ns (the underlay): bridge br0 10.0.0.1/24, pcap-api (127.0.0.1:8443), pcap CLI
//!    ├─ cell 0: eth0 10.0.0.101/24, silk-vtep 10.255.77.0/16 (VNI 1, :4789, gbp), pcap-agent :9494
//!    │    └─ s-010255077003 169.254.0.1 ──veth── eth0 10.255.77.3/32 : container of appA/0
//!    └─ cell 1: eth0 10.0.0.102/24, silk-vtep 10.255.78.0/16
//!         └─ s-010255078003 ──veth── eth0 10.255.78.3/32 : container of appB/0
//! ```
//!
//! Build one with [`Landscape::builder`]:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use pcap_tests::landscape::{AppSpec, Landscape};
//! let dir = pcap_tests::TempDir::new("cf")?;
//! let mut landscape = Landscape::builder()
//!     .cells(2)
//!     .app(AppSpec::new("appA", &[0]))
//!     .app(AppSpec::new("appB", &[1, 1]))
//!     .policy("appA", "appB", 8080)
//!     .build(&dir)?;
//! landscape.start_agents("")?;
//! let b0 = &landscape.app("appB").instances[0];
//! println!("{} on cell {} at {} behind {}", b0.instance_guid, b0.cell, b0.overlay_ip, b0.host_interface());
//! # Ok(()) }
//! ```
//!
//! The stable surface for other tests (and `cargo xtask demo`):
//! [`LandscapeBuilder`]; [`AppSpec::new`], [`AppSpec::in_space`],
//! [`space_guid`], [`org_guid`]; [`Landscape`]'s `control`, `cells`,
//! `apps`, `pki`, [`Landscape::app`], [`Landscape::tag`],
//! [`Landscape::agent_address`], [`Landscape::agent_config`],
//! [`Landscape::start_agents`], [`Landscape::api_config`],
//! [`Landscape::start_api`], [`Landscape::pcap`], [`Landscape::api_url`],
//! [`Landscape::write_store`]; [`App`]'s and [`Instance`]'s fields,
//! [`Instance::host_interface`]; [`Cell::underlay_ip`],
//! [`Cell::overlay_base`], [`Cell::metadata_store`], [`Cell::origin`]. GUIDs
//! are derived from names, so they are the same on every run; agents
//! listen on `<underlay ip>:9494` and present `pki.agent` (names
//! `pcap-agent` and every underlay IP).
//!
//! Addresses: cell `c` (from 0) has underlay IP `10.0.0.(101+c)`, overlay
//! subnet `10.255.(77+c).0/24`; its containers get `.3`, `.4`, ... in the
//! order apps and instances were added. Policy tags are given to apps in
//! order of first appearance in a policy, from `0001`, as the policy server
//! does. LOG rules need `net.netfilter.nf_log_all_netns=1` to reach the
//! kernel log from a namespace; the landscape sets it while it lives and
//! restores the previous value when the last landscape is dropped.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use anyhow::Context as _;
use pcap_platform::silk;

use crate::{
    cluster::{Pki, agents_toml, bin, default_bin_dir, quoted, serve, start_api, written},
    netns::{self, Netns},
    process::Running,
    servers::cloud_controller::{CcApp, CcInstance},
};

/// The port agents listen on, on each cell's underlay address.
pub const AGENT_PORT: u16 = 9494;
/// Where the API listens, inside the control namespace.
pub const API_ADDRESS: &str = "127.0.0.1:8443";
/// The bearer token of the static test user `alice` (see [`Landscape::api_config`]).
pub const ALICE_TOKEN: &str = "alice-token-0123456789";
/// The underlay bridge's address in the control namespace.
pub const CONTROL_ADDRESS: &str = "10.0.0.1";
/// The MTU of every `silk-vtep` and container veth (a 1500-byte underlay
/// minus VXLAN's 50 bytes).
pub const OVERLAY_MTU: u32 = 1450;
/// The VXLAN policy agent's chain, `vpa--<unix micros>`; fixed here.
pub const VPA_CHAIN: &str = "vpa--1700000000000001";

/// An app to deploy: its name, GUIDs, container ports, and the cell of each
/// instance (index `i` of `cells` is instance index `i`).
#[derive(Clone, Debug)]
pub struct AppSpec {
    /// The app's name, as `cf` and the Cloud Controller know it.
    pub name: String,
    /// The app's GUID, derived from its name.
    pub guid: String,
    /// The GUID of the app's space ([`space_guid`]).
    pub space_guid: String,
    /// The GUID of the space's org ([`org_guid`]).
    pub org_guid: String,
    /// The store's `ports` (comma-separated there); the first is where
    /// policies point when they name no port.
    pub ports: Vec<u16>,
    /// The cell of each instance: instance index `i` runs on cell
    /// `cells[i]`.
    pub cells: Vec<usize>,
}

impl AppSpec {
    /// An app named `name` with GUIDs derived from its name, in the space
    /// `dev` of org `org` ([`space_guid`], [`org_guid`]), port 8080, one
    /// instance on each cell listed.
    pub fn new(name: &str, cells: &[usize]) -> Self {
        Self {
            name: name.to_owned(),
            guid: guid_from(&format!("app:{name}")),
            space_guid: space_guid("dev"),
            org_guid: org_guid("org"),
            ports: vec![8080],
            cells: cells.to_vec(),
        }
    }

    /// The same app in another space (GUID from [`space_guid`]).
    #[must_use]
    pub fn in_space(mut self, space: &str) -> Self {
        self.space_guid = space_guid(space);
        self
    }
}

/// The GUID of the space named `name` in every landscape.
pub fn space_guid(name: &str) -> String {
    guid_from(&format!("space:{name}"))
}

/// The GUID of the org named `name` in every landscape.
pub fn org_guid(name: &str) -> String {
    guid_from(&format!("org:{name}"))
}

/// Writes `home/.cf/config.json` (mode 0600) as `cf login` leaves it:
/// logged in to the Cloud Controller at `cc_url` through the UAA at
/// `uaa_url`, targeting org `org` and space `dev`; `home` is then the
/// user's `CF_HOME`.
pub fn write_cf_config(
    home: &Path,
    cc_url: &str,
    uaa_url: &str,
    access_token: &str,
    refresh_token: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(home.join(".cf"))?;
    let config = serde_json::json!({
        "ConfigVersion": 4, "Target": cc_url, "APIVersion": "3.185.0",
        "AuthorizationEndpoint": uaa_url, "UaaEndpoint": uaa_url,
        "AccessToken": format!("bearer {access_token}"),
        "RefreshToken": refresh_token,
        "UAAOAuthClient": "cf", "UAAOAuthClientSecret": "", "SSHOAuthClient": "ssh-proxy",
        "OrganizationFields": {"GUID": org_guid("org"), "Name": "org"},
        "SpaceFields": {"GUID": space_guid("dev"), "Name": "dev", "AllowSSH": true},
        "SSLDisabled": false,
        "PluginRepos": [{"Name": "CF-Community", "URL": "https://plugins.cloudfoundry.org"}],
        "ColorEnabled": "", "Locale": "",
    });
    let path = home.join(".cf/config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    std::fs::set_permissions(
        &path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )?;
    Ok(())
}

/// A c2c policy: `source` may reach `destination` on TCP `port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub source: String,
    pub destination: String,
    pub port: u16,
}

/// Collects cells, apps and policies; [`LandscapeBuilder::build`] makes them.
#[derive(Debug)]
pub struct LandscapeBuilder {
    cells: usize,
    apps: Vec<AppSpec>,
    policies: Vec<Policy>,
    logging: bool,
}

impl LandscapeBuilder {
    /// How many cells (default 2).
    #[must_use]
    pub fn cells(mut self, cells: usize) -> Self {
        self.cells = cells;
        self
    }

    #[must_use]
    pub fn app(mut self, app: AppSpec) -> Self {
        self.apps.push(app);
        self
    }

    /// Allows `source` to reach `destination` on TCP `port`.
    #[must_use]
    pub fn policy(mut self, source: &str, destination: &str, port: u16) -> Self {
        self.policies.push(Policy {
            source: source.to_owned(),
            destination: destination.to_owned(),
            port,
        });
        self
    }

    /// Whether the VPA writes its `OK_`/`DENY_C2C_` LOG rules (default on).
    #[must_use]
    pub fn logging(mut self, on: bool) -> Self {
        self.logging = on;
        self
    }

    /// Builds the namespaces, devices, metadata stores, iptables rules and
    /// certificates under `dir`; starts no process.
    pub fn build(self, dir: &Path) -> anyhow::Result<Landscape> {
        Landscape::build(self, dir)
    }
}

/// One Diego cell: its namespace (where its agent runs), addresses, and the
/// path of its container metadata store.
#[derive(Debug)]
pub struct Cell {
    pub index: usize,
    pub ns: Netns,
    pub agent: Option<Running>,
    dir: PathBuf,
}

impl Cell {
    /// The underlay address, on the cell's `eth0`.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        underlay_ip(self.index)
    }

    /// The base address of the cell's overlay /24 (silk-vtep's address).
    pub fn overlay_base(&self) -> Ipv4Addr {
        overlay_base(self.index)
    }

    /// `store.json` of silk's container metadata store (`store.json_lock`
    /// and `store.json_version` are next to it).
    pub fn metadata_store(&self) -> PathBuf {
        self.dir.join("container-metadata/store.json")
    }

    /// The name the API gives this cell's agent, `cell-N`.
    pub fn origin(&self) -> String {
        format!("cell-{}", self.index)
    }
}

/// An app and its instances.
#[derive(Debug)]
pub struct App {
    /// What it was deployed as (its name, GUIDs and ports read through it).
    pub spec: AppSpec,
    pub instances: Vec<Instance>,
}

impl std::ops::Deref for App {
    type Target = AppSpec;

    fn deref(&self) -> &AppSpec {
        &self.spec
    }
}

/// One app instance: a container namespace on a cell.
#[derive(Debug)]
pub struct Instance {
    pub index: usize,
    /// Diego's instance GUID: the Garden handle and the metadata store key.
    pub instance_guid: String,
    pub overlay_ip: Ipv4Addr,
    pub cell: usize,
    /// The container's network namespace; its interface is `eth0`.
    pub ns: Netns,
}

impl Instance {
    /// The host-side veth on the cell, silk's `s-010255077003`.
    pub fn host_interface(&self) -> String {
        host_interface(self.overlay_ip)
    }
}

/// A running simulated landscape; everything is removed on drop.
#[derive(Debug)]
pub struct Landscape {
    pub dir: PathBuf,
    // Field order is drop order: processes, then containers, then cells,
    // then the underlay, then the sysctl.
    pub api: Option<Running>,
    pub apps: Vec<App>,
    pub cells: Vec<Cell>,
    /// The underlay namespace: bridge `br0` at [`CONTROL_ADDRESS`]; the API
    /// and the CLI run here.
    pub control: Netns,
    pub policies: Vec<Policy>,
    pub pki: Pki,
    /// Where `pcap-agent`, `pcap-api` and `pcap` are.
    pub bin_dir: PathBuf,
    tags: BTreeMap<String, u16>,
    _nf_log: NfLogAllNetns,
}

impl Landscape {
    /// Two cells, no apps, no policies, logging on.
    pub fn builder() -> LandscapeBuilder {
        LandscapeBuilder {
            cells: 2,
            apps: Vec::new(),
            policies: Vec::new(),
            logging: true,
        }
    }

    fn build(spec: LandscapeBuilder, dir: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=100).contains(&spec.cells),
            "1 to 100 cells, not {}",
            spec.cells
        );
        let nf_log = NfLogAllNetns::enable()?;
        let control = Netns::new("ul")?;
        control.sh(&format!(
            "ip link add br0 type bridge && ip addr add {CONTROL_ADDRESS}/24 dev br0 && \
             ip link set br0 up"
        ))?;
        let mut cells = Vec::new();
        for index in 0..spec.cells {
            cells.push(build_cell(&control, dir, index)?);
        }
        program_leases(&cells)?;

        let mut tags = BTreeMap::new();
        for policy in &spec.policies {
            for app in [&policy.source, &policy.destination] {
                anyhow::ensure!(
                    spec.apps.iter().any(|a| &a.name == app),
                    "policy names an unknown app {app}"
                );
                let next = u16::try_from(tags.len() + 1)?;
                tags.entry(app.clone()).or_insert(next);
            }
        }

        let mut next_host = vec![3_u8; spec.cells];
        let mut apps = Vec::new();
        for app in spec.apps {
            let mut instances = Vec::new();
            for (index, &cell) in app.cells.iter().enumerate() {
                anyhow::ensure!(
                    cell < spec.cells,
                    "{} instance {index}: no cell {cell}",
                    app.name
                );
                let [_, _, c, _] = overlay_base(cell).octets();
                let overlay_ip = Ipv4Addr::new(10, 255, c, next_host[cell]);
                next_host[cell] += 1;
                let instance_guid = instance_guid(&app.name, index);
                let ns = build_container(&cells[cell], overlay_ip)?;
                instances.push(Instance {
                    index,
                    instance_guid,
                    overlay_ip,
                    cell,
                    ns,
                });
            }
            apps.push(App {
                spec: app,
                instances,
            });
        }

        let addresses: Vec<String> = cells.iter().map(|c| c.underlay_ip().to_string()).collect();
        let pki = Pki::new(dir, &addresses)?;

        let landscape = Self {
            dir: dir.to_owned(),
            api: None,
            apps,
            cells,
            control,
            policies: spec.policies,
            pki,
            bin_dir: default_bin_dir(),
            tags,
            _nf_log: nf_log,
        };
        for cell in &landscape.cells {
            landscape.write_store(cell.index)?;
            landscape.program_policy(cell.index, spec.logging)?;
        }
        Ok(landscape)
    }

    /// The app named `name`; panics when there is none.
    pub fn app(&self, name: &str) -> &App {
        self.apps
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no app {name} in the landscape"))
    }

    /// No container veth of any app has anything of ours attached.
    pub fn assert_no_app_attached(&self) -> anyhow::Result<()> {
        for app in &self.apps {
            for instance in &app.instances {
                let cell = &self.cells[instance.cell];
                let programs = cell.ns.tcx_programs(&instance.host_interface())?;
                anyhow::ensure!(
                    programs.is_empty(),
                    "{}/{} has {programs:?} attached",
                    app.name,
                    instance.index
                );
            }
        }
        Ok(())
    }

    /// The policy tag of app `name` (the mark its packets carry), if it is in
    /// a policy.
    pub fn tag(&self, name: &str) -> Option<u16> {
        self.tags.get(name).copied()
    }

    /// `host:port` of cell `index`'s agent, as the API dials it.
    pub fn agent_address(&self, index: usize) -> String {
        format!("{}:{AGENT_PORT}", underlay_ip(index))
    }

    /// Every cell's agent as lines of a TOML `agents = [...]` array:
    /// `  { origin = "cell-N", address = "host:port" },`.
    pub fn agents_toml(&self) -> String {
        agents_toml(
            self.cells
                .iter()
                .map(|cell| (cell.origin(), self.agent_address(cell.index))),
        )
    }

    /// The apps as the test Cloud Controller serves them: each with its
    /// instances running on their cells.
    pub fn cc_apps(&self) -> Vec<CcApp> {
        self.apps
            .iter()
            .map(|app| {
                let instances = app
                    .instances
                    .iter()
                    .map(|i| {
                        CcInstance::running(
                            u32::try_from(i.index).expect("few instances"),
                            &self.cells[i.cell].underlay_ip().to_string(),
                            &i.overlay_ip.to_string(),
                            &i.instance_guid,
                        )
                    })
                    .collect();
                CcApp::new(&app.guid, &app.name, &app.space_guid, instances)
            })
            .collect()
    }

    /// Rewrites cell `index`'s metadata store from the landscape, under an
    /// exclusive lock on `store.json_lock`, and bumps `store.json_version`,
    /// as cni-wrapper-plugin does.
    pub fn write_store(&self, index: usize) -> anyhow::Result<()> {
        let mut store = silk::Store::new();
        for app in &self.apps {
            for instance in app.instances.iter().filter(|i| i.cell == index) {
                let ports: Vec<String> = app.ports.iter().map(u16::to_string).collect();
                store.insert(
                    instance.instance_guid.clone(),
                    silk::StoreEntry {
                        handle: instance.instance_guid.clone(),
                        ip: instance.overlay_ip.to_string(),
                        metadata: Some(silk::Metadata {
                            app_id: app.guid.clone(),
                            space_id: app.space_guid.clone(),
                            org_id: app.org_guid.clone(),
                            policy_group_id: app.guid.clone(),
                            ports: ports.join(","),
                            container_workload: "app".to_owned(),
                        }),
                    },
                );
            }
        }
        write_store_file(&self.cells[index].metadata_store(), &store)
    }

    /// Writes an agent configuration for cell `index` (its metadata store
    /// in `[cf]`); `extra` is appended verbatim.
    pub fn agent_config(&self, index: usize, extra: &str) -> anyhow::Result<PathBuf> {
        let store = quoted(&self.cells[index].metadata_store());
        let extra = format!("[cf]\ncontainer_metadata_store = {store}\n\n{extra}");
        let path = self.cells[index].dir.join("agent.toml");
        written(path, &self.pki.agent_config(&extra))
    }

    /// Starts `pcap-agent serve` in every cell, each with its own
    /// configuration ([`Landscape::agent_config`] with `extra`).
    pub fn start_agents(&mut self, extra: &str) -> anyhow::Result<()> {
        for index in 0..self.cells.len() {
            let config = self.agent_config(index, extra)?;
            self.spawn_agent(index, &config)?;
        }
        Ok(())
    }

    fn spawn_agent(&mut self, index: usize, config: &Path) -> anyhow::Result<()> {
        let program = self.bin("pcap-agent");
        let cell = &mut self.cells[index];
        let what = format!("agent of cell-{index}");
        cell.agent = Some(serve(&cell.ns, &program, config, "listening", &what)?);
        Ok(())
    }

    /// Kills cell `index`'s agent with SIGKILL, as a crash does (monit
    /// restarts it later: [`Landscape::restart_agent`]); its stderr.
    pub fn kill_agent(&mut self, index: usize) -> anyhow::Result<Vec<String>> {
        let agent = self.cells[index]
            .agent
            .take()
            .with_context(|| format!("cell-{index} runs no agent"))?;
        agent.signal(nix::sys::signal::Signal::SIGKILL)?;
        Ok(agent.wait()?.1)
    }

    /// Starts cell `index`'s agent again with the configuration it had.
    pub fn restart_agent(&mut self, index: usize) -> anyhow::Result<()> {
        let config = self.cells[index].dir.join("agent.toml");
        self.spawn_agent(index, &config)
    }

    fn app_mut(&mut self, name: &str) -> anyhow::Result<&mut App> {
        self.apps
            .iter_mut()
            .find(|a| a.name == name)
            .with_context(|| format!("no app {name} in the landscape"))
    }

    /// Starts one more container of app `name` on `cell`, with the next
    /// index, a new instance GUID and the cell's next overlay IP, and
    /// rewrites the cell's metadata store: what Diego does on a scale-up.
    /// Its index. (No c2c policy rules are written for it.)
    pub fn add_instance(&mut self, name: &str, cell: usize) -> anyhow::Result<usize> {
        let overlay_ip = self.next_overlay_ip(cell)?;
        let ns = build_container(&self.cells[cell], overlay_ip)?;
        let app = self.app_mut(name)?;
        let index = app.instances.len();
        app.instances.push(Instance {
            index,
            instance_guid: instance_guid(name, index),
            overlay_ip,
            cell,
            ns,
        });
        self.write_store(cell)?;
        Ok(index)
    }

    /// Moves instance `index` of app `name` to `cell`, as Diego does when
    /// it evacuates a cell: a new container there (a new instance GUID and
    /// overlay IP), the old one removed (its veth goes with it), both
    /// cells' metadata stores rewritten.
    pub fn move_instance(&mut self, name: &str, index: usize, cell: usize) -> anyhow::Result<()> {
        let overlay_ip = self.next_overlay_ip(cell)?;
        let ns = build_container(&self.cells[cell], overlay_ip)?;
        let app = self.app_mut(name)?;
        let old = app
            .instances
            .get_mut(index)
            .with_context(|| format!("{name} has no instance {index}"))?;
        let old_cell = old.cell;
        let moved = Instance {
            index,
            instance_guid: truncate(
                &guid_from(&format!("instance:{name}/{index}@{overlay_ip}")),
                28,
            ),
            overlay_ip,
            cell,
            ns,
        };
        // The old container's namespace goes, and its veth pair with it.
        drop(std::mem::replace(old, moved));
        self.write_store(old_cell)?;
        self.write_store(cell)
    }

    /// The next free overlay IP of `cell`'s /24.
    fn next_overlay_ip(&self, cell: usize) -> anyhow::Result<Ipv4Addr> {
        anyhow::ensure!(cell < self.cells.len(), "no cell {cell}");
        let [_, _, c, _] = overlay_base(cell).octets();
        let last = self
            .apps
            .iter()
            .flat_map(|a| &a.instances)
            .filter(|i| i.cell == cell)
            .map(|i| i.overlay_ip.octets()[3])
            .max()
            .unwrap_or(2);
        Ok(Ipv4Addr::new(10, 255, c, last + 1))
    }

    /// Writes an API configuration: TLS, the agents' CA and client
    /// certificate, user alice ([`ALICE_TOKEN`]), and a static target
    /// `cells` with every cell's agent (origins `cell-N`, interface `eth0`)
    /// that alice, and only she, may capture;
    /// `extra` is appended verbatim (e.g. a Cloud Foundry resolver).
    pub fn api_config(&self, extra: &str) -> anyhow::Result<PathBuf> {
        let agents = self.agents_toml();
        let users = [("alice", ALICE_TOKEN)];
        let client = &self.pki.api_client;
        let config = self.pki.api_config(client, &users, "cells", &agents, extra);
        written(self.dir.join("api.toml"), &config)
    }

    /// Starts `pcap-api serve` in the control namespace.
    pub fn start_api(&mut self, config: &Path) -> anyhow::Result<()> {
        self.api = Some(start_api(&self.control, &self.bin_dir, config)?);
        Ok(())
    }

    /// The `pcap` CLI in the control namespace, with no arguments yet.
    pub fn pcap(&self) -> Command {
        self.control.command(&self.bin("pcap"))
    }

    /// `pcap app --api URL --ca CA` in the control namespace, as the cf
    /// user whose `CF_HOME` is `cf_home` (and `PCAP_API` unset); the app
    /// and the rest of the arguments are the caller's.
    pub fn pcap_app(&self, cf_home: &Path) -> Command {
        let mut command = self.pcap();
        command
            .arg("app")
            .args(["--api", &self.api_url()])
            .arg("--ca")
            .arg(&self.pki.ca.certificate)
            .env("CF_HOME", cf_home)
            .env_remove("PCAP_API");
        command
    }

    /// The API's URL for the CLI's `--api`.
    pub fn api_url(&self) -> String {
        format!("https://{API_ADDRESS}")
    }

    fn bin(&self, name: &str) -> String {
        bin(&self.bin_dir, name)
    }

    /// The VXLAN policy agent's rules on cell `index`: one `vpa--` chain at
    /// the top of FORWARD with a MARK rule per local source instance and a
    /// LOG (when `logging`) and ACCEPT rule per local destination instance
    /// and policy, then an `overlay--<handle>` chain per local container.
    fn program_policy(&self, index: usize, logging: bool) -> anyhow::Result<()> {
        let mut rules = vec![
            format!("iptables -N {VPA_CHAIN}"),
            format!("iptables -I FORWARD 1 -j {VPA_CHAIN}"),
        ];
        let local = |app: &App| {
            app.instances
                .iter()
                .filter(|i| i.cell == index)
                .map(|i| i.overlay_ip)
                .collect::<Vec<_>>()
        };
        let mut marked = Vec::new();
        for policy in &self.policies {
            let source = self.app(&policy.source);
            if marked.contains(&source.name) {
                continue;
            }
            marked.push(source.name.clone());
            let tag = self.tags[&source.name];
            for ip in local(source) {
                rules.push(format!(
                    "iptables -A {VPA_CHAIN} -s {ip}/32 -m comment --comment src:{} \
                     -j MARK --set-xmark {tag:#x}/0xffffffff",
                    source.guid
                ));
            }
        }
        for policy in &self.policies {
            let source = self.app(&policy.source);
            let destination = self.app(&policy.destination);
            let tag = self.tags[&source.name];
            for ip in local(destination) {
                let matches = format!(
                    "-d {ip}/32 -p tcp -m tcp --dport {} -m mark --mark {tag:#x}",
                    policy.port
                );
                if logging {
                    let prefix = log_prefix(&format!("OK_{tag:04X}_{}", destination.guid));
                    rules.push(format!(
                        "iptables -A {VPA_CHAIN} {matches} -m conntrack \
                         --ctstate INVALID,NEW,UNTRACKED -j LOG --log-prefix '{prefix}'"
                    ));
                }
                rules.push(format!(
                    "iptables -A {VPA_CHAIN} {matches} -m comment \
                     --comment src:{}_dst:{} -j ACCEPT",
                    source.guid, destination.guid
                ));
            }
        }
        for instance in self.apps.iter().flat_map(|a| &a.instances) {
            if instance.cell != index {
                continue;
            }
            let chain = truncate(&format!("overlay--{}", instance.instance_guid), 28);
            let ip = instance.overlay_ip;
            rules.push(format!("iptables -N {chain}"));
            rules.push(format!("iptables -A FORWARD -j {chain}"));
            rules.push(format!(
                "iptables -A {chain} -s {ip}/32 -o silk-vtep -m mark ! --mark 0x0 -j ACCEPT"
            ));
            rules.push(format!(
                "iptables -A {chain} -d {ip}/32 -m state --state RELATED,ESTABLISHED -j ACCEPT"
            ));
            rules.push(format!(
                "iptables -A {chain} -d {ip}/32 -m mark --mark 0xffff0000 -j ACCEPT"
            ));
            if logging {
                let prefix = log_prefix(&format!("DENY_C2C_{}", instance.instance_guid));
                rules.push(format!(
                    "iptables -A {chain} -d {ip}/32 -m limit --limit 100/s --limit-burst 100 \
                     -j LOG --log-prefix '{prefix}'"
                ));
            }
            rules.push(format!(
                "iptables -A {chain} -d {ip}/32 -j REJECT --reject-with icmp-port-unreachable"
            ));
        }
        self.cells[index]
            .ns
            .sh(&rules.join(" && "))
            .with_context(|| format!("iptables rules of cell-{index}"))?;
        Ok(())
    }
}

/// Silk's host-side veth name for a container's overlay IP:
/// `s-010255077003` for 10.255.77.3.
pub use pcap_platform::silk::host_interface_name as host_interface;

fn underlay_ip(cell: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        0,
        0,
        101 + u8::try_from(cell).expect("at most 100 cells"),
    )
}

fn overlay_base(cell: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        255,
        77 + u8::try_from(cell).expect("at most 100 cells"),
        0,
    )
}

/// `aa:aa:` or `ee:ee:` followed by the address bytes, as silk makes MACs.
fn mac(prefix: &str, ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{prefix}:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// A log prefix as the VPA writes it: at most 28 characters, then a space.
fn log_prefix(text: &str) -> String {
    format!("{} ", truncate(text, 28))
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// A GUID-shaped string derived from `seed` (FNV-1a), stable across runs.
fn guid_from(seed: &str) -> String {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in seed.bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    // FNV barely changes the high bits for seeds that differ at the end;
    // mix them so that prefixes (which log prefixes keep) differ too.
    for _ in 0..2 {
        hash ^= hash >> 67;
        hash = hash.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    }
    let hex = format!("{hash:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..]
    )
}

/// A Diego-style instance GUID (28 characters, e.g. `e49f448e-54d2-4c33-61a3-5335`).
fn instance_guid(app: &str, index: usize) -> String {
    let full = guid_from(&format!("instance:{app}/{index}"));
    truncate(&full, 28)
}

fn build_cell(control: &Netns, dir: &Path, index: usize) -> anyhow::Result<Cell> {
    let ns = Netns::new(&format!("cell{index}"))?;
    let ip = underlay_ip(index);
    let base = overlay_base(index);
    control.sh(&format!(
        "ip link add ul{index} type veth peer name eth0 netns {} && \
         ip link set ul{index} master br0 up",
        ns.name
    ))?;
    ns.sh(&format!(
        "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.eth0.disable_ipv6=1 && \
         ip addr add {ip}/24 dev eth0 && ip link set eth0 up && \
         ip link add silk-vtep type vxlan id 1 dstport 4789 local {ip} dev eth0 \
           gbp nolearning ageing 300 && \
         sysctl -qw net.ipv6.conf.silk-vtep.disable_ipv6=1 && \
         ip link set silk-vtep address {} mtu {OVERLAY_MTU} up && \
         ip addr add {base}/16 scope link dev silk-vtep",
        mac("ee:ee", base)
    ))?;
    let cell_dir = dir.join(format!("cell-{index}"));
    std::fs::create_dir_all(cell_dir.join("container-metadata"))?;
    Ok(Cell {
        index,
        ns,
        agent: None,
        dir: cell_dir,
    })
}

/// What silk-daemon programs for every remote lease: a route to its /24 via
/// its base address, a permanent neighbour with its VTEP MAC, and a
/// permanent FDB entry sending that MAC to its underlay IP.
fn program_leases(cells: &[Cell]) -> anyhow::Result<()> {
    for cell in cells {
        let mut lines = Vec::new();
        for remote in cells.iter().filter(|c| c.index != cell.index) {
            let base = remote.overlay_base();
            let vtep_mac = mac("ee:ee", base);
            lines.push(format!(
                "ip route add {base}/24 via {base} src {} dev silk-vtep && \
                 ip neigh add {base} lladdr {vtep_mac} dev silk-vtep nud permanent && \
                 bridge fdb add {vtep_mac} dev silk-vtep dst {} self permanent",
                cell.overlay_base(),
                remote.underlay_ip()
            ));
        }
        if !lines.is_empty() {
            cell.ns.sh(&lines.join(" && "))?;
        }
    }
    Ok(())
}

/// A container as silk-cni makes it: `eth0` (`ee:ee:`+IP, IP/32, peer
/// 169.254.0.1, default route) in its own namespace, joined to `s-<ip>`
/// (`aa:aa:`+IP, 169.254.0.1 peer IP/32) on the cell, ARP off on both ends
/// with one permanent neighbour each.
fn build_container(cell: &Cell, ip: Ipv4Addr) -> anyhow::Result<Netns> {
    let ns = Netns::new("ctr")?;
    let host = host_interface(ip);
    let temporary = format!("c{}", &host[1..]);
    let host_mac = mac("aa:aa", ip);
    let container_mac = mac("ee:ee", ip);
    cell.ns.sh(&format!(
        "ip link add {host} type veth peer name {temporary} netns {ctr} && \
         sysctl -qw net.ipv6.conf.{host}.disable_ipv6=1 net.ipv4.conf.{host}.rp_filter=1 && \
         ip link set {host} address {host_mac} mtu {OVERLAY_MTU} arp off && \
         ip addr add 169.254.0.1 peer {ip}/32 dev {host} && ip link set {host} up && \
         ip neigh add {ip} lladdr {container_mac} dev {host} nud permanent",
        ctr = ns.name
    ))?;
    ns.sh(&format!(
        "ip link set {temporary} name eth0 && sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1 && \
         ip link set eth0 address {container_mac} mtu {OVERLAY_MTU} arp off && \
         ip addr add {ip} peer 169.254.0.1/32 dev eth0 && ip link set eth0 up && \
         ip neigh add 169.254.0.1 lladdr {host_mac} dev eth0 nud permanent && \
         ip route add default via 169.254.0.1 src {ip}"
    ))?;
    Ok(ns)
}

/// Writes `store.json` in place under `flock(LOCK_EX)` on `store.json_lock`
/// and bumps `store.json_version`, like cni-wrapper-plugin.
fn write_store_file(path: &Path, store: &silk::Store) -> anyhow::Result<()> {
    use std::io::Write as _;
    let lock_path = sibling(path, "_lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("flock {}", lock_path.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    file.write_all(serde_json::to_string(store)?.as_bytes())?;
    let version_path = sibling(path, "_version");
    let version: u64 = std::fs::read_to_string(&version_path)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    std::fs::write(&version_path, (version + 1).to_string())?;
    drop(lock);
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Sets `net.netfilter.nf_log_all_netns=1` while any landscape lives, so
/// that LOG rules in cell namespaces reach the kernel log, and restores the
/// previous value after the last one.
#[derive(Debug)]
struct NfLogAllNetns;

/// (live landscapes, value before the first).
static NF_LOG: Mutex<(usize, Option<String>)> = Mutex::new((0, None));
const NF_LOG_SYSCTL: &str = "net.netfilter.nf_log_all_netns";

impl NfLogAllNetns {
    fn enable() -> anyhow::Result<Self> {
        let mut state = NF_LOG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.0 == 0 {
            let previous = netns::sh(&format!("sysctl -n {NF_LOG_SYSCTL}"))?
                .trim()
                .to_owned();
            if previous != "1" {
                netns::sh(&format!("sysctl -qw {NF_LOG_SYSCTL}=1"))?;
            }
            state.1 = Some(previous);
        }
        state.0 += 1;
        Ok(Self)
    }
}

impl Drop for NfLogAllNetns {
    fn drop(&mut self) {
        let mut state = NF_LOG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 -= 1;
        if state.0 == 0
            && let Some(previous) = state.1.take()
            && previous != "1"
        {
            let _ = netns::sh(&format!("sysctl -qw {NF_LOG_SYSCTL}={previous}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_silk() {
        assert_eq!(
            host_interface(Ipv4Addr::new(10, 255, 77, 3)),
            "s-010255077003"
        );
        assert_eq!(
            mac("aa:aa", Ipv4Addr::new(10, 255, 77, 3)),
            "aa:aa:0a:ff:4d:03"
        );
        assert_eq!(
            log_prefix("DENY_C2C_f13ffea0-9d0d-4ee9-8b2c"),
            "DENY_C2C_f13ffea0-9d0d-4ee9- "
        );
    }

    #[test]
    fn guids_are_stable_and_shaped() {
        let a = AppSpec::new("appA", &[0]);
        assert_eq!(a.guid, AppSpec::new("appA", &[1]).guid);
        assert_ne!(a.guid, AppSpec::new("appB", &[0]).guid);
        assert_eq!(a.guid.len(), 36);
        assert_eq!(instance_guid("appA", 0).len(), 28);
        // Distinct already in the part a log prefix keeps.
        let b = AppSpec::new("appB", &[0]);
        assert_ne!(a.guid[..8], b.guid[..8]);
        assert_ne!(instance_guid("appA", 0)[..8], instance_guid("appB", 0)[..8]);
    }
}
