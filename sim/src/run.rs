//! The driver: builds the turmoil simulation for a scenario and a seed, runs it through the
//! scenario's faults, heals the network, waits a quiet period, and checks the invariants.
//!
//! Hosts: `server` (imlab-core's server, unchanged), `push` (the push service), one
//! `carrier-N` per carrier profile (NAT and link emulator; beyond
//! [`DEVICES_PER_CARRIER_HOST`](world::DEVICES_PER_CARRIER_HOST) devices, `carrier-N.S` hosts
//! share the carrier's devices), and `cell-N` hosts running up to
//! [`DEVICES_PER_CELL_MAX`] devices each. Turmoil's own latency and loss are off: the carrier
//! proxies model the network with their seeded RNGs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use imlab_core::auth::Authenticator;
use imlab_core::clock::TokioClock;
use imlab_core::server::{Server, ServerConfig, ServerDeps};
use imlab_core::store::{
    DurableStore, DurableStoreLimits, MemEngine, MemoryStore, MemoryStoreLimits,
};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::Planted;
use crate::device::{DEVICE_COMMANDS_LEN_MAX, run_device};
use crate::invariants::{self, Verdict, VolatileLoss};
use crate::ledger::Ledger;
use crate::metrics::{self, Metrics, ServerTotals};
use crate::push::{SimPushProvider, push_host};
use crate::scenario::{FaultKind, Scenario, StoreKind};
use crate::trace::{Event, Trace};
use crate::world::{
    self, DEVICES_PER_CELL_MAX, DeviceCommand, Layout, SERVER_PORT, Shared, SimStore, carrier_host,
    cell_host, group_id, occurrences, user_id,
};

/// How long after a disk failure ends the supervisor restarts the server.
pub const DISK_REPAIR_RESTART_DELAY: Duration = Duration::from_secs(1);

/// The simulation's wall-clock epoch: fixed, so token expiry and timestamps replay exactly.
pub const EPOCH_UNIX_S: u64 = 1_700_000_000;

/// How a run is set up.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// Write the trace as JSON Lines here.
    pub trace_file: Option<std::path::PathBuf>,
    /// Deliberate bugs (tests).
    pub planted: Planted,
    /// Keep every Ping's time and interval in the ledger, per device (the heartbeat
    /// comparison's series and settled intervals). Off, a device only counts its Pings:
    /// `scale-10k`'s day sends 2.9 million of them, 46 MB that nothing else reads.
    pub heartbeat_series: bool,
    /// Run every step of the simulation, also those in which nothing would happen (by
    /// default they run as one: `turmoil::Sim::idle_steps`). For tests that compare the two.
    pub every_step: bool,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Hash of every trace event.
    pub trace_hash: String,
    /// Events traced.
    pub trace_events: u64,
    /// One verdict per invariant.
    pub verdicts: Vec<Verdict>,
    /// Deliveries lost with the crashes of a store volatile by design (not a violation).
    pub volatile_loss: VolatileLoss,
    /// Headline and per-group metrics.
    pub metrics: Metrics,
    /// Wall time of the run.
    pub wall: Duration,
}

impl RunReport {
    /// True when every invariant holds.
    pub fn ok(&self) -> bool {
        self.verdicts.iter().all(Verdict::ok)
    }

    /// The names of the invariants the run broke, in the checker's order.
    pub fn broken(&self) -> Vec<&'static str> {
        (self.verdicts.iter())
            .filter(|v| !v.ok())
            .map(|v| v.name)
            .collect()
    }
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A host's software failed: a simulator bug.
    #[error("simulation failed at {at:?}: {message}")]
    Host {
        /// When.
        at: Duration,
        /// turmoil's error.
        message: String,
    },
    /// The scenario's duration and quiet period are longer than a run can record
    /// (`scenario::RUN_LENGTH_MAX`), or its faults start more often than a run can schedule
    /// (`scenario::FAULT_OCCURRENCES_MAX`).
    #[error("scenario {name}: {why}")]
    TooLong {
        /// The scenario's name.
        name: String,
        /// Its duration and quiet period, and the limit.
        why: String,
    },
    /// The trace file could not be written.
    #[error("writing the trace file: {0}")]
    Trace(String),
}

