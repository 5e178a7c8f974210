//! `--out DIR` is checked before any work: a run that measures for minutes and then cannot
//! write its results has wasted them.

use std::path::Path;

use anyhow::Context;

/// Creates `dir` if needed and proves it writable by creating and removing a probe file.
/// The error names the flag and the directory, and carries the OS error once.
pub fn check(dir: &Path) -> anyhow::Result<()> {
    let fail = || format!("--out {}: cannot write there", dir.display());
    std::fs::create_dir_all(dir).with_context(fail)?;
    let probe = dir.join(".imlab-write-check");
    std::fs::write(&probe, b"").with_context(fail)?;
    std::fs::remove_file(&probe).with_context(fail)?;
    Ok(())
}
