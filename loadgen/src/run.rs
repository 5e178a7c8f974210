//! The load run: ramp the clients up at the connect rate, send on an open-loop schedule,
//! drain, stop, and report. Results are rewritten every second so a killed run keeps what it
//! measured.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::source::SourceConnector;
use bytes::Bytes;
use imlab_core::client::{
    Client, ClientConfig, ClientEvent, ClientExit, ClientHandle, ClientObserver, ClientState,
    SharedClientState,
};
use imlab_core::heartbeat::{HeartbeatStrategy, parse_strategy};
use imlab_core::net::Connector;
use imlab_core::proto::Target;
use imlab_core::tls::TlsConnector;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{LoadConfig, Pattern};
use crate::ledger::LoadLedger;
use crate::results::{LoadResults, write_results};

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting is impossible.
    #[error("{0}")]
    Invalid(String),
    /// No client could log in.
    #[error("no client could log in to {target}: {cause}")]
    Unreachable {
        /// The target.
        target: String,
        /// The last failure seen.
        cause: String,
    },
    /// Writing results failed.
    #[error("writing results to {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

struct Observer {
    ledger: Arc<Mutex<LoadLedger>>,
    client: u32,
    connected: Mutex<bool>,
}

impl ClientObserver for Observer {
    fn on_event(&self, _state: &ClientState, event: &ClientEvent<'_>) {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            ClientEvent::Connecting => ledger.connecting(self.client),
            ClientEvent::Connected { .. } => {
                *self.connected.lock().unwrap_or_else(|p| p.into_inner()) = true;
                ledger.connected(self.client);
            }
            ClientEvent::Disconnected(cause) => {
                let was =
                    std::mem::take(&mut *self.connected.lock().unwrap_or_else(|p| p.into_inner()));
                let cause = format!("{cause:?}");
                let kind = cause.split(['(', ' ']).next().unwrap_or("").to_string();
                if !was {
                    ledger.last_failure = Some(cause.clone());
                }
                ledger.disconnected(self.client, &kind, was);
            }
            ClientEvent::Message(message) => ledger.delivered(self.client, &message.client_msg_id),
            ClientEvent::SendAcked { client_msg_id, .. } => ledger.acked(client_msg_id),
            ClientEvent::SendFailed { .. } => ledger.send_failed(),
            ClientEvent::GroupReply(_) => ledger.groups_created += 1,
            ClientEvent::Stopped(exit) => ledger.last_failure = Some(format!("{exit:?}")),
            _ => {}
        }
    }
}

/// Ids are unique per run (a tag from the start time), so runs against the same server never
/// share inboxes or client message ids (a reused id would be deduped by the server).
fn user(tag: &str, client: usize) -> String {
    format!("{tag}u{client}")
}

/// Called once a second with the results so far (a live progress line), and at the end.
pub type Progress = Arc<dyn Fn(&LoadResults) + Send + Sync>;

