//! The report's CSV files: `heartbeat.csv` (one row per strategy and profile, columns in
//! `HeartbeatRow` field order) and `intervals.csv` (one row per point of every interval
//! series). Every chart's numbers are in one of them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{HeartbeatRow, IntervalSeries};
use crate::ReportError;
use crate::csv_out::write;

/// Writes `rows` to `path`, header included even when there are no rows.
pub(crate) fn write_rows(path: PathBuf, rows: &[HeartbeatRow]) -> Result<PathBuf, ReportError> {
    write(path, &HEARTBEAT_COLUMNS, rows.iter())
}

/// Reads rows written by `write_rows`.
pub(crate) fn read_rows(path: &Path) -> Result<Vec<HeartbeatRow>, ReportError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| ReportError::csv(path, e))?;
    reader
        .deserialize()
        .collect::<Result<Vec<HeartbeatRow>, _>>()
        .map_err(|e| ReportError::csv(path, e))
}

/// The header of `heartbeat.csv`, which serde derives from `HeartbeatRow`'s field order.
pub(crate) const HEARTBEAT_COLUMNS: [&str; 13] = [
    "strategy",
    "profile",
    "heartbeats_per_day",
    "energy_j_per_day",
    "battery_pct_per_day",
    "silent_disconnects_per_day",
    "reconnects_per_day",
    "delay_ms_p50",
    "delay_ms_p99",
    "delay_ms_max",
    "reachable_fraction",
    "settled_interval_s",
    "server_heartbeats_per_s_per_million",
];

#[derive(Serialize)]
struct IntervalPoint<'a> {
    strategy: &'a str,
    profile: &'a str,
    nat_timeout_s: f64,
    hours: f64,
    interval_s: f64,
}

/// A row of `intervals.csv` as read back.
#[derive(Deserialize)]
struct OwnedIntervalPoint {
    strategy: String,
    profile: String,
    nat_timeout_s: f64,
    hours: f64,
    interval_s: f64,
}

/// Writes every point of every series to `path`, one row each, header included even when
/// there are no points.
pub(crate) fn write_intervals(
    path: PathBuf,
    series: &[IntervalSeries],
) -> Result<PathBuf, ReportError> {
    let points = series.iter().flat_map(|one| {
        one.points
            .iter()
            .map(move |&(hours, interval_s)| IntervalPoint {
                strategy: &one.strategy,
                profile: &one.profile,
                nat_timeout_s: one.nat_timeout_s,
                hours,
                interval_s,
            })
    });
    write(
        path,
        &[
            "strategy",
            "profile",
            "nat_timeout_s",
            "hours",
            "interval_s",
        ],
        points,
    )
}

/// Reads series written by `write_intervals`: rows grouped by (strategy, profile), series in
/// order of first appearance, points in file order. A series with no points leaves no row,
/// so it does not come back.
pub(crate) fn read_intervals(path: &Path) -> Result<Vec<IntervalSeries>, ReportError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| ReportError::csv(path, e))?;
    let mut series: Vec<IntervalSeries> = Vec::new();
    for point in reader.deserialize::<OwnedIntervalPoint>() {
        let point = point.map_err(|e| ReportError::csv(path, e))?;
        let existing = series
            .iter_mut()
            .find(|s| s.strategy == point.strategy && s.profile == point.profile);
        match existing {
            Some(one) => one.points.push((point.hours, point.interval_s)),
            None => series.push(IntervalSeries {
                strategy: point.strategy,
                profile: point.profile,
                nat_timeout_s: point.nat_timeout_s,
                points: vec![(point.hours, point.interval_s)],
            }),
        }
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::HEARTBEAT_COLUMNS;
    use crate::heartbeat::HeartbeatRow;

    #[test]
    fn hand_written_header_matches_serde_field_order() {
        let row = HeartbeatRow {
            strategy: "s".into(),
            profile: "p".into(),
            heartbeats_per_day: 0.0,
            energy_j_per_day: 0.0,
            battery_pct_per_day: 0.0,
            silent_disconnects_per_day: 0.0,
            reconnects_per_day: 0.0,
            delay_ms_p50: 0,
            delay_ms_p99: 0,
            delay_ms_max: 0,
            reachable_fraction: 0.0,
            settled_interval_s: 0.0,
            server_heartbeats_per_s_per_million: 0.0,
        };
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.serialize(&row).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), HEARTBEAT_COLUMNS.join(","));
    }
}
