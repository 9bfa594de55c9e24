//! Rewriting a configuration file of another tool (the cf CLI's, the BOSH
//! CLI's) so that a reader never sees half of it.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Writes `text` to a temporary file beside `path` (created 0600, then
/// given `mode`), syncs it and renames it over `path`. On failure the
/// temporary file is removed and `path` is left as it was.
pub fn replace(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "config".into(), |n| n.to_string_lossy().into_owned());
    let temporary = dir.join(format!(".{name}.pcap-{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&temporary);
        anyhow::anyhow!("cannot rewrite {}: {e}", path.display())
    })
}
