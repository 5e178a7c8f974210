//! One simulated device: the app (imlab-core's client core), its app-state cycle, its
//! traffic, app kills and restarts, and its OS push channel.
//!
//! The client core's persistent state survives an app kill; everything else (the running
//! client, its connection, pending group requests) dies with the app and is rebuilt on
//! restart, as on a phone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use imlab_core::client::{
    Client, ClientConfig, ClientEvent, ClientHandle, ClientObserver, ClientState, SharedClientState,
};
use imlab_core::heartbeat::{AppState, parse_strategy};
use imlab_core::net::Connector;
use imlab_core::proto::Target;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ledger::Conversation;
use crate::pipe::PipeEnd;
use crate::proxy::{TARGET_IM, open_via_carrier};
use crate::trace::Event;
use crate::world::{DeviceCommand, HostClock, Shared, group_id, now, user_id};

/// Commands queued per device at most.
pub const DEVICE_COMMANDS_LEN_MAX: usize = 64;
/// How long an inactive app stays online after a wake-up.
const WAKE_ONLINE: Duration = Duration::from_secs(60);

/// Opens the app's connections through the device's current carrier.
#[derive(Clone)]
struct SimConnector {
    shared: Arc<Shared>,
    device: usize,
}

impl Connector for SimConnector {
    type Stream = PipeEnd;

    async fn connect(&self) -> std::io::Result<PipeEnd> {
        open_via_carrier(&self.shared, self.device, TARGET_IM)
    }
}

/// Records the client core's events in the ledger and the trace.
struct DeviceObserver {
    shared: Arc<Shared>,
    /// The cell host's clock.
    clock: HostClock,
    device: u32,
}

impl ClientObserver for DeviceObserver {
    fn on_event(&self, state: &ClientState, event: &ClientEvent<'_>) {
        let at = self.clock.now();
        let at_ms = at.as_millis() as u64;
        let device = self.device;
        let index = device as usize;
        match event {
            ClientEvent::Connected { .. } => {
                self.shared.reachability[index]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .up(at);
                let in_scenario = at < self.shared.heal_at();
                self.shared.ledger(|l| {
                    l.devices[index].connects += 1;
                    l.devices[index].connects_in_scenario += u32::from(in_scenario);
                    l.devices[index].connected = true;
                    l.storms.login(index, at_ms);
                });
                self.shared.trace_at(at, Event::Connected { device });
            }
            ClientEvent::Disconnected(cause) => {
                self.shared.reachability[index]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .down(at, self.shared.heal_at());
                let cause = format!("{cause:?}");
                let kind = cause.split(['(', ' ']).next().unwrap_or("").to_string();
                self.shared.ledger(|l| {
                    l.devices[index].connected = false;
                    *l.devices[index].disconnects.entry(kind).or_default() += 1;
                });
                self.shared
                    .trace_at(at, Event::Disconnected { device, cause });
            }
            ClientEvent::Message(message) => {
                self.shared.ledger(|l| {
                    l.delivered(
                        device,
                        message.seq,
                        message.msg_id,
                        &message.client_msg_id,
                        at_ms,
                    )
                });
                self.shared.trace_at(
                    at,
                    Event::Delivered {
                        device,
                        seq: message.seq,
                        msg_id: message.msg_id,
                    },
                );
            }
            ClientEvent::Repeat(message) => {
                self.shared
                    .ledger(|l| l.repeated(device, message.seq, message.msg_id, at_ms));
                self.shared.trace_at(
                    at,
                    Event::App {
                        device,
                        what: format!("repeat seq {} msg_id {}", message.seq, message.msg_id),
                    },
                );
            }
            ClientEvent::InboxReset { .. } => {
                self.shared.ledger(|l| {
                    let position = l.devices[index].log.len();
                    l.devices[index].inbox_resets.push(position);
                });
                self.shared.trace_at(
                    at,
                    Event::App {
                        device,
                        what: "inbox_reset".into(),
                    },
                );
            }
            ClientEvent::TokenRenewed {
                renewal,
                expiry_unix_s,
            } => {
                self.shared.trace_at(
                    at,
                    Event::App {
                        device,
                        what: format!("token renewed ({renewal:?}), expires at {expiry_unix_s}"),
                    },
                );
            }
            ClientEvent::DuplicateDropped { .. } => {
                self.shared
                    .ledger(|l| l.devices[index].duplicates_dropped += 1);
            }
            ClientEvent::SendAcked {
                client_msg_id,
                seq,
                msg_id,
            } => {
                self.shared
                    .ledger(|l| l.acked(client_msg_id, *msg_id, state.inbox_epoch, at_ms));
                self.shared.trace_at(
                    at,
                    Event::Acked {
                        device,
                        client_msg_id: client_msg_id.to_string(),
                        seq: *seq,
                    },
                );
            }
            ClientEvent::HeartbeatSent { interval } => {
                let heartbeat_series = self.shared.heartbeat_series;
                self.shared.ledger(|l| {
                    let d = &mut l.devices[index];
                    d.heartbeats_sent += 1;
                    if heartbeat_series {
                        d.heartbeat_intervals
                            .push((at_ms, interval.as_millis() as u64));
                    }
                });
                self.shared.trace_at(
                    at,
                    Event::Heartbeat {
                        device,
                        answered: false,
                    },
                );
            }
            ClientEvent::HeartbeatAcked { .. } => {
                self.shared
                    .ledger(|l| l.devices[index].heartbeats_answered += 1);
                self.shared.trace_at(
                    at,
                    Event::Heartbeat {
                        device,
                        answered: true,
                    },
                );
            }
            _ => {}
        }
    }
}

