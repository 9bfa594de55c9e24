//! Assertions the system tests share.

use anyhow::ensure;

/// `text` (e.g. a command's stderr) contains every one of `needles`; else
/// fails naming the first one missing, with the whole text.
pub fn contains_all(text: &str, needles: &[&str]) -> anyhow::Result<()> {
    for needle in needles {
        ensure!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    Ok(())
}
