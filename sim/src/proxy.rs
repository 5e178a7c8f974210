//! The carrier proxy: one turmoil host per carrier profile (several beyond
//! [`DEVICES_PER_CARRIER_HOST`](world::DEVICES_PER_CARRIER_HOST) devices), standing between
//! the phones and the servers as the carrier's radio link and NAT.
//!
//! A device connects to its carrier's proxy host over an in-memory [`pipe`](crate::pipe)
//! (the radio hop, whose timing and loss the proxy models itself), queued on the host's
//! [`Switchboard`] with the device and its destination. The proxy then relays bytes both
//! ways, to the server over a turmoil connection, through a model of the carrier, with a
//! seeded RNG per flow (turmoil's own loss model would break a whole host pair, and its TCP
//! never retransmits).
//!
//! The rules (link loss and delay, NAT expiry, half-open server sides, handover) are
//! imlab-carrier's [`FlowModel`]; this file only carries out its decisions on the phone's
//! pipe and the server's turmoil socket, and reports them to the run's counters and trace.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use imlab_carrier::{
    Closed, Cut, FlowModel, Link, PhoneSend, SEGMENT_BYTES, ServerSend, flow_seed,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use turmoil::net::TcpStream;
use turmoil::net::tcp::OwnedReadHalf;

use crate::pipe::{PipeEnd, pipe};
use crate::trace::Event;
use crate::world::{self, HostClock, PUSH_DEVICE_PORT, SERVER_PORT, Shared};

/// A connection for the IM server.
pub const TARGET_IM: u8 = 1;
/// A connection for the push service.
pub const TARGET_PUSH: u8 = 2;

/// A phone's new connection, waiting for its carrier's host.
pub struct Incoming {
    device: usize,
    to_im: bool,
    end: PipeEnd,
}

/// One carrier host's queue of connecting phones (a listener's accept queue). Bounded: two
/// connections for every device of the run fit (a device opens at most one to the server and
/// one to the push service at a time, and the host takes them every tick); beyond that a
/// connect is refused, as at a full SYN queue.
pub struct Switchboard {
    sender: mpsc::Sender<Incoming>,
    receiver: Mutex<Option<mpsc::Receiver<Incoming>>>,
}