/// One action of the driver at a point in simulated time.
#[derive(Debug, Clone)]
enum Action {
    Crash,
    Restart,
    /// The server's host freezes (true) or thaws (false).
    Stall(bool),
    Command(Vec<usize>, DeviceCommand),
    /// These devices' wall clocks jump by this many ms.
    ClockJump(Vec<usize>, i64),
    PushDown(bool),
    Note(String),
    Heal,
}

/// Segments a turmoil socket queues, and connections a listener queues, at least.
const TCP_CAPACITY_MIN: usize = 16_384;

/// How far a run has come, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Simulated time so far.
    pub simulated: Duration,
    /// Simulated time in all (the scenario's duration and quiet).
    pub total: Duration,
    /// Trace events so far.
    pub events: u64,
}

/// Runs `scenario` with `options`; `progress` is called about five times a (wall) second.
pub fn run(
    scenario: &Scenario,
    options: &RunOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<RunReport, RunError> {
    run_with(scenario, options, progress, &mut |_| {})
}

/// [`run`], then `inspect` the finished world (the ledger, meters and counters) before it is
/// dropped: for measurements beyond the standard metrics (the heartbeat comparison).
pub fn run_with(
    scenario: &Scenario,
    options: &RunOptions,
    progress: &mut dyn FnMut(&Progress),
    inspect: &mut dyn FnMut(&Shared),
) -> Result<RunReport, RunError> {
    options.planted.assert_supported();
    if let Some(why) = crate::scenario::run_too_long(scenario.duration, scenario.quiet) {
        return Err(RunError::TooLong {
            name: scenario.name.clone(),
            why,
        });
    }
    // A longer `--duration` than the file's can make the faults too many.
    if let Some((i, why)) =
        crate::scenario::too_many_fault_occurrences(&scenario.faults, scenario.duration)
    {
        return Err(RunError::TooLong {
            name: scenario.name.clone(),
            why: format!("faults[{i}]: {why}"),
        });
    }
    let started = Instant::now();
    let seed = options.seed;
    let layout = Layout::new(scenario, seed);
    let trace = match &options.trace_file {
        Some(file) => {
            Trace::to_file(file).map_err(|e| RunError::Trace(format!("{}: {e}", file.display())))?
        }
        None => Trace::new(),
    };
    let n_devices = layout.devices.len();
    let shared = Arc::new(Shared {
        scenario: scenario.clone(),
        heartbeat_series: options.heartbeat_series,
        blocked: world::blocked_windows(scenario),
        device_carrier: layout
            .devices
            .iter()
            .map(|d| AtomicUsize::new(scenario.groups[d.group].carrier))
            .collect(),
        device_commands: (0..n_devices).map(|_| Mutex::new(None)).collect(),
        switchboards: (0..scenario.carriers.len() * world::carrier_shards(n_devices))
            .map(|_| crate::proxy::Switchboard::new(n_devices))
            .collect(),
        device_states: (0..n_devices)
            .map(|d| {
                imlab_core::client::ClientState::new(
                    user_id(layout.devices[d].user),
                    world::device_id(d as u32),
                )
                .shared()
            })
            .collect(),
        silent_by_device: (0..n_devices)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
        device_clock_offset_ms: (0..n_devices)
            .map(|_| std::sync::atomic::AtomicI64::new(0))
            .collect(),
        push_down: AtomicBool::new(false),
        store: Mutex::new(None),
        disk: Mutex::new(Arc::new(MemEngine::with_commit_latency(
            scenario.server.commit_latency,
        ))),
        server_starts: AtomicUsize::new(0),
        server: Mutex::new(None),
        radios: layout
            .devices
            .iter()
            .map(|d| {
                let kind = scenario.carriers[scenario.groups[d.group].carrier].radio;
                Mutex::new(crate::energy::RadioMeter::new(
                    crate::energy::RadioProfile::for_kind(kind),
                ))
            })
            .collect(),
        reachability: (0..n_devices)
            .map(|_| Mutex::new(world::Reachability::default()))
            .collect(),
        flows_by_device: (0..n_devices)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
        failed_commits: Arc::default(),
        counters: world::Counters::default(),
        trace: Mutex::new(trace),
        ledger: Mutex::new(Ledger::new(n_devices)),
        planted: options.planted,
        layout,
        seed,
    });

    let heal_at = scenario.duration;
    let total = scenario.duration + scenario.quiet;
    let mut sim = turmoil::Builder::new()
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S))
        .rng_seed(seed)
        .tick_duration(scenario.tick)
        .simulation_duration(total + Duration::from_secs(3_600))
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::ZERO)
        // Also the server's accept queue, which turmoil does not let overflow (it panics):
        // room for every device's connection and its push connection arriving in one tick.
        .tcp_capacity(TCP_CAPACITY_MIN.max(2 * n_devices))
        .ephemeral_ports(1_024..=65_535)
        .build();

    let server_shared = shared.clone();
    sim.host("server", move || server_host(server_shared.clone()));
    let push_shared = shared.clone();
    sim.host("push", move || push_host(push_shared.clone()));
    let shards = world::carrier_shards(n_devices);
    for carrier in 0..scenario.carriers.len() {
        for shard in 0..shards {
            let carrier_shared = shared.clone();
            sim.host(carrier_host(carrier, shard).as_str(), move || {
                crate::proxy::carrier_host(carrier_shared.clone(), carrier, shard)
            });
        }
    }
    let n_cells = n_devices.div_ceil(DEVICES_PER_CELL_MAX).max(1);
    for cell in 0..n_cells {
        let cell_shared = shared.clone();
        let devices: Vec<usize> = (0..n_devices).filter(|d| d % n_cells == cell).collect();
        sim.host(cell_host(cell).as_str(), move || {
            cell_host_main(cell_shared.clone(), devices.clone())
        });
    }

    let mut actions = schedule(scenario, &shared.layout, seed);
    actions.push((heal_at, Action::Heal));
    actions.sort_by_key(|(at, _)| *at);
    let mut actions = actions.into_iter().peekable();
    let mut server_down = false;
    let mut server_stalled = false;
    let mut sampler = ServerSampler::default();
    let mut last_progress = Instant::now();
    while sim.elapsed() < total {
        let at = sim.elapsed();
        while let Some((_, action)) = actions.next_if(|(when, _)| *when <= at) {
            let what = match &action {
                Action::Crash => "server_crash".to_string(),
                Action::Restart => "server_restart".to_string(),
                Action::Stall(true) => "server_stall".to_string(),
                Action::Stall(false) => "server_stall over".to_string(),
                Action::Command(devices, command) => format!("{command:?} x{}", devices.len()),
                Action::ClockJump(devices, by_ms) => {
                    format!("clock_jump {by_ms:+}ms x{}", devices.len())
                }
                Action::PushDown(down) => format!("push_down={down}"),
                Action::Note(note) => note.clone(),
                Action::Heal => "heal".to_string(),
            };
            record(&shared, at, Event::Fault { what });
            match action {
                Action::Crash if !server_down => {
                    // The crashed server's last accepts and queue marks, before it is gone.
                    sampler.read(&shared, at);
                    shared.ledger(|l| {
                        let connected = l.devices.iter().map(|d| d.connected).collect();
                        l.storms.crash(at.as_millis() as u64, connected);
                    });
                    // Close the server's connections in a deterministic order first, then
                    // take the host down.
                    if let Some(server) = shared
                        .server
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take()
                    {
                        server.crash();
                    }
                    sim.step().map_err(|error| RunError::Host {
                        at: sim.elapsed(),
                        message: error.to_string(),
                    })?;
                    sim.crash("server");
                    server_down = true;
                }
                Action::Crash => {}
                Action::Restart => {
                    if server_down {
                        sim.bounce("server");
                        server_down = false;
                        shared.ledger(|l| l.storms.restart(at.as_millis() as u64));
                    }
                }
                Action::Command(devices, command) => {
                    for device in devices {
                        shared.command(device, command.clone());
                    }
                }
                Action::ClockJump(devices, by_ms) => {
                    for device in devices {
                        shared.device_clock_offset_ms[device].fetch_add(by_ms, Ordering::Relaxed);
                    }
                }
                Action::Stall(freeze) => {
                    let others = world::other_hosts(scenario);
                    for other in &others {
                        if freeze {
                            sim.hold("server", other.as_str());
                        } else {
                            sim.release("server", other.as_str());
                        }
                    }
                    server_stalled = freeze;
                }
                Action::PushDown(down) => shared.push_down.store(down, Ordering::Relaxed),
                Action::Note(_) => {}
                Action::Heal => {
                    if server_stalled {
                        for other in &world::other_hosts(scenario) {
                            sim.release("server", other.as_str());
                        }
                        server_stalled = false;
                    }
                    if server_down {
                        sim.bounce("server");
                        server_down = false;
                        shared.ledger(|l| l.storms.restart(at.as_millis() as u64));
                    }
                    shared.push_down.store(false, Ordering::Relaxed);
                    for device in 0..n_devices {
                        shared.command(device, DeviceCommand::Heal);
                    }
                }
            }
        }
        if let Err(error) = sim.step() {
            return Err(RunError::Host {
                at: sim.elapsed(),
                message: error.to_string(),
            });
        }
        sampler.tick(&shared, sim.elapsed());
        // Steps in which nothing would happen run as one, up to the next scheduled action
        // (processed at the first step at or past its time, as without the skip) and the end.
        let until = actions.peek().map_or(total, |(when, _)| (*when).min(total));
        let skippable = steps_until(sim.elapsed(), until, scenario.tick);
        let idle = if options.every_step {
            0
        } else {
            sim.idle_steps(skippable)
        };
        if idle > 0 {
            if let Err(error) = sim.skip_idle(idle) {
                return Err(RunError::Host {
                    at: sim.elapsed(),
                    message: error.to_string(),
                });
            }
            sampler.tick(&shared, sim.elapsed());
        }
        if last_progress.elapsed() > Duration::from_millis(200) {
            progress(&Progress {
                simulated: sim.elapsed(),
                total,
                events: shared.trace_events(),
            });
            last_progress = Instant::now();
        }
    }
    let simulated = sim.elapsed();
    sampler.read(&shared, simulated);
    progress(&Progress {
        simulated: total,
        total,
        events: shared.trace_events(),
    });
    // The hosts go before the checks: their tasks, sockets and flows (about 130 MB of a
    // `scale-10k` day's 425 MB at its end) would hold the checks' own tables on top of them.
    // What the checks read (the ledger, the store and its disk, the devices' states) is the
    // world's, not the hosts'.
    drop(sim);

    for reachability in &shared.reachability {
        let mut reachability = reachability.lock().unwrap_or_else(|p| p.into_inner());
        reachability.down(heal_at, heal_at);
    }
    let store = shared
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .expect("the server started");
    // Read in place, not copied: the ledger is the largest thing a long run keeps (every send,
    // delivery and heartbeat), and a copy doubled it at the run's peak. Nothing records now.
    let ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let volatile_epoch = match shared.scenario.server.store {
        StoreKind::Memory => Some(store.as_store().epoch()),
        StoreKind::Durable => None,
    };
    let (verdicts, volatile_loss) = invariants::check(
        &shared.layout,
        &ledger,
        &store,
        &shared.device_states,
        volatile_epoch,
    );
    let metrics = metrics::collect(
        &shared,
        &ledger,
        sampler.totals(),
        simulated,
        started.elapsed(),
    );
    drop(ledger);
    inspect(&shared);
    let mut trace = shared.trace.lock().unwrap_or_else(|p| p.into_inner());
    trace.finish().map_err(RunError::Trace)?;
    Ok(RunReport {
        seed,
        trace_hash: trace.hash_hex(),
        trace_events: trace.n_events(),
        verdicts,
        volatile_loss,
        metrics,
        wall: started.elapsed(),
    })
}

