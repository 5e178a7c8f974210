//! imlab's own protocol: each device is imlab-core's client core (the code the simulator
//! runs), over the run's transport. A message's identity travels as its client message id,
//! `<tag>d<sender>-<number>`, which the server returns on every ack and delivery.

use std::sync::Arc;

use bytes::Bytes;
use imlab_core::client::{
    BackoffConfig, Client, ClientConfig, ClientEvent, ClientHandle, ClientObserver, ClientState,
    IssuedCredentials, IssuedToken, TokenIssuer,
};
use imlab_core::clock::{Clock, SystemClock};
use imlab_core::heartbeat::{AppState, parse_strategy};
use imlab_core::proto::Target;

use super::{Describe, DeviceEvents, Devices, Full, MsgId, Outgoing, Protocol, To};
use crate::causes;
use crate::pool::ClientPool;
use crate::population::{PerDevice, Population};
use crate::transport::DynConnector;

/// The imlab protocol's settings for one run.
#[derive(Debug, Clone)]
pub struct Imlab {
    /// Distinguishes this run's users, groups and message ids from every other run's on the
    /// same server (a reused client message id would be deduplicated by the server).
    pub tag: String,
    /// Heartbeat strategy name (validated before the run).
    pub heartbeat: String,
    /// The client core's settings, one allocation shared by every device of the run (its
    /// tokens come from [`client_config`]'s issuer, not from a token in it).
    pub client: Arc<ClientConfig>,
    /// Message body size.
    pub body_bytes: usize,
    /// [`xs`] as long as the run's longest body (the population's groups may differ).
    pub xs: Bytes,
    /// Seeds each device's RNG (backoff jitter).
    pub seed: u64,
    /// `tcp` or `tls`.
    pub transport: &'static str,
    /// With `--scenario`: users of several devices, and each device group's heartbeat and
    /// body size. Without, client n is user n.
    pub population: Option<Arc<Population>>,
}

impl Imlab {
    /// The user name of user number `user`.
    fn user(&self, user: u32) -> String {
        format!("{}u{user}", self.tag)
    }

    /// The device name of client number `client`.
    fn device(&self, client: u32) -> String {
        format!("{}d{client}", self.tag)
    }

    /// The user number of `client`.
    fn user_of(&self, client: u32) -> u32 {
        self.population.user_of(client)
    }

    /// True for the device of its user that creates the user's groups.
    fn first_device_of_user(&self, client: u32) -> bool {
        self.population.as_ref().is_none_or(|population| {
            population.users[population.user_of(client) as usize].first() == Some(&client)
        })
    }

    fn heartbeat_of(&self, client: u32) -> &str {
        self.population.heartbeat_of(client, &self.heartbeat)
    }

    fn body_bytes_of(&self, client: u32) -> usize {
        self.population.body_bytes_of(client, self.body_bytes)
    }

    fn group(&self, group: u32) -> String {
        format!("{}g{group}", self.tag)
    }
}

/// The client settings of a run's devices: `heartbeat_timeout`, `ack_delay` and `backoff`, and with
/// `auth_secret` (a server that checks tokens) expiring tokens signed with it, 24 hours each,
/// minted at a device's first login and renewed an hour before they expire.
pub fn client_config(
    auth_secret: Option<&str>,
    heartbeat_timeout: std::time::Duration,
    ack_delay: std::time::Duration,
    backoff: BackoffConfig,
) -> Arc<ClientConfig> {
    Arc::new(ClientConfig {
        credentials: auth_secret.map(|secret| IssuedCredentials {
            issuer: Arc::new(SecretIssuer {
                secret: secret.to_owned(),
            }),
            device_clock: Arc::new(SystemClock),
            renew_before: std::time::Duration::from_secs(3_600),
        }),
        heartbeat_timeout,
        ack_delay,
        backoff,
        ..ClientConfig::default()
    })
}

/// Signs tokens with the run's secret, as the app backend of a server with `--auth-secret` would.
struct SecretIssuer {
    secret: String,
}

