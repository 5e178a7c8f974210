//! The carrier proxy: one turmoil host per carrier profile, standing between the phones and
//! the servers as the carrier's radio link and NAT.
//!
//! A device connects to its carrier's proxy and names itself and its destination in a 5-byte
//! preamble (simulation plumbing, stripped here). The proxy then relays bytes both ways through
//! a model of the carrier, with its own seeded RNG (turmoil's own loss model would break a
//! whole host pair, and its TCP never retransmits):
//!
//! - Link: each chunk waits for the link (bandwidth), then each transmission is lost with
//!   probability `loss` or blocked by an outage (or, towards the IM server, a partition) and
//!   retried after an RTO of 200 ms, doubling; past `max_retries` the sending side's
//!   connection breaks. A delivered chunk takes half an RTT drawn from a log-normal fitted to
//!   the profile's median and p99. Chunks stay in order per direction.
//! - NAT: the mapping expires after the device's idle timeout without refreshing traffic
//!   (both directions, or outbound only). Afterwards the server's packets are dropped and the
//!   server's side is left half-open until its kernel gives up (`server_give_up`) or its
//!   reaper acts; the phone's next packet is answered with a RST (`rst`) or dropped (`drop`).
//! - Handover: once the device has moved to another carrier, this path is dead: nothing of
//!   the phone's (not even its FIN) reaches the server.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use turmoil::net::{TcpListener, TcpStream};

use crate::carrier::{CarrierProfile, OnExpiry, RTO_INITIAL, Refresh};
use crate::trace::Event;
use crate::world::{self, CARRIER_PORT, PUSH_DEVICE_PORT, SERVER_PORT, Shared, now};

/// What the preamble's first byte asks for.
pub const TARGET_IM: u8 = 1;
/// The push service.
pub const TARGET_PUSH: u8 = 2;
/// Bytes of the preamble: target, device index (u32 big-endian).
pub const PREAMBLE_BYTES: usize = 5;

/// Bytes read from a socket at once: one TCP segment's payload at a 1500-byte MTU, so each
/// chunk is one segment of the link model (lost and retransmitted alone), and an idle flow
/// holds little buffer memory.
const READ_CHUNK_BYTES: usize = 1_460;

/// Runs carrier `carrier`'s proxy host.
pub async fn carrier_host(shared: Arc<Shared>, carrier: usize) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", CARRIER_PORT)).await?;
    let mut next_flow = 0u64;
    loop {
        let (downstream, _) = listener.accept().await?;
        next_flow += 1;
        let flow = Flow::new(shared.clone(), carrier, next_flow);
        tokio::spawn(flow.run(downstream));
    }
}

/// Which side of the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Phone,
    Server,
}

/// A chunk in flight: due time and bytes (empty bytes = FIN).
type InFlight = VecDeque<(Duration, Bytes)>;

struct Direction {
    in_flight: InFlight,
    link_free_at: Duration,
    last_delivery_at: Duration,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            in_flight: VecDeque::new(),
            link_free_at: Duration::ZERO,
            last_delivery_at: Duration::ZERO,
        }
    }
}

struct Flow {
    shared: Arc<Shared>,
    carrier: usize,
    id: u64,
    rng: ChaCha8Rng,
    device: usize,
    to_im: bool,
    nat_timeout: Duration,
    last_refresh: Duration,
    nat_expired: bool,
    phone_open: bool,
    server_open: bool,
    server_give_up_at: Option<Duration>,
    up: Direction,
    down: Direction,
}

impl Flow {
    fn new(shared: Arc<Shared>, carrier: usize, id: u64) -> Flow {
        // Re-seeded per device once the preamble names it (see `run`).
        let rng = ChaCha8Rng::seed_from_u64(shared.seed);
        Flow {
            shared,
            carrier,
            id,
            rng,
            device: 0,
            to_im: true,
            nat_timeout: Duration::MAX,
            last_refresh: Duration::ZERO,
            nat_expired: false,
            phone_open: true,
            server_open: true,
            server_give_up_at: None,
            up: Direction::new(),
            down: Direction::new(),
        }
    }

    fn profile(&self) -> &CarrierProfile {
        &self.shared.scenario.carriers[self.carrier]
    }

