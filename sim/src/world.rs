//! The simulated world: who exists (users, devices, chat groups) and the state shared between
//! the simulation's hosts and its driver.
//!
//! Everything runs on one thread inside turmoil; the mutexes are never contended and exist
//! because the cores require `Send + Sync` observers and providers.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imlab_core::store::{DurableStore, MemEngine, MemoryStore, Store, StoredMessage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::ledger::Ledger;
use crate::scenario::{FaultKind, Scenario};
use crate::trace::{Event, Trace};

/// Port of the IM server.
pub const SERVER_PORT: u16 = 7400;
/// Port of the push service for device channels.
pub const PUSH_DEVICE_PORT: u16 = 7500;
/// Port of the push service for the IM server's notices.
pub const PUSH_SERVER_PORT: u16 = 7501;
/// Devices one cell host runs at most (spreads the device tasks over host runtimes).
pub const DEVICES_PER_CELL_MAX: usize = 2_500;

/// Devices per host of each carrier at most. A carrier host opens a connection to the server
/// or the push service from its own ephemeral ports (64,512) per flow, and flows whose NAT
/// expired keep their server side until the server reaps it; beyond about 10,000 devices a
/// carrier runs on several hosts (a carrier's NAT has many public addresses, too).
pub const DEVICES_PER_CARRIER_HOST: usize = 10_000;

/// Hosts per carrier for `n_devices` devices in all: device `d` uses host `d % shards`.
pub fn carrier_shards(n_devices: usize) -> usize {
    n_devices.div_ceil(DEVICES_PER_CARRIER_HOST).max(1)
}

/// Host name of carrier `index`'s host `shard`.
pub fn carrier_host(index: usize, shard: usize) -> String {
    if shard == 0 {
        format!("carrier-{index}")
    } else {
        format!("carrier-{index}.{shard}")
    }
}

/// Every host but the server: carriers, cells and the push service (a server stall holds
/// its links to all of them).
pub fn other_hosts(scenario: &Scenario) -> Vec<String> {
    let n_cells = scenario.n_devices().div_ceil(DEVICES_PER_CELL_MAX).max(1);
    let shards = carrier_shards(scenario.n_devices());
    let mut hosts = vec!["push".to_string()];
    for carrier in 0..scenario.carriers.len() {
        hosts.extend((0..shards).map(|shard| carrier_host(carrier, shard)));
    }
    hosts.extend((0..n_cells).map(cell_host));
    hosts
}

/// Host name of cell `index`.
pub fn cell_host(index: usize) -> String {
    format!("cell-{index}")
}

/// User id on the wire.
pub fn user_id(user: u32) -> String {
    format!("u{user}")
}

/// Device id on the wire.
pub fn device_id(device: u32) -> String {
    format!("d{device}")
}

/// The device a wire id names ([`device_id`]'s inverse), if it is one.
pub fn device_index(id: &str) -> Option<usize> {
    id.strip_prefix('d')?.parse().ok()
}

/// Group id on the wire.
pub fn group_id(group: u32) -> String {
    format!("g{group}")
}

/// One device.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Its user.
    pub user: u32,
    /// Index of its device group in the scenario.
    pub group: usize,
    /// NAT idle timeout of this device on each carrier (drawn once per device).
    pub nat_timeouts: Vec<Duration>,
}

/// One user.
#[derive(Debug, Clone, Default)]
pub struct UserSpec {
    /// Its devices.
    pub devices: Vec<u32>,
    /// Chat groups it belongs to.
    pub groups: Vec<u32>,
}

/// Who exists.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Devices by index.
    pub devices: Vec<DeviceSpec>,
    /// Users by index.
    pub users: Vec<UserSpec>,
    /// Chat groups by index: member users.
    pub chat_groups: Vec<Vec<u32>>,
}

impl Layout {
    /// Lays out the scenario's users, devices and chat groups; deterministic in `seed`.
    pub fn new(scenario: &Scenario, seed: u64) -> Layout {
        let mut layout = Layout::default();
        for (group_index, group) in scenario.groups.iter().enumerate() {
            let first_user = layout.users.len() as u32;
            for n in 0..group.count {
                let device = layout.devices.len() as u32;
                let user = first_user + (n / group.devices_per_user) as u32;
                if layout.users.len() <= user as usize {
                    layout.users.push(UserSpec::default());
                }
                layout.users[user as usize].devices.push(device);
                let mut rng =
                    ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0000_0000 ^ u64::from(device));
                let nat_timeouts = scenario
                    .carriers
                    .iter()
                    .map(|carrier| imlab_carrier::draw_nat_timeout(carrier, &mut rng))
                    .collect();
                layout.devices.push(DeviceSpec {
                    user,
                    group: group_index,
                    nat_timeouts,
                });
            }
            // Chat groups: consecutive users of this device group, `group_size` at a time.
            if group.traffic.group_per_hour > 0.0 {
                let users: Vec<u32> = (first_user..layout.users.len() as u32).collect();
                for members in users.chunks(group.traffic.group_size) {
                    if members.len() < 2 {
                        continue;
                    }
                    let chat = layout.chat_groups.len() as u32;
                    for member in members {
                        layout.users[*member as usize].groups.push(chat);
                    }
                    layout.chat_groups.push(members.to_vec());
                }
            }
        }
        layout
    }
}

