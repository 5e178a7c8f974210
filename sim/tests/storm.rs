//! The reconnection storm after a server crash is measured: who was logged in, how fast they
//! came back, and how many logins the server took per second. The client's jittered backoff
//! (at most 30 s plus 19 s of jitter) spreads the returns over seconds.

use std::path::Path;

use imlab_sim::run::{RunOptions, run};
use imlab_sim::scenario::Scenario;

const CRASH: &str = r#"
duration = "20m"
quiet = "2m"
[[devices]]
name = "phones"
count = 40
carrier = "us-lte"
heartbeat = "whatsapp"
traffic = { one_to_one_per_hour = 6.0 }
[[faults]]
kind = "server_crash"
at = "10m"
duration = "30s"
"#;

#[test]
fn the_storm_after_a_crash_is_measured() {
    let scenario = Scenario::parse(CRASH, Path::new("storm.toml")).unwrap();
    let options = RunOptions {
        seed: 3,
        ..RunOptions::default()
    };
    let report = run(&scenario, &options, &mut |_| {}).unwrap();
    assert!(report.ok(), "{:?}", report.verdicts);
    let storms = &report.metrics.storms;
    let [storm] = &storms.crashes[..] else {
        panic!("one crash expected: {storms:?}")
    };
    assert_eq!(storm.crashed_at_s, 600.0);
    assert_eq!(storm.restarted_at_s, Some(630.0));
    // Long NATs and no app kills: every phone was logged in at the crash, and every one
    // came back.
    assert_eq!((storm.devices_connected, storm.devices_back), (40, 40));
    assert!(storm.back_90_s.is_some(), "{storm:?}");
    let (b50, b99) = (storm.back_50_s.unwrap(), storm.back_99_s.unwrap());
    // Counted from the restart: no phone is back before the server is (a login takes its
    // round trips).
    assert!(b50 > 0.0, "{storm:?}");
    // Backoff doubles from 1 s during the 30 s outage, then waits at most 30 s + 19 s.
    assert!(b99 <= 49.0 + 1.0, "{storm:?}");
    // Jitter: the 40 do not all return in one second.
    assert!(
        storm.logins_per_s_peak > 0 && storm.logins_per_s_peak < 40,
        "{storm:?}"
    );
    // The busiest second of the whole run is the first logins or the storm.
    assert!(storms.logins_per_s_peak >= storm.logins_per_s_peak);
    // The server's own count of accepted connections (read between steps, across its two
    // incarnations) against the devices' logins: every login rode an accepted connection,
    // and the storm's accepts are at least its returns.
    let sum = |f: fn(&imlab_sim::storm::StormSecond) -> u32| -> u32 {
        storms.seconds.iter().map(f).sum()
    };
    let (logins, accepts) = (sum(|s| s.logins), sum(|s| s.accepts));
    assert!(logins >= 80, "40 first logins and 40 returns: {logins}");
    assert!(accepts >= logins, "{accepts} accepts for {logins} logins");
    let in_storm: u32 = storms
        .seconds
        .iter()
        .filter(|s| (630..=630 + 50).contains(&s.second))
        .map(|s| s.accepts)
        .sum();
    assert!(in_storm >= 40, "{in_storm} accepts after the restart");
    // The server's counters in results.json are summed over both incarnations: its logins
    // are the devices' (this carrier loses no LoginOk), and it stored every acked message
    // once, in one incarnation or the other.
    let server = &report.metrics.server;
    assert_eq!(server.logins, u64::from(logins), "{server:?}");
    assert_eq!(server.messages_stored, report.metrics.all.messages_acked);
    assert!(storm.accepts_per_s_peak >= 1, "{storm:?}");
    // Messages flowed, so the outboxes held at least a frame; no groups, no fan-out.
    assert!(storms.outbox_high_water >= 1, "{storms:?}");
    assert_eq!(storms.fanout_queue_high_water, 0);
}

/// Of 50 phones, 20 have their app killed while the server is down (restarted minutes later)
/// and 10 cycle between a minute in the foreground and a minute inactive, from a random
/// phase, so some go inactive before they are back (they drop their connection until the
/// state ends). The storm stops waiting for both kinds, which are not trying to come back, so
/// its percentiles say how fast the server took back the phones that were.
const CRASH_AND_KILL: &str = r#"
duration = "20m"
quiet = "2m"
[[devices]]
name = "kept"
count = 20
carrier = "us-lte"
heartbeat = "whatsapp"
[[devices]]
name = "killed"
count = 20
carrier = "us-lte"
heartbeat = "whatsapp"
[[devices]]
name = "asleep"
count = 10
carrier = "us-lte"
heartbeat = "whatsapp"
app_states = [
  { state = "foreground", for = "1m" },
  { state = "inactive", for = "1m" },
]
[[faults]]
kind = "server_crash"
at = "10m"
duration = "30s"
[[faults]]
kind = "app_kill"
target = "killed"
at = "10m10s"
duration = "6m"
fraction = 1.0
"#;

#[test]
fn a_storm_does_not_wait_for_phones_whose_app_was_killed() {
    let scenario = Scenario::parse(CRASH_AND_KILL, Path::new("storm_kill.toml")).unwrap();
    let options = RunOptions {
        seed: 3,
        ..RunOptions::default()
    };
    let report = run(&scenario, &options, &mut |_| {}).unwrap();
    assert!(report.ok(), "{:?}", report.verdicts);
    let [storm] = &report.metrics.storms.crashes[..] else {
        panic!("one crash expected: {:?}", report.metrics.storms)
    };
    // The 20 killed, and some of the 10 cycling: not all of those were logged in at the crash,
    // or went inactive before they were back.
    assert!(storm.devices_left > 20, "{storm:?}");
    assert!(storm.devices_left < 30, "{storm:?}");
    assert!(storm.devices_connected > 40, "{storm:?}");
    // Every phone logged in at the crash either came back or stopped trying.
    assert_eq!(
        storm.devices_back + storm.devices_left,
        storm.devices_connected,
        "{storm:?}"
    );
    // Those still trying are back within the backoff's bound; counting the killed ones, back
    // after their restart at 16m10s, or the inactive ones, back as that state ends, would put
    // 90% and 99% minutes after the restart.
    let b99 = storm.back_99_s.expect("every phone still trying came back");
    assert!(b99 <= 49.0 + 1.0, "{storm:?}");
}
