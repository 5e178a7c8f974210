//! `imlab load` says why a run did not go through: refused logins end the run with their
//! cause, refused sends are counted, Ctrl-C still writes the results and the page, and bad
//! input is refused naming the flag before anything connects. Every target is on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use assert_cmd::cargo::cargo_bin;
use common::{ChildGuard, closed_port, imlab, results, serve_guarded, text};

#[test]
fn refused_logins_end_the_run_with_the_cause() {
    let (_server, addr) = serve_guarded(&["--auth-secret", "s3cret"]);
    let out = tempfile::tempdir().unwrap();
    // An hour of sends planned: only an early end lets this test finish.
    let output = Command::new(cargo_bin("imlab"))
        .args([
            "load",
            "--target",
            &addr,
            "--clients",
            "20",
            "--duration",
            "1h",
        ])
        .args(["--msg-rate", "10", "--out", out.path().to_str().unwrap()])
        .env_remove("IMLAB_AUTH_SECRET")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "no client could log in to {addr}: logins failed: auth failed"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("--auth-secret"),
        "advice names the flag: {stderr}"
    );
    let results = results(out.path());
    let connections = &results["connections"];
    assert!(
        connections["login_failures_by_cause"]["auth_failed"].as_u64() >= Some(10),
        "{results}"
    );
    assert_eq!(connections["opened"], 0, "{results}");
    assert_eq!(connections["clients_refused"], 20, "{results}");
    assert_eq!(results["messages"]["sent"], 0, "{results}");
}

