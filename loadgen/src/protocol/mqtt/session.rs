//! One MQTT device's life: connect, CONNECT/CONNACK, SUBSCRIBE/SUBACK, then publish what the
//! schedule hands it within the inflight window, acknowledge what arrives, PINGREQ on the
//! heartbeat strategy's schedule, and reconnect with backoff when anything times out.
//!
//! Bounds: the inflight window (`--inflight`, lowered to an MQTT 5 broker's receive maximum)
//! holds the unacknowledged publishes; the queue in front of it holds `OUTGOING_LEN_MAX`
//! sends and refuses more; QoS 2 receipts awaiting PUBREL are keyed by packet id (at most
//! 65,535); a packet from the broker is bounded by `max_packet_bytes` before its bytes are
//! read. An unanswered PUBACK, PUBCOMP, CONNACK, SUBACK or PINGRESP ends the connection after
//! `--ack-timeout`, the unacknowledged sends counted as failed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use imlab_core::client::{Backoff, ParkedRng};
use imlab_core::heartbeat::{HeartbeatEvent, HeartbeatStrategy, parse_strategy};
use imlab_core::net::{Connector, Stream};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::header::{Header, run_hash};
use super::packet::{Connect, Inbound, Outbound, Qos, Version};
use super::{DeviceShared, Mqtt, Signal};
use crate::protocol::{DeviceEvents, MsgId, Outgoing, Repeat, To};
use crate::transport::{AnyStream, DynConnector};

/// Smallest bound on a packet from the broker; larger bodies raise it.
const MAX_PACKET_BYTES_MIN: usize = 64 * 1024;

/// One unacknowledged publish.
struct InFlight {
    id: MsgId,
    topic: String,
    payload: Bytes,
    /// When it (or its PUBREL) was last written: its ack is due `--ack-timeout` later.
    sent_at: Instant,
    /// QoS 2: PUBREC came, PUBREL sent, PUBCOMP awaited.
    released: bool,
}

/// Publishes in flight, by packet id: a map made at a device's first publish and dropped with
/// its last entry. An emptied `BTreeMap` keeps its node (about 1 KB with these entries) in
/// every device that ever sent.
#[derive(Default)]
struct Flights(Option<BTreeMap<u16, InFlight>>);

impl Flights {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, BTreeMap::len)
    }

    fn iter(&self) -> impl Iterator<Item = (&u16, &InFlight)> {
        self.0.iter().flat_map(BTreeMap::iter)
    }

    fn values(&self) -> impl Iterator<Item = &InFlight> {
        self.0.iter().flat_map(BTreeMap::values)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&u16, &mut InFlight)> {
        self.0.iter_mut().flat_map(BTreeMap::iter_mut)
    }

    fn contains_key(&self, pkid: &u16) -> bool {
        self.0.as_ref().is_some_and(|map| map.contains_key(pkid))
    }

    fn get_mut(&mut self, pkid: &u16) -> Option<&mut InFlight> {
        self.0.as_mut()?.get_mut(pkid)
    }

    fn insert(&mut self, pkid: u16, flight: InFlight) {
        self.0.get_or_insert_default().insert(pkid, flight);
    }

    /// Takes publish `pkid` off the map; the map goes with its last entry.
    fn remove(&mut self, pkid: &u16) -> Option<InFlight> {
        let map = self.0.as_mut()?;
        let flight = map.remove(pkid);
        if map.is_empty() {
            self.0 = None;
        }
        flight
    }

    /// True while the map is allocated.
    #[cfg(test)]
    fn is_made(&self) -> bool {
        self.0.is_some()
    }
}

