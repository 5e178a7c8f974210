//! One flow: a phone's connection and its upstream connection, relayed through the carrier
//! model. Every rule is imlab-carrier's `FlowModel`; this file reads bytes, asks the model,
//! and carries out the answer on tokio sockets: queue for delivery at a time, drop, reset the
//! phone (SO_LINGER 0), or break a side. It also keeps the flow's view for the control API
//! and logs each decision to the trace.
//!
//! Bounds: each direction queues at most `IN_FLIGHT_BYTES_MAX` bytes; past that the proxy
//! stops reading from the sender, as a full TCP window would.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use imlab_carrier::{Closed, Cut, FlowModel, PhoneSend, SEGMENT_BYTES, ServerSend, flow_seed};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

use crate::proxy::{FlowCommand, Shared};

/// A side's read half, which can say when bytes (or the end) are there before the relay
/// gives it a buffer to read into: an idle flow holds no read buffer.
pub trait ReadSide: AsyncRead + Unpin + Send {
    /// Ready once a read would not wait (bytes, the end or an error), else `Pending` with
    /// `cx`'s waker kept. A poll, not a future: the relay's task keeps no state for it while
    /// the flow idles. The default is ready at once: the buffer is then held while the read
    /// waits.
    fn poll_readable(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl ReadSide for OwnedReadHalf {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

/// One side of a flow: a stream the relay reads and writes, and can reset.
pub trait Endpoint: Send + 'static {
    /// Its read half.
    type Read: ReadSide;
    /// Its write half.
    type Write: AsyncWrite + Unpin + Send;

    /// Splits it for the relay.
    fn split(self) -> (Self::Read, Self::Write);

    /// Closes it abruptly, as a RST (a NAT's, or a kernel's) looks to its peer.
    fn reset(read: Self::Read, write: Self::Write);
}

impl Endpoint for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }

    /// SO_LINGER 0: the close sends a RST.
    fn reset(read: OwnedReadHalf, write: OwnedWriteHalf) {
        if let Ok(stream) = read.reunite(write) {
            let _ = stream.set_zero_linger();
        }
    }
}

/// Bytes queued per direction at most before the proxy stops reading the sender.
pub const IN_FLIGHT_BYTES_MAX: usize = 1 << 20;

/// tokio's timer resolution: a delivery due within this long is made at once.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// Wall-clock limit on connecting upstream.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Side<E> = Option<(<E as Endpoint>::Read, <E as Endpoint>::Write)>;
type ServerSide = Side<TcpStream>;

/// Chunks in flight one way: delivery time (model) and bytes (empty = FIN).
#[derive(Default)]
struct InFlight {
    chunks: VecDeque<(Duration, Bytes)>,
    bytes: usize,
}

impl InFlight {
    fn push(&mut self, at: Duration, bytes: Bytes) {
        self.bytes += bytes.len();
        self.chunks.push_back((at, bytes));
    }

    fn pop_due(&mut self, at: Duration) -> Option<Bytes> {
        if self.chunks.front().is_some_and(|(due, _)| *due <= at) {
            let (_, bytes) = self.chunks.pop_front().expect("front exists");
            self.bytes -= bytes.len();
            if self.chunks.is_empty() {
                // Its slots let go: an idle flow holds no queue (192 bytes a direction).
                self.chunks = VecDeque::new();
            }
            return Some(bytes);
        }
        None
    }

    fn has_room(&self) -> bool {
        self.bytes < IN_FLIGHT_BYTES_MAX
    }
}

/// Runs flow `id` from the accepted phone connection to its end.
///
/// The proxy accepts at once, so the phone may write (its Login) and give up (its connect
/// timeout) while the model still holds its SYN (an outage, SYNs lost). A real phone's
/// kernel would have sent neither its bytes nor any more SYNs, so the server must not see
/// that connection: the flow reads what the phone writes meanwhile (up to
/// [`EARLY_BYTES_MAX`]), and a phone that closes before its SYN crosses ends the flow there.
/// Connected anyway, the proxy handed the server a login from nobody, seconds after the phone
/// had moved on, and it replaced the phone's newer connection (the simulator's carrier flows
/// did the same: 46 server logins for 38 at one seed of a GPRS outage).
pub(crate) async fn run(shared: Arc<Shared>, id: u64, phone: TcpStream, poke: Arc<Notify>) {
    // Boxed: the opening's state (the SYN's wait, the connect, the early read: about 1.2 KB)
    // is held only while it runs, not in the task of every open flow for its whole life.
    // What it opened goes into the relay's future at once: a local kept beside that future
    // would hold its bytes (288) for the flow's life.
    let relaying = match Box::pin(open_accepted(&shared, id, phone)).await {
        Some((model, phone, upstream, early)) => {
            relay(shared, id, model, phone, upstream, poke, early)
        }
        None => return,
    };
    relaying.await;
}