/// The generator's devices sign their own tokens with `--auth-secret` (one issuer shared by
/// every device, each token minted at its device's first login): a server with the same
/// secret lets every one of them in.
#[test]
fn signed_logins_get_every_client_in() {
    let (_server, addr) = serve_guarded(&["--auth-secret", "s3cret"]);
    let out = tempfile::tempdir().unwrap();
    // The flag names the secret, whatever the environment says.
    let output = imlab(&[
        "load",
        "--target",
        &addr,
        "--clients",
        "6",
        "--duration",
        "1s",
        "--msg-rate",
        "20",
        "--drain",
        "2s",
        "--auth-secret",
        "s3cret",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let results = results(out.path());
    let connections = &results["connections"];
    assert_eq!(connections["opened"], 6, "{results}");
    assert_eq!(connections["clients_refused"], 0, "{results}");
    let messages = &results["messages"];
    assert!(messages["sent"].as_u64() >= Some(10), "{results}");
    assert_eq!(messages["delivered"], messages["sent"], "{results}");
}

#[test]
fn nothing_listening_is_connection_refused() {
    let addr = closed_port();
    let output = imlab(&[
        "load",
        "--target",
        &addr,
        "--clients",
        "10",
        "--duration",
        "1h",
    ]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("logins failed: connection refused"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing listens there"), "{stderr}");
}

#[test]
fn sends_the_server_refuses_are_counted_and_shown() {
    // 5 sends a second per user; 2 clients asked for 200 a second.
    let (_server, addr) = serve_guarded(&["--max-sends-per-user", "5"]);
    let out = tempfile::tempdir().unwrap();
    let output = imlab(&[
        "load",
        "--target",
        &addr,
        "--clients",
        "2",
        "--duration",
        "2s",
        "--msg-rate",
        "200",
        "--drain",
        "1s",
        "--reconnect-wait",
        "1s",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(3),
        "incomplete: {stdout}{stderr}"
    );
    let results = results(out.path());
    let messages = &results["messages"];
    let refusals = messages["refusals_by_cause"]["rate_limited"]
        .as_u64()
        .unwrap_or(0);
    assert!(refusals > 0, "{results}");
    let (sent, acked) = (
        messages["sent"].as_u64().unwrap(),
        messages["acked"].as_u64().unwrap(),
    );
    let (refused, unacked) = (
        messages["refused"].as_u64().unwrap(),
        messages["unacked"].as_u64().unwrap(),
    );
    assert!(refused > 0, "{results}");
    assert_eq!(
        acked + refused + unacked + messages["failed"].as_u64().unwrap(),
        sent,
        "every send is accounted for: {results}"
    );
    // No more acked than the budget let through: per user a burst of one second's worth,
    // then 5 a second over the run (and a second's slack for the two clocks), where 400
    // sends were asked for. A refusal counted as an ack would break this.
    let elapsed_s = results["elapsed_s"].as_f64().unwrap();
    let budget = 2.0 * 5.0 * (1.0 + elapsed_s + 1.0);
    assert!(
        (acked as f64) <= budget && sent >= 300,
        "{acked} acked of {sent}, budget {budget}: {results}"
    );
    assert_eq!(messages["lost"], 0, "{results}");
    assert!(
        stdout.contains("sends refused by the server (each retry counts): rate limited"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "INCOMPLETE: {refused} sends refused by the server"
        )),
        "{stdout}"
    );
}

#[test]
fn the_first_ctrl_c_finishes_the_summary_results_and_page() {
    let (_server, addr) = serve_guarded(&[]);
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(cargo_bin("imlab"))
        .args([
            "load",
            "--target",
            &addr,
            "--clients",
            "10",
            "--duration",
            "1h",
        ])
        .args(["--msg-rate", "50", "--out", out.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard(child);
    // Wait for the event, not for a time: stderr says when the sends have started.
    let mut lines = stderr.lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("imlab load (imlab over tcp): send at") {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|l| l.starts_with("imlab load (imlab over tcp): send at")),
        "{seen:?}"
    );
    guard.interrupt();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let mut guard = guard;
    let status = guard.0.wait().unwrap();
    let summary = std::io::read_to_string(stdout).unwrap();
    assert!(
        rest.iter()
            .any(|l| l.contains("interrupted; finishing the results")),
        "{rest:?}"
    );
    assert_eq!(status.code(), Some(3), "{summary}{rest:?}");
    assert!(summary.contains("messages: sent"), "{summary}");
    // A send made just before the interrupt may be unacked too; the line says both.
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("INCOMPLETE:") && l.contains("interrupted after")),
        "{summary}"
    );
    let results = results(out.path());
    assert_eq!(results["phase"], "interrupted", "{results}");
    assert_eq!(results["messages"]["lost"], 0, "{results}");
    let page = std::fs::read_to_string(out.path().join("index.html")).unwrap();
    assert!(page.contains("Reproduce"), "the page is written");
}

#[test]
fn results_record_how_to_reproduce_the_run() {
    let (_server, addr) = serve_guarded(&[]);
    let out = tempfile::tempdir().unwrap();
    let args = [
        "load",
        "--target",
        &addr,
        "--clients",
        "4",
        "--duration",
        "1s",
        "--msg-rate",
        "20",
        "--drain",
        "1s",
        "--seed",
        "42",
        "--out",
        out.path().to_str().unwrap(),
    ];
    let output = imlab(&args);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let results = results(out.path());
    let provenance = &results["provenance"];
    assert_eq!(provenance["seed"], 42, "{results}");
    assert_eq!(provenance["duration_s"], 1.0, "{results}");
    assert_eq!(
        provenance["version"],
        env!("CARGO_PKG_VERSION"),
        "{results}"
    );
    assert_eq!(provenance["commit"], common::build_commit(), "{results}");
    let command: Vec<&str> = provenance["command_line"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&command[1..], &args[..], "{results}");
    assert_eq!(results["phase"], "done");
    let page = std::fs::read_to_string(out.path().join("index.html")).unwrap();
    assert!(page.contains("Seed <strong>42</strong>"), "{page}");
    assert!(
        page.contains(&format!("load --target {addr} --clients 4")),
        "{page}"
    );
}

/// Runs `imlab load ARGS` expecting a usage error that contains every fragment.
fn refused(args: &[&str], fragments: &[&str]) {
    let mut full = vec!["load"];
    full.extend_from_slice(args);
    let output = imlab(&full);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{args:?} ran: {stdout}");
    for fragment in fragments {
        assert!(
            stderr.contains(fragment),
            "{args:?}: {stderr:?} lacks {fragment:?}"
        );
    }
}

#[test]
fn bad_input_is_refused_naming_the_flag() {
    let base = ["--duration", "1s"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args
    };
    refused(
        &with(&["--target", "127.0.0.1:7400", "--clients", "-10"]),
        &["'--clients <CLIENTS>'", "-10", "at least 1"],
    );
    refused(
        &with(&[
            "--target",
            "127.0.0.1:7400",
            "--clients",
            "2",
            "--msg-rate=-5",
        ]),
        &["'--msg-rate <MSG_RATE>'", "-5", "0 or a positive number"],
    );
    refused(
        &with(&["--target", "127.0.0.1", "--clients", "2"]),
        &["--target", "no port", "e.g. 127.0.0.1:7400"],
    );
    refused(
        &with(&["--target", "127.0.0.1:99999", "--clients", "2"]),
        &[
            "--target",
            "port 99999 is not in 1..=65535",
            "e.g. 127.0.0.1:7400",
        ],
    );
    refused(
        &with(&[
            "--target",
            "127.0.0.1:7400",
            "--clients",
            "2",
            "--auth-secret",
            "",
        ]),
        &["--auth-secret", "is empty"],
    );
    for (backoff, says) in [
        ("1s,30s", "give INITIAL,CAP,JITTER"),
        ("0s,30s,1s", "INITIAL \"0s\": must be positive"),
        ("5s,1s,0s", "CAP \"1s\" is below INITIAL \"5s\""),
        ("1s,30s,soon", "JITTER \"soon\""),
    ] {
        refused(
            &with(&[
                "--target",
                "127.0.0.1:7400",
                "--clients",
                "2",
                "--reconnect-backoff",
                backoff,
            ]),
            &["'--reconnect-backoff <INITIAL,CAP,JITTER>'", says],
        );
    }
    // A name is resolved at start; one that does not resolve is named (nothing is sent).
    refused(
        &with(&["--target", "im.nowhere.invalid:7400", "--clients", "2"]),
        &["--target im.nowhere.invalid:7400: cannot resolve"],
    );
}