    fn trace_end(&self, side: Side, why: &'static str) {
        let side = match side {
            Side::Phone => "phone",
            Side::Server => "server",
        };
        self.shared.trace(Event::FlowEnded {
            carrier: self.carrier as u32,
            flow: self.id,
            side,
            why,
        });
    }

    async fn run(mut self, mut downstream: TcpStream) {
        let mut preamble = [0u8; PREAMBLE_BYTES];
        let read = tokio::time::timeout(
            Duration::from_secs(60),
            downstream.read_exact(&mut preamble),
        )
        .await;
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        self.to_im = preamble[0] == TARGET_IM;
        self.device =
            u32::from_be_bytes([preamble[1], preamble[2], preamble[3], preamble[4]]) as usize;
        if self.device >= self.shared.layout.devices.len() {
            return;
        }
        self.nat_timeout = self.shared.layout.devices[self.device].nat_timeouts[self.carrier];
        // Seed by (device, its n-th connection): the same whatever order flows are accepted in.
        let n = self.shared.flows_by_device[self.device]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.rng = ChaCha8Rng::seed_from_u64(
            self.shared.seed ^ ((self.carrier as u64) << 56) ^ ((self.device as u64) << 24) ^ n,
        );
        self.shared.trace(Event::FlowOpened {
            carrier: self.carrier as u32,
            flow: self.id,
            device: self.device as u32,
            target: if self.to_im { "im" } else { "push" },
        });
        // The phone's SYN crosses the radio like any packet: an outage delays it.
        let Some(syn_at) = self.transmit_time(now(), 60, true) else {
            self.trace_end(Side::Phone, "connect_lost");
            return;
        };
        tokio::time::sleep(syn_at.saturating_sub(now())).await;
        let upstream = if self.to_im {
            TcpStream::connect(("server", SERVER_PORT)).await
        } else {
            TcpStream::connect(("push", PUSH_DEVICE_PORT)).await
        };
        let Ok(upstream) = upstream else {
            // Connection refused: the phone sees a reset.
            self.trace_end(Side::Server, "refused");
            return;
        };
        self.last_refresh = now();
        self.relay(downstream, upstream).await;
    }

    /// True when the device has moved to another carrier: this path is dead.
    fn path_dead(&self) -> bool {
        self.shared.device_carrier[self.device].load(std::sync::atomic::Ordering::Relaxed)
            != self.carrier
    }

    /// Checks the NAT mapping at `at`; marks it expired (once) when idle too long.
    fn check_nat(&mut self, at: Duration) -> bool {
        if !self.nat_expired && at.saturating_sub(self.last_refresh) > self.nat_timeout {
            self.nat_expired = true;
            if self.phone_open && self.server_open {
                let counter = if self.to_im {
                    &self.shared.counters.silent_disconnects
                } else {
                    &self.shared.counters.push_channel_silent_disconnects
                };
                Shared::count(counter);
                if self.to_im {
                    Shared::count(&self.shared.silent_by_device[self.device]);
                    let mut reachability = self.shared.reachability[self.device]
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    reachability.down(at, self.shared.heal_at());
                }
                self.shared.trace(Event::NatExpired {
                    carrier: self.carrier as u32,
                    flow: self.id,
                    device: self.device as u32,
                });
            }
        }
        self.nat_expired
    }

    fn one_way_delay(&mut self) -> Duration {
        let (median, p99) = (self.profile().rtt_median, self.profile().rtt_p99);
        let median_s = median.as_secs_f64().max(1e-6);
        let sigma = (p99.as_secs_f64().max(median_s) / median_s).ln() / 2.326;
        // Box-Muller: a standard normal from two uniforms.
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random_range(0.0..1.0);
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let rtt_s = (median_s * (sigma * z).exp()).min(p99.as_secs_f64() * 4.0);
        Duration::from_secs_f64(rtt_s / 2.0)
    }

