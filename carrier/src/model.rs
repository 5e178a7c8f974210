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
//!
//! Times are durations since the driver's epoch (simulated time, or scaled wall time).

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::blocked::Blocked;
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

/// One flow's NAT mapping and link state.
#[derive(Debug, Clone)]
pub struct FlowModel {
    rng: ChaCha8Rng,
    to_im: bool,
    nat_timeout: Duration,
    last_refresh: Duration,
    nat_expired: bool,
    phone_open: bool,
    server_open: bool,
    server_give_up_at: Option<Duration>,
    up: DirectionTiming,
    down: DirectionTiming,
}

impl FlowModel {
    /// A flow with its own RNG (seed from [`flow_seed`]) and NAT idle timeout. `to_im`: the
    /// flow goes to the IM server, so partitions cut it (the simulator's push channel is not).
    pub fn new(seed: u64, nat_timeout: Duration, to_im: bool) -> FlowModel {
        FlowModel {
            rng: ChaCha8Rng::seed_from_u64(seed),
            to_im,
            nat_timeout,
            last_refresh: Duration::ZERO,
            nat_expired: false,
            phone_open: true,
            server_open: true,
            server_give_up_at: None,
            up: DirectionTiming::default(),
            down: DirectionTiming::default(),
        }
    }

    /// A flow to the IM server whose NAT timeout is drawn from the profile's range with the
    /// flow's own RNG (a driver without per-device draws, such as `imlab proxy`).
    pub fn with_drawn_nat_timeout(seed: u64, profile: &CarrierProfile) -> FlowModel {
        let mut model = FlowModel::new(seed, Duration::MAX, true);
        model.nat_timeout = draw_nat_timeout(profile, &mut model.rng);
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

    /// The phone's SYN crosses the radio like any packet: when it reaches the carrier's far
    /// side (an outage delays it), or None when its retries ran out.
    pub fn connect(&mut self, link: &Link<'_>, at: Duration) -> Option<Duration> {
        self.transmit_time(link, at).map(|(arrival, _)| arrival)
    }

    /// The server accepted the connection at `at`: the mapping starts.
    pub fn opened(&mut self, at: Duration) {
        self.last_refresh = at;
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
        if self.nat_expired {
            return match link.profile.on_expiry {
                // The server's kernel answers the unknown flow with a RST.
                OnExpiry::Rst => PhoneSend::Reset,
                OnExpiry::Drop => PhoneSend::Dropped,
            };
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
        if !self.phone_open || link.handed_over || self.nat_expired {
            // Something from the server reached a dead mapping: its kernel starts retrying.
            if self.server_give_up_at.is_none() {
                self.server_give_up_at = Some(at + link.profile.server_give_up);
            }
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
        if link.handed_over || self.nat_expired {
            // Its FIN never reaches the server: half-open there.
            return Closed::Unseen;
        }
        match self.schedule(Way::Up, link, at, 0) {
            Some((at, _)) => Closed::Forward { at },
            None => Closed::Lost,
        }
    }

    /// The server closed its connection at `at`.
    pub fn server_closed(&mut self, link: &Link<'_>, at: Duration) -> Closed {
        self.server_open = false;
        self.expire_nat(at);
        if !self.phone_open || link.handed_over || self.nat_expired {
            return Closed::Unseen;
        }
        match self.schedule(Way::Down, link, at, 0) {
            Some((at, _)) => Closed::Forward { at },
            None => Closed::Lost,
        }
    }

    /// True when the server's kernel gives up on a half-open connection at `at`: the driver
    /// closes the server's side.
    pub fn server_gives_up(&self, at: Duration) -> bool {
        self.server_open && self.server_give_up_at.is_some_and(|give_up| give_up <= at)
    }

    /// The next time the model itself has something to decide (NAT expiry, the server's
    /// give-up); deliveries are the driver's to wake for.
    pub fn next_timer(&self) -> Option<Duration> {
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
        let bandwidth_bytes_per_s = f64::from(link.profile.bandwidth_kbps) * 1_000.0 / 8.0;
        let serialization = Duration::from_secs_f64(len.max(40) as f64 / bandwidth_bytes_per_s);
        let timing = match way {
            Way::Up => self.up,
            Way::Down => self.down,
        };
        let start = timing.link_free_at.max(at) + serialization;
        let (arrival, retransmissions) = self.transmit_time(link, start)?;
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
    fn transmit_time(&mut self, link: &Link<'_>, start: Duration) -> Option<(Duration, u32)> {
        let profile = link.profile;
        let mut attempt_at = start;
        let mut rto = RTO_INITIAL;
        for attempt in 0..=profile.max_retries {
            let down = link.blocked.radio_down(profile, attempt_at, link.heal)
                || (self.to_im && link.blocked.partitioned(attempt_at));
            let lost = profile.loss > 0.0 && self.rng.random_bool(profile.loss);
            if !down && !lost {
                return Some((attempt_at + self.one_way_delay(profile), attempt));
            }
            attempt_at += rto;
            rto *= 2;
        }
        None
    }

    /// Half an RTT drawn from a log-normal with the profile's median and p99 (capped at four
    /// times the p99 so one draw cannot stall a flow for minutes).
    fn one_way_delay(&mut self, profile: &CarrierProfile) -> Duration {
        let (median, p99) = (profile.rtt_median, profile.rtt_p99);
        let median_s = median.as_secs_f64().max(1e-6);
        let sigma = (p99.as_secs_f64().max(median_s) / median_s).ln() / 2.326;
        // Box-Muller: a standard normal from two uniforms.
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random_range(0.0..1.0);
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let rtt_s = (median_s * (sigma * z).exp()).min(p99.as_secs_f64() * 4.0);
        Duration::from_secs_f64(rtt_s / 2.0)
    }
}

/// A NAT idle timeout drawn from the profile's range, in whole milliseconds (equal bounds:
/// that value; the draw is made either way, so a range change moves no other draw).
pub fn draw_nat_timeout(profile: &CarrierProfile, rng: &mut ChaCha8Rng) -> Duration {
    let low = profile.nat_timeout_min.as_millis() as u64;
    let high = (profile.nat_timeout_max.as_millis() as u64).max(low);
    Duration::from_millis(rng.random_range(low..=high))
}