/// Runs a load test to the end and returns its results.
pub async fn run(config: LoadConfig, progress: Progress) -> Result<LoadResults, LoadError> {
    if config.clients < 2 {
        return Err(LoadError::Invalid("--clients must be at least 2".into()));
    }
    if config.connect_rate <= 0.0 || config.msg_rate < 0.0 {
        return Err(LoadError::Invalid(
            "--connect-rate must be positive and --msg-rate not negative".into(),
        ));
    }
    if let Pattern::Group(size) = config.pattern
        && size > config.clients
    {
        return Err(LoadError::Invalid(format!(
            "--pattern group:{size} needs at least {size} clients"
        )));
    }
    parse_strategy(&config.heartbeat)
        .map_err(|error| LoadError::Invalid(format!("--heartbeat: {error}")))?;
    let ledger = Arc::new(Mutex::new(LoadLedger::new(config.clients)));
    let tag = format!(
        "r{}w{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
        config.worker
    );
    let limit = crate::source::raise_open_file_limit()
        .map_err(|error| LoadError::Invalid(format!("raising the open-file limit: {error}")))?;
    let most = crate::source::clients_per_process_max(limit);
    if config.clients as u64 > most {
        return Err(LoadError::Invalid(format!(
            "{} clients need {} open files but this process may open {limit} (the hard limit); \
             use --workers {} or more",
            config.clients,
            config.clients as u64 + crate::source::SPARE_FDS,
            (config.clients as u64).div_ceil(most.max(1))
        )));
    }
    let user = |client: usize| user(&tag, client);
    let started = Instant::now();
    let mut handles: Vec<ClientHandle> = Vec::with_capacity(config.clients);
    let mut tasks = Vec::with_capacity(config.clients);
    let reporter = tokio::spawn(report_every_second(
        config.clone(),
        ledger.clone(),
        started,
        progress.clone(),
    ));

    // Ramp: client i starts at i / connect_rate.
    for client in 0..config.clients {
        let at = started + Duration::from_secs_f64(client as f64 / config.connect_rate);
        tokio::time::sleep_until(at).await;
        let token = match &config.auth_secret {
            None => String::new(),
            Some(secret) => {
                let expiry_s = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    + 86_400;
                imlab_core::auth::mint_token(secret, &user(client), expiry_s)
                    .map_err(LoadError::Invalid)?
            }
        };
        let observer = Arc::new(Observer {
            ledger: ledger.clone(),
            client: client as u32,
            connected: Mutex::new(false),
        });
        let source = SourceConnector {
            target: config.target,
            source: (!config.source_ips.is_empty())
                .then(|| config.source_ips[client % config.source_ips.len()]),
        };
        let setup = ClientSetup {
            config: ClientConfig {
                token,
                ..ClientConfig::default()
            },
            state: ClientState::new(user(client), format!("{tag}d{client}")).shared(),
            heartbeat: parse_strategy(&config.heartbeat).expect("validated above"),
            observer,
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ client as u64),
        };
        // TLS runs over the source-bound TCP connection, so --source-ips still applies.
        let (task, handle) = match &config.tls {
            None => setup.spawn(source),
            Some(tls) => setup.spawn(TlsConnector::new(source, config.target, tls)),
        };
        tasks.push(task);
        handles.push(handle);
    }
    // Let the ramp finish logging in (bounded), then make the groups before any send. If
    // every client has failed and none got in, the target is wrong: stop with what we have.
    let n = config.clients;
    wait_until(&ledger, Duration::from_secs(30), |l| {
        l.connected as usize >= n || (l.connects == 0 && l.connects_failed as usize >= n)
    })
    .await;
    let nobody = {
        let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
        (l.connects == 0).then(|| l.last_failure.clone().unwrap_or_default())
    };
    if let Some(cause) = nobody {
        for handle in &handles {
            let _ = handle.shutdown();
        }
        reporter.abort();
        let results =
            LoadResults::from_ledger(&config, &ledger.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(dir) = &config.out {
            let _ = write_results(
                dir,
                &results,
                &ledger.lock().unwrap_or_else(|p| p.into_inner()),
            );
        }
        return Err(LoadError::Unreachable {
            target: config.target.to_string(),
            cause,
        });
    }
    let groups = create_groups(&config, &handles, &tag);
    let n_groups = groups.len() as u64;
    wait_until(&ledger, Duration::from_secs(30), |l| {
        l.groups_created >= n_groups
    })
    .await;

    // Open loop: message k is planned at send_start + k / msg_rate, whatever happened before.
    let send_start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let n_messages = (config.msg_rate * config.duration.as_secs_f64()).round() as u64;
    let body = Bytes::from(vec![b'x'; config.body_bytes]);
    ledger
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .reserve(n_messages as usize);
    for k in 0..n_messages {
        let planned = send_start + Duration::from_secs_f64(k as f64 / config.msg_rate);
        // Only a send still ahead is waited for: a sleep whose deadline has passed still
        // waits for the timer driver's next turn, which at tens of thousands of sends a
        // second made the scheduler itself the bottleneck (and its lateness latency).
        if planned > Instant::now() {
            tokio::time::sleep_until(planned).await;
        }
        let planned_us = planned.duration_since(started).as_micros() as u64;
        let sender = rng.random_range(0..config.clients);
        let (target, recipients) = match config.pattern {
            Pattern::OneToOne => {
                let mut peer = rng.random_range(0..config.clients - 1);
                if peer >= sender {
                    peer += 1;
                }
                (Target::Peer(user(peer)), vec![peer as u32])
            }
            Pattern::Group(size) => {
                let group = sender / size;
                let members = &groups[group];
                let recipients = members
                    .iter()
                    .copied()
                    .filter(|m| *m != sender as u32)
                    .collect();
                (Target::Group(format!("{tag}g{group}")), recipients)
            }
        };
        // Record first: the ack can arrive before `send_as` returns.
        let client_msg_id = handles[sender].new_client_msg_id();
        ledger.lock().unwrap_or_else(|p| p.into_inner()).planned(
            client_msg_id.clone(),
            planned_us,
            sender as u32,
            recipients,
        );
        if handles[sender]
            .send_as(client_msg_id.clone(), target, body.clone())
            .is_err()
        {
            ledger
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .refused_locally(&client_msg_id);
        }
    }
    // Drain: stragglers arrive, then everyone stops.
    tokio::time::sleep(config.drain).await;
    for handle in &handles {
        let _ = handle.shutdown();
    }
    for task in tasks {
        let _ = task.await;
    }
    reporter.abort();
    let results =
        LoadResults::from_ledger(&config, &ledger.lock().unwrap_or_else(|p| p.into_inner()));
    if let Some(dir) = &config.out {
        write_results(
            dir,
            &results,
            &ledger.lock().unwrap_or_else(|p| p.into_inner()),
        )
        .map_err(|source| LoadError::Write {
            path: dir.display().to_string(),
            source,
        })?;
    }
    progress(&results);
    Ok(results)
}

