//! `imlab load merge`: one report from several load generators' result directories. Counts
//! add up; latency percentiles come from the merged histograms (lossless), never from
//! averaging percentiles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::crossings::Crossings;
use crate::histograms::{self, HISTOGRAMS_FILE, TAGS};
use crate::ledger::Second;
use crate::results::{Latency, LoadResults, TIMESERIES_FILE};

/// Whether runs against different targets may be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    /// Refuse: their counts would add up to a server that never existed.
    MustMatch,
    /// Merge anyway (`--force`): several servers behind one address, say.
    MayDiffer,
}

/// Merges the results in `dirs` and writes `out/results.json`, `out/histograms.hlog` and
/// `out/timeseries.csv`.
pub fn merge(dirs: &[PathBuf], out: &Path, targets: Targets) -> Result<LoadResults, String> {
    let mut merged: Option<LoadResults> = None;
    let mut histograms = BTreeMap::new();
    // Each carrier's, by name and kind; a carrier some run has no histograms of (written
    // before they were) gets no percentiles rather than a part's.
    let mut by_carrier = BTreeMap::new();
    let mut carriers_partial = BTreeSet::new();
    for dir in dirs {
        let file = dir.join("results.json");
        let text = std::fs::read_to_string(&file)
            .map_err(|error| format!("{}: {error}", file.display()))?;
        let results: LoadResults =
            serde_json::from_str(&text).map_err(|error| format!("{}: {error}", file.display()))?;
        let mut carriers_here = BTreeSet::new();
        for (tag, histogram) in histograms::read(&dir.join(HISTOGRAMS_FILE))? {
            let key = match histograms::parse_carrier_tag(&tag) {
                Some((k, kind)) => {
                    let Some(carrier) = results.carriers.get(k) else {
                        return Err(format!(
                            "{}: histogram {tag} of carrier {k}, but results.json names {} \
                             carriers",
                            dir.display(),
                            results.carriers.len()
                        ));
                    };
                    carriers_here.insert(carrier.name.clone());
                    Some((carrier.name.clone(), kind.to_string()))
                }
                None => None,
            };
            match key {
                Some(key) => add_histogram(by_carrier.entry(key), histogram),
                None => add_histogram(histograms.entry(tag.clone()), histogram),
            }
            .map_err(|error| format!("{}: {tag}: {error}", dir.display()))?;
        }
        carriers_partial.extend(
            results
                .carriers
                .iter()
                .filter(|c| !carriers_here.contains(&c.name))
                .map(|c| c.name.clone()),
        );
        if let Some(sum) = &merged
            && (sum.protocol_line() != results.protocol_line())
        {
            return Err(format!(
                "{} spoke {} but {} spoke {}: runs of different protocols are not one run",
                dirs[0].display(),
                sum.protocol_line(),
                dir.display(),
                results.protocol_line()
            ));
        }
        if let Some(sum) = &merged
            && targets == Targets::MustMatch
            && !same_service(&sum.target, &results.target)
        {
            return Err(format!(
                "{} ran against {} but {} against {}: merging runs against different servers \
                 adds up unrelated counts; pass --force if they are one service",
                dirs[0].display(),
                sum.target,
                dir.display(),
                results.target
            ));
        }
        merged = Some(match merged {
            None => results,
            Some(mut sum) => {
                add(&mut sum, &results);
                sum
            }
        });
    }
    let mut merged = merged.ok_or("no result directories given")?;
    let mut crossed_by_carrier = BTreeMap::new();
    judge_crossings(dirs, &mut merged, &mut histograms, &mut crossed_by_carrier)?;
    for (name, histogram) in crossed_by_carrier {
        add_histogram(by_carrier.entry((name, "deliver".into())), histogram)?;
    }
    let latency = |tag: &str| histograms.get(tag).map(Latency::of).unwrap_or_default();
    merged.latency_ms.connect = latency("connect");
    merged.latency_ms.ack = latency("ack");
    merged.latency_ms.deliver = latency("deliver");
    merged.latency_ms.reconnect = latency("reconnect");
    let mut carrier_tagged = Vec::new();
    for (k, carrier) in merged.carriers.iter_mut().enumerate() {
        if carriers_partial.contains(&carrier.name) {
            continue;
        }
        for kind in ["deliver", "reconnect"] {
            let histogram = by_carrier
                .remove(&(carrier.name.clone(), kind.to_string()))
                .unwrap_or_else(histograms::latency);
            let latency = Latency::of(&histogram);
            match kind {
                "deliver" => carrier.deliver_ms = latency,
                _ => carrier.reconnect_ms = latency,
            }
            carrier_tagged.push((histograms::carrier_tag(k, kind), histogram));
        }
    }
    std::fs::create_dir_all(out).map_err(|error| format!("{}: {error}", out.display()))?;
    let json = serde_json::to_string_pretty(&merged).map_err(|error| error.to_string())?;
    std::fs::write(out.join("results.json"), json + "\n")
        .map_err(|error| format!("{}: {error}", out.display()))?;
    let tagged: Vec<(&str, &hdrhistogram::Histogram<u64>)> = TAGS
        .iter()
        .filter_map(|tag| histograms.get(*tag).map(|h| (*tag, h)))
        .chain(carrier_tagged.iter().map(|(tag, h)| (tag.as_str(), h)))
        .collect();
    histograms::write(
        out,
        &tagged,
        std::time::Duration::from_secs_f64(merged.elapsed_s),
    )
    .map_err(|error| format!("{}: {error}", out.display()))?;
    merge_timeseries(dirs, out)?;
    Ok(merged)
}

