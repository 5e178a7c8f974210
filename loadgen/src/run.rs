//! The load run: ramp the clients up at the connect rate, send on an open-loop schedule,
//! drain, stop, and report. Results are rewritten every second so a killed run keeps what it
//! measured.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imlab_core::heartbeat::{AppState, parse_strategy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::carrier::{CarrierResults, Carriers};
use crate::config::{LoadConfig, Pattern, ProtocolChoice};
use crate::crossings::{Crossings, Owed, Received, RecordFiles};
use crate::ledger::LoadLedger;
use crate::pacer::{Pacer, Timer};
use crate::pool::ClientPool;
use crate::population::{Conversation, Population, app_state_at};
use crate::protocol::imlab::{self, Imlab};
use crate::protocol::mqtt::Mqtt;
use crate::protocol::{Device, DeviceEvents, Devices, MsgId, Outgoing, Protocol, To};
use crate::results::{LedgerFiles, LoadResults, write_results};

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
        /// The failures by cause, with advice.
        cause: String,
    },
    /// Writing results failed.
    #[error("writing results to {path}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Called once a second with the results so far (a live progress line), at every change of
/// phase, and at the end.
pub type Progress = Arc<dyn Fn(&LoadResults) + Send + Sync>;

/// The run's shared parts.
struct Shared {
    config: LoadConfig,
    protocol: Box<dyn Protocol>,
    /// The clients' futures, polled in groups.
    clients: ClientPool,
    /// With `--carrier`: the carrier model on every connection.
    carriers: Option<Carriers>,
    ledger: Arc<Mutex<LoadLedger>>,
    progress: Progress,
    /// Cancelled on the first Ctrl-C: stop sending, skip the drain, finish the results.
    stop: CancellationToken,
    phase: Arc<Mutex<&'static str>>,
    /// Seconds in timeseries.csv; held while the files are written.
    seconds_written: Mutex<usize>,
    /// A worker's record files for the merge, with what was taken from the ledger and not
    /// appended yet; `None` without `--out`, outside `--workers`, and once the run's end took
    /// its record (nothing is appended after it).
    crossings_out: Mutex<Option<CrossingsOut>>,
}

/// Crossing records a worker keeps while its files refuse them (a full disk): about 32 MB.
/// Past it, what is taken from the ledger is counted, not kept (see [`CrossingsOut::keep`]).
const CROSSING_RECORDS_KEPT_MAX: usize = 1_000_000;

/// A worker's crossing records on their way to its files.
struct CrossingsOut {
    files: RecordFiles,
    owed: Vec<Owed>,
    received: Vec<Received>,
    /// Records not kept because [`CROSSING_RECORDS_KEPT_MAX`] waited: the merge counts
    /// their deliveries unrecorded (pending, never lost or delivered).
    owed_dropped: u64,
    received_dropped: u64,
    /// The last append's error, told once when the appends start failing and once when
    /// they work again.
    failing: Option<String>,
    /// [`CROSSING_RECORDS_KEPT_MAX`], or a test's.
    kept_max: usize,
}

impl CrossingsOut {
    fn new(files: RecordFiles) -> CrossingsOut {
        CrossingsOut {
            files,
            owed: Vec::new(),
            received: Vec::new(),
            owed_dropped: 0,
            received_dropped: 0,
            failing: None,
            kept_max: CROSSING_RECORDS_KEPT_MAX,
        }
    }

    /// Keeps records taken from the ledger until they are appended, at most `kept_max` of
    /// them: the rest are counted and dropped.
    fn keep(&mut self, owed: impl Iterator<Item = Owed>, received: impl Iterator<Item = Received>) {
        let room = |out: &CrossingsOut| {
            out.kept_max
                .saturating_sub(out.owed.len() + out.received.len())
        };
        for record in owed {
            if room(self) == 0 {
                self.owed_dropped += 1;
            } else {
                self.owed.push(record);
            }
        }
        for record in received {
            if room(self) == 0 {
                self.received_dropped += 1;
            } else {
                self.received.push(record);
            }
        }
    }

    /// Appends what waits; kept to append again if that fails. The first failure of a run
    /// of them is told on stderr (naming the file), as is the return to working.
    fn append(&mut self) -> std::io::Result<()> {
        match self.files.append(&self.owed, &self.received) {
            Ok(()) => {
                self.owed.clear();
                self.received.clear();
                if self.failing.take().is_some() {
                    eprintln!("imlab load: the crossing records are appended again");
                }
                Ok(())
            }
            Err(error) => {
                if self.failing.is_none() {
                    eprintln!(
                        "imlab load: appending the crossing records failed ({error}): kept to \
                         append again each second, at most {} (past them counted as \
                         unrecorded, their deliveries pending at the merge)",
                        self.kept_max
                    );
                }
                self.failing = Some(error.to_string());
                Err(error)
            }
        }
    }
}

impl Shared {
    fn results(&self) -> LoadResults {
        self.results_and_files(false).0
    }

    /// The results and what the files need of the ledger, in one hold of its lock; once the
    /// run has `ended`, every closed second (see [`LedgerFiles::of`]).
    fn results_and_files(&self, ended: bool) -> (LoadResults, LedgerFiles) {
        let phase = *self.phase.lock().unwrap_or_else(|p| p.into_inner());
        let ledger = lock(&self.ledger);
        let written = *self
            .seconds_written
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let files = LedgerFiles::of(&ledger, written, ended);
        let mut results =
            LoadResults::from_ledger(&self.config, &self.protocol.describe(), &ledger, phase);
        if let (Some(carriers), Some((_, figures))) = (&self.carriers, &ledger.carriers) {
            results.carriers = carriers
                .names()
                .iter()
                .zip(figures)
                .enumerate()
                .map(|(k, (name, figures))| {
                    CarrierResults::of(name, figures, carriers.decisions(k))
                })
                .collect();
        }
        (results, files)
    }

