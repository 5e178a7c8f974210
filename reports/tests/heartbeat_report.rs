//! End-to-end tests of the heartbeat report: write it to a temporary directory, then check
//! the files, the CSV round trip, the page's content and escaping, and empty input.

mod common;

use std::path::{Path, PathBuf};

use common::TempDir;
use imlab_reports::ReportError;
use imlab_reports::heartbeat::{
    HeartbeatReport, HeartbeatRow, IntervalSeries, pareto_front, read_heartbeat_csv,
    read_heartbeat_report, read_intervals_csv, write_heartbeat_report,
};

const HEARTBEAT_HEADER: &str = "strategy,profile,heartbeats_per_day,energy_j_per_day,\
battery_pct_per_day,silent_disconnects_per_day,reconnects_per_day,delay_ms_p50,delay_ms_p99,\
delay_ms_max,reachable_fraction,settled_interval_s,server_heartbeats_per_s_per_million";

const CHARTS: [&str; 5] = [
    "battery",
    "silent_disconnects",
    "delay_p99",
    "pareto",
    "intervals",
];

fn row(
    strategy: &str,
    profile: &str,
    battery: f64,
    delay_ms_p99: u64,
    silent: f64,
) -> HeartbeatRow {
    HeartbeatRow {
        strategy: strategy.to_string(),
        profile: profile.to_string(),
        heartbeats_per_day: 300.0,
        energy_j_per_day: battery * 414.0,
        battery_pct_per_day: battery,
        silent_disconnects_per_day: silent,
        reconnects_per_day: silent + 0.5,
        delay_ms_p50: delay_ms_p99 / 20,
        delay_ms_p99,
        delay_ms_max: delay_ms_p99 * 2,
        reachable_fraction: 0.987654321,
        settled_interval_s: 285.0,
        server_heartbeats_per_s_per_million: 3472.2,
    }
}

