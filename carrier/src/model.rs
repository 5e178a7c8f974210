//! One flow through a carrier: the NAT mapping of one TCP connection and the radio link it
//! crosses, as a pure state machine. A driver (the simulator's turmoil proxy, `imlab proxy`)
//! reports what happened and when, and carries out the decision it gets back:
//!
//! - Link: each chunk waits for the link (bandwidth), then each transmission is lost with
//!   probability `loss` or blocked by an outage (or, towards the IM server, a partition) and
//!   retried after an RTO of 200 ms, doubling; past `max_retries` the sending side's
//!   connection breaks. A delivered chunk takes half an RTT drawn from a log-normal fitted to
//!   the profile's median and p99. Chunks stay in order per direction.
//! - NAT: the mapping expires after the flow's idle timeout without refreshing traffic (both
//!   directions, or outbound only). Afterwards the server's packets are lost and the server's
//!   side is left half-open until its kernel gives up (`server_give_up`) or its reaper acts;
//!   the phone's next packet is answered with a RST (`rst`) or dropped (`drop`).
//! - Handover: once the device has moved to another network, this path is dead: nothing of
//!   the phone's (not even its FIN) reaches the server.
//! - Carrier faults ([`LinkFault`], windows in [`Blocked::link`]): a latency spike adds delay
//!   and jitter to deliveries, a bandwidth fault replaces the link's rate, a loss burst runs a
//!   Gilbert-Elliott chain per direction over each transmission, a slow close delays FINs; a
//!   blackhole swallows every flow it touches for good; a reset and a max-age limit cut flows
//!   (RST both ways) and a byte limit closes them ([`FlowModel::cut`]); a NAT rebind moves the
//!   mapping, so the phone's next packet is answered with a RST and the server's side is left
//!   half-open.
//!
//! Times are durations since the driver's epoch (simulated time, or scaled wall time).

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::blocked::Blocked;
use crate::fault::{LinkFault, LinkWindow};
use crate::profile::{CarrierProfile, OnExpiry, RTO_INITIAL, Refresh};

/// Bytes a driver reads from a socket at once: one TCP segment's payload at a 1500-byte MTU,
/// so each chunk is one segment of the link model (lost and retransmitted alone), and an idle
/// flow holds little buffer memory.
pub const SEGMENT_BYTES: usize = 1_460;

/// The seed of one flow's RNG: the run's seed mixed with a stable identity of the flow (for
/// example carrier, device and its n-th connection), never with an accept order that a
/// scheduler could change.
pub fn flow_seed(run_seed: u64, identity: &[u64]) -> u64 {
    let mut state = splitmix64(run_seed);
    for part in identity {
        state = splitmix64(state ^ part);
    }
    state
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What the link is like at the moment of a decision: the profile, the fault windows, when
/// faults end, and whether the device has left this network (handover).
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    /// The carrier profile.
    pub profile: &'a CarrierProfile,
    /// Outage and partition windows.
    pub blocked: &'a Blocked,
    /// Nothing is down from this time on (the simulator's heal; `Duration::MAX` otherwise).
    pub heal: Duration,
    /// The device has moved to another network: this path is dead.
    pub handed_over: bool,
}

/// What becomes of bytes the phone sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneSend {
    /// Deliver them to the server at `at`, after `retransmissions` lost or blocked attempts.
    Deliver {
        /// Delivery time.
        at: Duration,
        /// Attempts lost before the one that got through.
        retransmissions: u32,
    },
    /// The mapping expired and the carrier answers RST: reset the phone's connection.
    Reset,
    /// Dropped without a trace (expired mapping with `drop`, or a dead path).
    Dropped,
    /// The phone's retries ran out: its connection breaks.
    Broken,
}

/// What becomes of bytes the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSend {
    /// Deliver them to the phone at `at`.
    Deliver {
        /// Delivery time.
        at: Duration,
        /// Attempts lost before the one that got through.
        retransmissions: u32,
    },
    /// Lost into a dead mapping: the server's kernel keeps retrying until it gives up.
    Lost,
    /// The server's retries ran out: its connection breaks; the phone hears nothing.
    Broken,
}