impl TokenIssuer for SecretIssuer {
    fn issue(&self, user: &str) -> IssuedToken {
        let expiry_unix_s = SystemClock.unix_ms() / 1_000 + 86_400;
        // The secret was checked non-empty and user names are valid ids: minting cannot fail.
        let token =
            imlab_core::auth::mint_token(&self.secret, user, expiry_unix_s).unwrap_or_default();
        IssuedToken {
            token,
            expiry_unix_s,
        }
    }
}

/// The client message id that carries `id`.
fn client_msg_id(tag: &str, id: MsgId) -> String {
    format!("{tag}d{}-{}", id.sender, id.number)
}

/// The identity in a client message id of this run's, or None for anything else.
fn parse_client_msg_id(tag: &str, text: &str) -> Option<MsgId> {
    let (sender, number) = text.strip_prefix(tag)?.strip_prefix('d')?.split_once('-')?;
    Some(MsgId {
        sender: sender.parse().ok()?,
        number: number.parse().ok()?,
    })
}

/// A run of `x`s as long as `len`, that every body of a run is a slice of: a body of its
/// own per device cost its size in every client (`bench/conn-memory.sh`), and one per send
/// would cost an allocation and a fill per message.
pub fn xs(len: usize) -> Bytes {
    Bytes::from(vec![b'x'; len])
}

/// Shared by the run's devices, each holding the Arc rather than a copy of the settings.
impl Protocol for Arc<Imlab> {
    fn describe(&self) -> Describe {
        Describe {
            protocol: "imlab",
            transport: self.transport,
            qos: None,
        }
    }

    fn devices(&self, capacity: usize) -> Box<dyn Devices> {
        Box::new(ImlabDevices {
            protocol: self.clone(),
            first_client: 0,
            handles: Vec::with_capacity(capacity),
            observer: None,
        })
    }
}

/// A run's imlab devices: what the run holds per device besides its future is its core's
/// handle (two pointers); the body is sliced at each send, not kept.
struct ImlabDevices {
    protocol: Arc<Imlab>,
    /// The first device's client number; device `index` is client `first_client + index`.
    first_client: u32,
    handles: Vec<ClientHandle>,
    /// The devices' observer, made at the first start.
    observer: Option<Arc<Observer>>,
}

impl ImlabDevices {
    fn client(&self, index: usize) -> u32 {
        self.first_client + index as u32
    }
}

impl Devices for ImlabDevices {
    fn start(
        &mut self,
        client: u32,
        connector: DynConnector,
        events: DeviceEvents,
        clients: &ClientPool,
    ) {
        if self.handles.is_empty() {
            self.first_client = client;
        }
        let observer = self
            .observer
            .get_or_insert_with(|| {
                Arc::new(Observer {
                    ledger: events.ledger.clone(),
                    protocol: self.protocol.clone(),
                })
            })
            .clone();
        assert_eq!(
            client,
            self.client(self.handles.len()),
            "a run's devices start in the order of their numbers"
        );
        let protocol = &self.protocol;
        let (core, handle) = Client::new(
            connector,
            protocol.client.clone(),
            ClientState::new(
                protocol.user(protocol.user_of(client)),
                protocol.device(client),
            )
            .shared(),
            parse_strategy(protocol.heartbeat_of(client))
                .expect("the heartbeat was validated before the run"),
            observer,
            protocol.seed ^ u64::from(client),
        );
        // The core's future itself, not an async block awaiting it: a block would hold the
        // core (about 700 bytes) beside the future that owns it, in every client's slot. The
        // pool drops its exit (the observer has seen it).
        clients.spawn(core.run());
        self.handles.push(handle);
    }

    fn len(&self) -> usize {
        self.handles.len()
    }

    fn send(&self, index: usize, message: Outgoing) -> Result<(), Full> {
        let protocol = &self.protocol;
        let to = match message.to {
            To::Peer(peer) => Target::Peer(protocol.user(peer)),
            To::Group(group) => Target::Group(protocol.group(group)),
        };
        self.handles[index]
            .send_as(
                client_msg_id(&protocol.tag, message.id),
                to,
                protocol
                    .xs
                    .slice(..protocol.body_bytes_of(self.client(index))),
            )
            .map_err(|_| Full)
    }

