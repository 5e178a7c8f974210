//! `imlab serve` logs periodic stats at info level, in plain text when stderr is not a
//! terminal.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use common::ChildGuard;

#[test]
fn serve_logs_stats_lines_without_colour_codes() {
    let mut child = Command::new(cargo_bin("imlab"))
        .args(["serve", "--listen", "127.0.0.1:0", "--stats-every", "200ms"])
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
    let stats = loop {
        // A deadline on the event, not a sleep: the first stats line comes after 200 ms.
        let line = received
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no stats line; stderr so far: {seen:#?}"));
        seen.push(line.clone());
        if line.contains(": stats connections=") {
            break line;
        }
    };
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
