//! China Mobile's 5-minute NAT against a 28-minute and a 4m45s heartbeat
//! (`scenarios/cmcc-3g-nat.toml`, full length, seed 3).

use imlab_sim::run::{RunOptions, run};
use imlab_sim::scenario::Scenario;

#[test]
fn a_28_minute_heartbeat_dies_silently_on_a_5_minute_nat_and_4m45s_does_not() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/cmcc-3g-nat.toml");
    let scenario = Scenario::load(file.as_ref()).unwrap();
    let report = run(
        &scenario,
        &RunOptions {
            seed: 3,
            ..RunOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    // Late, never lost: every invariant holds.
    assert!(report.ok(), "{:?}", report.verdicts);
    let group = |name| report.metrics.group(name).expect(name);
    let slow = group("gcm_like");
    let fast = group("whatsapp_like");
    // Nearly every idle 28-minute cycle outlives the NAT: 20 devices over 2 hours.
    assert!(slow.silent_disconnects >= 40, "{slow:?}");
    assert_eq!(fast.silent_disconnects, 0, "{fast:?}");
    // Messages to the 28-minute devices wait for their next reconnect: minutes, not seconds.
    assert!(slow.delay_ms_p99 > 5 * 60 * 1_000, "{slow:?}");
    assert!(
        slow.delay_ms_max > fast.delay_ms_max,
        "{slow:?} vs {fast:?}"
    );
    assert!(slow.messages_acked == slow.messages_sent && fast.messages_acked == fast.messages_sent);
}
