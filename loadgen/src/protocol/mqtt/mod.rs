//! MQTT 3.1.1 and 5: each device is one MQTT client on rumqttc's codecs (`packet.rs`), its
//! socket and timers driven here (`session.rs`) so that sends leave on the open-loop schedule.
//! A device subscribes to its inbox topic (`--topic-template`, default
//! `imlab/{run}/u/{user}`) and to its groups' topics (`imlab/{run}/g/{group}`), and publishes a
//! message to the recipient's topic. A message's identity travels in a header at the front of
//! the payload (`header.rs`), so the ledger needs nothing from the broker.
//!
//! What the ledger is told follows the QoS: QoS 0 deliveries may be lost; QoS 1 repeats marked
//! DUP, after a reconnect or of a message resent are allowed redeliveries; QoS 2 allows no
//! repeat. With a clean start a device that comes back has no session, so what was sent to it
//! while it was away may be missing without loss; with `--clean-start false` it must arrive.

#[cfg(test)]
mod broker_faults;
mod header;
pub mod packet;
mod session;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use imlab_core::heartbeat::AppState;

pub use packet::{Qos, Version};

use super::{Describe, DeviceEvents, Devices, Full, Outgoing, Protocol};
use crate::pool::ClientPool;
use crate::population::PerDevice;
use crate::transport::DynConnector;

/// Sends a device holds before it refuses more (waiting for the inflight window or a
/// reconnect), as imlab's client core's `outgoing_len_max`.
pub const OUTGOING_LEN_MAX: usize = 1_024;

/// Groups one device may join; beyond, a join is refused (the run never asks for more than
/// one).
pub const GROUPS_PER_DEVICE_MAX: usize = 64;

/// The MQTT options of a run (`imlab load --protocol mqtt`).
#[derive(Debug, Clone, PartialEq)]
pub struct MqttOptions {
    /// `--mqtt-version`.
    pub version: Version,
    /// `--qos`: of every publish and subscription.
    pub qos: Qos,
    /// `--clean-start`: false keeps each device's session (and its offline queue) at the broker.
    pub clean_start: bool,
    /// `--session-expiry` (MQTT 5): how long the broker keeps a session after a disconnect.
    pub session_expiry: Option<Duration>,
    /// `--username`.
    pub username: Option<String>,
    /// `--password`.
    pub password: Option<String>,
    /// `--client-id-prefix`: a device's client id is PREFIX, the run tag, `-` and its number.
    pub client_id_prefix: String,
    /// `--topic-template`: a device's inbox topic, with `{user}` (and optionally `{run}`).
    pub topic_template: String,
    /// `--group-topic-template`: a group's topic, with `{group}` (and optionally `{run}`).
    pub group_topic_template: String,
    /// `--inflight`: QoS 1/2 publishes a device has unacknowledged at once.
    pub inflight: u16,
    /// `--ack-timeout`: how long a PUBACK (PUBCOMP), CONNACK, SUBACK or PINGRESP may take
    /// before the send fails and the device reconnects.
    pub ack_timeout: Duration,
}

impl Default for MqttOptions {
    fn default() -> MqttOptions {
        MqttOptions {
            version: Version::V311,
            qos: Qos::AtLeastOnce,
            clean_start: true,
            session_expiry: None,
            username: None,
            password: None,
            client_id_prefix: "imlab-".into(),
            topic_template: "imlab/{run}/u/{user}".into(),
            group_topic_template: "imlab/{run}/g/{group}".into(),
            inflight: 16,
            ack_timeout: Duration::from_secs(10),
        }
    }
}

impl MqttOptions {
    /// Checks the options; each error names its flag.
    pub fn check(&self) -> Result<(), String> {
        check_template("--topic-template", &self.topic_template, "{user}")?;
        check_template(
            "--group-topic-template",
            &self.group_topic_template,
            "{group}",
        )?;
        if self.inflight == 0 {
            return Err("--inflight 0: at least one publish must be allowed in flight".into());
        }
        if self.ack_timeout.is_zero() {
            return Err("--ack-timeout 0s: give the broker some time to answer".into());
        }
        if self.password.is_some() && self.username.is_none() {
            return Err("--password needs --username (MQTT sends no password alone)".into());
        }
        match (self.version, self.session_expiry) {
            (Version::V311, Some(_)) => {
                return Err("--session-expiry is MQTT 5's: use --mqtt-version 5, or \
                     --clean-start false alone with 3.1.1 (its sessions never expire)"
                    .into());
            }
            (Version::V5, None) if !self.clean_start => {
                return Err(
                    "--clean-start false with MQTT 5 needs --session-expiry: without \
                     it the broker ends the session at the disconnect"
                        .into(),
                );
            }
            _ => {}
        }
        if self
            .session_expiry
            .is_some_and(|e| e.as_secs() > u64::from(u32::MAX))
        {
            return Err(format!(
                "--session-expiry: at most {} seconds in MQTT 5",
                u32::MAX
            ));
        }
        Ok(())
    }
}