/// Adds the runs' `timeseries.csv` second by second from each run's start (the workers of a
/// run start together) into `out/timeseries.csv`: counts add up, and `deliver_ms_p99` is the
/// highest of the runs' (a second's percentile cannot be merged from percentiles; the worst
/// run's bounds it from below). Runs without the file add nothing; none has one: none is
/// written.
fn merge_timeseries(dirs: &[PathBuf], out: &Path) -> Result<(), String> {
    let mut merged: Vec<Second> = Vec::new();
    let mut any = false;
    for dir in dirs {
        let file = dir.join(TIMESERIES_FILE);
        if !file.exists() {
            continue;
        }
        any = true;
        let mut reader = csv::Reader::from_path(&file)
            .map_err(|error| format!("{}: {error}", file.display()))?;
        for (index, row) in reader.deserialize::<Second>().enumerate() {
            let row = row.map_err(|error| format!("{}: {error}", file.display()))?;
            if merged.len() <= index {
                merged.push(Second {
                    second: index as u64,
                    ..Second::default()
                });
            }
            let sum = &mut merged[index];
            sum.connected += row.connected;
            sum.sent += row.sent;
            sum.acked += row.acked;
            sum.delivered += row.delivered;
            sum.disconnects += row.disconnects;
            sum.reconnects += row.reconnects;
            sum.deliver_ms_p99 = sum.deliver_ms_p99.max(row.deliver_ms_p99);
        }
    }
    if !any {
        return Ok(());
    }
    let file = out.join(TIMESERIES_FILE);
    let written = (|| {
        let mut writer = csv::Writer::from_path(&file)?;
        for second in &merged {
            writer.serialize(second)?;
        }
        writer.flush()?;
        Ok::<_, csv::Error>(())
    })();
    written.map_err(|error| format!("{}: {error}", file.display()))
}

/// Judges the messages that crossed between the workers of a run (see `crate::crossings`):
/// the directories' `crossings.json` files and their record files, run by run, added to the
/// merged counts (deliveries, and repeats and reorders of the messages that crossed) and the
/// deliver histogram.
fn judge_crossings(
    dirs: &[PathBuf],
    merged: &mut LoadResults,
    histograms: &mut BTreeMap<String, hdrhistogram::Histogram<u64>>,
    by_carrier: &mut BTreeMap<String, hdrhistogram::Histogram<u64>>,
) -> Result<(), String> {
    let mut runs: BTreeMap<String, Vec<Crossings>> = Default::default();
    for dir in dirs {
        if let Some(crossings) = Crossings::read(dir)? {
            runs.entry(crossings.run_tag.clone())
                .or_default()
                .push(crossings);
        }
    }
    for workers in runs.values() {
        let deliver = histograms
            .entry("deliver".to_string())
            .or_insert_with(crate::histograms::latency);
        let judged = crate::crossings::judge(workers, deliver, by_carrier)?;
        let m = &mut merged.messages;
        m.expected_deliveries += judged.expected;
        m.delivered += judged.delivered;
        m.lost += judged.lost;
        m.pending += judged.pending;
        m.duplicated += judged.duplicated;
        m.redelivered += judged.redelivered;
        m.reordered += judged.reordered;
        m.unrecorded += judged.unrecorded + judged.owed_unrecorded;
    }
    Ok(())
}

/// Adds `histogram` into the sum at `entry` (its first: taken as it is).
fn add_histogram<K: Ord>(
    entry: std::collections::btree_map::Entry<'_, K, hdrhistogram::Histogram<u64>>,
    histogram: hdrhistogram::Histogram<u64>,
) -> Result<(), String> {
    use std::collections::btree_map::Entry;
    match entry {
        Entry::Vacant(slot) => {
            slot.insert(histogram);
        }
        Entry::Occupied(mut sum) => sum
            .get_mut()
            .add(&histogram)
            .map_err(|error| format!("{error:?}"))?,
    }
    Ok(())
}

