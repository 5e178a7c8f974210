//! Names the build in `IMLAB_COMMIT`: the git commit the binary was built from (12 hex
//! digits), with `-dirty` when tracked files differed from it, or empty when it was not built
//! from a git checkout (a source tarball, git missing). `imlab --version`, the results files
//! and a sweep's `sweep.json` carry it: a trace hash, and so a replay command, holds only for
//! the build that produced it.
//!
//! Re-run when the checkout's commit moves or a source directory changes (that is when the
//! dirty mark can change for code); only paths that exist are named, because cargo re-runs a
//! build script every time for a path that does not.
//!
//! A release build of `imlab` for x86_64 Linux (whose linker is rustc's lld) also lays out its
//! code in the order of `link/symbol-order.txt`: the functions `imlab load` runs first, together
//! (written by `bench/symbol-order.sh`, which says why). A name the linker does not find is
//! skipped, so a stale file orders less and fails nothing.

use std::path::Path;
use std::process::Command;

/// Everything the binary is compiled from, for the dirty mark.
const SOURCES: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "build.rs",
    "src",
    "core",
    "carrier",
    "sim",
    "proxy",
    "reports",
    "loadgen",
    "vendor",
    "link",
];

/// The functions `imlab load` runs, for the linker to put first.
const SYMBOL_ORDER: &str = "link/symbol-order.txt";

/// Where git records the commit a checkout is at.
const GIT_REFS: &[&str] = &[".git/HEAD", ".git/refs/heads", ".git/packed-refs"];

fn main() {
    for path in SOURCES.iter().chain(GIT_REFS) {
        if Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!(
        "cargo:rustc-env=IMLAB_COMMIT={}",
        commit().unwrap_or_default()
    );
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let order = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(|dir| Path::new(&dir).join(SYMBOL_ORDER))
        .filter(|order| order.exists());
    if let Some(order) = order
        && target == "x86_64-unknown-linux-gnu"
        && profile == "release"
    {
        println!(
            "cargo:rustc-link-arg-bin=imlab=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=imlab=-Wl,--no-warn-symbol-ordering");
    }
}

fn commit() -> Option<String> {
    // Only imlab's own checkout: sources unpacked inside another repository are not its commit.
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    if std::fs::canonicalize(top).ok()? != std::fs::canonicalize(manifest_dir).ok()? {
        return None;
    }
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    let status = git(&["status", "--porcelain", "--untracked-files=no"])?;
    Some(if status.is_empty() {
        head
    } else {
        format!("{head}-dirty")
    })
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}