/// Reads the server's counters from the driver, between simulation steps and never from
/// inside the simulation, so reading moves no simulated event: connections accepted per
/// simulated second and the queues' high-water marks, across every incarnation of the server
/// (each restart starts its counters at zero), and every counter summed over them.
#[derive(Default)]
struct ServerSampler {
    /// The simulated second being counted.
    second: u64,
    /// The incarnation read last, and its accepted count then.
    counters: Option<Arc<imlab_core::server::ServerCounters>>,
    accepted: u64,
    /// The counters of the incarnations before it, summed (each read when the next one was
    /// first seen: a crashed server counts nothing more).
    earlier: ServerTotals,
}

/// Steps of `tick` from `now` until the first step that starts at or after `until` (0 when
/// `now` is already there).
fn steps_until(now: Duration, until: Duration, tick: Duration) -> u64 {
    let ahead = until.saturating_sub(now).as_nanos();
    ahead.div_ceil(tick.as_nanos().max(1)) as u64
}

impl ServerSampler {
    /// After a step: reads once per simulated second, when `now` enters a new one. The
    /// accepts since the last reading go to the second just ended (they happened in it, to
    /// within the step that crossed into the next).
    fn tick(&mut self, shared: &Shared, now: Duration) {
        if now.as_secs() != self.second {
            self.read(shared, now);
        }
    }

