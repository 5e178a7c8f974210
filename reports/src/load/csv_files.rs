//! The load report's CSV files: one per chart with exactly the numbers it plots
//! (`latency_spectrum.csv`, `latency_over_time.csv`, `connections_over_time.csv`), and the
//! reader of the load generator's `timeseries.csv`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{LatencySpectrum, LoadSecond};
use crate::ReportError;
use crate::csv_out::write;

/// Reads `timeseries.csv`; columns are matched by header name.
pub(crate) fn read_timeseries(path: &Path) -> Result<Vec<LoadSecond>, ReportError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| ReportError::csv(path, e))?;
    reader
        .deserialize()
        .collect::<Result<Vec<LoadSecond>, _>>()
        .map_err(|e| ReportError::csv(path, e))
}

#[derive(Serialize)]
struct SpectrumPoint<'a> {
    name: &'a str,
    percentile: f64,
    latency_ms: f64,
}

/// One row per point of every spectrum: `name,percentile,latency_ms`.
pub(crate) fn write_spectra(
    path: PathBuf,
    spectra: &[LatencySpectrum],
) -> Result<PathBuf, ReportError> {
    let rows = spectra.iter().flat_map(|one| {
        one.points
            .iter()
            .map(|&(percentile, latency_ms)| SpectrumPoint {
                name: &one.name,
                percentile,
                latency_ms,
            })
    });
    write(path, &["name", "percentile", "latency_ms"], rows)
}

#[derive(Serialize)]
struct LatencyPoint {
    second: u64,
    deliver_ms_p99: f64,
}

/// `second,deliver_ms_p99`, one row per second.
pub(crate) fn write_latency_over_time(
    path: PathBuf,
    seconds: &[LoadSecond],
) -> Result<PathBuf, ReportError> {
    let rows = seconds.iter().map(|s| LatencyPoint {
        second: s.second,
        deliver_ms_p99: s.deliver_ms_p99,
    });
    write(path, &["second", "deliver_ms_p99"], rows)
}

#[derive(Serialize)]
struct ConnectionsPoint {
    second: u64,
    connected: u64,
    disconnects: u64,
    reconnects: u64,
}

/// `second,connected,disconnects,reconnects`, one row per second.
pub(crate) fn write_connections_over_time(
    path: PathBuf,
    seconds: &[LoadSecond],
) -> Result<PathBuf, ReportError> {
    let rows = seconds.iter().map(|s| ConnectionsPoint {
        second: s.second,
        connected: s.connected,
        disconnects: s.disconnects,
        reconnects: s.reconnects,
    });
    write(
        path,
        &["second", "connected", "disconnects", "reconnects"],
        rows,
    )
}