/// The running app, if not killed.
struct App {
    handle: ClientHandle,
    task: JoinHandle<imlab_core::client::ClientExit>,
}

/// One device's task: runs until the cell host stops.
pub async fn run_device(
    shared: Arc<Shared>,
    clock: HostClock,
    device: usize,
    mut commands: crate::queue::Receiver<DeviceCommand>,
) {
    let spec = shared.layout.devices[device].clone();
    let group = shared.scenario.groups[spec.group].clone();
    let state: SharedClientState = shared.device_states[device].clone();
    let mut rng = ChaCha8Rng::seed_from_u64(shared.seed ^ 0xde71ce ^ ((device as u64) << 20));
    let (wake_tx, mut wakes) = crate::queue::bounded(4);
    let (carrier_tx, carrier_rx) =
        watch::channel(shared.device_carrier[device].load(Ordering::Relaxed));
    tokio::spawn(crate::push::push_channel(
        shared.clone(),
        device,
        wake_tx,
        carrier_rx,
    ));

    let mut incarnation = 0u64;
    let mut app = Some(start_app(
        &shared,
        clock,
        device,
        &state,
        &group.heartbeat,
        incarnation,
    ));
    let mut healing = false;
    let mut restart_at: Option<Duration> = None;
    let mut offline_at: Option<Duration> = None;

    // App-state cycle, from a random phase so devices do not switch in lockstep.
    let cycle: Vec<(AppState, Duration)> = group.app_states.clone();
    let cycle_ms: u64 = cycle.iter().map(|(_, d)| d.as_millis() as u64).sum();
    let mut phase_ms = if cycle_ms > 0 {
        rng.random_range(0..cycle_ms)
    } else {
        0
    };
    let mut cycle_index = 0usize;
    while cycle_ms > 0 && phase_ms >= cycle[cycle_index].1.as_millis() as u64 {
        phase_ms -= cycle[cycle_index].1.as_millis() as u64;
        cycle_index += 1;
    }
    let mut app_state = cycle
        .get(cycle_index)
        .map_or(AppState::Foreground, |(s, _)| *s);
    let mut next_state_at = cycle
        .get(cycle_index)
        .map(|(_, d)| clock.now() + *d - Duration::from_millis(phase_ms));
    apply_app_state(&shared, device, &app, app_state, &mut offline_at);

    let traffic = group.traffic.clone();
    let mut next_direct_at = next_poisson(&mut rng, clock.now(), traffic.one_to_one_per_hour);
    let mut next_group_at = if shared.layout.users[spec.user as usize].groups.is_empty() {
        None
    } else {
        next_poisson(&mut rng, clock.now(), traffic.group_per_hour)
    };

    loop {
        let wake_at = [
            next_state_at,
            next_direct_at,
            next_group_at,
            restart_at,
            offline_at,
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            biased;
            command = commands.recv() => {
                let Some(command) = command else { return };
                match command {
                    DeviceCommand::Kill(duration) => {
                        if let Some(running) = app.take() {
                            running.task.abort();
                            shared.trace(Event::App { device: device as u32, what: "killed".into() });
                            shared.ledger(|l| {
                                l.devices[device].connected = false;
                                l.storms.left(device);
                            });
                        }
                        restart_at = Some(clock.now() + duration);
                    }
                    DeviceCommand::Handover(to) => {
                        shared.device_carrier[device].store(to, Ordering::Relaxed);
                        let _ = carrier_tx.send(to);
                        if let Some(running) = &app {
                            let _ = running.handle.network_changed(&shared.network_label(to));
                        }
                    }
                    DeviceCommand::Heal => {
                        healing = true;
                        next_direct_at = None;
                        next_group_at = None;
                        next_state_at = None;
                        offline_at = None;
                        if app.is_none() {
                            incarnation += 1;
                            app = Some(start_app(&shared, clock, device, &state, &group.heartbeat, incarnation));
                            restart_at = None;
                        }
                        app_state = AppState::Foreground;
                        apply_app_state(&shared, device, &app, app_state, &mut offline_at);
                        if let Some(running) = &app {
                            let carrier = shared.device_carrier[device].load(Ordering::Relaxed);
                            let _ = running.handle.network_changed(&shared.network_label(carrier));
                        }
                    }
                }
            }
            Some(()) = wakes.recv() => {
                Shared::count(&shared.counters.wakeups_delivered);
                shared.ledger(|l| l.devices[device].wakeups += 1);
                shared.trace(Event::WakeUp { device: device as u32 });
                if let Some(running) = &app
                    && app_state == AppState::Inactive
                {
                    let _ = running.handle.go_online();
                    offline_at = Some(clock.now() + WAKE_ONLINE);
                }
            }
            () = clock.sleep_until(wake_at) => {
                let at = clock.now();
                if restart_at.is_some_and(|t| t <= at) {
                    restart_at = None;
                    incarnation += 1;
                    app = Some(start_app(&shared, clock, device, &state, &group.heartbeat, incarnation));
                    shared.trace(Event::App { device: device as u32, what: "restarted".into() });
                    apply_app_state(&shared, device, &app, app_state, &mut offline_at);
                }
                if offline_at.is_some_and(|t| t <= at) {
                    offline_at = None;
                    if app_state == AppState::Inactive
                        && let Some(running) = &app
                    {
                        go_offline(&shared, device, running);
                    }
                }
                if next_state_at.is_some_and(|t| t <= at) && !healing {
                    cycle_index = (cycle_index + 1) % cycle.len();
                    let (state_now, duration) = cycle[cycle_index];
                    app_state = state_now;
                    next_state_at = Some(at + duration);
                    apply_app_state(&shared, device, &app, app_state, &mut offline_at);
                    shared.trace(Event::App { device: device as u32, what: format!("{app_state:?}") });
                }
                if next_direct_at.is_some_and(|t| t <= at) {
                    next_direct_at = next_poisson(&mut rng, at, traffic.one_to_one_per_hour);
                    let n_users = shared.layout.users.len() as u32;
                    if n_users > 1 {
                        let mut peer = rng.random_range(0..n_users - 1);
                        if peer >= spec.user {
                            peer += 1;
                        }
                        send(&shared, &app, device, app_state, Conversation::Peer(peer), traffic.body_bytes);
                    }
                }
                if next_group_at.is_some_and(|t| t <= at) {
                    next_group_at = next_poisson(&mut rng, at, traffic.group_per_hour);
                    let groups = &shared.layout.users[spec.user as usize].groups;
                    let chat = groups[rng.random_range(0..groups.len())];
                    send(&shared, &app, device, app_state, Conversation::Group(chat), traffic.body_bytes);
                }
            }
        }
    }
}

