//! `imlab load --carrier`: the carrier model (imlab-carrier, driven by imlab-proxy's flows)
//! on each device's own connection, in this process: no proxy process, no extra file
//! descriptor. Clients are spread over the carriers of a mix by weight; every figure of the
//! run is also split by carrier.
//!
//! A device's n-th connection is one flow whose RNG is seeded from the run's seed, the
//! device's number and n, so the same run draws the same NAT timeouts and delays.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use imlab_carrier::CarrierProfile;
use imlab_core::net::Connector;
use imlab_proxy::{Decisions, InlineStream, Proxy, ProxyConfig};
use serde::{Deserialize, Serialize};

use crate::results::Latency;
use crate::source::SourceConnector;

/// Carriers one run may mix at most.
pub const CARRIERS_MAX: usize = 16;

/// One carrier of a mix and its share of the clients.
#[derive(Debug, Clone)]
pub struct CarrierShare {
    /// How it was named: a preset (`cmcc-3g`) or a file.
    pub name: String,
    /// Its profile.
    pub profile: CarrierProfile,
    /// Its weight (the shares need not add up to 1).
    pub weight: f64,
}

/// Parses one `--carrier` value: `SPEC[:WEIGHT][,SPEC[:WEIGHT]...]`, each SPEC a preset name
/// or a carrier TOML file; a missing weight is 1.
pub fn parse_mix(text: &str) -> Result<Vec<CarrierShare>, String> {
    let mut shares = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let (spec, weight) = match item.rsplit_once(':') {
            Some((spec, weight)) if weight.parse::<f64>().is_ok() => {
                (spec, weight.parse::<f64>().expect("parsed above"))
            }
            _ => (item, 1.0),
        };
        if spec.is_empty() {
            return Err(format!(
                "--carrier {text:?}: an empty carrier (use PRESET[:WEIGHT] or FILE[:WEIGHT])"
            ));
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(format!(
                "--carrier {text:?}: weight {weight} of {spec:?} must be a positive number"
            ));
        }
        let profile = imlab_carrier::table::preset_or_file(spec)
            .map_err(|error| format!("--carrier {spec:?}: {error}"))?;
        shares.push(CarrierShare {
            name: spec.to_string(),
            profile,
            weight,
        });
    }
    Ok(shares)
}

