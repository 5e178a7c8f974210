//! Writing a chart's or a table's CSV: the header by hand (serde writes none for an empty
//! file), then one serialized row each, every error naming the file.

use std::path::PathBuf;

use serde::Serialize;

use crate::ReportError;

/// Writes `header` then `rows`; the header is written by hand because serde writes none for
/// an empty file. `header` must match the row type's field order.
pub(crate) fn write<T: Serialize>(
    path: PathBuf,
    header: &[&str],
    rows: impl Iterator<Item = T>,
) -> Result<PathBuf, ReportError> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_path(&path)
        .map_err(|e| ReportError::csv(&path, e))?;
    writer
        .write_record(header)
        .map_err(|e| ReportError::csv(&path, e))?;
    for row in rows {
        writer
            .serialize(row)
            .map_err(|e| ReportError::csv(&path, e))?;
    }
    writer
        .flush()
        .map_err(|e| ReportError::io("writing", &path, e))?;
    Ok(path)
}
