//! Every fault kind in the simulator, one small scenario each: the fault's effect shows in
//! the run's trace (flows cut, swallowed, rebound; acks held back by a stalled server or
//! disk; refused commits and the restart after a disk failure; expired tokens refused and
//! renewed after a device clock jump), and no invariant breaks.
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
    check_scenario(name, &scenario(faults))
}

/// Runs `scenario` on seed 1; asserts every invariant holds.
fn check_scenario(name: &str, scenario: &Scenario) -> Seen {
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
    let report = run_with(scenario, &options, &mut |_| {}, &mut |shared| {
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
    // Sends were acked before the blackhole, and nothing is acked while every flow is
    // swallowed (after the first seconds' in-flight).
    assert!(seen.between("acked", 0, 120_000) > 0);
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

/// Four devices whose tokens live 10 minutes; every flow is reset at 15 min, so each device
/// logs in again after its first token expired; `jump` is a clock_jump fault's `by`, if any.
fn expiring_tokens(jump: Option<&str>) -> Scenario {
    let jump = jump.map_or(String::new(), |by| {
        format!(
            "[[faults]]\nkind = \"clock_jump\"\ntarget = \"chatty\"\nat = \"1m\"\nby = \"{by}\""
        )
    });
    let text = format!(
        r#"
duration = "20m"
quiet = "2m"

[server]
token_lifetime = "10m"

[carriers.lte]
preset = "us-lte"
loss = 0.0

[[devices]]
name = "chatty"
count = 4
carrier = "lte"
heartbeat = "fixed:30s"
traffic = {{ one_to_one_per_hour = 120.0 }}

[[faults]]
kind = "reset"
target = "lte"
at = "15m"

{jump}
"#
    );
    Scenario::parse(&text, Path::new("clock-jump-test.toml")).unwrap()
}

impl Seen {
    /// Logins the server refused as expired, and tokens renewed for the reason given, in
    /// [from_ms, to_ms).
    fn tokens(&self, from_ms: u64, to_ms: u64) -> (usize, usize, usize) {
        let within = |l: &Value| (from_ms..to_ms).contains(&l["at_ms"].as_u64().unwrap());
        let what = |l: &Value, text: &str| {
            l["event"] == "app" && l["what"].as_str().unwrap().starts_with(text)
        };
        let refused = self.count(|l| {
            within(l)
                && l["event"] == "disconnected"
                && l["cause"]
                    .as_str()
                    .unwrap()
                    .starts_with("LoginFailed(TokenExpired, \"token expired at unix time")
        });
        let missing = self.count(|l| within(l) && what(l, "token renewed (Missing)"));
        let expiring = self.count(|l| within(l) && what(l, "token renewed (Expiring)"));
        (refused, missing, expiring)
    }
}

#[test]
fn a_device_clock_jump_back_keeps_an_expired_token_the_server_refuses_then_renews() {
    const RESET_MS: u64 = 15 * 60_000;
    const HEAL_MS: u64 = 20 * 60_000;
    // Right clocks: at the reconnect each device sees its token expired and renews first.
    let right = check_scenario("clock-right", &expiring_tokens(None));
    assert_eq!(
        right.tokens(0, 60_000),
        (0, 4, 0),
        "first logins get tokens"
    );
    assert_eq!(right.tokens(RESET_MS, HEAL_MS), (0, 0, 4));
    // Two hours behind: each device thinks its token has 1 h 55 min left and logs in with
    // it; the server refuses it as expired, naming the times; the device renews and is back.
    let behind = check_scenario("clock-behind", &expiring_tokens(Some("-2h")));
    assert_eq!(behind.tokens(RESET_MS, HEAL_MS), (4, 4, 0));
    let jumps = behind.count(|l| l["event"] == "fault" && l["what"] == "clock_jump -7200000ms x4");
    assert_eq!(jumps, 1);
    let back = behind.count(|l| {
        let at = l["at_ms"].as_u64().unwrap();
        l["event"] == "connected" && (RESET_MS..RESET_MS + 60_000).contains(&at)
    });
    assert_eq!(back, 4, "every device logged in again within a minute");
    // Three hours ahead: every login renews (the device's clock calls every token
    // expired), the server accepts them all.
    let ahead = check_scenario("clock-ahead", &expiring_tokens(Some("+3h")));
    let (refused, _, expiring) = ahead.tokens(60_000, HEAL_MS + 120_000);
    assert_eq!(refused, 0);
    assert!(expiring >= 8, "{expiring}");
}