/// Checks a whole mix (all `--carrier` values together).
pub fn validate_mix(shares: &[CarrierShare]) -> Result<(), String> {
    if shares.len() > CARRIERS_MAX {
        return Err(format!(
            "--carrier: {} carriers, at most {CARRIERS_MAX}",
            shares.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for share in shares {
        if !seen.insert(&share.name) {
            return Err(format!(
                "--carrier {:?} is given twice: give it once with its weight",
                share.name
            ));
        }
    }
    Ok(())
}

/// The carrier of each of `n` clients: client i goes to the carrier furthest below its share
/// of the first i + 1 clients (largest remainder), so every prefix of the clients is split
/// by weight as closely as whole clients allow, the same in every run.
pub fn assign(weights: &[f64], n: usize) -> Vec<u8> {
    let total: f64 = weights.iter().sum();
    let mut counts = vec![0u64; weights.len()];
    let mut of_client = Vec::with_capacity(n);
    for client in 0..n {
        let owed = |k: usize| weights[k] / total * (client + 1) as f64 - counts[k] as f64;
        let carrier = (0..weights.len())
            .max_by(|a, b| owed(*a).total_cmp(&owed(*b)).then(b.cmp(a)))
            .expect("a mix has a carrier");
        counts[carrier] += 1;
        of_client.push(carrier as u8);
    }
    of_client
}

/// The trace file of carrier `k` of `n`: `FILE` itself for one carrier, else `FILE` with the
/// carrier's number before its extension (`trace.1.jsonl`).
fn trace_file(file: &Path, k: usize, n: usize) -> PathBuf {
    if n == 1 {
        return file.to_path_buf();
    }
    let stem = file
        .file_stem()
        .map_or_else(Default::default, |s| s.to_string_lossy());
    let name = match file.extension() {
        Some(ext) => format!("{stem}.{k}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{k}"),
    };
    file.with_file_name(name)
}

/// The running carriers of a load run.
pub struct Carriers {
    names: Vec<String>,
    proxies: Vec<Arc<Proxy>>,
    of_client: Vec<u8>,
    /// The run's number of this process's first client (`--workers`): a flow is named and
    /// seeded by the client's number in the run.
    first_client: u32,
    /// The tasks carrying out scheduled faults (`--scenario`).
    schedules: Vec<tokio::task::JoinHandle<()>>,
}

impl Carriers {
    /// One in-process proxy per carrier, for `clients` clients, numbered from
    /// `first_client` in the run, against `target`.
    pub fn start(
        shares: &[CarrierShare],
        clients: usize,
        first_client: u32,
        seed: u64,
        target: std::net::SocketAddr,
        trace: Option<&Path>,
    ) -> Result<Carriers, String> {
        let weights: Vec<f64> = shares.iter().map(|s| s.weight).collect();
        let of_client = assign(&weights, clients);
        Carriers::start_assigned(shares, of_client, first_client, seed, target, trace)
    }

    /// One in-process proxy per carrier, this process's client i (the run's `first_client +
    /// i`) on carrier `of_client[i]`.
    pub fn start_assigned(
        shares: &[CarrierShare],
        of_client: Vec<u8>,
        first_client: u32,
        seed: u64,
        target: std::net::SocketAddr,
        trace: Option<&Path>,
    ) -> Result<Carriers, String> {
        let clients = of_client.len();
        let mut proxies = Vec::new();
        for (k, share) in shares.iter().enumerate() {
            let proxy = Proxy::new(ProxyConfig {
                upstream: target,
                profile: share.profile.clone(),
                // Each carrier's flows draw from their own stream of the run's seed.
                seed: imlab_carrier::flow_seed(seed, &[k as u64]),
                time_scale: 1.0,
                // A client holds one connection, but the server's side of an old one may
                // linger half-open until its kernel gives up: room for a few each.
                flows_max: clients.saturating_mul(4).max(16),
                trace: trace.map(|file| trace_file(file, k, shares.len())),
            })
            .map_err(|error| format!("--carrier {}: {error}", share.name))?;
            proxies.push(Arc::new(proxy));
        }
        Ok(Carriers {
            names: shares.iter().map(|s| s.name.clone()).collect(),
            proxies,
            of_client,
            first_client,
            schedules: Vec::new(),
        })
    }

    /// Carries out carrier k's `faults[k]` on its clock (which started with the run).
    pub fn schedule(&mut self, faults: &[Vec<imlab_proxy::ScheduledFault>]) -> Result<(), String> {
        for (k, faults) in faults.iter().enumerate() {
            if faults.is_empty() {
                continue;
            }
            let schedule = self.proxies[k]
                .schedule(faults.clone())
                .map_err(|error| format!("carrier {}: {error}", self.names[k]))?;
            self.schedules.push(schedule);
        }
        Ok(())
    }

    /// The carrier of each client.
    pub fn of_client(&self) -> &[u8] {
        &self.of_client
    }

    /// The carriers' names, by number.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The model's decisions so far on carrier `k`.
    pub fn decisions(&self, k: usize) -> Decisions {
        self.proxies[k].totals()
    }

    /// The connector of this process's `local`-th client: TCP from `source`, through its
    /// carrier, its flows named and seeded by its number in the run.
    pub fn connector(&self, local: usize, source: SourceConnector) -> CarrierConnector {
        CarrierConnector {
            proxy: self.proxies[self.of_client[local] as usize].clone(),
            source,
            client: self.first_client + local as u32,
            connections: AtomicU64::new(0),
        }
    }

    /// Stops the fault schedules and writes out the decision traces.
    pub async fn finish(&self) {
        for schedule in &self.schedules {
            schedule.abort();
        }
        for proxy in &self.proxies {
            proxy.flush_trace().await;
        }
    }
}

/// Opens a client's connections through its carrier.
pub struct CarrierConnector {
    proxy: Arc<Proxy>,
    source: SourceConnector,
    client: u32,
    connections: AtomicU64,
}

impl Connector for CarrierConnector {
    type Stream = InlineStream;

    async fn connect(&self) -> io::Result<InlineStream> {
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        self.proxy
            .connect_inline(
                &[u64::from(self.client), n],
                format!("client {} connection {n}", self.client),
                self.source.connect(),
            )
            .await
    }
}

/// Figures of one carrier's clients, kept by the ledger.
#[derive(Debug, Clone)]
pub struct CarrierFigures {
    /// Its clients.
    pub clients: u64,
    /// Logins.
    pub connects: u64,
    /// Connections lost, by cause.
    pub disconnects: BTreeMap<String, u64>,
    /// Logins after a client's first.
    pub reconnects: u64,
    /// Planned send to delivery at this carrier's devices, µs.
    pub deliver: Histogram<u64>,
    /// Connection lost to logged in again, µs.
    pub reconnect: Histogram<u64>,
}

impl CarrierFigures {
    /// Nothing yet, for `clients` clients.
    pub fn new(clients: u64) -> CarrierFigures {
        let histogram = crate::histograms::latency;
        CarrierFigures {
            clients,
            connects: 0,
            disconnects: BTreeMap::new(),
            reconnects: 0,
            deliver: histogram(),
            reconnect: histogram(),
        }
    }
}

/// Disconnect causes that mean the connection died without a word (a NAT mapping gone
/// silent, a dead path): the device noticed only by a timeout.
pub const SILENT_CAUSES: &[&str] = &["HeartbeatTimeout", "SendTimeout"];

/// One carrier's figures in results.json.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CarrierResults {
    /// The carrier as named in `--carrier`.
    pub name: String,
    /// Its clients.
    pub clients: u64,
    /// Logins.
    pub connects: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Of those, noticed only by a timeout (heartbeat or send): the connection died
    /// silently.
    pub silent_disconnects: u64,
    /// Connections lost, by cause.
    pub disconnects_by_cause: BTreeMap<String, u64>,
    /// Logins after a client's first.
    pub reconnects: u64,
    /// Planned send to delivery at this carrier's devices, ms.
    pub deliver_ms: Latency,
    /// Connection lost to logged in again, ms.
    pub reconnect_ms: Latency,
    /// What the model did on this carrier's connections.
    pub model: ModelCounts,
}

/// The carrier model's decisions on one carrier's connections.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelCounts {
    /// NAT mappings that expired.
    pub nat_expired: u64,
    /// RSTs to the device because its mapping had expired.
    pub resets: u64,
    /// Device chunks dropped (expired `drop` mapping).
    pub dropped: u64,
    /// Server chunks lost into a dead mapping.
    pub lost: u64,
    /// Lost transmissions retried before a delivery.
    pub retransmissions: u64,
    /// Connections broken when retries ran out.
    pub broken: u64,
}

impl From<Decisions> for ModelCounts {
    fn from(d: Decisions) -> ModelCounts {
        ModelCounts {
            nat_expired: d.nat_expired,
            resets: d.resets,
            dropped: d.dropped,
            lost: d.lost,
            retransmissions: d.retransmissions,
            broken: d.broken,
        }
    }
}

impl CarrierResults {
    /// Carrier `name`'s figures and model decisions.
    pub fn of(name: &str, figures: &CarrierFigures, decisions: Decisions) -> CarrierResults {
        CarrierResults {
            name: name.to_string(),
            clients: figures.clients,
            connects: figures.connects,
            disconnects: figures.disconnects.values().sum(),
            silent_disconnects: SILENT_CAUSES
                .iter()
                .map(|cause| figures.disconnects.get(*cause).copied().unwrap_or(0))
                .sum(),
            disconnects_by_cause: figures.disconnects.clone(),
            reconnects: figures.reconnects,
            deliver_ms: Latency::of(&figures.deliver),
            reconnect_ms: Latency::of(&figures.reconnect),
            model: decisions.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_split_by_weight_in_every_prefix() {
        let of = assign(&[0.6, 0.4], 10);
        let count = |k: u8, n: usize| of[..n].iter().filter(|c| **c == k).count();
        assert_eq!((count(0, 10), count(1, 10)), (6, 4));
        assert_eq!((count(0, 5), count(1, 5)), (3, 2));
        // Each client to the carrier furthest below its share so far (worked by hand).
        assert_eq!(of, vec![0, 1, 0, 1, 0, 0, 1, 0, 1, 0]);
        assert_eq!(assign(&[1.0], 3), vec![0, 0, 0]);
        let thirds = assign(&[1.0, 1.0, 1.0], 300);
        for k in 0..3u8 {
            assert_eq!(thirds.iter().filter(|c| **c == k).count(), 100);
        }
    }

    #[test]
    fn a_mix_parses_presets_weights_and_files_or_says_why_not() {
        let mix = parse_mix("cmcc-3g:0.6,us-lte:0.4").unwrap();
        assert_eq!(mix.len(), 2);
        assert_eq!((mix[0].name.as_str(), mix[0].weight), ("cmcc-3g", 0.6));
        assert_eq!(mix[1].profile.name, "us-lte");
        assert_eq!(parse_mix("home-wifi").unwrap()[0].weight, 1.0);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slow.toml");
        std::fs::write(&file, "preset = \"cu-2g\"\nloss = 0.05\n").unwrap();
        let mix = parse_mix(&format!("{}:2", file.display())).unwrap();
        assert_eq!((mix[0].weight, mix[0].profile.loss), (2.0, 0.05));

        let error = parse_mix("nope-4g").unwrap_err();
        assert!(error.contains("nope-4g"), "{error}");
        let error = parse_mix("cmcc-3g:0").unwrap_err();
        assert!(error.contains("weight 0"), "{error}");
        let error = parse_mix("cmcc-3g:0.5,").unwrap_err();
        assert!(error.contains("empty carrier"), "{error}");
        let twice = [parse_mix("cu-2g").unwrap(), parse_mix("cu-2g:3").unwrap()].concat();
        assert!(validate_mix(&twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn several_carriers_trace_to_numbered_files() {
        let file = Path::new("/tmp/out/trace.jsonl");
        assert_eq!(trace_file(file, 0, 1), file);
        assert_eq!(trace_file(file, 1, 2), Path::new("/tmp/out/trace.1.jsonl"));
    }
}
