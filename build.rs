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
//!
//! That build links glibc statically too (a static PIE, its relocations packed: see
//! [`static_glibc`]), unless `IMLAB_LINK=dynamic` is set or the C toolchain has no static
//! glibc, in which case it links glibc as a shared library as before.

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
    println!("cargo:rerun-if-env-changed=IMLAB_LINK");
    if target == "x86_64-unknown-linux-gnu"
        && profile == "release"
        && std::env::var("IMLAB_LINK").as_deref() != Ok("dynamic")
        && let Some(out_dir) = std::env::var_os("OUT_DIR")
    {
        static_glibc(Path::new(&out_dir));
    }
}

/// The C libraries rustc links `imlab` against, each with the static archives that replace it.
/// rustc asks for shared libraries (`-Bdynamic -lgcc_s ... -lc`) and a build script cannot
/// change that for one binary (`-C target-feature=+crt-static` is for every crate, and no
/// proc macro builds with it), so OUT_DIR gets a `libNAME.so` for each: a linker script naming
/// the archives (glibc's own `libc.so` is such a script), found before the system's because
/// `-L` directories are searched before the C compiler's own.
const STATIC_LIBS: &[(&str, &[&str])] = &[
    ("c", &["libc.a", "libgcc.a", "libgcc_eh.a"]),
    ("gcc_s", &["libgcc_eh.a", "libgcc.a"]),
    ("m", &["libm.a", "libc.a"]),
    ("util", &["libutil.a"]),
    ("rt", &["librt.a"]),
    ("pthread", &["libpthread.a"]),
    ("dl", &["libdl.a"]),
];

/// Links the release `imlab` as a static PIE on glibc's archives, if the C compiler has them.
///
/// Why (issue 15's memory per load-generator client, RSS over clients): a process on glibc's
/// shared libraries maps about 2.2 MB of them however little it calls (libc 1.4 MB, of which
/// even `sleep` maps 1.3 MB; libm 0.5 MB, its IFUNC resolvers run at load), and a PIE's
/// relocation table (250 KB) is read whole at start. Linked statically, only the members
/// `imlab` calls are in it, laid out with its own code by `link/symbol-order.txt`, and the
/// relocations are packed (RELR, `-z pack-relative-relocs`): the generator's 2-client
/// baseline fell from 7.0-7.4 MB to 5.1-5.7 MB (BENCHMARKS.md). Names still resolve through
/// /etc/hosts and DNS, which glibc 2.34 and later build into libc; NSS modules beyond those
/// (mDNS, LDAP) load only with the same glibc installed, and `IMLAB_LINK=dynamic` builds
/// the shared-library binary for hosts that need them.
fn static_glibc(out_dir: &Path) {
    // A static PIE starts from glibc's rcrt1.o.
    if c_library("rcrt1.o").is_none() {
        println!(
            "cargo:warning=no rcrt1.o in the C toolchain: imlab links glibc as a shared library"
        );
        return;
    }
    let dir = out_dir.join("static-glibc");
    let mut scripts = Vec::new();
    for (name, archives) in STATIC_LIBS {
        let mut paths = Vec::new();
        for archive in *archives {
            let Some(path) = c_library(archive) else {
                println!(
                    "cargo:warning=no static {archive} in the C toolchain: imlab links glibc as a shared library"
                );
                return;
            };
            paths.push(path.display().to_string());
        }
        scripts.push((
            format!("lib{name}.so"),
            format!("GROUP ( {} )\n", paths.join(" ")),
        ));
    }
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        scripts
            .iter()
            .try_for_each(|(file, script)| std::fs::write(dir.join(file), script))
    });
    if let Err(error) = written {
        println!(
            "cargo:warning=writing {}: {error}: imlab links glibc as a shared library",
            dir.display()
        );
        return;
    }
    println!("cargo:rustc-link-arg-bin=imlab=-L{}", dir.display());
    println!("cargo:rustc-link-arg-bin=imlab=-static-pie");
    println!("cargo:rustc-link-arg-bin=imlab=-Wl,-z,pack-relative-relocs");
}

/// Where the C compiler finds `file`, if it does (`cc -print-file-name` prints the bare name
/// when it does not).
fn c_library(file: &str) -> Option<std::path::PathBuf> {
    let output = Command::new("cc")
        .arg(format!("-print-file-name={file}"))
        .output()
        .ok()?;
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    (output.status.success() && path.is_absolute() && path.exists())
        .then(|| std::fs::canonicalize(&path).unwrap_or(path))
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