/// Whether two runs' targets name the same servers: each is one `HOST:PORT` or a
/// comma-separated list of them (a `--target` that lists a gateway tier's addresses, or a
/// merge of runs against several), compared as sets.
fn same_service(a: &str, b: &str) -> bool {
    let set = |t: &str| {
        t.split(',')
            .map(str::to_string)
            .collect::<BTreeSet<String>>()
    };
    set(a) == set(b)
}

/// `sum`'s targets with those of `other` it does not name yet, in order.
fn union_of_targets(sum: &str, other: &str) -> String {
    let mut all: Vec<&str> = sum.split(',').collect();
    for t in other.split(',') {
        if !all.contains(&t) {
            all.push(t);
        }
    }
    all.join(",")
}

/// Adds counts; the peak of concurrent connections adds up too (an upper bound: the
/// machines' peaks need not coincide).
fn add(sum: &mut LoadResults, other: &LoadResults) {
    sum.clients += other.clients;
    sum.msg_rate += other.msg_rate;
    sum.elapsed_s = sum.elapsed_s.max(other.elapsed_s);
    sum.connected_now += other.connected_now;
    if other.phase == "interrupted" {
        sum.phase = other.phase.clone();
    }
    sum.target = union_of_targets(&sum.target, &other.target);
    for address in &other.target_addresses {
        match sum
            .target_addresses
            .iter_mut()
            .find(|a| a.address == address.address)
        {
            None => sum.target_addresses.push(address.clone()),
            Some(a) => {
                a.connects += address.connects;
                a.connect_failures += address.connect_failures;
            }
        }
    }
    for carrier in &other.carriers {
        match sum.carriers.iter_mut().find(|c| c.name == carrier.name) {
            None => sum.carriers.push(carrier.clone()),
            Some(c) => {
                c.clients += carrier.clients;
                c.connects += carrier.connects;
                c.disconnects += carrier.disconnects;
                c.silent_disconnects += carrier.silent_disconnects;
                for (cause, n) in &carrier.disconnects_by_cause {
                    *c.disconnects_by_cause.entry(cause.clone()).or_default() += n;
                }
                c.reconnects += carrier.reconnects;
                let (model, o) = (&mut c.model, &carrier.model);
                model.nat_expired += o.nat_expired;
                model.resets += o.resets;
                model.dropped += o.dropped;
                model.lost += o.lost;
                model.retransmissions += o.retransmissions;
                model.broken += o.broken;
                // Percentiles are not averaged: `merge` recomputes them from the carrier's
                // merged histograms, or leaves them out if a run has none.
                c.deliver_ms = Default::default();
                c.reconnect_ms = Default::default();
            }
        }
    }
    let room = crate::ledger::LOST_LISTED_MAX.saturating_sub(sum.lost_deliveries.len());
    sum.lost_deliveries
        .extend(other.lost_deliveries.iter().take(room).cloned());
    let (m, o) = (&mut sum.messages, &other.messages);
    m.sent += o.sent;
    m.acked += o.acked;
    m.delivered += o.delivered;
    m.expected_deliveries += o.expected_deliveries;
    m.lost += o.lost;
    m.lost_allowed += o.lost_allowed;
    m.pending += o.pending;
    m.refused += o.refused;
    m.unacked += o.unacked;
    for (cause, n) in &o.refusals_by_cause {
        *m.refusals_by_cause.entry(cause.clone()).or_default() += n;
    }
    m.duplicated += o.duplicated;
    m.redelivered += o.redelivered;
    m.reordered += o.reordered;
    m.unrecorded += o.unrecorded;
    // The first worker to stop sending.
    if let Some(stopped) = o.sending_stopped
        && m.sending_stopped.is_none_or(|s| stopped.at_s < s.at_s)
    {
        m.sending_stopped = Some(stopped);
    }
    m.failed += o.failed;
    m.refused_locally += o.refused_locally;
    for (what, n) in &o.protocol_violations {
        *m.protocol_violations.entry(what.clone()).or_default() += n;
    }
    let (c, o) = (&mut sum.connections, &other.connections);
    c.opened += o.opened;
    c.failed += o.failed;
    c.clients_refused += o.clients_refused;
    for (cause, n) in &o.login_failures_by_cause {
        *c.login_failures_by_cause.entry(cause.clone()).or_default() += n;
    }
    c.disconnects += o.disconnects;
    c.reconnects += o.reconnects;
    c.peak_concurrent += o.peak_concurrent;
    for (cause, n) in &o.disconnects_by_cause {
        *c.disconnects_by_cause.entry(cause.clone()).or_default() += n;
    }
}