/// How one connection ended.
enum End {
    /// Shut down by the run.
    Shutdown,
    /// Failed before the device was logged in and subscribed: retry after backoff.
    LoginFailed { cause: &'static str, detail: String },
    /// The broker refused for good (credentials, protocol): stop the device.
    Refused { cause: &'static str, detail: String },
    /// A logged-in connection ended.
    Lost(&'static str),
    /// Its app went inactive: the connection closed politely, the device waits offline.
    Offline,
}

/// A device's state across its connections: everything its task keeps but the connection
/// (`-Zprint-type-sizes`: the task's future is this, a [`Live`] and the wait of
/// [`Session::drive`]).
pub(super) struct Session {
    mqtt: Arc<Mqtt>,
    connector: DynConnector,
    events: DeviceEvents,
    shared: Arc<DeviceShared>,
    heartbeat: Box<dyn HeartbeatStrategy>,
    started: Instant,
    inflight: Flights,
    /// QoS 2 publishes received whose PUBREL has not come, by packet id, with the message each
    /// carried (`None`: not one of this run's): a resend of one is no new message. Made at
    /// the first QoS 2 publish: a session of QoS 0 or 1 holds 8 bytes for it, not 24.
    #[allow(
        clippy::box_collection,
        reason = "the box keeps the session's future in a 512-byte box; the map is made rarely"
    )]
    awaiting_release: Option<Box<BTreeMap<u16, Option<MsgId>>>>,
    /// Draws the backoff's jitter.
    rng: ParkedRng,
    client: u32,
    /// CONNACKs so far. From the second on, a QoS 1 repeat may be the broker's redelivery
    /// after the reconnect, which starts at CONNACK, before the SUBACK that tells the
    /// ledger the device is back.
    connacks: u32,
    /// Groups already confirmed to the run: each is confirmed once, at its first SUBACK.
    confirmed: u32,
    backoff: Backoff,
    next_pkid: u16,
}

/// One connection's state.
struct Live {
    stream: Box<dyn Stream>,
    read: BytesMut,
    write: BytesMut,
    /// Until logged in, when the login times out; then when the next PINGREQ is due.
    due_at: Instant,
    /// A PINGREQ awaiting its PINGRESP: when it was sent, and the silence before it in
    /// nanoseconds (exact, 8 bytes where a `Duration` takes 16).
    ping: Option<(Instant, u64)>,
    /// Pending SUBSCRIBEs: packet id, topics subscribed and whether it is the login's. A
    /// list (a few wait at most: the login's and those of groups joined since) given back once
    /// the last is answered: an emptied `BTreeMap` kept its 128-byte node in every logged-in
    /// device.
    subscribing: Vec<(u16, u32, bool)>,
    /// Topics subscribed (or being subscribed) on this connection: the inbox's, then the
    /// groups' in the order joined.
    topics_sent: u32,
    /// Most publishes in flight on this connection.
    window: u16,
    /// CONNACK received.
    acknowledged: bool,
    /// The login's SUBACK received: logged in.
    logged_in: bool,
}

impl Live {
    /// The pending SUBSCRIBE `pkid` answered: its topics and whether it was the login's (None
    /// for an id not pending). The list's allocation goes with its last entry.
    fn subscribed(&mut self, pkid: u16) -> Option<(u32, bool)> {
        let at = self.subscribing.iter().position(|&(id, ..)| id == pkid)?;
        let (_, n_topics, login) = self.subscribing.swap_remove(at);
        if self.subscribing.is_empty() {
            self.subscribing = Vec::new();
        }
        Some((n_topics, login))
    }
}

/// What ended a connection's wait.
enum Woke {
    Read(std::io::Result<usize>),
    Signal(Signal),
    Timer,
}

impl Session {
    pub(super) fn new(
        mqtt: Arc<Mqtt>,
        client: u32,
        events: DeviceEvents,
        shared: Arc<DeviceShared>,
        connector: DynConnector,
    ) -> Session {
        let heartbeat = parse_strategy(mqtt.heartbeat_of(client))
            .expect("the heartbeat was validated before the run");
        Session {
            rng: ParkedRng::new(mqtt.seed ^ u64::from(client)),
            mqtt,
            connector,
            client,
            events,
            shared,
            heartbeat,
            started: Instant::now(),
            inflight: Flights::default(),
            awaiting_release: None,
            connacks: 0,
            confirmed: 0,
            backoff: Backoff::new(),
            next_pkid: 1,
        }
    }

    fn version(&self) -> Version {
        self.mqtt.options.version
    }

    fn qos(&self) -> Qos {
        self.mqtt.options.qos
    }

    fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// The largest packet taken from the broker: its length is checked before its bytes are
    /// read.
    fn max_packet_bytes(&self) -> usize {
        MAX_PACKET_BYTES_MIN.max(self.mqtt.body_bytes_max() + 1024)
    }

