//! WeChat's observation about OS push channels (`scenarios/offline-push.toml`, cut to 80
//! minutes, seed 3): on China Mobile's 5-minute NAT a channel kept with GCM's 28-minute
//! heartbeat is dead most of the time, so the push service writes wake-ups into channels
//! that never deliver them; on home Wi-Fi (15-minute heartbeat, long NAT) they arrive.

use std::time::Duration;

use imlab_sim::run::{RunOptions, run};
use imlab_sim::scenario::Scenario;

#[test]
fn wake_ups_written_into_a_channel_behind_an_expired_nat_never_arrive() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/offline-push.toml"
    );
    let mut scenario = Scenario::load(file.as_ref()).unwrap();
    // Before the scenario's push outage: every notice reaches the push service's channels.
    scenario.duration = Duration::from_secs(80 * 60);
    let report = run(
        &scenario,
        &RunOptions {
            seed: 3,
            ..RunOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(report.ok(), "{:?}", report.verdicts);
    let metrics = &report.metrics;
    let group = |name| metrics.group(name).expect(name);
    let (cmcc, wifi) = (group("cmcc_sleepers"), group("wifi_sleepers"));
    // Every device has a channel registered, and no outage: nothing is lost at the service.
    assert_eq!(metrics.wakeups_lost, 0, "{metrics:?}");
    // Wi-Fi: every wake-up written arrives.
    assert!(wifi.wakeups_written >= 4, "{wifi:?}");
    assert_eq!(wifi.wakeups, wifi.wakeups_written, "{wifi:?}");
    // China Mobile: most are written into channels whose NAT mapping is gone.
    assert!(cmcc.wakeups_written >= 4, "{cmcc:?}");
    assert!(
        cmcc.wakeups * 2 < cmcc.wakeups_written,
        "most of China Mobile's wake-ups should be swallowed: {cmcc:?}"
    );
    assert!(metrics.push_channel_silent_disconnects > 0, "{metrics:?}");
    // One device a user: a notice is written to at most one channel.
    assert!(
        metrics.all.wakeups_written <= metrics.pushes_sent,
        "{metrics:?}"
    );
}
