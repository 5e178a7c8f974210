//! `--metrics-listen ADDR` (on `imlab serve` and `imlab load`): the Prometheus text format
//! (OpenMetrics 1.0, which Prometheus scrapes natively) at `http://ADDR/metrics`, encoded by
//! prometheus-client from a [`Collector`] that reads the live numbers at each scrape.
//!
//! The HTTP side is deliberately small: one request per connection, a bounded request head
//! read within a deadline, at most [`SCRAPES_MAX`] connections at once (more are closed at
//! once), `GET /metrics` answered, anything else refused with its status.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Scrapes served at once; beyond it a connection is closed unanswered.
const SCRAPES_MAX: usize = 16;

/// Bytes of a request head read at most; a longer head is refused (431).
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// Time a scraper has to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The content type of OpenMetrics text, which prometheus-client writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `--metrics-listen` now, so a taken port fails before any work, naming the flag.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-listen {addr}"))
}

/// Serves `collector`'s metrics on `listener` until dropped (it never returns).
pub async fn serve(listener: tokio::net::TcpListener, collector: impl Collector) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let registry = Arc::new(registry);
    let slots = Arc::new(tokio::sync::Semaphore::new(SCRAPES_MAX));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, usually: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // dropping the stream closes it
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &registry)).await;
            drop(slot);
        });
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: tokio::net::TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= REQUEST_HEAD_BYTES_MAX {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if path != "/metrics" && !path.starts_with("/metrics?") {
        return respond(&mut stream, "404 Not Found", "metrics are at /metrics\n").await;
    }
    if method != "GET" {
        return respond(&mut stream, "405 Method Not Allowed", "use GET\n").await;
    }
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
        return respond(
            &mut stream,
            "500 Internal Server Error",
            "encoding failed\n",
        )
        .await;
    }
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {CONTENT_TYPE}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// Writes metric families one call each.
pub struct Families<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl<'a> Families<'a> {
    /// Families into `encoder`.
    pub fn new(encoder: DescriptorEncoder<'a>) -> Families<'a> {
        Families { encoder }
    }

    /// A counter (exposed as `NAME_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let counter = ConstCounter::new(value);
        let metric = self
            .encoder
            .encode_descriptor(name, help, None, counter.metric_type())?;
        counter.encode(metric)
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        let gauge = ConstGauge::new(value);
        let metric = self
            .encoder
            .encode_descriptor(name, help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }

    /// A counter per value of one label (`cause`, say); nothing when `counts` is empty.
    pub fn counters_by(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        counts: &BTreeMap<String, u64>,
    ) -> fmt::Result {
        if counts.is_empty() {
            return Ok(());
        }
        let mut family = self.encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (value, n) in counts {
            let labels = [(label, value.as_str())];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A histogram: `buckets` holds each bucket's upper bound and its own count (not
    /// cumulative), the last bound `f64::INFINITY`.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        sum: f64,
        count: u64,
        buckets: &[(f64, u64)],
    ) -> fmt::Result {
        let mut metric = self.encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        metric
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, buckets, None)
    }

    /// A gauge per set of labels.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        rows: &[(Vec<(&str, &str)>, f64)],
    ) -> fmt::Result {
        let mut family = self.encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (labels, value) in rows {
            ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}