    /// Connects, reconnects with backoff, until the run shuts the device down.
    ///
    /// A plain fn returning an async block, not an `async fn`: an async fn keeps its argument
    /// twice in its future, in every client's task.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(super) fn run(mut self) -> impl Future<Output = ()> {
        async move {
            loop {
                if self.shared.stopped() {
                    return;
                }
                let shared = &self.shared;
                if !std::future::poll_fn(|cx| shared.poll_online(cx)).await {
                    return;
                }
                self.events.connecting();
                // Matched as it comes, not named: a named end would be kept beside the
                // backoff's timer.
                let waiting_ping = match self.connection().await {
                    End::Shutdown => return,
                    End::Refused { cause, detail } => {
                        self.events.stopped(cause, detail);
                        return;
                    }
                    End::LoginFailed { cause, detail } => {
                        self.events.login_failed(cause, detail);
                        false
                    }
                    End::Lost(cause) => {
                        self.events.disconnected(cause);
                        cause == "heartbeat_timeout"
                    }
                    End::Offline => {
                        // `Requested`, as imlab's client names a connection its app closed;
                        // before the login, an attempt that did not log in.
                        self.events.connection_ended(
                            "Requested",
                            "app_inactive",
                            "the app went inactive before the login".into(),
                        );
                        // Back online at once when the app is: no backoff.
                        continue;
                    }
                };
                let now = self.since_start();
                if !waiting_ping {
                    self.heartbeat.on_event(&HeartbeatEvent::Disconnected, now);
                }
                let config = &self.mqtt.backoff;
                let backoff = &mut self.backoff;
                let delay = self.rng.with(|rng| backoff.next_delay(config, rng));
                let stopped = {
                    let shared = &self.shared;
                    let mut sleep = std::pin::pin!(tokio::time::sleep(delay));
                    std::future::poll_fn(move |cx| {
                        match shared.poll_signal(cx, false, false) {
                            Poll::Ready(Signal::Stop) => return Poll::Ready(true),
                            // The app went inactive: the wait for it replaces the backoff.
                            Poll::Ready(_) => return Poll::Ready(false),
                            Poll::Pending => {}
                        }
                        sleep.as_mut().poll(cx).map(|()| false)
                    })
                    .await
                };
                if stopped {
                    return;
                }
            }
        }
    }

