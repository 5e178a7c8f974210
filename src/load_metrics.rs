//! `imlab load --metrics-listen`: the run's live numbers as Prometheus metrics. The collector
//! serves the latest results the run reported (once a second and at every phase change), so
//! a scrape never takes the ledger's lock on the send path.

use std::sync::{Arc, Mutex};

use imlab_loadgen::results::{Latency, LoadResults};

/// The latest results of the run, shared between the progress callback and the scrapes.
#[derive(Clone, Default)]
pub struct LoadMetrics {
    latest: Arc<Mutex<Option<LoadResults>>>,
}

impl std::fmt::Debug for LoadMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadMetrics")
    }
}

impl LoadMetrics {
    /// Keeps `results` as the latest.
    pub fn update(&self, results: &LoadResults) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(results.clone());
    }
}

/// A quantile's label and the field of [`Latency`] that holds it.
type Quantile = (&'static str, fn(&Latency) -> f64);

/// Quantiles exposed per latency.
const QUANTILES: [Quantile; 5] = [
    ("0.5", |l| l.p50),
    ("0.9", |l| l.p90),
    ("0.99", |l| l.p99),
    ("0.999", |l| l.p999),
    ("1", |l| l.max),
];

impl prometheus_client::collector::Collector for LoadMetrics {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let Some(results) = self
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return Ok(());
        };
        let (m, c) = (&results.messages, &results.connections);
        let mut out = crate::metrics::Families::new(encoder);
        let phase = results.phase.as_str();
        out.gauges(
            "imlab_load_info",
            "The run: protocol, transport and phase (ramp, send, drain, done, interrupted).",
            &[(
                vec![
                    ("protocol", results.protocol.as_str()),
                    ("transport", results.transport.as_str()),
                    ("phase", phase),
                ],
                1.0,
            )],
        )?;
        out.gauge(
            "imlab_load_elapsed_seconds",
            "Seconds since the run started.",
            results.elapsed_s,
        )?;
        out.gauge(
            "imlab_load_clients_connected",
            "Clients logged in now.",
            results.connected_now as f64,
        )?;
        out.gauge(
            "imlab_load_clients_connected_peak",
            "Most clients logged in at once.",
            c.peak_concurrent as f64,
        )?;
        out.counter(
            "imlab_load_messages_sent",
            "Sends handed to the clients.",
            m.sent,
        )?;
        out.counter(
            "imlab_load_messages_acked",
            "Sends acked by the server.",
            m.acked,
        )?;
        out.counter(
            "imlab_load_deliveries",
            "Deliveries of acked messages to recipient devices.",
            m.delivered,
        )?;
        out.gauge(
            "imlab_load_deliveries_expected",
            "Deliveries acked messages owe to recipient devices.",
            m.expected_deliveries as f64,
        )?;
        out.gauge(
            "imlab_load_deliveries_lost",
            "Owed deliveries judged lost (only after the drain; pending before).",
            m.lost as f64,
        )?;
        out.counter(
            "imlab_load_deliveries_duplicated",
            "Deliveries of a message a device already had.",
            m.duplicated,
        )?;
        out.counter(
            "imlab_load_deliveries_reordered",
            "Deliveries older than one already delivered from the same sender.",
            m.reordered,
        )?;
        out.counters_by(
            "imlab_load_sends_refused",
            "The server's refusals of sends (each retry counts), by cause.",
            "cause",
            &m.refusals_by_cause,
        )?;
        out.counters_by(
            "imlab_load_protocol_violations",
            "The server's breaches of its protocol that devices saw, by kind.",
            "kind",
            &m.protocol_violations,
        )?;
        out.counter(
            "imlab_load_sends_failed",
            "Sends refused for good.",
            m.failed,
        )?;
        out.counter("imlab_load_logins", "Logins.", c.opened)?;
        out.counters_by(
            "imlab_load_logins_failed",
            "Failed login attempts, by cause.",
            "cause",
            &c.login_failures_by_cause,
        )?;
        out.counters_by(
            "imlab_load_disconnects",
            "Connections lost, by cause.",
            "cause",
            &c.disconnects_by_cause,
        )?;
        out.counter(
            "imlab_load_reconnects",
            "Logins after a client's first.",
            c.reconnects,
        )?;
        let l = &results.latency_ms;
        let kinds = [
            ("connect", &l.connect),
            ("ack", &l.ack),
            ("deliver", &l.deliver),
            ("reconnect", &l.reconnect),
        ];
        let mut rows = Vec::new();
        for (kind, latency) in kinds {
            for (quantile, value) in QUANTILES {
                rows.push((
                    vec![("kind", kind), ("quantile", quantile)],
                    value(latency) / 1_000.0,
                ));
            }
        }
        out.gauges(
            "imlab_load_latency_seconds",
            "Latency quantiles since the run started (open loop: from the planned send time); \
             quantile 1 is the maximum.",
            &rows,
        )?;
        let counts: Vec<_> = kinds
            .iter()
            .map(|(kind, latency)| (vec![("kind", *kind)], latency.count as f64))
            .collect();
        out.gauges(
            "imlab_load_latency_samples",
            "Samples behind each latency's quantiles.",
            &counts,
        )
    }
}

/// Serves `--metrics-listen` (bound now, so a taken port fails before the run) from the
/// results `progress` reports; returns the progress callback that also feeds the metrics.
pub fn serve_alongside(
    runtime: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    progress: imlab_loadgen::run::Progress,
) -> anyhow::Result<imlab_loadgen::run::Progress> {
    let listener = runtime.block_on(crate::metrics::bind(addr))?;
    let local = listener.local_addr()?;
    eprintln!("imlab load: metrics at http://{local}/metrics");
    let metrics = LoadMetrics::default();
    runtime.spawn(crate::metrics::serve(listener, metrics.clone()));
    Ok(Arc::new(move |results: &LoadResults| {
        metrics.update(results);
        progress(results);
    }))
}