/// What becomes of one side's FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Deliver the FIN to the other side at `at`.
    Forward {
        /// Delivery time.
        at: Duration,
    },
    /// The other side never learns of it (dead mapping or path): it stays half-open.
    Unseen,
    /// The link gave up on the FIN.
    Lost,
}

/// How the carrier ends a flow on its own (a fault), for the driver to carry out on both sides
/// at once; what is still in flight is discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// RST to the phone and to the server (a reset fault, a max-age limit).
    Reset,
    /// FIN to both (a byte limit reached).
    Close,
}

/// Link timing of one direction.
#[derive(Debug, Clone, Copy, Default)]
struct DirectionTiming {
    link_free_at: Duration,
    last_delivery_at: Duration,
}

/// Which way bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Phone to server.
    Up,
    /// Server to phone.
    Down,
}

impl Way {
    fn up(self) -> bool {
        self == Way::Up
    }

    fn index(self) -> usize {
        match self {
            Way::Up => 0,
            Way::Down => 1,
        }
    }
}

/// A flow's generator between transmissions: `ChaCha8Rng::seed_from_u64(seed)` advanced by
/// `word_pos` words. 16 bytes where the generator with its 64-word buffer takes 320, in every
/// open flow (a simulated city's tens of thousands); unparked once per transmission, which
/// draws exactly what the generator kept whole would have.
#[derive(Debug, Clone)]
struct ParkedRng {
    seed: u64,
    word_pos: u64,
}

impl ParkedRng {
    fn new(seed: u64) -> ParkedRng {
        ParkedRng { seed, word_pos: 0 }
    }

    /// The generator where it was parked.
    fn unpark(&self) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        if self.word_pos > 0 {
            rng.set_word_pos(u128::from(self.word_pos));
        }
        rng
    }

    /// Parks `rng` (unparked from this) where it stands.
    fn park(&mut self, rng: &ChaCha8Rng) {
        self.word_pos =
            u64::try_from(rng.get_word_pos()).expect("a flow draws fewer than 2^64 words");
    }
}

/// One flow's NAT mapping and link state.
#[derive(Debug, Clone)]
pub struct FlowModel {
    rng: ParkedRng,
    to_im: bool,
    nat_timeout: Duration,
    last_refresh: Duration,
    nat_expired: bool,
    phone_open: bool,
    server_open: bool,
    server_give_up_at: Option<Duration>,
    up: DirectionTiming,
    down: DirectionTiming,
    opened_at: Duration,
    /// Instant faults (reset, rebind) up to this time have been applied.
    faults_applied_until: Duration,
    /// A blackhole swallowed the flow.
    swallowed: bool,
    /// A NAT rebind moved the mapping away.
    rebound: bool,
    /// Gilbert-Elliott state per direction (true: bad).
    burst_bad: [bool; 2],
    /// Bytes counted against byte limits per direction.
    limited_bytes: [u64; 2],
    /// A cut decided, not yet handed to the driver.
    pending_cut: Option<Cut>,
    /// The flow has been cut.
    cut_done: bool,
}

impl FlowModel {
    /// A flow with its own RNG (seed from [`flow_seed`]) and NAT idle timeout. `to_im`: the
    /// flow goes to the IM server, so partitions cut it (the simulator's push channel is not).
    pub fn new(seed: u64, nat_timeout: Duration, to_im: bool) -> FlowModel {
        FlowModel {
            rng: ParkedRng::new(seed),
            to_im,
            nat_timeout,
            last_refresh: Duration::ZERO,
            nat_expired: false,
            phone_open: true,
            server_open: true,
            server_give_up_at: None,
            up: DirectionTiming::default(),
            down: DirectionTiming::default(),
            opened_at: Duration::ZERO,
            faults_applied_until: Duration::ZERO,
            swallowed: false,
            rebound: false,
            burst_bad: [false; 2],
            limited_bytes: [0; 2],
            pending_cut: None,
            cut_done: false,
        }
    }

    /// A flow to the IM server whose NAT timeout is drawn from the profile's range with the
    /// flow's own RNG (a driver without per-device draws, such as `imlab proxy`).
    pub fn with_drawn_nat_timeout(seed: u64, profile: &CarrierProfile) -> FlowModel {
        let mut model = FlowModel::new(seed, Duration::MAX, true);
        let mut rng = model.rng.unpark();
        model.nat_timeout = draw_nat_timeout(profile, &mut rng);
        model.rng.park(&rng);
        model
    }