pub use imlab_carrier::{Blocked, LinkWindow, Window};

/// Expands a scenario's faults into windows per carrier, clipped to the scenario's duration.
pub fn blocked_windows(scenario: &Scenario) -> Vec<Blocked> {
    let mut blocked = vec![Blocked::default(); scenario.carriers.len()];
    for fault in &scenario.faults {
        for start in occurrences(fault.at, fault.every, scenario.duration) {
            let end = (start + fault.duration).min(scenario.duration);
            match fault.kind {
                FaultKind::Outage { carrier } => blocked[carrier].outages.push((start, end)),
                FaultKind::Partition { carrier } => blocked[carrier].partitions.push((start, end)),
                FaultKind::Link { carrier, fault } => {
                    blocked[carrier].link.push(LinkWindow { start, end, fault });
                }
                _ => {}
            }
        }
    }
    for carrier in &mut blocked {
        carrier.link.sort_by_key(|window| window.start);
    }
    blocked
}

/// The windows of the scenario's faults of one kind (server and disk faults), clipped to
/// the scenario's duration.
pub fn fault_windows(scenario: &Scenario, kind: &FaultKind) -> Vec<Window> {
    let mut windows = Vec::new();
    for fault in scenario.faults.iter().filter(|f| &f.kind == kind) {
        for start in occurrences(fault.at, fault.every, scenario.duration) {
            windows.push((start, (start + fault.duration).min(scenario.duration)));
        }
    }
    windows
}

/// Start times of a fault: `at`, then every `every`, while before `until`.
pub fn occurrences(at: Duration, every: Option<Duration>, until: Duration) -> Vec<Duration> {
    let mut times = Vec::new();
    let mut next = at;
    while next < until {
        times.push(next);
        match every {
            Some(every) => next += every,
            None => break,
        }
    }
    times
}

/// Time a device was truly reachable: logged in, and its connection's NAT mapping alive.
/// Counted up to the end of the scenario (the heal phase is not measured).
#[derive(Debug, Clone, Default)]
pub struct Reachability {
    since: Option<Duration>,
    /// Reachable time so far.
    pub total: Duration,
}

impl Reachability {
    /// The device logged in at `at`.
    pub fn up(&mut self, at: Duration) {
        self.since.get_or_insert(at);
    }

    /// The device stopped being reachable at `at` (disconnect, or its mapping expired).
    pub fn down(&mut self, at: Duration, until: Duration) {
        if let Some(since) = self.since.take() {
            self.total += at.min(until).saturating_sub(since.min(until));
        }
    }
}

/// Commands from the driver to a device's app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCommand {
    /// Kill the app; restart it after this long.
    Kill(Duration),
    /// Move to another carrier.
    Handover(usize),
    /// End of the scenario: stop sending, come to the foreground, reconnect fresh.
    Heal,
}

/// Counters of the simulated infrastructure.
#[derive(Debug, Default)]
pub struct Counters {
    /// NAT mappings that expired under a live IM connection.
    pub silent_disconnects: AtomicU64,
    /// The same on push channels.
    pub push_channel_silent_disconnects: AtomicU64,
    /// Notices the server handed to the push service.
    pub pushes_sent: AtomicU64,
    /// Wake-ups that reached a device.
    pub wakeups_delivered: AtomicU64,
    /// Notices the push service could not deliver (no live channel, or an outage).
    pub wakeups_lost: AtomicU64,
}

