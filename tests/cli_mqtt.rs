//! `imlab load --protocol mqtt` against a real broker (rumqttd, in this process on loopback):
//! the same ledger and reports as imlab's own protocol, judged by the QoS.

mod common;
mod mqtt_broker;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ChildGuard, imlab, results, serve_guarded, temp_dir, write_identity};
use mqtt_broker::{Relay, start_broker, start_broker_with_ws};

/// `imlab load --protocol mqtt --target ADDR` with `extra`, writing into `out`.
fn load(target: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "load",
        "--protocol",
        "mqtt",
        "--target",
        target,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    imlab(&args)
}

/// The same, started in the background (killed if the test fails).
fn spawn_load(target: &str, out: &Path, extra: &[&str]) -> ChildGuard {
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("imlab"))
        .args(["load", "--protocol", "mqtt", "--target", target])
        .args(["--out", out.to_str().unwrap()])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ChildGuard(child)
}

/// Waits for a guarded run to end; its exit code and what it said.
fn finish(guard: ChildGuard) -> (Option<i32>, String) {
    let output = guard.wait_with_output();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), said)
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn count(results: &serde_json::Value, path: &str) -> u64 {
    results
        .pointer(path)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {results}"))
}

#[test]
fn two_hundred_qos1_clients_lose_nothing_in_both_versions_one_to_one_and_in_groups() {
    let (v4, v5) = start_broker();
    for (version, broker, pattern) in [
        ("3.1.1", v4, "one-to-one"),
        ("5", v5, "group:20"),
        ("3.1.1", v4, "group:20"),
        ("5", v5, "one-to-one"),
    ] {
        let out_guard = temp_dir("cli-mqtt", &format!("clean-{version}-{pattern}"));
        let out = out_guard.path();
        let output = load(
            &broker.to_string(),
            out,
            &[
                "--mqtt-version",
                version,
                "--qos",
                "1",
                "--clients",
                "200",
                "--connect-rate",
                "2000",
                "--duration",
                "2s",
                "--msg-rate",
                "300",
                "--pattern",
                pattern,
                "--drain",
                "1s",
            ],
        );
        let said = text(&output);
        assert_eq!(output.status.code(), Some(0), "{version} {pattern}: {said}");
        let results = results(out);
        assert_eq!(results["protocol"], "mqtt");
        assert_eq!(results["qos"], 1);
        let expected = count(&results, "/messages/expected_deliveries");
        // group:20 owes 19 deliveries a message; one-to-one one.
        assert!(
            expected >= 500,
            "{version} {pattern}: {expected} deliveries owed"
        );
        assert_eq!(count(&results, "/messages/delivered"), expected, "{said}");
        assert_eq!(count(&results, "/messages/lost"), 0);
        assert_eq!(count(&results, "/messages/duplicated"), 0);
        assert_eq!(count(&results, "/connections/peak_concurrent"), 200);
        assert!(said.contains("protocol: mqtt QoS 1 over tcp"), "{said}");
        assert!(out.join("index.html").is_file(), "the page is written");
    }
}

/// A run across a broker restart, cut once 150 publishes reached the clients and then
/// `acks_lost` of the broker's PUBACKs were kept from their senders (which send those again
/// on a kept session); `fresh` sends the clients back to a new broker (every session lost),
/// else to the same one (every session kept, as a broker with persistence does).
fn across_a_restart(
    name: &str,
    fresh: bool,
    acks_lost: u64,
    flags: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    let (broker, _) = start_broker();
    let relay = Relay::new(broker);
    let out_guard = temp_dir("cli-mqtt", name);
    let out = out_guard.path();
    let mut args = vec![
        "--clients",
        "100",
        "--connect-rate",
        "2000",
        "--duration",
        "4s",
        "--msg-rate",
        "200",
        "--drain",
        "1s",
        // Back within 2.2 s of the restart (the default policy's 0-19 s of jitter would
        // make each run last 20 s more); still spread, so devices return at different times.
        "--reconnect-backoff",
        "200ms,1s,2s",
    ];
    args.extend_from_slice(flags);
    let run = spawn_load(&relay.addr.to_string(), out, &args);
    relay.wait_published(150);
    if acks_lost > 0 {
        relay.swallow_pubacks();
        relay.wait_swallowed(acks_lost);
        relay.pass_pubacks();
    }
    let upstream = if fresh { start_broker().0 } else { broker };
    relay.restart_to(upstream);
    let (code, said) = finish(run);
    (code, results(out), said)
}

