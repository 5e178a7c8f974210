//! End-to-end tests of the load report: write it to a temporary directory, then check the
//! files, the page's content, and the `timeseries.csv` reader.

mod common;

use common::TempDir;
use imlab_reports::ReportError;
use imlab_reports::load::{
    LatencySpectrum, LoadReport, LoadSecond, read_timeseries_csv, write_load_report,
};

/// Percentiles 0, 50, 90, 99, 99.9, 99.99 with latencies growing into the tail.
fn spectrum(name: &str, base_ms: f64) -> LatencySpectrum {
    let points = [0.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99]
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, base_ms * 1.8f64.powi(i as i32)))
        .collect();
    LatencySpectrum {
        name: name.to_string(),
        points,
    }
}

/// 20 seconds: ramp up to 1000 clients, a reconnect burst at second 12.
fn seconds() -> Vec<LoadSecond> {
    (0..20u64)
        .map(|second| {
            let burst = second == 12;
            LoadSecond {
                second,
                connected: (second * 200).min(1000) - if burst { 150 } else { 0 },
                sent: second * 50,
                acked: second * 50,
                delivered: second * 49,
                disconnects: if burst { 150 } else { second % 3 },
                reconnects: if second == 13 { 140 } else { second % 2 },
                deliver_ms_p99: if burst { 180.0 } else { 20.0 + second as f64 },
            }
        })
        .collect()
}

fn small_report() -> LoadReport {
    LoadReport {
        title: "Load <1000 clients>".to_string(),
        summary: vec![
            ("clients".to_string(), "1000".to_string()),
            ("deliver p99".to_string(), "41 ms & rising".to_string()),
        ],
        spectra: vec![
            spectrum("connect", 2.0),
            spectrum("ack", 0.4),
            spectrum("deliver", 1.5),
            spectrum("reconnect", 30.0),
        ],
        seconds: seconds(),
        results_json: r#"{"clients": 1000, "note": "<raw>"}"#.to_string(),
        command: "imlab load --target im.example.com:7400 --clients 1000 --seed 9".to_string(),
        seed: 9,
    }
}

const CHARTS: [&str; 3] = [
    "latency_spectrum",
    "latency_over_time",
    "connections_over_time",
];

#[test]
fn writes_every_file_and_a_self_contained_page() {
    let dir = TempDir::new("all-files");
    let written = write_load_report(&dir, &small_report()).unwrap();

    let mut expected: Vec<String> = CHARTS.iter().map(|chart| format!("{chart}.csv")).collect();
    for chart in CHARTS {
        expected.extend([format!("{chart}.png"), format!("{chart}.svg")]);
    }
    expected.push("index.html".to_string());
    let mut names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    expected.sort();
    assert_eq!(names, expected);
    for path in &written {
        assert!(
            std::fs::metadata(path).unwrap().len() > 0,
            "{}",
            path.display()
        );
    }
    // The inputs are linked, never written.
    assert!(!dir.join("timeseries.csv").exists());
    assert!(!dir.join("results.json").exists());

    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(html.contains("<title>Load &lt;1000 clients&gt;</title>"));
    assert!(html.contains(r#"<tr><th scope="row">clients</th><td>1000</td></tr>"#));
    assert!(
        html.contains(r#"<tr><th scope="row">deliver p99</th><td>41 ms &amp; rising</td></tr>"#)
    );
    assert_eq!(html.matches("<svg").count(), CHARTS.len());
    assert!(html.contains("&quot;note&quot;: &quot;&lt;raw&gt;&quot;"));
    assert!(html.contains(r#"<a href="timeseries.csv">"#));
    assert!(html.contains(r#"<a href="results.json">"#));
    assert!(!html.contains("<script") && !html.contains("src=\""));
}

#[test]
fn chart_csvs_hold_the_plotted_numbers() {
    let dir = TempDir::new("csv");
    write_load_report(&dir, &small_report()).unwrap();
    let spectrum = std::fs::read_to_string(dir.join("latency_spectrum.csv")).unwrap();
    let mut lines = spectrum.lines();
    assert_eq!(lines.next(), Some("name,percentile,latency_ms"));
    assert_eq!(lines.next(), Some("connect,0.0,2.0"));
    assert_eq!(spectrum.lines().count(), 1 + 4 * 7);

    let connections = std::fs::read_to_string(dir.join("connections_over_time.csv")).unwrap();
    assert_eq!(
        connections.lines().take(2).collect::<Vec<_>>(),
        ["second,connected,disconnects,reconnects", "0,0,0,0"]
    );
    let latency = std::fs::read_to_string(dir.join("latency_over_time.csv")).unwrap();
    assert_eq!(latency.lines().nth(13), Some("12,180.0"));
}

#[test]
fn timeseries_csv_round_trips() {
    let dir = TempDir::new("timeseries");
    std::fs::create_dir_all(&*dir).unwrap();
    let path = dir.join("timeseries.csv");
    let mut text = String::from(
        "second,connected,sent,acked,delivered,disconnects,reconnects,deliver_ms_p99\n",
    );
    for s in seconds() {
        text.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            s.second,
            s.connected,
            s.sent,
            s.acked,
            s.delivered,
            s.disconnects,
            s.reconnects,
            s.deliver_ms_p99
        ));
    }
    std::fs::write(&path, text).unwrap();
    assert_eq!(read_timeseries_csv(&path).unwrap(), seconds());

    std::fs::write(&path, "second,connected\n1,oops\n").unwrap();
    let error = read_timeseries_csv(&path).unwrap_err();
    assert!(matches!(error, ReportError::Csv { .. }), "{error}");
    assert!(error.to_string().contains("timeseries.csv"), "{error}");
}

#[test]
fn empty_report_skips_charts_with_a_note() {
    let dir = TempDir::new("empty");
    let report = LoadReport {
        title: "empty".to_string(),
        summary: Vec::new(),
        spectra: Vec::new(),
        seconds: Vec::new(),
        results_json: "{}".to_string(),
        command: String::new(),
        seed: 0,
    };
    let written = write_load_report(&dir, &report).unwrap();
    assert_eq!(written.len(), 4, "{written:?}");
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(!html.contains("<svg"));
    assert!(html.contains("No latency spectra in the report: chart skipped."));
    assert!(html.contains("No per-second rows in the report: chart skipped."));
}

#[test]
fn the_page_says_how_to_reproduce_the_run() {
    let dir = TempDir::new("reproduce");
    write_load_report(&dir, &small_report()).unwrap();
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(
        html.contains("<h2 id=\"reproduce\">Reproduce</h2>"),
        "{html}"
    );
    assert!(
        html.contains(
            "<pre><code>imlab load --target im.example.com:7400 --clients 1000 --seed 9</code></pre>"
        ),
        "{html}"
    );
    assert!(html.contains("Seed <strong>9</strong>"));
}
