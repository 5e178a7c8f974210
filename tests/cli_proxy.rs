//! `imlab proxy` and `imlab proxy ctl` end to end: a profile file, the control API, a NAT
//! expiry that resets the phone, and errors that name the file and key.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use common::ChildGuard;

fn ctl_flows(control: &str) -> serde_json::Value {
    let output = common::imlab(&["proxy", "ctl", "--control", control, "flows"]);
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_profile_file_a_control_api_and_an_rst_expiry() {
    let (_server, server_addr) = common::serve_on("127.0.0.1:0", &[]);
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("nat2s.toml");
    std::fs::write(
        &profile,
        "preset = \"us-lte\"\nnat_timeout = \"2s\"\non_expiry = \"rst\"\nloss = 0.0\n",
    )
    .unwrap();
    let trace = dir.path().join("trace.jsonl");
    let mut proxy = Command::new(cargo_bin("imlab"))
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &server_addr,
        ])
        .args([
            "--control",
            "127.0.0.1:0",
            "--time-scale",
            "4",
            "--seed",
            "7",
        ])
        .arg("--profile")
        .arg(&profile)
        .arg("--trace")
        .arg(&trace)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(proxy.stdout.take().unwrap()).lines();
    let _proxy = ChildGuard(proxy);
    let control_line = lines.next().unwrap().unwrap();
    let control = control_line
        .strip_prefix("control API on ")
        .unwrap()
        .to_string();
    let proxy_line = lines.next().unwrap().unwrap();
    let proxy_addr = proxy_line
        .strip_prefix("proxy on ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{proxy_line}"))
        .to_string();

    let mut phone = std::net::TcpStream::connect(&proxy_addr).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let flow = loop {
        let listing = ctl_flows(&control);
        assert_eq!(listing["profile"]["name"], "nat2s");
        let flow = listing["flows"][0].clone();
        if flow["nat"] == "expired" {
            break flow;
        }
        assert!(Instant::now() < deadline, "no expiry: {listing:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(flow["nat_timeout_ms"], 2_000);
    // The phone's next packet gets the carrier's RST.
    phone.write_all(b"x").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buffer = [0u8; 16];
    let error = phone.read(&mut buffer).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    common::wait_until(Duration::from_secs(15), "reset in the trace", || {
        std::fs::read_to_string(&trace)
            .unwrap()
            .contains("\"decision\":\"reset\"")
    });
}

#[test]
fn a_bad_profile_file_is_named_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("lossy.toml");
    std::fs::write(&profile, "preset = \"us-lte\"\nloss = 0.9\n").unwrap();
    let output = common::imlab(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("lossy.toml") && stderr.contains("key `loss`"),
        "{stderr}"
    );
    let output = common::imlab(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
        "--profile",
        "nope",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--profile \"nope\"") && stderr.contains("cmcc-3g"),
        "{stderr}"
    );
}

const REPLAYED: &str = r#"
duration = "10m"
[carriers.lte]
preset = "us-lte"
[carriers.wifi]
preset = "home-wifi"
[[devices]]
name = "phones"
count = 2
carrier = "lte"
[[faults]]
kind = "outage"
target = "lte"
at = "20s"
duration = "10s"
[[faults]]
kind = "latency_spike"
target = "lte"
at = "40s"
duration = "20s"
added = "1s"
[[faults]]
kind = "outage"
target = "wifi"
at = "10s"
duration = "5s"
[[faults]]
kind = "server_crash"
at = "1m"
duration = "5s"
"#;

#[test]
fn a_scenario_replays_its_carrier_faults_and_ctl_schedules_one() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("replayed.toml");
    std::fs::write(&scenario, REPLAYED).unwrap();
    let trace = dir.path().join("trace.jsonl");
    let proxy_args = |extra: &[&str]| {
        let mut args = vec![
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
            "--scenario",
            scenario.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    // Two carriers: the proxy must be told which it plays.
    let output = common::imlab(
        &proxy_args(&[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("lte, wifi")
            && stderr.contains("--scenario-carrier"),
        "{stderr}"
    );
    // A server crash cannot be caused by a proxy: refused by name unless skipped.
    let args = proxy_args(&["--scenario-carrier", "lte"]);
    let output = common::imlab(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("faults[3] server_crash")
            && stderr.contains("--carrier-faults-only"),
        "{stderr}"
    );

    // Model time runs 20 times faster: the outage opens 1 s after the start.
    let mut proxy = Command::new(cargo_bin("imlab"))
        .args(proxy_args(&[
            "--scenario-carrier",
            "lte",
            "--carrier-faults-only",
            "--control",
            "127.0.0.1:0",
            "--time-scale",
            "20",
            "--trace",
            trace.to_str().unwrap(),
        ]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(proxy.stdout.take().unwrap()).lines();
    let _proxy = ChildGuard(proxy);
    let control = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("control API on ")
        .unwrap()
        .to_string();
    let proxy_line = lines.next().unwrap().unwrap();
    // The carrier's own profile, when --profile is not given.
    assert!(proxy_line.contains("profile lte"), "{proxy_line}");
    let replay_line = lines.next().unwrap().unwrap();
    assert!(
        replay_line.contains("replaying 2 carrier faults")
            && replay_line.contains("skipped faults[3] server_crash"),
        "{replay_line}"
    );
    // A fault scheduled through ctl, in the same words and keys as a scenario's.
    let output = common::imlab(&[
        "proxy",
        "ctl",
        "--control",
        &control,
        "fault",
        "bandwidth",
        "--for",
        "30s",
        "--at",
        "70s",
        "--set",
        "kbps=16",
        "--set",
        "direction=down",
    ]);
    assert!(output.status.success(), "{output:?}");
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["event"], "scheduled", "{answer:#}");
    assert_eq!(answer["at_ms"], 70_000);

    assert_eq!(ctl_flows(&control)["profile"]["name"], "lte");
    // Every fault is applied at its model time, with its window; wifi's outage never is.
    let deadline = Instant::now() + Duration::from_secs(30);
    let applied = loop {
        let applied: Vec<(String, u64, Option<u64>)> = std::fs::read_to_string(&trace)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|line| line["event"] == "fault")
            .map(|line| {
                (
                    line["kind"].as_str().unwrap().to_string(),
                    line["t_ms"].as_u64().unwrap(),
                    line["for_ms"].as_u64(),
                )
            })
            .collect();
        if applied.len() >= 3 {
            break applied;
        }
        assert!(
            Instant::now() < deadline,
            "faults applied so far: {applied:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let expected = [
        ("outage", 20_000, Some(10_000)),
        ("latency_spike", 40_000, Some(20_000)),
        ("bandwidth", 70_000, Some(30_000)),
    ]
    .map(|(kind, at, duration)| (kind.to_string(), at, duration));
    assert_eq!(applied, expected);
}