    /// Appends the ledger's final crossing records to the worker's files (every second), so
    /// that it holds only the last second's. The files' lock is taken before the ledger's, as
    /// the run's end takes it, so no record taken here misses the files.
    fn append_crossings(&self) -> std::io::Result<()> {
        let mut out = self.crossings_out.lock().unwrap_or_else(|p| p.into_inner());
        let Some(out) = out.as_mut() else {
            return Ok(());
        };
        let (dues, received) = lock(&self.ledger).take_crossing_records();
        out.keep(dues.iter().map(Owed::of), received.iter().map(Received::of));
        out.append()
    }

    /// Enters a phase and tells the progress callback at once.
    fn enter(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
        (self.progress)(&self.results());
    }

    /// Writes the results files now; the ledger's lock is not held meanwhile.
    fn write(&self, results: &LoadResults, files: &LedgerFiles) -> Result<(), LoadError> {
        let Some(dir) = &self.config.out else {
            return Ok(());
        };
        let mut written = self
            .seconds_written
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        write_results(dir, results, files, &mut written).map_err(|source| LoadError::Write {
            path: dir.display().to_string(),
            source,
        })
    }
}

fn lock(ledger: &Mutex<LoadLedger>) -> std::sync::MutexGuard<'_, LoadLedger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks a run's settings before anything connects; each error names its flag.
pub fn validate(config: &LoadConfig) -> Result<(), LoadError> {
    let invalid = |text: String| Err(LoadError::Invalid(text));
    if config.clients < 2 {
        return invalid(format!("--clients {}: need at least 2", config.clients));
    }
    if !(config.connect_rate > 0.0 && config.connect_rate.is_finite()) {
        return invalid(format!(
            "--connect-rate {}: must be a positive number of connections per second",
            config.connect_rate
        ));
    }
    if !(config.msg_rate >= 0.0 && config.msg_rate.is_finite()) {
        return invalid(format!(
            "--msg-rate {}: must be 0 or a positive number of messages per second",
            config.msg_rate
        ));
    }
    if config.open_messages_max == 0 {
        return invalid(
            "--max-open-messages 0: the ledger must follow at least one message in flight".into(),
        );
    }
    if let Pattern::Group(size) = config.pattern
        && size > config.clients
    {
        return invalid(format!(
            "--pattern group:{size} needs at least {size} clients"
        ));
    }
    crate::carrier::validate_mix(&config.carriers).map_err(LoadError::Invalid)?;
    if config.auth_secret.as_deref() == Some("") {
        return invalid("--auth-secret is empty: give the server's secret, or leave it out".into());
    }
    parse_strategy(&config.heartbeat)
        .map_err(|error| LoadError::Invalid(format!("--heartbeat: {error}")))?;
    if let ProtocolChoice::Mqtt(options) = &config.protocol {
        options.check().map_err(LoadError::Invalid)?;
    }
    if let Some(population) = &config.population {
        validate_population(config, population)?;
    }
    Ok(())
}

/// Refuses a `--workers` run of `msg_rate` for `duration` whose merge would outgrow the
/// memory this machine has available (see `check_merge_fits`), before any worker starts.
/// `to_anyone`: deliveries a message owes clients that may be any worker's
/// ([`crate::crossings::merge_bytes_for_run`]).
pub fn check_merge_memory(
    msg_rate: f64,
    duration: Duration,
    to_anyone: f64,
    workers: usize,
) -> Result<(), LoadError> {
    check_merge_fits(
        msg_rate,
        duration,
        to_anyone,
        workers,
        mem_available_bytes(),
    )
}

/// What [`check_merge_memory`] counts for a run of `pattern`: a one-to-one peer may be any
/// worker's client; a group stays within its worker.
pub fn to_anyone(pattern: Pattern) -> f64 {
    match pattern {
        Pattern::OneToOne => 1.0,
        Pattern::Group(_) => 0.0,
    }
}

/// The memory this machine has for new allocations (`MemAvailable` in `/proc/meminfo`), or
/// `None` where that cannot be read.
fn mem_available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a run of `msg_rate` for `duration` over `workers` workers, each message owing
/// `to_anyone` deliveries to clients that may be any worker's, whose merge would outgrow
/// `available` bytes: a worker's memory does not grow with the run (its records for the
/// merge go to its files every second), but the merge holds each first delivery that crossed
/// between workers ([`crate::crossings::merge_bytes_for_run`]), so a long run would be killed
/// for memory at its end. Judged on the least that costs, so a run that fits is never refused; `None` (not
/// Linux): not checked.
fn check_merge_fits(
    msg_rate: f64,
    duration: Duration,
    to_anyone: f64,
    workers: usize,
    available: Option<u64>,
) -> Result<(), LoadError> {
    let Some(available) = available else {
        return Ok(());
    };
    let messages = msg_rate * duration.as_secs_f64();
    let bytes = crate::crossings::merge_bytes_for_run(messages, to_anyone, workers);
    if bytes <= available as f64 {
        return Ok(());
    }
    let gib = |bytes: f64| bytes / f64::from(1u32 << 30);
    Err(LoadError::Invalid(format!(
        "--msg-rate {} for --duration {:?} over --workers {workers} plans about \
         {messages:.0} messages, and the merge of the workers' results holds each first \
         delivery that crossed between them ({} bytes each, at most {} a worker): {:.1} GiB, \
         more than the {:.1} GiB of memory this machine has available (MemAvailable in \
         /proc/meminfo): lower the rate, shorten the run, or split it across machines, each \
         with its part of the clients and rate, and merge their results (imlab load merge)",
        msg_rate,
        duration,
        crate::crossings::BYTES_PER_FIRST_DELIVERY,
        crate::ledger::RECEIVED_LEN_MAX,
        gib(bytes),
        gib(available as f64),
    )))
}

