//! Helpers for system tests (and the demo and benchmarks): network
//! namespaces that clean up after themselves, the binaries under test,
//! reference tools, and a capture-file reader.
#![forbid(unsafe_code)]

pub mod agent_call;
pub mod agent_capture;
pub mod app_capture;
pub mod bosh;
pub mod c2c_traffic;
pub mod captures;
pub mod checks;
pub mod cluster;
pub mod cluster_setup;
pub mod landscape;
pub mod netns;
pub mod pki;
pub mod process;
pub mod reference;
pub mod s3;
pub mod servers;
pub mod stand_ins;

/// A directory under the system's temporary directory, removed on drop even
/// when a test fails.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A new, empty directory named for `tag`, this process and a count, so
    /// that tests running side by side with the same tag never share one.
    pub fn new(tag: &str) -> std::io::Result<Self> {
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pcap-test-{tag}-{}-{n}", std::process::id()));
        // Left behind by a killed run that had this process id.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)?;
        Ok(Self(dir))
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as u64
}
