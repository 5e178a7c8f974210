//! Reconnection storms: after each server crash, how fast the devices that were logged in at
//! the crash log in again, and how many connections and logins the server takes per second
//! meanwhile. A device whose app is killed or goes inactive before it is back stops being
//! waited for: it is not trying to come back, so its absence says nothing of the server.
//!
//! Fed by the device observer (every login), the fault driver (crash and restart times) and
//! the driver's readings of the server's counters between simulation steps (connections
//! accepted, queue high-water marks); kept in the ledger. Memory: two counters per simulated
//! second with a login or an accept, and one flag per device per crash.

use std::collections::BTreeMap;

use serde::Serialize;

/// What the run recorded about logins and crashes.
#[derive(Debug, Clone, Default)]
pub struct StormLog {
    /// Logins per simulated second (seconds without a login are absent).
    logins_per_s: BTreeMap<u64, u32>,
    /// Connections the server accepted per simulated second (seconds without one are absent).
    accepts_per_s: BTreeMap<u64, u32>,
    /// The most frames one connection's outbox held at once, over every server incarnation.
    outbox_high_water: u64,
    /// The most group fan-out jobs one shard queue held at once, likewise.
    fanout_queue_high_water: u64,
    storms: Vec<Storm>,
}

#[derive(Debug, Clone)]
struct Storm {
    crashed_ms: u64,
    restarted_ms: Option<u64>,
    /// Devices logged in at the crash and not back yet.
    awaiting: Vec<bool>,
    n_connected: u32,
    /// Of those, devices that stopped trying before they were back (app killed or inactive).
    n_left: u32,
    /// When each returning device logged in again, in order.
    back_ms: Vec<u64>,
}

/// One crash and the storm after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StormSummary {
    /// When the server crashed (simulated s).
    pub crashed_at_s: f64,
    /// When it was back (None: it never came back before the end).
    pub restarted_at_s: Option<f64>,
    /// Devices logged in at the crash.
    pub devices_connected: u32,
    /// Of those, logged in again before the next crash or the end.
    pub devices_back: u32,
    /// Of those, devices whose app was killed or went inactive before they were back: they
    /// were not trying to log in, so they are not waited for. `devices_connected -
    /// devices_left` is what the storm's percentiles and its end are taken over.
    pub devices_left: u32,
    /// Seconds from the restart until 50%, 90% and 99% of the devices still trying
    /// (`devices_connected - devices_left`) were back (None: never).
    pub back_50_s: Option<f64>,
    /// See `back_50_s`.
    pub back_90_s: Option<f64>,
    /// See `back_50_s`.
    pub back_99_s: Option<f64>,
    /// The most logins the server took in one simulated second during the storm: from the
    /// restart until the last of `devices_connected` was back (or, if some never were, until
    /// the next crash or the end).
    pub logins_per_s_peak: u32,
    /// The most connections the server accepted in one simulated second in the same window
    /// (retries that failed before logging in count here, not in logins).
    pub accepts_per_s_peak: u32,
}

/// One simulated second with a login or an accepted connection (`storms.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormSecond {
    pub second: u64,
    pub logins: u32,
    pub accepts: u32,
}

/// Storm metrics of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StormMetrics {
    /// When the network healed (the scenario's duration, simulated s): every device then
    /// reconnects at once to converge, so the run-wide peaks below stop before it.
    pub healed_at_s: u64,
    /// The most logins in one simulated second before the heal.
    pub logins_per_s_peak: u32,
    /// The second it happened in (simulated s).
    pub logins_peak_at_s: u64,
    /// The most connections the server accepted in one simulated second before the heal.
    pub accepts_per_s_peak: u32,
    /// The second it happened in (simulated s).
    pub accepts_peak_at_s: u64,
    /// The most frames one connection's outbox held at once (the server's `outbox_len_max`
    /// bounds it), over every server incarnation.
    pub outbox_high_water: u64,
    /// The most jobs one group fan-out shard queue held at once (bounded by the server's
    /// `fanout_queue_len_max` over its shards), over every server incarnation.
    pub fanout_queue_high_water: u64,
    /// One per server crash, in order.
    pub crashes: Vec<StormSummary>,
    /// Every second with a login or an accept, in order: `storms.csv`, not results.json.
    #[serde(skip)]
    pub seconds: Vec<StormSecond>,
}