    /// Reads now: accepts since the last reading into the current second, then moves on to
    /// `now`'s second.
    fn read(&mut self, shared: &Shared, now: Duration) {
        let server = shared
            .server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(server) = server {
            let counters = server.counters();
            if !self
                .counters
                .as_ref()
                .is_some_and(|seen| Arc::ptr_eq(seen, &counters))
            {
                // A new incarnation counts from zero.
                self.accepted = 0;
                if let Some(earlier) = self.counters.replace(counters.clone()) {
                    self.earlier.add(&ServerTotals::read(&earlier));
                }
            }
            let accepted = counters.connections_accepted.load(Ordering::Relaxed);
            let new = accepted.saturating_sub(self.accepted);
            self.accepted = accepted;
            let outbox = counters.outbox_high_water.load(Ordering::Relaxed);
            let fanout = server.fanout_queue_len_high_water();
            let second = self.second;
            shared.ledger(|l| {
                l.storms.accepts(second, new as u32);
                l.storms.queues(outbox, fanout);
            });
        }
        self.second = now.as_secs();
    }

    /// Every incarnation's counters summed, the current one's as they read now.
    fn totals(&self) -> ServerTotals {
        let mut totals = self.earlier;
        if let Some(counters) = &self.counters {
            totals.add(&ServerTotals::read(counters));
        }
        totals
    }
}