impl Switchboard {
    /// A switchboard with room for `n_devices` devices' connections.
    pub fn new(n_devices: usize) -> Switchboard {
        let (sender, receiver) = mpsc::channel(2 * n_devices.max(1) + 16);
        Switchboard {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

/// Runs host `shard` of carrier `carrier`'s proxy. Flow ids are the carrier's: the shard's
/// n-th flow is `n * shards + shard`.
pub async fn carrier_host(shared: Arc<Shared>, carrier: usize, shard: usize) -> turmoil::Result {
    let shards = world::carrier_shards(shared.layout.devices.len());
    let Some(mut incoming) = shared.switchboards[carrier * shards + shard]
        .receiver
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        panic!("carrier host {carrier}.{shard} started twice (carriers never crash)");
    };
    // Carrier hosts never crash: one clock for the host's life.
    let clock = HostClock::here();
    let mut next_flow = 0u64;
    while let Some(phone) = incoming.recv().await {
        next_flow += 1;
        let flow = Flow::new(
            shared.clone(),
            clock,
            carrier,
            next_flow * shards as u64 + shard as u64,
        );
        tokio::spawn(flow.run(phone));
    }
    Ok(())
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
    /// The carrier host's clock.
    clock: HostClock,
    /// Its carrier's index: 4 bytes, so `to_im` shares its word and a flow's task fits a
    /// 1,024-byte cell (its future is 912 bytes, the most that fits: `-Zprint-type-sizes`).
    carrier: u32,
    id: u64,
    model: FlowModel,
    device: usize,
    to_im: bool,
    up: InFlight,
    down: InFlight,
}

impl Flow {
    fn new(shared: Arc<Shared>, clock: HostClock, carrier: usize, id: u64) -> Flow {
        Flow {
            shared,
            clock,
            carrier: u32::try_from(carrier).expect("fewer than 2^32 carriers"),
            id,
            // Replaced once the preamble names the device (see `run`).
            model: FlowModel::new(0, Duration::MAX, true),
            device: 0,
            to_im: true,
            up: InFlight::new(),
            down: InFlight::new(),
        }
    }

    fn carrier(&self) -> usize {
        self.carrier as usize
    }

    /// The link as the model sees it now.
    fn with_link<T>(&mut self, decide: impl FnOnce(&mut FlowModel, &Link<'_>) -> T) -> T {
        let shared = &self.shared;
        let link = Link {
            profile: &shared.scenario.carriers[self.carrier()],
            blocked: &shared.blocked[self.carrier()],
            heal: shared.heal_at(),
            handed_over: shared.device_carrier[self.device]
                .load(std::sync::atomic::Ordering::Relaxed)
                != self.carrier(),
        };
        decide(&mut self.model, &link)
    }

    /// Records a trace event at `at`: the host's time now, as last read off its clock (the
    /// flow reads it once per wake-up, not once per event).
    fn trace(&self, at: Duration, event: Event) {
        self.shared.trace_at(at, event);
    }

    fn trace_end(&self, at: Duration, side: Side, why: &'static str) {
        let side = match side {
            Side::Phone => "phone",
            Side::Server => "server",
        };
        self.trace(
            at,
            Event::FlowEnded {
                carrier: self.carrier,
                flow: self.id,
                side,
                why,
            },
        );
    }

    // A plain fn returning an async block, not an `async fn`: an async fn keeps `self` (about
    // 600 bytes) twice in its future, in every open flow's task.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn run(mut self, phone: Incoming) -> impl Future<Output = ()> {
        // Taken apart before the block: it captures only the phone's end, not the whole
        // `Incoming` for the flow's life.
        let Incoming { device, to_im, end } = phone;
        self.to_im = to_im;
        self.device = device;
        async move {
            let nat_timeout = self.shared.layout.devices[self.device].nat_timeouts[self.carrier()];
            // Seed by (device, its n-th connection): the same whatever order flows are accepted in.
            let n = self.shared.flows_by_device[self.device]
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let seed = flow_seed(
                self.shared.seed,
                &[u64::from(self.carrier), self.device as u64, n],
            );
            self.model = FlowModel::new(seed, nat_timeout, self.to_im);
            // The time in a block of its own, not kept across the relay: the closure borrows
            // it, and a borrowed local stays in the task's future to the end of its scope.
            let syn = {
                let at = self.clock.now();
                self.trace(
                    at,
                    Event::FlowOpened {
                        carrier: self.carrier,
                        flow: self.id,
                        device: self.device as u32,
                        target: if self.to_im { "im" } else { "push" },
                    },
                );
                // The phone's SYN crosses the radio like any packet: an outage delays it.
                let Some(syn_at) = self.with_link(|model, link| model.connect(link, at)) else {
                    self.trace_end(at, Side::Phone, "connect_lost");
                    return;
                };
                self.clock.sleep_until_from(at, Some(syn_at))
            };
            syn.await;
            if end.peer_dropped() {
                // The phone gave up (its connect timed out) before its SYN got through: its
                // kernel sends no more SYNs, so the server never sees the connection, nor the
                // Login the phone wrote into it. Connected anyway, the flow delivered that
                // Login seconds after the phone had moved on: a login the server counted
                // for nobody, and one that replaced the phone's newer connection.
                self.trace_end(self.clock.now(), Side::Phone, "connect_abandoned");
                return;
            }
            // Matched as it comes, not bound to a name first: a named result is partly moved
            // from by the match and so kept beside the relay (88 bytes in every flow's task).
            let Ok(upstream) = (if self.to_im {
                TcpStream::connect(("server", SERVER_PORT)).await
            } else {
                TcpStream::connect(("push", PUSH_DEVICE_PORT)).await
            }) else {
                // Connection refused: the phone sees a reset.
                self.trace_end(self.clock.now(), Side::Server, "refused");
                return;
            };
            self.model.opened(self.clock.now());
            self.relay(end, upstream).await;
        }
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
        self.shared.trace_at(
            at,
            Event::NatExpired {
                carrier: self.carrier,
                flow: self.id,
                device: self.device as u32,
            },
        );
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

    // A plain fn returning an async block, not an `async fn`: an async fn keeps its arguments
    // beside the locals made from them (the server stream twice, 88 bytes each, in every open
    // flow's task); the block captures the state it works on once.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn relay(&mut self, downstream: PipeEnd, upstream: TcpStream) -> impl Future<Output = ()> + '_ {
        let mut phone = Some(downstream);
        let mut server = Some(upstream.into_split());
        async move {
            let mut server_buf = BytesMut::new();
            let (mut rebound, mut swallowed) = (false, false);
            loop {
                self.model.set_open(phone.is_some(), server.is_some());
                if phone.is_none() && server.is_none() {
                    return;
                }
                let at = self.clock.now();
                let cut = self.with_link(|model, link| model.cut(link, at));
                if !rebound && self.model.rebound() {
                    rebound = true;
                    self.trace_fault(at, "nat_rebind");
                }
                if !swallowed && self.model.swallowed() {
                    swallowed = true;
                    self.trace_fault(at, "blackhole");
                }
                if let Some(cut) = cut {
                    // The carrier ends the flow on both sides; what was in flight is gone.
                    self.up = InFlight::new();
                    self.down = InFlight::new();
                    phone = None;
                    server = None;
                    let why = match cut {
                        Cut::Reset => "carrier_reset",
                        Cut::Close => "carrier_closed",
                    };
                    self.trace_end(at, Side::Phone, why);
                    self.trace_end(at, Side::Server, why);
                    continue;
                }
                let wake = self.next_wake();
                tokio::select! {
                    biased;
                    read = read_phone(phone.as_mut()) => {
                        let at = self.clock.now();
                        self.check_nat(at);
                        let bytes = match read {
                            Some(bytes) => bytes,
                            None => {
                                // The phone closed (or reset) its connection.
                                phone = None;
                                match self.with_link(|model, link| model.phone_closed(link, at)) {
                                    Closed::Forward { at: due } => {
                                        self.trace_end(at, Side::Phone, "closed");
                                        self.up.push_back((due, Bytes::new()));
                                    }
                                    Closed::Lost => self.trace_end(at, Side::Phone, "closed"),
                                    Closed::Unseen => {
                                        self.trace_end(at, Side::Phone, "closed_unseen");
                                    }
                                }
                                continue;
                            }
                        };
                        let len = bytes.len();
                        match self.with_link(|model, link| model.phone_sent(link, at, len)) {
                            PhoneSend::Deliver { at: due, .. } => {
                                self.trace_frame(at, true, len);
                                self.up.push_back((due, bytes));
                            }
                            PhoneSend::Dropped => {}
                            PhoneSend::Reset => {
                                phone = None;
                                self.trace_end(at, Side::Phone, "nat_rst");
                            }
                            PhoneSend::Broken => {
                                self.trace_frame(at, true, len);
                                phone = None;
                                self.trace_end(at, Side::Phone, "retries_exhausted");
                            }
                        }
                    }
                    read = read_some(server.as_mut().map(|(read, _)| read), &mut server_buf) => {
                        let at = self.clock.now();
                        self.check_nat(at);
                        let bytes = match read {
                            Ok(n) if n > 0 => take_chunk(&mut server_buf),
                            _ => {
                                server = None;
                                self.trace_end(at, Side::Server, "closed");
                                if let Closed::Forward { at: due } =
                                    self.with_link(|model, link| model.server_closed(link, at))
                                {
                                    self.down.push_back((due, Bytes::new()));
                                }
                                continue;
                            }
                        };
                        let len = bytes.len();
                        match self.with_link(|model, link| model.server_sent(link, at, len)) {
                            ServerSend::Deliver { at: due, .. } => {
                                self.trace_frame(at, false, len);
                                self.down.push_back((due, bytes));
                            }
                            ServerSend::Lost => {}
                            ServerSend::Broken => {
                                // The server's kernel gives up; the phone hears nothing.
                                self.trace_frame(at, false, len);
                                server = None;
                                self.trace_end(at, Side::Server, "retries_exhausted");
                            }
                        }
                    }
                    () = self.clock.sleep_until_from(at, wake) => {
                        let at = self.clock.now();
                        self.check_nat(at);
                        if server.is_some() && self.model.server_gives_up(at) {
                            server = None;
                            self.trace_end(at, Side::Server, "kernel_gave_up");
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
                            if let Some(end) = phone.as_mut()
                                && deliver(end, &bytes).await.is_err()
                            {
                                phone = None;
                            }
                        }
                        // Emptied queues let their slots go: an idle flow holds none (192
                        // bytes a direction, in each of a city's flows).
                        for queue in [&mut self.up, &mut self.down] {
                            if queue.is_empty() {
                                *queue = InFlight::new();
                            }
                        }
                    }
                }
            }
        }
    }

    fn trace_fault(&self, at: Duration, fault: &'static str) {
        self.trace(
            at,
            Event::FlowFault {
                carrier: self.carrier,
                flow: self.id,
                device: self.device as u32,
                fault,
            },
        );
    }

    fn trace_frame(&self, at: Duration, up: bool, bytes: usize) {
        // Every byte to or from the phone keeps (or wakes) its radio.
        self.shared.radios[self.device]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .transfer(at);
        self.shared.trace_at(
            at,
            Event::Frame {
                carrier: self.carrier,
                flow: self.id,
                up,
                bytes: bytes as u32,
            },
        );
    }
}

/// The phone's next chunk (at most a segment; `None` at the end of its stream), or waits
/// forever when the phone side is gone.
async fn read_phone(end: Option<&mut PipeEnd>) -> Option<Bytes> {
    match end {
        Some(end) => std::future::poll_fn(|cx| end.poll_chunk(cx, SEGMENT_BYTES)).await,
        None => std::future::pending().await,
    }
}

/// Reads into `buffer`, or waits forever when the side is gone. The buffer is allocated
/// once bytes (or the end) are there, and the caller takes it whole: an idle flow holds no
/// buffer (a city has hundreds of thousands of idle flows).
async fn read_some(
    half: Option<&mut OwnedReadHalf>,
    buffer: &mut BytesMut,
) -> std::io::Result<usize> {
    match half {
        Some(half) => {
            half.peek(&mut [0u8; 1]).await?;
            if buffer.capacity() == 0 {
                *buffer = BytesMut::with_capacity(SEGMENT_BYTES);
            }
            let mut limited = (&mut *half).take(SEGMENT_BYTES as u64);
            limited.read_buf(buffer).await
        }
        None => std::future::pending().await,
    }
}

/// The bytes read, leaving `buffer` empty and unallocated; a small read is copied out so
/// that a chunk in flight does not pin a whole segment's allocation.
fn take_chunk(buffer: &mut BytesMut) -> Bytes {
    let chunk = std::mem::take(buffer);
    if chunk.len() * 4 < chunk.capacity() {
        Bytes::copy_from_slice(&chunk)
    } else {
        chunk.freeze()
    }
}

/// Writes bytes, or shuts the write side for an empty (FIN) chunk.
async fn deliver(writer: &mut (impl AsyncWrite + Unpin), bytes: &Bytes) -> std::io::Result<()> {
    if bytes.is_empty() {
        writer.shutdown().await
    } else {
        writer.write_all(bytes).await
    }
}

/// Bytes one direction of the radio hop's pipe queues at most; a writer then waits for the
/// reader.
pub const PIPE_BYTES_MAX: usize = 256 * 1024;

/// Opens a connection from `device` to `target` ([`TARGET_IM`] or [`TARGET_PUSH`]) through
/// its current carrier: a pipe whose other end waits on the carrier host's switchboard.
/// Refused when the switchboard is full.
pub fn open_via_carrier(shared: &Shared, device: usize, target: u8) -> std::io::Result<PipeEnd> {
    let carrier = shared.device_carrier[device].load(std::sync::atomic::Ordering::Relaxed);
    let shards = world::carrier_shards(shared.layout.devices.len());
    let shard = device % shards;
    let (phone, end) = pipe(PIPE_BYTES_MAX);
    shared.switchboards[carrier * shards + shard]
        .sender
        .try_send(Incoming {
            device,
            to_im: target == TARGET_IM,
            end,
        })
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
    Ok(phone)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, B, R>(_: fn(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every open flow is a task: its future fits a 1,024-byte tokio cell (with the task's
    /// header and trailer) only up to 912 bytes, and the next cell costs a city of flows
    /// another 256 bytes each. A local borrowed before an await stays in the future (the
    /// flow's first time read outside its block put `scale-10k` 9 MB higher at 3 hours).
    #[test]
    fn a_flow_task_fits_its_cell() {
        let size = returned_size(Flow::run);
        eprintln!("flow future: {size} bytes");
        assert!(
            size <= 912,
            "a carrier flow's future is {size} bytes, more than 912"
        );
    }
}