fn start_app(
    shared: &Arc<Shared>,
    clock: HostClock,
    device: usize,
    state: &SharedClientState,
    heartbeat: &str,
    incarnation: u64,
) -> App {
    let carrier = shared.device_carrier[device].load(Ordering::Relaxed);
    let config = ClientConfig {
        network: shared.network_label(carrier),
        credentials: crate::tokens::credentials(shared, device),
        #[cfg(feature = "planted-bugs")]
        planted: imlab_core::planted::PlantedBugs {
            push_skips_seq_check: shared.planted.push_skips_seq_check,
            weak_link_blind: shared.planted.weak_link_blind,
            repeats_shown_again: shared.planted.repeats_shown_again,
            gap_jumps_ahead: shared.planted.gap_jumps_ahead,
            resends_newest_first: shared.planted.resends_newest_first,
            no_sync_on_connect: shared.planted.no_sync_on_connect,
            ..Default::default()
        },
        ..ClientConfig::default()
    };
    let strategy = parse_strategy(heartbeat).expect("the scenario loader validated the strategy");
    let observer = Arc::new(DeviceObserver {
        shared: shared.clone(),
        clock,
        device: device as u32,
    });
    let rng_seed = shared.seed ^ ((device as u64) << 24) ^ (incarnation << 56) ^ 0xc11e;
    let connector = SimConnector {
        shared: shared.clone(),
        device,
    };
    let (client, handle) = Client::new(
        connector,
        config,
        state.clone(),
        strategy,
        observer,
        rng_seed,
    );
    App {
        handle,
        task: tokio::spawn(client.run()),
    }
}