/// A `--scenario` run: imlab's protocol, the scenario's carriers, and (with `--workers`) a
/// share of its devices.
fn validate_population(config: &LoadConfig, population: &Population) -> Result<(), LoadError> {
    let invalid = |text: String| Err(LoadError::Invalid(text));
    // With --workers, this worker's devices are its share of the scenario's.
    let (first_client, total) = config.share.as_ref().map_or((0, config.clients), |share| {
        (share.first_client as usize, share.clients_total)
    });
    if total != population.clients() || first_client + config.clients > total {
        return invalid(format!(
            "--scenario {}: clients {first_client}..{} of {total} configured for {} devices",
            population.name,
            first_client + config.clients,
            population.clients()
        ));
    }
    if let Some(group) = population
        .groups
        .iter()
        .find(|group| group.carrier >= config.carriers.len().max(1))
    {
        return invalid(format!(
            "--scenario {}: device group {} has no carrier",
            population.name, group.name
        ));
    }
    for group in &population.groups {
        parse_strategy(&group.heartbeat).map_err(|error| {
            LoadError::Invalid(format!(
                "--scenario {}: device group {}: heartbeat: {error}",
                population.name, group.name
            ))
        })?;
    }
    Ok(())
}

/// Runs a load test to the end (or until `stop` is cancelled) and returns its results.
pub async fn run(
    config: LoadConfig,
    progress: Progress,
    stop: CancellationToken,
) -> Result<LoadResults, LoadError> {
    validate(&config)?;
    let started_unix_us = unix_us();
    let tag = match &config.share {
        Some(share) => share.run_tag.clone(),
        None => crate::config::run_tag(started_unix_us / 1_000, config.worker),
    };
    check_open_files(&config)?;
    // The send loop's timer, made before the clients take their files.
    let timer = Timer::new()
        .map_err(|error| LoadError::Invalid(format!("making the send pacer's timer: {error}")))?;
    let first_client = config.share.as_ref().map_or(0, |s| s.first_client);
    let mut ledger = LoadLedger::for_clients(first_client, config.clients);
    ledger.set_open_max(config.open_messages_max);
    let carriers = if config.carriers.is_empty() {
        None
    } else {
        let carriers = match &config.population {
            // A scenario's devices are on their group's carrier, which has its faults.
            Some(population) => Carriers::start_assigned(
                &config.carriers,
                population.carriers()[first_client as usize..][..config.clients].to_vec(),
                first_client,
                config.seed,
                config.transport.first_target(),
                config.carrier_trace.as_deref(),
            )
            .and_then(|mut carriers| {
                carriers.schedule(&population.faults)?;
                Ok(carriers)
            }),
            None => Carriers::start(
                &config.carriers,
                config.clients,
                first_client,
                config.seed,
                config.transport.first_target(),
                config.carrier_trace.as_deref(),
            ),
        }
        .map_err(LoadError::Invalid)?;
        ledger.split_by_carrier(carriers.of_client().to_vec(), config.carriers.len());
        Some(carriers)
    };
    // A worker's record files, emptied of any earlier run's before this one records.
    let crossings_out = match (&config.share, &config.out) {
        (Some(_), Some(dir)) => {
            let files = std::fs::create_dir_all(dir)
                .and_then(|()| RecordFiles::create(dir))
                .map_err(|source| LoadError::Write {
                    path: dir.display().to_string(),
                    source,
                })?;
            Some(CrossingsOut::new(files))
        }
        _ => None,
    };
    let shared = Arc::new(Shared {
        ledger: Arc::new(Mutex::new(ledger)),
        protocol: protocol(&config, tag.clone()),
        clients: ClientPool::for_clients(config.clients),
        carriers,
        config,
        progress,
        stop,
        phase: Arc::new(Mutex::new("ramp")),
        seconds_written: Mutex::new(0),
        crossings_out: Mutex::new(crossings_out),
    });
    let started = Instant::now();
    let reporter_stop = CancellationToken::new();
    let reporter = tokio::spawn(report_every_second(shared.clone(), reporter_stop.clone()));
    let devices = ramp(&shared, started).await;
    let devices: Arc<dyn Devices> = Arc::from(devices);
    // Let the ramp finish logging in (bounded). If nobody got in and every client has been
    // refused, the target refuses us: stop now and say why.
    let n = shared.config.clients;
    wait_until(&shared, Duration::from_secs(30), |l| {
        l.connected as usize + l.clients_stopped as usize >= n
            || (l.connects == 0 && l.clients_refused() >= n)
    })
    .await;
    if lock(&shared.ledger).connects == 0 && !shared.stop.is_cancelled() {
        for device in devices.iter() {
            device.shutdown();
        }
        reporter_stop.cancel();
        let _ = reporter.await;
        lock(&shared.ledger).tick();
        let (results, files) = shared.results_and_files(true);
        let _ = shared.write(&results, &files);
        return Err(LoadError::Unreachable {
            target: shared.config.target_name.clone(),
            cause: refusal_cause(&lock(&shared.ledger)),
        });
    }
    let groups = join_groups(&shared.config, &*devices);
    let promised = groups.promised;
    wait_until(&shared, Duration::from_secs(30), |l| {
        l.groups_ready >= promised
    })
    .await;
    if let (Some(share), Some(population)) = (&shared.config.share, &shared.config.population)
        && !population.chats.is_empty()
    {
        wait_for_chats_elsewhere(&shared, share).await;
    }
    shared.enter("send");
    match shared.config.population.clone() {
        Some(population) => {
            let cycles = AppCycles::start(&shared, &population, &devices, started);
            send_population(
                &shared,
                &*devices,
                &population,
                &cycles.inactive,
                timer,
                started,
            )
            .await;
            // As the simulator heals before judging: every app back in the foreground, so
            // the drain sees every device online and synced.
            cycles.heal(&*devices);
        }
        None => send(&shared, &*devices, &groups, timer, started).await,
    }
    if !shared.stop.is_cancelled() {
        shared.enter("drain");
        drain(&shared).await;
        if let Some(share) = &shared.config.share {
            wait_for_other_workers(&shared, share).await;
        }
    }
    // What crossed to and from other workers, taken before the clients go offline: what the
    // files lack (nothing is appended after this), with what waits to be appended.
    let crossings = shared.config.share.as_ref().map(|_| {
        let out = shared
            .crossings_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        (
            out,
            Crossings::of(
                &lock(&shared.ledger),
                &tag,
                started_unix_us,
                shared.carriers.as_ref().map_or(&[], |c| c.names()),
            ),
        )
    });
    for device in devices.iter() {
        device.shutdown();
    }
    shared.clients.join().await;
    // Stopped, not aborted: a write in progress finishes before the final one starts.
    reporter_stop.cancel();
    let _ = reporter.await;
    // The part of a second since the reporter's last tick: its events are in the totals.
    lock(&shared.ledger).tick();
    let phase = if shared.stop.is_cancelled() {
        "interrupted"
    } else {
        "done"
    };
    *shared.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    if let Some(carriers) = &shared.carriers {
        carriers.finish().await;
    }
    let (results, files) = shared.results_and_files(true);
    shared.write(&results, &files)?;
    // The record files exist exactly when the worker has an --out folder.
    if let (Some((Some(mut out), mut crossings)), Some(dir)) = (crossings, &shared.config.out) {
        // The last records are kept whatever the bound: this append is the last chance, and
        // its failure fails the run.
        out.owed.extend_from_slice(&crossings.owed);
        out.received.extend_from_slice(&crossings.received);
        crossings.owed_dropped += out.owed_dropped;
        crossings.received_dropped += out.received_dropped;
        let written = out.append().and_then(|()| crossings.finish(dir));
        written.map_err(|source| LoadError::Write {
            path: dir.display().to_string(),
            source,
        })?;
    }
    (shared.progress)(&results);
    Ok(results)
}