/// Opens an accepted phone's flow, reading what the phone writes meanwhile: the model, both
/// connections and those early bytes, or `None` when the phone gave up first or the server
/// could not be reached (the phone was reset, as a refused connection's would be).
async fn open_accepted(
    shared: &Shared,
    id: u64,
    phone: TcpStream,
) -> Option<(FlowModel, TcpStream, TcpStream, Bytes)> {
    let _ = phone.set_nodelay(true);
    let seed = flow_seed(shared.seed, &[id]);
    let upstream = shared.upstream;
    let mut early = BytesMut::new();
    let opening = open(shared, id, seed, async move {
        let stream = TcpStream::connect(upstream).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    });
    tokio::pin!(opening);
    let opened = loop {
        tokio::select! {
            biased;
            opened = &mut opening => break opened,
            read = read_early(&phone, &mut early), if early.len() < EARLY_BYTES_MAX => {
                if !matches!(read, Ok(1..)) {
                    // Closed (or reset) before its SYN got through: it gave up.
                    shared.log(json!({
                        "t_ms": ms(shared.now()), "flow": id, "event": "ended", "side": "phone",
                        "why": "gave_up_before_syn", "bytes_unsent": early.len(),
                    }));
                    shared.remove_flow(id);
                    return None;
                }
            }
        }
    };
    match opened {
        Ok((model, upstream)) => Some((model, phone, upstream, early.freeze())),
        Err(_) => {
            // The phone sees what it would from a refused or unreachable server: a reset.
            let _ = phone.set_zero_linger();
            None
        }
    }
}

/// What a phone may write before its SYN crosses, read by the proxy meanwhile (about a
/// phone's initial TCP window); past it the proxy stops reading, and a close behind those
/// bytes is seen only once the flow is open.
pub const EARLY_BYTES_MAX: usize = 64 * 1024;

/// Reads what the phone has written into `buffer`: the bytes read, 0 at its end.
async fn read_early(phone: &TcpStream, buffer: &mut BytesMut) -> std::io::Result<usize> {
    loop {
        phone.readable().await?;
        buffer.reserve(SEGMENT_BYTES);
        match phone.try_read_buf(buffer) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

/// Opens flow `id` (seeded with `seed`): its model draws the NAT timeout and the SYN's way
/// up; at the SYN's arrival `connect` opens the upstream connection (bounded in time). On
/// failure the flow's entry is gone and the error says why.
pub(crate) async fn open(
    shared: &Shared,
    id: u64,
    seed: u64,
    connect: impl Future<Output = std::io::Result<TcpStream>>,
) -> std::io::Result<(FlowModel, TcpStream)> {
    let at = shared.now();
    let (mut model, syn_at) = shared.decide(id, |link, entry| {
        let mut model = FlowModel::with_drawn_nat_timeout(seed, link.profile);
        entry.view.nat_timeout_ms = model.nat_timeout().as_millis() as u64;
        let syn_at = model.connect(link, at);
        (model, syn_at)
    });
    shared.log(json!({
        "t_ms": ms(at), "flow": id, "event": "opened", "seed": seed,
        "nat_timeout_ms": ms(model.nat_timeout()), "syn_at_ms": syn_at.map(ms),
    }));
    let upstream = match syn_at {
        Some(syn_at) => {
            tokio::time::sleep_until(shared.instant_of(syn_at)).await;
            match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, connect).await {
                Ok(connected) => connected,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "upstream connect timed out",
                )),
            }
        }
        None => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the carrier lost every SYN",
        )),
    };
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(error) => {
            shared.log(json!({"t_ms": ms(shared.now()), "flow": id, "event": "upstream_failed", "why": error.to_string()}));
            shared.remove_flow(id);
            return Err(error);
        }
    };
    model.opened(shared.now());
    shared.decide(id, |_, entry| {
        entry.view.server_open = true;
        entry.last_refresh = model.last_refresh();
    });
    Ok((model, upstream))
}