fn record(shared: &Shared, at: Duration, event: Event) {
    shared
        .trace
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record(at.as_millis() as u64, event);
}

fn store_limits(planted: &Planted) -> MemoryStoreLimits {
    let _ = planted;
    MemoryStoreLimits {
        #[cfg(feature = "planted-bugs")]
        planted_skip_dedupe: planted.skip_dedupe,
        ..MemoryStoreLimits::default()
    }
}

/// The store for the `n_starts`-th server start (0 = the first). A durable store opens over
/// the simulated disk, which kept exactly the commits that finished before the crash; an
/// in-memory store starts empty in a new generation.
async fn open_store(shared: &Shared, n_starts: usize) -> SimStore {
    let epoch = n_starts as u64 + 1;
    let planted = &shared.planted;
    let set = |store: Option<SimStore>| {
        *shared.store.lock().unwrap_or_else(|p| p.into_inner()) = store;
    };
    match shared.scenario.server.store {
        StoreKind::Memory => {
            let store = MemoryStore::with_limits(store_limits(planted)).with_epoch(epoch);
            let store = SimStore::Memory(Arc::new(store));
            set(Some(store.clone()));
            store
        }
        StoreKind::Durable => {
            // The crashed server's store (its committer died with the host) lets go first.
            set(None);
            let disk = {
                let mut disk = shared.disk.lock().unwrap_or_else(|p| p.into_inner());
                if n_starts > 0 && planted.volatile_store {
                    *disk = Arc::new(MemEngine::with_commit_latency(
                        shared.scenario.server.commit_latency,
                    ));
                }
                disk.clone()
            };
            #[allow(unused_mut)]
            let mut limits = DurableStoreLimits::from(store_limits(planted));
            #[cfg(feature = "planted-bugs")]
            {
                limits.planted_ack_before_commit = planted.ack_before_commit;
                limits.planted_dedupe_filter_unfilled = planted.dedupe_filter_unfilled;
            }
            let scenario = &shared.scenario;
            let disk = Arc::new(crate::disk::SimDisk::new(
                disk,
                world::fault_windows(scenario, &FaultKind::DiskStall),
                world::fault_windows(scenario, &FaultKind::DiskFailure),
                shared.failed_commits.clone(),
            ));
            let store = DurableStore::open(disk, limits, epoch)
                .await
                .expect("opening the durable store on the simulated disk");
            let store = SimStore::Durable(Arc::new(store));
            set(Some(store.clone()));
            store
        }
    }
}