/// A topic template must name its device or group, and may not be a filter (`+`, `#`).
fn check_template(flag: &str, template: &str, needed: &str) -> Result<(), String> {
    if !template.contains(needed) {
        return Err(format!(
            "{flag} {template:?}: must contain {needed}, or every device would share one topic"
        ));
    }
    if template.contains(['+', '#']) {
        return Err(format!(
            "{flag} {template:?}: + and # are wildcards, not allowed in a topic to publish to"
        ));
    }
    let rest = template.replace(needed, "").replace("{run}", "");
    if rest.contains(['{', '}']) {
        return Err(format!(
            "{flag} {template:?}: the only placeholders are {needed} and {{run}}"
        ));
    }
    Ok(())
}

/// The MQTT protocol's settings for one run.
#[derive(Debug, Clone)]
pub struct Mqtt {
    /// With `--scenario`: users of several devices (each device subscribes to its user's
    /// inbox topic), and each device group's heartbeat and body size.
    pub population: Option<Arc<crate::population::Population>>,
    /// The options from the command line.
    pub options: MqttOptions,
    /// The run's tag (in client ids, topics with `{run}`, and every payload's header).
    pub tag: String,
    /// Heartbeat strategy name (validated before the run); it drives PINGREQ.
    pub heartbeat: String,
    /// Message body size (the header included).
    pub body_bytes: usize,
    /// Seeds each device's RNG (backoff jitter).
    pub seed: u64,
    /// How a device waits before it reconnects.
    pub backoff: imlab_core::client::BackoffConfig,
    /// `tcp` or `tls`.
    pub transport: &'static str,
}

impl Mqtt {
    /// The inbox topic of `user` (a client's number, or with `--scenario` its user's: every
    /// device of a user subscribes to it).
    fn inbox_topic(&self, user: u32) -> String {
        self.options
            .topic_template
            .replace("{run}", &self.tag)
            .replace("{user}", &user.to_string())
    }

    /// The user whose inbox `client` subscribes to: itself, or its scenario user.
    fn user_of(&self, client: u32) -> u32 {
        self.population.user_of(client)
    }

    /// The heartbeat strategy of `client`: the run's, or its scenario device group's.
    fn heartbeat_of(&self, client: u32) -> &str {
        self.population.heartbeat_of(client, &self.heartbeat)
    }

    /// The message body size of `client`'s sends: the run's, or its device group's.
    fn body_bytes_of(&self, client: u32) -> usize {
        self.population.body_bytes_of(client, self.body_bytes)
    }

    /// The largest body any device of the run sends.
    fn body_bytes_max(&self) -> usize {
        match &self.population {
            Some(population) => population
                .groups
                .iter()
                .map(|group| group.body_bytes)
                .max()
                .unwrap_or(self.body_bytes),
            None => self.body_bytes,
        }
    }

    fn group_topic(&self, group: u32) -> String {
        self.options
            .group_topic_template
            .replace("{run}", &self.tag)
            .replace("{group}", &group.to_string())
    }
}

/// Shared by the run's devices, each holding the Arc rather than a copy of the settings.
impl Protocol for Arc<Mqtt> {
    fn describe(&self) -> Describe {
        Describe {
            protocol: "mqtt",
            transport: self.transport,
            qos: Some(self.options.qos as u8),
        }
    }

    fn devices(&self, capacity: usize) -> Box<dyn Devices> {
        Box::new(MqttDevices {
            protocol: self.clone(),
            shared: Vec::with_capacity(capacity),
        })
    }
}

