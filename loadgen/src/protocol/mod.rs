//! The protocol seam: what a virtual device must do for the load run, whatever it speaks.
//!
//! A [`Protocol`] makes the run's list of [`Devices`] and the list starts them; a [`Device`]
//! (one of the list, [`DeviceAt`]) connects and logs in, subscribes to its inbox,
//! keeps its connection alive, reconnects, sends what the schedule hands it and reports what
//! happens through its [`DeviceEvents`]. The ledger, the schedule, the results and the worker
//! code see only these types: a message is a [`MsgId`] (sender and the sender's count), a
//! recipient a device number, a group a group number. Each protocol carries the identity in
//! its own way (imlab: the client message id; MQTT: a header in the payload) and hands it back
//! on every ack and delivery. `loadgen/PROTOCOLS.md` says how to add one.

pub mod imlab;
pub mod mqtt;

use std::sync::{Arc, Mutex};

use imlab_core::heartbeat::AppState;

use crate::ledger::LoadLedger;
pub use crate::ledger::Repeat;
use crate::pool::ClientPool;
use crate::transport::DynConnector;

/// A message's identity in the ledger: its sender and the sender's count, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId {
    /// Sending device.
    pub sender: u32,
    /// The sender's count of planned sends before this one.
    pub number: u64,
}

/// Where a send goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// One device.
    Peer(u32),
    /// Every member of a group.
    Group(u32),
}

/// One planned send, handed to its sender's device.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing {
    /// Its identity.
    pub id: MsgId,
    /// Its recipient.
    pub to: To,
    /// Planned send time, µs since the run started (the open-loop schedule's).
    pub planned_us: u64,
}

/// A send the device would not take: its queue of unacked sends is full. It never left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A running virtual device.
pub trait Device: Send + Sync {
    /// Takes a send; it is on its way unless this returns [`Full`].
    fn send(&self, message: Outgoing) -> Result<(), Full>;

    /// Makes this device a member of `group`, whose member users are listed in order (this
    /// device's user among them; a user is its client number unless `--scenario` gives
    /// users several devices). Returns whether it will confirm with
    /// [`DeviceEvents::group_ready`]: the run waits for every promised confirmation before
    /// it sends.
    fn join_group(&self, group: u32, members: &[u32]) -> bool;

    /// Closes the connection for good; the device's task ends soon after.
    fn shutdown(&self);

    /// The app moved to `state` (`imlab load --scenario`'s app-state cycles): a strategy
    /// may heartbeat differently in the background, and an inactive app drops its
    /// connection until it is active again. Returns false where the protocol has no app
    /// states.
    fn set_app_state(&self, state: AppState) -> bool {
        let _ = state;
        false
    }
}

/// How a protocol names itself in results and the live line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Describe {
    /// `imlab`, `mqtt`.
    pub protocol: &'static str,
    /// `tcp`, `tls`, `ws`, `wss`.
    pub transport: &'static str,
    /// MQTT's quality of service (None for protocols without one).
    pub qos: Option<u8>,
}

/// Starts the devices of a run.
pub trait Protocol: Send + Sync {
    /// Its name, transport and options, for the results.
    fn describe(&self) -> Describe;

    /// An empty list of this protocol's devices, with room for `capacity`.
    fn devices(&self, capacity: usize) -> Box<dyn Devices>;
}

/// A process's running devices, in the order started, kept as their protocol keeps them: the
/// run addresses device `index` (client `first + index`) through [`Devices::at`]. One list
/// per run, not a box per device: the list holds what each device needs beside its future
/// (imlab: its core's handle, 16 bytes) and the protocol's settings once, where a
/// `Box<dyn Device>` per device took a 32-byte box (the handle, the client's number, the
/// settings) and a 16-byte pointer in the run's list, in every client.
pub trait Devices: Send + Sync {
    /// Starts device `client`, the next in the list, on `connector`, its future run in
    /// `clients`: from now until it is shut down it keeps itself connected and logged in,
    /// and tells `events` what happens. Its future ends after the shutdown. A list's clients
    /// are consecutive numbers.
    fn start(
        &mut self,
        client: u32,
        connector: DynConnector,
        events: DeviceEvents,
        clients: &ClientPool,
    );

    /// Devices started.
    fn len(&self) -> usize;

    /// True before the first start.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`Device::send`] of device `index`.
    fn send(&self, index: usize, message: Outgoing) -> Result<(), Full>;

    /// [`Device::join_group`] of device `index`.
    fn join_group(&self, index: usize, group: u32, members: &[u32]) -> bool;

    /// [`Device::shutdown`] of device `index`.
    fn shutdown(&self, index: usize);

    /// [`Device::set_app_state`] of device `index`; false where the protocol has no app
    /// states.
    fn set_app_state(&self, index: usize, state: AppState) -> bool {
        let _ = (index, state);
        false
    }
}

impl dyn Devices + '_ {
    /// Device `index` (below [`Devices::len`]).
    pub fn at(&self, index: usize) -> DeviceAt<'_> {
        assert!(
            index < self.len(),
            "device {index} of {} started",
            self.len()
        );
        DeviceAt {
            devices: self,
            index,
        }
    }

    /// Every device, in the order started.
    pub fn iter(&self) -> impl Iterator<Item = DeviceAt<'_>> {
        (0..self.len()).map(|index| DeviceAt {
            devices: self,
            index,
        })
    }
}

/// One device of a [`Devices`] list.
#[derive(Clone, Copy)]
pub struct DeviceAt<'a> {
    devices: &'a dyn Devices,
    index: usize,
}