    /// The flow's NAT idle timeout.
    pub fn nat_timeout(&self) -> Duration {
        self.nat_timeout
    }

    /// When the mapping was last refreshed.
    pub fn last_refresh(&self) -> Duration {
        self.last_refresh
    }

    /// True once the mapping has expired.
    pub fn nat_expired(&self) -> bool {
        self.nat_expired
    }

    /// True once a blackhole has swallowed the flow.
    pub fn swallowed(&self) -> bool {
        self.swallowed
    }

    /// True once a NAT rebind has moved the flow's mapping away.
    pub fn rebound(&self) -> bool {
        self.rebound
    }

    /// Notes that a blackhole open at `at` touched the flow; true when swallowed.
    fn swallow(&mut self, link: &Link<'_>, at: Duration) -> bool {
        if !self.swallowed
            && link
                .blocked
                .link_at(at)
                .any(|window| window.fault == LinkFault::Blackhole)
        {
            self.swallowed = true;
        }
        self.swallowed
    }

    /// Counts `len` bytes against the byte limits open at `at`; true when a limit is passed
    /// (the flow is then to be closed, see [`FlowModel::cut`]).
    fn over_byte_limit(&mut self, link: &Link<'_>, way: Way, at: Duration, len: usize) -> bool {
        let limit = link
            .blocked
            .link_at(at)
            .find_map(|window| match window.fault {
                LinkFault::CloseAfterBytes { bytes, direction } if direction.applies(way.up()) => {
                    Some(bytes)
                }
                _ => None,
            });
        let Some(limit) = limit else { return false };
        self.limited_bytes[way.index()] += len as u64;
        if self.limited_bytes[way.index()] > limit {
            self.pending_cut.get_or_insert(Cut::Close);
            return true;
        }
        false
    }

    /// Applies the carrier faults due by `at` (resets, rebinds, age limits, byte limits) and
    /// says whether the carrier cuts the flow now. Drivers call it on every event and timer,
    /// after the decision of the event; it returns a cut once.
    pub fn cut(&mut self, link: &Link<'_>, at: Duration) -> Option<Cut> {
        if self.cut_done {
            return None;
        }
        let since = self.faults_applied_until;
        if at > since {
            for window in link
                .blocked
                .link
                .iter()
                .filter(|w| since < w.start && w.start <= at)
            {
                match window.fault {
                    LinkFault::Reset => {
                        self.pending_cut.get_or_insert(Cut::Reset);
                    }
                    LinkFault::NatRebind => self.rebound = true,
                    _ => {}
                }
            }
            self.faults_applied_until = at;
        }
        if self.pending_cut.is_none()
            && link
                .blocked
                .link
                .iter()
                .filter_map(|window| self.age_cut_at(window))
                .any(|due| due <= at)
        {
            self.pending_cut = Some(Cut::Reset);
        }
        let cut = self.pending_cut.take();
        self.cut_done = cut.is_some();
        cut
    }

    /// When a max-age window cuts this flow, if it does.
    fn age_cut_at(&self, window: &LinkWindow) -> Option<Duration> {
        let LinkFault::MaxAge { age } = window.fault else {
            return None;
        };
        let due = window.start.max(self.opened_at.saturating_add(age));
        (due < window.end).then_some(due)
    }

    /// The phone's SYN crosses the radio like any packet: when it reaches the carrier's far
    /// side (an outage delays it), or None when its retries ran out.
    pub fn connect(&mut self, link: &Link<'_>, at: Duration) -> Option<Duration> {
        // A blackhole accepts the connection (and then swallows it).
        self.swallow(link, at);
        self.transmit_time(Way::Up, link, at)
            .map(|(arrival, _)| arrival)
    }

    /// The server accepted the connection at `at`: the mapping starts.
    pub fn opened(&mut self, at: Duration) {
        self.last_refresh = at;
        self.opened_at = at;
        self.faults_applied_until = at;
    }

    /// Which sides the driver still holds open.
    pub fn set_open(&mut self, phone_open: bool, server_open: bool) {
        self.phone_open = phone_open;
        self.server_open = server_open;
    }

