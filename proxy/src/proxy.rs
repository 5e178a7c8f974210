//! The proxy: accepts phones' connections, opens one upstream connection for each, and runs
//! every pair as a flow through the carrier model. Holds what flows and the control API
//! share: the current profile, the fault windows, a view of every live flow.
//!
//! Time: the model runs on durations since the proxy started, multiplied by `time_scale`
//! (so every model duration is divided by it in wall time).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use imlab_carrier::{Blocked, CarrierProfile, Link};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::trace::Trace;

/// Live flows at most by default: each holds two sockets, and one process may open 20,000
/// files here.
pub const FLOWS_MAX_DEFAULT: usize = 9_000;

/// What the proxy does.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The server every flow connects to.
    pub upstream: SocketAddr,
    /// The carrier profile (the control API may replace it).
    pub profile: CarrierProfile,
    /// The run's seed; each flow's RNG is seeded from it and the flow's number.
    pub seed: u64,
    /// Model time runs this many times faster than wall time (1 = real time).
    pub time_scale: f64,
    /// Live flows at most; further connections are reset at once and counted.
    pub flows_max: usize,
    /// Write every model decision here as JSON Lines.
    pub trace: Option<PathBuf>,
}

/// A proxy that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `--time-scale` out of range.
    #[error("time scale must be a finite number >= 1, got {0}")]
    TimeScale(f64),
    /// The trace file could not be created.
    #[error("cannot create trace file {}: {source}", file.display())]
    Trace {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Decisions the model made for one flow, counted.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Decisions {
    /// Chunks from the phone delivered to the server.
    pub delivered_up: u64,
    /// Chunks from the server delivered to the phone.
    pub delivered_down: u64,
    /// Lost attempts retransmitted before a delivery, both ways.
    pub retransmissions: u64,
    /// Chunks of the phone dropped (expired `drop` mapping, dead path).
    pub dropped: u64,
    /// Chunks of the server lost into a dead mapping.
    pub lost: u64,
    /// RSTs sent to the phone because its mapping had expired.
    pub resets: u64,
    /// Connections broken because retries ran out.
    pub broken: u64,
    /// NAT mappings that expired.
    #[serde(default)]
    pub nat_expired: u64,
}

impl Decisions {
    fn add(&mut self, other: &Decisions) {
        self.delivered_up += other.delivered_up;
        self.delivered_down += other.delivered_down;
        self.retransmissions += other.retransmissions;
        self.dropped += other.dropped;
        self.lost += other.lost;
        self.resets += other.resets;
        self.broken += other.broken;
        self.nat_expired += other.nat_expired;
    }
}

/// One live flow, as the control API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    /// The flow's number (accept order, from 1); its RNG is seeded from it.
    pub id: u64,
    /// The phone's address.
    pub phone: String,
    /// Model time the flow was accepted, in milliseconds.
    pub opened_ms: u64,
    /// Its NAT idle timeout, in model milliseconds.
    pub nat_timeout_ms: u64,
    /// "alive" or "expired".
    pub nat: &'static str,
    /// Model time since the mapping was last refreshed, in milliseconds.
    pub idle_ms: u64,
    /// The phone's side is still open.
    pub phone_open: bool,
    /// The server's side is still open.
    pub server_open: bool,
    /// A handover killed this path.
    pub handed_over: bool,
    /// Bytes from the phone delivered to the server.
    pub bytes_up: u64,
    /// Bytes from the server delivered to the phone.
    pub bytes_down: u64,
    /// The model's decisions so far.
    pub decisions: Decisions,
}

/// What the control API asks a flow to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowCommand {
    /// Reset both sides now.
    Reset,
    /// The phone moved to another network: reset its side; nothing more reaches the server.
    Handover,
}

pub(crate) struct FlowEntry {
    pub view: FlowView,
    pub last_refresh: Duration,
    pub command: Option<FlowCommand>,
    pub poke: Arc<Notify>,
}

pub(crate) struct State {
    pub profile: Arc<CarrierProfile>,
    pub blocked: Blocked,
    pub flows: BTreeMap<u64, FlowEntry>,
    pub next_flow: u64,
    pub flows_refused: u64,
    /// Decisions of the flows that ended.
    pub ended: Decisions,
}

/// What flows and the control API share.
pub(crate) struct Shared {
    pub upstream: SocketAddr,
    pub seed: u64,
    pub time_scale: f64,
    pub flows_max: usize,
    pub epoch: Instant,
    pub state: Mutex<State>,
    pub trace: Option<Trace>,
    /// Faults scheduled through the control API and not yet applied.
    pub scheduled: AtomicUsize,
    /// Bumped by a reset: schedules made before it apply nothing more.
    pub generation: AtomicU64,
}