    /// When a transmission starting at `start` gets through, retrying lost or blocked
    /// attempts; None when the retries run out.
    fn transmit_time(
        &mut self,
        start: Duration,
        _bytes: usize,
        to_im_path: bool,
    ) -> Option<Duration> {
        let heal = self.shared.heal_at();
        let blocked = &self.shared.blocked[self.carrier];
        let profile = &self.shared.scenario.carriers[self.carrier];
        let (loss, max_retries) = (profile.loss, profile.max_retries);
        let mut attempt_at = start;
        let mut rto = RTO_INITIAL;
        for _ in 0..=max_retries {
            let down = blocked.radio_down(profile, attempt_at, heal)
                || (to_im_path && self.to_im && blocked.partitioned(attempt_at));
            let lost = loss > 0.0 && self.rng.random_bool(loss);
            if !down && !lost {
                return Some(attempt_at + self.one_way_delay());
            }
            attempt_at += rto;
            rto *= 2;
        }
        None
    }

    /// Schedules `bytes` in one direction; false when the link gave up on them.
    fn send(&mut self, up: bool, bytes: Bytes) -> bool {
        let at = now();
        let bandwidth_bytes_per_s = f64::from(self.profile().bandwidth_kbps) * 1_000.0 / 8.0;
        let serialization =
            Duration::from_secs_f64(bytes.len().max(40) as f64 / bandwidth_bytes_per_s);
        let direction = if up { &self.up } else { &self.down };
        let start = direction.link_free_at.max(at) + serialization;
        let Some(arrival) = self.transmit_time(start, bytes.len(), true) else {
            return false;
        };
        let direction = if up { &mut self.up } else { &mut self.down };
        direction.link_free_at = start;
        let arrival = arrival.max(direction.last_delivery_at);
        direction.last_delivery_at = arrival;
        direction.in_flight.push_back((arrival, bytes));
        true
    }

    fn next_wake(&self) -> Option<Duration> {
        let mut wake: Option<Duration> = None;
        let mut consider = |at: Duration| wake = Some(wake.map_or(at, |w| w.min(at)));
        if let Some((at, _)) = self.up.in_flight.front() {
            consider(*at);
        }
        if let Some((at, _)) = self.down.in_flight.front() {
            consider(*at);
        }
        if !self.nat_expired && self.phone_open && self.server_open {
            consider(self.last_refresh + self.nat_timeout + Duration::from_millis(1));
        }
        if self.server_open
            && let Some(at) = self.server_give_up_at
        {
            consider(at);
        }
        wake
    }

    /// Something from the server reached a dead mapping: its kernel starts retrying.
    fn server_write_lost(&mut self) {
        if self.server_give_up_at.is_none() {
            self.server_give_up_at = Some(now() + self.profile().server_give_up);
        }
    }