#[test]
fn qos0_loss_across_a_broker_restart_is_reported_as_allowed() {
    let (code, results, said) = across_a_restart("qos0-restart", true, 0, &["--qos", "0"]);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(results["qos"], 0);
    // The restart cut every connection (a device owed nothing need not be back by the end).
    assert!(count(&results, "/connections/disconnects") >= 100, "{said}");
    assert_eq!(count(&results, "/messages/lost"), 0, "{said}");
    // Senders and recipients came back at jittered times: what went out meanwhile is gone,
    // and QoS 0 allows it.
    assert!(count(&results, "/messages/lost_allowed") > 0, "{said}");
    assert!(said.contains("allowed by the protocol: lost"), "{said}");
}

#[test]
fn qos1_persistent_sessions_deliver_what_was_sent_while_away_and_a_lost_session_is_real_loss() {
    let persistent = ["--qos", "1", "--clean-start", "false"];
    // Sessions kept: messages to devices that were away arrive once they are back.
    let (code, results, said) = across_a_restart("qos1-kept", false, 0, &persistent);
    assert_eq!(code, Some(0), "{said}");
    // The restart cut every connection (a device owed nothing need not be back by the end).
    assert!(count(&results, "/connections/disconnects") >= 100, "{said}");
    let expected = count(&results, "/messages/expected_deliveries");
    assert_eq!(count(&results, "/messages/delivered"), expected, "{said}");
    assert_eq!(count(&results, "/messages/lost"), 0);
    assert_eq!(count(&results, "/messages/lost_allowed"), 0);
    assert_eq!(count(&results, "/messages/duplicated"), 0, "{said}");

    // Sessions lost (a broker without persistence restarted): the ledger counts what the
    // broker owed and never delivered as lost, not as allowed.
    let (code, results, said) = across_a_restart("qos1-lost", true, 0, &persistent);
    assert_eq!(code, Some(1), "{said}");
    let lost = count(&results, "/messages/lost");
    assert!(lost > 0, "{said}");
    assert_eq!(count(&results, "/messages/lost_allowed"), 0, "{said}");
    assert!(
        said.contains(&format!("FAILED: {lost} deliveries lost")),
        "{said}"
    );
    // Message by message: each listed loss names a message of a device of the run and
    // another device it never reached, as many as were lost (up to the list's bound).
    let listed = results["lost_deliveries"].as_array().unwrap();
    assert_eq!(listed.len() as u64, lost.min(100), "{said}");
    for loss in listed {
        let (sender, recipient) = (
            loss["sender"].as_u64().unwrap(),
            loss["recipient"].as_u64().unwrap(),
        );
        assert!(
            sender != recipient && sender < 100 && recipient < 100,
            "{loss}"
        );
    }
    assert!(said.contains("lost, sender#number to recipient"), "{said}");
}

/// With `--workers`, a message between two workers' clients that is delivered again after a
/// reconnect (its PUBACK never reached the sender, which sent it again on its kept session)
/// is a redelivery the protocol allows, judged at the merge as in one process, not a
/// duplicate.
#[test]
fn qos1_redeliveries_between_workers_are_allowed_not_duplicates() {
    let flags = ["--qos", "1", "--clean-start", "false", "--workers", "2"];
    let (code, results, said) = across_a_restart("qos1-workers-redelivered", false, 40, &flags);
    assert_eq!(code, Some(0), "{said}");
    let expected = count(&results, "/messages/expected_deliveries");
    assert_eq!(count(&results, "/messages/delivered"), expected, "{said}");
    assert_eq!(count(&results, "/messages/lost"), 0, "{said}");
    assert_eq!(count(&results, "/messages/duplicated"), 0, "{said}");
    assert!(count(&results, "/messages/redelivered") > 0, "{said}");
}