/// Now on the wall clock, µs since the Unix epoch: the time base workers share.
fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One line of why nobody got in: failures by cause, and what to do about the main one.
fn refusal_cause(ledger: &LoadLedger) -> String {
    let Some((main, _)) = ledger.login_failures.iter().max_by_key(|(_, n)| **n) else {
        return ledger.last_failure.clone().unwrap_or_default();
    };
    let mut text = format!(
        "logins failed: {}",
        crate::causes::list(&ledger.login_failures)
    );
    if let Some(advice) = crate::causes::login_advice(main) {
        text += &format!(" ({advice})");
    } else if let Some(last) = &ledger.last_failure {
        text += &format!(" (last: {last})");
    }
    text
}

fn check_open_files(config: &LoadConfig) -> Result<(), LoadError> {
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
    Ok(())
}

/// The protocol a run speaks: the one place that chooses.
fn protocol(config: &LoadConfig, tag: String) -> Box<dyn Protocol> {
    match &config.protocol {
        ProtocolChoice::Mqtt(options) => Box::new(Arc::new(Mqtt {
            population: config.population.clone(),
            options: options.clone(),
            tag,
            heartbeat: config.heartbeat.clone(),
            body_bytes: config.body_bytes,
            seed: config.seed,
            backoff: config.backoff,
            transport: config.transport.name(),
        })),
        ProtocolChoice::Imlab => Box::new(Arc::new(Imlab {
            tag,
            client: imlab::client_config(
                config.auth_secret.as_deref(),
                config.heartbeat_timeout,
                config.ack_delay,
                config.backoff,
            ),
            heartbeat: config.heartbeat.clone(),
            body_bytes: config.body_bytes,
            xs: imlab::xs(
                config
                    .population
                    .iter()
                    .flat_map(|population| &population.groups)
                    .map(|group| group.body_bytes)
                    .fold(config.body_bytes, usize::max),
            ),
            seed: config.seed,
            transport: config.transport.name(),
            population: config.population.clone(),
        })),
    }
}