    /// Applies the idle timeout at `at`. True exactly once: when the mapping expires while
    /// both sides are open (a silent disconnect, for the driver to count and log). Drivers call
    /// it first on every event; the decisions below apply it too.
    pub fn expire_nat(&mut self, at: Duration) -> bool {
        if self.nat_expired
            || at.saturating_sub(self.last_refresh) <= self.nat_timeout
            || self.nat_timeout == Duration::MAX
        {
            return false;
        }
        self.nat_expired = true;
        self.phone_open && self.server_open
    }

    /// The phone sent `len` bytes at `at`.
    pub fn phone_sent(&mut self, link: &Link<'_>, at: Duration, len: usize) -> PhoneSend {
        if link.handed_over {
            return PhoneSend::Dropped;
        }
        self.expire_nat(at);
        if self.swallow(link, at) || self.pending_cut.is_some() {
            return PhoneSend::Dropped;
        }
        if self.rebound {
            // From a new public port: the server's kernel knows no such flow.
            return PhoneSend::Reset;
        }
        if self.nat_expired {
            return match link.profile.on_expiry {
                // The server's kernel answers the unknown flow with a RST.
                OnExpiry::Rst => PhoneSend::Reset,
                OnExpiry::Drop => PhoneSend::Dropped,
            };
        }
        if self.over_byte_limit(link, Way::Up, at, len) {
            return PhoneSend::Dropped;
        }
        self.last_refresh = at;
        match self.schedule(Way::Up, link, at, len) {
            Some((at, retransmissions)) => PhoneSend::Deliver {
                at,
                retransmissions,
            },
            None => PhoneSend::Broken,
        }
    }

    /// The server sent `len` bytes at `at`.
    pub fn server_sent(&mut self, link: &Link<'_>, at: Duration, len: usize) -> ServerSend {
        self.expire_nat(at);
        let swallowed = self.swallow(link, at);
        if !self.phone_open || link.handed_over || self.nat_expired || self.rebound || swallowed {
            // Something from the server reached a dead mapping: its kernel starts retrying.
            if self.server_give_up_at.is_none() {
                self.server_give_up_at = Some(at + link.profile.server_give_up);
            }
            return ServerSend::Lost;
        }
        if self.pending_cut.is_some() || self.over_byte_limit(link, Way::Down, at, len) {
            return ServerSend::Lost;
        }
        if link.profile.refresh == Refresh::Both {
            self.last_refresh = at;
        }
        match self.schedule(Way::Down, link, at, len) {
            Some((at, retransmissions)) => ServerSend::Deliver {
                at,
                retransmissions,
            },
            None => ServerSend::Broken,
        }
    }

    /// The phone closed (or reset) its connection at `at`.
    pub fn phone_closed(&mut self, link: &Link<'_>, at: Duration) -> Closed {
        self.phone_open = false;
        self.expire_nat(at);
        if link.handed_over || self.nat_expired || self.rebound || self.swallow(link, at) {
            // Its FIN never reaches the server: half-open there.
            return Closed::Unseen;
        }
        match self.schedule(Way::Up, link, at, 0) {
            Some((arrival, _)) => Closed::Forward {
                at: arrival + slow_close_delay(link, at),
            },
            None => Closed::Lost,
        }
    }

    /// The server closed its connection at `at`.
    pub fn server_closed(&mut self, link: &Link<'_>, at: Duration) -> Closed {
        self.server_open = false;
        self.expire_nat(at);
        if !self.phone_open
            || link.handed_over
            || self.nat_expired
            || self.rebound
            || self.swallow(link, at)
        {
            return Closed::Unseen;
        }
        match self.schedule(Way::Down, link, at, 0) {
            Some((arrival, _)) => Closed::Forward {
                at: arrival + slow_close_delay(link, at),
            },
            None => Closed::Lost,
        }
    }

    /// True when the server's kernel gives up on a half-open connection at `at`: the driver
    /// closes the server's side.
    pub fn server_gives_up(&self, at: Duration) -> bool {
        self.server_open && self.server_give_up_at.is_some_and(|give_up| give_up <= at)
    }