/// State shared by the hosts and the driver.
pub struct Shared {
    /// The scenario.
    pub scenario: Scenario,
    /// Who exists.
    pub layout: Layout,
    /// The run's seed.
    pub seed: u64,
    /// Blocked windows per carrier.
    pub blocked: Vec<Blocked>,
    /// Each device's current carrier.
    pub device_carrier: Vec<AtomicUsize>,
    /// Each device's persistent client state (survives app kills).
    pub device_states: Vec<imlab_core::client::SharedClientState>,
    /// NAT expiries under each device's live IM connection.
    pub silent_by_device: Vec<AtomicU64>,
    /// How far each device's wall clock is off the true time, in ms (`clock_jump`).
    pub device_clock_offset_ms: Vec<std::sync::atomic::AtomicI64>,
    /// Times the server host has started.
    pub server_starts: AtomicUsize,
    /// Each device's radio energy meter (fed with every byte its flows carry).
    pub radios: Vec<Mutex<crate::energy::RadioMeter>>,
    /// Each device's time truly reachable: logged in on a live NAT mapping.
    pub reachability: Vec<Mutex<Reachability>>,
    /// The running server, to crash it.
    pub server: Mutex<Option<Arc<imlab_core::server::Server>>>,
    /// Connections each device has opened through any carrier (seeds each flow's RNG).
    pub flows_by_device: Vec<AtomicU64>,
    /// Each device's command channel, set when its cell host starts.
    pub device_commands: Vec<Mutex<Option<crate::queue::Sender<DeviceCommand>>>>,
    /// Each carrier host's queue of phones connecting to it, by
    /// `carrier * carrier_shards + shard`.
    pub switchboards: Vec<crate::proxy::Switchboard>,
    /// True while the push service delivers nothing.
    pub push_down: AtomicBool,
    /// The server's current store: opened by each server start (over the surviving disk
    /// for a durable store; a new one for an in-memory store).
    pub store: Mutex<Option<SimStore>>,
    /// The durable store's simulated disk: it outlives server crashes (a planted volatile
    /// store replaces it).
    pub disk: Mutex<Arc<MemEngine>>,
    /// Commits a `disk_failure` window refused.
    pub failed_commits: Arc<AtomicU64>,
    /// Infrastructure counters.
    pub counters: Counters,
    /// The trace.
    pub trace: Mutex<Trace>,
    /// The ledger.
    pub ledger: Mutex<Ledger>,
    /// Planted bugs for this run.
    pub planted: crate::Planted,
    /// The ledger keeps every Ping's time and interval (`RunOptions::heartbeat_series`).
    pub heartbeat_series: bool,
}

impl Shared {
    /// Records a trace event at the current simulated time.
    pub fn trace(&self, event: Event) {
        self.trace_at(now(), event);
    }

    /// Records a trace event at simulated time `at` (now, read off a [`HostClock`]).
    pub fn trace_at(&self, at: Duration, event: Event) {
        let at_ms = at.as_millis() as u64;
        self.trace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(at_ms, event);
    }

    /// Trace events recorded so far.
    pub fn trace_events(&self) -> u64 {
        self.trace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .n_events()
    }

    /// Runs `f` on the ledger.
    pub fn ledger<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(&mut self.ledger.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends a command to a device's app. Panics when the device's queue is full: device tasks
    /// drain theirs at once, so a full queue means a device task died, a simulator bug.
    pub fn command(&self, device: usize, command: DeviceCommand) {
        let slot = self.device_commands[device]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = slot.as_ref() {
            sender
                .try_send(command)
                .unwrap_or_else(|error| panic!("device d{device} is not taking commands: {error}"));
        }
    }

    /// The network label a device reports on carrier `carrier`: Wi-Fi carriers get a `wifi:`
    /// prefix, which heartbeat strategies (Line, GCM) read to pick their Wi-Fi interval.
    pub fn network_label(&self, carrier: usize) -> String {
        let profile = &self.scenario.carriers[carrier];
        if profile.wifi {
            format!("wifi:{}", profile.name)
        } else {
            profile.name.clone()
        }
    }

    /// The time the scenario's faults and traffic stop and healing starts.
    pub fn heal_at(&self) -> Duration {
        self.scenario.duration
    }

    /// Counter helper.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Simulated time since the start, inside or outside a host.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or(Duration::ZERO)
}

/// Simulated time on one host, read off its runtime's paused clock: [`now`] asks turmoil,
/// which looks the current host up in the world's map (SipHash) on every call (5.7% of a
/// `scale-10k` hour's CPU, perf, most of it from carrier flows). turmoil moves a host's clock
/// by exactly the time it adds to the host's elapsed time, so the two agree to the nanosecond
/// (checked on every read in debug builds).
///
/// Valid only on the host it was made on, for the life of that host's runtime: a crashed
/// host's restart gets a new runtime and needs a new clock.
#[derive(Debug, Clone, Copy)]
pub struct HostClock {
    sim_at: Duration,
    instant_at: tokio::time::Instant,
}

impl HostClock {
    /// The clock of the host this runs on.
    pub fn here() -> HostClock {
        HostClock {
            sim_at: now(),
            instant_at: tokio::time::Instant::now(),
        }
    }

    /// Simulated time since the start.
    pub fn now(&self) -> Duration {
        let at = self.sim_at + self.instant_at.elapsed();
        debug_assert_eq!(at, now(), "a host clock read off its host");
        at
    }

