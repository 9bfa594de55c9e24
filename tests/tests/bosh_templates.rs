//! The BOSH release: every template of both jobs rendered as the director
//! would (tests/bosh/render.rb, Debian's ruby) from the spec defaults, from the
//! example manifests and ops-files, and from invalid property sets. Every
//! rendered config goes through the binary's `--check-config` at its real
//! /var/vcap path (private mount namespace); each invalid set must fail, at
//! rendering or at the check, with a message naming the property or key.
//!
//! Needs root (mount namespaces) and ruby; the binaries come from
//! `cargo build --bins`.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use pcap_tests::{
    TempDir,
    bosh::{self, Json, check_config, flatten_yaml, list, render, workspace_root},
    pki::{Ca, Validity},
    process::binary,
};

/// PEM texts of one certificate.
struct Tls {
    ca: String,
    certificate: String,
    private_key: String,
}

impl Tls {
    fn json(&self) -> Json {
        Json::map(&[
            ("ca", Json::str(&self.ca)),
            ("certificate", Json::str(&self.certificate)),
            ("private_key", Json::str(&self.private_key)),
        ])
    }
}

/// Real certificates for the agents, the API's client side and its server
/// side, the way the manifests' variables describe them.
struct Pki {
    agent: Tls,
    api_client: Tls,
    api_server: Tls,
    _dir: TempDir,
}

impl Pki {
    fn new(tag: &str) -> Self {
        let dir = TempDir::new(&format!("bosh-pki-{tag}")).unwrap();
        let ca = Ca::new(&dir, "pcap-ca").unwrap();
        let api_ca = Ca::new(&dir, "pcap-api-ca").unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let tls = |ca: &Ca, stem: &str, names: &[&str]| {
            let leaf = ca.leaf(stem, names, Validity::Current).unwrap();
            Tls {
                ca: read(&ca.certificate),
                certificate: read(&leaf.certificate),
                private_key: read(&leaf.private_key),
            }
        };
        Self {
            agent: tls(&ca, "agent", &["pcap-agent"]),
            api_client: tls(&ca, "api-client", &["pcap-api"]),
            api_server: tls(
                &api_ca,
                "api-server",
                &["pcap-api", "pcap-api.service.cf.internal"],
            ),
            _dir: dir,
        }
    }

    /// The agent job rendered with the least it needs
    /// ([`Pki::agent_properties`]) changed by `changes`, accepted by
    /// `--check-config`.
    fn render_agent(&self, tag: &str, changes: &[(&str, Json)]) -> Rendered {
        accepted_with(Job::Agent, self, tag, changes)
    }

    /// The API job, as [`Pki::render_agent`] renders the agent's.
    fn render_api(&self, tag: &str, changes: &[(&str, Json)]) -> Rendered {
        accepted_with(Job::Api, self, tag, changes)
    }

    /// The least the agent job needs: its certificates.
    fn agent_properties(&self) -> Json {
        Json::map(&[(
            "tls",
            Json::map(&[
                ("certificate", Json::str(&self.agent.certificate)),
                ("private_key", Json::str(&self.agent.private_key)),
                ("ca", Json::str(&self.agent.ca)),
            ]),
        )])
    }

    /// The least the API job needs: its certificates.
    fn api_properties(&self) -> Json {
        Json::map(&[
            (
                "tls",
                Json::map(&[
                    ("certificate", Json::str(&self.api_server.certificate)),
                    ("private_key", Json::str(&self.api_server.private_key)),
                ]),
            ),
            (
                "agents",
                Json::map(&[
                    ("ca", Json::str(&self.api_client.ca)),
                    ("certificate", Json::str(&self.api_client.certificate)),
                    ("private_key", Json::str(&self.api_client.private_key)),
                ]),
            ),
        ])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    Agent,
    Api,
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Self::Agent => "pcap-agent",
            Self::Api => "pcap-api",
        }
    }

    fn binary(self) -> PathBuf {
        binary(self.name())
    }
}

/// A rendered job directory, removed on drop.
struct Rendered {
    dir: TempDir,
    job: Job,
}

impl Rendered {
    fn path(&self, relative: &str) -> PathBuf {
        self.dir.join("job").join(relative)
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
    }

    /// The rendered file `relative` holds `expected` (both trimmed).
    fn assert_holds(&self, relative: &str, expected: &str) {
        assert_eq!(self.read(relative).trim(), expected.trim(), "{relative}");
    }

    fn config(&self) -> String {
        self.read(&format!("config/{}.toml", self.job.name()))
    }

    fn check(&self) -> bosh::Check {
        check_config(&self.job.binary(), self.job.name(), &self.dir.join("job")).unwrap()
    }

    fn bpm(&self) -> BTreeMap<String, String> {
        flatten_yaml(&self.path("config/bpm.yml")).unwrap()
    }
}

/// Renders `job` from `input` (`job` and `root` are added), or returns the
/// renderer's error.
fn try_render(job: Job, tag: &str, input: Json) -> Result<Rendered, String> {
    let dir = TempDir::new(&format!("bosh-{}-{tag}", job.name())).unwrap();
    let input = input
        .with("root", Json::str(workspace_root().to_str().unwrap()))
        .with("job", Json::str(format!("bosh/jobs/{}", job.name())));
    render(&input, &dir, &dir.join("job"))
        .unwrap()
        .map(|()| Rendered { dir, job })
}

fn render_properties(job: Job, tag: &str, properties: Json) -> Result<Rendered, String> {
    try_render(job, tag, Json::map(&[("properties", properties)]))
}

/// Renders and checks that `--check-config` accepts the result.
fn render_accepted(job: Job, tag: &str, input: Json) -> Rendered {
    let rendered =
        try_render(job, tag, input).unwrap_or_else(|e| panic!("{tag}: rendering failed: {e}"));
    let check = rendered.check();
    assert!(
        check.ok,
        "{tag}: --check-config rejected:\n{}\n{}",
        check.output,
        rendered.config()
    );
    rendered
}

/// Renders the job with `pki`'s good properties changed by `changes`, and
/// checks that `--check-config` accepts the result.
fn accepted_with(job: Job, pki: &Pki, tag: &str, changes: &[(&str, Json)]) -> Rendered {
    let good = match job {
        Job::Agent => pki.agent_properties(),
        Job::Api => pki.api_properties(),
    };
    let properties = changes.iter().fold(good, |properties, (key, value)| {
        properties.with(key, value.clone())
    });
    render_accepted(job, tag, Json::map(&[("properties", properties)]))
}

/// `text` holds `needle`.
fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} in\n{text}");
}

/// `text` does not hold `needle`.
fn assert_lacks(text: &str, needle: &str) {
    assert!(!text.contains(needle), "{needle:?} in\n{text}");
}

