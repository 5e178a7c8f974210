//! A carrier's fault windows: outage windows (radio down, nothing passes), partition windows
//! (the path to the IM server cut) and the other carrier faults of the vocabulary
//! ([`LinkWindow`]: latency spikes, bandwidth, loss bursts, resets, blackholes, ...). The
//! simulator knows them in advance from a scenario's fault schedule; `imlab proxy` adds them
//! when told to over its control API.

use std::time::Duration;

use crate::fault::LinkWindow;
use crate::profile::CarrierProfile;

/// A time window [start, end).
pub type Window = (Duration, Duration);

/// Fault windows of one carrier.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Blocked {
    /// Radio down: nothing passes (outage faults; periodic outages are in the profile).
    pub outages: Vec<Window>,
    /// Path to the IM server cut (partition faults).
    pub partitions: Vec<Window>,
    /// Every other carrier fault, in start order.
    pub link: Vec<LinkWindow>,
}

fn in_any(windows: &[Window], at: Duration) -> bool {
    windows.iter().any(|(start, end)| *start <= at && at < *end)
}

impl Blocked {
    /// True when the radio is down at `at` (fault windows and the profile's own outages);
    /// nothing is down from `heal` on.
    pub fn radio_down(&self, profile: &CarrierProfile, at: Duration, heal: Duration) -> bool {
        if at >= heal {
            return false;
        }
        in_any(&self.outages, at) || profile.outages.is_some_and(|o| o.is_out(at))
    }

    /// True when the path to the IM server is cut at `at`.
    pub fn partitioned(&self, at: Duration) -> bool {
        in_any(&self.partitions, at)
    }

    /// Forgets windows that ended before `at` (a long-running driver calls this before adding
    /// one, so the lists hold only what can still matter).
    pub fn forget_before(&mut self, at: Duration) {
        self.outages.retain(|(_, end)| *end > at);
        self.partitions.retain(|(_, end)| *end > at);
        // Instant faults (end == start) stay until their instant has passed.
        self.link
            .retain(|window| window.end > at || window.start >= at);
    }

    /// The carrier faults open at `at`.
    pub fn link_at(&self, at: Duration) -> impl Iterator<Item = &LinkWindow> {
        self.link.iter().filter(move |window| window.open_at(at))
    }
}
