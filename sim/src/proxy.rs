//! The carrier proxy: one turmoil host per carrier profile, standing between the phones and
//! the servers as the carrier's radio link and NAT.
//!
//! A device connects to its carrier's proxy and names itself and its destination in a 5-byte
//! preamble (simulation plumbing, stripped here). The proxy then relays bytes both ways through
//! a model of the carrier, with a seeded RNG per flow (turmoil's own loss model would break a
//! whole host pair, and its TCP never retransmits).
//!
//! The rules (link loss and delay, NAT expiry, half-open server sides, handover) are
//! imlab-carrier's [`FlowModel`]; this file only carries out its decisions on turmoil sockets
//! and reports them to the run's counters and trace.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use imlab_carrier::{
    Closed, Cut, FlowModel, Link, PhoneSend, SEGMENT_BYTES, ServerSend, flow_seed,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use turmoil::net::{TcpListener, TcpStream};

use crate::trace::Event;
use crate::world::{self, CARRIER_PORT, PUSH_DEVICE_PORT, SERVER_PORT, Shared, now};

/// What the preamble's first byte asks for.
pub const TARGET_IM: u8 = 1;
/// The push service.
pub const TARGET_PUSH: u8 = 2;
/// Bytes of the preamble: target, device index (u32 big-endian).
pub const PREAMBLE_BYTES: usize = 5;

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

struct Flow {
    shared: Arc<Shared>,
    carrier: usize,
    id: u64,
    model: FlowModel,
    device: usize,
    to_im: bool,
    up: InFlight,
    down: InFlight,
}

impl Flow {
    fn new(shared: Arc<Shared>, carrier: usize, id: u64) -> Flow {
        Flow {
            shared,
            carrier,
            id,
            // Replaced once the preamble names the device (see `run`).
            model: FlowModel::new(0, Duration::MAX, true),
            device: 0,
            to_im: true,
            up: InFlight::new(),
            down: InFlight::new(),
        }
    }

