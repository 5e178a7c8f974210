//! Every fault kind in the simulator, one small scenario each: the fault's effect shows in
//! the run's trace (flows cut, swallowed, rebound; acks held back by a stalled server or
//! disk; refused commits and the restart after a disk failure), and no invariant breaks.
//! The carrier model's own tests (imlab-carrier `tests/faults.rs`) measure each link fault
//! precisely; these check that the simulator carries them out.

use std::path::Path;
use std::sync::atomic::Ordering;

use imlab_sim::run::{RunOptions, run_with};
use imlab_sim::scenario::Scenario;
use serde_json::Value;

/// Four chatty devices on a clean LTE carrier for 6 minutes, plus `faults` (TOML).
fn scenario(faults: &str) -> Scenario {
    let text = format!(
        r#"
duration = "6m"
quiet = "2m"

[server]
store = "durable"

[carriers.lte]
preset = "us-lte"
loss = 0.0

[[devices]]
name = "chatty"
count = 4
carrier = "lte"
heartbeat = "fixed:30s"
traffic = {{ one_to_one_per_hour = 240.0 }}

{faults}
"#
    );
    Scenario::parse(&text, Path::new("faults-test.toml")).unwrap()
}

/// What a run shows: its trace lines, and commits a disk failure refused.
struct Seen {
    lines: Vec<Value>,
    failed_commits: u64,
}

impl Seen {
    fn count(&self, test: impl Fn(&Value) -> bool) -> usize {
        self.lines.iter().filter(|line| test(line)).count()
    }

    fn between(&self, event: &str, from_ms: u64, to_ms: u64) -> usize {
        self.count(|line| {
            let at = line["at_ms"].as_u64().unwrap();
            line["event"] == event && from_ms <= at && at < to_ms
        })
    }

    /// The median time from queueing a send in [from_ms, to_ms) to its ack.
    fn ack_ms_median(&self, from_ms: u64, to_ms: u64) -> u64 {
        let mut queued = std::collections::BTreeMap::new();
        let mut waits = Vec::new();
        for line in &self.lines {
            let at = line["at_ms"].as_u64().unwrap();
            let id = line["client_msg_id"]
                .as_str()
                .map(|id| (line["device"].clone(), id));
            match (line["event"].as_str(), id) {
                (Some("send_queued"), Some((device, id))) if (from_ms..to_ms).contains(&at) => {
                    queued.insert((device.to_string(), id.to_string()), at);
                }
                (Some("acked"), Some((device, id))) => {
                    if let Some(sent) = queued.remove(&(device.to_string(), id.to_string())) {
                        waits.push(at - sent);
                    }
                }
                _ => {}
            }
        }
        assert!(waits.len() >= 5, "only {} sends acked", waits.len());
        waits.sort_unstable();
        waits[waits.len() / 2]
    }

    fn ended(&self, why: &str) -> usize {
        self.count(|line| line["event"] == "flow_ended" && line["why"] == why)
    }
}

/// Runs `faults` on seed 1; asserts every invariant holds.
fn check(name: &str, faults: &str) -> Seen {
    let scenario = scenario(faults);
    let trace_dir = tempfile::Builder::new()
        .prefix(&format!("imlab-faults-{name}-"))
        .tempdir()
        .unwrap();
    let trace_file = trace_dir.path().join("trace.jsonl");
    let options = RunOptions {
        seed: 1,
        trace_file: Some(trace_file.clone()),
        ..RunOptions::default()
    };
    let mut failed_commits = 0;
    let report = run_with(&scenario, &options, &mut |_, _| {}, &mut |shared| {
        failed_commits = shared.failed_commits.load(Ordering::Relaxed);
    })
    .unwrap();
    assert!(report.ok(), "{name}: {:?}", report.verdicts);
    let text = std::fs::read_to_string(&trace_file).unwrap();
    Seen {
        lines: text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        failed_commits,
    }
}

#[test]
fn a_reset_cuts_every_open_flow_at_its_instant() {
    let seen = check(
        "reset",
        "[[faults]]\nkind = \"reset\"\ntarget = \"lte\"\nat = \"2m\"",
    );
    // Each device's IM and push flows, both sides.
    assert!(
        seen.ended("carrier_reset") >= 2 * 8,
        "{}",
        seen.ended("carrier_reset")
    );
}

#[test]
fn max_age_cuts_old_flows_again_and_again() {
    let seen = check(
        "max_age",
        "[[faults]]\nkind = \"max_age\"\ntarget = \"lte\"\nat = \"1m\"\nduration = \"5m\"\nage = \"1m\"",
    );
    // Flows are cut every minute or so from 1 min to 6 min: several rounds of 8 flows.
    assert!(
        seen.ended("carrier_reset") >= 3 * 2 * 8,
        "{}",
        seen.ended("carrier_reset")
    );
}