impl StormLog {
    /// The server crashed at `at_ms`; `connected` says, per device, who was logged in.
    pub fn crash(&mut self, at_ms: u64, awaiting: Vec<bool>) {
        let n_connected = awaiting.iter().filter(|c| **c).count() as u32;
        self.storms.push(Storm {
            crashed_ms: at_ms,
            restarted_ms: None,
            awaiting,
            n_connected,
            n_left: 0,
            back_ms: Vec::new(),
        });
    }

    /// The crashed server is back at `at_ms`.
    pub fn restart(&mut self, at_ms: u64) {
        if let Some(storm) = self.storms.last_mut() {
            storm.restarted_ms.get_or_insert(at_ms);
        }
    }

    /// The server accepted `n` connections in simulated second `second`.
    pub fn accepts(&mut self, second: u64, n: u32) {
        if n > 0 {
            *self.accepts_per_s.entry(second).or_default() += n;
        }
    }

    /// The server's queues held this much at most so far (readings of its counters).
    pub fn queues(&mut self, outbox_high_water: u64, fanout_queue_high_water: u64) {
        self.outbox_high_water = self.outbox_high_water.max(outbox_high_water);
        self.fanout_queue_high_water = self.fanout_queue_high_water.max(fanout_queue_high_water);
    }

    /// `device` logged in at `at_ms`.
    pub fn login(&mut self, device: usize, at_ms: u64) {
        *self.logins_per_s.entry(at_ms / 1_000).or_default() += 1;
        if let Some(storm) = self.storms.last_mut()
            && storm.awaiting.get(device).copied().unwrap_or(false)
        {
            storm.awaiting[device] = false;
            storm.back_ms.push(at_ms);
        }
    }

    /// `device` stopped trying to be connected (its app was killed, or it went inactive and
    /// dropped its connection): if the last crash still waits for it, it stops waiting.
    pub fn left(&mut self, device: usize) {
        if let Some(storm) = self.storms.last_mut()
            && storm.awaiting.get(device).copied().unwrap_or(false)
        {
            storm.awaiting[device] = false;
            storm.n_left += 1;
        }
    }

    /// The metrics, with `end_ms` closing the last storm's window. `heal_ms` is when the
    /// network healed: the heal makes every device reconnect in the same second (the
    /// simulator's convergence check, not the scenario), so the run-wide peaks are taken over
    /// the seconds before it; `storms.csv` and each crash's own window keep every second.
    pub fn summary(&self, end_ms: u64, heal_ms: u64) -> StormMetrics {
        let healed_at_s = heal_ms / 1_000;
        let (logins_peak_at_s, logins_per_s_peak) = peak(self.logins_per_s.range(..healed_at_s));
        let (accepts_peak_at_s, accepts_per_s_peak) = peak(self.accepts_per_s.range(..healed_at_s));
        let crashes = self
            .storms
            .iter()
            .enumerate()
            .map(|(i, storm)| {
                // The storm lasts from the restart until the last awaited device is back (or
                // until the next crash or the end, when some never are).
                let next_ms = self.storms.get(i + 1).map_or(end_ms, |s| s.crashed_ms);
                let n_trying = storm.n_connected - storm.n_left;
                let all_back = storm.back_ms.len() as u32 == n_trying;
                let window_end_s = match storm.back_ms.last() {
                    Some(last_ms) if all_back => *last_ms,
                    _ => next_ms,
                } / 1_000;
                let window_start_s = storm.restarted_ms.unwrap_or(end_ms) / 1_000;
                let window_peak = |per_s: &BTreeMap<u64, u32>| {
                    if window_start_s <= window_end_s {
                        peak(per_s.range(window_start_s..=window_end_s)).1
                    } else {
                        0
                    }
                };
                let back_after = |fraction: f64| {
                    let restarted_ms = storm.restarted_ms?;
                    let needed = (fraction * f64::from(n_trying)).ceil() as usize;
                    let at_ms = storm.back_ms.get(needed.max(1) - 1)?;
                    Some(at_ms.saturating_sub(restarted_ms) as f64 / 1_000.0)
                };
                StormSummary {
                    crashed_at_s: storm.crashed_ms as f64 / 1_000.0,
                    restarted_at_s: storm.restarted_ms.map(|ms| ms as f64 / 1_000.0),
                    devices_connected: storm.n_connected,
                    devices_back: storm.back_ms.len() as u32,
                    devices_left: storm.n_left,
                    back_50_s: back_after(0.50),
                    back_90_s: back_after(0.90),
                    back_99_s: back_after(0.99),
                    logins_per_s_peak: window_peak(&self.logins_per_s),
                    accepts_per_s_peak: window_peak(&self.accepts_per_s),
                }
            })
            .collect();
        StormMetrics {
            healed_at_s,
            logins_per_s_peak,
            logins_peak_at_s,
            accepts_per_s_peak,
            accepts_peak_at_s,
            outbox_high_water: self.outbox_high_water,
            fanout_queue_high_water: self.fanout_queue_high_water,
            crashes,
            seconds: self.seconds(),
        }
    }

