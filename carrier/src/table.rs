//! A carrier table: the TOML keys of a scenario's `[carriers.NAME]`, also the format of a
//! profile file for `imlab proxy --profile FILE`. One parser and one set of checks for both.
//!
//! A table either names a preset (`preset = "cmcc-3g"`, or is itself named like one) and
//! overrides some of its keys, or defines a carrier of its own, which must then give its NAT
//! timeout, RTT median, bandwidth and loss.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::profile::{self, CarrierProfile, OnExpiry, Outages, RadioKind, Refresh};

/// The keys of one carrier table, as read from TOML.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierTable {
    preset: Option<String>,
    #[serde(with = "humantime_serde", default)]
    nat_timeout: Option<Duration>,
    #[serde(default)]
    nat_timeout_range: Option<Vec<String>>,
    refresh: Option<Refresh>,
    on_expiry: Option<OnExpiry>,
    #[serde(with = "humantime_serde", default)]
    rtt_median: Option<Duration>,
    #[serde(with = "humantime_serde", default)]
    rtt_p99: Option<Duration>,
    bandwidth_kbps: Option<u32>,
    loss: Option<f64>,
    max_retries: Option<u32>,
    #[serde(with = "humantime_serde", default)]
    server_give_up: Option<Duration>,
    outages: Option<Outages>,
    wifi: Option<bool>,
    radio: Option<RadioKind>,
}

/// A key of a carrier table with an impossible value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", if key.is_empty() { String::new() } else { format!("key `{key}`: ") })]
pub struct TableError {
    /// The key within the table (empty: the table as a whole).
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> TableError {
    TableError {
        key: key.into(),
        message: message.into(),
    }
}

/// A profile file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileFileError {
    /// Reading the file failed.
    #[error("cannot read carrier profile {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or a key that a carrier table does not have.
    #[error("carrier profile {}: {message}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// The TOML parser's message (it names the key and line).
        message: String,
    },
    /// A key with an impossible value.
    #[error("carrier profile {}: {error}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key and what is wrong.
        error: TableError,
    },
}

/// A built-in preset by name, or a carrier table read from `spec` as a file.
pub fn preset_or_file(spec: &str) -> Result<CarrierProfile, ProfileFileError> {
    match profile::preset(spec) {
        Some(profile) => Ok(profile),
        None => load_file(Path::new(spec)),
    }
}

/// Reads a carrier table from a TOML file; the profile is named after the file's stem.
pub fn load_file(file: &Path) -> Result<CarrierProfile, ProfileFileError> {
    let text = std::fs::read_to_string(file).map_err(|source| ProfileFileError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let table: CarrierTable = toml::from_str(&text).map_err(|error| ProfileFileError::Parse {
        file: file.to_path_buf(),
        message: error.to_string(),
    })?;
    let name = file
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "profile".into());
    table
        .into_profile(&name)
        .map_err(|error| ProfileFileError::Invalid {
            file: file.to_path_buf(),
            error,
        })
}

impl CarrierTable {
    /// The profile this table describes, checked.
    pub fn into_profile(self, name: &str) -> Result<CarrierProfile, TableError> {
        let mut profile = match &self.preset {
            Some(preset_name) => profile::preset(preset_name).ok_or_else(|| {
                invalid(
                    "preset",
                    format!(
                        "unknown carrier preset {preset_name:?}; known: {}",
                        profile::PRESET_NAMES.join(", ")
                    ),
                )
            })?,
            // A carrier named like a preset is that preset; any other name is defined here.
            None => match profile::preset(name) {
                Some(profile) => profile,
                None => self.custom_base(name)?,
            },
        };
        profile.name = name.to_string();
        self.apply_nat(&mut profile)?;
        self.apply_link(&mut profile)?;
        if let Some(give_up) = self.server_give_up {
            profile.server_give_up = give_up;
        }
        if let Some(outages) = self.outages {
            if outages.duration >= outages.every || outages.every.is_zero() {
                return Err(invalid(
                    "outages",
                    format!(
                        "duration {:?} must be shorter than every {:?}",
                        outages.duration, outages.every
                    ),
                ));
            }
            profile.outages = Some(outages);
        }
        if let Some(wifi) = self.wifi {
            profile.wifi = wifi;
            if wifi {
                profile.radio = RadioKind::Wifi;
            }
        }
        if let Some(radio) = self.radio {
            profile.radio = radio;
        }
        Ok(profile)
    }