    /// One connection, from TCP connect to its end.
    ///
    /// A plain fn returning an async block, as [`Session::run`].
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn connection(&mut self) -> impl Future<Output = End> + Send + '_ {
        async move {
            // Boxed: the connect's timer is needed only until the stream is there, not beside
            // the connection's state for its whole life.
            let timeout = self.mqtt.options.ack_timeout;
            let stream = match Box::pin(connect(&self.shared, &self.connector, timeout)).await {
                Ok(stream) => stream,
                Err(end) => return end,
            };
            let now = Instant::now();
            let mut live = Live {
                // Behind one pointer: the session's future, 512 bytes, has no room for a TCP stream
                // inline.
                stream: crate::transport::into_boxed(stream),
                read: BytesMut::new(),
                write: BytesMut::new(),
                due_at: now + self.mqtt.options.ack_timeout,
                ping: None,
                subscribing: Vec::new(),
                topics_sent: 0,
                window: self.mqtt.options.inflight,
                acknowledged: false,
                logged_in: false,
            };
            self.write_connect(&mut live);
            // Matched as it comes: an end kept in a name would take a slot beside the goodbye's
            // await.
            let offline = match self.drive(&mut live).await {
                End::Shutdown if live.acknowledged => false,
                End::Offline if live.acknowledged => true,
                end => return end,
            };
            // Polite close, bounded (and boxed: its timer is not laid out in the task for the
            // connection's life): the run is ending, or the app went inactive.
            live.write.clear();
            self.version().write(Outbound::Disconnect, &mut live.write);
            let _ = Box::pin(tokio::time::timeout(
                Duration::from_secs(1),
                flush(&mut live),
            ))
            .await;
            if offline { End::Offline } else { End::Shutdown }
        }
    }

    /// Writes the CONNECT into the connection's buffer.
    fn write_connect(&self, live: &mut Live) {
        let options = &self.mqtt.options;
        let connect = Connect {
            client_id: format!(
                "{}{}-{}",
                options.client_id_prefix, self.mqtt.tag, self.client
            ),
            keep_alive_s: self
                .heartbeat
                .interval_max()
                .as_secs()
                .clamp(1, u64::from(u16::MAX)) as u16,
            clean_start: options.clean_start,
            session_expiry_s: options.session_expiry.map(|e| e.as_secs() as u32),
            login: options
                .username
                .clone()
                .map(|user| (user, options.password.clone().unwrap_or_default())),
        };
        self.version()
            .write(Outbound::Connect(&connect), &mut live.write);
    }

    /// The connection's loop: read, send within the window, subscribe, keep alive.
    ///
    /// A plain fn returning an async block, as [`Session::run`].
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn drive<'a>(&'a mut self, live: &'a mut Live) -> impl Future<Output = End> + Send + 'a {
        async move {
            loop {
                if !live.write.is_empty() {
                    let timeout = self.mqtt.options.ack_timeout;
                    match tokio::time::timeout(timeout, flush(live)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            return self.lost(live, "connection_lost", error.to_string());
                        }
                        Err(_) => return self.lost(live, "write_timeout", "write stalled".into()),
                    }
                }
                // Reads go into the thread's scratch buffer and only the bytes read are kept
                // (`poll_read_appending`): the read buffer exists only while part of a packet
                // waits, so an idle device holds none (it held a 2 KiB one for good).
                if live.read.is_empty() {
                    live.read = BytesMut::new();
                }
                let may_send = live.logged_in && self.inflight.len() < usize::from(live.window);
                let deadline = self.deadline(live);
                // What a biased `tokio::select!` over the shutdown, the read, the sends, a group
                // joined and the timer did, as one poll: its state is the timer and three
                // pointers. The run's signals share one waker in the device's allocation.
                let woke = {
                    let shared = &self.shared;
                    let logged_in = live.logged_in;
                    let (stream, read) = (&mut live.stream, &mut live.read);
                    let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline));
                    std::future::poll_fn(move |cx| {
                        if shared.stopped() {
                            return Poll::Ready(Woke::Signal(Signal::Stop));
                        }
                        if let Poll::Ready(read) =
                            imlab_core::framed::poll_read_appending(stream, read, cx)
                        {
                            return Poll::Ready(Woke::Read(read));
                        }
                        if let Poll::Ready(signal) = shared.poll_signal(cx, may_send, logged_in) {
                            return Poll::Ready(Woke::Signal(signal));
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Woke::Timer);
                        }
                        Poll::Pending
                    })
                    .await
                };
                match woke {
                    Woke::Signal(Signal::Stop) => return End::Shutdown,
                    Woke::Signal(Signal::Offline) => return End::Offline,
                    Woke::Read(Ok(0)) => {
                        return self.lost(live, "connection_lost", "closed by the broker".into());
                    }
                    Woke::Read(Err(error)) => {
                        return self.lost(live, "connection_lost", error.to_string());
                    }
                    Woke::Read(Ok(_)) => {
                        if let Some(end) = self.on_bytes(live) {
                            return end;
                        }
                    }
                    Woke::Signal(Signal::Send(message)) => {
                        self.publish(live, message);
                        // Take what else is due at once, up to the window, into one write.
                        while self.inflight.len() < usize::from(live.window) {
                            let Some(message) = self.shared.try_outgoing() else {
                                break;
                            };
                            self.publish(live, message);
                        }
                    }
                    Woke::Signal(Signal::TopicsChanged) => self.subscribe_new(live, false),
                    Woke::Timer => {
                        if let Some(end) = self.on_timer(live) {
                            return end;
                        }
                    }
                }
            }
        }
    }

    /// The next moment something is due: login, heartbeat, its answer, the oldest ack.
    fn deadline(&self, live: &Live) -> Instant {
        let timeout = self.mqtt.options.ack_timeout;
        if !live.logged_in {
            return live.due_at;
        }
        let mut at = match live.ping {
            Some((sent_at, _)) => sent_at + timeout,
            None => live.due_at,
        };
        if let Some(oldest) = self.inflight.values().map(|f| f.sent_at).min() {
            at = at.min(oldest + timeout);
        }
        at
    }

    fn on_timer(&mut self, live: &mut Live) -> Option<End> {
        let now = Instant::now();
        let timeout = self.mqtt.options.ack_timeout;
        if !live.logged_in {
            if now < live.due_at {
                return None;
            }
            let (cause, what) = if live.acknowledged {
                ("subscribe_timeout", "SUBACK")
            } else {
                ("connack_timeout", "CONNACK")
            };
            return Some(login_failed(
                cause,
                format!(
                    "no {what} within --ack-timeout {timeout:?}: is the target an MQTT broker?"
                ),
            ));
        }
        let expired: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.sent_at + timeout <= now)
            .map(|(pkid, _)| *pkid)
            .collect();
        if !expired.is_empty() {
            // The ack never came: these sends failed; the link is suspect, so reconnect.
            for pkid in expired {
                let flight = self.inflight.remove(&pkid).expect("listed");
                self.events.send_failed(flight.id);
            }
            return Some(self.lost(live, "ack_timeout", String::new()));
        }
        match live.ping {
            Some((sent_at, interval)) if sent_at + timeout <= now => {
                let since = self.since_start();
                let interval = Duration::from_nanos(interval);
                self.heartbeat
                    .on_event(&HeartbeatEvent::Failed { interval }, since);
                return Some(self.lost(live, "heartbeat_timeout", String::new()));
            }
            None if live.due_at <= now => {
                let since = self.since_start();
                let interval = self.heartbeat.interval(since);
                self.version().write(Outbound::PingReq, &mut live.write);
                live.ping = Some((now, nanos(interval)));
            }
            _ => {}
        }
        None
    }

    /// Ends a connection: a login failure if it never logged in, else a lost connection.
    fn lost(&mut self, live: &Live, cause: &'static str, detail: String) -> End {
        if live.logged_in {
            End::Lost(cause)
        } else if !live.acknowledged && cause == "connection_lost" {
            login_failed(
                "closed_before_connack",
                format!("the target closed the connection before CONNACK ({detail})"),
            )
        } else {
            login_failed(cause, detail)
        }
    }

    /// Handles every whole packet read so far.
    fn on_bytes(&mut self, live: &mut Live) -> Option<End> {
        let max_packet_bytes = self.max_packet_bytes();
        loop {
            let packet = match self.version().read(&mut live.read, max_packet_bytes) {
                Ok(Some(packet)) => packet,
                Ok(None) => return None,
                Err(error) if !live.acknowledged => {
                    return Some(End::Refused {
                        cause: "not_mqtt",
                        detail: format!(
                            "the answer to CONNECT is {error}: is the target an MQTT broker \
                             (an imlab server needs --protocol imlab)?"
                        ),
                    });
                }
                Err(error) => return Some(self.lost(live, "protocol_error", error.to_string())),
            };
            if !live.acknowledged && !matches!(packet, Inbound::ConnAck { .. }) {
                return Some(End::Refused {
                    cause: "not_mqtt",
                    detail: format!("the answer to CONNECT is {packet:?}, not CONNACK"),
                });
            }
            if live.logged_in {
                let since = self.since_start();
                self.heartbeat
                    .on_event(&HeartbeatEvent::Traffic { outbound: false }, since);
            }
            if let Some(end) = self.on_packet(live, packet) {
                return Some(end);
            }
        }
    }

    fn on_packet(&mut self, live: &mut Live, packet: Inbound) -> Option<End> {
        match packet {
            Inbound::ConnAck {
                accepted,
                code,
                receive_maximum,
                session_present,
            } => {
                if live.acknowledged {
                    return Some(self.lost(live, "protocol_error", "a second CONNACK".into()));
                }
                if !accepted {
                    return Some(connack_refused(&code));
                }
                live.acknowledged = true;
                self.connacks += 1;
                if !session_present {
                    // A new session: packet ids of QoS 2 receipts from the old one mean
                    // nothing now, and must not hide new messages that reuse them.
                    self.awaiting_release = None;
                }
                if let Some(most) = receive_maximum {
                    live.window = live.window.min(most.max(1));
                }
                self.resend(live);
                self.subscribe_new(live, true);
            }
            Inbound::SubAck { pkid, granted } => {
                let (n_topics, login) = live.subscribed(pkid)?;
                if !granted {
                    return Some(End::Refused {
                        cause: "subscribe_refused",
                        detail: format!("the broker refused the subscription to {n_topics} topics"),
                    });
                }
                if login {
                    live.logged_in = true;
                    self.backoff.reset();
                    let since = self.since_start();
                    self.heartbeat.on_event(
                        &HeartbeatEvent::Connected {
                            network: "mqtt".into(),
                        },
                        since,
                    );
                    live.due_at = Instant::now() + self.heartbeat.interval(since);
                    if self.mqtt.options.clean_start {
                        // A clean start kept nothing for the device while it was away.
                        self.events.session_reset();
                    }
                    self.events.connected(0, 0);
                }
                // Topics past the inbox are groups, in join order: confirm the new ones.
                let groups_subscribed = live.topics_sent.saturating_sub(1);
                while self.confirmed < groups_subscribed && live.subscribing.is_empty() {
                    self.confirmed += 1;
                    self.events.group_ready();
                }
            }
            Inbound::Publish {
                topic: _,
                qos,
                pkid,
                dup,
                payload,
            } => self.on_publish(live, qos, pkid, dup, &payload),
            Inbound::PubAck { pkid, accepted } => {
                if let Some(flight) = self.inflight.remove(&pkid) {
                    self.answered(flight.id, accepted);
                }
            }
            Inbound::PubRec { pkid, accepted } => {
                if !accepted {
                    if let Some(flight) = self.inflight.remove(&pkid) {
                        self.answered(flight.id, false);
                    }
                } else if let Some(flight) = self.inflight.get_mut(&pkid) {
                    flight.released = true;
                    flight.sent_at = Instant::now();
                    self.mqtt
                        .options
                        .version
                        .write(Outbound::PubRel(pkid), &mut live.write);
                }
            }
            Inbound::PubComp(pkid) => {
                if let Some(flight) = self.inflight.remove(&pkid) {
                    self.answered(flight.id, true);
                }
            }
            Inbound::PubRel(pkid) => {
                if let Some(awaiting) = &mut self.awaiting_release {
                    awaiting.remove(&pkid);
                }
                self.version()
                    .write(Outbound::PubComp(pkid), &mut live.write);
            }
            Inbound::PingResp => {
                if let Some((_, interval)) = live.ping.take() {
                    let since = self.since_start();
                    let interval = Duration::from_nanos(interval);
                    self.heartbeat
                        .on_event(&HeartbeatEvent::Succeeded { interval }, since);
                    live.due_at = Instant::now() + self.heartbeat.interval(since);
                }
            }
            Inbound::Disconnect(reason) => {
                return Some(self.lost(live, "broker_disconnect", reason));
            }
            Inbound::Unexpected(what) => {
                return Some(self.lost(live, "protocol_error", format!("the broker sent {what}")));
            }
        }
        None
    }

    /// A PUBACK or PUBCOMP (`accepted`), or a refusal (an MQTT 5 error reason).
    fn answered(&self, id: MsgId, accepted: bool) {
        if accepted {
            self.events.acked(id);
        } else {
            self.events.send_failed(id);
        }
    }

    fn on_publish(&mut self, live: &mut Live, qos: Qos, pkid: u16, dup: bool, payload: &[u8]) {
        let repeat = match qos {
            Qos::AtMostOnce => None,
            Qos::AtLeastOnce => {
                self.version()
                    .write(Outbound::PubAck(pkid), &mut live.write);
                Some(if dup || self.connacks > 1 {
                    Repeat::Redelivery
                } else {
                    Repeat::RedeliveryAfterReconnect
                })
            }
            Qos::ExactlyOnce => {
                self.version()
                    .write(Outbound::PubRec(pkid), &mut live.write);
                let ours = Header::parse(payload)
                    .filter(|header| header.run == run_hash(&self.mqtt.tag))
                    .map(|header| header.id);
                if !self.received_once(pkid, ours) {
                    return;
                }
                None
            }
        };
        let Some(header) = Header::parse(payload) else {
            return;
        };
        if header.run != run_hash(&self.mqtt.tag) {
            return;
        }
        self.events
            .delivered_as(header.id, repeat.unwrap_or(Repeat::Duplicate));
    }

    /// A QoS 2 publish of message `id` (`None`: not this run's) came as packet `pkid`: true if
    /// it is to be delivered, false if it is a resend of one already delivered.
    ///
    /// Before PUBREL a publish with the same packet id is the same message again (MQTT 3.1.1
    /// 4.3.3, 5.0 4.3.3). Two ways a broker breaks that are seen in the payload's identity
    /// and counted as its protocol violations, not hidden: a new message under a packet id
    /// still awaiting its PUBREL (delivered: a strict client would drop it, and the run would
    /// report a loss the broker's log does not explain), and a message resent under a new
    /// packet id (delivered again: an app sees it twice, and the ledger counts the
    /// duplicate).
    fn received_once(&mut self, pkid: u16, id: Option<MsgId>) -> bool {
        let awaiting = self.awaiting_release.get_or_insert_default();
        if let Some(&held) = awaiting.get(&pkid) {
            if held == id || id.is_none() || held.is_none() {
                return false;
            }
            self.events
                .protocol_violation("packet_id_reused_before_pubrel");
        }
        if let Some(id) = id {
            let stale: Vec<u16> = awaiting
                .iter()
                .filter(|&(&other, &held)| other != pkid && held == Some(id))
                .map(|(&other, _)| other)
                .collect();
            if !stale.is_empty() {
                self.events
                    .protocol_violation("qos2_resent_under_new_packet_id");
            }
            for other in stale {
                awaiting.remove(&other);
            }
        }
        awaiting.insert(pkid, id);
        true
    }

    /// Publishes one planned send (QoS 0: it is "acked" once written, and may be lost).
    fn publish(&mut self, live: &mut Live, message: Outgoing) {
        let topic = match message.to {
            To::Peer(peer) => self.mqtt.inbox_topic(peer),
            To::Group(group) => self.mqtt.group_topic(group),
        };
        let payload = Header {
            run: run_hash(&self.mqtt.tag),
            id: message.id,
            planned_us: message.planned_us,
        }
        .payload(self.mqtt.body_bytes_of(self.client));
        let qos = self.qos();
        let pkid = if qos == Qos::AtMostOnce {
            0
        } else {
            self.allocate_pkid(live)
        };
        self.version().write(
            Outbound::Publish {
                topic: &topic,
                qos,
                pkid,
                dup: false,
                payload: payload.clone(),
            },
            &mut live.write,
        );
        let since = self.since_start();
        self.heartbeat
            .on_event(&HeartbeatEvent::Traffic { outbound: true }, since);
        if live.ping.is_none() && self.heartbeat.restart_on_traffic() {
            live.due_at = Instant::now() + self.heartbeat.interval(since);
        }
        if qos == Qos::AtMostOnce {
            self.events.loss_allowed(message.id);
            self.events.acked(message.id);
            return;
        }
        self.inflight.insert(
            pkid,
            InFlight {
                id: message.id,
                topic,
                payload,
                sent_at: Instant::now(),
                released: false,
            },
        );
    }

    /// After a CONNACK: what was unacknowledged goes again, marked DUP (a QoS 2 send whose
    /// PUBREC came sends its PUBREL again).
    fn resend(&mut self, live: &mut Live) {
        let qos = self.qos();
        let now = Instant::now();
        for (pkid, flight) in self.inflight.iter_mut() {
            flight.sent_at = now;
            if flight.released {
                self.mqtt
                    .options
                    .version
                    .write(Outbound::PubRel(*pkid), &mut live.write);
                continue;
            }
            self.mqtt.options.version.write(
                Outbound::Publish {
                    topic: &flight.topic,
                    qos,
                    pkid: *pkid,
                    dup: true,
                    payload: flight.payload.clone(),
                },
                &mut live.write,
            );
            if qos == Qos::AtLeastOnce {
                self.events.resent(flight.id);
            }
        }
    }

    /// Subscribes to the device's topics this connection has not subscribed yet (all of
    /// them at login: its inbox's first, then its groups' in the order joined).
    fn subscribe_new(&mut self, live: &mut Live, login: bool) {
        let topics: Vec<String> = {
            let groups = self.shared.groups.lock().unwrap_or_else(|p| p.into_inner());
            let inbox = (live.topics_sent == 0)
                .then(|| self.mqtt.inbox_topic(self.mqtt.user_of(self.client)));
            let groups_sent = (live.topics_sent as usize).saturating_sub(1);
            inbox
                .into_iter()
                .chain(groups[groups_sent..].iter().cloned())
                .collect()
        };
        if topics.is_empty() {
            return;
        }
        let pkid = self.allocate_pkid(live);
        self.version().write(
            Outbound::Subscribe {
                pkid,
                topics: &topics,
                qos: self.qos(),
            },
            &mut live.write,
        );
        let n_topics = u32::try_from(topics.len()).expect("a device has few topics");
        live.topics_sent += n_topics;
        live.subscribing.push((pkid, n_topics, login));
    }

    /// A packet id no publish or subscription in flight holds.
    fn allocate_pkid(&mut self, live: &Live) -> u16 {
        // The window is at most 65,535 - 1 and subscriptions few, so a free id exists.
        loop {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&pkid)
                && !live.subscribing.iter().any(|&(id, ..)| id == pkid)
            {
                return pkid;
            }
        }
    }
}

