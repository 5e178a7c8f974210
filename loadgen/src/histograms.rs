//! The latency histograms on disk: `histograms.hlog`, an HdrHistogram V2 interval log with one
//! tagged histogram per latency (connect, ack, deliver, reconnect), in microseconds. Logs from
//! several load-generator machines merge losslessly (`imlab load merge`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

/// The file name inside a results directory.
pub const HISTOGRAMS_FILE: &str = "histograms.hlog";

/// The tags, in file order.
pub const TAGS: &[&str] = &["connect", "ack", "deliver", "reconnect"];

/// Writes `histograms` (tag -> histogram, µs) covering `elapsed` to `dir/histograms.hlog`.
pub fn write(
    dir: &Path,
    histograms: &[(&str, &Histogram<u64>)],
    elapsed: Duration,
) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment("imlab load latency histograms, microseconds")
            .begin_log_with(&mut bytes, &mut serializer)?;
        for (tag, histogram) in histograms {
            log.write_histogram(histogram, Duration::ZERO, elapsed, Tag::new(tag))
                .map_err(|error| std::io::Error::other(format!("{error:?}")))?;
        }
    }
    let temp = dir.join(format!("{HISTOGRAMS_FILE}.tmp"));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(temp, dir.join(HISTOGRAMS_FILE))
}

/// Reads `file`; histograms with the same tag are added together.
pub fn read(file: &Path) -> Result<BTreeMap<String, Histogram<u64>>, String> {
    let bytes = std::fs::read(file).map_err(|error| format!("{}: {error}", file.display()))?;
    let mut histograms: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry =
            entry.map_err(|error| format!("{}: not an interval log: {error:?}", file.display()))?;
        let LogEntry::Interval(interval) = entry else {
            continue;
        };
        let tag = interval
            .tag()
            .map_or("untagged", |t| t.as_str())
            .to_string();
        let encoded = base64::engine::general_purpose::STANDARD
            .decode(interval.encoded_histogram())
            .map_err(|error| format!("{}: histogram {tag}: {error}", file.display()))?;
        let histogram: Histogram<u64> = deserializer
            .deserialize(&mut std::io::Cursor::new(encoded))
            .map_err(|error| format!("{}: histogram {tag}: {error:?}", file.display()))?;
        match histograms.get_mut(&tag) {
            Some(sum) => sum
                .add(&histogram)
                .map_err(|error| format!("{}: histogram {tag}: {error:?}", file.display()))?,
            None => {
                histograms.insert(tag, histogram);
            }
        }
    }
    Ok(histograms)
}

/// Percentiles at which a spectrum is sampled: dense in the tail.
const SPECTRUM_PERCENTILES: &[f64] = &[
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9,
    99.95, 99.99, 99.995, 99.999,
];

/// A latency percentile spectrum of a histogram in µs: (percentile, ms) points.
pub fn spectrum(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    SPECTRUM_PERCENTILES
        .iter()
        .map(|p| (*p, histogram.value_at_percentile(*p) as f64 / 1_000.0))
        .collect()
}