    /// The next time the model itself has something to decide (NAT expiry, the server's
    /// give-up, a carrier fault due: call [`FlowModel::cut`] then); deliveries are the
    /// driver's to wake for.
    pub fn next_timer(&self, link: &Link<'_>) -> Option<Duration> {
        let mut wake: Option<Duration> = None;
        let mut consider = |at: Duration| wake = Some(wake.map_or(at, |w| w.min(at)));
        if !self.nat_expired
            && self.phone_open
            && self.server_open
            && let Some(at) = self
                .last_refresh
                .checked_add(self.nat_timeout)
                .and_then(|at| at.checked_add(Duration::from_millis(1)))
        {
            consider(at);
        }
        if self.server_open
            && let Some(at) = self.server_give_up_at
        {
            consider(at);
        }
        if !self.cut_done {
            if self.pending_cut.is_some() {
                consider(self.faults_applied_until);
            }
            for window in &link.blocked.link {
                if window.start > self.faults_applied_until
                    && matches!(window.fault, LinkFault::Reset | LinkFault::NatRebind)
                {
                    consider(window.start);
                }
                if let Some(due) = self.age_cut_at(window) {
                    consider(due);
                }
            }
        }
        wake
    }

    /// Schedules `len` bytes in one direction: delivery time and retransmissions, or None
    /// when the link gave up on them.
    fn schedule(
        &mut self,
        way: Way,
        link: &Link<'_>,
        at: Duration,
        len: usize,
    ) -> Option<(Duration, u32)> {
        // The latest bandwidth fault open at `at` replaces the profile's rate.
        let kbps = link
            .blocked
            .link_at(at)
            .filter_map(|window| match window.fault {
                LinkFault::Bandwidth { kbps, direction } if direction.applies(way.up()) => {
                    Some(kbps)
                }
                _ => None,
            })
            .last()
            .unwrap_or(link.profile.bandwidth_kbps);
        let bandwidth_bytes_per_s = f64::from(kbps) * 1_000.0 / 8.0;
        let serialization = Duration::from_secs_f64(len.max(40) as f64 / bandwidth_bytes_per_s);
        let timing = match way {
            Way::Up => self.up,
            Way::Down => self.down,
        };
        let start = timing.link_free_at.max(at) + serialization;
        let (arrival, retransmissions) = self.transmit_time(way, link, start)?;
        let timing = match way {
            Way::Up => &mut self.up,
            Way::Down => &mut self.down,
        };
        timing.link_free_at = start;
        let arrival = arrival.max(timing.last_delivery_at);
        timing.last_delivery_at = arrival;
        Some((arrival, retransmissions))
    }

    /// When a transmission starting at `start` gets through, retrying lost or blocked
    /// attempts, and how many attempts failed; None when the retries run out.
    fn transmit_time(
        &mut self,
        way: Way,
        link: &Link<'_>,
        start: Duration,
    ) -> Option<(Duration, u32)> {
        let mut rng = self.rng.unpark();
        let time = self.attempts(&mut rng, way, link, start);
        self.rng.park(&rng);
        time
    }

    /// [`FlowModel::transmit_time`]'s attempts, drawing from `rng`.
    fn attempts(
        &mut self,
        rng: &mut ChaCha8Rng,
        way: Way,
        link: &Link<'_>,
        start: Duration,
    ) -> Option<(Duration, u32)> {
        let profile = link.profile;
        let mut attempt_at = start;
        let mut rto = RTO_INITIAL;
        for attempt in 0..=profile.max_retries {
            let down = link.blocked.radio_down(profile, attempt_at, link.heal)
                || (self.to_im && link.blocked.partitioned(attempt_at));
            let lost = profile.loss > 0.0 && rng.random_bool(profile.loss);
            let burst_lost = self.burst_lost(rng, way, link, attempt_at);
            if !down && !lost && !burst_lost {
                let delay = one_way_delay(rng, profile) + spike_delay(rng, way, link, attempt_at);
                return Some((attempt_at + delay, attempt));
            }
            attempt_at += rto;
            rto *= 2;
        }
        None
    }