/// Each of `lines` is a whole line of `text`.
fn assert_has_lines<S: AsRef<str>>(text: &str, lines: &[S]) {
    for line in lines {
        let line = line.as_ref();
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}

/// Every template the job's spec lists was rendered.
fn assert_all_templates_rendered(rendered: &Rendered) {
    let spec = std::fs::read_to_string(
        workspace_root().join(format!("bosh/jobs/{}/spec", rendered.job.name())),
    )
    .unwrap();
    let destinations: Vec<&str> = spec
        .lines()
        .skip_while(|l| !l.starts_with("templates:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_once(": ").map(|(_, d)| d.trim()))
        .collect();
    assert!(destinations.len() >= 5, "{destinations:?}");
    for destination in destinations {
        assert!(
            rendered.path(destination).is_file(),
            "{destination} was not rendered"
        );
    }
}

/// The rendered script `relative` is executable and bash parses it; its
/// text.
fn executable_script(rendered: &Rendered, relative: &str) -> String {
    let script = rendered.path(relative);
    let mode = std::fs::metadata(&script).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "{relative} is not executable");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{relative}: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    rendered.read(relative)
}

fn assert_drain_script(rendered: &Rendered, timeout: u32) {
    let text = executable_script(rendered, "bin/drain");
    assert_contains(&text, &format!("timeout={timeout}\n"));
    assert_contains(&text, "kill -TERM");
    assert!(
        !text.contains("-KILL") && !text.contains("kill -9"),
        "{text}"
    );
}

/// The job rendered with nothing but the required properties, every
/// template of it, and accepted.
fn defaults(job: Job) -> (Pki, Rendered) {
    let tag = format!("{}-defaults", job.name());
    let pki = Pki::new(&tag);
    let rendered = accepted_with(job, &pki, &tag, &[]);
    assert_all_templates_rendered(&rendered);
    (pki, rendered)
}

#[test]
fn agent_defaults_render_a_config_the_agent_accepts() {
    let (pki, rendered) = defaults(Job::Agent);
    let config = rendered.config();
    assert_has_lines(
        &config,
        &[
            "listen = \"0.0.0.0:9494\"",
            "insecure_plaintext = false",
            "client_ca = \"/var/vcap/jobs/pcap-agent/config/certs/ca.crt\"",
            "client_names = [\"pcap-api\"]",
            "attach = \"auto\"",
            "max_captures = 4",
            "max_duration = 3600.0",
        ],
    );
    rendered.assert_holds("config/certs/agent.crt", &pki.agent.certificate);
    rendered.assert_holds("config/certs/agent.key", &pki.agent.private_key);
    rendered.assert_holds("config/certs/ca.crt", &pki.agent.ca);
    assert_drain_script(&rendered, 30);
    assert!(
        rendered
            .read("bin/drain")
            .contains("\npidfile=/var/vcap/sys/run/pcap-agent/pcap-agent.pid\n")
    );

    // The default runs without bpm, whose seccomp profile denies bpf(2):
    // monit starts the ctl script, which execs the agent as root, and the
    // agent keeps only what capture needs.
    assert!(
        config.ends_with("\n[privileges]\n# At start the agent keeps only these capabilities (effective, permitted and\n\
         # bounding sets), empties the inheritable and ambient sets and sets\n\
         # no_new_privs; it refuses to start, naming the capability, without one.\n\
         keep = [\"BPF\", \"PERFMON\", \"NET_ADMIN\"]\n\
         # Files are opened as this user and group; the process stays uid 0.\n\
         file_user = \"vcap\"\n"),
        "{config}"
    );
    assert_monit_runs_the_ctl_script(&rendered);
    let ctl = assert_ctl_script(&rendered);
    assert_has_lines(
        &ctl,
        &[
            "    ulimit -n 4096",
            "    export PCAP_LOG='info'",
            "    echo $$ > \"$PIDFILE\"",
            "    exec \"$AGENT\" serve --config \"$JOB_DIR/config/pcap-agent.toml\" \\",
            "PIDFILE=$RUN_DIR/pcap-agent.pid",
            "RUN_DIR=/var/vcap/sys/run/pcap-agent",
            "LOG_DIR=/var/vcap/sys/log/pcap-agent",
            "AGENT=/var/vcap/packages/pcap/bin/pcap-agent",
            "    \"$JOB_DIR/bin/pcap-agent_prepare\"",
        ],
    );
    assert_lacks(&ctl, "ulimit -l");
    assert_eq!(
        prepare_commands(&rendered),
        [
            "mkdir -p /run/pcap-agent",
            "chown -R vcap:vcap /run/pcap-agent",
            "chmod 0700 /run/pcap-agent",
        ]
    );
    // bpm's file is rendered, and empty: monit does not use bpm.
    let bpm = rendered.bpm();
    assert_eq!(
        bpm.get("processes").map(String::as_str),
        Some("[]"),
        "{bpm:?}"
    );
}

/// The default monit file: the ctl script, its pid file, no bpm.
fn assert_monit_runs_the_ctl_script(rendered: &Rendered) {
    let monit = rendered.read("monit");
    let lines: Vec<&str> = monit
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        lines,
        [
            "check process pcap-agent",
            "  with pidfile /var/vcap/sys/run/pcap-agent/pcap-agent.pid",
            "  start program \"/var/vcap/jobs/pcap-agent/bin/pcap-agent_ctl start\"",
            "  stop program \"/var/vcap/jobs/pcap-agent/bin/pcap-agent_ctl stop\"",
            "  group vcap",
        ],
        "{monit}"
    );
}

/// The commands of bin/pcap-agent_prepare, which must be executable bash.
fn prepare_commands(rendered: &Rendered) -> Vec<String> {
    let path = rendered.path("bin/pcap-agent_prepare");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o111,
        0o111,
        "bin/pcap-agent_prepare is not executable"
    );
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(syntax.status.success(), "{syntax:?}");
    rendered
        .read("bin/pcap-agent_prepare")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && *l != "set -eu")
        .map(str::to_owned)
        .collect()
}

/// bin/pcap-agent_ctl is executable bash that never SIGKILLs before SIGTERM.
fn assert_ctl_script(rendered: &Rendered) -> String {
    let text = executable_script(rendered, "bin/pcap-agent_ctl");
    let term = text.find("kill -TERM").expect("the stop sends SIGTERM");
    let kill = text.find("kill -KILL").expect("the stop ends with SIGKILL");
    assert!(term < kill, "{text}");
    assert_lacks(&text, "kill -9");
    text
}

#[test]
fn agent_on_a_diego_cell_reads_the_container_metadata_store() {
    let pki = Pki::new("agent-cf");
    let store = "/var/vcap/data/container-metadata/store.json";
    let rendered = pki.render_agent(
        "agent-cf",
        &[("cf.container_metadata_store", Json::str(store))],
    );
    let config = rendered.config();
    assert_contains(
        &config,
        &format!("[cf]\ncontainer_metadata_store = \"{store}\""),
    );
    // Under the bpm fallback, the store's directory is mounted read-only.
    let privileged = pki.render_agent(
        "agent-cf-bpm",
        &[
            ("cf.container_metadata_store", Json::str(store)),
            ("bpm.unsafe_privileged", Json::Bool(true)),
        ],
    );
    let bpm = privileged.bpm();
    assert_eq!(
        bpm["processes.0.additional_volumes.0.path"],
        "\"/var/vcap/data/container-metadata\""
    );
    assert_eq!(bpm["processes.0.additional_volumes.0.writable"], "false");
    // Not on other VMs.
    let plain = pki.render_agent("agent-no-cf", &[]);
    assert!(!plain.config().contains("[cf]"));
    let plain = pki.render_agent(
        "agent-no-cf-bpm",
        &[("bpm.unsafe_privileged", Json::Bool(true))],
    );
    assert!(
        !plain
            .bpm()
            .contains_key("processes.0.additional_volumes.0.path")
    );
}

