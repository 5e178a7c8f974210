//! Helpers shared by the end-to-end tests: the `imlab` binary, a server on loopback, results.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use assert_cmd::cargo::cargo_bin;

/// Starts `imlab serve --listen ADDR` with `extra` arguments (port 0 picks one; a fixed
/// address restarts a server on the same port), guarded; returns it and the address it
/// listens on.
pub fn serve_on(addr: &str, extra: &[&str]) -> (ChildGuard, String) {
    let mut child = ChildGuard(
        Command::new(cargo_bin("imlab"))
            .args(["serve", "--listen", addr])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
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

/// Starts `imlab ARGS`, guarded, its stdout and stderr piped (read them through the guard:
/// `wait_for_stderr_line`, `wait_with_output`).
pub fn imlab_spawned(args: &[&str]) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(cargo_bin("imlab"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// Polls `done` every 50 ms until it holds; panics naming `what` after `deadline`.
pub fn wait_until(deadline: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + deadline;
    while !done() {
        assert!(
            std::time::Instant::now() < until,
            "no {what} within {deadline:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A fresh temporary directory for one test of one binary, removed when dropped (kept,
/// with its path printed, when the test panics, so a failure can be looked at).
pub fn temp_dir(binary: &str, name: &str) -> KeptOnPanic {
    KeptOnPanic(Some(
        tempfile::Builder::new()
            .prefix(&format!("imlab-{binary}-{name}-"))
            .tempdir()
            .unwrap(),
    ))
}

/// A temporary directory that survives a failing test.
pub struct KeptOnPanic(Option<tempfile::TempDir>);

impl KeptOnPanic {
    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("held until dropped").path()
    }
}

impl Drop for KeptOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("kept for the failing test: {}", dir.keep().display());
        }
    }
}

/// The commit `imlab --version` names (what results files must carry): the text in its
/// parentheses, empty when it names none.
pub fn build_commit() -> String {
    let output = imlab(&["--version"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    match text.trim().split_once(" (") {
        Some((_, commit)) => commit.strip_suffix(')').unwrap().to_string(),
        None => String::new(),
    }
}

/// The build as `sim run` and `sim sweep` print it: `build_commit()`, or "unnamed".
pub fn build_name() -> String {
    match build_commit() {
        commit if commit.is_empty() => "unnamed".to_string(),
        commit => commit,
    }
}

/// A load run's results.json.
pub fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

/// A child process killed (and reaped) when the guard is dropped, so a failing assertion
/// never leaves a server or a load run behind.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Spawns `command`, guarded.
    pub fn spawn(command: &mut Command) -> ChildGuard {
        ChildGuard(command.spawn().unwrap())
    }

    /// SIGKILL, and the child reaped: a crash, nothing said to anyone.
    pub fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// Waits for the child to exit and collects what it wrote to its piped stdout and stderr,
    /// as `Child::wait_with_output` does, with the child still in its guard meanwhile.
    pub fn wait_with_output(mut self) -> Output {
        let stderr = self.0.stderr.take().map(|mut stderr| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                stderr.read_to_end(&mut bytes).unwrap();
                bytes
            })
        });
        let mut stdout = Vec::new();
        if let Some(mut pipe) = self.0.stdout.take() {
            pipe.read_to_end(&mut stdout).unwrap();
        }
        let status = self.0.wait().unwrap();
        let stderr = stderr
            .map(|reader| reader.join().unwrap())
            .unwrap_or_default();
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Reads the child's piped stderr on a thread until its end, and returns once a line
    /// contains `marker` (panics after `deadline` without one, or with every line read if the
    /// pipe ends first); the thread's result is every line read. The pipe is drained to the
    /// end, so the child never blocks on it.
    pub fn wait_for_stderr_line(
        &mut self,
        marker: &'static str,
        deadline: std::time::Duration,
    ) -> std::thread::JoinHandle<Vec<String>> {
        let stderr = self.0.stderr.take().expect("stderr piped");
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(marker) {
                    let _ = seen_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        match seen.recv_timeout(deadline) {
            Ok(()) => reader,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!(
                "stderr ended without a line with {marker:?}: {:#?}",
                reader.join().unwrap()
            ),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("no stderr line with {marker:?} within {deadline:?}")
            }
        }
    }

    /// Sends SIGINT (what Ctrl-C sends) to the child.
    pub fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -INT failed");
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `imlab serve` on an ephemeral loopback port, guarded; returns it and its address.
pub fn serve_guarded(extra: &[&str]) -> (ChildGuard, String) {
    serve_on("127.0.0.1:0", extra)
}

/// A loopback port with nothing listening on it (bound, then released).
pub fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts `imlab serve --listen 127.0.0.1:0` with `extra` arguments, guarded, and reads the
/// first `n_lines` lines it prints (`listening: ADDR`, then `listening ws: ADDR`,
/// `metrics: URL`...); returns the value after each line's `: `.
pub fn serve_announcing(extra: &[&str], n_lines: usize) -> (ChildGuard, Vec<String>) {
    let mut child = Command::new(cargo_bin("imlab"))
        .args(["serve", "--listen", "127.0.0.1:0", "--stats-every", "0s"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard(child);
    let mut reader = BufReader::new(stdout);
    let mut values = Vec::new();
    for _ in 0..n_lines {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let (_, value) = line
            .trim()
            .split_once(": ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        values.push(value.to_string());
    }
    (guard, values)
}

/// Writes a self-signed certificate for 127.0.0.1 and localhost and its key to `dir`;
/// returns (cert.pem, key.pem).
pub fn write_identity(dir: &Path) -> (PathBuf, PathBuf) {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (cert, key)
}
