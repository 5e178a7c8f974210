//! The load-test report: latency percentile spectra (HdrHistogram style), delivery latency
//! and connection churn per second. `write_load_report` writes a CSV per chart, the charts
//! (PNG and SVG) and one self-contained `index.html`; `read_timeseries_csv` reads the load
//! generator's `timeseries.csv`. The run's own `timeseries.csv` and `results.json` are inputs:
//! the page links to them and this module never writes them.
//!
//! Files: `csv_files` (CSV in and out), `spectrum_chart` (percentile spectrum),
//! `time_charts` (per-second charts), `page` (the HTML).

mod csv_files;
mod page;
mod spectrum_chart;
mod time_charts;

use std::path::{Path, PathBuf};

pub use crate::ReportError;

use crate::chart;
use crate::html::Figure;

/// One second of a load run; the CSV columns of `timeseries.csv` follow the field order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadSecond {
    pub second: u64,
    pub connected: u64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub disconnects: u64,
    pub reconnects: u64,
    pub deliver_ms_p99: f64,
}

/// One latency distribution as (percentile, latency) points, e.g. from an HdrHistogram's
/// percentile iterator.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySpectrum {
    /// What was timed: connect, ack, deliver, reconnect.
    pub name: String,
    /// (percentile in [0, 100), latency in ms), in increasing percentile order.
    pub points: Vec<(f64, f64)>,
}

/// Everything the load report shows; the load generator measured it, the report lays it out.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    pub title: String,
    /// (key, value) rows shown as the summary table, in order.
    pub summary: Vec<(String, String)>,
    pub spectra: Vec<LatencySpectrum>,
    pub seconds: Vec<LoadSecond>,
    /// The run's results JSON, shown verbatim.
    pub results_json: String,
    /// The command that ran it (empty for results of older versions), shown as "Reproduce".
    pub command: String,
    /// The seed of its send schedule.
    pub seed: u64,
}

/// The load generator's per-second file, read by `read_timeseries_csv`, linked by the page.
pub const TIMESERIES_CSV: &str = "timeseries.csv";
/// The load generator's results file, linked by the page.
pub const RESULTS_JSON: &str = "results.json";
pub const LATENCY_SPECTRUM_CSV: &str = "latency_spectrum.csv";
pub const LATENCY_OVER_TIME_CSV: &str = "latency_over_time.csv";
pub const CONNECTIONS_OVER_TIME_CSV: &str = "connections_over_time.csv";
pub const INDEX_HTML: &str = "index.html";

/// Writes the report into `dir` (created if needed) and returns the files written: a CSV per
/// chart, a PNG and an SVG per chart that had data, and `index.html`. Leaves
/// `timeseries.csv` and `results.json` alone.
pub fn write_load_report(dir: &Path, report: &LoadReport) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::io("creating directory", dir, e))?;
    let mut written = vec![
        csv_files::write_spectra(dir.join(LATENCY_SPECTRUM_CSV), &report.spectra)?,
        csv_files::write_latency_over_time(dir.join(LATENCY_OVER_TIME_CSV), &report.seconds)?,
        csv_files::write_connections_over_time(
            dir.join(CONNECTIONS_OVER_TIME_CSV),
            &report.seconds,
        )?,
    ];

    const NO_SPECTRA: &str = "No latency spectra in the report: chart skipped.";
    const NO_SECONDS: &str = "No per-second rows in the report: chart skipped.";
    let spectrum = spectrum_chart::SpectrumChart::new(&report.spectra);
    let latency = time_charts::LatencyOverTime::new(&report.seconds);
    let connections = time_charts::ConnectionsOverTime::new(&report.seconds);
    let figures = vec![
        Figure {
            basename: "latency_spectrum",
            title: "Latency by percentile",
            caption: spectrum_chart::CAPTION.to_string(),
            csv: LATENCY_SPECTRUM_CSV,
            svg_markup: chart::render_or_skip(
                dir,
                "latency_spectrum",
                spectrum.as_ref(),
                NO_SPECTRA,
                &mut written,
            )?,
        },
        Figure {
            basename: "latency_over_time",
            title: "Delivery latency over time",
            caption: time_charts::LATENCY_CAPTION.to_string(),
            csv: LATENCY_OVER_TIME_CSV,
            svg_markup: chart::render_or_skip(
                dir,
                "latency_over_time",
                latency.as_ref(),
                NO_SECONDS,
                &mut written,
            )?,
        },
        Figure {
            basename: "connections_over_time",
            title: "Connections over time",
            caption: time_charts::CONNECTIONS_CAPTION.to_string(),
            csv: CONNECTIONS_OVER_TIME_CSV,
            svg_markup: chart::render_or_skip(
                dir,
                "connections_over_time",
                connections.as_ref(),
                NO_SECONDS,
                &mut written,
            )?,
        },
    ];

    let index = dir.join(INDEX_HTML);
    let html = page::render(report, &figures);
    std::fs::write(&index, html).map_err(|e| ReportError::io("writing", &index, e))?;
    written.push(index);
    Ok(written)
}

/// Reads a load run's `timeseries.csv` (header
/// `second,connected,sent,acked,delivered,disconnects,reconnects,deliver_ms_p99`).
pub fn read_timeseries_csv(path: &Path) -> Result<Vec<LoadSecond>, ReportError> {
    csv_files::read_timeseries(path)
}