/// Relays an opened flow until both sides are gone, `early` first: bytes the phone wrote
/// before the flow opened (see [`run`]), sent up now, as its kernel would have sent them once
/// connected.
pub(crate) fn relay<P: Endpoint>(
    shared: Arc<Shared>,
    id: u64,
    model: FlowModel,
    phone: P,
    upstream: TcpStream,
    poke: Arc<Notify>,
    early: Bytes,
) -> impl Future<Output = ()> + Send + 'static {
    // Made before the future, which then holds only what the relay needs: an async fn keeps
    // its arguments for its whole life (here a second copy of the model, 192 bytes), and
    // every idle flow's task is that future.
    let mut relay = Relay {
        shared,
        id,
        model,
        up: InFlight::default(),
        down: InFlight::default(),
    };
    let mut phone = Some(phone.split());
    if !early.is_empty() {
        let at = relay.shared.now();
        relay.check_nat(at);
        relay.phone_sent::<P>(at, early, &mut phone);
    }
    let mut server = Some(upstream.into_split());
    async move {
        relay.run::<P>(&mut phone, &mut server, &poke).await;
        relay.shared.remove_flow(relay.id);
    }
}

struct Relay {
    shared: Arc<Shared>,
    id: u64,
    model: FlowModel,
    up: InFlight,
    down: InFlight,
}

impl Relay {
    /// The relay's loop. Its sides are borrowed, and no moment is held across an await but
    /// where it is used after it: the future is the task of every idle flow (see
    /// `tests::a_flows_task_keeps_neither_its_opening_nor_a_second_copy_of_its_arguments`).
    async fn run<P: Endpoint>(
        &mut self,
        phone: &mut Side<P>,
        server: &mut ServerSide,
        poke: &Notify,
    ) {
        let mut phone_buf = BytesMut::new();
        let mut server_buf = BytesMut::new();
        loop {
            self.model.set_open(phone.is_some(), server.is_some());
            self.publish(phone.is_some(), server.is_some());
            if phone.is_none() && server.is_none() {
                return;
            }
            // A carrier fault (reset, age or byte limit) may end the flow on both sides.
            let cut = {
                let at = self.shared.now();
                self.shared
                    .decide(self.id, |link, _| self.model.cut(link, at))
            };
            if let Some(cut) = cut {
                self.up = InFlight::default();
                self.down = InFlight::default();
                match cut {
                    Cut::Reset => {
                        self.log_end("both", "carrier_reset");
                        reset::<P>(phone.take());
                        reset::<TcpStream>(server.take());
                    }
                    Cut::Close => {
                        self.log_end("both", "carrier_closed");
                        *phone = None;
                        *server = None;
                    }
                }
                continue;
            }
            let wake = self.next_wake();
            // Below the timer's 1 ms resolution, due is due: deliver without sleeping, or a
            // zero-delay profile would add a millisecond per chunk.
            let due = {
                let now = self.shared.now();
                wake.is_some_and(|wake| wake <= now + self.slack())
                    .then_some(now)
            };
            if let Some(now) = due {
                self.on_timer::<P>(now, self.slack(), phone, server).await;
                continue;
            }
            let read_phone = phone.as_mut().filter(|_| self.up.has_room());
            let read_server = server.as_mut().filter(|_| self.down.has_room());
            tokio::select! {
                biased;
                () = poke.notified() => {
                    let command = self.shared.decide(self.id, |_, entry| {
                        let command = entry.command.take();
                        if command == Some(FlowCommand::Handover) {
                            entry.view.handed_over = true;
                        }
                        command
                    });
                    match command {
                        Some(FlowCommand::Reset) => {
                            self.log_end("both", "reset_by_control");
                            reset::<P>(phone.take());
                            reset::<TcpStream>(server.take());
                        }
                        Some(FlowCommand::Handover) => {
                            // The phone's OS drops its sockets on a network change; the
                            // server's side learns nothing (half-open).
                            self.log_end("phone", "handover");
                            reset::<P>(phone.take());
                        }
                        None => {}
                    }
                }
                read = read_some(read_phone.map(|(read, _)| read), &mut phone_buf) => {
                    let at = self.shared.now();
                    self.check_nat(at);
                    match read {
                        Ok(n) if n > 0 => {
                            let bytes = take_read(&mut phone_buf);
                            self.phone_sent::<P>(at, bytes, phone);
                        }
                        _ => {
                            *phone = None;
                            self.phone_closed(at);
                        }
                    }
                }
                read = read_some(read_server.map(|(read, _)| read), &mut server_buf) => {
                    let at = self.shared.now();
                    self.check_nat(at);
                    match read {
                        Ok(n) if n > 0 => {
                            let bytes = take_read(&mut server_buf);
                            self.server_sent(at, bytes, server);
                        }
                        _ => {
                            *server = None;
                            self.server_closed(at);
                        }
                    }
                }
                () = sleep_until(wake.map(|at| self.shared.instant_of(at))) => {
                    let at = self.shared.now();
                    self.on_timer::<P>(at, self.slack(), phone, server).await;
                }
            }
        }
    }