/// Messages the run gave a device to send, oldest first (at most [`OUTGOING_LEN_MAX`]), what
/// else the run tells the session (shut down, a group joined), and the session's waker: one
/// allocation per device with its topics, holding a buffer only while a message waits (tokio's
/// bounded channel made a 512-byte state and a 1 KiB block of slots per device up front; a
/// cancellation token and a `Notify` were another allocation and 48 bytes, `-Zprint-type-sizes`).
#[derive(Default)]
struct Outbox {
    queue: VecDeque<Outgoing>,
    /// The waiting session's, taken by whatever wakes it.
    waker: Option<Waker>,
    /// The session waits for sends (its window has room): a push wakes it. A session with a
    /// full window is not woken by every push.
    wants_sends: bool,
    /// The device's handle is gone: nothing more will come.
    closed: bool,
    /// The run shut the device down.
    stopped: bool,
    /// Its app is inactive (`--scenario`'s app cycle): the session says goodbye and stays
    /// offline until the app is back.
    offline: bool,
    /// A group was joined since the session last looked.
    topics_changed: bool,
}

/// What woke a session waiting on its device's shared state.
#[derive(Debug)]
enum Signal {
    /// The run shut the device down, or its handle is gone and no send waits.
    Stop,
    /// Its app went inactive: close the connection politely and wait offline.
    Offline,
    /// The oldest send waiting.
    Send(Outgoing),
    /// A group was joined: subscribe to its topic.
    TopicsChanged,
}

/// What the device handle and its session share.
struct DeviceShared {
    outbox: Mutex<Outbox>,
    /// The topics of the groups joined, in the order joined (each is confirmed once
    /// subscribed). The inbox's topic is made from the template at each login: a device
    /// without groups holds no topic.
    groups: Mutex<Vec<String>>,
}