/// Expands the scenario's faults into driver actions. Outages and partitions act inside the
/// carrier proxies (their windows are known in advance); they are noted in the trace here.
fn schedule(scenario: &Scenario, layout: &Layout, seed: u64) -> Vec<(Duration, Action)> {
    let heal_at = scenario.duration;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfa17);
    let mut actions = Vec::new();
    for fault in &scenario.faults {
        for start in occurrences(fault.at, fault.every, heal_at) {
            let end = (start + fault.duration).min(heal_at);
            match &fault.kind {
                FaultKind::ServerCrash => {
                    actions.push((start, Action::Crash));
                    actions.push((end, Action::Restart));
                }
                FaultKind::Partition { carrier } => {
                    let name = &scenario.carriers[*carrier].name;
                    actions.push((start, Action::Note(format!("partition {name}"))));
                    actions.push((end, Action::Note(format!("partition {name} healed"))));
                }
                FaultKind::Outage { carrier } => {
                    let name = &scenario.carriers[*carrier].name;
                    actions.push((start, Action::Note(format!("outage {name}"))));
                    actions.push((end, Action::Note(format!("outage {name} over"))));
                }
                FaultKind::Handover {
                    group,
                    to,
                    fraction,
                } => {
                    let devices = pick(layout, *group, *fraction, &mut rng);
                    let back = scenario.groups[*group].carrier;
                    actions.push((
                        start,
                        Action::Command(devices.clone(), DeviceCommand::Handover(*to)),
                    ));
                    if !fault.duration.is_zero() {
                        actions
                            .push((end, Action::Command(devices, DeviceCommand::Handover(back))));
                    }
                }
                FaultKind::AppKill { group, fraction } => {
                    let devices = pick(layout, *group, *fraction, &mut rng);
                    actions.push((
                        start,
                        Action::Command(devices, DeviceCommand::Kill(end - start)),
                    ));
                }
                FaultKind::ClockJump {
                    group,
                    fraction,
                    by_ms,
                } => {
                    let devices = pick(layout, *group, *fraction, &mut rng);
                    actions.push((start, Action::ClockJump(devices.clone(), *by_ms)));
                    if !fault.duration.is_zero() {
                        // NTP (or the carrier's NITZ) sets it right again.
                        actions.push((end, Action::ClockJump(devices, -*by_ms)));
                    }
                }
                FaultKind::PushOutage => {
                    actions.push((start, Action::PushDown(true)));
                    actions.push((end, Action::PushDown(false)));
                }
                FaultKind::Link { carrier, .. } => {
                    let name = &scenario.carriers[*carrier].name;
                    actions.push((start, Action::Note(format!("{} {name}", fault.name))));
                    if end > start {
                        actions.push((end, Action::Note(format!("{} {name} over", fault.name))));
                    }
                }
                FaultKind::ServerStall => {
                    actions.push((start, Action::Stall(true)));
                    actions.push((end, Action::Stall(false)));
                }
                FaultKind::DiskStall => {
                    actions.push((start, Action::Note("disk_stall".into())));
                    actions.push((end, Action::Note("disk_stall over".into())));
                }
                FaultKind::DiskFailure => {
                    // The commits fail inside the disk; the supervisor restarts the server
                    // (its store is poisoned) once the disk is back.
                    actions.push((start, Action::Note("disk_failure".into())));
                    actions.push((end, Action::Crash));
                    let restart = (end + DISK_REPAIR_RESTART_DELAY).min(heal_at);
                    actions.push((restart, Action::Restart));
                }
            }
        }
    }
    actions
}