#[test]
fn a_broker_that_never_acks_fails_the_sends_reconnects_and_ends_on_time() {
    let (broker, _) = start_broker();
    let relay = Relay::new(broker);
    relay.swallow_pubacks();
    let out_guard = temp_dir("cli-mqtt", "no-puback");
    let out = out_guard.path();
    let started = Instant::now();
    let output = load(
        &relay.addr.to_string(),
        out,
        &[
            "--qos",
            "1",
            "--clients",
            "50",
            "--connect-rate",
            "2000",
            "--duration",
            "8s",
            "--msg-rate",
            "100",
            "--drain",
            "1s",
            "--ack-timeout",
            "1s",
        ],
    );
    let took = started.elapsed();
    let said = text(&output);
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert!(said.contains("sends failed"), "{said}");
    let results = results(out);
    assert_eq!(count(&results, "/messages/acked"), 0, "{said}");
    assert!(count(&results, "/messages/failed") > 0, "{said}");
    assert!(
        count(&results, "/connections/disconnects_by_cause/ack_timeout") > 0,
        "{said}"
    );
    assert!(count(&results, "/connections/reconnects") > 0, "{said}");
    assert!(relay.swallowed.get() > 0);
    // 8 s of sends, 1 s of drain and 5 s without an ack: no longer wait for acks that never
    // come (the --reconnect-wait bound is 30 s).
    assert!(took < Duration::from_secs(25), "took {took:?}");
}

#[test]
fn a_foreign_server_fails_fast_naming_the_mismatch() {
    // MQTT aimed at an imlab server.
    let (_server, imlab_addr) = serve_guarded(&[]);
    let out_guard = temp_dir("cli-mqtt", "foreign-imlab");
    let out = out_guard.path();
    let started = Instant::now();
    let output = load(&imlab_addr, out, &["--clients", "20", "--duration", "2s"]);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("does not speak MQTT"), "{said}");
    assert!(said.contains("--protocol imlab"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(10), "{said}");

    // imlab aimed at an MQTT broker.
    let (broker, _) = start_broker();
    let started = Instant::now();
    let output = imlab(&[
        "load",
        "--target",
        &broker.to_string(),
        "--clients",
        "20",
        "--duration",
        "2s",
    ]);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("use --protocol mqtt"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(10), "{said}");
}

#[test]
fn mqtt_flags_without_protocol_mqtt_and_impossible_options_are_errors_naming_the_flag() {
    for (args, says) in [
        (
            vec!["--qos", "1"],
            "--qos is an MQTT option: add --protocol mqtt",
        ),
        (
            vec!["--protocol", "mqtt", "--qos", "3"],
            "--qos \"3\": use 0, 1 or 2",
        ),
        (
            vec![
                "--protocol",
                "mqtt",
                "--mqtt-version",
                "5",
                "--clean-start",
                "false",
            ],
            "--clean-start false with MQTT 5 needs --session-expiry",
        ),
        (
            vec!["--protocol", "mqtt", "--topic-template", "chat/inbox"],
            "--topic-template \"chat/inbox\": must contain {user}",
        ),
        (
            vec!["--protocol", "mqtt", "--auth-secret", "s"],
            "--auth-secret signs imlab login tokens",
        ),
    ] {
        let mut all = vec![
            "load",
            "--target",
            "127.0.0.1:9",
            "--clients",
            "2",
            "--duration",
            "1s",
        ];
        all.extend_from_slice(&args);
        let output = imlab(&all);
        let said = text(&output);
        assert_ne!(output.status.code(), Some(0), "{args:?}");
        assert!(said.contains(says), "{args:?}: {said}");
    }
}