    /// Steps the Gilbert-Elliott chain of `way` if a loss burst is open at `at`; true when the
    /// transmission is lost to it.
    fn burst_lost(
        &mut self,
        rng: &mut ChaCha8Rng,
        way: Way,
        link: &Link<'_>,
        at: Duration,
    ) -> bool {
        let model = link
            .blocked
            .link_at(at)
            .find_map(|window| match window.fault {
                LinkFault::LossBurst { model, direction } if direction.applies(way.up()) => {
                    Some(model)
                }
                _ => None,
            });
        let Some(model) = model else { return false };
        let bad = &mut self.burst_bad[way.index()];
        let flip = if *bad {
            model.p_leave_bad
        } else {
            model.p_enter_bad
        };
        if flip > 0.0 && rng.random_bool(flip) {
            *bad = !*bad;
        }
        let loss = if *bad {
            model.loss_bad
        } else {
            model.loss_good
        };
        loss > 0.0 && rng.random_bool(loss)
    }
}

/// The delay latency spikes open at `at` add to one delivery.
fn spike_delay(rng: &mut ChaCha8Rng, way: Way, link: &Link<'_>, at: Duration) -> Duration {
    let mut extra = Duration::ZERO;
    for window in link.blocked.link_at(at) {
        if let LinkFault::LatencySpike {
            added,
            jitter,
            direction,
        } = window.fault
            && direction.applies(way.up())
        {
            extra += added;
            if !jitter.is_zero() {
                let jitter_ms = jitter.as_millis() as u64;
                extra += Duration::from_millis(rng.random_range(0..=jitter_ms));
            }
        }
    }
    extra
}

/// Half an RTT drawn from a log-normal with the profile's median and p99 (capped at four
/// times the p99 so one draw cannot stall a flow for minutes).
fn one_way_delay(rng: &mut ChaCha8Rng, profile: &CarrierProfile) -> Duration {
    let (median, p99) = (profile.rtt_median, profile.rtt_p99);
    let median_s = median.as_secs_f64().max(1e-6);
    let sigma = (p99.as_secs_f64().max(median_s) / median_s).ln() / 2.326;
    // Box-Muller: a standard normal from two uniforms.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let rtt_s = (median_s * (sigma * z).exp()).min(p99.as_secs_f64() * 4.0);
    Duration::from_secs_f64(rtt_s / 2.0)
}

/// The extra delay of a FIN sent at `at`: the slow-close faults open then.
fn slow_close_delay(link: &Link<'_>, at: Duration) -> Duration {
    link.blocked
        .link_at(at)
        .filter_map(|window| match window.fault {
            LinkFault::SlowClose { delay } => Some(delay),
            _ => None,
        })
        .sum()
}

/// A NAT idle timeout drawn from the profile's range, in whole milliseconds (equal bounds:
/// that value; the draw is made either way, so a range change moves no other draw).
pub fn draw_nat_timeout(profile: &CarrierProfile, rng: &mut ChaCha8Rng) -> Duration {
    let low = profile.nat_timeout_min.as_millis() as u64;
    let high = (profile.nat_timeout_max.as_millis() as u64).max(low);
    Duration::from_millis(rng.random_range(low..=high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_generator_draws_what_the_whole_one_draws() {
        for seed in [0, 7, 0xdead_beef] {
            let mut whole = ChaCha8Rng::seed_from_u64(seed);
            let mut parked = ParkedRng::new(seed);
            let (mut via_parked, mut direct) = (Vec::new(), Vec::new());
            // Runs of 0 to 39 transmissions' worth of draws, as many words each as a flow's
            // (a bool, a range, two floats), crossing the generator's 64-word buffer often.
            for n in (0..40).cycle().take(200) {
                let mut rng = parked.unpark();
                for _ in 0..n {
                    via_parked.push(draws(&mut rng));
                    direct.push(draws(&mut whole));
                }
                parked.park(&rng);
            }
            assert!(
                direct.len() > 64 * 10,
                "the draws cross many buffer refills"
            );
            assert_eq!(via_parked, direct, "seed {seed}");
        }
    }

    fn draws(rng: &mut ChaCha8Rng) -> (bool, u64, u64, u64) {
        (
            rng.random_bool(0.3),
            rng.random_range(0..=19_000u64),
            rng.random_range(f64::EPSILON..1.0).to_bits(),
            rng.random_range(0.0..1.0f64).to_bits(),
        )
    }

    #[test]
    fn a_flow_model_keeps_its_generator_parked() {
        // The generator kept whole made the model 496 bytes (320 of them the generator).
        let size = std::mem::size_of::<FlowModel>();
        assert!(size <= 192, "a flow's model takes {size} bytes");
    }
}