fn apply_app_state(
    shared: &Shared,
    device: usize,
    app: &Option<App>,
    app_state: AppState,
    offline_at: &mut Option<Duration>,
) {
    let Some(running) = app else { return };
    let _ = running.handle.set_app_state(app_state);
    match app_state {
        AppState::Inactive => go_offline(shared, device, running),
        AppState::Foreground | AppState::Background => {
            *offline_at = None;
            let _ = running.handle.go_online();
        }
    }
}

/// The app drops its connection until it is woken: a storm after a crash stops waiting for it.
fn go_offline(shared: &Shared, device: usize, running: &App) {
    let _ = running.handle.go_offline();
    shared.ledger(|l| l.storms.left(device));
}

fn send(
    shared: &Shared,
    app: &Option<App>,
    device: usize,
    app_state: AppState,
    to: Conversation,
    body_bytes: usize,
) {
    // A killed or suspended app sends nothing.
    let Some(running) = app else { return };
    if app_state == AppState::Inactive {
        return;
    }
    let target = match to {
        Conversation::Peer(user) => Target::Peer(user_id(user)),
        Conversation::Group(group) => Target::Group(group_id(group)),
    };
    let Ok(client_msg_id) = running
        .handle
        .send(target, Bytes::from(vec![b'm'; body_bytes]))
    else {
        return;
    };
    let at_ms = now().as_millis() as u64;
    shared.trace(Event::SendQueued {
        device: device as u32,
        client_msg_id: client_msg_id.clone(),
    });
    shared.ledger(|l| l.queued(device as u32, client_msg_id, to, at_ms));
}

/// The next event of a Poisson process of `per_hour` events per hour after `at`.
fn next_poisson(rng: &mut ChaCha8Rng, at: Duration, per_hour: f64) -> Option<Duration> {
    if per_hour <= 0.0 {
        return None;
    }
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    let wait_s = -u.ln() * 3_600.0 / per_hour;
    Some(at + Duration::from_secs_f64(wait_s))
}