/// The TCP (or TLS) connect, within `timeout` (`--ack-timeout`), unless the run shuts the
/// device down first.
async fn connect(
    shared: &DeviceShared,
    connector: &DynConnector,
    timeout: Duration,
) -> Result<AnyStream, End> {
    let mut connecting = std::pin::pin!(tokio::time::timeout(timeout, connector.connect()));
    let result = std::future::poll_fn(move |cx| {
        if shared.poll_signal(cx, false, false).is_ready() {
            return Poll::Ready(None);
        }
        connecting.as_mut().poll(cx).map(Some)
    })
    .await;
    match result {
        None => Err(End::Shutdown),
        Some(Err(_)) => Err(login_failed(
            "connect_timeout",
            "TCP/TLS connect timed out".into(),
        )),
        Some(Ok(Err(error))) => {
            let cause = if error.kind() == std::io::ErrorKind::ConnectionRefused {
                "connection_refused"
            } else {
                "connect_failed"
            };
            Err(login_failed(cause, error.to_string()))
        }
        Some(Ok(Ok(stream))) => Ok(stream),
    }
}

async fn flush(live: &mut Live) -> std::io::Result<()> {
    live.stream.write_all(&live.write).await?;
    live.stream.flush().await?;
    // Given back, not cleared: an idle device holds no write buffer.
    live.write = BytesMut::new();
    Ok(())
}

