//! The radio energy model: joules spent by a device's radio, computed from the exact sequence
//! of its transfers.
//!
//! A cellular radio is idle until data has to move. It then pays a promotion (signalling to get
//! a channel), transfers, and stays in a high-power "tail" for seconds in case more data comes;
//! only then does it drop back to idle. A transfer during the tail only restarts the tail, with
//! no new promotion, which is why a heartbeat sent alone costs far more than one sent next to
//! other traffic. The model is pure: [`RadioMeter`] takes transfer times and answers the
//! energy spent up to a time, so the simulator feeds it each device's frames and gets the same
//! joules on every replay.
//!
//! Conventions:
//! - A transfer's timestamp is when its data is on the air (as the simulated link sees it). A
//!   promotion therefore happens just before it, and the promotion's energy (and the optional
//!   active time after it) is charged at the timestamp; the tail accrues from the end of the
//!   active time.
//! - A transfer at or after the end of the tail finds the radio idle and pays a new promotion;
//!   one strictly inside the tail (any stage) restarts the tail from its first stage.
//! - Transfers must come in non-decreasing time order: [`RadioMeter::try_transfer`] rejects an
//!   earlier one (and leaves the meter unchanged); [`RadioMeter::transfer`] panics on it,
//!   since a simulator feeding times backwards is a bug. A query before the latest transfer
//!   answers as of that transfer.
//!
//! Defaults (all configurable through [`RadioProfiles`]):
//! - LTE, Huang et al., MobiSys 2012: promotion 260 ms at 1210 mW, tail 11.58 s at 1060 mW. An
//!   isolated heartbeat costs 0.26 x 1.21 + 11.58 x 1.06 = 12.59 J.
//! - 3G, Qian et al., IMC 2010: the tail is 5 s in DCH at 800 mW then 12 s in FACH at 460 mW;
//!   the IDLE->DCH promotion takes about 2 s there. That paper gives no promotion power, so we
//!   use the 659 mW Huang et al. measured for a 3G promotion (on a faster network with a
//!   shorter 0.58 s promotion): 2 s x 659 mW. A transfer in FACH restarts the tail at DCH with
//!   no promotion; a real FACH->DCH switch costs a little extra for bigger transfers, which the
//!   model leaves out. 2G networks (cu-2g) use the 3G numbers: we have no comparable
//!   measurements of GPRS/EDGE, whose tails are similar in length.
//! - Wi-Fi: promotion 79 ms at 124 mW, tail 238 ms at 119 mW, the Wi-Fi row of Huang et al.'s
//!   power model as we recall it (not re-checked against the paper here: treat these as
//!   estimates). Power-save mode sleeps between beacons almost at once, so a Wi-Fi heartbeat
//!   costs about 0.04 J, hundreds of times less than on LTE.
//! - Active transfer time: zero. A heartbeat or a chat message is a few hundred bytes, moved in
//!   milliseconds, negligible against a tail of seconds; bulk transfers can set `active` and
//!   `active_mw` per transfer.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, de::Error as _};

/// A typical phone battery, for expressing joules as a share of a charge.
pub const BATTERY_WH: f64 = 11.5;

/// `joules` as a percentage of a [`BATTERY_WH`] battery.
pub fn battery_percent(joules: f64) -> f64 {
    joules / (BATTERY_WH * 3_600.0) * 100.0
}

/// What went wrong feeding a [`RadioMeter`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnergyError {
    /// A transfer came earlier than the one before it.
    #[error("radio transfer at {at:?} comes before the previous one at {previous:?}")]
    OutOfOrder {
        /// The rejected transfer's time.
        at: Duration,
        /// The latest accepted transfer's time.
        previous: Duration,
    },
}

pub use imlab_carrier::RadioKind;

/// The radio behind a network label: `home-wifi` and labels starting with "wifi" are Wi-Fi
/// (the same rule as the heartbeat presets use), the Chinese 2G/3G carriers are 3G (2G uses
/// the 3G numbers), and everything else (`us-lte`, the 4G `subway` and `elevator` profiles,
/// unknown names) is LTE, the most common radio today. The presets in imlab-carrier agree.
pub fn radio_for_network(label: &str) -> RadioKind {
    if imlab_core::heartbeat::is_wifi_network(label) {
        return RadioKind::Wifi;
    }
    match label {
        "cmcc-3g" | "cu-2g" | "ct-3g" => RadioKind::ThreeG,
        _ => RadioKind::Lte,
    }
}