/// 3 strategies x 2 profiles; one strategy name needs HTML escaping.
fn small_report() -> HeartbeatReport {
    let rows = vec![
        row("fixed:4m45s", "cmcc-3g", 2.0, 900, 0.0),
        row("a<b&c", "cmcc-3g", 1.2, 400_000, 11.5),
        row("imlab-adaptive", "cmcc-3g", 1.1, 1_200, 0.1),
        row("fixed:4m45s", "ct-3g-long-nat", 2.0, 800, 0.0),
        row("a<b&c", "ct-3g-long-nat", 0.7, 2_500, 0.2),
        row("imlab-adaptive", "ct-3g-long-nat", 0.9, 3_000, 0.0),
    ];
    let series = vec![
        IntervalSeries {
            strategy: "imlab-adaptive".into(),
            profile: "cmcc-3g".into(),
            nat_timeout_s: 300.0,
            points: vec![(0.0, 240.0), (0.5, 280.0), (1.0, 290.0), (2.0, 290.0)],
        },
        IntervalSeries {
            strategy: "a<b&c".into(),
            profile: "ct-3g-long-nat".into(),
            nat_timeout_s: 1800.0,
            points: vec![(0.0, 240.0), (1.0, 1200.0), (2.0, 1700.0)],
        },
    ];
    HeartbeatReport {
        rows,
        series,
        scenario_toml: "name = \"heartbeat-matrix\"\n# devices <=\"20\"\n".into(),
        seed: 4242,
        devices_per_group: 20,
        duration_h: 2.0,
        command: "imlab report heartbeat --seed 4242 --out out/hb".into(),
        notes: vec!["imlab-adaptive is not dominated by <wechat> on any profile".into()],
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn writes_every_file_and_returns_them() {
    let temp = TempDir::new("all-files");
    let dir = temp.join("nested");
    let written = write_heartbeat_report(&dir, &small_report()).unwrap();

    let mut expected: Vec<PathBuf> = vec![
        dir.join("heartbeat.csv"),
        dir.join("intervals.csv"),
        dir.join("report.json"),
    ];
    for chart in CHARTS {
        expected.push(dir.join(format!("{chart}.png")));
        expected.push(dir.join(format!("{chart}.svg")));
    }
    expected.push(dir.join("index.html"));
    assert_eq!(written, expected);
    for path in &written {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "{} is missing or empty", path.display());
    }
    for chart in CHARTS {
        let png = std::fs::read(dir.join(format!("{chart}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{chart}.png is not a PNG");
        let svg = read(&dir.join(format!("{chart}.svg")));
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{chart}.svg"
        );
    }
}

#[test]
fn heartbeat_csv_round_trips() {
    let dir = TempDir::new("round-trip");
    let report = small_report();
    write_heartbeat_report(&dir, &report).unwrap();
    let path = dir.join("heartbeat.csv");
    assert_eq!(read(&path).lines().next(), Some(HEARTBEAT_HEADER));
    assert_eq!(read_heartbeat_csv(&path).unwrap(), report.rows);
}

#[test]
fn intervals_csv_has_every_point() {
    let dir = TempDir::new("intervals-csv");
    write_heartbeat_report(&dir, &small_report()).unwrap();
    let text = read(&dir.join("intervals.csv"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "strategy,profile,nat_timeout_s,hours,interval_s");
    assert_eq!(lines[1], "imlab-adaptive,cmcc-3g,300.0,0.0,240.0");
    assert_eq!(lines.len(), 1 + 4 + 3);
}

#[test]
fn page_embeds_charts_table_scenario_and_escapes_text() {
    let dir = TempDir::new("page");
    let report = small_report();
    write_heartbeat_report(&dir, &report).unwrap();
    let html = read(&dir.join("index.html"));

    // Charts are inline SVG, one per chart; nothing is fetched from elsewhere.
    assert_eq!(html.matches("<svg").count(), CHARTS.len());
    for attribute in ["src=\"http", "href=\"http", "<script", "<link"] {
        assert!(!html.contains(attribute), "page contains {attribute}");
    }
    // The table has every row, the escaped strategy name, formatted values.
    assert_eq!(html.matches("<tr").count(), 1 + report.rows.len());
    assert!(html.contains("<td>a&lt;b&amp;c</td><td>cmcc-3g</td>"));
    assert!(html.contains("<td>imlab-adaptive</td><td>ct-3g-long-nat</td>"));
    assert!(html.contains("<td>6m40s</td>"), "p99 of 400,000 ms");
    assert!(html.contains("<td>98.8%</td>"));
    assert!(!html.contains("a<b&c"), "unescaped strategy name");
    // The scenario, the note, the seed and the command, escaped.
    assert!(html.contains("# devices &lt;=&quot;20&quot;"));
    assert!(html.contains("not dominated by &lt;wechat&gt; on any profile"));
    assert!(html.contains("4242"));
    assert!(html.contains("imlab report heartbeat --seed 4242 --out out/hb"));
    // The name also reaches the SVG text escaped (plotters escapes it).
    assert!(read(&dir.join("battery.svg")).contains("a&lt;b&amp;c"));
}

#[test]
fn pareto_front_rows_are_marked_in_the_table() {
    let dir = TempDir::new("front-table");
    write_heartbeat_report(&dir, &small_report()).unwrap();
    let html = read(&dir.join("index.html"));
    // On cmcc-3g: fixed:4m45s (lowest delay) and imlab-adaptive (lowest battery) are on the
    // front; a<b&c is beaten on both by imlab-adaptive. On ct-3g-long-nat: fixed and a<b&c.
    let front_rows: Vec<&str> = html
        .lines()
        .filter(|l| {
            l.starts_with("<tr class=\"front") || l.starts_with("<tr class=\"profile-start front")
        })
        .collect();
    assert_eq!(front_rows.len(), 4, "{front_rows:#?}");
    assert!(
        !front_rows
            .iter()
            .any(|l| l.contains("a&lt;b&amp;c</td><td>cmcc-3g"))
    );
    assert!(
        front_rows
            .iter()
            .any(|l| l.contains("a&lt;b&amp;c</td><td>ct-3g-long-nat"))
    );
}

#[test]
fn pareto_front_hand_made_case() {
    // (delay, battery), both minimised.
    let points = [
        (10.0, 5.0), // 0: front (lowest delay)
        (20.0, 3.0), // 1: front
        (25.0, 3.5), // 2: dominated by 1
        (40.0, 1.0), // 3: front (lowest battery)
        (40.0, 1.0), // 4: duplicate of 3, also front
        (50.0, 1.0), // 5: dominated by 3 (same battery, more delay)
        (10.0, 6.0), // 6: dominated by 0 (same delay, more battery)
    ];
    assert_eq!(pareto_front(&points), vec![0, 1, 3, 4]);
    // Without point 1, point 2 is dominated by nothing left and joins the front.
    let without_1: Vec<_> = points
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(pareto_front(&without_1), vec![0, 1, 2, 3]);
}

#[test]
fn empty_report_skips_charts_with_a_note() {
    let dir = TempDir::new("empty");
    let report = HeartbeatReport {
        rows: Vec::new(),
        series: Vec::new(),
        scenario_toml: String::new(),
        seed: 1,
        devices_per_group: 0,
        duration_h: 0.0,
        command: "imlab report heartbeat".into(),
        notes: Vec::new(),
    };
    let written = write_heartbeat_report(&dir, &report).unwrap();
    assert_eq!(
        written,
        vec![
            dir.join("heartbeat.csv"),
            dir.join("intervals.csv"),
            dir.join("report.json"),
            dir.join("index.html")
        ]
    );
    assert_eq!(
        read_heartbeat_csv(&dir.join("heartbeat.csv")).unwrap(),
        Vec::new()
    );
    assert_eq!(
        read(&dir.join("heartbeat.csv")).trim_end(),
        HEARTBEAT_HEADER
    );
    let html = read(&dir.join("index.html"));
    assert!(!html.contains("<svg"));
    assert!(html.contains("No rows in the report: chart skipped."));
    assert!(html.contains("No interval series in the report: chart skipped."));
}

#[test]
fn rows_without_series_still_draw_the_other_charts() {
    let dir = TempDir::new("no-series");
    let report = HeartbeatReport {
        series: Vec::new(),
        ..small_report()
    };
    let written = write_heartbeat_report(&dir, &report).unwrap();
    assert!(written.contains(&dir.join("pareto.png")));
    assert!(!written.contains(&dir.join("intervals.png")));
}

#[test]
fn errors_name_the_file() {
    let dir = TempDir::new("errors");
    std::fs::create_dir_all(&*dir).unwrap();

    let missing = dir.join("missing.csv");
    let error = read_heartbeat_csv(&missing).unwrap_err();
    assert!(matches!(error, ReportError::Csv { .. }), "{error:?}");
    assert!(error.to_string().contains("missing.csv"), "{error}");

    let malformed = dir.join("malformed.csv");
    std::fs::write(
        &malformed,
        format!("{HEARTBEAT_HEADER}\nx,y,not-a-number\n"),
    )
    .unwrap();
    let error = read_heartbeat_csv(&malformed).unwrap_err();
    assert!(error.to_string().contains("malformed.csv"), "{error}");

    // The output directory's path is taken by a file.
    let blocked = dir.join("blocked");
    std::fs::write(&blocked, "").unwrap();
    let error = write_heartbeat_report(&blocked, &small_report()).unwrap_err();
    assert!(error.to_string().contains("blocked"), "{error}");
}

/// The size the real report has: 10 strategies on 7 carrier profiles, long names included,
/// interval series on a 5-minute NAT and a long NAT. Renders every chart at full scale.
fn full_matrix_report() -> HeartbeatReport {
    let strategies = [
        "fixed:28m",
        "whatsapp",
        "line",
        "gcm",
        "goim",
        "mobileimsdk",
        "tcp-keepalive",
        "wechat",
        "wechat-legacy",
        "imlab-adaptive-bisect-per-network",
    ];
    let profiles = [
        ("cmcc-3g", 300.0),
        ("cmcc-4g", 600.0),
        ("cu-3g", 240.0),
        ("ct-3g-long-nat", 1800.0),
        ("us-lte", 1800.0),
        ("eu-lte", 900.0),
        ("home-wifi-with-a-long-name", 3600.0),
    ];
    let intervals_s = [
        1680.0, 285.0, 200.0, 1680.0, 240.0, 210.0, 7200.0, 270.0, 240.0, 0.0,
    ];
    let mut rows = Vec::new();
    for (p, (profile, nat_s)) in profiles.iter().enumerate() {
        for (s, strategy) in strategies.iter().enumerate() {
            // Adaptive: settles just under the NAT timeout.
            let interval = if intervals_s[s] == 0.0 {
                nat_s * 0.9
            } else {
                intervals_s[s]
            };
            let expired = interval > *nat_s;
            let heartbeats = 86_400.0 / interval;
            let battery = 0.15 + heartbeats * 0.0042 * (1.0 + p as f64 * 0.1);
            let silent = if expired {
                86_400.0 / interval * 0.9
            } else {
                0.02 * s as f64
            };
            let delay_ms_p99 = if expired {
                (interval * 900.0) as u64
            } else {
                400 + 150 * s as u64
            };
            rows.push(HeartbeatRow {
                strategy: strategy.to_string(),
                profile: profile.to_string(),
                heartbeats_per_day: heartbeats,
                energy_j_per_day: battery * 414.0,
                battery_pct_per_day: battery,
                silent_disconnects_per_day: silent,
                reconnects_per_day: silent + 0.3,
                delay_ms_p50: delay_ms_p99 / 10,
                delay_ms_p99,
                delay_ms_max: delay_ms_p99 * 3,
                reachable_fraction: if expired { 0.4 } else { 0.999 },
                settled_interval_s: interval,
                server_heartbeats_per_s_per_million: 1e6 / interval,
            });
        }
    }
    let mut series = Vec::new();
    for (profile, nat_s) in [("cmcc-3g", 300.0), ("ct-3g-long-nat", 1800.0)] {
        for (strategy, step_s) in [("wechat", 60.0), ("imlab-adaptive-bisect-per-network", 0.0)] {
            let mut points = Vec::new();
            let mut interval: f64 = 180.0;
            let (mut low, mut high): (f64, f64) = (180.0, 3600.0);
            for k in 0..=48 {
                points.push((k as f64 * 0.25, interval));
                let expired = interval > nat_s;
                if step_s > 0.0 {
                    interval = if expired {
                        (interval - step_s).max(180.0)
                    } else {
                        (interval + step_s).min(1680.0)
                    };
                } else {
                    if expired {
                        high = interval
                    } else {
                        low = interval
                    }
                    interval = ((low + high) / 2.0).round();
                }
            }
            series.push(IntervalSeries {
                strategy: strategy.into(),
                profile: profile.into(),
                nat_timeout_s: nat_s,
                points,
            });
        }
    }
    HeartbeatReport {
        rows,
        series,
        scenario_toml: "name = \"heartbeat-matrix\"\nduration = \"12h\"\n".into(),
        seed: 7,
        devices_per_group: 50,
        duration_h: 12.0,
        command: "imlab report heartbeat --seed 7".into(),
        notes: vec!["Synthetic numbers for a layout test.".into()],
    }
}

#[test]
fn full_matrix_renders_every_chart() {
    let dir = TempDir::new("full-matrix");
    let report = full_matrix_report();
    let written = write_heartbeat_report(&dir, &report).unwrap();
    assert_eq!(written.len(), 3 + 2 * CHARTS.len() + 1);
    assert_eq!(
        read_heartbeat_csv(&dir.join("heartbeat.csv")).unwrap(),
        report.rows
    );
    println!("full matrix report in {}", dir.display());
}

#[test]
fn report_round_trips_and_regenerates_the_same_files() {
    let dir = TempDir::new("regenerate");
    let report = small_report();
    let written = write_heartbeat_report(&dir, &report).unwrap();
    assert!(dir.join("report.json").exists());
    let before: Vec<Vec<u8>> = written.iter().map(|p| std::fs::read(p).unwrap()).collect();

    assert_eq!(
        read_intervals_csv(&dir.join("intervals.csv")).unwrap(),
        report.series
    );
    let read_back = read_heartbeat_report(&dir).unwrap();
    assert_eq!(read_back, report);

    let rewritten = write_heartbeat_report(&dir, &read_back).unwrap();
    assert_eq!(rewritten, written);
    for (path, old) in written.iter().zip(&before) {
        assert!(
            std::fs::read(path).unwrap() == *old,
            "{} changed",
            path.display()
        );
    }
}

#[test]
fn read_report_names_the_missing_or_bad_file() {
    let dir = TempDir::new("read-errors");
    write_heartbeat_report(&dir, &small_report()).unwrap();

    std::fs::write(dir.join("report.json"), "{\"seed\": 1}").unwrap();
    let error = read_heartbeat_report(&dir).unwrap_err();
    assert!(matches!(error, ReportError::Json { .. }), "{error}");
    assert!(error.to_string().contains("report.json"), "{error}");

    std::fs::remove_file(dir.join("report.json")).unwrap();
    let error = read_heartbeat_report(&dir).unwrap_err();
    assert!(matches!(error, ReportError::Io { .. }), "{error}");
    assert!(error.to_string().contains("report.json"), "{error}");

    std::fs::remove_file(dir.join("intervals.csv")).unwrap();
    let error = read_heartbeat_report(&dir).unwrap_err();
    assert!(error.to_string().contains("intervals.csv"), "{error}");
}

/// Strategies worth choosing (3-15% a day) next to two outliers (120% and 200%).
fn outlier_report() -> HeartbeatReport {
    let mut report = small_report();
    report.rows = vec![
        row("wechat", "cmcc-3g", 12.0, 900, 0.0),
        row("imlab-adaptive", "cmcc-3g", 10.5, 1_200, 0.0),
        row("whatsapp", "cmcc-3g", 3.0, 1_000, 0.0),
        row("goim", "cmcc-3g", 120.0, 500, 0.0),
        row("mobileimsdk", "cmcc-3g", 200.0, 400, 0.0),
    ];
    report.series = Vec::new();
    report
}

#[test]
fn battery_axes_are_logarithmic_so_outliers_do_not_squash_the_rest() {
    let temp = TempDir::new("battery-log");
    write_heartbeat_report(&temp, &outlier_report()).unwrap();
    for chart in ["battery.svg", "pareto.svg"] {
        let svg = read(&temp.join(chart));
        assert!(svg.contains("battery per day (%, log scale)"), "{chart}");
        // Decade ticks 1, 10, 100, 1000 (a linear axis would tick 0, 50, 100, ...).
        for tick in [">\n1\n<", ">\n10\n<", ">\n100\n<"] {
            assert!(svg.contains(tick), "{chart} lacks the tick {tick:?}");
        }
        for linear in [">\n50\n<", ">\n150\n<"] {
            assert!(!svg.contains(linear), "{chart}: a linear tick {linear:?}");
        }
    }
}
