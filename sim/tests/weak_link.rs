//! A backlog on a 2G link drains within the quiet period. Found by `imlab sim fuzz --seed 7302`
//! (case 612, shrunk): five devices on a subway link cut to 8 kbit/s with 18.5% loss, sending
//! 8 KB messages. While a device synced its backlog page by page, the server pushed it every
//! new message whole, which the device dropped as a gap and fetched again in a page: its link
//! carried 1.5-1.7 times the messages' bytes and it was still behind when the checker ran
//! (`no_acked_loss` and `convergence`). The server now pushes such a device a `Notify`
//! (`push_when_behind = "notify"`, the default); the old policy, kept as `"message"`, still
//! fails the same run, which shows the test can fail.

use std::path::Path;

use imlab_sim::run::{RunOptions, run};
use imlab_sim::scenario::Scenario;

const SUBWAY_AT_8_KBPS: &str = r#"
duration = "924s"
quiet = "1500s"

[server]
store = "durable"
commit_latency = "0ms"

[carriers.c0]
preset = "subway"
loss = 0.185
bandwidth_kbps = 8

[[devices]]
name = "g0"
count = 5
carrier = "c0"
heartbeat = "wechat-legacy"
devices_per_user = 2
traffic = { one_to_one_per_hour = 111.0, group_per_hour = 54.0, group_size = 5, body_bytes = 8000 }
"#;

/// The invariants the run broke under `policy` (the scenario's `server.push_when_behind`),
/// and the pushes the server sent as a `Notify` (summed over its incarnations).
fn broken(policy: &str) -> (Vec<&'static str>, u64) {
    let text = SUBWAY_AT_8_KBPS.replace(
        "[server]\n",
        &format!("[server]\npush_when_behind = \"{policy}\"\n"),
    );
    let scenario = Scenario::parse(&text, Path::new("subway-at-8-kbps.toml")).unwrap();
    let options = RunOptions {
        seed: 399_338,
        ..RunOptions::default()
    };
    let report = run(&scenario, &options, &mut |_| {}).unwrap();
    (report.broken(), report.metrics.server.pushes_as_notify)
}

#[test]
fn a_backlog_on_a_2g_link_drains_when_pushes_past_a_gap_are_notifies() {
    let (names, as_notify) = broken("notify");
    assert_eq!(names, Vec::<&str>::new());
    // The policy took effect: results.json's server counts show the pushes it turned into
    // notifies.
    assert!(as_notify > 0, "no push went as a Notify");
}

#[test]
fn pushing_every_message_whole_leaves_the_same_link_behind() {
    let (names, as_notify) = broken("message");
    assert_eq!(as_notify, 0, "the old policy pushes whole");
    assert!(
        names.contains(&"convergence"),
        "the old policy no longer fails this run: {names:?}"
    );
}