/// A seeded choice of `fraction` of a device group's devices.
fn pick(layout: &Layout, group: usize, fraction: f64, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut devices: Vec<usize> = (0..layout.devices.len())
        .filter(|d| layout.devices[*d].group == group)
        .collect();
    devices.shuffle(rng);
    let n = ((devices.len() as f64) * fraction).ceil() as usize;
    devices.truncate(n.max(1));
    devices.sort_unstable();
    devices
}

/// turmoil's listener as the server core's accept trait.
struct SimListener(turmoil::net::TcpListener);

impl imlab_core::net::Listener for SimListener {
    type Stream = turmoil::net::TcpStream;
    type Handshake = imlab_core::net::NoHandshake<turmoil::net::TcpStream>;

    async fn accept(&mut self) -> std::io::Result<(Self::Handshake, std::net::SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((imlab_core::net::no_handshake(stream), peer))
    }
}

/// The server host: imlab-core's server on the current store. Called again after a crash.
async fn server_host(shared: Arc<Shared>) -> turmoil::Result {
    let n_starts = shared.server_starts.fetch_add(1, Ordering::Relaxed);
    let store = open_store(&shared, n_starts).await;
    if n_starts == 0 || store.n_messages() == 0 {
        create_chat_groups(&shared, &store).await;
    }
    let setup = &shared.scenario.server;
    let config = ServerConfig {
        notify_ack_timeout: setup.notify_ack_timeout,
        outbox_len_max: setup.outbox_len_max,
        fanout_queue_len_max: setup.fanout_queue_len_max,
        push_when_behind: setup.push_when_behind,
        #[cfg(feature = "planted-bugs")]
        planted: imlab_core::planted::PlantedBugs {
            ack_before_store: shared.planted.ack_before_store,
            ..Default::default()
        },
        ..ServerConfig::default()
    };
    let (push, forward) = SimPushProvider::new(&shared);
    tokio::spawn(forward);
    let epoch_ms = EPOCH_UNIX_S * 1_000 + world::now().as_millis() as u64;
    let server = Arc::new(Server::new(
        config,
        ServerDeps {
            store: store.as_store(),
            clock: Arc::new(TokioClock::new(epoch_ms)),
            push: Arc::new(push),
            auth: match setup.token_lifetime {
                Some(_) => Authenticator::from_secret(Some(crate::tokens::SIM_AUTH_SECRET)),
                None => Authenticator::Dev,
            },
        },
    ));
    *shared.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server.clone());
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", SERVER_PORT)).await?;
    server
        .run(SimListener(listener), std::future::pending())
        .await;
    // Crashed: the host is taken down next; until then it serves nothing.
    std::future::pending::<()>().await;
    Ok(())
}

async fn create_chat_groups(shared: &Shared, store: &SimStore) {
    let store = store.as_store();
    for (index, members) in shared.layout.chat_groups.iter().enumerate() {
        let members: Vec<String> = members.iter().map(|user| user_id(*user)).collect();
        let _ = store
            .create_group(&group_id(index as u32), &members[0], &members[1..])
            .await;
    }
}

async fn cell_host_main(shared: Arc<Shared>, devices: Vec<usize>) -> turmoil::Result {
    // Cells never crash: one clock for the host's life.
    let clock = world::HostClock::here();
    for device in devices {
        let (commands_tx, commands) = crate::queue::bounded(DEVICE_COMMANDS_LEN_MAX);
        *shared.device_commands[device]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(commands_tx);
        tokio::spawn(run_device(shared.clone(), clock, device, commands));
    }
    std::future::pending::<()>().await;
    Ok(())
}