    fn join_group(&self, index: usize, group: u32, members: &[u32]) -> bool {
        // The first member (its first device) creates the group with the others in it; its
        // reply confirms.
        let protocol = &self.protocol;
        let client = self.client(index);
        if members.first() != Some(&protocol.user_of(client))
            || !protocol.first_device_of_user(client)
        {
            return false;
        }
        let others = members[1..].iter().map(|m| protocol.user(*m)).collect();
        self.handles[index]
            .create_group(&protocol.group(group), others)
            .is_ok()
    }

    fn shutdown(&self, index: usize) {
        let _ = self.handles[index].shutdown();
    }

    fn set_app_state(&self, index: usize, state: AppState) -> bool {
        let handle = &self.handles[index];
        let _ = handle.set_app_state(state);
        let _ = match state {
            AppState::Inactive => handle.go_offline(),
            AppState::Foreground | AppState::Background => handle.go_online(),
        };
        true
    }
}

/// The client cores' events, into the ledger: one observer for the run's devices, which
/// knows an event's device by the device's name (`<tag>d<client>`) and leaves to the ledger
/// whether that device is logged in. One per device (its ledger, number and connected flag,
/// and the run's settings) took an `Arc` of 48 bytes in every client.
struct Observer {
    ledger: Arc<std::sync::Mutex<crate::ledger::LoadLedger>>,
    /// The run's settings (their tag reads device names and message ids), shared rather than
    /// copied.
    protocol: Arc<Imlab>,
}

/// The number of this run's device named `device` (`<tag>d<client>`), or None for a name not
/// of this run.
fn device_number(tag: &str, device: &str) -> Option<u32> {
    device.strip_prefix(tag)?.strip_prefix('d')?.parse().ok()
}

