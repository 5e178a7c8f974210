//! End-to-end tests of `--metrics-listen` on `imlab serve` and `imlab load`: Prometheus text
//! scraped over loopback while they run.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use common::{ChildGuard, imlab, serve_announcing};

/// GETs `path` from `addr` (HOST:PORT); returns the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the sample line starting with `series` (name and labels), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}

/// Scrapes `addr` until `ready` holds over the body, for at most `limit`.
fn scrape_until(addr: &str, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        if ready(&body) || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `HOST:PORT` of the `metrics: http://HOST:PORT/metrics` line `imlab serve` announces.
fn metrics_addr(url: &str) -> &str {
    url.strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{url}"))
}

/// Ten clients of `imlab load` send 50 messages to `target` in a second; then the metrics at
/// `metrics`, scraped once every connection has closed.
fn fifty_messages_then_scrape(target: &str, metrics: &str) -> String {
    let output = imlab(&[
        "load",
        "--target",
        target,
        "--clients",
        "10",
        "--duration",
        "1s",
        "--msg-rate",
        "50",
        "--drain",
        "1s",
    ]);
    assert!(output.status.success(), "{output:?}");
    scrape_until(metrics, Duration::from_secs(10), |body| {
        sample(body, "imlab_server_connections_open") == Some(0.0)
    })
}

#[test]
fn serve_exposes_its_counters_and_gauges() {
    let (_server, lines) = serve_announcing(&["--metrics-listen", "127.0.0.1:0"], 2);
    let (target, metrics) = (&lines[0], metrics_addr(&lines[1]));
    let before = scrape_until(metrics, Duration::ZERO, |_| true);
    assert_eq!(
        sample(&before, "imlab_server_logins_total"),
        Some(0.0),
        "{before}"
    );
    // Counted once the load's clients have gone: every login and every stored message.
    let body = fifty_messages_then_scrape(target, metrics);
    assert_eq!(
        sample(&body, "imlab_server_logins_total"),
        Some(10.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "imlab_server_messages_stored_total"),
        Some(50.0),
        "{body}"
    );
    // One push per message, to its recipient: the sender takes its SendAck as its copy
    // (a push back to it too was 100).
    assert_eq!(
        sample(&body, "imlab_server_notify_data_sent_total"),
        Some(50.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "imlab_server_connections_open"),
        Some(0.0),
        "{body}"
    );
    assert!(
        body.contains("# TYPE imlab_server_sessions gauge"),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        !body.contains("imlab_store_"),
        "a memory store has no commits: {body}"
    );
    let (status, _) = get(metrics, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[test]
fn serve_on_disk_exposes_its_commits_and_their_times() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, lines) = serve_announcing(
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        2,
    );
    let body = fifty_messages_then_scrape(&lines[0], metrics_addr(&lines[1]));
    assert_eq!(
        sample(&body, "imlab_server_messages_stored_total"),
        Some(50.0),
        "{body}"
    );
    let commits = sample(&body, "imlab_store_commits_total").unwrap_or_else(|| panic!("{body}"));
    // Every acked send was committed: at least one commit.
    assert!(commits >= 1.0, "{body}");
    // Each of the 50 1:1 messages wrote four records (message, two inbox entries, dedupe).
    let records = sample(&body, "imlab_store_records_committed_total").unwrap();
    assert!(records >= 200.0, "{body}");
    assert_eq!(
        sample(&body, "imlab_store_commit_seconds_count"),
        Some(commits),
        "{body}"
    );
    assert_eq!(
        sample(&body, "imlab_store_commit_seconds_bucket{le=\"+Inf\"}"),
        Some(commits),
        "{body}"
    );
    assert!(
        sample(&body, "imlab_store_commit_seconds_sum").is_some_and(|sum| sum > 0.0),
        "{body}"
    );
    assert!(
        body.contains("# TYPE imlab_store_commit_seconds histogram"),
        "{body}"
    );
}

#[test]
fn load_exposes_its_counters_and_latency_quantiles_while_it_runs() {
    let (_server, lines) = serve_announcing(&[], 1);
    let mut child = Command::new(cargo_bin("imlab"))
        .args([
            "load",
            "--target",
            &lines[0],
            "--clients",
            "20",
            "--duration",
            "20s",
        ])
        .args(["--msg-rate", "100/s", "--connect-rate", "1200/m"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _load = ChildGuard(child);
    // Kept open to the end: the run's later progress lines must not meet a closed pipe.
    let mut stderr = BufReader::new(stderr);
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let metrics = line
        .trim()
        .strip_prefix("imlab load: metrics at http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    // 1200/m is 20 connections a second: all in after about a second, then sends.
    let body = scrape_until(&metrics, Duration::from_secs(20), |body| {
        sample(body, "imlab_load_deliveries_total").is_some_and(|n| n >= 100.0)
    });
    assert!(
        sample(&body, "imlab_load_deliveries_total").unwrap() >= 100.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, "imlab_load_clients_connected"),
        Some(20.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "imlab_load_logins_total"),
        Some(20.0),
        "{body}"
    );
    assert!(
        body.contains("imlab_load_info{protocol=\"imlab\",transport=\"tcp\",phase=\"send\"} 1"),
        "{body}"
    );
    let p99 = sample(
        &body,
        "imlab_load_latency_seconds{kind=\"deliver\",quantile=\"0.99\"}",
    )
    .unwrap();
    let max = sample(
        &body,
        "imlab_load_latency_seconds{kind=\"deliver\",quantile=\"1\"}",
    )
    .unwrap();
    assert!(p99 > 0.0 && p99 <= max, "{body}");
    assert!(
        body.contains("# TYPE imlab_load_messages_sent counter"),
        "{body}"
    );
}