/// Starts client i at i / connect_rate, its future in `shared.clients`; stops early on
/// Ctrl-C or once every client started so far has been refused and nobody got in. Returns
/// the devices, by number.
async fn ramp(shared: &Shared, started: Instant) -> Box<dyn Devices> {
    let config = &shared.config;
    let first_client = config.share.as_ref().map_or(0, |s| s.first_client);
    let mut devices = shared.protocol.devices(config.clients);
    let connectors = config.transport.connectors();
    for client in 0..config.clients {
        let at = started + Duration::from_secs_f64(client as f64 / config.connect_rate);
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = shared.stop.cancelled() => break,
        }
        {
            let ledger = lock(&shared.ledger);
            // Ten clients all refused, nobody in: the rest would be refused too.
            if client >= config.clients.min(10)
                && ledger.connects == 0
                && ledger.clients_refused() >= client
            {
                break;
            }
        }
        let local = client;
        let client = first_client + client as u32;
        devices.start(
            client,
            connectors.connector(client, shared.carriers.as_ref().map(|c| (c, local))),
            DeviceEvents::new(shared.ledger.clone(), client),
            &shared.clients,
        );
    }
    // An early stop leaves the clients never started out of the waits below.
    let never_started = config.clients - devices.len();
    if never_started > 0 {
        let mut ledger = lock(&shared.ledger);
        for client in devices.len()..config.clients {
            ledger.client_stopped(first_client + client as u32);
        }
    }
    devices
}

/// A run without sends (`--msg-rate 0`: connections only) still holds its connections for
/// `--duration`: heartbeats, NAT expiries and reconnects go on.
async fn hold(shared: &Shared) {
    tokio::select! {
        biased;
        () = shared.stop.cancelled() => {}
        () = tokio::time::sleep(shared.config.duration) => {}
    }
}

/// Open loop: message k is planned at send_start + k / msg_rate, whatever happened before.
/// Senders are this process's clients; a one-to-one peer is any other client of the run,
/// this worker's or another's.
async fn send(
    shared: &Shared,
    devices: &dyn Devices,
    groups: &Groups,
    timer: Timer,
    started: Instant,
) {
    let config = &shared.config;
    if config.msg_rate <= 0.0 {
        hold(shared).await;
        return;
    }
    let send_start = Instant::now();
    let mut pacer = Pacer::new(timer, send_start.into_std(), config.msg_rate);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let n_messages = (config.msg_rate * config.duration.as_secs_f64()).round() as u64;
    // Fewer clients than asked when the ramp stopped early: send among those started.
    let n_clients = devices.len();
    let first_client = config.share.as_ref().map_or(0, |s| s.first_client);
    let n_peers = match &config.share {
        Some(share) if n_clients == config.clients => share.clients_total,
        _ => n_clients,
    };
    let mut next_number = vec![0u64; n_clients];
    if n_clients < 2 {
        return;
    }
    for k in 0..n_messages {
        if shared.stop.is_cancelled() {
            return;
        }
        let planned = Instant::from_std(pacer.planned(k));
        if !pacer.wait_until(planned.into_std(), &shared.stop).await {
            return;
        }
        let planned_us = planned.duration_since(started).as_micros() as u64;
        let slot = rng.random_range(0..n_clients);
        let sender = first_client + slot as u32;
        let (to, recipients) = match config.pattern {
            Pattern::OneToOne => {
                // Peers are numbered from 0 over the whole run; this worker's from first_client.
                let first_peer = if n_peers == n_clients {
                    first_client
                } else {
                    0
                };
                let mut peer = first_peer + rng.random_range(0..n_peers - 1) as u32;
                if peer >= sender {
                    peer += 1;
                }
                (To::Peer(peer), vec![peer])
            }
            Pattern::Group(size) => {
                let group = slot / size;
                let members = &groups.members[group];
                let recipients = members.iter().copied().filter(|m| *m != sender).collect();
                (To::Group(groups.ids[group]), recipients)
            }
        };
        let id = MsgId {
            sender,
            number: next_number[slot],
        };
        match plan_and_send(shared, &devices.at(slot), id, to, planned_us, recipients) {
            Plan::Sent => next_number[slot] += 1,
            Plan::QueueFull => {}
            Plan::LedgerFull => return,
        }
    }
}

/// What became of a planned send.
enum Plan {
    /// Recorded and handed to its device.
    Sent,
    /// The device's queue was full: refused locally, its record taken back.
    QueueFull,
    /// The ledger follows as many messages as it may: not planned, and the run sends no more.
    LedgerFull,
}

/// Records message `id` in the ledger, then hands it to its sender's device (recorded first:
/// the ack can arrive before `send` returns).
fn plan_and_send(
    shared: &Shared,
    device: &dyn Device,
    id: MsgId,
    to: To,
    planned_us: u64,
    recipients: Vec<u32>,
) -> Plan {
    {
        let mut ledger = lock(&shared.ledger);
        if ledger.full() {
            ledger.stop_sending_full();
            return Plan::LedgerFull;
        }
        ledger.planned(id, planned_us, recipients);
    }
    if device.send(Outgoing { id, to, planned_us }).is_ok() {
        return Plan::Sent;
    }
    lock(&shared.ledger).refused_locally(id);
    Plan::QueueFull
}