#[test]
fn agent_privileges_follow_the_kernel_and_limit_properties() {
    let pki = Pki::new("agent-caps");
    // Old kernels: the agent raises RLIMIT_MEMLOCK before it drops
    // CAP_SYS_RESOURCE, which it does not keep.
    let rendered = pki.render_agent(
        "agent-old-kernel",
        &[("kernel.memlock_rlimit", Json::Bool(true))],
    );
    let config = rendered.config();
    assert_contains(&config, "\nkeep = [\"BPF\", \"PERFMON\", \"NET_ADMIN\"]\n");
    assert!(
        config.ends_with("\nraise_memlock_rlimit = true\n"),
        "{config}"
    );

    assert_monit_runs_the_ctl_script(&rendered);

    // Served --c2c verdicts: CAP_SYSLOG only when the operator asks.
    let rendered = pki.render_agent(
        "agent-kernel-log",
        &[("c2c.read_kernel_log", Json::Bool(true))],
    );
    let config = rendered.config();
    assert_contains(
        &config,
        "\nkeep = [\"BPF\", \"PERFMON\", \"NET_ADMIN\", \"SYSLOG\"]\n",
    );

    let rendered = render_properties(
        Job::Agent,
        "agent-limits",
        pki.agent_properties()
            .with("bpm.open_files", Json::Int(8192))
            .with("limits.max_captures", Json::Int(8))
            .with("log_level", Json::str("pcap_agent=debug,it's")),
    )
    .unwrap();
    let ctl = assert_ctl_script(&rendered);
    assert_contains(&ctl, "\n    ulimit -n 8192\n");
    // Quoted for the shell, whatever the filter holds.
    assert_contains(&ctl, "\n    export PCAP_LOG='pcap_agent=debug,it'\\''s'\n");
    assert!(rendered.config().contains("max_captures = 8\n"));
}

#[test]
fn agent_fallback_runs_under_bpm_privileged() {
    let pki = Pki::new("agent-fallback");
    // The fallback: bpm, privileged, with its memory limit; the agent still
    // drops to the same capabilities itself.
    let rendered = pki.render_agent(
        "agent-privileged",
        &[
            ("bpm.unsafe_privileged", Json::Bool(true)),
            ("bpm.memory_limit", Json::str("2G")),
            ("log_level", Json::str("debug")),
        ],
    );
    let bpm = rendered.bpm();
    assert_eq!(bpm["processes.0.unsafe.privileged"], "true");
    assert!(
        !bpm.keys()
            .any(|k| k.starts_with("processes.0.capabilities")),
        "privileged has every capability: {bpm:?}"
    );
    assert_eq!(bpm["processes.0.limits.memory"], "\"2G\"");
    assert_eq!(bpm["processes.0.limits.open_files"], "4096");
    assert_eq!(bpm["processes.0.env.PCAP_LOG"], "\"debug\"");
    assert_eq!(bpm["processes.0.shutdown_signal"], "\"TERM\"");
    assert_eq!(
        bpm["processes.0.executable"],
        "\"/var/vcap/packages/pcap/bin/pcap-agent\""
    );
    assert_eq!(
        list(&bpm, "processes.0.args"),
        [
            "\"serve\"",
            "\"--config\"",
            "\"/var/vcap/jobs/pcap-agent/config/pcap-agent.toml\""
        ]
    );
    assert_eq!(
        bpm["processes.0.unsafe.unrestricted_volumes.0.path"],
        "\"/run/pcap-agent\""
    );
    assert!(!bpm.contains_key("processes.1.name"), "one process only");
    // /run/pcap-agent belongs to vcap, as whom the agent writes there.
    assert_eq!(
        bpm["processes.0.hooks.pre_start"],
        "\"/var/vcap/jobs/pcap-agent/bin/pcap-agent_prepare\""
    );
    assert!(
        rendered
            .config()
            .contains("\nkeep = [\"BPF\", \"PERFMON\", \"NET_ADMIN\"]\n")
    );
    let monit = rendered.read("monit");
    assert!(
        monit.contains("\n  with pidfile /var/vcap/sys/run/bpm/pcap-agent/pcap-agent.pid\n")
            && monit
                .contains("\n  start program \"/var/vcap/jobs/bpm/bin/bpm start pcap-agent\"\n")
            && !monit.contains("pcap-agent_ctl"),
        "{monit}"
    );
    assert!(
        rendered
            .read("bin/drain")
            .contains("\npidfile=/var/vcap/sys/run/bpm/pcap-agent/pcap-agent.pid\n")
    );
    // The ctl script is not used then, and refuses to start a second agent.
    let ctl = Command::new(rendered.path("bin/pcap-agent_ctl"))
        .arg("start")
        .output()
        .unwrap();
    assert_eq!(ctl.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&ctl.stderr).contains("bpm runs pcap-agent"));
}

#[test]
fn agent_files_are_opened_as_root_when_file_user_is_empty() {
    // No file_user in the config, and the ctl script chowns nothing.
    let pki = Pki::new("agent-files-as-root");
    let rendered = pki.render_agent(
        "agent-files-as-root",
        &[("privileges.file_user", Json::str(""))],
    );
    assert!(
        !rendered.config().contains("file_user"),
        "{}",
        rendered.config()
    );
    assert_eq!(
        prepare_commands(&rendered),
        ["mkdir -p /run/pcap-agent", "chmod 0700 /run/pcap-agent"]
    );
}

#[test]
fn agent_plaintext_needs_the_development_flag_and_no_tls() {
    let rendered = render_accepted(
        Job::Agent,
        "agent-plaintext",
        Json::map(&[(
            "properties",
            Json::map(&[("insecure_plaintext_development_only", Json::Bool(true))]),
        )]),
    );
    let config = rendered.config();
    assert_contains(&config, "\ninsecure_plaintext = true\n");
    assert_lacks(&config, "[tls]");
    assert_eq!(rendered.read("config/certs/agent.key"), "");
}

#[test]
fn api_defaults_render_a_config_the_api_accepts() {
    let (pki, rendered) = defaults(Job::Api);
    let config = rendered.config();
    assert_has_lines(
        &config,
        &[
            "listen = \"0.0.0.0:8443\"",
            "ca = \"/var/vcap/jobs/pcap-api/config/certs/ca.crt\"",
            "server_name = \"pcap-agent\"",
            "port = 9494",
            "reorder_window = 0.5",
            "max_captures_per_user = 2",
            "max_captures_per_user_per_agent = 1",
            "drain_grace = 10.0",
        ],
    );
    assert_lacks(&config, "[[targets]]");
    assert_lacks(&config, "[[users]]");
    rendered.assert_holds("config/certs/client.key", &pki.api_client.private_key);
    rendered.assert_holds("config/certs/api.crt", &pki.api_server.certificate);
    assert_drain_script(&rendered, 20);

    let bpm = rendered.bpm();
    assert!(list(&bpm, "processes.0.capabilities").is_empty(), "{bpm:?}");
    assert!(
        !bpm.keys()
            .any(|k| k.starts_with("processes.0.capabilities")),
        "{bpm:?}"
    );
    assert_eq!(bpm["processes.0.unsafe.privileged"], "false");
    assert_eq!(bpm["processes.0.limits.memory"], "\"2G\"");
    assert_eq!(bpm["processes.0.shutdown_signal"], "\"TERM\"");

    // A privileged port is the one case for a capability.
    let rendered = render_properties(
        Job::Api,
        "api-port-443",
        pki.api_properties().with("listen.port", Json::Int(443)),
    )
    .unwrap();
    assert_eq!(
        list(&rendered.bpm(), "processes.0.capabilities"),
        ["\"NET_BIND_SERVICE\""]
    );
}

