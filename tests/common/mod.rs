//! Helpers shared by the end-to-end tests: the `imlab` binary, a server on loopback, results.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use assert_cmd::cargo::cargo_bin;

/// Starts `imlab serve --listen ADDR` with `extra` arguments (port 0 picks one; a fixed
/// address restarts a server on the same port); returns it and the address it listens on.
pub fn serve_on(addr: &str, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(cargo_bin("imlab"))
        .args(["serve", "--listen", addr])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let listening = line
        .trim()
        .strip_prefix("listening: ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, listening)
}

/// Runs `imlab ARGS` to the end.
pub fn imlab(args: &[&str]) -> Output {
    Command::new(cargo_bin("imlab"))
        .args(args)
        .output()
        .unwrap()
}

/// A fresh temporary directory for one test of one binary.
pub fn temp_dir(binary: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("imlab-{binary}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A load run's results.json.
pub fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}
