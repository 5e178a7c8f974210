//! The one error type of the crate. Every variant names the file it was reading or writing,
//! so a message such as "writing out/battery.png: ..." says where to look.

use std::path::PathBuf;

/// What went wrong while writing or reading a report, and with which file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Creating a directory, or writing or reading a file, failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A CSV file could not be written or parsed (bad header, bad number, wrong column count).
    #[error("CSV {}: {source}", path.display())]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    /// A JSON file could not be written or parsed.
    #[error("JSON {}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The chart library failed to draw or encode a chart (fonts, PNG encoding).
    #[error("drawing chart {}: {message}", path.display())]
    Chart { path: PathBuf, message: String },
}

impl ReportError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ReportError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn csv(path: impl Into<PathBuf>, source: csv::Error) -> Self {
        ReportError::Csv {
            path: path.into(),
            source,
        }
    }
}