/// The `pcap-agent` link of two diego-cell agents listening on 9500.
fn agent_link() -> Json {
    let instance = |index: i64, id: &str, address: &str| {
        Json::map(&[
            ("name", Json::str("diego-cell")),
            ("index", Json::Int(index)),
            ("id", Json::str(id)),
            ("az", Json::str("z1")),
            ("address", Json::str(address)),
        ])
    };
    Json::map(&[(
        "pcap-agent",
        Json::map(&[
            ("provider_job", Json::str("bosh/jobs/pcap-agent")),
            (
                "properties",
                Json::map(&[]).with("listen.port", Json::Int(9500)),
            ),
            (
                "instances",
                Json::list(&[
                    instance(1, "b-id", "fd00::7"),
                    instance(0, "a-id", "a-id.diego-cell.default.cf.bosh"),
                ]),
            ),
        ]),
    )])
}

#[test]
fn api_targets_come_from_properties_and_the_agent_link() {
    let pki = Pki::new("api-targets");
    // Awkward strings must come out as valid TOML holding the same text.
    let token = "tok\"en\\with\nnewline\u{7f}and ü";
    let properties = pki
        .api_properties()
        .with("users", Json::list(&[user("alice \"the admin\"", token)]))
        .with(
            "targets",
            Json::list(&[target(
                "routers",
                &["eth0"],
                Some(Json::map(&[(
                    "users",
                    Json::strings(&["alice \"the admin\""]),
                )])),
                ("router/0", "10.0.1.5"),
            )]),
        )
        .with("link_targets.enabled", Json::Bool(true))
        .with(
            "link_targets.allow_users",
            Json::strings(&["alice \"the admin\""]),
        )
        .with("link_targets.prefix", Json::str("cf-"));
    let links = agent_link();
    let rendered = render_accepted(
        Job::Api,
        "api-targets",
        Json::map(&[("properties", properties.clone()), ("links", links.clone())]),
    );
    let config = rendered.config();
    assert_contains(&config, "name = \"routers\"\n");
    // Who may capture each target is rendered; nobody else may.
    assert_contains(
        &config,
        "name = \"routers\"\ninterfaces = [\"eth0\"]\n\
             allow = { users = [\"alice \\\"the admin\\\"\"], scopes = [] }\n",
    );
    assert_contains(&config, "{ origin = \"router/0\", address = \"10.0.1.5\" }");
    let link_target = "name = \"cf-diego-cell\"\ninterfaces = []\n\
        allow = { users = [\"alice \\\"the admin\\\"\"], scopes = [] }\nagents = [\n  \
        { origin = \"diego-cell/a-id\", address = \"a-id.diego-cell.default.cf.bosh:9500\" },\n  \
        { origin = \"diego-cell/b-id\", address = \"[fd00::7]:9500\" },\n]";
    assert_contains(&config, link_target);
    assert_contains(
        &config,
        "token = \"tok\\\"en\\\\with\\nnewline\\u007Fand ü\"\n",
    );

    // A link target may not take the name of an explicit one.
    let clash = render_properties_with_links(
        "api-target-clash",
        properties.with("link_targets.prefix", Json::str("")).with(
            "targets",
            Json::list(&[Json::map(&[
                ("name", Json::str("diego-cell")),
                (
                    "allow",
                    Json::map(&[("users", Json::strings(&["alice \"the admin\""]))]),
                ),
                (
                    "agents",
                    Json::list(&[Json::map(&[
                        ("origin", Json::str("x")),
                        ("address", Json::str("10.0.0.1")),
                    ])]),
                ),
            ])]),
        ),
        links.clone(),
    );
    let check = clash.check();
    assert!(!check.ok, "{}", clash.config());
    assert!(check.output.contains("targets[1].name"), "{}", check.output);
}

#[test]
fn api_link_targets_are_off_by_default_and_name_who_may_capture_them() {
    let pki = Pki::new("api-link");
    let links = agent_link();
    // Link targets are off by default: with the link, no targets.
    let rendered =
        render_properties_with_links("api-link-off", pki.api_properties(), links.clone());
    assert!(!rendered.config().contains("[[targets]]"));
    // On, they must say who may capture them.
    let nobody = try_render(
        Job::Api,
        "api-link-nobody",
        Json::map(&[
            (
                "properties",
                pki.api_properties()
                    .with("link_targets.enabled", Json::Bool(true)),
            ),
            ("links", links),
        ]),
    );
    let error = nobody.err().expect("link targets for nobody rendered");
    assert_contains(&error, "link_targets.allow_users");
}

/// `targets`: one target `t` with one agent (`vm-0` at 10.0.0.1), and
/// `allow` if given.
fn one_agent_target(allow: Option<Json>) -> Json {
    Json::list(&[target("t", &[], allow, ("vm-0", "10.0.0.1"))])
}

/// A target `name` (on `interfaces`, if any) whose one agent is `origin` at
/// `address`, allowing `allow`.
fn target(
    name: &str,
    interfaces: &[&str],
    allow: Option<Json>,
    (origin, address): (&str, &str),
) -> Json {
    let mut target = vec![("name", Json::str(name))];
    if !interfaces.is_empty() {
        target.push(("interfaces", Json::strings(interfaces)));
    }
    target.extend(allow.map(|allow| ("allow", allow)));
    target.push((
        "agents",
        Json::list(&[Json::map(&[
            ("origin", Json::str(origin)),
            ("address", Json::str(address)),
        ])]),
    ));
    Json::map(&target)
}

/// A static user `name` with `token`.
fn user(name: &str, token: &str) -> Json {
    Json::map(&[("name", Json::str(name)), ("token", Json::str(token))])
}

/// `{uaa, scope}` grants.
fn grants(pairs: &[(&str, &str)]) -> Json {
    Json::list(
        &pairs
            .iter()
            .map(|(uaa, scope)| {
                Json::map(&[("uaa", Json::str(*uaa)), ("scope", Json::str(*scope))])
            })
            .collect::<Vec<_>>(),
    )
}

/// The API with both resolvers and the store on: what `pcap bosh`, `pcap app`
/// and `pcap capture --store` need.
fn api_resolver_properties(pki: &Pki) -> Json {
    pki.api_properties()
        .with("bosh.director_url", Json::str("https://10.0.0.6:25555"))
        .with("bosh.director_ca", Json::str(&pki.agent.ca))
        .with("cf.api_url", Json::str("https://api.sys.example.com"))
        .with("cf.ca", Json::str(&pki.api_server.ca))
        .with("store.bucket", Json::str("pcap-captures"))
        .with("store.access_key_id", Json::str("AKIDEXAMPLE"))
        .with("store.secret_access_key", Json::str(STORE_SECRET))
}

const STORE_SECRET: &str = "s3cr3t/with+chars=";

