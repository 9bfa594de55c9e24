//! A real S3-compatible server for the stored-capture tests: `s3s-fs`
//! (installed by `cargo xtask setup`), run in a namespace on loopback with
//! one access key. It checks SigV4 signatures on every request and the
//! expiry of presigned URLs, and refuses parts under 5 MiB, like S3.
//!
//! s3s-fs keeps bucket `B`'s object `K` in the file `ROOT/B/K`, and an
//! unfinished multipart upload as files named `.upload…` in `ROOT`: what a
//! test reads to see objects and dangling uploads without asking the store.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    netns::Netns,
    process::{Running, wait_until},
};

/// The bucket the tests' API writes to.
pub const BUCKET: &str = "pcap";
pub const ACCESS_KEY_ID: &str = "pcap-test-access-key";
pub const SECRET_ACCESS_KEY: &str = "pcap-test-secret-0123456789abcdef";

/// The s3s-fs binary: on PATH, or where `cargo install` puts it.
pub fn s3s_fs() -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(cargo_home).join("bin/s3s-fs"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/s3s-fs"));
    }
    candidates.push(PathBuf::from("/root/.cargo/bin/s3s-fs"));
    candidates
        .into_iter()
        .find(|p| p.exists())
        .context("s3s-fs is missing: run `cargo xtask setup`")
}

/// A running s3s-fs, stopped on drop.
#[derive(Debug)]
pub struct S3Server {
    /// The server's data directory.
    pub root: PathBuf,
    /// `http://127.0.0.1:PORT`, inside the namespace.
    pub endpoint: String,
    port: u16,
    process: Option<Running>,
}

impl S3Server {
    /// Starts s3s-fs in `ns` on 127.0.0.1:`port`, with an empty bucket.
    pub fn start(ns: &Netns, dir: &Path, port: u16) -> anyhow::Result<Self> {
        let root = dir.join("s3");
        std::fs::create_dir_all(root.join(BUCKET))?;
        let program = s3s_fs()?;
        let mut command = ns.command(program.to_str().context("utf-8 path")?);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                ACCESS_KEY_ID,
                "--secret-key",
                SECRET_ACCESS_KEY,
            ])
            .arg(&root)
            .stdout(std::process::Stdio::null());
        let process = Running::spawn(&mut command)?;
        let server = Self {
            root,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            process: Some(process),
        };
        // It says nothing on stderr when ready: wait for its port.
        wait_until("s3s-fs listens", Duration::from_secs(10), || {
            Ok(server.listening(ns))
        })?;
        Ok(server)
    }

    fn listening(&self, ns: &Netns) -> bool {
        ns.sh(&format!(
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {}), 1)'",
            self.port
        ))
        .is_ok()
    }

    /// Stops the server (the store is then down).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// The API's `[store]` table for this server; `extra` lines are added.
    pub fn api_config(&self, extra: &str) -> String {
        format!(
            "[store]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\n\
             access_key_id = \"{ACCESS_KEY_ID}\"\nsecret_access_key = \"{SECRET_ACCESS_KEY}\"\n{extra}\n",
            self.endpoint
        )
    }

    /// The keys of every object in the bucket.
    pub fn objects(&self) -> anyhow::Result<Vec<String>> {
        let bucket = self.root.join(BUCKET);
        let mut keys = Vec::new();
        for file in files_under(&bucket)? {
            let key = file
                .strip_prefix(&bucket)?
                .to_str()
                .context("utf-8 key")?
                .to_owned();
            // s3s-fs keeps its own bookkeeping in dot files.
            if !key.split('/').any(|part| part.starts_with('.')) {
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// The bytes of object `key`, as the server holds it.
    pub fn object(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.root.join(BUCKET).join(key);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Files of multipart uploads not completed or aborted (uploads,
    /// their parts and metadata), anywhere in the server's data.
    pub fn unfinished_uploads(&self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(files_under(&self.root)?
            .into_iter()
            .filter(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains(".upload"))
            })
            .collect())
    }

    /// Parts uploaded so far (of uploads not completed yet).
    pub fn uploaded_parts(&self) -> anyhow::Result<usize> {
        Ok(self
            .unfinished_uploads()?
            .iter()
            .filter(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".upload_id-") && n.contains(".part-"))
            })
            .count())
    }
}

fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => bail!("reading {}: {e}", dir.display()),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}

/// Fetches `url` in `ns` (curl): the HTTP status and the body.
pub fn http_get(ns: &Netns, url: &str, output: &Path) -> anyhow::Result<(u16, Vec<u8>)> {
    let out = ns
        .command("curl")
        .args(["-s", "-o"])
        .arg(output)
        .args(["-w", "%{http_code}", url])
        .output()
        .context("running curl")?;
    let status: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("curl's status code")?;
    Ok((status, std::fs::read(output).unwrap_or_default()))
}
