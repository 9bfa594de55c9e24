//! The BOSH release under test: renders its jobs' templates with
//! `tests/bosh/render.rb` (Debian's ruby, emulating the director's template
//! context) and runs the binaries' `--check-config` on what it rendered, at
//! the real `/var/vcap/jobs/JOB` paths inside a private mount namespace.

use std::{
    collections::BTreeMap,
    fmt::{self, Write as _},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context as _, bail};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests is in the workspace")
        .to_owned()
}

/// A JSON value, written by hand (the renderer's input).
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Json>),
    Map(Vec<(String, Json)>),
}

impl Json {
    pub fn str(s: impl Into<String>) -> Self {
        Self::Str(s.into())
    }

    pub fn map(entries: &[(&str, Json)]) -> Self {
        Self::Map(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    pub fn list(items: &[Json]) -> Self {
        Self::List(items.to_vec())
    }

    pub fn strings(items: &[&str]) -> Self {
        Self::List(items.iter().map(|s| Self::str(*s)).collect())
    }

    /// Sets the value at a dotted path (`tls.certificate`), creating maps on
    /// the way; `Json::Null` removes the key instead.
    pub fn set(&mut self, dotted: &str, value: Json) {
        let (first, rest) = match dotted.split_once('.') {
            Some((first, rest)) => (first, Some(rest)),
            None => (dotted, None),
        };
        let Self::Map(entries) = self else {
            panic!("{dotted}: not a map");
        };
        let position = entries.iter().position(|(k, _)| k == first);
        match (rest, position) {
            (None, Some(i)) if value == Self::Null => {
                entries.remove(i);
            }
            (None, Some(i)) => entries[i].1 = value,
            (None, None) if value == Self::Null => {}
            (None, None) => entries.push((first.to_owned(), value)),
            (Some(rest), Some(i)) => entries[i].1.set(rest, value),
            (Some(rest), None) => {
                let mut child = Self::Map(Vec::new());
                child.set(rest, value);
                entries.push((first.to_owned(), child));
            }
        }
    }

    /// This map with `dotted` set to `value`.
    #[must_use]
    pub fn with(mut self, dotted: &str, value: Json) -> Self {
        self.set(dotted, value);
        self
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) if x.is_finite() => write!(f, "{x:?}"),
            Self::Float(_) => panic!("JSON has no NaN or infinity"),
            Self::Str(s) => {
                f.write_char('"')?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                        c => f.write_char(c)?,
                    }
                }
                f.write_char('"')
            }
            Self::List(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            Self::Map(entries) => {
                f.write_char('{')?;
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{}:{value}", Self::Str(key.clone()))?;
                }
                f.write_char('}')
            }
        }
    }
}

/// The renderer script.
pub fn renderer() -> PathBuf {
    workspace_root().join("tests/bosh/render.rb")
}

fn ruby(args: &[&std::ffi::OsStr]) -> anyhow::Result<Output> {
    Command::new("ruby")
        .arg(renderer())
        .args(args)
        .current_dir(workspace_root())
        .output()
        .context("running ruby (apt-get install ruby; cargo xtask setup installs it)")
}