#[test]
fn api_resolvers_and_store_render_configs_the_api_accepts() {
    let pki = Pki::new("api-resolvers");
    let properties = api_resolver_properties(&pki)
        .with("bosh.agent_port", Json::Int(9500))
        .with("bosh.interfaces", Json::strings(&["eth0"]))
        .with(
            "cf.allowed_roles",
            Json::strings(&["space_developer", "space_manager"]),
        )
        .with("cf.respect_ssh_setting", Json::Bool(true))
        .with("store.endpoint", Json::str("https://s3.example.com:9000"))
        .with("store.virtual_hosted_style", Json::Bool(true))
        .with(
            "store.admin_scopes",
            grants(&[("cf", "cloud_controller.admin")]),
        )
        .with("users", Json::list(&[user("admin", "t")]))
        .with(
            "targets",
            Json::list(&[target(
                "routers",
                &[],
                Some(Json::map(&[(
                    "scopes",
                    grants(&[("bosh", "bosh.admin"), ("cf", "network.admin")]),
                )])),
                ("router/0", "10.0.1.5"),
            )]),
        )
        .with("link_targets.enabled", Json::Bool(true))
        .with(
            "link_targets.allow_scopes",
            grants(&[("bosh", "bosh.admin")]),
        );
    let rendered = render_accepted(
        Job::Api,
        "api-resolvers",
        Json::map(&[("properties", properties), ("links", agent_link())]),
    );
    assert_all_templates_rendered(&rendered);
    let config = rendered.config();
    let dir = "/var/vcap/jobs/pcap-api/config";
    for block in [
        format!(
            "\n[bosh]\ndirector_url = \"https://10.0.0.6:25555\"\n\
             director_ca = \"{dir}/certs/bosh-director-ca.crt\"\nrequired_scope = \"bosh.admin\"\n\
             agent_port = 9500\ninterfaces = [\"eth0\"]\ntoken_clock_skew = 60.0\n"
        ),
        format!(
            "\n[cf]\napi_url = \"https://api.sys.example.com\"\nca = \"{dir}/certs/cf-ca.crt\"\n\
             allowed_roles = [\"space_developer\", \"space_manager\"]\nrespect_ssh_setting = true\n"
        ),
        "\n[store]\nendpoint = \"https://s3.example.com:9000\"\nregion = \"us-east-1\"\n\
         bucket = \"pcap-captures\"\naccess_key_id = \"AKIDEXAMPLE\"\n"
            .to_owned(),
        format!("secret_access_key_file = \"{dir}/store-secret-access-key\"\n"),
        "virtual_hosted_style = true\n".to_owned(),
        "admin_scopes = [{ uaa = \"cf\", scope = \"cloud_controller.admin\" }]\n".to_owned(),
        // Static targets and link targets carry their scope grants.
        "allow = { users = [], scopes = [{ uaa = \"bosh\", scope = \"bosh.admin\" }, \
         { uaa = \"cf\", scope = \"network.admin\" }] }\n"
            .to_owned(),
        "name = \"diego-cell\"\ninterfaces = []\n\
         allow = { users = [], scopes = [{ uaa = \"bosh\", scope = \"bosh.admin\" }] }\n"
            .to_owned(),
    ] {
        assert!(config.contains(&block), "{block} in\n{config}");
    }
    // The secret is in its own file only.
    assert_lacks(&config, STORE_SECRET);
    assert_lacks(&config, "secret_access_key =");
    assert_eq!(
        rendered.read("config/store-secret-access-key").trim(),
        STORE_SECRET
    );
    rendered.assert_holds("config/certs/bosh-director-ca.crt", &pki.agent.ca);
    rendered.assert_holds("config/certs/cf-ca.crt", &pki.api_server.ca);
}

#[test]
fn api_resolvers_and_store_are_off_by_default() {
    let pki = Pki::new("api-no-resolvers");
    // None of the three tables, and empty files.
    let plain = pki.render_api("api-no-resolvers", &[]);
    let config = plain.config();
    for table in ["[bosh]", "[cf]", "[store]"] {
        assert!(!config.contains(table), "{table} in\n{config}");
    }
    assert_eq!(plain.read("config/store-secret-access-key").trim(), "");
}

fn render_properties_with_links(tag: &str, properties: Json, links: Json) -> Rendered {
    try_render(
        Job::Api,
        tag,
        Json::map(&[("properties", properties), ("links", links)]),
    )
    .unwrap_or_else(|e| panic!("{tag}: {e}"))
}

#[test]
fn renderer_emulates_the_director_context() {
    let dir = TempDir::new("bosh-probe").unwrap();
    let input = |properties: Json| {
        Json::map(&[
            ("root", Json::str(workspace_root().to_str().unwrap())),
            ("job", Json::str("tests/bosh/fixtures/jobs/probe")),
            ("properties", properties),
            (
                "spec",
                Json::map(&[
                    ("name", Json::str("cell")),
                    ("id", Json::str("abc")),
                    ("index", Json::Int(2)),
                    ("az", Json::str("z3")),
                    ("deployment", Json::str("cf")),
                    ("bootstrap", Json::Bool(false)),
                    ("address", Json::str("abc.cell.bosh")),
                    ("ip", Json::str("10.0.0.9")),
                ]),
            ),
            (
                "links",
                Json::map(&[(
                    "peers",
                    Json::map(&[
                        (
                            "provider_job",
                            Json::str("tests/bosh/fixtures/jobs/provider"),
                        ),
                        ("properties", Json::map(&[])),
                        (
                            "instances",
                            Json::list(&[Json::map(&[
                                ("name", Json::str("cell")),
                                ("id", Json::str("i1")),
                                ("index", Json::Int(0)),
                                ("az", Json::str("z1")),
                                ("address", Json::str("10.0.0.1")),
                            ])]),
                        ),
                    ]),
                )]),
            ),
        ])
    };
    let properties = Json::map(&[])
        .with("given.value", Json::str("g"))
        .with("undeclared.value", Json::str("not in the spec"));

    // A property without default that a template needs: the director's error.
    let error = render(&input(properties.clone()), &dir, &dir.join("a"))
        .unwrap()
        .unwrap_err();
    assert_contains(
        &error,
        "Error filling in template 'missing.erb' (line 1: Can't find property '[\"required.value\"]')",
    );

    render(
        &input(properties.with("required.value", Json::str("r"))),
        &dir,
        &dir.join("b"),
    )
    .unwrap()
    .unwrap();
    let text = std::fs::read_to_string(dir.join("b/out/probe.txt")).unwrap();
    assert_eq!(
        text,
        "given=g\ndefault=7\nfallback=fb\nfirst_of=g\nfalsy=false\nundeclared=dropped\n\
         if_p=g,7\nelse=ran\nspec=cell/abc/2/z3/cf/false/abc.cell.bosh/10.0.0.9/probe\n\
         name=probe index=2\npeer=cell/i1/0/z1/10.0.0.1\nlink_p=1234 link_default=d\n\
         link_if_p=1234\nif_link_else=ran\nif_link=1\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("b/out/missing.txt")).unwrap(),
        "r\n"
    );
}

/// Variables of the example manifests, as a BOSH config server would hold
/// them.
fn manifest_vars(pki: &Pki) -> Json {
    Json::map(&[
        ("pcap_agent_tls", pki.agent.json()),
        ("pcap_agent_addon_tls", pki.agent.json()),
        ("pcap_api_client_tls", pki.api_client.json()),
        ("pcap_api_tls", pki.api_server.json()),
        ("pcap_token_admin", Json::str("generated-password")),
        ("system_domain", Json::str("sys.example.com")),
        ("director_url", Json::str("https://10.0.0.6:25555")),
        ("director_ca", Json::str(&pki.agent.ca)),
        ("cf_api_ca", Json::str(&pki.api_server.ca)),
    ])
}