    /// Below this a delivery is due now (the timer's resolution, in model time).
    fn slack(&self) -> Duration {
        TIMER_RESOLUTION.mul_f64(self.shared.time_scale)
    }

    fn next_wake(&self) -> Option<Duration> {
        let timer = self
            .shared
            .decide(self.id, |link, _| self.model.next_timer(link));
        [
            self.up.chunks.front().map(|(at, _)| *at),
            self.down.chunks.front().map(|(at, _)| *at),
            timer,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn check_nat(&mut self, at: Duration) {
        if self.model.expire_nat(at) {
            self.shared
                .decide(self.id, |_, entry| entry.view.decisions.nat_expired += 1);
            self.shared
                .log(json!({"t_ms": ms(at), "flow": self.id, "event": "nat_expired"}));
        }
    }

    fn phone_sent<P: Endpoint>(&mut self, at: Duration, bytes: Bytes, phone: &mut Side<P>) {
        let len = bytes.len();
        let model = &mut self.model;
        let decision = self.shared.decide(self.id, |link, entry| {
            let decision = model.phone_sent(link, at, len);
            let counts = &mut entry.view.decisions;
            match decision {
                PhoneSend::Deliver {
                    retransmissions, ..
                } => {
                    counts.delivered_up += 1;
                    counts.retransmissions += u64::from(retransmissions);
                    entry.view.bytes_up += len as u64;
                }
                PhoneSend::Dropped => counts.dropped += 1,
                PhoneSend::Reset => counts.resets += 1,
                PhoneSend::Broken => counts.broken += 1,
            }
            decision
        });
        let (name, deliver_at, retransmissions) = match decision {
            PhoneSend::Deliver {
                at,
                retransmissions,
            } => {
                self.up.push(at, bytes);
                ("deliver", Some(at), retransmissions)
            }
            PhoneSend::Dropped => ("drop", None, 0),
            PhoneSend::Reset => {
                reset::<P>(phone.take());
                ("reset", None, 0)
            }
            PhoneSend::Broken => {
                reset::<P>(phone.take());
                ("break", None, 0)
            }
        };
        self.shared.log(json!({
            "t_ms": ms(at), "flow": self.id, "event": "phone_sent", "bytes": len,
            "decision": name, "deliver_at_ms": deliver_at.map(ms), "retransmissions": retransmissions,
        }));
    }

    fn server_sent(&mut self, at: Duration, bytes: Bytes, server: &mut ServerSide) {
        let len = bytes.len();
        let model = &mut self.model;
        let decision = self.shared.decide(self.id, |link, entry| {
            let decision = model.server_sent(link, at, len);
            let counts = &mut entry.view.decisions;
            match decision {
                ServerSend::Deliver {
                    retransmissions, ..
                } => {
                    counts.delivered_down += 1;
                    counts.retransmissions += u64::from(retransmissions);
                    entry.view.bytes_down += len as u64;
                }
                ServerSend::Lost => counts.lost += 1,
                ServerSend::Broken => counts.broken += 1,
            }
            decision
        });
        let (name, deliver_at, retransmissions) = match decision {
            ServerSend::Deliver {
                at,
                retransmissions,
            } => {
                self.down.push(at, bytes);
                ("deliver", Some(at), retransmissions)
            }
            ServerSend::Lost => ("lost", None, 0),
            ServerSend::Broken => {
                reset::<TcpStream>(server.take());
                ("break", None, 0)
            }
        };
        self.shared.log(json!({
            "t_ms": ms(at), "flow": self.id, "event": "server_sent", "bytes": len,
            "decision": name, "deliver_at_ms": deliver_at.map(ms), "retransmissions": retransmissions,
        }));
    }

    fn phone_closed(&mut self, at: Duration) {
        let model = &mut self.model;
        let closed = self
            .shared
            .decide(self.id, |link, _| model.phone_closed(link, at));
        if let Closed::Forward { at } = closed {
            self.up.push(at, Bytes::new());
        }
        self.log_closed(at, "phone_closed", closed);
    }

    fn server_closed(&mut self, at: Duration) {
        let model = &mut self.model;
        let closed = self
            .shared
            .decide(self.id, |link, _| model.server_closed(link, at));
        if let Closed::Forward { at } = closed {
            self.down.push(at, Bytes::new());
        }
        self.log_closed(at, "server_closed", closed);
    }

    fn log_closed(&self, at: Duration, event: &str, closed: Closed) {
        let (decision, deliver_at) = match closed {
            Closed::Forward { at } => ("forward_fin", Some(at)),
            Closed::Unseen => ("unseen", None),
            Closed::Lost => ("lost", None),
        };
        self.shared.log(json!({
            "t_ms": ms(at), "flow": self.id, "event": event, "decision": decision,
            "deliver_at_ms": deliver_at.map(ms),
        }));
    }

    fn log_end(&self, side: &str, why: &str) {
        self.shared.log(json!({
            "t_ms": ms(self.shared.now()), "flow": self.id, "event": "ended", "side": side, "why": why,
        }));
    }

    /// The model's timers and the deliveries due by `at` (plus `slack`).
    async fn on_timer<P: Endpoint>(
        &mut self,
        at: Duration,
        slack: Duration,
        phone: &mut Side<P>,
        server: &mut ServerSide,
    ) {
        self.check_nat(at);
        if server.is_some() && self.model.server_gives_up(at) {
            // Its kernel gave up retransmitting: the server sees an error.
            self.log_end("server", "kernel_gave_up");
            reset::<TcpStream>(server.take());
        }
        self.deliver_due::<P>(at + slack, phone, server).await;
    }

    async fn deliver_due<P: Endpoint>(
        &mut self,
        at: Duration,
        phone: &mut Side<P>,
        server: &mut ServerSide,
    ) {
        while let Some(bytes) = self.up.pop_due(at) {
            if let Some((_, write)) = server.as_mut()
                && deliver(write, &bytes).await.is_err()
            {
                *server = None;
            }
        }
        while let Some(bytes) = self.down.pop_due(at) {
            if let Some((_, write)) = phone.as_mut()
                && deliver(write, &bytes).await.is_err()
            {
                *phone = None;
            }
        }
    }

    /// Copies the model's state into the flow's view for the control API.
    fn publish(&self, phone_open: bool, server_open: bool) {
        let expired = self.model.nat_expired();
        let last_refresh = self.model.last_refresh();
        self.shared.decide(self.id, |_, entry| {
            entry.view.nat = if expired { "expired" } else { "alive" };
            entry.view.phone_open = phone_open;
            entry.view.server_open = server_open;
            entry.last_refresh = last_refresh;
        });
    }
}

fn ms(at: Duration) -> u64 {
    at.as_millis() as u64
}

/// Closes a side abruptly, as a NAT's or kernel's reset looks to its peer.
fn reset<E: Endpoint>(side: Side<E>) {
    if let Some((read, write)) = side {
        E::reset(read, write);
    }
}

/// Reads one segment's worth into `buffer`, or waits forever when the side is gone or paused.
/// The buffer is made once the side is readable, and the caller takes it ([`take_read`]): an
/// idle flow holds none (about 1.5 KB a side). Polled by hand, so the future is a few
/// pointers where awaiting the side's readiness and read kept about 200 bytes per side in
/// every idle flow's task.
async fn read_some(
    half: Option<&mut impl ReadSide>,
    buffer: &mut BytesMut,
) -> std::io::Result<usize> {
    let Some(half) = half else {
        return std::future::pending().await;
    };
    std::future::poll_fn(|cx| {
        if buffer.is_empty() {
            ready!(half.poll_readable(cx))?;
            buffer.resize(SEGMENT_BYTES, 0);
        }
        let mut read = ReadBuf::new(&mut buffer[..]);
        let polled = Pin::new(&mut *half).poll_read(cx, &mut read);
        let n = read.filled().len();
        match polled {
            Poll::Ready(Ok(())) if n > 0 => {
                buffer.truncate(n);
                Poll::Ready(Ok(n))
            }
            // The end, or an error: the side is done with its buffer.
            Poll::Ready(done) => {
                *buffer = BytesMut::new();
                Poll::Ready(done.map(|()| 0))
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// What `read_some` read. No buffer is left behind for the next read (an idle flow holds
/// none); a read that filled at least half the buffer takes it whole, a shorter one is copied
/// out at its own size. So the chunks a direction queues hold at most about twice the bytes
/// its bound counts (`IN_FLIGHT_BYTES_MAX`), where taking every buffer whole would let
/// one-byte reads hold a segment's allocation each.
fn take_read(buffer: &mut BytesMut) -> Bytes {
    let read = std::mem::take(buffer);
    if read.len() * 2 >= read.capacity() {
        read.freeze()
    } else {
        Bytes::copy_from_slice(&read)
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

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocation a queued chunk keeps alive (the chunk must be its only holder).
    fn held(bytes: Bytes) -> usize {
        bytes.try_into_mut().expect("the only holder").capacity()
    }

    #[test]
    fn a_read_leaves_no_buffer_and_a_short_one_is_queued_at_its_own_size() {
        let mut buffer = BytesMut::with_capacity(SEGMENT_BYTES);
        buffer.extend_from_slice(b"ping");
        let short = take_read(&mut buffer);
        assert_eq!(buffer.capacity(), 0, "the buffer went with the read");
        assert_eq!(&short[..], b"ping");
        assert_eq!(
            held(short),
            4,
            "a short read holds its own bytes, not a segment's"
        );

        let mut buffer = BytesMut::with_capacity(SEGMENT_BYTES);
        buffer.extend_from_slice(&[7; SEGMENT_BYTES / 2]);
        let half = take_read(&mut buffer);
        assert_eq!(buffer.capacity(), 0);
        assert_eq!(half.len(), SEGMENT_BYTES / 2);
        assert_eq!(
            held(half),
            SEGMENT_BYTES,
            "half a segment or more goes on uncopied"
        );
    }

    /// An open flow's task is its relay's future, for the flow's whole life: every idle
    /// connection through the proxy (or `imlab load --carrier`'s clients) pays it.
    #[tokio::test]
    async fn a_flows_task_keeps_neither_its_opening_nor_a_second_copy_of_its_arguments() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let phone = TcpStream::connect(addr).await.unwrap();
        let upstream = TcpStream::connect(addr).await.unwrap();
        let profile = imlab_carrier::preset("us-lte").unwrap();
        let proxy = crate::Proxy::new(crate::ProxyConfig {
            upstream: addr,
            profile: profile.clone(),
            seed: 1,
            time_scale: 1.0,
            flows_max: 4,
            trace: None,
        })
        .unwrap();
        let shared = proxy.shared.clone();
        let poke = Arc::new(Notify::new());
        let model = FlowModel::with_drawn_nat_timeout(1, &profile);
        let relaying = relay(
            shared.clone(),
            1,
            model,
            phone,
            upstream,
            poke.clone(),
            Bytes::new(),
        );
        // 808 bytes on the build of this test: the relay (288), its sides, its loop's state
        // and the futures it selects over. Before, 1,592 in a release build: the relay's
        // arguments kept beside it; then 920 while its loop held copies of its sides and three
        // moments across its awaits. A task's future fits tokio's 1,024-byte task cell (with
        // its header and trailer) up to 912 bytes; the next cell is 1,152 (jemalloc's class
        // 1,280).
        let size = std::mem::size_of_val(&relaying);
        assert!(size <= 912, "the relay's future is {size} bytes");
        drop(relaying);

        let phone = TcpStream::connect(addr).await.unwrap();
        let task = run(shared, 2, phone, poke);
        // 896 bytes: the relay's future and the task's own few. Before, 2,768 in a release
        // build: the opening's state (about 1,150 bytes) beside the relay, and what it opened
        // (288); then 1,008.
        let size = std::mem::size_of_val(&task);
        assert!(size <= 912, "a proxied flow's task is {size} bytes");
    }
}
