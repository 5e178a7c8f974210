//! `imlab load --carrier`: the carrier model on every connection, in process. A NAT shorter
//! than the heartbeat silences connections (a `drop` carrier): clients notice by their
//! heartbeat timeout and reconnect, and nothing acked is lost; with a heartbeat shorter than
//! the NAT, nothing of that happens.

mod common;

use common::{imlab, results, serve_guarded, temp_dir, text};

/// A quick carrier whose NAT forgets an idle flow after 1 s and then drops silently.
const SHORT_NAT: &str = "nat_timeout = \"1s\"\non_expiry = \"drop\"\nrefresh = \"outbound\"\n\
    rtt_median = \"10ms\"\nrtt_p99 = \"30ms\"\nbandwidth_kbps = 100000\nloss = 0.0\n";

fn run(dir: &std::path::Path, heartbeat: &str) -> serde_json::Value {
    let (_server, addr) = serve_guarded(&[]);
    let carrier = dir.join("short-nat.toml");
    std::fs::write(&carrier, SHORT_NAT).unwrap();
    let out = dir.join("out");
    let trace = dir.join("trace.jsonl");
    let output = imlab(&[
        "load",
        "--target",
        &addr,
        "--clients",
        "20",
        "--connect-rate",
        "200",
        "--duration",
        "5s",
        "--msg-rate",
        "4",
        "--heartbeat",
        heartbeat,
        "--heartbeat-timeout",
        "1s",
        "--carrier",
        &format!("{}:1", carrier.display()),
        "--trace",
        trace.to_str().unwrap(),
        "--drain",
        "2s",
        "--reconnect-wait",
        "5s",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&output);
    let results = results(&out);
    assert_eq!(
        results["messages"]["lost"], 0,
        "{stdout}{stderr}\n{results}"
    );
    assert_eq!(results["messages"]["duplicated"], 0, "{results}");
    assert!(
        stdout.contains("carrier ") && stdout.contains("silent"),
        "the summary splits by carrier: {stdout}"
    );
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        page.contains("short-nat.toml"),
        "the page names the carrier"
    );
    let lines = std::fs::read_to_string(&trace).unwrap();
    assert!(
        lines.lines().any(|l| l.contains("\"event\":\"opened\"")),
        "the trace logs the flows"
    );
    results
}

#[test]
fn a_nat_shorter_than_the_heartbeat_shows_silent_disconnects_and_a_shorter_heartbeat_none() {
    let dir = temp_dir("cli-load-carrier", "short-nat");
    let results = run(&dir, "fixed:3s");
    let carrier = &results["carriers"][0];
    assert_eq!(carrier["clients"], 20, "{results}");
    assert!(
        carrier["model"]["nat_expired"].as_u64().unwrap() > 0,
        "{results}"
    );
    assert!(
        carrier["silent_disconnects"].as_u64().unwrap() > 0,
        "{results}"
    );
    assert!(carrier["reconnects"].as_u64().unwrap() > 0, "{results}");
    assert_eq!(
        carrier["disconnects_by_cause"]["HeartbeatTimeout"], carrier["silent_disconnects"],
        "a dropping NAT is noticed by the heartbeat: {results}"
    );

    let dir = temp_dir("cli-load-carrier", "short-heartbeat");
    let results = run(&dir, "fixed:400ms");
    let carrier = &results["carriers"][0];
    assert_eq!(carrier["model"]["nat_expired"], 0, "{results}");
    assert_eq!(carrier["silent_disconnects"], 0, "{results}");
    assert_eq!(carrier["reconnects"], 0, "{results}");
    assert_eq!(
        results["messages"]["delivered"],
        results["messages"]["expected_deliveries"]
    );
}

#[test]
fn a_bad_carrier_is_refused_before_anything_connects() {
    let output = imlab(&[
        "load",
        "--target",
        "127.0.0.1:9",
        "--clients",
        "2",
        "--duration",
        "1s",
        "--carrier",
        "cmcc-3g:0.5,nope-4g",
    ]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nope-4g"), "{stderr}");
}
