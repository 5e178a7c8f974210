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
    let dir_guard = temp_dir("cli-load-carrier", "short-nat");
    let dir = dir_guard.path();
    let results = run(dir, "fixed:3s");
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

    let dir_guard = temp_dir("cli-load-carrier", "short-heartbeat");

    let dir = dir_guard.path();
    let results = run(dir, "fixed:400ms");
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

/// Two users of two phones each; the phones' apps go inactive for a second in every 2.5 s,
/// their carrier has an outage at 2 s, and the server crashes at 30 minutes (which a load
/// generator cannot cause).
const PHONES: &str = r#"
name = "phones-lab"
duration = "1h"
[carriers.lab]
preset = "home-wifi"
loss = 0.0
[[devices]]
name = "phones"
count = 4
carrier = "lab"
heartbeat = "fixed:2s"
devices_per_user = 2
app_states = [{ state = "foreground", for = "1500ms" }, { state = "inactive", for = "1s" }]
traffic = { one_to_one_per_hour = 3600.0, body_bytes = 300 }
[[faults]]
kind = "outage"
target = "lab"
at = "2s"
duration = "500ms"
[[faults]]
kind = "server_crash"
at = "30m"
duration = "5s"
"#;

/// A directory for a scenario test, with the scenario `text` written in it as `name` and a
/// server to aim at: (the directory's guard, the file, the server's guard and address).
fn scenario_and_server(
    label: &str,
    name: &str,
    text: &str,
) -> (
    common::KeptOnPanic,
    std::path::PathBuf,
    common::ChildGuard,
    String,
) {
    let dir_guard = temp_dir("cli-load-carrier", label);
    let scenario = dir_guard.path().join(name);
    std::fs::write(&scenario, text).unwrap();
    let (server, addr) = serve_guarded(&[]);
    (dir_guard, scenario, server, addr)
}