#[test]
fn qos2_across_a_restart_that_keeps_sessions_delivers_each_message_exactly_once() {
    let (code, results, said) = across_a_restart(
        "qos2-kept",
        false,
        0,
        &["--qos", "2", "--clean-start", "false"],
    );
    assert_eq!(results["qos"], 2);
    // The restart cut every connection (a device owed nothing need not be back by the end).
    assert!(count(&results, "/connections/disconnects") >= 100, "{said}");
    let expected = count(&results, "/messages/expected_deliveries");
    assert_eq!(count(&results, "/messages/delivered"), expected, "{said}");
    // Exactly once: no repeat the protocol allows. rumqttd also forgets which QoS 2 publishes
    // to a device await their PUBREL when the device reconnects: it resends such a publish
    // under a new packet id (DUP clear) and may give the old id to a new message. The device
    // delivers both (an app would see the resend twice: a duplicate, failing the run) and
    // names the broker's violation, so every duplicate is explained by one and nothing is
    // lost (`broker_faults` in the loadgen crate scripts both orders).
    assert_eq!(count(&results, "/messages/redelivered"), 0, "{said}");
    let duplicated = count(&results, "/messages/duplicated");
    // Kinds never seen are absent from the map.
    let violations: u64 = [
        "qos2_resent_under_new_packet_id",
        "packet_id_reused_before_pubrel",
    ]
    .iter()
    .filter_map(|kind| {
        results
            .pointer(&format!("/messages/protocol_violations/{kind}"))
            .and_then(serde_json::Value::as_u64)
    })
    .sum();
    assert!(duplicated <= violations, "{said}");
    // rumqttd keeps a QoS 2 publish between its PUBREC and the PUBREL in connection state it
    // drops at a reconnect: the PUBREL the client resends then finds nothing and rumqttd
    // closes the connection, every time. Such a send is never acked, and never delivered (a
    // QoS 2 message is released by its PUBREL): it can only be unacked, or failed once its
    // PUBCOMP is overdue, nothing worse.
    let stuck = count(&results, "/messages/unacked") + count(&results, "/messages/failed");
    for nothing in ["lost", "refused", "pending"] {
        assert_eq!(
            count(&results, &format!("/messages/{nothing}")),
            0,
            "{said}"
        );
    }
    let want = match (duplicated, stuck) {
        (0, 0) => 0,
        (0, _) => 3,
        _ => 1,
    };
    assert_eq!(code, Some(want), "{said}");
}

