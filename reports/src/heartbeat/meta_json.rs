//! `report.json`: the parts of a `HeartbeatReport` that are not in the CSVs (scenario, seed,
//! group size, duration, command, notes), so `read_heartbeat_report` can rebuild the whole
//! report from its directory and the page can be regenerated without rerunning anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::HeartbeatReport;
use crate::ReportError;

/// The JSON object in `report.json`; fields in `HeartbeatReport` order.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReportMeta {
    pub scenario_toml: String,
    pub seed: u64,
    pub devices_per_group: usize,
    pub duration_h: f64,
    pub command: String,
    pub notes: Vec<String>,
}

impl ReportMeta {
    pub(crate) fn of(report: &HeartbeatReport) -> ReportMeta {
        ReportMeta {
            scenario_toml: report.scenario_toml.clone(),
            seed: report.seed,
            devices_per_group: report.devices_per_group,
            duration_h: report.duration_h,
            command: report.command.clone(),
            notes: report.notes.clone(),
        }
    }
}

/// Writes `meta` to `path` as pretty-printed JSON with a trailing newline.
pub(crate) fn write(path: PathBuf, meta: &ReportMeta) -> Result<PathBuf, ReportError> {
    let mut text = serde_json::to_string_pretty(meta).map_err(|source| ReportError::Json {
        path: path.clone(),
        source,
    })?;
    text.push('\n');
    std::fs::write(&path, text).map_err(|e| ReportError::io("writing", &path, e))?;
    Ok(path)
}

/// Reads a `report.json` written by `write`.
pub(crate) fn read(path: &Path) -> Result<ReportMeta, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::io("reading", path, e))?;
    serde_json::from_str(&text).map_err(|source| ReportError::Json {
        path: path.to_path_buf(),
        source,
    })
}