    /// Every second with a login or an accept, merged from the two maps in order.
    fn seconds(&self) -> Vec<StormSecond> {
        let mut seconds: BTreeMap<u64, StormSecond> = BTreeMap::new();
        let maps = [(&self.logins_per_s, true), (&self.accepts_per_s, false)];
        for (per_s, logins) in maps {
            for (second, n) in per_s {
                let row = seconds.entry(*second).or_insert(StormSecond {
                    second: *second,
                    logins: 0,
                    accepts: 0,
                });
                if logins {
                    row.logins = *n;
                } else {
                    row.accepts = *n;
                }
            }
        }
        seconds.into_values().collect()
    }
}

/// The busiest second of a range: (second, logins), the earliest on a tie; (0, 0) when empty.
fn peak<'a>(seconds: impl Iterator<Item = (&'a u64, &'a u32)>) -> (u64, u32) {
    seconds.fold(
        (0, 0),
        |best, (second, n)| {
            if *n > best.1 { (*second, *n) } else { best }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_counts_the_return_of_the_devices_logged_in_at_it() {
        let mut log = StormLog::default();
        for device in 0..4 {
            log.login(device, 1_000 + device as u64);
        }
        // Devices 0, 1, 2 are logged in at the crash; 3 is not.
        log.crash(60_000, vec![true, true, true, false]);
        log.restart(90_000);
        log.login(3, 90_100); // not awaited: a login, not a return
        log.login(1, 90_500);
        log.login(1, 90_600); // a second login of a device already back
        log.login(0, 91_200);
        log.login(2, 150_000); // the last one back: the storm ends
        for at_ms in [170_000, 170_100, 170_200, 170_300] {
            log.login(3, at_ms); // after the storm
        }
        let metrics = log.summary(200_000, 200_000);
        // Seconds 1 and 170 both had four logins: the earliest is the peak.
        assert_eq!(
            (metrics.logins_peak_at_s, metrics.logins_per_s_peak),
            (1, 4)
        );
        let storm = &metrics.crashes[0];
        assert_eq!(storm.crashed_at_s, 60.0);
        assert_eq!(storm.restarted_at_s, Some(90.0));
        assert_eq!((storm.devices_connected, storm.devices_back), (3, 3));
        // 50% of 3 is 2 devices, the second back 1.2 s after the restart; 90% and 99% need
        // all 3, the last back 60 s after it.
        assert_eq!(storm.back_50_s, Some(1.2));
        assert_eq!((storm.back_90_s, storm.back_99_s), (Some(60.0), Some(60.0)));
        // During the storm (seconds 90 to 150) the busiest second was 90: devices 3, 1, 1.
        assert_eq!(storm.logins_per_s_peak, 3);
    }

    #[test]
    fn a_device_that_stops_trying_is_not_waited_for() {
        let mut log = StormLog::default();
        log.crash(10_000, vec![true, true, true, true, true]);
        log.left(4); // killed while the server is down
        log.restart(20_000);
        log.login(0, 21_000);
        log.login(1, 22_000);
        log.left(1); // killed after it was back: still back, not left
        log.left(3); // went inactive before it was back
        log.login(2, 25_000);
        log.login(4, 300_000); // restarted much later: neither back nor in the storm
        log.login(3, 300_500);
        let storm = &log.summary(400_000, 400_000).crashes[0];
        assert_eq!(
            (
                storm.devices_connected,
                storm.devices_back,
                storm.devices_left
            ),
            (5, 3, 2)
        );
        // Over the three still trying: 50% is the second back, 99% the third.
        assert_eq!(storm.back_50_s, Some(2.0));
        assert_eq!((storm.back_90_s, storm.back_99_s), (Some(5.0), Some(5.0)));
        // The storm ended with the third (second 25), before the late restarts' logins.
        assert_eq!(storm.logins_per_s_peak, 1);
    }

    #[test]
    fn devices_that_never_return_leave_the_storm_open_until_the_next_crash() {
        let mut log = StormLog::default();
        log.crash(10_000, vec![true, true]);
        log.restart(20_000);
        log.login(0, 25_000);
        log.login(0, 40_000);
        log.login(0, 40_500);
        log.crash(50_000, vec![true, false]);
        let metrics = log.summary(90_000, 90_000);
        let first = &metrics.crashes[0];
        assert_eq!((first.devices_back, first.back_50_s), (1, Some(5.0)));
        assert_eq!((first.back_90_s, first.back_99_s), (None, None));
        // Open until the next crash at 50 s: second 40's two logins are in it.
        assert_eq!(first.logins_per_s_peak, 2);
        let second = &metrics.crashes[1];
        assert_eq!((second.restarted_at_s, second.devices_connected), (None, 1));
    }

    #[test]
    fn accepts_and_queue_marks_are_summed_per_second_and_peaked_per_storm() {
        let mut log = StormLog::default();
        log.accepts(1, 5);
        log.login(0, 1_200);
        log.queues(3, 0);
        log.crash(10_000, vec![true]);
        log.restart(20_000);
        log.accepts(20, 2);
        log.accepts(20, 4); // two readings in one second add up
        log.accepts(21, 0); // nothing: no row
        log.accepts(22, 1);
        log.login(0, 22_300); // back: the storm is seconds 20 to 22
        log.accepts(40, 9); // after the storm
        log.queues(2, 7); // the marks keep their maxima, each on its own
        let metrics = log.summary(60_000, 60_000);
        assert_eq!(
            (metrics.accepts_peak_at_s, metrics.accepts_per_s_peak),
            (40, 9)
        );
        assert_eq!(
            (metrics.outbox_high_water, metrics.fanout_queue_high_water),
            (3, 7)
        );
        assert_eq!(metrics.crashes[0].accepts_per_s_peak, 6);
        let row = |second, logins, accepts| StormSecond {
            second,
            logins,
            accepts,
        };
        assert_eq!(
            metrics.seconds,
            vec![row(1, 1, 5), row(20, 0, 6), row(22, 1, 1), row(40, 0, 9)]
        );
    }

    #[test]
    fn a_server_that_never_restarts_has_no_return_times() {
        let mut log = StormLog::default();
        log.login(0, 500);
        log.crash(10_000, vec![true]);
        let storm = &log.summary(20_000, 20_000).crashes[0];
        assert_eq!(storm.restarted_at_s, None);
        assert_eq!((storm.back_50_s, storm.logins_per_s_peak), (None, 0));
    }

    #[test]
    fn the_heal_reconnecting_every_device_is_not_the_runs_peak() {
        let mut log = StormLog::default();
        log.accepts(5, 3);
        log.login(0, 5_100);
        log.login(1, 5_200);
        log.accepts(30, 2);
        log.login(0, 30_000);
        // The heal at 60 s: every device reconnects in that second.
        log.accepts(60, 50);
        for device in 0..50 {
            log.login(device, 60_000 + device as u64);
        }
        let metrics = log.summary(70_000, 60_000);
        assert_eq!(metrics.healed_at_s, 60);
        assert_eq!(
            (metrics.logins_peak_at_s, metrics.logins_per_s_peak),
            (5, 2)
        );
        assert_eq!(
            (metrics.accepts_peak_at_s, metrics.accepts_per_s_peak),
            (5, 3)
        );
        // storms.csv keeps the heal's second.
        assert_eq!(
            metrics.seconds.last().map(|s| (s.second, s.logins)),
            Some((60, 50))
        );
    }
}
