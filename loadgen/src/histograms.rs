//! The latency histograms on disk: `histograms.hlog`, an HdrHistogram V2 interval log with one
//! tagged histogram per latency (connect, ack, deliver, reconnect), and with carriers one per
//! carrier for deliver and reconnect, in microseconds. Logs from several load-generator
//! machines merge losslessly (`imlab load merge`).

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

/// The tag of carrier `k`'s histogram of `kind` (`deliver`, `reconnect`), `k` its number in
/// the run's carriers (as in results.json's `carriers`), so that workers' per-carrier
/// percentiles merge as losslessly as the run's.
pub fn carrier_tag(k: usize, kind: &str) -> String {
    format!("carrier-{k}-{kind}")
}

/// The carrier number and kind of a tag [`carrier_tag`] made.
pub fn parse_carrier_tag(tag: &str) -> Option<(usize, &str)> {
    let (k, kind) = tag.strip_prefix("carrier-")?.split_once('-')?;
    Some((k.parse().ok()?, kind))
}

/// The histograms' largest value, µs: one hour. A longer latency counts as an hour.
pub const HIGHEST_US: u64 = 3_600_000_000;

/// A latency histogram: microseconds, 3 significant digits, counts made for the largest
/// value recorded so far. One made for the whole hour at once is 188 KB of counts, zeroed and
/// so resident, in each of the run's nine (the ledger's five, the results' copies); most runs
/// never see a latency of a second, and a histogram up to 33 ms holds 49 KB. The buckets do
/// not depend on the largest value, so its percentiles are the same either way.
pub fn latency() -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(1, 2, 3).expect("valid histogram bounds");
    histogram.auto(true);
    histogram
}

/// Records `us` in `histogram`, an hour at most (see [`HIGHEST_US`]).
pub fn record(histogram: &mut Histogram<u64>, us: u64) {
    // It grows to take the value; only an allocation that fails refuses it.
    let _ = histogram.record(us.min(HIGHEST_US));
}

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
        let mut histogram: Histogram<u64> = deserializer
            .deserialize(&mut std::io::Cursor::new(encoded))
            .map_err(|error| format!("{}: histogram {tag}: {error:?}", file.display()))?;
        // A histogram is saved with the range its values reached (see [`latency`]); as a sum,
        // it grows to take another's larger values (a merge of runs adds into it).
        histogram.auto(true);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The run's histograms hold counts for the values they saw, not for the whole hour,
    /// with the same percentiles as one made for the hour; a latency over an hour counts as
    /// an hour rather than going missing.
    #[test]
    fn a_histogram_holds_counts_for_what_it_saw_and_counts_the_hour_and_over() {
        let mut grown = latency();
        let mut whole = Histogram::<u64>::new_with_bounds(1, HIGHEST_US, 3).unwrap();
        // Latencies of a loaded run: 200 µs to 30 ms, spread by a fixed LCG.
        let mut x: u64 = 7;
        for _ in 0..100_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let us = 200 + (x >> 33) % 30_000;
            record(&mut grown, us);
            whole.record(us).unwrap();
        }
        for quantile in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                grown.value_at_quantile(quantile),
                whole.value_at_quantile(quantile),
                "p{quantile}"
            );
        }
        let bytes = |h: &Histogram<u64>| h.distinct_values() * size_of::<u64>();
        assert!(bytes(&whole) > 180_000, "{}", bytes(&whole));
        assert!(
            bytes(&grown) <= 50_000,
            "counts for 30 ms take {} bytes",
            bytes(&grown)
        );

        let two_hours = 2 * HIGHEST_US;
        record(&mut grown, two_hours);
        assert_eq!(grown.len(), 100_001, "counted, not dropped");
        assert!(
            grown.equivalent(grown.max(), HIGHEST_US),
            "counted as the hour: max {}",
            grown.max()
        );
        assert!(bytes(&grown) <= bytes(&whole));
    }
}