#[test]
fn example_manifests_render_configs_the_binaries_accept() {
    let pki = Pki::new("manifests");
    let vars = manifest_vars(&pki);
    let add_agent = "bosh/manifests/ops-files/add-pcap-agent.yml";
    let cf = "tests/bosh/fixtures/cf-deployment.yml";

    // The agent on the Diego cells of cf-deployment.
    let cell = render_accepted(
        Job::Agent,
        "manifest-cell",
        Json::map(&[
            ("manifest", Json::str(cf)),
            ("ops_files", Json::strings(&[add_agent])),
            ("vars", vars.clone()),
            ("instance_group", Json::str("diego-cell")),
        ]),
    );
    assert!(cell.config().contains("default_interfaces = [\"eth0\"]\n"));
    cell.assert_holds("config/certs/agent.crt", &pki.agent.certificate);

    // The agent as a runtime-config addon on every VM.
    let addon = render_accepted(
        Job::Agent,
        "manifest-addon",
        Json::map(&[
            (
                "manifest",
                Json::str("bosh/manifests/runtime-config-pcap-agent.yml"),
            ),
            ("vars", vars.clone()),
            ("addon", Json::str("pcap-agent")),
        ]),
    );
    assert!(addon.config().contains("insecure_plaintext = false\n"));

    // The API deployment with the route registrar and the [cf] resolver, its
    // targets from the cells through the shared link, and the [bosh]
    // resolver of the director's UAA.
    let api = render_accepted(
        Job::Api,
        "manifest-api",
        Json::map(&[
            ("manifest", Json::str("bosh/manifests/pcap-api.yml")),
            (
                "ops_files",
                Json::strings(&[
                    "bosh/manifests/ops-files/route-registrar.yml",
                    "bosh/manifests/ops-files/cf-resolver.yml",
                ]),
            ),
            ("vars", vars.clone()),
            ("instance_group", Json::str("pcap-api")),
            (
                "link_from",
                Json::map(&[
                    ("manifest", Json::str(cf)),
                    ("ops_files", Json::strings(&[add_agent])),
                    ("vars", vars),
                    ("instances", Json::Int(3)),
                ]),
            ),
        ]),
    );
    let config = api.config();
    assert_contains(&config, "\n[[targets]]\nname = \"diego-cell\"\n");
    assert_eq!(
        config.matches(".diego-cell.default.cf.bosh:9494\"").count(),
        3,
        "{config}"
    );
    assert!(config.contains("name = \"admin\"\ntoken = \"generated-password\"\n"));
    assert_contains(
        &config,
        "\n[bosh]\ndirector_url = \"https://10.0.0.6:25555\"\n",
    );
    assert_contains(
        &config,
        "\n[cf]\napi_url = \"https://api.sys.example.com\"\n",
    );
    // The cells' target: the static admin and the director's admins.
    assert_contains(
        &config,
        "allow = { users = [\"admin\"], scopes = [{ uaa = \"bosh\", scope = \"bosh.admin\" }] }\n",
    );
    api.assert_holds("config/certs/bosh-director-ca.crt", &pki.agent.ca);
    api.assert_holds("config/certs/ca.crt", &pki.api_client.ca);
}

#[test]
fn example_manifests_declare_the_certificates_mtls_needs() {
    let root = workspace_root();
    let cf = root.join("tests/bosh/fixtures/cf-deployment.yml");
    let add_agent = root.join("bosh/manifests/ops-files/add-pcap-agent.yml");
    let route = root.join("bosh/manifests/ops-files/route-registrar.yml");
    let api_manifest = root.join("bosh/manifests/pcap-api.yml");

    let find = |vars: &BTreeMap<String, String>, name: &str| -> String {
        (0..vars.len())
            .map(|i| format!("variables.{i}"))
            .find(|p| vars.get(&format!("{p}.name")) == Some(&format!("\"{name}\"")))
            .unwrap_or_else(|| panic!("no variable {name} in {vars:?}"))
    };
    let leaf = |vars: &BTreeMap<String, String>, name: &str, ca: &str, cn: &str, usage: &str| {
        let p = find(vars, name);
        assert_eq!(vars[&format!("{p}.type")], "\"certificate\"", "{name}");
        assert_eq!(
            vars[&format!("{p}.options.ca")],
            format!("\"{ca}\""),
            "{name}"
        );
        assert_eq!(
            vars[&format!("{p}.options.common_name")],
            format!("\"{cn}\""),
            "{name}"
        );
        assert_eq!(
            list(vars, &format!("{p}.options.extended_key_usage")),
            [format!("\"{usage}\"")],
            "{name}"
        );
    };
    let is_ca = |vars: &BTreeMap<String, String>, name: &str| {
        let p = find(vars, name);
        assert_eq!(vars[&format!("{p}.type")], "\"certificate\"", "{name}");
        assert_eq!(vars[&format!("{p}.options.is_ca")], "true", "{name}");
    };

    let cf_vars = bosh::manifest_variables(&cf, &[&add_agent]).unwrap();
    is_ca(&cf_vars, "/pcap_ca");
    leaf(
        &cf_vars,
        "pcap_agent_tls",
        "/pcap_ca",
        "pcap-agent",
        "server_auth",
    );

    let api_vars = bosh::manifest_variables(&api_manifest, &[&route]).unwrap();
    is_ca(&api_vars, "/pcap_ca");
    leaf(
        &api_vars,
        "pcap_api_client_tls",
        "/pcap_ca",
        "pcap-api",
        "client_auth",
    );
    leaf(
        &api_vars,
        "pcap_api_tls",
        "pcap_api_ca",
        "pcap-api",
        "server_auth",
    );

    // gorouter checks the API's certificate for server_cert_domain_san, on
    // the port the API listens on.
    // The second operation adds the route_registrar job.
    let ops = flatten_yaml(&route).unwrap();
    let route_prefix = "1.value.properties.route_registrar.routes.0";
    assert_eq!(ops[&format!("{route_prefix}.tls_port")], "8443");
    let san = &ops[&format!("{route_prefix}.server_cert_domain_san")];
    let p = find(&api_vars, "pcap_api_tls");
    assert!(
        list(&api_vars, &format!("{p}.options.alternative_names")).contains(&san.as_str()),
        "{san} not among the certificate's names"
    );
    let api_spec = std::fs::read_to_string(root.join("bosh/jobs/pcap-api/spec")).unwrap();
    assert_contains(&api_spec, "listen.port:\n");
    assert_contains(&api_spec, "    default: 8443\n");
}

/// Where an invalid property set must be caught.
#[derive(Clone, Copy, Debug)]
enum Caught {
    /// Rendering fails naming the property.
    Render,
    /// `--check-config` rejects the rendered config naming the key.
    Check,
}

fn assert_rejected(job: Job, case: &str, properties: Json, caught: Caught, name: &str) {
    let tag = format!("invalid-{case}");
    match (render_properties(job, &tag, properties), caught) {
        (Err(message), Caught::Render) => {
            assert!(
                message.contains(name),
                "{case}: the error does not name {name}: {message}"
            );
            assert_contains(&message, "Error filling in template");
        }
        (Ok(rendered), Caught::Check) => {
            let check = rendered.check();
            assert!(
                !check.ok,
                "{case}: --check-config accepted:\n{}",
                rendered.config()
            );
            assert!(
                check.output.contains(name),
                "{case}: --check-config does not name {name}: {}",
                check.output
            );
        }
        (Err(message), Caught::Check) => {
            panic!("{case}: rendering failed, expected --check-config to: {message}")
        }
        (Ok(rendered), Caught::Render) => panic!(
            "{case}: rendered, expected an error naming {name}:\n{}",
            rendered.config()
        ),
    }
}