/// `--scenario`'s open loop: messages are planned at the scenario's total rate, each given
/// to a sender and a conversation drawn by the devices' rates. A suspended (inactive) app
/// sends nothing, as in the simulator: its draws are skipped, not planned.
async fn send_population(
    shared: &Shared,
    devices: &dyn Devices,
    population: &Population,
    inactive: &[AtomicBool],
    timer: Timer,
    started: Instant,
) {
    let config = &shared.config;
    let Some(chooser) = population.chooser().filter(|chooser| chooser.rate() > 0.0) else {
        hold(shared).await;
        return;
    };
    let send_start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let rate = chooser.rate();
    let mut pacer = Pacer::new(timer, send_start.into_std(), rate);
    let n_messages = (rate * config.duration.as_secs_f64()).round() as u64;
    let first_client = config.share.as_ref().map_or(0, |s| s.first_client);
    // imlab's protocol syncs what a user sent to the user's other devices; MQTT does not.
    let sent_synced = config.protocol == ProtocolChoice::Imlab;
    let mut next_number = vec![0u64; devices.len()];
    for k in 0..n_messages {
        if shared.stop.is_cancelled() {
            return;
        }
        let planned = Instant::from_std(pacer.planned(k));
        // Every worker draws the whole run's messages and sends those of its own devices: the
        // same plan however many workers share it. Another worker's message (or one of a
        // device the ramp never started: an early stop) is drawn and passed over without
        // waiting for its time.
        let (sender, conversation) = chooser.next(population, &mut rng);
        let Some(slot) = local_slot(sender, first_client, devices.len()) else {
            continue;
        };
        if !pacer.wait_until(planned.into_std(), &shared.stop).await {
            return;
        }
        // A suspended app sends nothing: judged at the message's time.
        if inactive[slot].load(Ordering::Relaxed) {
            continue;
        }
        let planned_us = planned.duration_since(started).as_micros() as u64;
        let to = match conversation {
            Conversation::Peer(user) => To::Peer(user),
            Conversation::Chat(chat) => To::Group(chat),
        };
        let id = MsgId {
            sender,
            number: next_number[slot],
        };
        let recipients = population.recipients(sender, conversation, sent_synced);
        match plan_and_send(shared, &devices.at(slot), id, to, planned_us, recipients) {
            Plan::Sent => next_number[slot] += 1,
            Plan::QueueFull => {}
            Plan::LedgerFull => return,
        }
    }
    // The sends last the plan's length in every worker, wherever its own last message fell.
    if let Some(last) = n_messages.checked_sub(1) {
        pacer.wait_until(pacer.planned(last), &shared.stop).await;
    }
}

/// This process's device of the run's `client`, if it runs one: its clients are
/// `first_client..first_client + len` (fewer than its share when the ramp stopped early).
fn local_slot(client: u32, first_client: u32, len: usize) -> Option<usize> {
    let slot = client.checked_sub(first_client)? as usize;
    (slot < len).then_some(slot)
}

/// The devices' app-state cycles (`--scenario`), each from a phase drawn from the seed.
struct AppCycles {
    /// True while a device's app is inactive (suspended, offline).
    inactive: Arc<Vec<AtomicBool>>,
    task: JoinHandle<()>,
}

impl AppCycles {
    fn start(
        shared: &Shared,
        population: &Arc<Population>,
        devices: &Arc<dyn Devices>,
        started: Instant,
    ) -> AppCycles {
        let inactive: Arc<Vec<AtomicBool>> =
            Arc::new((0..devices.len()).map(|_| AtomicBool::new(false)).collect());
        let mut rng = ChaCha8Rng::seed_from_u64(shared.config.seed ^ 0xa99_c7c1e);
        // Drawn for every device of the run, each worker keeping its own devices' phases: a
        // device's phase is the same however many workers share the run.
        let first_client = shared.config.share.as_ref().map_or(0, |s| s.first_client);
        let mut phases = Vec::with_capacity(population.clients());
        for client in 0..population.clients() {
            let period: Duration = population
                .group_of(client as u32)
                .app_states
                .iter()
                .map(|(_, d)| *d)
                .sum();
            let nanos = period.as_nanos() as u64;
            phases.push(Duration::from_nanos(if nanos == 0 {
                0
            } else {
                rng.random_range(0..nanos)
            }));
        }
        let mine = phases
            .drain(..)
            .skip(first_client as usize)
            .take(devices.len())
            .collect();
        let task = tokio::spawn(run_app_cycles(
            population.clone(),
            devices.clone(),
            inactive.clone(),
            (first_client, mine),
            started,
        ));
        AppCycles { inactive, task }
    }

    /// Stops the cycles and brings every app with a cycle to the foreground.
    fn heal(self, devices: &dyn Devices) {
        self.task.abort();
        for (device, inactive) in devices.iter().zip(self.inactive.iter()) {
            if inactive.swap(false, Ordering::Relaxed) {
                device.set_app_state(AppState::Foreground);
            }
        }
    }
}

async fn run_app_cycles(
    population: Arc<Population>,
    devices: Arc<dyn Devices>,
    inactive: Arc<Vec<AtomicBool>>,
    (first_client, phases): (u32, Vec<Duration>),
    started: Instant,
) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // The next switch of every device with a cycle, earliest first.
    let mut switches = BinaryHeap::new();
    let mut at = Instant::now();
    for client in 0..devices.len() {
        switches.push(Reverse((at, client)));
    }
    while let Some(Reverse((when, client))) = switches.pop() {
        if when > at {
            tokio::time::sleep_until(when).await;
            at = when;
        }
        let cycle = &population.group_of(first_client + client as u32).app_states;
        let Some((state, left)) = app_state_at(cycle, phases[client], when - started) else {
            continue;
        };
        let was_inactive = inactive[client].swap(state == AppState::Inactive, Ordering::Relaxed);
        // Every switch is told, except staying inactive (foreground and background both
        // heartbeat; only the strategy tells them apart).
        if !(was_inactive && state == AppState::Inactive) {
            devices.at(client).set_app_state(state);
        }
        switches.push(Reverse((when + left, client)));
    }
}