/// Timings and powers of one radio. Powers are in milliwatts above the idle baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadioProfile {
    /// Time from idle to a channel, paid by a transfer that finds the radio idle.
    #[serde(with = "humantime_serde")]
    pub promotion: Duration,
    /// Power during the promotion.
    #[serde(deserialize_with = "milliwatts")]
    pub promotion_mw: f64,
    /// Time each transfer keeps the radio transmitting before its tail starts.
    #[serde(with = "humantime_serde")]
    pub active: Duration,
    /// Power while transmitting.
    #[serde(deserialize_with = "milliwatts")]
    pub active_mw: f64,
    /// First tail stage (LTE's whole tail, 3G's DCH).
    #[serde(with = "humantime_serde")]
    pub tail_high: Duration,
    /// Power in the first tail stage.
    #[serde(deserialize_with = "milliwatts")]
    pub tail_high_mw: f64,
    /// Second tail stage (3G's FACH); zero where there is none.
    #[serde(with = "humantime_serde")]
    pub tail_low: Duration,
    /// Power in the second tail stage.
    #[serde(deserialize_with = "milliwatts")]
    pub tail_low_mw: f64,
}

fn milliwatts<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let mw = f64::deserialize(deserializer)?;
    if mw.is_finite() && mw >= 0.0 {
        Ok(mw)
    } else {
        Err(D::Error::custom(format!(
            "power must be a non-negative number of milliwatts, not {mw}"
        )))
    }
}

impl RadioProfile {
    /// LTE (Huang et al., MobiSys 2012).
    pub const fn lte() -> RadioProfile {
        RadioProfile::idle_to_tail(260, 1_210.0, 11_580, 1_060.0, 0, 0.0)
    }

    /// 3G (Qian et al., IMC 2010; promotion power from Huang et al. 2012).
    pub const fn three_g() -> RadioProfile {
        RadioProfile::idle_to_tail(2_000, 659.0, 5_000, 800.0, 12_000, 460.0)
    }

    /// Wi-Fi in power-save mode (estimates after Huang et al. 2012).
    pub const fn wifi() -> RadioProfile {
        RadioProfile::idle_to_tail(79, 124.0, 238, 119.0, 0, 0.0)
    }

    /// A profile with no active time: promotion, then the two tail stages.
    const fn idle_to_tail(
        promotion_ms: u64,
        promotion_mw: f64,
        tail_high_ms: u64,
        tail_high_mw: f64,
        tail_low_ms: u64,
        tail_low_mw: f64,
    ) -> RadioProfile {
        RadioProfile {
            promotion: Duration::from_millis(promotion_ms),
            promotion_mw,
            active: Duration::ZERO,
            active_mw: 0.0,
            tail_high: Duration::from_millis(tail_high_ms),
            tail_high_mw,
            tail_low: Duration::from_millis(tail_low_ms),
            tail_low_mw,
        }
    }

    /// The default profile of a radio kind.
    pub const fn for_kind(kind: RadioKind) -> RadioProfile {
        match kind {
            RadioKind::Lte => RadioProfile::lte(),
            RadioKind::ThreeG => RadioProfile::three_g(),
            RadioKind::Wifi => RadioProfile::wifi(),
        }
    }

    /// The whole tail, all stages.
    pub fn tail(&self) -> Duration {
        self.tail_high + self.tail_low
    }

    /// Energy of one transfer that finds the radio idle and is followed by no other.
    pub fn isolated_transfer_joules(&self) -> f64 {
        self.promotion_joules() + self.active_joules() + self.tail_joules(self.tail())
    }

    fn promotion_joules(&self) -> f64 {
        joules(self.promotion, self.promotion_mw)
    }

    fn active_joules(&self) -> f64 {
        joules(self.active, self.active_mw)
    }

    /// Energy of the first `elapsed` of the tail.
    fn tail_joules(&self, elapsed: Duration) -> f64 {
        let high = elapsed.min(self.tail_high);
        let low = elapsed.saturating_sub(self.tail_high).min(self.tail_low);
        joules(high, self.tail_high_mw) + joules(low, self.tail_low_mw)
    }
}