/// `duration` in nanoseconds (a heartbeat interval: far below 584 years).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn login_failed(cause: &'static str, detail: String) -> End {
    End::LoginFailed { cause, detail }
}

/// A CONNACK that refuses: credentials and protocol versions stop the device for good; a
/// busy broker is retried.
fn connack_refused(code: &str) -> End {
    let detail = format!("the broker refused the login: CONNACK {code}");
    match code {
        "BadUserNamePassword" | "NotAuthorized" | "BadAuthenticationMethod" | "Banned" => {
            End::Refused {
                cause: "auth_failed",
                detail,
            }
        }
        "RefusedProtocolVersion" | "UnsupportedProtocolVersion" => End::Refused {
            cause: "protocol_version",
            detail,
        },
        "ServiceUnavailable"
        | "ServerUnavailable"
        | "ServerBusy"
        | "QuotaExceeded"
        | "ConnectionRateExceeded" => End::LoginFailed {
            cause: "overloaded",
            detail,
        },
        _ => End::LoginFailed {
            cause: "connack_refused",
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::ledger::LoadLedger;
    use crate::protocol::mqtt::{test_protocol, test_shared};

    /// A device's session future lives in a box of its own in the run's client pool
    /// (`crate::pool`), in the allocator's 512-byte class at 512 bytes or less; 8 more take
    /// 640 bytes in every client of a run. It is 512 with the QoS 2 receipts' map made at the
    /// first QoS 2 publish (528 before). In a tokio task of its own it took a 640-byte cell.
    /// It was 1,072 (a 1,280-byte cell) while the session kept a cancellation token's and a
    /// `Notify`'s futures in its waits, the CONNECT beside the connection, its client id, and
    /// its arguments twice.
    /// A connection over an in-memory stream, its CONNACK received, not logged in.
    fn test_live() -> Live {
        let (stream, _peer) = tokio::io::duplex(64);
        Live {
            stream: Box::new(stream),
            read: BytesMut::new(),
            write: BytesMut::new(),
            due_at: Instant::now(),
            ping: None,
            subscribing: Vec::new(),
            topics_sent: 0,
            window: 10,
            acknowledged: true,
            logged_in: false,
        }
    }

    /// A session of client 0 for unit tests (its connector never used).
    fn test_session() -> Session {
        let events = DeviceEvents::new(Arc::new(Mutex::new(LoadLedger::new(2))), 0);
        let connector = DynConnector::new(imlab_core::net::TcpConnector {
            target: "127.0.0.1:9".parse().unwrap(),
        });
        Session::new(test_protocol(), 0, events, test_shared(), connector)
    }

    /// A device keeps no map of publishes in flight once the last is acknowledged: the map is
    /// made at a publish and goes with its last entry (an emptied map kept about 1 KB in
    /// every device that ever sent).
    #[tokio::test]
    async fn an_acknowledged_publish_leaves_no_map() {
        let mut session = test_session();
        let mut live = test_live();
        live.logged_in = true;
        assert!(!session.inflight.is_made());
        for number in 0..2 {
            let message = Outgoing {
                id: MsgId { sender: 0, number },
                to: To::Peer(1),
                planned_us: 0,
            };
            session.publish(&mut live, message);
        }
        let pkids: Vec<u16> = session.inflight.iter().map(|(pkid, _)| *pkid).collect();
        assert_eq!(pkids.len(), 2, "two publishes in flight");
        // An ack for no publish in flight changes nothing.
        let stray = pkids[1].wrapping_add(1);
        for pkid in [stray, pkids[0]] {
            let end = session.on_packet(
                &mut live,
                Inbound::PubAck {
                    pkid,
                    accepted: true,
                },
            );
            assert!(end.is_none(), "the PUBACK ended the connection");
        }
        assert_eq!(session.inflight.len(), 1);
        assert!(session.inflight.is_made());
        let end = session.on_packet(
            &mut live,
            Inbound::PubAck {
                pkid: pkids[1],
                accepted: true,
            },
        );
        assert!(end.is_none(), "the last PUBACK ended the connection");
        assert_eq!(session.inflight.len(), 0);
        assert!(!session.inflight.is_made(), "the emptied map was kept");
    }

    /// A logged-in connection keeps nothing for its answered SUBSCRIBEs: the login's SUBACK
    /// gives the pending list's allocation back (an emptied map kept 128 bytes a device).
    #[tokio::test]
    async fn an_answered_subscribe_leaves_no_allocation() {
        let mut session = test_session();
        let mut live = test_live();
        session.subscribe_new(&mut live, true);
        let &[(pkid, 1, true)] = live.subscribing.as_slice() else {
            panic!("the login's SUBSCRIBE pending: {:?}", live.subscribing);
        };
        assert!(live.subscribing.capacity() > 0);
        // An answer to no pending SUBSCRIBE changes nothing.
        assert!(live.subscribed(pkid.wrapping_add(1)).is_none());
        assert_eq!(live.subscribing.len(), 1);
        let end = session.on_packet(
            &mut live,
            Inbound::SubAck {
                pkid,
                granted: true,
            },
        );
        assert!(end.is_none(), "the SUBACK ended the connection");
        assert!(live.logged_in);
        assert_eq!(live.subscribing.capacity(), 0);
    }

    #[tokio::test]
    async fn a_session_fits_a_512_byte_box() {
        let task = test_session().run();
        let size = std::mem::size_of_val(&task);
        assert!(size <= 512, "a session's future is {size} bytes");
    }
}