/// Stragglers arrive during `--drain`; then, up to `--reconnect-wait`, recipients that are
/// owed deliveries but are offline (a server restart, a network blip) get the time to log in
/// again and sync, so what they lack is judged lost only once they are back, and sends still
/// on their way get the time to be acked while acks keep coming (one at least every
/// [`SEND_PROGRESS_WINDOW`]): senders back from a restart resend, a server that never acks
/// is not waited for.
async fn drain(shared: &Shared) {
    tokio::select! {
        () = tokio::time::sleep(shared.config.drain) => {}
        () = shared.stop.cancelled() => return,
    }
    let deadline = Instant::now() + shared.config.reconnect_wait;
    let mut acked = None;
    let mut last_progress = Instant::now();
    loop {
        {
            let ledger = lock(&shared.ledger);
            let acked_now = ledger.acked_count();
            if acked != Some(acked_now) {
                acked = Some(acked_now);
                last_progress = Instant::now();
            }
            let recipients_done = ledger.all_synced() || ledger.recipients_pending() == 0;
            let sends_done =
                ledger.sends_in_flight() == 0 || last_progress.elapsed() >= SEND_PROGRESS_WINDOW;
            if recipients_done && sends_done {
                return;
            }
        }
        if Instant::now() >= deadline {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = shared.stop.cancelled() => return,
        }
    }
}

/// With `--workers`, the deliveries other workers' clients owe this worker's are in no
/// ledger here: a worker that stopped at the end of its own drain could leave while their
/// last messages were still on their way, and the merge counted them pending although every
/// recipient was online. So a drained worker says so in its directory and listens on until
/// every other worker has said so and none of their deliveries has arrived for
/// [`CROSSING_QUIET`]; it gives up on a worker that has not drained within the reconnect
/// wait (and [`SEND_PROGRESS_WINDOW`]) from now, which covers another worker's drain.
async fn wait_for_other_workers(shared: &Shared, share: &crate::config::Share) {
    let Some(dir) = &shared.config.out else {
        return;
    };
    if let Err(error) =
        crate::crossings::write_mark(dir, crate::crossings::DRAINED_FILE, &share.run_tag)
    {
        // The others then wait out their deadline; the results are whole either way.
        eprintln!(
            "imlab load: {}: cannot say this worker has drained: {error}",
            dir.join(crate::crossings::DRAINED_FILE).display()
        );
    }
    let deadline = Instant::now() + shared.config.reconnect_wait + SEND_PROGRESS_WINDOW;
    let received = || {
        let ledger = lock(&shared.ledger);
        ledger.received_from_elsewhere_count()
    };
    let mut all_drained = false;
    let mut seen = received();
    let mut quiet_since = Instant::now();
    loop {
        if !all_drained {
            all_drained = share.others_have(crate::crossings::DRAINED_FILE);
        }
        let now_received = received();
        if now_received != seen {
            seen = now_received;
            quiet_since = Instant::now();
        }
        if (all_drained && quiet_since.elapsed() >= CROSSING_QUIET) || Instant::now() >= deadline {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = shared.stop.cancelled() => return,
        }
    }
}

