//! Splitting a sweep across machines and putting it back together. `--shard I/N` runs the
//! seeds of a range whose offset from its first seed is I modulo N (shards numbered 0..N, like
//! a Kubernetes indexed job's `JOB_COMPLETION_INDEX`), and writes `sweep.json` beside
//! `sweep.csv`: what was swept (the scenario's file and a hash of its text, the range, the
//! shard, the overrides, the build), so `imlab sim sweep merge DIR...` can refuse to mix
//! different sweeps, or builds (a seed's trace hash holds only for the build that ran it),
//! and name the shards or seeds that are missing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sweep::SeedOutcome;

/// One shard of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, 0-based.
    pub index: u64,
    /// Shards in all.
    pub count: u64,
}

impl Shard {
    /// The whole range as one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` with `I < N`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not I/N (for example 0/4)"))?;
        let index: u64 = index
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: {index:?} is not a shard index"))?;
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: {count:?} is not a shard count"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "{text:?}: the index must be below the count (shards are numbered 0..N, like a \
                 Kubernetes indexed job's JOB_COMPLETION_INDEX)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// True when `seed` of the range starting at `first` belongs to this shard.
    pub fn holds(&self, first: u64, seed: u64) -> bool {
        (seed - first) % self.count == self.index
    }

    /// This shard's seeds of `first..=last`.
    pub fn seeds(&self, first: u64, last: u64) -> Vec<u64> {
        (first..=last).filter(|s| self.holds(first, *s)).collect()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What a sweep directory holds (`sweep.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepMeta {
    /// Schema version of this file.
    pub schema_version: u32,
    /// The scenario file as given.
    pub scenario_file: String,
    /// xxh3 of the scenario file's text, hex.
    pub scenario_hash: String,
    /// The seed range's first seed.
    pub first_seed: u64,
    /// The seed range's last seed.
    pub last_seed: u64,
    /// The shard this directory holds.
    pub shard: Shard,
    /// The run's overrides and planted bug, as command-line flags (must match to merge).
    pub flags: String,
    /// The git commit of the build that ran it (`-dirty` when tracked files differed; empty
    /// when unknown, and in files written before builds were named). Must match to merge,
    /// unless mixed builds are allowed; a merge of several names them all, comma-separated.
    #[serde(default)]
    pub commit: String,
}

/// The version of `sweep.json`.
pub const META_SCHEMA_VERSION: u32 = 1;

/// Hash of a scenario file's text.
pub fn scenario_hash(text: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// Writes `sweep.json` into `dir`.
pub fn write_meta(dir: &Path, meta: &SweepMeta) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(meta).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("sweep.json"), json + "\n")
}

/// Why shards could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A file could not be read or parsed.
    #[error("{file}: {message}")]
    File {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Two directories hold different sweeps.
    #[error("{dir} holds a different sweep than {first}: {what} differs ({a} vs {b})")]
    Mismatch {
        /// The first directory.
        first: PathBuf,
        /// The differing one.
        dir: PathBuf,
        /// Which field.
        what: &'static str,
        /// First's value.
        a: String,
        /// This one's.
        b: String,
    },
    /// Seeds of the range are in no directory.
    #[error("seeds missing: {seeds} (shards missing: {shards})")]
    Missing {
        /// The missing seeds, abbreviated.
        seeds: String,
        /// The shards they belong to.
        shards: String,
    },
    /// A seed is in two directories.
    #[error("seed {seed} is in both {a} and {b}")]
    Duplicate {
        /// The seed.
        seed: u64,
        /// One directory.
        a: PathBuf,
        /// The other.
        b: PathBuf,
    },
}

fn file_error(file: PathBuf, message: impl std::fmt::Display) -> MergeError {
    MergeError::File {
        file,
        message: message.to_string(),
    }
}

/// Reads one directory: its `sweep.json` and `sweep.csv`.
pub fn read_dir(dir: &Path) -> Result<(SweepMeta, Vec<SeedOutcome>), MergeError> {
    let meta_file = dir.join("sweep.json");
    let text = std::fs::read_to_string(&meta_file).map_err(|e| file_error(meta_file.clone(), e))?;
    let meta: SweepMeta =
        serde_json::from_str(&text).map_err(|e| file_error(meta_file.clone(), e))?;
    if meta.schema_version != META_SCHEMA_VERSION {
        return Err(file_error(
            meta_file,
            format!(
                "schema_version {} (this build reads {META_SCHEMA_VERSION})",
                meta.schema_version
            ),
        ));
    }
    let csv_file = dir.join("sweep.csv");
    let outcomes = crate::sweep::read_csv(&csv_file).map_err(|e| file_error(csv_file, e))?;
    Ok((meta, outcomes))
}

/// Merges sweep directories: checks they hold shards of one sweep, run by one build unless
/// `mixed_builds`, that no seed is twice and none is missing; returns the sweep's
/// description (shard: all; every build that ran a shard) and outcomes by seed.
pub fn merge(
    dirs: &[PathBuf],
    mixed_builds: bool,
) -> Result<(SweepMeta, Vec<SeedOutcome>), MergeError> {
    let mut merged: std::collections::BTreeMap<u64, (SeedOutcome, PathBuf)> = Default::default();
    let mut first: Option<(PathBuf, SweepMeta)> = None;
    let mut commits = std::collections::BTreeSet::new();
    for dir in dirs {
        let (meta, outcomes) = read_dir(dir)?;
        commits.insert(meta.commit.clone());
        if let Some((first_dir, first_meta)) = &first {
            let named = |commit: &str| match commit {
                "" => "an unnamed build".to_string(),
                commit => commit.to_string(),
            };
            let build = (!mixed_builds).then(|| {
                (
                    "commit (the build that ran it; --allow-mixed-builds merges anyway)",
                    named(&first_meta.commit),
                    named(&meta.commit),
                )
            });
            let fields: [(&'static str, String, String); 5] = [
                (
                    "scenario_hash",
                    first_meta.scenario_hash.clone(),
                    meta.scenario_hash.clone(),
                ),
                (
                    "first_seed",
                    first_meta.first_seed.to_string(),
                    meta.first_seed.to_string(),
                ),
                (
                    "last_seed",
                    first_meta.last_seed.to_string(),
                    meta.last_seed.to_string(),
                ),
                (
                    "shard count",
                    first_meta.shard.count.to_string(),
                    meta.shard.count.to_string(),
                ),
                ("flags", first_meta.flags.clone(), meta.flags.clone()),
            ];
            if let Some((what, a, b)) = fields.into_iter().chain(build).find(|(_, a, b)| a != b) {
                return Err(MergeError::Mismatch {
                    first: first_dir.clone(),
                    dir: dir.clone(),
                    what,
                    a,
                    b,
                });
            }
        } else {
            first = Some((dir.clone(), meta.clone()));
        }
        for outcome in outcomes {
            if let Some((_, other)) = merged.get(&outcome.seed) {
                return Err(MergeError::Duplicate {
                    seed: outcome.seed,
                    a: other.clone(),
                    b: dir.clone(),
                });
            }
            merged.insert(outcome.seed, (outcome, dir.clone()));
        }
    }
    let (_, mut meta) =
        first.ok_or_else(|| file_error(PathBuf::from("."), "no directories to merge"))?;
    let missing: Vec<u64> = (meta.first_seed..=meta.last_seed)
        .filter(|seed| !merged.contains_key(seed))
        .collect();
    if !missing.is_empty() {
        let mut shards: Vec<u64> = missing
            .iter()
            .map(|seed| (seed - meta.first_seed) % meta.shard.count)
            .collect();
        shards.sort_unstable();
        shards.dedup();
        let shown: Vec<String> = missing.iter().take(10).map(u64::to_string).collect();
        let more = if missing.len() > 10 {
            format!(" and {} more", missing.len() - 10)
        } else {
            String::new()
        };
        return Err(MergeError::Missing {
            seeds: format!("{}{more}", shown.join(", ")),
            shards: shards
                .iter()
                .map(|i| format!("{i}/{}", meta.shard.count))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    meta.shard = Shard::ALL;
    meta.commit = commits.into_iter().collect::<Vec<_>>().join(",");
    Ok((meta, merged.into_values().map(|(o, _)| o).collect()))
}
