//! The heartbeat-strategy report: for every (strategy, carrier profile) pair the measured
//! battery, disconnect and delay figures, plus how adaptive strategies moved their interval
//! over time. `write_heartbeat_report` writes the CSVs, `report.json`, the charts (PNG and
//! SVG) and one self-contained `index.html`; `read_heartbeat_report` reads the CSVs and
//! `report.json` back, so the page can be regenerated from its own directory.
//!
//! Files: `csv_files` (CSV in and out), `meta_json` (`report.json` in and out), `display` (order and colours shared by every chart
//! and the page), `bar_charts`, `pareto_chart`, `intervals_chart`, `page` (the HTML).

mod bar_charts;
mod csv_files;
mod display;
mod intervals_chart;
mod meta_json;
mod page;
mod pareto_chart;

use std::path::{Path, PathBuf};

pub use crate::ReportError;
pub use crate::pareto::pareto_front;

use crate::chart;
use crate::html::Figure;

/// Measurements of one strategy on one carrier profile. The CSV columns follow the field
/// order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatRow {
    pub strategy: String,
    pub profile: String,
    pub heartbeats_per_day: f64,
    pub energy_j_per_day: f64,
    pub battery_pct_per_day: f64,
    pub silent_disconnects_per_day: f64,
    pub reconnects_per_day: f64,
    pub delay_ms_p50: u64,
    pub delay_ms_p99: u64,
    pub delay_ms_max: u64,
    pub reachable_fraction: f64,
    pub settled_interval_s: f64,
    pub server_heartbeats_per_s_per_million: f64,
}

/// A strategy's heartbeat interval over time on one profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IntervalSeries {
    pub strategy: String,
    pub profile: String,
    pub nat_timeout_s: f64,
    /// (hours since start, heartbeat interval in seconds).
    pub points: Vec<(f64, f64)>,
}

/// Everything the report shows; the caller measured it, the report only lays it out.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatReport {
    /// One per (strategy, profile).
    pub rows: Vec<HeartbeatRow>,
    /// Interval over time of adaptive strategies, e.g. on a 5-minute NAT and a long NAT.
    pub series: Vec<IntervalSeries>,
    /// The scenario that was simulated, shown verbatim in the page.
    pub scenario_toml: String,
    pub seed: u64,
    pub devices_per_group: usize,
    pub duration_h: f64,
    /// The command line that reproduces the report.
    pub command: String,
    /// Plain-English findings shown at the top of the page.
    pub notes: Vec<String>,
}

pub const HEARTBEAT_CSV: &str = "heartbeat.csv";
pub const INTERVALS_CSV: &str = "intervals.csv";
pub const INDEX_HTML: &str = "index.html";
/// The non-CSV parts of a `HeartbeatReport` (scenario, seed, command, notes...).
pub const REPORT_JSON: &str = "report.json";

/// Writes the report into `dir` (created if needed) and returns the files written:
/// `heartbeat.csv`, `intervals.csv`, `report.json`, a PNG and an SVG per chart that had data, `index.html`.
pub fn write_heartbeat_report(
    dir: &Path,
    report: &HeartbeatReport,
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::io("creating directory", dir, e))?;
    let mut written = vec![
        csv_files::write_rows(dir.join(HEARTBEAT_CSV), &report.rows)?,
        csv_files::write_intervals(dir.join(INTERVALS_CSV), &report.series)?,
        meta_json::write(dir.join(REPORT_JSON), &meta_json::ReportMeta::of(report))?,
    ];

    let display = display::Display::new(report);
    const NO_ROWS: &str = "No rows in the report: chart skipped.";
    const NO_SERIES: &str = "No interval series in the report: chart skipped.";
    let mut figures = Vec::new();
    for (basename, title, caption, csv, chart) in [
        bar_charts::battery(&display),
        bar_charts::silent_disconnects(&display),
        bar_charts::delay_p99(&display),
    ] {
        let svg_markup =
            chart::render_or_skip(dir, basename, chart.as_ref(), NO_ROWS, &mut written)?;
        figures.push(Figure {
            basename,
            title,
            caption,
            csv,
            svg_markup,
        });
    }
    let pareto = pareto_chart::ParetoPanels::new(&display);
    figures.push(Figure {
        basename: "pareto",
        title: "Battery versus p99 delay",
        caption: pareto_chart::CAPTION.to_string(),
        csv: HEARTBEAT_CSV,
        svg_markup: chart::render_or_skip(dir, "pareto", pareto.as_ref(), NO_ROWS, &mut written)?,
    });
    let intervals = intervals_chart::IntervalPanels::new(&display);
    figures.push(Figure {
        basename: "intervals",
        title: "Heartbeat interval over time",
        caption: intervals_chart::CAPTION.to_string(),
        csv: INTERVALS_CSV,
        svg_markup: chart::render_or_skip(
            dir,
            "intervals",
            intervals.as_ref(),
            NO_SERIES,
            &mut written,
        )?,
    });

    let index = dir.join(INDEX_HTML);
    let html = page::render(report, &display, &figures);
    std::fs::write(&index, html).map_err(|e| ReportError::io("writing", &index, e))?;
    written.push(index);
    Ok(written)
}

/// Reads a `heartbeat.csv` written by `write_heartbeat_report`.
pub fn read_heartbeat_csv(path: &Path) -> Result<Vec<HeartbeatRow>, ReportError> {
    csv_files::read_rows(path)
}

/// Reads an `intervals.csv` written by `write_heartbeat_report`: one series per (strategy,
/// profile) in order of first appearance. A series that had no points does not come back.
pub fn read_intervals_csv(path: &Path) -> Result<Vec<IntervalSeries>, ReportError> {
    csv_files::read_intervals(path)
}

/// Rebuilds the report written to `dir` by `write_heartbeat_report` from its `heartbeat.csv`,
/// `intervals.csv` and `report.json`; the error names the file that is missing or bad.
/// Writing the result again regenerates the same files.
pub fn read_heartbeat_report(dir: &Path) -> Result<HeartbeatReport, ReportError> {
    let rows = read_heartbeat_csv(&dir.join(HEARTBEAT_CSV))?;
    let series = read_intervals_csv(&dir.join(INTERVALS_CSV))?;
    let meta = meta_json::read(&dir.join(REPORT_JSON))?;
    Ok(HeartbeatReport {
        rows,
        series,
        scenario_toml: meta.scenario_toml,
        seed: meta.seed,
        devices_per_group: meta.devices_per_group,
        duration_h: meta.duration_h,
        command: meta.command,
        notes: meta.notes,
    })
}
