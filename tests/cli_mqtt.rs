//! `imlab load --protocol mqtt` against a real broker (rumqttd, in this process on loopback):
//! the same ledger and reports as imlab's own protocol, judged by the QoS.

mod common;
mod mqtt_broker;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{imlab, results, temp_dir};
use mqtt_broker::{Relay, start_broker};

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
        let out = temp_dir("cli-mqtt", &format!("clean-{version}-{pattern}"));
        let output = load(
            &broker.to_string(),
            &out,
            &[
                "--mqtt-version", version, "--qos", "1", "--clients", "200",
                "--connect-rate", "2000", "--duration", "2s", "--msg-rate", "300",
                "--pattern", pattern, "--drain", "1s",
            ],
        );
        let said = text(&output);
        assert_eq!(output.status.code(), Some(0), "{version} {pattern}: {said}");
        let results = results(&out);
        assert_eq!(results["protocol"], "mqtt");
        assert_eq!(results["qos"], 1);
        let expected = count(&results, "/messages/expected_deliveries");
        // group:20 owes 19 deliveries a message; one-to-one one.
        assert!(expected >= 500, "{version} {pattern}: {expected} deliveries owed");
        assert_eq!(count(&results, "/messages/delivered"), expected, "{said}");
        assert_eq!(count(&results, "/messages/lost"), 0);
        assert_eq!(count(&results, "/messages/duplicated"), 0);
        assert_eq!(count(&results, "/connections/peak_concurrent"), 200);
        assert!(said.contains("protocol: mqtt QoS 1 over tcp"), "{said}");
        assert!(out.join("index.html").is_file(), "the page is written");
    }
}
