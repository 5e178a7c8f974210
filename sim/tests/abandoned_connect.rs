//! A phone that gives up on a connection before its SYN gets through leaves nothing at the
//! server. On a GPRS link in a 3-minute outage a phone's connect times out (20 s) while its
//! SYN is still being retried; its kernel then sends no more, so the server never sees that
//! connection. The carrier's flow used to connect anyway once the SYN crossed, 26-52 s after
//! the phone had moved on, and deliver the Login the phone had written: the server counted
//! logins for nobody (46 for 38 at this seed), and two of them replaced the phones' newer
//! connections (`Kicked`).

use std::path::Path;

use imlab_sim::run::{RunOptions, run};
use imlab_sim::scenario::Scenario;

const GPRS_OUTAGE: &str = r#"
duration = "20m"
quiet = "5m"

[carriers.gprs]
nat_timeout = "2m"
refresh = "outbound"
on_expiry = "drop"
rtt_median = "2s"
rtt_p99 = "8s"
bandwidth_kbps = 9
loss = 0.25
max_retries = 8
outages = { every = "20m", duration = "3m", offset = "10m" }

[[devices]]
name = "gprs_users"
count = 12
carrier = "gprs"
heartbeat = "fixed:90s"
traffic = { one_to_one_per_hour = 20.0 }
"#;

#[test]
fn a_connect_the_phone_gave_up_on_never_logs_in_at_the_server() {
    let scenario = Scenario::parse(GPRS_OUTAGE, Path::new("gprs-outage.toml")).unwrap();
    let options = RunOptions {
        seed: 1,
        ..RunOptions::default()
    };
    let report = run(&scenario, &options, &mut |_| {}).unwrap();
    assert!(report.ok(), "{:?}", report.verdicts);
    let metrics = &report.metrics;
    let causes = &metrics.disconnects_by_cause;
    // The outage made phones give up on connects: the case this test is about happened.
    let gave_up = causes.get("ConnectFailed").copied().unwrap_or(0);
    assert!(gave_up >= 4, "{causes:?}");
    // The server's logins (its own counter) are the phones' (their ledger), one for one.
    let phone_logins = metrics.all.devices + metrics.all.reconnects;
    assert_eq!(metrics.server.logins, phone_logins, "{:?}", metrics.server);
    // And no phone lost a live connection to a login of its own from the past.
    assert_eq!(causes.get("Kicked"), None, "{causes:?}");
}