#[test]
fn invalid_agent_properties_are_rejected_naming_the_property() {
    use Caught::{Check, Render};
    let pki = Pki::new("agent-invalid");
    let good = pki.agent_properties();
    // The good properties with `key` set to `value`: rejected naming `key`.
    let set = |case: &'static str, key: &'static str, value: Json, caught: Caught| {
        (case, good.clone().with(key, value), caught, key)
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, Json, Caught, &str)> = vec![
        set("no-certificate", "tls.certificate", Json::Null, Render),
        set("no-ca", "tls.ca", Json::Null, Render),
        ("no-tls", Json::map(&[]), Render, "tls.certificate"),
        set("port-too-big", "listen.port", Json::Int(70000), Render),
        set("port-string", "listen.port", Json::str("9494"), Render),
        set("plaintext-with-tls", "insecure_plaintext_development_only", Json::Bool(true), Render),
        set("plaintext-not-boolean", "insecure_plaintext_development_only", Json::str("yes"), Render),
        set("negative-max-captures", "limits.max_captures", Json::Int(-1), Render),
        set("negative-max-bytes", "limits.max_bytes", Json::Int(-5), Render),
        set("negative-duration", "limits.max_duration", Json::Float(-1.0), Render),
        set("bad-attach", "capture.attach", Json::str("sideways"), Render),
        set("memory-limit-format", "bpm.memory_limit", Json::str("lots"), Render),
        set("memory-limit-too-small", "bpm.memory_limit", Json::str("64M"), Render),
        set("memlock-not-boolean", "kernel.memlock_rlimit", Json::str("old"), Render),
        set("file-user-not-a-name", "privileges.file_user", Json::str("vcap; rm -rf /"), Render),
        set("privileged-not-boolean", "bpm.unsafe_privileged", Json::str("yes"), Render),
        set("too-few-open-files", "bpm.open_files", Json::Int(10), Render),
        set("log-level-not-string", "log_level", Json::Int(3), Render),
        set("negative-drain-timeout", "drain.timeout", Json::Int(-5), Render),
        set("zero-max-captures", "limits.max_captures", Json::Int(0), Check),
        set("zero-duration", "limits.max_duration", Json::Int(0), Check),
        set("snaplen-too-big", "limits.max_snaplen", Json::Int(262_145), Check),
        set("tiny-ring", "capture.ring_buffer_kib", Json::Int(1), Check),
        set("bad-interface", "capture.default_interfaces", Json::strings(&["a/b"]), Check),
        set("no-client-names", "tls.client_names", Json::list(&[]), Check),
        ("listen-address", good.clone().with("listen.address", Json::str("nowhere")), Check, "listen"),
        set("certificate-not-pem", "tls.certificate", Json::str("not a certificate"), Check),
        ("ca-not-pem", good.clone().with("tls.ca", Json::str("garbage")), Check, "tls.client_ca"),
        set("key-is-a-certificate", "tls.private_key", Json::str(&pki.agent.certificate), Check),
    ];
    for (case, properties, caught, name) in cases {
        assert_rejected(Job::Agent, case, properties, caught, name);
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "a table of cases")]
fn invalid_api_properties_are_rejected_naming_the_property() {
    use Caught::{Check, Render};
    let pki = Pki::new("api-invalid");
    let good = pki.api_properties();
    let resolvers = api_resolver_properties(&pki);
    // A target `name` on `address` that alice may capture.
    let alices = |name: &str, address: &str| {
        let allow = Json::map(&[("users", Json::strings(&["alice"]))]);
        target(name, &[], Some(allow), ("vm-0", address))
    };
    let good_with = |key: &str, value: Json| good.clone().with(key, value);
    let resolvers_with = |key: &str, value: Json| resolvers.clone().with(key, value);
    // The good properties (or those with resolvers) with `key` set to
    // `value`: rejected naming `key`.
    let set = |case: &'static str, key: &'static str, value: Json, caught: Caught| {
        (case, good_with(key, value), caught, key)
    };
    let resolver = |case: &'static str, key: &'static str, value: Json, caught: Caught| {
        (case, resolvers_with(key, value), caught, key)
    };
    let alice = || Json::list(&[user("alice", "a")]);
    // One agent's target that allows `who`.
    let allowing = |what: &str, who: Json| one_agent_target(Some(Json::map(&[(what, who)])));
    let cf_admin = || grants(&[("cf", "cloud_controller.admin")]);
    #[rustfmt::skip]
    let cases: Vec<(&str, Json, Caught, &str)> = vec![
        set("no-agents-ca", "agents.ca", Json::Null, Render),
        set("no-server-key", "tls.private_key", Json::Null, Render),
        set("empty-client-certificate", "agents.certificate", Json::str(""), Render),
        set("port-too-big", "listen.port", Json::Int(65536), Render),
        set("agent-port-zero", "agents.port", Json::Int(0), Render),
        set("negative-max-bytes", "limits.max_bytes", Json::Int(-1), Render),
        set("negative-reorder-window", "merge.reorder_window", Json::Float(-0.5), Render),
        set("timeout-string", "agents.start_timeout", Json::str("5s"), Render),
        ("user-without-token",
            good_with("users", Json::list(&[Json::map(&[("name", Json::str("alice"))])])),
            Render, "users[0]"),
        ("target-without-agents",
            good_with("targets", Json::list(&[Json::map(&[
                ("name", Json::str("t")),
                ("allow", Json::map(&[("users", Json::strings(&["alice"]))])),
            ])])),
            Render, "targets[0].agents"),
        ("target-without-allow", good_with("targets", one_agent_target(None)), Render, "targets[0].allow"),
        ("target-for-an-unknown-user",
            good_with("users", alice()).with("targets", allowing("users", Json::strings(&["mallory"]))),
            Check, "targets[0].allow.users[0]"),
        ("link-targets-for-nobody",
            good_with("link_targets.enabled", Json::Bool(true)),
            Render, "link_targets.allow_users"),
        set("drain-shorter-than-grace", "drain.timeout", Json::Int(5), Render),
        set("memory-limit-too-small", "bpm.memory_limit", Json::str("1G"), Render),
        set("zero-captures-per-user", "limits.max_captures_per_user", Json::Int(0), Check),
        set("zero-connect-timeout", "agents.connect_timeout", Json::Int(0), Check),
        set("empty-server-name", "agents.server_name", Json::str(""), Check),
        ("shared-token",
            good_with("users", Json::list(&[user("alice", "same"), user("bob", "same")])),
            Check, "users[1].token"),
        ("duplicate-target",
            good_with("users", alice())
                .with("targets", Json::list(&[alices("t", "10.0.0.1"), alices("t", "10.0.0.2")])),
            Check, "targets[1].name"),
        ("bad-agent-address",
            good_with("users", alice()).with("targets", Json::list(&[alices("t", "not a host")])),
            Check, "targets[0].agents[0].address"),
        set("client-certificate-not-pem", "agents.certificate", Json::str("junk"), Check),
        set("server-key-not-pem", "tls.private_key", Json::str("junk"), Check),
        ("director-without-ca",
            good_with("bosh.director_url", Json::str("https://10.0.0.6:25555")),
            Render, "bosh.director_ca"),
        ("director-ca-without-url",
            good_with("bosh.director_ca", Json::str(&pki.agent.ca)),
            Render, "bosh.director_url"),
        resolver("director-plain-http", "bosh.director_url", Json::str("http://10.0.0.6:25555"), Render),
        resolver("director-ca-not-pem", "bosh.director_ca", Json::str("junk"), Check),
        resolver("empty-required-scope", "bosh.required_scope", Json::str(" "), Check),
        resolver("bosh-agent-port-zero", "bosh.agent_port", Json::Int(0), Render),
        ("cf-without-ca", good_with("cf.api_url", Json::str("https://api.sys.example.com")), Render, "cf.ca"),
        resolver("cf-unknown-role", "cf.allowed_roles", Json::strings(&["org_manager"]), Check),
        resolver("cf-ssh-setting-string", "cf.respect_ssh_setting", Json::str("yes"), Render),
        resolver("store-without-secret", "store.secret_access_key", Json::Null, Render),
        resolver("store-without-access-key-id", "store.access_key_id", Json::Null, Render),
        resolver("store-endpoint-not-a-url", "store.endpoint", Json::str("s3.example.com"), Render),
        resolver("store-part-too-small", "store.part_size", Json::Int(1024), Check),
        resolver("store-max-size-beyond-parts", "store.max_size", Json::Int(1 << 40), Check),
        resolver("store-empty-prefix", "store.prefix", Json::str(""), Check),
        set("store-admin-scopes-without-store", "store.admin_scopes", cf_admin(), Render),
        ("store-admin-scope-of-a-resolver-that-is-off",
            resolvers_with("cf.api_url", Json::Null)
                .with("cf.ca", Json::Null)
                .with("store.admin_scopes", cf_admin()),
            Render, "store.admin_scopes[0].uaa"),
        resolver("store-admin-scope-not-a-grant", "store.admin_scopes", Json::strings(&["cloud_controller.admin"]), Render),
        ("target-scope-of-a-resolver-that-is-off",
            good_with("targets", allowing("scopes", grants(&[("bosh", "bosh.admin")]))),
            Check, "targets[0].allow.scopes[0].uaa"),
        ("target-scope-not-a-grant",
            resolvers_with("targets", allowing("scopes", Json::strings(&["bosh.admin"]))),
            Render, "targets[0].allow.scopes"),
        ("link-scope-of-a-resolver-that-is-off",
            good_with("link_targets.enabled", Json::Bool(true))
                .with("link_targets.allow_scopes", grants(&[("bosh", "bosh.admin")])),
            Render, "link_targets.allow_scopes[0].uaa"),
        ("link-scope-not-a-grant",
            resolvers_with("link_targets.enabled", Json::Bool(true))
                .with("link_targets.allow_scopes", Json::strings(&["bosh.admin"])),
            Render, "link_targets.allow_scopes"),
    ];
    for (case, properties, caught, name) in cases {
        assert_rejected(Job::Api, case, properties, caught, name);
    }
    // A refused secret is never echoed.
    let error = render_properties(
        Job::Api,
        "invalid-store-secret-not-a-string",
        resolvers.with(
            "store.secret_access_key",
            Json::list(&[Json::str(STORE_SECRET)]),
        ),
    )
    .err()
    .expect("a list as the secret rendered");
    assert_contains(&error, "store.secret_access_key");
    assert_lacks(&error, STORE_SECRET);
}