#[test]
fn close_after_bytes_closes_busy_flows() {
    let seen = check(
        "close_after_bytes",
        "[[faults]]\nkind = \"close_after_bytes\"\ntarget = \"lte\"\nat = \"1m\"\nduration = \"4m\"\nbytes = 2000",
    );
    assert!(
        seen.ended("carrier_closed") >= 4,
        "{}",
        seen.ended("carrier_closed")
    );
}

#[test]
fn a_nat_rebind_leaves_half_open_server_sides_and_devices_reconnect() {
    let seen = check(
        "nat_rebind",
        "[[faults]]\nkind = \"nat_rebind\"\ntarget = \"lte\"\nat = \"2m\"",
    );
    let rebound = seen.count(|l| l["event"] == "flow_fault" && l["fault"] == "nat_rebind");
    assert!(rebound >= 8, "{rebound}");
    // The phones' next packets are answered with a RST.
    assert!(seen.ended("nat_rst") >= 4, "{}", seen.ended("nat_rst"));
}

#[test]
fn a_blackhole_swallows_flows_until_the_devices_give_up_on_them() {
    let seen = check(
        "blackhole",
        "[[faults]]\nkind = \"blackhole\"\ntarget = \"lte\"\nat = \"2m\"\nduration = \"1m\"",
    );
    let swallowed = seen.count(|l| l["event"] == "flow_fault" && l["fault"] == "blackhole");
    assert!(swallowed >= 4, "{swallowed}");
    // Nothing is acked while every flow is swallowed (after the first seconds' in-flight).
    assert_eq!(seen.between("acked", 125_000, 180_000), 0);
}

#[test]
fn link_faults_slow_and_thin_the_link_and_lose_in_bursts() {
    // A latency spike, a bandwidth drop, a loss burst and a slow close at once: the run stays
    // correct, and a send in the window waits for its ack at least the spike's 3 s each way.
    let faults = r#"
[[faults]]
kind = "latency_spike"
target = "lte"
at = "2m"
duration = "2m"
added = "3s"
jitter = "1s"

[[faults]]
kind = "bandwidth"
target = "lte"
at = "2m"
duration = "2m"
kbps = 2

[[faults]]
kind = "loss_burst"
target = "lte"
at = "2m"
duration = "2m"
p_enter_bad = 0.1
p_leave_bad = 0.3

[[faults]]
kind = "slow_close"
target = "lte"
at = "2m"
duration = "2m"
delay = "20s"
"#;
    let faulty = check("link", faults);
    let clean = check("clean", "");
    let faulty = faulty.ack_ms_median(125_000, 235_000);
    let clean = clean.ack_ms_median(125_000, 235_000);
    assert!(faulty >= 6_000, "median ack {faulty} ms with the faults");
    assert!(clean < 1_000, "median ack {clean} ms without");
}

#[test]
fn a_server_stall_holds_every_answer_until_it_thaws() {
    let seen = check(
        "server_stall",
        "[[faults]]\nkind = \"server_stall\"\nat = \"2m\"\nduration = \"40s\"",
    );
    assert_eq!(seen.between("acked", 120_500, 160_000), 0);
    assert_eq!(seen.between("delivered", 120_500, 160_000), 0);
    let answered = seen.count(|l| {
        let at = l["at_ms"].as_u64().unwrap();
        l["event"] == "heartbeat" && l["answered"] == true && (120_500..160_000).contains(&at)
    });
    assert_eq!(answered, 0, "a frozen server answered heartbeats");
    assert!(seen.between("acked", 160_000, 240_000) > 0);
}

#[test]
fn a_disk_stall_holds_acks_while_the_server_still_answers_heartbeats() {
    let seen = check(
        "disk_stall",
        "[[faults]]\nkind = \"disk_stall\"\nat = \"2m\"\nduration = \"40s\"",
    );
    assert_eq!(seen.between("acked", 120_500, 160_000), 0);
    let answered = seen.count(|l| {
        let at = l["at_ms"].as_u64().unwrap();
        l["event"] == "heartbeat" && l["answered"] == true && (120_500..160_000).contains(&at)
    });
    assert!(
        answered > 0,
        "the server stopped answering during a disk stall"
    );
    // The stalled sends are acked when the disk comes back.
    assert!(seen.between("acked", 160_000, 161_000) > 0);
}

#[test]
fn a_disk_failure_refuses_commits_and_the_server_restarts_over_the_disk() {
    let seen = check(
        "disk_failure",
        "[[faults]]\nkind = \"disk_failure\"\nat = \"2m\"\nduration = \"30s\"",
    );
    assert!(seen.failed_commits > 0);
    let restarts = seen.count(|l| l["event"] == "fault" && l["what"] == "server_restart");
    assert_eq!(restarts, 1);
    assert!(seen.between("acked", 155_000, 300_000) > 0);
}