fn joules(duration: Duration, mw: f64) -> f64 {
    duration.as_secs_f64() * mw / 1_000.0
}

/// The three radio profiles, as a scenario file may override them: `[energy.lte]`,
/// `[energy.3g]`, `[energy.wifi]`, each complete; a missing one keeps its default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadioProfiles {
    /// LTE.
    #[serde(default = "RadioProfile::lte")]
    pub lte: RadioProfile,
    /// 3G (and 2G).
    #[serde(default = "RadioProfile::three_g", rename = "3g")]
    pub three_g: RadioProfile,
    /// Wi-Fi.
    #[serde(default = "RadioProfile::wifi")]
    pub wifi: RadioProfile,
}

impl Default for RadioProfiles {
    fn default() -> Self {
        RadioProfiles {
            lte: RadioProfile::lte(),
            three_g: RadioProfile::three_g(),
            wifi: RadioProfile::wifi(),
        }
    }
}

impl RadioProfiles {
    /// The profile for a radio kind.
    pub fn get(&self, kind: RadioKind) -> &RadioProfile {
        match kind {
            RadioKind::Lte => &self.lte,
            RadioKind::ThreeG => &self.three_g,
            RadioKind::Wifi => &self.wifi,
        }
    }
}

/// Accumulates one radio's energy from its transfers.
#[derive(Debug, Clone)]
pub struct RadioMeter {
    profile: RadioProfile,
    /// Energy of everything before `tail_from`, promotions and active time included.
    charged_j: f64,
    /// When the current tail starts (the end of the last active time); `None` before the
    /// first transfer.
    tail_from: Option<Duration>,
    latest_transfer: Duration,
    n_promotions: u64,
    n_transfers: u64,
}

impl RadioMeter {
    /// A radio that has not transferred anything yet.
    pub fn new(profile: RadioProfile) -> RadioMeter {
        RadioMeter {
            profile,
            charged_j: 0.0,
            tail_from: None,
            latest_transfer: Duration::ZERO,
            n_promotions: 0,
            n_transfers: 0,
        }
    }

    /// The profile in use.
    pub fn profile(&self) -> &RadioProfile {
        &self.profile
    }

    /// Records a transfer at `at`, which must not be earlier than the previous one.
    pub fn try_transfer(&mut self, at: Duration) -> Result<(), EnergyError> {
        if self.n_transfers > 0 && at < self.latest_transfer {
            return Err(EnergyError::OutOfOrder {
                at,
                previous: self.latest_transfer,
            });
        }
        let profile = self.profile;
        self.latest_transfer = at;
        self.n_transfers += 1;
        self.charged_j += profile.active_joules();
        match self.tail_from {
            // Still transmitting the previous transfer: this one queues behind it.
            Some(tail_from) if at < tail_from => {
                self.tail_from = Some(tail_from + profile.active);
            }
            Some(tail_from) if at < tail_from + profile.tail() => {
                self.charged_j += profile.tail_joules(at - tail_from);
                self.tail_from = Some(at + profile.active);
            }
            previous => {
                if previous.is_some() {
                    self.charged_j += profile.tail_joules(profile.tail());
                }
                self.charged_j += profile.promotion_joules();
                self.n_promotions += 1;
                self.tail_from = Some(at + profile.active);
            }
        }
        Ok(())
    }

    /// Records a transfer at `at`.
    ///
    /// # Panics
    /// When `at` is earlier than the previous transfer: the caller's clock went backwards.
    pub fn transfer(&mut self, at: Duration) {
        if let Err(error) = self.try_transfer(at) {
            panic!("{error}");
        }
    }

    /// Joules spent from the start up to `until` (at least up to the latest transfer).
    pub fn joules(&self, until: Duration) -> f64 {
        match self.tail_from {
            None => 0.0,
            Some(tail_from) => {
                let until = until.max(self.latest_transfer);
                self.charged_j + self.profile.tail_joules(until.saturating_sub(tail_from))
            }
        }
    }

    /// Promotions paid so far: transfers that found the radio idle.
    pub fn n_promotions(&self) -> u64 {
        self.n_promotions
    }

