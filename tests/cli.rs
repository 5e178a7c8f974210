//! End-to-end tests of the `imlab` binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use common::ChildGuard;

/// Starts `imlab serve` on an ephemeral port, guarded, and returns it and its address.
fn serve(extra: &[&str]) -> (ChildGuard, String) {
    let mut child = ChildGuard::spawn(
        Command::new(cargo_bin("imlab"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("listening: ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim()
        .to_string();
    (child, addr)
}

/// Ctrl-C, then what the server said on stderr; it must exit cleanly.
fn stop(child: ChildGuard) -> String {
    child.interrupt();
    let output = child.wait_with_output();
    assert!(
        output.status.success(),
        "serve exited with {:?}",
        output.status
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `imlab --version` names the git commit the binary was built from (the results files carry
/// the same, see `common::build_commit`), or none when it was not built from a checkout.
#[test]
fn version_names_the_commit_it_was_built_from() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8(output.stdout).unwrap().trim().to_string())
    };
    // imlab's own checkout only (sources unpacked inside another repository name none).
    let own_checkout = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        std::fs::canonicalize(top).ok() == std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).ok()
    });
    let head = own_checkout
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten();
    let commit = common::build_commit();
    match head {
        Some(head) => {
            assert!(
                commit == head || commit == format!("{head}-dirty"),
                "--version names {commit:?}, the checkout is at {head}"
            );
        }
        None => assert_eq!(commit, "", "not built from a git checkout"),
    }
}

#[test]
fn serve_accepts_a_signed_login_and_shuts_down_on_ctrl_c() {
    let (child, addr) = serve(&["--auth-secret", "s3cret"]);
    let token = Command::new(cargo_bin("imlab"))
        .args(["token", "--user", "alice", "--secret", "s3cret"])
        .output()
        .unwrap();
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply = runtime.block_on(async {
        use imlab_core::framed::{FrameReader, FrameWriter};
        use imlab_core::proto::{Body, Frame, Login};
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (read, write) = stream.into_split();
        let mut reader = FrameReader::new(read, 65_536);
        let mut writer = FrameWriter::new(write, 65_536);
        let login = Login {
            user: "alice".into(),
            device: "phone".into(),
            token,
            heartbeat_interval_max_s: 60,
            send_ack_is_copy: false,
        };
        writer.send(&Frame::new(Body::Login(login))).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    });
    assert_eq!(reply.kind(), "login_reply");
    let stderr = stop(child);
    assert!(!stderr.contains("DEV MODE"), "{stderr}");
    assert!(stderr.contains("imlab serve stopped"), "{stderr}");
}

#[test]
fn serve_without_a_secret_warns_about_dev_mode() {
    let (child, _addr) = serve(&[]);
    let stderr = stop(child);
    assert!(stderr.contains("DEV MODE"), "{stderr}");
}

#[test]
fn bad_arguments_get_clear_errors() {
    let output = Command::new(cargo_bin("imlab"))
        .args(["token", "--user", "a.b", "--secret", "s"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--user: user id \"a.b\" contains '.'"),
        "{stderr}"
    );

    let output = Command::new(cargo_bin("imlab"))
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--listen"));
}

#[test]
fn every_command_has_help_with_an_example() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["token", "--help"],
        vec!["sim", "run", "--help"],
        vec!["sim", "sweep", "--help"],
        vec!["heartbeat", "compare", "--help"],
        vec!["load", "--help"],
        vec!["load", "merge", "--help"],
        vec!["report", "--help"],
    ] {
        let output = Command::new(cargo_bin("imlab"))
            .args(&args)
            .output()
            .unwrap();
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("Example"), "{args:?}: {help}");
    }
}
