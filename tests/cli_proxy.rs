//! `imlab proxy` and `imlab proxy ctl` end to end: a profile file, the control API, a NAT
//! expiry that resets the phone, and errors that name the file and key.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;

/// A spawned process, killed when the test ends however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ctl_flows(control: &str) -> serde_json::Value {
    let output = common::imlab(&["proxy", "ctl", "--control", control, "flows"]);
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_profile_file_a_control_api_and_an_rst_expiry() {
    let (server, server_addr) = common::serve_on("127.0.0.1:0", &[]);
    let _server = Killed(server);
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
    let _proxy = Killed(proxy);
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
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&trace)
        .unwrap()
        .contains("\"decision\":\"reset\"")
    {
        assert!(Instant::now() < deadline, "no reset in the trace");
        std::thread::sleep(Duration::from_millis(50));
    }
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