/// Everything a virtual device's client core is built from, but its connector.
struct ClientSetup {
    config: ClientConfig,
    state: SharedClientState,
    heartbeat: Box<dyn HeartbeatStrategy>,
    observer: Arc<Observer>,
    rng: ChaCha8Rng,
}

impl ClientSetup {
    /// Starts the client core on `connector`.
    fn spawn<C: Connector>(self, connector: C) -> (JoinHandle<ClientExit>, ClientHandle) {
        let (core, handle) = Client::new(
            connector,
            self.config,
            self.state,
            self.heartbeat,
            self.observer,
            self.rng,
        );
        (tokio::spawn(core.run()), handle)
    }
}

/// Groups of `size` consecutive clients; the first member creates each. Returns members.
fn create_groups(config: &LoadConfig, handles: &[ClientHandle], tag: &str) -> Vec<Vec<u32>> {
    let Pattern::Group(size) = config.pattern else {
        return Vec::new();
    };
    let mut groups = Vec::new();
    for (index, members) in (0..config.clients as u32)
        .collect::<Vec<_>>()
        .chunks(size)
        .enumerate()
    {
        let others: Vec<String> = members[1..]
            .iter()
            .map(|m| user(tag, *m as usize))
            .collect();
        let _ = handles[members[0] as usize].create_group(&format!("{tag}g{index}"), others);
        groups.push(members.to_vec());
    }
    groups
}

/// Waits until `condition` holds over the ledger, at most `limit`.
async fn wait_until(
    ledger: &Mutex<LoadLedger>,
    limit: Duration,
    condition: impl Fn(&LoadLedger) -> bool,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition(&ledger.lock().unwrap_or_else(|p| p.into_inner())) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn report_every_second(
    config: LoadConfig,
    ledger_lock: Arc<Mutex<LoadLedger>>,
    started: Instant,
    progress: Progress,
) {
    let mut next = started + Duration::from_secs(1);
    loop {
        tokio::time::sleep_until(next).await;
        next += Duration::from_secs(1);
        let mut ledger = ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
        ledger.tick();
        let results = LoadResults::from_ledger(&config, &ledger);
        drop(ledger);
        if let Some(dir) = &config.out {
            let ledger = ledger_lock.lock().unwrap_or_else(|p| p.into_inner());
            let _ = write_results(dir, &results, &ledger);
        }
        progress(&results);
    }
}