    /// Transfers recorded so far.
    pub fn n_transfers(&self) -> u64 {
        self.n_transfers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    fn assert_joules(actual: f64, expected: f64, what: &str) {
        assert!(
            (actual - expected).abs() < 1e-9,
            "{what}: {actual} J, expected {expected} J"
        );
    }

    const LTE_PROMO_J: f64 = 0.26 * 1.21;
    const LTE_TAIL_J: f64 = 11.58 * 1.06;
    const G3_PROMO_J: f64 = 2.0 * 0.659;
    const G3_TAIL_J: f64 = 5.0 * 0.8 + 12.0 * 0.46;
    const WIFI_J: f64 = 0.079 * 0.124 + 0.238 * 0.119;

    /// (what, profile, transfer times in s, query time in s, joules, promotions).
    type Case = (&'static str, RadioProfile, &'static [f64], f64, f64, u64);

    /// Hand-computed cases.
    #[test]
    fn joules_match_hand_computed_cases() {
        let (lte, g3, wifi) = (
            RadioProfile::lte(),
            RadioProfile::three_g(),
            RadioProfile::wifi(),
        );
        let active = RadioProfile {
            active: s(0.5),
            active_mw: 2_000.0,
            ..lte
        };
        // One row per case, aligned as a table.
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("nothing sent", lte, &[], 100.0, 0.0, 0),
            ("isolated LTE heartbeat", lte, &[10.0], 100.0, 12.5894, 1),
            ("promotion charged at the transfer", lte, &[10.0], 10.0, LTE_PROMO_J, 1),
            ("tail accrues", lte, &[10.0], 11.0, LTE_PROMO_J + 1.06, 1),
            ("5 s apart", lte, &[0.0, 5.0], 60.0, LTE_PROMO_J + 5.0 * 1.06 + LTE_TAIL_J, 1),
            ("simultaneous", lte, &[3.0, 3.0, 3.0], 60.0, 12.5894, 1),
            ("exactly at tail end", lte, &[0.0, 11.58], 60.0, 2.0 * 12.5894, 2),
            ("just inside", lte, &[0.0, 11.579], 60.0, LTE_PROMO_J + 11.579 * 1.06 + LTE_TAIL_J, 1),
            ("isolated 3G", g3, &[0.0], 60.0, G3_PROMO_J + G3_TAIL_J, 1),
            ("3G in DCH", g3, &[0.0], 3.0, G3_PROMO_J + 3.0 * 0.8, 1),
            ("3G in FACH", g3, &[0.0], 8.0, G3_PROMO_J + 4.0 + 3.0 * 0.46, 1),
            // A transfer in FACH restarts the tail at DCH without a promotion.
            ("3G restart", g3, &[0.0, 10.0], 60.0, G3_PROMO_J + 4.0 + 5.0 * 0.46 + G3_TAIL_J, 1),
            ("3G at tail end", g3, &[0.0, 17.0], 60.0, 2.0 * (G3_PROMO_J + G3_TAIL_J), 2),
            ("isolated Wi-Fi", wifi, &[1.0], 2.0, WIFI_J, 1),
            ("Wi-Fi in tail", wifi, &[1.0, 1.2], 2.0, WIFI_J + 0.2 * 0.119, 1),
            ("Wi-Fi after tail", wifi, &[1.0, 1.5], 2.0, 2.0 * WIFI_J, 2),
            ("active time", active, &[0.0], 0.0, LTE_PROMO_J + 1.0, 1),
            ("active then tail", active, &[0.0], 60.0, 12.5894 + 1.0, 1),
            // The second transfer waits for the first: one more second of transmitting.
            ("queued", active, &[0.0, 0.2], 1.0, LTE_PROMO_J + 2.0, 1),
            ("queued then tail", active, &[0.0, 0.2], 60.0, 12.5894 + 2.0, 1),
        ];
        for &(what, profile, transfers_s, until_s, joules, n_promotions) in cases {
            let mut meter = RadioMeter::new(profile);
            for &at_s in transfers_s {
                meter.transfer(s(at_s));
            }
            assert_joules(meter.joules(s(until_s)), joules, what);
            assert_eq!(meter.n_promotions(), n_promotions, "{what}");
            assert_eq!(meter.n_transfers(), transfers_s.len() as u64, "{what}");
        }
        assert_joules(lte.isolated_transfer_joules(), 12.5894, "LTE");
        assert_joules(g3.isolated_transfer_joules(), 10.838, "3G");
        assert_joules(wifi.isolated_transfer_joules(), WIFI_J, "Wi-Fi");
        assert!(lte.isolated_transfer_joules() / WIFI_J > 300.0);
    }