#[test]
fn a_scenario_runs_its_devices_users_app_cycles_and_carrier_faults_on_real_sockets() {
    let (dir_guard, scenario, _server, addr) =
        scenario_and_server("scenario", "phones-lab.toml", PHONES);
    let dir = dir_guard.path();
    let out = dir.join("out");
    let trace = dir.join("trace.jsonl");
    let args = |extra: &[&str]| {
        let mut args = vec![
            "load",
            "--target",
            &addr,
            "--scenario",
            scenario.to_str().unwrap(),
            "--duration",
            "5s",
            "--drain",
            "2s",
            "--out",
            out.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
            "--traffic-scale",
            "2",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let refused = imlab(&args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    let (_, stderr) = text(&refused);
    assert!(
        !refused.status.success()
            && stderr.contains("faults[1] server_crash")
            && stderr.contains("--carrier-faults-only"),
        "{stderr}"
    );
    assert!(!out.exists(), "a refused scenario connects nothing");

    let output = imlab(
        &args(&["--carrier-faults-only"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let (stdout, stderr) = text(&output);
    assert!(
        stderr.contains("scenario phones-lab: 4 devices of 2 users")
            && stderr.contains("skipped faults[1] server_crash"),
        "{stderr}"
    );
    let results = results(&out);
    let m = &results["messages"];
    assert_eq!(results["pattern"], "scenario:phones-lab", "{results}");
    assert_eq!(results["heartbeat"], "phones=fixed:2s", "{results}");
    assert_eq!(results["clients"], 4, "{results}");
    // Four devices at 3,600 an hour each, doubled.
    assert_eq!(results["msg_rate"], 8.0, "{results}");
    assert_eq!(m["lost"], 0, "{stdout}{stderr}\n{results}");
    assert_eq!(m["duplicated"], 0, "{results}");
    let acked = m["acked"].as_u64().unwrap();
    assert!(acked > 5, "{results}");
    // Each message reaches the peer user's two phones and the sender's other phone.
    assert_eq!(
        m["expected_deliveries"].as_u64().unwrap(),
        3 * acked,
        "{results}"
    );
    assert_eq!(m["delivered"], m["expected_deliveries"], "{results}");
    // The inactive part of every app's cycle closed its connection.
    assert!(
        results["connections"]["disconnects_by_cause"]["Requested"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{results}"
    );
    // The carrier's outage was applied at its model time, on the carrier's clock.
    let outage = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|line| line["event"] == "fault")
        .expect("the outage is in the trace");
    assert_eq!(
        (&outage["kind"], &outage["t_ms"], &outage["for_ms"]),
        (&"outage".into(), &2_000.into(), &500.into())
    );
}

/// Three users of three phones each (phones 0-8), all in one chat. Over two workers (phones
/// 0-4 and 5-8) the middle user's phones are split between them, and the chat, created by
/// phone 0 once its worker's five phones are in, has members on both: at 0.75 connects a
/// second a worker, the second worker's four are in 1.3 s before, and its phones write to the
/// chat once a second each.
const SPLIT: &str = r#"
name = "split-lab"
duration = "1h"
[carriers.lab]
preset = "home-wifi"
loss = 0.0
[[devices]]
name = "phones"
count = 9
carrier = "lab"
heartbeat = "fixed:30s"
devices_per_user = 3
traffic = { one_to_one_per_hour = 3600.0, group_per_hour = 3600.0, group_size = 3, body_bytes = 200 }
"#;

/// `--scenario` over `--workers`: each worker runs its share of the devices and sends their
/// part of the one plan, so the merged run is the single-process run's: the same sends, the
/// same deliveries owed, all delivered, though a user's phones and the chat span workers.
#[test]
fn a_scenario_over_two_workers_is_the_same_plan_as_in_one_process() {
    let (dir_guard, scenario, _server, addr) =
        scenario_and_server("scenario-workers", "split-lab.toml", SPLIT);
    let dir = dir_guard.path();
    let run = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "load",
            "--target",
            &addr,
            "--scenario",
            scenario.to_str().unwrap(),
            "--duration",
            "4s",
            "--drain",
            "2s",
            "--seed",
            "7",
            "--connect-rate",
            "1.5",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let output = imlab(&args);
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        (results(out), stderr)
    };
    let (one, _) = run(&dir.join("one"), &[]);
    let (two, stderr) = run(&dir.join("two"), &["--workers", "2"]);
    assert_eq!(
        stderr.matches("scenario split-lab: 9 devices").count(),
        1,
        "described once, not by each worker: {stderr}"
    );
    // 9 phones at 2 messages a second each, for 4 s.
    assert_eq!(one["messages"]["sent"], 72, "{one}");
    for field in ["sent", "acked", "expected_deliveries", "delivered"] {
        assert_eq!(
            two["messages"][field], one["messages"][field],
            "{field}: {two}\nagainst one process: {one}"
        );
    }
    for results in [&one, &two] {
        let m = &results["messages"];
        assert_eq!(m["refused"], 0, "{results}");
        assert_eq!(m["lost"], 0, "{results}");
        assert_eq!(m["duplicated"], 0, "{results}");
        assert_eq!(m["pending"], 0, "{results}");
        assert_eq!(results["clients"], 9, "{results}");
        // Every phone is on the one carrier: its percentiles are of every delivery, those
        // that crossed between workers too.
        assert_eq!(
            results["carriers"][0]["deliver_ms"]["count"], m["delivered"],
            "{results}"
        );
    }
    // Each worker ran its share and owed the other worker deliveries.
    let worker = |k: usize| results(&dir.join(format!("two/worker-{k}")));
    assert_eq!(
        (worker(0)["clients"].clone(), worker(1)["clients"].clone()),
        (5.into(), 4.into())
    );
    for k in 0..2 {
        let owed = std::fs::metadata(dir.join(format!("two/worker-{k}/crossings-owed.bin")))
            .unwrap()
            .len();
        assert!(owed >= 32 * 10, "worker {k} owed {} deliveries", owed / 32);
    }
}

/// `--devices` scales a scenario's device groups as `sim run --devices` does, each keeping
/// its share (at least one device a group), through workers too.
#[test]
fn devices_scales_a_scenario_s_groups_in_their_shares() {
    let (dir_guard, scenario, _server, addr) =
        scenario_and_server("scenario-devices", "phones-lab.toml", PHONES);
    let dir = dir_guard.path();
    // PHONES has one group of four phones, two a user: 2 of them, then 6 over two workers.
    for (devices, workers, users) in [("2", "1", "1 users"), ("6", "2", "3 users")] {
        let out = dir.join(format!("out-{devices}"));
        let output = imlab(&[
            "load",
            "--target",
            &addr,
            "--scenario",
            scenario.to_str().unwrap(),
            "--carrier-faults-only",
            "--devices",
            devices,
            "--workers",
            workers,
            "--duration",
            "1s",
            "--drain",
            "1s",
            "--out",
            out.to_str().unwrap(),
        ]);
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        assert!(
            stderr.contains(&format!("{devices} devices of {users}")),
            "{stderr}"
        );
        assert_eq!(results(&out)["clients"].to_string(), devices);
    }
}