impl ClientObserver for Observer {
    fn on_event(&self, state: &ClientState, event: &ClientEvent<'_>) {
        let Some(client) = device_number(&self.protocol.tag, state.device()) else {
            debug_assert!(false, "a device of another run: {:?}", state.device());
            return;
        };
        let events = &DeviceEvents::new(self.ledger.clone(), client);
        let id = |text: &str| parse_client_msg_id(&self.protocol.tag, text);
        match event {
            ClientEvent::Connecting => events.connecting(),
            ClientEvent::Connected { max_seq, .. } => {
                events.connected(*max_seq, state.last_seq);
            }
            ClientEvent::Disconnected(cause) => {
                let detail = format!("{cause:?}");
                let word = detail.split(['(', ' ']).next().unwrap_or("").to_owned();
                events.connection_ended(&word, causes::login_failure(cause), detail);
            }
            ClientEvent::Message(message) => {
                if let Some(id) = id(&message.client_msg_id) {
                    events.delivered(id);
                }
                events.processed(state.last_seq);
            }
            ClientEvent::InboxReset { .. } => events.processed(state.last_seq),
            ClientEvent::SendAcked { client_msg_id, .. } => {
                if let Some(id) = id(client_msg_id) {
                    events.acked(id);
                }
            }
            ClientEvent::SendRefused {
                client_msg_id,
                code,
            } => {
                if let Some(id) = id(client_msg_id) {
                    events.send_refused(id, causes::error_code(*code));
                }
            }
            ClientEvent::SendFailed { client_msg_id, .. } => {
                if let Some(id) = id(client_msg_id) {
                    events.send_failed(id);
                }
            }
            ClientEvent::GroupReply(_) => events.group_ready(),
            ClientEvent::Stopped(exit) => {
                if let Some(cause) = causes::exit(exit) {
                    events.stopped(cause, format!("{exit:?}"));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The future a client runs (the core's; the pool drops its exit) lives in a box of its
    /// own in the run's client pool (`crate::pool`), in the allocator's 448-byte class at 448
    /// bytes or less; 8 more take 512 bytes in every client of a run. The release build lays
    /// it out in 448; the dev build's (this test's in CI) takes 8 more, because mio keeps a
    /// selector id in each socket under debug assertions (tokio's `TcpStream` 40 bytes, not
    /// 32). It was 480 before the client kept its rare fields in one box, its connector in
    /// one pointer, its next Ping's id in 32 bits and its wait's timer in the wait itself,
    /// and 488 in the `Map` that turned its exit into `()`. In a tokio task of its own
    /// it took a 640-byte cell (header 32, scheduler, id and spawn location 24, the future's
    /// stage 8 more than the future, trailer 48, aligned to 128). It is 496 with the
    /// connection's TCP stream inline (`transport::AnyStream`: 24 bytes here for a 32-byte
    /// box fewer), 472 before that. It was 736 before the connection kept its moments in 8
    /// bytes each, 648 before the connection's wait became one poll, its sends in flight a
    /// queue made at the first send, and its frame buffers one allocation made only while
    /// either holds bytes.
    #[tokio::test]
    async fn a_client_core_fits_a_448_byte_box() {
        let connector = DynConnector::new(imlab_core::net::TcpConnector {
            target: "127.0.0.1:9".parse().unwrap(),
        });
        let (core, _handle) = Client::new(
            connector,
            ClientConfig::default(),
            ClientState::new("u1", "d1").shared(),
            parse_strategy("fixed:60s").unwrap(),
            Arc::new(imlab_core::client::NoObserver),
            1,
        );
        let task = core.run();
        let size = std::mem::size_of_val(&task);
        let bound = if cfg!(debug_assertions) { 456 } else { 448 };
        assert!(size <= bound, "the client core's future is {size} bytes");
    }

    #[test]
    fn a_device_in_the_run_is_its_cores_handle_16_bytes() {
        // Two pointers in the run's list, every client. As a `Box<dyn Device>` with the
        // client's number and the run's settings it took a 32-byte box and the 16-byte
        // pointer to it.
        let size = std::mem::size_of::<ClientHandle>();
        assert!(size <= 16, "a core's handle takes {size} bytes");
    }

    /// A run of three clients numbered from 5, on a listener that never answers a login
    /// (the clients connect and wait), its devices started in order.
    struct ThreeDevices {
        devices: Box<dyn Devices>,
        clients: ClientPool,
        transport: crate::transport::Transport,
        ledger: Arc<std::sync::Mutex<crate::ledger::LoadLedger>>,
        /// Held open for the clients' connections.
        _listener: tokio::net::TcpListener,
    }

    async fn three_devices_from_5() -> ThreeDevices {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let protocol = Arc::new(Imlab {
            tag: "t".into(),
            heartbeat: "fixed:30s".into(),
            client: client_config(
                None,
                std::time::Duration::from_secs(20),
                std::time::Duration::from_millis(200),
                BackoffConfig::default(),
            ),
            body_bytes: 8,
            xs: xs(8),
            seed: 1,
            transport: "tcp",
            population: None,
        });
        let transport = crate::transport::Transport {
            targets: crate::source::TargetAddresses::new(
                vec![listener.local_addr().unwrap()],
                std::time::Duration::from_secs(20),
            ),
            source_ips: Vec::new(),
            tls: None,
            ws: None,
        };
        let ledger = Arc::new(std::sync::Mutex::new(
            crate::ledger::LoadLedger::for_clients(5, 3),
        ));
        let clients = ClientPool::new();
        let mut devices = protocol.devices(3);
        for client in 5..8 {
            devices.start(
                client,
                transport.connector(client, None),
                DeviceEvents::new(ledger.clone(), client),
                &clients,
            );
        }
        ThreeDevices {
            devices,
            clients,
            transport,
            ledger,
            _listener: listener,
        }
    }

    /// Device `index` of the run's list is client `first + index`: of a group whose first
    /// member is user 6, the device at index 1 (client 6) creates it, and no other. (Paused
    /// time: a client shut down while its login waits ends when the wait does.)
    #[tokio::test(start_paused = true)]
    async fn a_device_of_the_list_is_its_client() {
        use crate::protocol::Device;
        let ThreeDevices {
            devices,
            clients,
            _listener,
            ..
        } = three_devices_from_5().await;
        assert_eq!(devices.len(), 3);
        let created: Vec<bool> = devices
            .iter()
            .map(|device| device.join_group(6, &[6, 7]))
            .collect();
        assert_eq!(created, [false, true, false]);
        for device in devices.iter() {
            device.shutdown();
        }
        tokio::time::timeout(std::time::Duration::from_secs(60), clients.join())
            .await
            .expect("every device ends after its shutdown");
    }

    /// The list numbers devices by their order, so a client started out of order is refused
    /// rather than given another's number.
    #[tokio::test]
    #[should_panic(expected = "a run's devices start in the order of their numbers")]
    async fn a_device_started_out_of_order_is_refused() {
        let ThreeDevices {
            mut devices,
            clients,
            transport,
            ledger,
            _listener,
        } = three_devices_from_5().await;
        devices.start(
            9,
            transport.connector(9, None),
            DeviceEvents::new(ledger, 9),
            &clients,
        );
    }

    /// A run's settings with tag `tag`, 8-byte bodies and fixed 30-second heartbeats.
    fn settings(tag: String) -> Imlab {
        Imlab {
            tag,
            heartbeat: "fixed:30s".into(),
            client: Arc::default(),
            body_bytes: 8,
            xs: xs(8),
            seed: 1,
            transport: "tcp",
            population: None,
        }
    }

    /// A client keeps its user's and device's names in one allocation: with a run's tag
    /// they take at most 32 bytes together (the allocator's 32-byte class) up to client
    /// 99,999, 16 fewer than with the tag before (decimal milliseconds and `w0`).
    #[test]
    fn a_clients_names_take_32_bytes() {
        let protocol = settings(crate::config::run_tag(1_796_515_200_000, 0));
        for client in [0, 9_999, 99_999] {
            let names = ClientState::new(protocol.user(client), protocol.device(client));
            let bytes = names.user().len() + names.device().len();
            assert!(bytes <= 32, "client {client}'s names take {bytes} bytes");
        }
    }

    /// The run's one observer knows each event's device by its name and asks the ledger
    /// whether it was logged in: an attempt that ends before the login is a login failure,
    /// a logged-in connection's end a disconnection, each of the device it names.
    #[test]
    fn the_observer_tells_each_devices_ends_apart_by_the_ledger() {
        use imlab_core::client::DisconnectCause;
        let ledger = Arc::new(std::sync::Mutex::new(
            crate::ledger::LoadLedger::for_clients(5, 3),
        ));
        let observer = Observer {
            ledger: ledger.clone(),
            protocol: Arc::new(settings("t".into())),
        };
        let six = ClientState::new("tu6", "td6");
        let seven = ClientState::new("tu7", "td7");
        let cause = DisconnectCause::ConnectionLost("reset".into());
        let lost = ClientEvent::Disconnected(&cause);
        observer.on_event(&six, &ClientEvent::Connecting);
        observer.on_event(&six, &lost);
        observer.on_event(
            &seven,
            &ClientEvent::Connected {
                connection_id: 1,
                max_seq: 0,
            },
        );
        {
            let ledger = ledger.lock().unwrap();
            assert_eq!(ledger.login_failures.get("connection_lost"), Some(&1));
            assert!(ledger.disconnects.is_empty(), "{:?}", ledger.disconnects);
            assert!(!ledger.online(6) && ledger.online(7) && !ledger.online(5));
        }
        observer.on_event(&seven, &lost);
        let ledger = ledger.lock().unwrap();
        assert_eq!(ledger.disconnects.get("ConnectionLost"), Some(&1));
        assert_eq!(ledger.login_failures.get("connection_lost"), Some(&1));
        assert!(!ledger.online(7));
    }

    #[test]
    fn a_device_name_of_the_run_gives_its_number() {
        assert_eq!(device_number("r5w0", "r5w0d17"), Some(17));
        assert_eq!(device_number("r5w0", "r5w0u17"), None);
        assert_eq!(device_number("r5w0", "r6w0d17"), None);
        assert_eq!(device_number("r5w0", "r5w0dx"), None);
    }

    #[test]
    fn a_client_message_id_carries_the_identity_back() {
        let id = MsgId {
            sender: 17,
            number: 4_000_000_001,
        };
        let text = client_msg_id("r5w0", id);
        assert_eq!(text, "r5w0d17-4000000001");
        assert_eq!(parse_client_msg_id("r5w0", &text), Some(id));
        // Another run's ids, or ids not ours, are no message of this run.
        assert_eq!(parse_client_msg_id("r6w0", &text), None);
        assert_eq!(parse_client_msg_id("r5w0", "r5w0d17"), None);
        assert_eq!(parse_client_msg_id("r5w0", "r5w0dx-1"), None);
    }
}