/// Renders a job as `input` (see `tests/bosh/render.rb`) describes into
/// `output`: `Ok(Ok(()))`, or `Ok(Err(message))` when rendering failed.
pub fn render(input: &Json, work: &Path, output: &Path) -> anyhow::Result<Result<(), String>> {
    let input_path = work.join("render-input.json");
    std::fs::write(&input_path, input.to_string())?;
    let out = ruby(&[
        "render".as_ref(),
        input_path.as_os_str(),
        output.as_os_str(),
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(Ok(()))
    } else if out.status.code() == Some(1) {
        Ok(Err(stderr))
    } else {
        bail!("render.rb failed: {}: {stderr}", out.status)
    }
}

/// A YAML file read by Ruby's YAML parser, as `path=json-scalar` entries
/// (`processes.0.capabilities.1` → `"PERFMON"`).
pub fn flatten_yaml(file: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    lines_to_map(&ruby(&["flatten".as_ref(), file.as_os_str()])?)
}

/// The `variables` of a manifest after its ops-files, flattened.
pub fn manifest_variables(
    manifest: &Path,
    ops_files: &[&Path],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut args = vec!["variables".as_ref(), manifest.as_os_str()];
    args.extend(ops_files.iter().map(|p| p.as_os_str()));
    lines_to_map(&ruby(&args)?)
}

fn lines_to_map(out: &Output) -> anyhow::Result<BTreeMap<String, String>> {
    if !out.status.success() {
        bail!("render.rb: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout.clone())?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// The values under `prefix.0`, `prefix.1`... of a flattened document.
pub fn list<'a>(flat: &'a BTreeMap<String, String>, prefix: &str) -> Vec<&'a str> {
    (0..)
        .map_while(|i| flat.get(&format!("{prefix}.{i}")).map(String::as_str))
        .collect()
}

/// What `--check-config` said.
#[derive(Debug)]
pub struct Check {
    pub ok: bool,
    pub output: String,
}

/// Runs `command`, which must succeed: else panics naming `what`, with its
/// stderr. Its output.
pub fn run_ok(command: &mut Command, what: &str) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `unshare`'s arguments that run `sh` in a mount namespace of its own whose
/// mounts stay private (then `-c SCRIPT $0 ARGS...`).
const PRIVATE_MOUNTS_SH: [&str; 5] = ["--mount", "--propagation", "private", "--", "sh"];

/// Runs `BINARY serve --config /var/vcap/jobs/JOB/config/JOB.toml
/// --check-config` in a private mount namespace where a tmpfs on /var/vcap
/// holds `rendered` as /var/vcap/jobs/JOB, so the binary reads exactly the
/// rendered files at the paths BOSH would put them.
pub fn check_config(binary: &Path, job: &str, rendered: &Path) -> anyhow::Result<Check> {
    // The mount point; it stays empty on the host.
    std::fs::create_dir_all("/var/vcap").context("creating /var/vcap")?;
    let script = r#"set -e
mount -t tmpfs -o mode=0755 pcap-test /var/vcap
mkdir -p /var/vcap/jobs
cp -R "$1" "/var/vcap/jobs/$2"
exec "$3" serve --config "/var/vcap/jobs/$2/config/$2.toml" --check-config"#;
    let out = Command::new("unshare")
        .args(PRIVATE_MOUNTS_SH)
        .args(["-c", script, "sh"])
        .arg(rendered)
        .arg(job)
        .arg(binary)
        .output()
        .context("running unshare")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ok = out.status.success();
    if ok && stdout.trim() != "config OK" {
        bail!("--check-config exited 0 without `config OK`: {stdout}{stderr}");
    }
    if !ok && out.status.code() != Some(1) {
        bail!("--check-config: {}: {stdout}{stderr}", out.status);
    }
    Ok(Check {
        ok,
        output: format!("{stdout}{stderr}"),
    })
}

/// The uid and gid of `vcap` inside [`VarVcap::command`] (BOSH stemcells
/// use 1000; this one is unlikely to be taken on a test machine).
pub const VCAP_ID: u32 = 64_321;

/// A VM's `/var/vcap` for a job under test, in a directory of the host that
/// [`VarVcap::command`] bind-mounts at `/var/vcap` in a private mount
/// namespace: `jobs/JOB` (rendered there by [`VarVcap::render`]),
/// `packages/pcap/bin/` (links to the binaries under test), and `sys/run`,
/// `sys/log` as the job's scripts fill them, readable from the host.
#[derive(Debug)]
pub struct VarVcap {
    pub dir: PathBuf,
    /// Bind-mounted at `/run/pcap-agent` (the agent's tc fallback state).
    pub run_pcap_agent: PathBuf,
}

impl VarVcap {
    /// Lays out `/var/vcap` under `dir` with the `pcap` package's binaries
    /// from `bin_dir`.
    pub fn new(dir: &Path, bin_dir: &Path) -> anyhow::Result<Self> {
        let root = dir.join("var-vcap");
        let bin = root.join("packages/pcap/bin");
        std::fs::create_dir_all(&bin)?;
        for name in ["pcap-agent", "pcap-api", "pcap"] {
            let target = bin_dir.join(name);
            if target.exists() {
                std::os::unix::fs::symlink(&target, bin.join(name))?;
            }
        }
        let run_pcap_agent = dir.join("run-pcap-agent");
        std::fs::create_dir_all(&run_pcap_agent)?;
        // The stemcell's vcap user and group, for the namespace's /etc.
        for (file, line) in [
            (
                "passwd",
                format!("vcap:x:{VCAP_ID}:{VCAP_ID}::/home/vcap:/usr/sbin/nologin\n"),
            ),
            ("group", format!("vcap:x:{VCAP_ID}:\n")),
        ] {
            let host = std::fs::read_to_string(Path::new("/etc").join(file))?;
            std::fs::write(dir.join(file), format!("{host}{line}"))?;
        }
        Ok(Self {
            dir: root,
            run_pcap_agent,
        })
    }

    /// Renders `bosh/jobs/JOB` with `properties` into `jobs/JOB` and installs
    /// it as the BOSH agent does (root:vcap, directories 0750, files 0640,
    /// `bin/` 0750): `Ok(Err(message))` when rendering failed.
    pub fn render(&self, job: &str, properties: &Json) -> anyhow::Result<Result<(), String>> {
        let input = Json::map(&[
            (
                "root",
                Json::str(workspace_root().to_str().expect("utf-8 path")),
            ),
            ("job", Json::str(format!("bosh/jobs/{job}"))),
            ("properties", properties.clone()),
        ]);
        let target = self.dir.join("jobs").join(job);
        let rendered = render(&input, &self.dir, &target)?;
        if rendered.is_ok() {
            // As the BOSH agent installs jobs: root:vcap, 0750 and 0640.
            let out = Command::new("sh")
                .args(["-c", r#"chown -R "0:$2" "$1" && chmod -R u=rwX,g=rX,o= "$1" && chmod -R g+x "$1/bin""#, "sh"])
                .arg(&target)
                .arg(VCAP_ID.to_string())
                .output()?;
            if !out.status.success() {
                bail!(
                    "installing {}: {}",
                    target.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(rendered)
    }

    /// `launcher` (for example `ip netns exec NS`, or `setpriv ...`) running
    /// `args` in a private mount namespace where this directory is
    /// `/var/vcap` and `/etc/passwd` and `/etc/group` know `vcap`, the way
    /// monit or the BOSH agent would run a job's script.
    pub fn command(&self, mut launcher: Command, args: &[&str]) -> Command {
        std::fs::create_dir_all("/var/vcap").expect("creating the mount point /var/vcap");
        std::fs::create_dir_all("/run/pcap-agent")
            .expect("creating the mount point /run/pcap-agent");
        let script = r#"set -e
mount --bind "$1" /var/vcap
mount --bind "$2" /run/pcap-agent
mount --bind "$3/passwd" /etc/passwd
mount --bind "$3/group" /etc/group
shift 3
exec "$@""#;
        launcher
            .arg("unshare")
            .args(PRIVATE_MOUNTS_SH)
            .args(["-c", script, "sh"])
            .arg(&self.dir)
            .arg(&self.run_pcap_agent)
            .arg(self.dir.parent().expect("var-vcap is in a directory"))
            .args(args);
        launcher
    }

    /// A file under this `/var/vcap`, as the host sees it.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }
}