#[test]
fn mqtt_over_websocket_delivers_like_over_tcp() {
    let (_, _, ws) = start_broker_with_ws();
    let out_guard = temp_dir("cli-mqtt", "ws");
    let out = out_guard.path();
    let output = load(
        &ws.to_string(),
        out,
        &[
            "--ws",
            "/mqtt",
            "--mqtt-version",
            "3.1.1",
            "--qos",
            "1",
            "--clients",
            "50",
            "--connect-rate",
            "1000",
            "--duration",
            "2s",
            "--msg-rate",
            "200",
            "--pattern",
            "group:10",
        ],
    );
    let said = text(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    let results = results(out);
    assert_eq!(results["transport"], "ws", "{results}");
    assert!(said.contains("mqtt QoS 1 over ws"), "{said}");
    let expected = count(&results, "/messages/expected_deliveries");
    assert!(expected > 0, "{results}");
    assert_eq!(
        count(&results, "/messages/delivered"),
        expected,
        "{results}"
    );
    assert_eq!(count(&results, "/messages/lost"), 0, "{results}");
    assert_eq!(count(&results, "/messages/duplicated"), 0, "{results}");

    // The same port without --ws is not an MQTT port: the mismatch is named at once.
    let plain = load(
        &ws.to_string(),
        out,
        &["--clients", "2", "--duration", "1s"],
    );
    let said = text(&plain);
    assert!(
        !plain.status.success() && said.contains("logins failed"),
        "{said}"
    );
}

#[test]
fn mqtt_over_tls_trusts_the_given_ca_and_no_other() {
    let (v4, _) = start_broker();
    let dir_guard = temp_dir("cli-mqtt", "tls");
    let dir = dir_guard.path();
    let (cert, key) = write_identity(dir);
    let front = mqtt_broker::TlsFront::new(&cert, &key, v4);
    let out = dir.join("out");
    let flags = |ca: &Path| {
        vec![
            "--tls".to_string(),
            "--ca".into(),
            ca.to_str().unwrap().into(),
            "--qos".into(),
            "1".into(),
            "--clients".into(),
            "50".into(),
            "--duration".into(),
            "2s".into(),
            "--msg-rate".into(),
            "200".into(),
        ]
    };
    let args = flags(&cert);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = load(&front.addr.to_string(), &out, &args);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    let results = results(&out);
    assert_eq!(results["transport"], "tls", "{results}");
    assert_eq!(results["tls"], true, "{results}");
    let expected = count(&results, "/messages/expected_deliveries");
    assert!(expected > 0, "{results}");
    assert_eq!(
        count(&results, "/messages/delivered"),
        expected,
        "{results}"
    );

    // A certificate the broker's was not signed by: no client gets in, and the run says why.
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let (stranger, _) = write_identity(&other_dir);
    let args = flags(&stranger);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = load(&front.addr.to_string(), &dir.join("out-refused"), &args);
    let said = text(&refused);
    assert!(
        !refused.status.success() && said.contains("logins failed"),
        "{said}"
    );
}

/// Three users of two phones each on one carrier, writing one-to-one.
const MQTT_PHONES: &str = r#"
name = "mqtt-phones"
duration = "1h"
[carriers.lab]
preset = "home-wifi"
loss = 0.0
[[devices]]
name = "phones"
count = 6
carrier = "lab"
heartbeat = "fixed:20s"
devices_per_user = 2
traffic = { one_to_one_per_hour = 3600.0, body_bytes = 300 }
"#;

/// `--scenario` over MQTT: a user's phones each subscribe to the user's inbox topic, so a
/// one-to-one publish reaches both of the peer's phones (and, unlike imlab's protocol, none
/// of the sender's others), through the scenario's carrier and over two workers that split
/// a user's phones. Phones whose app goes inactive say goodbye and come back; with a session
/// kept (`--clean-start false`) what was published to them meanwhile still arrives.
#[test]
fn a_scenario_over_mqtt_owes_each_message_to_every_phone_of_the_peer() {
    let (v4, _) = start_broker();
    let dir_guard = temp_dir("cli-mqtt", "scenario");
    let dir = dir_guard.path();
    let scenario = dir.join("mqtt-phones.toml");
    std::fs::write(&scenario, MQTT_PHONES).unwrap();
    let out = dir.join("out");
    let output = load(
        &v4.to_string(),
        &out,
        &[
            "--qos",
            "1",
            "--scenario",
            scenario.to_str().unwrap(),
            "--duration",
            "3s",
            "--drain",
            "2s",
            "--workers",
            "2",
        ],
    );
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    let results = results(&out);
    assert_eq!(results["protocol"], "mqtt", "{results}");
    assert_eq!(results["pattern"], "scenario:mqtt-phones", "{results}");
    assert_eq!(results["heartbeat"], "phones=fixed:20s", "{results}");
    // Six phones at one message a second each, for 3 s.
    let acked = count(&results, "/messages/acked");
    assert_eq!(acked, 18, "{results}");
    assert_eq!(count(&results, "/messages/expected_deliveries"), 2 * acked);
    assert_eq!(count(&results, "/messages/delivered"), 2 * acked);
    assert_eq!(count(&results, "/messages/lost"), 0);
    assert_eq!(count(&results, "/messages/duplicated"), 0);
    assert_eq!(count(&results, "/carriers/0/deliver_ms/count"), 2 * acked);

    let inactive = dir.join("inactive.toml");
    std::fs::write(
        &inactive,
        MQTT_PHONES.replace(
            "devices_per_user = 2",
            "devices_per_user = 2\napp_states = [{ state = \"foreground\", for = \"1500ms\" }, \
             { state = \"inactive\", for = \"1s\" }]",
        ),
    )
    .unwrap();
    let out = dir.join("inactive");
    let output = load(
        &v4.to_string(),
        &out,
        &[
            "--qos",
            "1",
            "--clean-start",
            "false",
            "--scenario",
            inactive.to_str().unwrap(),
            "--duration",
            "5s",
            "--drain",
            "3s",
        ],
    );
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    let results = common::results(&out);
    assert!(
        count(&results, "/connections/disconnects_by_cause/Requested") >= 6,
        "every phone went offline with its app at least once: {results}"
    );
    // And stayed away while its app was (a second), not reconnecting at once.
    let back_ms = results["latency_ms"]["reconnect"]["p50"].as_f64().unwrap();
    assert!(back_ms >= 900.0, "back after {back_ms} ms: {results}");
    let acked = count(&results, "/messages/acked");
    assert!(acked > 5, "{results}");
    assert_eq!(count(&results, "/messages/expected_deliveries"), 2 * acked);
    assert_eq!(
        count(&results, "/messages/delivered"),
        2 * acked,
        "{results}"
    );
    assert_eq!(count(&results, "/messages/lost"), 0);
    assert_eq!(count(&results, "/messages/lost_allowed"), 0, "{results}");
}