/// A scenario's chat may span workers, and only its first member's first device creates it:
/// a worker says its creations are confirmed and waits (30 s at most, as for its own) until
/// every other worker has said so, so that no device sends into a chat not there yet.
async fn wait_for_chats_elsewhere(shared: &Shared, share: &crate::config::Share) {
    let Some(dir) = &shared.config.out else {
        return;
    };
    let mark = crate::crossings::CHATS_READY_FILE;
    if let Err(error) = crate::crossings::write_mark(dir, mark, &share.run_tag) {
        eprintln!(
            "imlab load: {}: cannot say this worker's chats are ready: {error}",
            dir.join(mark).display()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !share.others_have(mark) {
        if Instant::now() >= deadline {
            eprintln!(
                "imlab load: worker {}: other workers' chats not ready within 30 s; sending anyway",
                shared.config.worker
            );
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = shared.stop.cancelled() => return,
        }
    }
}

/// How long no delivery from another worker must have arrived, once every worker has
/// drained, before a worker stops.
const CROSSING_QUIET: Duration = Duration::from_secs(1);

/// After the drain, sends still on their way are waited for only while an ack arrived within
/// this long.
const SEND_PROGRESS_WINDOW: Duration = Duration::from_secs(5);

/// The groups of a run and the confirmations their members promised.
struct Groups {
    /// Members of each group (client numbers), by this process's group index.
    members: Vec<Vec<u32>>,
    /// Each group's number in the run: its first member's client number, unique across
    /// workers.
    ids: Vec<u32>,
    /// Confirmations to wait for before sending.
    promised: u64,
}

/// Groups of `size` consecutive clients of this process (a group never spans workers, so
/// its creation needs no coordination between them); every member joins its group the
/// protocol's way.
fn join_groups(config: &LoadConfig, devices: &dyn Devices) -> Groups {
    let mut groups = Groups {
        members: Vec::new(),
        ids: Vec::new(),
        promised: 0,
    };
    let first_client = config.share.as_ref().map_or(0, |s| s.first_client);
    if let Some(population) = &config.population {
        // A scenario's chats: every device of every member user joins, each worker's devices
        // from that worker (a chat may span workers).
        for (chat, members) in population.chats.iter().enumerate() {
            for user in members {
                for client in &population.users[*user as usize] {
                    let Some(slot) = local_slot(*client, first_client, devices.len()) else {
                        continue;
                    };
                    if devices.at(slot).join_group(chat as u32, members) {
                        groups.promised += 1;
                    }
                }
            }
        }
        return groups;
    }
    let Pattern::Group(size) = config.pattern else {
        return groups;
    };
    let clients: Vec<u32> = (0..devices.len() as u32)
        .map(|c| first_client + c)
        .collect();
    for (group, members) in clients.chunks(size).enumerate() {
        let id = members[0];
        for index in group * size..group * size + members.len() {
            if devices.at(index).join_group(id, members) {
                groups.promised += 1;
            }
        }
        groups.members.push(members.to_vec());
        groups.ids.push(id);
    }
    groups
}

/// Waits until `condition` holds over the ledger, at most `limit`, or until `stop`.
async fn wait_until(shared: &Shared, limit: Duration, condition: impl Fn(&LoadLedger) -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !shared.stop.is_cancelled() {
        if condition(&lock(&shared.ledger)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Once a second: closes the ledger's second, then writes the results files on a blocking
/// thread (off the runtime's workers and without the ledger's lock) and tells the progress
/// callback. Returns once `stop` is cancelled, never in the middle of a write.
async fn report_every_second(shared: Arc<Shared>, stop: CancellationToken) {
    let mut next = Instant::now() + Duration::from_secs(1);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        next += Duration::from_secs(1);
        lock(&shared.ledger).tick();
        let (results, files) = shared.results_and_files(false);
        let writer = shared.clone();
        let results = tokio::task::spawn_blocking(move || {
            let _ = writer.write(&results, &files);
            // A failed append is tried again next second (its records are kept).
            let _ = writer.append_crossings();
            results
        })
        .await;
        if let Ok(results) = results {
            (shared.progress)(&results);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While a worker's record files refuse every append (a full disk: `/dev/full`), it
    /// keeps what waits up to its bound and counts the rest; says so once; and appends what
    /// it kept once the files work again.
    #[test]
    fn crossing_records_kept_while_the_files_fail_are_bounded_and_counted() {
        use crate::crossings::{OWED_BYTES, OWED_FILE, RECEIVED_BYTES, RECEIVED_FILE};
        use crate::ledger::RemoteRepeat;
        let full = std::path::Path::new("/dev/full");
        let mut out = CrossingsOut::new(RecordFiles::at(full, full).unwrap());
        out.kept_max = 10;
        let owed = |n: u64| Owed {
            id: (0, n),
            recipient: 7,
            planned_us: n,
            acked_us: n + 1,
        };
        let received = |n: u64| Received {
            id: (9, n),
            recipient: 1,
            at_us: n,
            repeat: RemoteRepeat::Duplicate,
        };
        out.keep((0..6).map(owed), (0..6).map(received));
        let error = out.append().unwrap_err().to_string();
        assert!(error.contains("/dev/full"), "{error}");
        assert!(out.failing.is_some());
        out.keep((6..9).map(owed), std::iter::empty());
        assert_eq!((out.owed.len(), out.received.len()), (6, 4));
        assert_eq!((out.owed_dropped, out.received_dropped), (3, 2));
        assert!(out.append().is_err());
        // The disk has room again: what was kept goes to the files, and nothing waits.
        let dir = tempfile::tempdir().unwrap();
        out.files = RecordFiles::create(dir.path()).unwrap();
        out.append().unwrap();
        assert!(out.failing.is_none());
        assert!(out.owed.is_empty() && out.received.is_empty());
        let len = |file: &str| std::fs::metadata(dir.path().join(file)).unwrap().len();
        assert_eq!(len(OWED_FILE), 6 * OWED_BYTES as u64);
        assert_eq!(len(RECEIVED_FILE), 4 * RECEIVED_BYTES as u64);
    }

    /// A `--workers` run whose merge would outgrow the memory available is refused before
    /// it starts, naming the flags and the sizes; one that fits, or a machine whose memory
    /// cannot be read, is not. The merge holds each first delivery that crossed, at most
    /// `RECEIVED_LEN_MAX` a worker.
    #[test]
    fn a_run_whose_merge_outgrows_the_memory_is_refused_naming_the_flags() {
        let gib = 1u64 << 30;
        let hour = Duration::from_secs(3_600);
        // Two workers, an hour at 30,000 msg/s: half the messages cross, 54 million first
        // deliveries, at most 20 million a worker: 40 million, 25 bytes each, 0.9 GiB.
        let error = check_merge_fits(30_000.0, hour, 1.0, 2, Some(gib / 2)).unwrap_err();
        let text = error.to_string();
        for expected in [
            "--msg-rate 30000",
            "--duration 3600s",
            "--workers 2",
            "108000000 messages",
            "25 bytes each, at most 20000000 a worker",
            "0.9 GiB",
            "0.5 GiB",
            "imlab load merge",
        ] {
            assert!(text.contains(expected), "{expected:?} in {text}");
        }
        assert!(check_merge_fits(30_000.0, hour, 1.0, 2, Some(gib)).is_ok());
        assert!(check_merge_fits(30_000.0, hour, 1.0, 2, None).is_ok());
        // Ten minutes: 9 million cross, 0.2 GiB.
        assert!(check_merge_fits(30_000.0, hour / 6, 1.0, 2, Some(gib / 2)).is_ok());
        // Groups stay within a worker: nothing crosses, however long.
        assert!(check_merge_fits(30_000.0, 100 * hour, 0.0, 2, Some(gib / 2)).is_ok());
    }
}