/// Fault windows kept at most per kind; adding one beyond forgets the oldest.
pub(crate) const FAULT_WINDOWS_MAX: usize = 64;

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Model time now.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed().mul_f64(self.time_scale)
    }

    /// The wall-clock instant of model time `at`.
    pub fn instant_of(&self, at: Duration) -> Instant {
        self.epoch + at.div_f64(self.time_scale)
    }

    /// Runs a model decision for flow `id` against the current profile and fault windows.
    pub fn decide<T>(&self, id: u64, decide: impl FnOnce(&Link<'_>, &mut FlowEntry) -> T) -> T {
        let mut state = self.lock();
        let State {
            profile,
            blocked,
            flows,
            ..
        } = &mut *state;
        let entry = flows.get_mut(&id).expect("a running flow has an entry");
        let link = Link {
            profile,
            blocked,
            heal: Duration::MAX,
            handed_over: entry.view.handed_over,
        };
        decide(&link, entry)
    }

    /// Forgets a flow that ended.
    pub fn remove_flow(&self, id: u64) {
        let mut state = self.lock();
        if let Some(entry) = state.flows.remove(&id) {
            state.ended.add(&entry.view.decisions);
        }
    }

    /// Registers a new flow from `phone` (its address, or a name) and returns its number and
    /// the flow's wake-up; `None` at the `flows_max` bound (counted and logged).
    pub fn register_flow(&self, phone: String) -> Option<(u64, Arc<Notify>)> {
        let at = self.now();
        let mut state = self.lock();
        if state.flows.len() >= self.flows_max {
            state.flows_refused += 1;
            drop(state);
            self.log(serde_json::json!({
                "t_ms": at.as_millis() as u64, "event": "refused", "phone": phone,
                "why": "flows_max",
            }));
            return None;
        }
        state.next_flow += 1;
        let id = state.next_flow;
        let poke = Arc::new(Notify::new());
        state.flows.insert(
            id,
            FlowEntry {
                view: FlowView {
                    id,
                    phone,
                    opened_ms: at.as_millis() as u64,
                    nat_timeout_ms: 0,
                    nat: "alive",
                    idle_ms: 0,
                    phone_open: true,
                    server_open: false,
                    handed_over: false,
                    bytes_up: 0,
                    bytes_down: 0,
                    decisions: Decisions::default(),
                },
                last_refresh: at,
                command: None,
                poke: poke.clone(),
            },
        );
        Some((id, poke))
    }

    pub fn log(&self, line: serde_json::Value) {
        if let Some(trace) = &self.trace {
            trace.log(line);
        }
    }
}

/// The proxy.
pub struct Proxy {
    pub(crate) shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy for `config`; opens the trace file.
    pub fn new(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        if !(config.time_scale.is_finite() && config.time_scale >= 1.0) {
            return Err(ProxyError::TimeScale(config.time_scale));
        }
        let trace = match &config.trace {
            Some(file) => Some(Trace::create(file).map_err(|source| ProxyError::Trace {
                file: file.clone(),
                source,
            })?),
            None => None,
        };
        let shared = Shared {
            upstream: config.upstream,
            seed: config.seed,
            time_scale: config.time_scale,
            flows_max: config.flows_max,
            epoch: Instant::now(),
            state: Mutex::new(State {
                profile: Arc::new(config.profile),
                blocked: Blocked::default(),
                flows: BTreeMap::new(),
                next_flow: 0,
                flows_refused: 0,
                ended: Decisions::default(),
            }),
            trace,
            scheduled: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        };
        Ok(Proxy {
            shared: Arc::new(shared),
        })
    }

    /// Every decision so far, over the flows that ended and those alive.
    pub fn totals(&self) -> Decisions {
        let state = self.shared.lock();
        let mut totals = state.ended;
        for entry in state.flows.values() {
            totals.add(&entry.view.decisions);
        }
        totals
    }

    /// Writes out what the decision trace still queues (the end of an inline run).
    pub async fn flush_trace(&self) {
        if let Some(trace) = &self.shared.trace {
            trace.flush().await;
        }
    }

    /// Flows alive now, and flows refused at the `flows_max` bound so far.
    pub fn flow_counts(&self) -> (usize, u64) {
        let state = self.shared.lock();
        (state.flows.len(), state.flows_refused)
    }

    /// Serves the control API on `listener` until the proxy stops.
    pub fn spawn_control(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::control::serve(self.shared.clone(), listener))
    }

    /// Accepts phones on `listener` until `shutdown` completes, then resets every flow and
    /// flushes the trace.
    pub async fn run(self, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((phone, peer)) => self.accept(phone, peer),
                    Err(error) => {
                        // Out of file descriptors, most likely: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        crate::control::reset_all(&self.shared);
        if let Some(trace) = &self.shared.trace {
            trace.flush().await;
        }
    }

    fn accept(&self, phone: tokio::net::TcpStream, peer: SocketAddr) {
        let Some((id, poke)) = self.shared.register_flow(peer.to_string()) else {
            // Refused at the bound: the phone sees a reset at once, not a hang.
            let _ = phone.set_zero_linger();
            return;
        };
        tokio::spawn(crate::flow::run(self.shared.clone(), id, phone, poke));
    }
}

/// A profile as JSON for the control API and the trace.
pub(crate) fn profile_json(profile: &CarrierProfile) -> serde_json::Value {
    let ms = |d: Duration| d.as_millis() as u64;
    serde_json::json!({
        "name": profile.name,
        "nat_timeout_min_ms": ms(profile.nat_timeout_min),
        "nat_timeout_max_ms": ms(profile.nat_timeout_max),
        "refresh": profile.refresh,
        "on_expiry": profile.on_expiry,
        "rtt_median_ms": ms(profile.rtt_median),
        "rtt_p99_ms": ms(profile.rtt_p99),
        "bandwidth_kbps": profile.bandwidth_kbps,
        "loss": profile.loss,
        "max_retries": profile.max_retries,
        "server_give_up_ms": ms(profile.server_give_up),
        "outages": profile.outages.map(|o| serde_json::json!({
            "every_ms": ms(o.every), "duration_ms": ms(o.duration), "offset_ms": ms(o.offset),
        })),
    })
}