impl Device for DeviceAt<'_> {
    fn send(&self, message: Outgoing) -> Result<(), Full> {
        self.devices.send(self.index, message)
    }

    fn join_group(&self, group: u32, members: &[u32]) -> bool {
        self.devices.join_group(self.index, group, members)
    }

    fn shutdown(&self) {
        self.devices.shutdown(self.index);
    }

    fn set_app_state(&self, state: AppState) -> bool {
        self.devices.set_app_state(self.index, state)
    }
}

/// What a device tells the ledger. Every method takes the ledger's lock once.
#[derive(Clone)]
pub struct DeviceEvents {
    ledger: Arc<Mutex<LoadLedger>>,
    client: u32,
}

impl DeviceEvents {
    /// Events of device `client` into `ledger`.
    pub fn new(ledger: Arc<Mutex<LoadLedger>>, client: u32) -> DeviceEvents {
        DeviceEvents { ledger, client }
    }

    /// The device's number.
    pub fn client(&self) -> u32 {
        self.client
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, LoadLedger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opening a connection (TCP, TLS, login) starts.
    pub fn connecting(&self) {
        self.ledger().connecting(self.client);
    }

    /// Logged in. `inbox_max` is the newest position of the device's inbox the server
    /// reported, `processed` the device's own; the device is synced once it has processed
    /// up to `inbox_max` (see [`DeviceEvents::processed`]). Protocols without inbox positions
    /// pass 0 and 0: synced at login.
    pub fn connected(&self, inbox_max: u64, processed: u64) {
        let mut ledger = self.ledger();
        ledger.connected(self.client, inbox_max);
        ledger.processed(self.client, processed);
    }

    /// The device has processed its inbox up to `position`.
    pub fn processed(&self, position: u64) {
        self.ledger().processed(self.client, position);
    }

    /// A logged-in connection ended (`cause`: a short word such as `ConnectionLost`).
    pub fn disconnected(&self, cause: &str) {
        self.ledger().disconnected(self.client, cause, true);
    }

    /// A connection ended, whether or not it had logged in: [`DeviceEvents::disconnected`]
    /// with `cause` if the device was connected (its last [`DeviceEvents::connected`] not yet
    /// ended), else [`DeviceEvents::login_failed`] with `failure` and `detail`. For a device
    /// that does not keep that itself.
    pub fn connection_ended(&self, cause: &str, failure: &str, detail: String) {
        let mut ledger = self.ledger();
        if ledger.online(self.client) {
            ledger.disconnected(self.client, cause, true);
        } else {
            attempt_failed(&mut ledger, self.client, failure, detail);
        }
    }

    /// A connection or login attempt failed (`cause` as in `crate::causes`); `detail` is kept
    /// as the last failure for the error when nobody gets in.
    pub fn login_failed(&self, cause: &str, detail: String) {
        attempt_failed(&mut self.ledger(), self.client, cause, detail);
    }

    /// The device stopped for good: the server refused its credentials (`cause`).
    pub fn stopped(&self, cause: &str, detail: String) {
        let mut ledger = self.ledger();
        ledger.last_failure = Some(detail);
        ledger.login_failed(self.client, cause);
        ledger.client_stopped(self.client);
    }

    /// The server acknowledged send `id`.
    pub fn acked(&self, id: MsgId) {
        self.ledger().acked(id);
    }

    /// The server refused send `id` for now (`cause`: `rate_limited`...); the device retries.
    pub fn send_refused(&self, id: MsgId, cause: &str) {
        self.ledger().send_refused(id, cause);
    }

    /// Send `id` failed for good (refused by the server, or no ack in time).
    pub fn send_failed(&self, id: MsgId) {
        self.ledger().send_failed(id);
    }

    /// Message `id` reached this device.
    pub fn delivered(&self, id: MsgId) {
        self.ledger().delivered(self.client, id);
    }

    /// Message `id` reached this device; if it had it already, `repeat` says whether the
    /// protocol allows that.
    pub fn delivered_as(&self, id: MsgId, repeat: Repeat) {
        self.ledger().delivered_as(self.client, id, repeat);
    }

    /// The protocol allows send `id`'s deliveries to be lost (at most once).
    pub fn loss_allowed(&self, id: MsgId) {
        self.ledger().loss_allowed(id);
    }

    /// The device sent `id` again by itself (a resend after a reconnect): repeats of it are
    /// redeliveries the protocol allows.
    pub fn resent(&self, id: MsgId) {
        self.ledger().resent(id);
    }

    /// The device is back without a session: nothing was kept for it while it was away, so
    /// messages planned before now that it lacks are not lost.
    pub fn session_reset(&self) {
        self.ledger().session_reset(self.client);
    }

    /// The server broke its protocol in a way the device saw (`what`: a short stable word,
    /// such as `packet_id_reused_before_pubrel`).
    pub fn protocol_violation(&self, what: &'static str) {
        *self
            .ledger()
            .protocol_violations
            .entry(what.to_string())
            .or_default() += 1;
    }

    /// A group this device joined or created is ready.
    pub fn group_ready(&self) {
        self.ledger().groups_ready += 1;
    }
}

/// A connection or login attempt of `client` failed (see [`DeviceEvents::login_failed`]).
fn attempt_failed(ledger: &mut LoadLedger, client: u32, cause: &str, detail: String) {
    ledger.last_failure = Some(detail);
    ledger.login_failed(client, cause);
    ledger.disconnected(client, cause, false);
}
