//! `imlab serve` logs periodic stats at info level, in plain text when stderr is not a
//! terminal.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use common::ChildGuard;

/// Starts `imlab serve ARGS` and reads its log until a line containing `until`: the lines
/// read, that one last. The server is killed when this returns.
fn serve_log_until(args: &[&str], until: &str) -> Vec<String> {
    let mut child = Command::new(cargo_bin("imlab"))
        .arg("serve")
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _guard = ChildGuard(child);
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        // A deadline on the event, not a sleep.
        let line = received
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no line with {until:?}; stderr so far: {seen:#?}"));
        seen.push(line.clone());
        if line.contains(until) {
            return seen;
        }
    }
}

#[test]
fn serve_logs_stats_lines_without_colour_codes() {
    // The first stats line comes after 200 ms.
    let seen = serve_log_until(
        &["--listen", "127.0.0.1:0", "--stats-every", "200ms"],
        ": stats connections=",
    );
    let stats = seen.last().unwrap();
    for line in &seen {
        assert!(!line.contains('\u{1b}'), "colour codes in a pipe: {line:?}");
    }
    assert!(stats.contains("INFO"), "{stats}");
    for field in [
        "connections=0",
        "refused_auth=0",
        "refused_expired=0",
        "login_timeouts=0",
        "messages_in_per_s=0",
        "messages_out_per_s=0",
        "slow_consumer_kicks=0",
        "fanout_queue_high_water=0",
        "outbox_high_water=0",
    ] {
        assert!(stats.contains(field), "{field} in {stats}");
    }
}

#[test]
fn serve_on_disk_logs_what_its_commits_cost() {
    // With --data-dir a second line follows each stats line: the store's commits (fsyncs) a
    // second over the interval, records a commit and the commit time's bucket bounds; "-"
    // while nothing was committed. (The counts under load: cli_metrics.rs.)
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seen = serve_log_until(
        &[
            "--listen",
            "127.0.0.1:0",
            "--stats-every",
            "200ms",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        ": store commits_per_s=",
    );
    let store = seen.last().unwrap();
    assert!(store.contains("INFO"), "{store}");
    for field in [
        "commits_per_s=0",
        "records_per_commit=\"0.0\"",
        "commit_p50_us_at_most=\"-\"",
        "commit_p99_us_at_most=\"-\"",
        "commit_max_us_at_most=\"-\"",
    ] {
        assert!(store.contains(field), "{field} in {store}");
    }
    // In memory there is no such line: the stats line comes, the store's never.
    let memory = serve_log_until(
        &["--listen", "127.0.0.1:0", "--stats-every", "100ms"],
        "messages_in_per_s=",
    );
    assert!(
        !memory.iter().any(|line| line.contains(": store ")),
        "{memory:#?}"
    );
}

#[test]
fn a_listen_backlog_beyond_the_kernels_cap_is_named_at_start() {
    // Linux caps every listen queue at net.core.somaxconn; elsewhere there is nothing to say.
    let Some(cap) = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
    else {
        return;
    };
    let listening = "imlab serve listening";
    if cap < u64::from(u32::MAX) {
        let above = (cap + 1).to_string();
        let seen = serve_log_until(
            &["--listen", "127.0.0.1:0", "--listen-backlog", &above],
            listening,
        );
        let warning = seen
            .iter()
            .find(|line| line.contains("WARN") && line.contains("somaxconn"))
            .unwrap_or_else(|| panic!("no warning about the cap: {seen:#?}"));
        assert!(
            warning.contains(&format!("holds {cap} connections")),
            "{warning}"
        );
        assert!(
            warning.contains(&format!("--listen-backlog {above}")),
            "{warning}"
        );
        assert!(
            warning.contains(&format!("sysctl -w net.core.somaxconn={above}")),
            "{warning}"
        );
    }
    // Within the cap: the warning would come before the listening line, and does not.
    let within = cap.min(u64::from(u32::MAX)).to_string();
    let seen = serve_log_until(
        &["--listen", "127.0.0.1:0", "--listen-backlog", &within],
        listening,
    );
    assert!(
        !seen.iter().any(|line| line.contains("somaxconn")),
        "{seen:#?}"
    );
}

#[test]
fn threads_sets_how_many_threads_run_connections() {
    // 1 is a current-thread runtime, N a pool of N; the start-up line says which ran.
    for (threads, said) in [("1", "threads=1"), ("3", "threads=3")] {
        let seen = serve_log_until(
            &["--listen", "127.0.0.1:0", "--threads", threads],
            "imlab serve listening",
        );
        let line = seen.last().unwrap();
        assert!(line.contains(said), "--threads {threads}: {line}");
    }
}

#[test]
fn the_start_up_line_names_the_stores_bounds() {
    let data = tempfile::tempdir().unwrap();
    let data = data.path().join("store");
    for (args, said) in [
        (
            vec![],
            "store=memory, at most 20000000 messages and 8589934592 bytes",
        ),
        (
            vec!["--max-messages", "5", "--max-stored-bytes", "1000"],
            "store=memory, at most 5 messages and 1000 bytes",
        ),
        (
            vec!["--data-dir", data.to_str().unwrap()],
            "no message limit",
        ),
    ] {
        let seen = serve_log_until(
            &[&["--listen", "127.0.0.1:0"][..], &args].concat(),
            "imlab serve listening",
        );
        let line = seen.last().unwrap();
        assert!(line.contains(said), "{args:?}: {line}");
    }
}

/// At its message bound the store refuses every send (clients see STORE_UNAVAILABLE and
/// retry), and the server says why once, not once a send.
#[test]
fn a_store_at_its_message_bound_refuses_sends_and_says_so_once() {
    let mut server = ChildGuard::spawn(
        Command::new(cargo_bin("imlab"))
            .args(["serve", "--listen", "127.0.0.1:0", "--stats-every", "0s"])
            .args(["--max-messages", "30"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().strip_prefix("listening: ").unwrap().to_string();
    let out = tempfile::tempdir().unwrap();
    let load = common::imlab(&[
        "load",
        "--target",
        &addr,
        "--clients",
        "2",
        "--msg-rate",
        "40",
        "--duration",
        "2s",
        "--drain",
        "1s",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let results = common::results(out.path());
    let messages = &results["messages"];
    assert_eq!(messages["acked"], 30, "{results} {load:?}");
    assert!(
        messages["refusals_by_cause"]["store_unavailable"].as_u64() > Some(0),
        "{results}"
    );
    server.interrupt();
    let output = server.wait_with_output();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let full: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("the store is full"))
        .collect();
    assert_eq!(full.len(), 1, "{stderr}");
    assert!(full[0].contains("30 messages stored"), "{}", full[0]);
}