    async fn relay(&mut self, downstream: TcpStream, upstream: TcpStream) {
        let mut phone = Some(downstream.into_split());
        let mut server = Some(upstream.into_split());
        let mut phone_buf = BytesMut::new();
        let mut server_buf = BytesMut::new();
        loop {
            self.phone_open = phone.is_some();
            self.server_open = server.is_some();
            if phone.is_none() && server.is_none() {
                return;
            }
            let wake = self.next_wake();
            tokio::select! {
                biased;
                read = read_some(phone.as_mut().map(|(read, _)| read), &mut phone_buf) => {
                    let at = now();
                    let bytes = match read {
                        Ok(n) if n > 0 => phone_buf.split().freeze(),
                        _ => {
                            // The phone closed (or reset) its connection.
                            phone = None;
                            if self.path_dead() || self.check_nat(at) {
                                // Its FIN never reaches the server: half-open there.
                                self.trace_end(Side::Phone, "closed_unseen");
                            } else {
                                self.trace_end(Side::Phone, "closed");
                                self.send(true, Bytes::new());
                            }
                            continue;
                        }
                    };
                    if self.path_dead() {
                        continue;
                    }
                    if self.check_nat(at) {
                        if self.profile().on_expiry == OnExpiry::Rst {
                            // The server's kernel answers the unknown flow with a RST.
                            phone = None;
                            self.trace_end(Side::Phone, "nat_rst");
                        }
                        continue;
                    }
                    self.last_refresh = at;
                    self.trace_frame(true, bytes.len());
                    if !self.send(true, bytes) {
                        // The phone's retries ran out: its connection breaks.
                        phone = None;
                        self.trace_end(Side::Phone, "retries_exhausted");
                    }
                }
                read = read_some(server.as_mut().map(|(read, _)| read), &mut server_buf) => {
                    let at = now();
                    let bytes = match read {
                        Ok(n) if n > 0 => server_buf.split().freeze(),
                        _ => {
                            server = None;
                            self.trace_end(Side::Server, "closed");
                            if phone.is_some() && !self.path_dead() && !self.check_nat(at) {
                                self.send(false, Bytes::new());
                            }
                            continue;
                        }
                    };
                    if phone.is_none() || self.path_dead() || self.check_nat(at) {
                        self.server_write_lost();
                        continue;
                    }
                    if self.profile().refresh == Refresh::Both {
                        self.last_refresh = at;
                    }
                    self.trace_frame(false, bytes.len());
                    if !self.send(false, bytes) {
                        // The server's kernel gives up; the phone hears nothing.
                        server = None;
                        self.trace_end(Side::Server, "retries_exhausted");
                    }
                }
                () = sleep_until_sim(wake) => {
                    let at = now();
                    self.check_nat(at);
                    if server.is_some() && self.server_give_up_at.is_some_and(|give_up| give_up <= at) {
                        server = None;
                        self.trace_end(Side::Server, "kernel_gave_up");
                    }
                    while self.up.in_flight.front().is_some_and(|(due, _)| *due <= at) {
                        let (_, bytes) = self.up.in_flight.pop_front().expect("front exists");
                        if let Some((_, write)) = server.as_mut()
                            && deliver(write, &bytes).await.is_err()
                        {
                            server = None;
                        }
                    }
                    while self.down.in_flight.front().is_some_and(|(due, _)| *due <= at) {
                        let (_, bytes) = self.down.in_flight.pop_front().expect("front exists");
                        if let Some((_, write)) = phone.as_mut()
                            && deliver(write, &bytes).await.is_err()
                        {
                            phone = None;
                        }
                    }
                }
            }
        }
    }

    fn trace_frame(&self, up: bool, bytes: usize) {
        // Every byte to or from the phone keeps (or wakes) its radio.
        self.shared.radios[self.device]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .transfer(now());
        self.shared.trace(Event::Frame {
            carrier: self.carrier as u32,
            flow: self.id,
            up,
            bytes: bytes as u32,
        });
    }
}

/// Reads into `buffer`, or waits forever when the side is gone.
async fn read_some(
    half: Option<&mut OwnedReadHalf>,
    buffer: &mut BytesMut,
) -> std::io::Result<usize> {
    match half {
        Some(half) => {
            if buffer.capacity() == 0 {
                *buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
            }
            let mut limited = (&mut *half).take(READ_CHUNK_BYTES as u64);
            limited.read_buf(buffer).await
        }
        None => std::future::pending().await,
    }
}

/// Writes bytes, or shuts the write side for an empty (FIN) chunk.
async fn deliver(writer: &mut OwnedWriteHalf, bytes: &Bytes) -> std::io::Result<()> {
    if bytes.is_empty() {
        writer.shutdown().await
    } else {
        writer.write_all(bytes).await
    }
}

/// Sleeps until simulated time `at` (forever when None).
pub async fn sleep_until_sim(at: Option<Duration>) {
    match at {
        Some(at) => tokio::time::sleep(at.saturating_sub(now())).await,
        None => std::future::pending().await,
    }
}

/// Writes the preamble for `device` to `target` on a fresh connection to its carrier.
pub async fn open_via_carrier(
    shared: &Shared,
    device: usize,
    target: u8,
) -> std::io::Result<TcpStream> {
    let carrier = shared.device_carrier[device].load(std::sync::atomic::Ordering::Relaxed);
    let mut stream =
        TcpStream::connect((world::carrier_host(carrier).as_str(), CARRIER_PORT)).await?;
    let mut preamble = [0u8; PREAMBLE_BYTES];
    preamble[0] = target;
    preamble[1..].copy_from_slice(&(device as u32).to_be_bytes());
    stream.write_all(&preamble).await?;
    Ok(stream)
}