    /// Sleeps until simulated time `at` (at once if it has passed; forever when None). Reads
    /// the clock when made: poll it in the same poll (as `select!` does).
    pub fn sleep_until(&self, at: Option<Duration>) -> impl Future<Output = ()> + use<> {
        self.sleep_until_from(self.now(), at)
    }

    /// [`sleep_until`](Self::sleep_until) for a caller that has just read the clock: `now` is
    /// [`now`](Self::now) as read in this poll (no await since; debug builds check it), so the
    /// clock is not read again. The deadline is worked out here, so the future keeps only it
    /// (not the clock and both times): a carrier flow's task holds one of these while it waits.
    pub fn sleep_until_from(
        &self,
        now: Duration,
        at: Option<Duration>,
    ) -> impl Future<Output = ()> + use<> {
        debug_assert_eq!(now, self.now(), "a stale time given as now");
        // As `sleep(at - now)` would: a past time is now, not earlier.
        let deadline = at.map(|at| self.instant_at + at.max(now).saturating_sub(self.sim_at));
        async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        }
    }
}

/// The store a simulated server runs on, with the inspection the invariant checker needs.
#[derive(Clone)]
pub enum SimStore {
    /// The in-memory store.
    Memory(Arc<MemoryStore>),
    /// The durable store on the simulated disk.
    Durable(Arc<DurableStore<crate::disk::SimDisk>>),
}

impl SimStore {
    /// The store as the server core takes it.
    pub fn as_store(&self) -> Arc<dyn Store> {
        match self {
            SimStore::Memory(store) => store.clone(),
            SimStore::Durable(store) => store.clone(),
        }
    }

    /// Messages stored (durably, for the durable store).
    pub fn n_messages(&self) -> u64 {
        match self {
            SimStore::Memory(store) => store.n_messages(),
            SimStore::Durable(store) => store.n_messages(),
        }
    }

    /// Every user with an inbox or a cursor, sorted.
    pub fn users(&self) -> Vec<String> {
        match self {
            SimStore::Memory(store) => store.users(),
            // The simulated disk holds only records this store encoded: a read failure is a
            // bug in the store, not a simulated fault.
            SimStore::Durable(store) => store.users().expect("reading the simulated disk"),
        }
    }

    /// The checker's one read of the store: every user's inbox as (seq, msg_id), user by
    /// user in order (`inbox`), and the messages they name (`message`). The memory store
    /// hands over each entry's message as it goes; the durable store reads each message
    /// named once, after the inboxes, in msg_id order (a day's two million entries name
    /// about 600,000 messages, and the simulated disk reads a block of them at a time).
    /// Panics naming a message an inbox names and the store lacks.
    pub fn read_inboxes(
        &self,
        mut inbox: impl FnMut(String, &[(u64, u64)]),
        mut message: impl FnMut(&StoredMessage),
    ) {
        match self {
            SimStore::Memory(store) => {
                for user in store.users() {
                    let entries = store.inbox(&user);
                    let ids: Vec<(u64, u64)> = entries
                        .iter()
                        .map(|(seq, stored)| (*seq, stored.msg_id))
                        .collect();
                    inbox(user, &ids);
                    entries.iter().for_each(|(_, stored)| message(stored));
                }
            }
            SimStore::Durable(store) => {
                // Named msg_ids, a bit each: they run gapless from 1 to the messages stored.
                let stored = store.n_messages();
                let mut named = vec![0u64; (stored / 64 + 1) as usize];
                let missing = |msg_id: u64| -> ! {
                    panic!(
                        "message {msg_id} is named by an inbox but missing from the simulated disk"
                    )
                };
                for user in store.users().expect("reading the simulated disk") {
                    let entries = store
                        .inbox_msg_ids(&user)
                        .expect("reading the simulated disk");
                    for (_, msg_id) in &entries {
                        if *msg_id > stored {
                            missing(*msg_id);
                        }
                        named[(msg_id / 64) as usize] |= 1 << (msg_id % 64);
                    }
                    inbox(user, &entries);
                }
                store
                    .messages_where(
                        |msg_id| {
                            let Some(word) = named.get_mut((msg_id / 64) as usize) else {
                                return false;
                            };
                            let bit = 1 << (msg_id % 64);
                            let wanted = *word & bit != 0;
                            *word &= !bit;
                            wanted
                        },
                        |stored| message(&stored),
                    )
                    .expect("reading the simulated disk");
                if let Some((word, bits)) = named.iter().enumerate().find(|(_, bits)| **bits != 0) {
                    missing(word as u64 * 64 + u64::from(bits.trailing_zeros()));
                }
            }
        }
    }
}