impl DeviceShared {
    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a message for the session; refused while [`OUTGOING_LEN_MAX`] wait.
    fn push(&self, message: Outgoing) -> Result<(), Full> {
        let mut outbox = self.outbox();
        if outbox.queue.len() >= OUTGOING_LEN_MAX {
            return Err(Full);
        }
        outbox.queue.push_back(message);
        let waker = if outbox.wants_sends {
            outbox.wants_sends = false;
            outbox.waker.take()
        } else {
            None
        };
        drop(outbox);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Changes the shared state with `change` and wakes the session.
    fn signal(&self, change: impl FnOnce(&mut Outbox)) {
        let mut outbox = self.outbox();
        change(&mut outbox);
        let waker = outbox.waker.take();
        drop(outbox);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// True once the run shut the device down.
    fn stopped(&self) -> bool {
        self.outbox().stopped
    }

    /// Ready once the device may connect (its app is not inactive): true, or false once
    /// the run shut it down or its handle is gone (nothing more will come while it is away).
    fn poll_online(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut outbox = self.outbox();
        if outbox.stopped || outbox.closed {
            return Poll::Ready(false);
        }
        if !outbox.offline {
            return Poll::Ready(true);
        }
        match &mut outbox.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The oldest message waiting, if any.
    fn try_outgoing(&self) -> Option<Outgoing> {
        self.outbox().pop()
    }

    /// What the session has to act on, in this order: a shutdown; with `take_sends`, the
    /// oldest send waiting (or the end, once the handle is gone and none waits); with
    /// `take_topics`, a group joined. Pending with the session's waker kept otherwise.
    fn poll_signal(
        &self,
        cx: &mut Context<'_>,
        take_sends: bool,
        take_topics: bool,
    ) -> Poll<Signal> {
        let mut outbox = self.outbox();
        if outbox.stopped {
            return Poll::Ready(Signal::Stop);
        }
        if outbox.offline {
            return Poll::Ready(Signal::Offline);
        }
        if take_sends {
            if let Some(message) = outbox.pop() {
                return Poll::Ready(Signal::Send(message));
            }
            if outbox.closed {
                return Poll::Ready(Signal::Stop);
            }
        }
        if take_topics && outbox.topics_changed {
            outbox.topics_changed = false;
            return Poll::Ready(Signal::TopicsChanged);
        }
        outbox.wants_sends = take_sends;
        match &mut outbox.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Outbox {
    /// The oldest message; the queue's buffer is given back once it is empty.
    fn pop(&mut self) -> Option<Outgoing> {
        let message = self.queue.pop_front();
        if message.is_some() && self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
        message
    }
}

/// A run's MQTT devices: each device's state shared with its session (one pointer in the
/// list), and the run's settings once.
struct MqttDevices {
    protocol: Arc<Mqtt>,
    shared: Vec<Arc<DeviceShared>>,
}

/// The list is the devices' handle: once it is gone nothing more comes, and each session ends
/// after the sends still queued.
impl Drop for MqttDevices {
    fn drop(&mut self) {
        for shared in &self.shared {
            shared.signal(|outbox| outbox.closed = true);
        }
    }
}

impl Devices for MqttDevices {
    fn start(
        &mut self,
        client: u32,
        connector: DynConnector,
        events: DeviceEvents,
        clients: &ClientPool,
    ) {
        let shared = Arc::new(DeviceShared {
            outbox: Mutex::default(),
            groups: Mutex::default(),
        });
        let session = session::Session::new(
            self.protocol.clone(),
            client,
            events,
            shared.clone(),
            connector,
        );
        clients.spawn(session.run());
        self.shared.push(shared);
    }

    fn len(&self) -> usize {
        self.shared.len()
    }

    fn send(&self, index: usize, message: Outgoing) -> Result<(), Full> {
        self.shared[index].push(message)
    }

    fn join_group(&self, index: usize, group: u32, _members: &[u32]) -> bool {
        // MQTT has no groups: every member subscribes to the group's topic and confirms once
        // the broker granted the subscription.
        let shared = &self.shared[index];
        let mut groups = shared.groups.lock().unwrap_or_else(|p| p.into_inner());
        if groups.len() >= GROUPS_PER_DEVICE_MAX {
            return false;
        }
        groups.push(self.protocol.group_topic(group));
        drop(groups);
        shared.signal(|outbox| outbox.topics_changed = true);
        true
    }

    fn shutdown(&self, index: usize) {
        self.shared[index].signal(|outbox| outbox.stopped = true);
    }

    /// An inactive app takes its device offline (a polite DISCONNECT) until it is active
    /// again; foreground and background both stay connected.
    fn set_app_state(&self, index: usize, state: AppState) -> bool {
        let offline = state == AppState::Inactive;
        self.shared[index].signal(|outbox| outbox.offline = offline);
        true
    }
}

/// A run's protocol for unit tests: MQTT's defaults, tag `t`.
#[cfg(test)]
fn test_protocol() -> Arc<Mqtt> {
    Arc::new(Mqtt {
        population: None,
        options: MqttOptions::default(),
        tag: "t".into(),
        heartbeat: "fixed:30s".into(),
        body_bytes: 200,
        seed: 1,
        backoff: imlab_core::client::BackoffConfig::default(),
        transport: "tcp",
    })
}

/// A device's shared state for unit tests, in no group.
#[cfg(test)]
fn test_shared() -> Arc<DeviceShared> {
    Arc::new(DeviceShared {
        outbox: Mutex::default(),
        groups: Mutex::default(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A list of one device and the state it shares with its (absent) session.
    fn test_device() -> (Arc<DeviceShared>, MqttDevices) {
        let shared = test_shared();
        let devices = MqttDevices {
            protocol: test_protocol(),
            shared: vec![shared.clone()],
        };
        (shared, devices)
    }

    /// A waker that counts its wakes.
    fn counting_waker() -> (Arc<AtomicUsize>, Waker) {
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(AtomicUsize::new(0));
        (wakes.clone(), Waker::from(Arc::new(Count(wakes))))
    }

    #[test]
    fn options_that_cannot_work_are_errors_naming_the_flag() {
        let check = |change: &dyn Fn(&mut MqttOptions)| {
            let mut options = MqttOptions::default();
            change(&mut options);
            options.check().err().unwrap_or_default()
        };
        assert_eq!(check(&|_| {}), "");
        assert!(check(&|o| o.topic_template = "chat/inbox".into()).starts_with("--topic-template"));
        assert!(check(&|o| o.topic_template = "chat/+/{user}".into()).contains("wildcards"));
        assert!(check(&|o| o.group_topic_template = "g/{room}/{group}".into()).contains("{group}"));
        assert!(check(&|o| o.inflight = 0).starts_with("--inflight"));
        assert!(check(&|o| o.password = Some("p".into())).starts_with("--password"));
        assert!(
            check(&|o| o.session_expiry = Some(Duration::from_secs(60)))
                .starts_with("--session-expiry is MQTT 5's")
        );
        assert!(
            check(&|o| {
                o.version = Version::V5;
                o.clean_start = false;
            })
            .contains("needs --session-expiry")
        );
    }

    fn outgoing(number: u64) -> Outgoing {
        Outgoing {
            id: crate::protocol::MsgId { sender: 1, number },
            to: crate::protocol::To::Peer(2),
            planned_us: number,
        }
    }

    /// The device's queue: in order, bounded (the send past the bound is refused and the
    /// queue keeps what it had), a session waiting for sends woken by a push (one not
    /// waiting for sends is not) and told when the handle is gone, and no buffer kept once
    /// empty.
    #[test]
    fn the_outbox_keeps_order_and_its_bound_and_ends_with_the_handle() {
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let (shared, device) = test_device();
        // A session whose window is full is not woken by a push.
        assert!(shared.poll_signal(&mut cx, false, true).is_pending());
        device.send(0, outgoing(0)).unwrap();
        assert_eq!(
            wakes.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "not waiting for sends"
        );
        assert!(matches!(
            shared.poll_signal(&mut cx, true, true),
            Poll::Ready(Signal::Send(message)) if message.id.number == 0
        ));
        assert!(shared.poll_signal(&mut cx, true, true).is_pending());
        device.send(0, outgoing(0)).unwrap();
        assert_eq!(
            wakes.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a push wakes the session waiting for sends"
        );
        for number in 1..OUTGOING_LEN_MAX as u64 {
            device.send(0, outgoing(number)).unwrap();
        }
        assert_eq!(device.send(0, outgoing(9_999)), Err(Full));
        for number in 0..OUTGOING_LEN_MAX as u64 {
            match shared.poll_signal(&mut cx, true, true) {
                Poll::Ready(Signal::Send(message)) => assert_eq!(message.id.number, number),
                other => panic!("message {number}: {other:?}"),
            }
        }
        assert_eq!(
            shared.outbox().queue.capacity(),
            0,
            "an empty queue holds no buffer"
        );
        assert!(shared.poll_signal(&mut cx, true, true).is_pending());
        device.send(0, outgoing(5_000)).unwrap();
        drop(device);
        // What was queued before the handle went still goes; then the end (to a session
        // taking sends: one with a full window still has its sends in flight to hear about).
        assert!(matches!(
            shared.poll_signal(&mut cx, true, true),
            Poll::Ready(Signal::Send(message)) if message.id.number == 5_000
        ));
        assert!(shared.poll_signal(&mut cx, false, true).is_pending());
        assert!(matches!(
            shared.poll_signal(&mut cx, true, true),
            Poll::Ready(Signal::Stop)
        ));
    }

    /// The run's other signals: a group joined wakes the waiting session and is taken once,
    /// only by a logged-in session (one logging in subscribes to every topic anyway); a
    /// shutdown wakes it and comes before the sends still queued.
    #[test]
    fn a_joined_group_and_a_shutdown_wake_the_session() {
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let (shared, device) = test_device();
        assert!(shared.poll_signal(&mut cx, false, true).is_pending());
        assert!(device.join_group(0, 3, &[1, 2]));
        assert_eq!(
            wakes.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a join wakes the session"
        );
        assert_eq!(*shared.groups.lock().unwrap(), ["imlab/t/g/3"]);
        // Not logged in: the change waits for the login.
        assert!(shared.poll_signal(&mut cx, false, false).is_pending());
        assert!(matches!(
            shared.poll_signal(&mut cx, false, true),
            Poll::Ready(Signal::TopicsChanged)
        ));
        assert!(shared.poll_signal(&mut cx, false, true).is_pending());

        device.send(0, outgoing(1)).unwrap();
        assert!(!shared.stopped());
        device.shutdown(0);
        assert!(shared.stopped());
        assert_eq!(
            wakes.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "a shutdown wakes the session"
        );
        assert!(matches!(
            shared.poll_signal(&mut cx, true, true),
            Poll::Ready(Signal::Stop)
        ));
    }

    #[test]
    fn topics_follow_the_templates() {
        let mqtt = Mqtt {
            population: None,
            options: MqttOptions {
                topic_template: "chat/{run}/inbox/{user}".into(),
                ..MqttOptions::default()
            },
            tag: "r5w0".into(),
            heartbeat: "fixed:30s".into(),
            body_bytes: 200,
            seed: 1,
            backoff: imlab_core::client::BackoffConfig::default(),
            transport: "tcp",
        };
        assert_eq!(mqtt.inbox_topic(7), "chat/r5w0/inbox/7");
        assert_eq!(mqtt.group_topic(3), "imlab/r5w0/g/3");
    }
}