    fn apply_nat(&self, profile: &mut CarrierProfile) -> Result<(), TableError> {
        if let Some(timeout) = self.nat_timeout {
            profile.nat_timeout_min = timeout;
            profile.nat_timeout_max = timeout;
        }
        if let Some(range) = &self.nat_timeout_range {
            let parsed: Vec<Duration> = range
                .iter()
                .map(|text| {
                    humantime::parse_duration(text)
                        .map_err(|error| invalid("nat_timeout_range", format!("{text:?}: {error}")))
                })
                .collect::<Result<_, _>>()?;
            let [low, high] = parsed[..] else {
                return Err(invalid(
                    "nat_timeout_range",
                    format!("expected [low, high], got {} values", parsed.len()),
                ));
            };
            if low > high {
                return Err(invalid(
                    "nat_timeout_range",
                    format!("low {low:?} is above high {high:?}"),
                ));
            }
            profile.nat_timeout_min = low;
            profile.nat_timeout_max = high;
        }
        if profile.nat_timeout_min.is_zero() {
            return Err(invalid("nat_timeout", "must be positive, got 0s"));
        }
        if let Some(refresh) = self.refresh {
            profile.refresh = refresh;
        }
        if let Some(on_expiry) = self.on_expiry {
            profile.on_expiry = on_expiry;
        }
        Ok(())
    }

    fn apply_link(&self, profile: &mut CarrierProfile) -> Result<(), TableError> {
        if let Some(rtt) = self.rtt_median {
            profile.rtt_median = rtt;
            profile.rtt_p99 = profile.rtt_p99.max(rtt);
        }
        if let Some(rtt) = self.rtt_p99 {
            profile.rtt_p99 = rtt;
        }
        if profile.rtt_p99 < profile.rtt_median {
            return Err(invalid(
                "rtt_p99",
                format!(
                    "{:?} is below rtt_median {:?}",
                    profile.rtt_p99, profile.rtt_median
                ),
            ));
        }
        if let Some(bandwidth) = self.bandwidth_kbps {
            if bandwidth == 0 {
                return Err(invalid("bandwidth_kbps", "must be positive, got 0"));
            }
            profile.bandwidth_kbps = bandwidth;
        }
        if let Some(loss) = self.loss {
            if !(0.0..0.5).contains(&loss) {
                return Err(invalid("loss", format!("must be in [0, 0.5), got {loss}")));
            }
            profile.loss = loss;
        }
        if let Some(retries) = self.max_retries {
            if !(1..=15).contains(&retries) {
                return Err(invalid(
                    "max_retries",
                    format!("must be in 1..=15, got {retries}"),
                ));
            }
            profile.max_retries = retries;
        }
        Ok(())
    }

    /// The base of a carrier defined without a preset: its NAT and link keys are required
    /// (the checks above apply them); the rest take the defaults of a typical LTE network.
    fn custom_base(&self, name: &str) -> Result<CarrierProfile, TableError> {
        let missing: Vec<&str> = [
            (
                "nat_timeout",
                self.nat_timeout.is_some() || self.nat_timeout_range.is_some(),
            ),
            ("rtt_median", self.rtt_median.is_some()),
            ("bandwidth_kbps", self.bandwidth_kbps.is_some()),
            ("loss", self.loss.is_some()),
        ]
        .into_iter()
        .filter(|(_, given)| !given)
        .map(|(field, _)| field)
        .collect();
        if !missing.is_empty() {
            return Err(invalid(
                "",
                format!(
                    "{name:?} is not a preset ({}), so it needs `preset = \"...\"` or its own {}",
                    profile::PRESET_NAMES.join(", "),
                    missing.join(", ")
                ),
            ));
        }
        Ok(CarrierProfile::custom(name))
    }
}