/// Vendors the workspace with bosh/scripts/vendor.sh and runs the pcap
/// package's packaging script as BOSH would, with no network (a new network
/// namespace holding only a down loopback). Takes minutes: a release build
/// of the whole workspace from nothing.
#[test]
#[ignore = "a release build from scratch: run with --ignored"]
fn packaging_builds_the_binaries_offline_from_vendored_sources() {
    let root = workspace_root();
    let dir = TempDir::new("bosh-packaging").unwrap();
    let compile = dir.join("compile");
    let install = dir.join("install");
    std::fs::create_dir_all(compile.join("pcap")).unwrap();
    std::fs::create_dir_all(&install).unwrap();

    let tarball = compile.join("pcap/pcap-src.tar.gz");
    let vendor = Command::new(root.join("bosh/scripts/vendor.sh"))
        .arg(&tarball)
        .output()
        .unwrap();
    assert!(
        vendor.status.success(),
        "vendor.sh: {}",
        String::from_utf8_lossy(&vendor.stderr)
    );
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&tarball)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("pcap-src/vendor/tonic-"))
    );
    assert!(listing.lines().any(|l| l == "pcap-src/Cargo.lock"));
    assert!(!listing.lines().any(|l| l.starts_with("pcap-src/target/")));
    assert!(!listing.lines().any(|l| l.starts_with("pcap-src/bosh/")));

    let packaging = root.join("bosh/packages/pcap/packaging");
    let started = std::time::Instant::now();
    let build = Command::new("unshare")
        .args(["--net", "--"])
        .arg("bash")
        .arg(&packaging)
        .current_dir(&compile)
        .env("BOSH_COMPILE_TARGET", &compile)
        .env("BOSH_INSTALL_TARGET", &install)
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        build.status.success(),
        "packaging failed after {elapsed:?}:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    eprintln!("packaging took {elapsed:?}");
    for name in ["pcap-agent", "pcap-api", "pcap"] {
        let path = install.join("bin").join(name);
        let version = Command::new(&path).arg("--version").output().unwrap();
        assert!(
            version.status.success(),
            "{} --version: {}",
            path.display(),
            String::from_utf8_lossy(&version.stderr)
        );
    }
}

#[test]
fn both_jobs_expose_the_metrics_listener_as_properties() {
    let pki = Pki::new("metrics");
    let config_dir = |job: &str| format!("/var/vcap/jobs/{job}/config/certs");
    // The defaults: plain HTTP on this VM only.
    for (job, tag, properties, port) in [
        (
            Job::Agent,
            "metrics-agent-defaults",
            pki.agent_properties(),
            9495,
        ),
        (Job::Api, "metrics-api-defaults", pki.api_properties(), 9496),
    ] {
        let config = render_accepted(job, tag, Json::map(&[("properties", properties)])).config();
        assert!(
            config.contains(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n")),
            "{tag}:\n{config}"
        );
        assert!(!config.contains("[metrics.tls]"), "{tag}:\n{config}");
    }
    // HTTPS with client certificates, on every address.
    let rendered = pki.render_agent(
        "metrics-agent-tls",
        &[
            ("metrics.address", Json::str("0.0.0.0")),
            ("metrics.port", Json::Int(9100)),
            ("metrics.tls.certificate", Json::str(&pki.agent.certificate)),
            ("metrics.tls.private_key", Json::str(&pki.agent.private_key)),
            ("metrics.tls.client_ca", Json::str(&pki.agent.ca)),
        ],
    );
    let config = rendered.config();
    let certs = config_dir("pcap-agent");
    assert_has_lines(
        &config,
        &[
            "listen = \"0.0.0.0:9100\"".to_owned(),
            "[metrics.tls]".to_owned(),
            format!("certificate = \"{certs}/metrics.crt\""),
            format!("private_key = \"{certs}/metrics.key\""),
            format!("client_ca = \"{certs}/metrics-client-ca.crt\""),
        ],
    );
    rendered.assert_holds("config/certs/metrics.crt", &pki.agent.certificate);
    rendered.assert_holds("config/certs/metrics-client-ca.crt", &pki.agent.ca);
    // Turned off.
    let config = pki
        .render_api("metrics-api-off", &[("metrics.enabled", Json::Bool(false))])
        .config();
    assert_contains(&config, "\n[metrics]\nenabled = false\n");
    // Wrong values are caught naming the property.
    let api = pki.api_properties();
    for (case, properties, name) in [
        (
            "metrics-half-key-pair",
            api.clone().with(
                "metrics.tls.certificate",
                Json::str(&pki.api_server.certificate),
            ),
            "metrics.tls.certificate, metrics.tls.private_key: give both or neither",
        ),
        (
            "metrics-client-ca-without-tls",
            api.clone()
                .with("metrics.tls.client_ca", Json::str(&pki.api_client.ca)),
            "metrics.tls.client_ca: client certificates need HTTPS",
        ),
        (
            "metrics-port-too-big",
            api.clone().with("metrics.port", Json::Int(70000)),
            "metrics.port",
        ),
    ] {
        assert_rejected(Job::Api, case, properties, Caught::Render, name);
    }
    assert_rejected(
        Job::Agent,
        "metrics-address",
        pki.agent_properties()
            .with("metrics.address", Json::str("localhost")),
        Caught::Check,
        "metrics.listen: \"localhost:9495\" is not an address",
    );
}