    /// The link as the model sees it now.
    fn with_link<T>(&mut self, decide: impl FnOnce(&mut FlowModel, &Link<'_>) -> T) -> T {
        let shared = &self.shared;
        let link = Link {
            profile: &shared.scenario.carriers[self.carrier],
            blocked: &shared.blocked[self.carrier],
            heal: shared.heal_at(),
            handed_over: shared.device_carrier[self.device]
                .load(std::sync::atomic::Ordering::Relaxed)
                != self.carrier,
        };
        decide(&mut self.model, &link)
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
        let nat_timeout = self.shared.layout.devices[self.device].nat_timeouts[self.carrier];
        // Seed by (device, its n-th connection): the same whatever order flows are accepted in.
        let n = self.shared.flows_by_device[self.device]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seed = flow_seed(
            self.shared.seed,
            &[self.carrier as u64, self.device as u64, n],
        );
        self.model = FlowModel::new(seed, nat_timeout, self.to_im);
        self.shared.trace(Event::FlowOpened {
            carrier: self.carrier as u32,
            flow: self.id,
            device: self.device as u32,
            target: if self.to_im { "im" } else { "push" },
        });
        // The phone's SYN crosses the radio like any packet: an outage delays it.
        let at = now();
        let Some(syn_at) = self.with_link(|model, link| model.connect(link, at)) else {
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
        self.model.opened(now());
        self.relay(downstream, upstream).await;
    }

    /// Applies the NAT timeout at `at`; counts and traces a silent disconnect when the
    /// mapping has just expired under an open connection.
    fn check_nat(&mut self, at: Duration) {
        if !self.model.expire_nat(at) {
            return;
        }
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

    fn next_wake(&mut self) -> Option<Duration> {
        let timer = self.with_link(|model, link| model.next_timer(link));
        [
            self.up.front().map(|(at, _)| *at),
            self.down.front().map(|(at, _)| *at),
            timer,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    async fn relay(&mut self, downstream: TcpStream, upstream: TcpStream) {
        let mut phone = Some(downstream.into_split());
        let mut server = Some(upstream.into_split());
        let mut phone_buf = BytesMut::new();
        let mut server_buf = BytesMut::new();
        let (mut rebound, mut swallowed) = (false, false);
        loop {
            self.model.set_open(phone.is_some(), server.is_some());
            if phone.is_none() && server.is_none() {
                return;
            }
            let at = now();
            let cut = self.with_link(|model, link| model.cut(link, at));
            if !rebound && self.model.rebound() {
                rebound = true;
                self.trace_fault("nat_rebind");
            }
            if !swallowed && self.model.swallowed() {
                swallowed = true;
                self.trace_fault("blackhole");
            }
            if let Some(cut) = cut {
                // The carrier ends the flow on both sides; what was in flight is gone.
                self.up.clear();
                self.down.clear();
                phone = None;
                server = None;
                let why = match cut {
                    Cut::Reset => "carrier_reset",
                    Cut::Close => "carrier_closed",
                };
                self.trace_end(Side::Phone, why);
                self.trace_end(Side::Server, why);
                continue;
            }
            let wake = self.next_wake();
            tokio::select! {
                biased;
                read = read_some(phone.as_mut().map(|(read, _)| read), &mut phone_buf) => {
                    let at = now();
                    self.check_nat(at);
                    let bytes = match read {
                        Ok(n) if n > 0 => phone_buf.split().freeze(),
                        _ => {
                            // The phone closed (or reset) its connection.
                            phone = None;
                            match self.with_link(|model, link| model.phone_closed(link, at)) {
                                Closed::Forward { at } => {
                                    self.trace_end(Side::Phone, "closed");
                                    self.up.push_back((at, Bytes::new()));
                                }
                                Closed::Lost => self.trace_end(Side::Phone, "closed"),
                                Closed::Unseen => self.trace_end(Side::Phone, "closed_unseen"),
                            }
                            continue;
                        }
                    };
                    let len = bytes.len();
                    match self.with_link(|model, link| model.phone_sent(link, at, len)) {
                        PhoneSend::Deliver { at, .. } => {
                            self.trace_frame(true, len);
                            self.up.push_back((at, bytes));
                        }
                        PhoneSend::Dropped => {}
                        PhoneSend::Reset => {
                            phone = None;
                            self.trace_end(Side::Phone, "nat_rst");
                        }
                        PhoneSend::Broken => {
                            self.trace_frame(true, len);
                            phone = None;
                            self.trace_end(Side::Phone, "retries_exhausted");
                        }
                    }
                }
                read = read_some(server.as_mut().map(|(read, _)| read), &mut server_buf) => {
                    let at = now();
                    self.check_nat(at);
                    let bytes = match read {
                        Ok(n) if n > 0 => server_buf.split().freeze(),
                        _ => {
                            server = None;
                            self.trace_end(Side::Server, "closed");
                            if let Closed::Forward { at } =
                                self.with_link(|model, link| model.server_closed(link, at))
                            {
                                self.down.push_back((at, Bytes::new()));
                            }
                            continue;
                        }
                    };
                    let len = bytes.len();
                    match self.with_link(|model, link| model.server_sent(link, at, len)) {
                        ServerSend::Deliver { at, .. } => {
                            self.trace_frame(false, len);
                            self.down.push_back((at, bytes));
                        }
                        ServerSend::Lost => {}
                        ServerSend::Broken => {
                            // The server's kernel gives up; the phone hears nothing.
                            self.trace_frame(false, len);
                            server = None;
                            self.trace_end(Side::Server, "retries_exhausted");
                        }
                    }
                }
                () = sleep_until_sim(wake) => {
                    let at = now();
                    self.check_nat(at);
                    if server.is_some() && self.model.server_gives_up(at) {
                        server = None;
                        self.trace_end(Side::Server, "kernel_gave_up");
                    }
                    while self.up.front().is_some_and(|(due, _)| *due <= at) {
                        let (_, bytes) = self.up.pop_front().expect("front exists");
                        if let Some((_, write)) = server.as_mut()
                            && deliver(write, &bytes).await.is_err()
                        {
                            server = None;
                        }
                    }
                    while self.down.front().is_some_and(|(due, _)| *due <= at) {
                        let (_, bytes) = self.down.pop_front().expect("front exists");
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

    fn trace_fault(&self, fault: &'static str) {
        self.shared.trace(Event::FlowFault {
            carrier: self.carrier as u32,
            flow: self.id,
            device: self.device as u32,
            fault,
        });
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
                *buffer = BytesMut::with_capacity(SEGMENT_BYTES);
            }
            let mut limited = (&mut *half).take(SEGMENT_BYTES as u64);
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