    #[test]
    fn transfers_out_of_order_are_rejected_and_leave_the_meter_unchanged() {
        let mut meter = RadioMeter::new(RadioProfile::lte());
        meter.transfer(s(5.0));
        let error = meter.try_transfer(s(4.0)).unwrap_err();
        assert_eq!(
            error,
            EnergyError::OutOfOrder {
                at: s(4.0),
                previous: s(5.0)
            }
        );
        assert!(error.to_string().contains("comes before the previous one"));
        assert_eq!(meter.n_transfers(), 1);
        assert_joules(
            meter.joules(s(100.0)),
            12.5894,
            "after the rejected transfer",
        );
        // A query before the latest transfer answers as of that transfer.
        assert_joules(
            meter.joules(s(1.0)),
            LTE_PROMO_J,
            "query before the transfer",
        );
    }

    /// SPEC: 320 isolated LTE heartbeats a day (every 4.5 min) are about 1.1 Wh, a tenth of a
    /// phone battery.
    #[test]
    fn a_day_of_320_lte_heartbeats_is_a_tenth_of_a_battery() {
        let mut meter = RadioMeter::new(RadioProfile::lte());
        for i in 0..320 {
            meter.transfer(Duration::from_secs(i * 270));
        }
        let joules = meter.joules(Duration::from_secs(86_400));
        assert_joules(joules, 320.0 * 12.5894, "a day");
        assert!((joules / 3_600.0 - 1.119).abs() < 0.001, "{joules} J");
        assert!((battery_percent(joules) - 9.731).abs() < 0.001);
        assert_joules(
            battery_percent(BATTERY_WH * 3_600.0),
            100.0,
            "a full battery",
        );
    }

    #[test]
    fn network_labels_map_to_radios() {
        for (labels, kind) in [
            ("home-wifi wifi wifi:office", RadioKind::Wifi),
            ("us-lte mars-5g subway elevator", RadioKind::Lte),
            ("cmcc-3g cu-2g ct-3g", RadioKind::ThreeG),
        ] {
            for label in labels.split_whitespace() {
                assert_eq!(radio_for_network(label), kind, "{label}");
                if let Some(preset) = crate::carrier::preset(label) {
                    assert_eq!(preset.radio, kind, "preset {label}");
                }
            }
            let profile = *RadioProfiles::default().get(kind);
            assert_eq!(profile, RadioProfile::for_kind(kind));
        }
    }

    #[test]
    fn profiles_read_from_toml_with_defaults_and_named_errors() {
        let toml_3g = "[3g]\npromotion = \"1s 500ms\"\npromotion_mw = 700\nactive = \"0s\"\n\
            active_mw = 0\ntail_high = \"4s\"\ntail_high_mw = 800.5\ntail_low = \"10s\"\n\
            tail_low_mw = 460\n";
        let profiles: RadioProfiles = toml::from_str(toml_3g).unwrap();
        assert_eq!(profiles.lte, RadioProfile::lte());
        assert_eq!(profiles.three_g.promotion, Duration::from_millis(1_500));
        assert_eq!(profiles.three_g.tail_high_mw, 800.5);
        let unknown = toml::from_str::<RadioProfiles>("[lte]\ntail = \"5s\"\n").unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `tail`"),
            "{unknown}"
        );
        let defaults = toml::to_string(&RadioProfiles::default()).unwrap();
        assert_eq!(
            toml::from_str::<RadioProfiles>(&defaults).unwrap(),
            RadioProfiles::default()
        );
        let negative = defaults.replacen("promotion_mw = 1210.0", "promotion_mw = -1.0", 1);
        let error = toml::from_str::<RadioProfiles>(&negative).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("non-negative number of milliwatts"),
            "{error}"
        );
    }
}
