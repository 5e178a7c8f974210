//! imlab's own protocol: each device is imlab-core's client core (the code the simulator
//! runs), over the run's transport. A message's identity travels as its client message id,
//! `<tag>d<sender>-<number>`, which the server returns on every ack and delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use imlab_core::client::{
    BackoffConfig, Client, ClientConfig, ClientEvent, ClientHandle, ClientObserver, ClientState,
    IssuedCredentials, IssuedToken, TokenIssuer,
};
use imlab_core::clock::{Clock, SystemClock};
use imlab_core::heartbeat::{AppState, parse_strategy};
use imlab_core::proto::Target;

use super::{Describe, Device, DeviceEvents, Full, MsgId, Outgoing, Protocol, To};
use crate::causes;
use crate::pool::ClientPool;
use crate::population::Population;
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

    /// The user number of `client`.
    fn user_of(&self, client: u32) -> u32 {
        self.population
            .as_ref()
            .map_or(client, |population| population.user_of(client))
    }

    /// True for the device of its user that creates the user's groups.
    fn first_device_of_user(&self, client: u32) -> bool {
        self.population.as_ref().is_none_or(|population| {
            population.users[population.user_of(client) as usize].first() == Some(&client)
        })
    }

    fn heartbeat_of(&self, client: u32) -> &str {
        match &self.population {
            Some(population) => &population.group_of(client).heartbeat,
            None => &self.heartbeat,
        }
    }

    fn body_bytes_of(&self, client: u32) -> usize {
        match &self.population {
            Some(population) => population.group_of(client).body_bytes,
            None => self.body_bytes,
        }
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

    fn start(
        &self,
        client: u32,
        connector: DynConnector,
        events: DeviceEvents,
        clients: &ClientPool,
    ) -> Box<dyn Device> {
        let observer = Arc::new(Observer {
            events,
            protocol: self.clone(),
            connected: AtomicBool::new(false),
        });
        let (core, handle) = Client::new(
            connector,
            self.client.clone(),
            ClientState::new(
                self.user(self.user_of(client)),
                format!("{}d{client}", self.tag),
            )
            .shared(),
            parse_strategy(self.heartbeat_of(client))
                .expect("the heartbeat was validated before the run"),
            observer,
            self.seed ^ u64::from(client),
        );
        // The core's future itself, not an async block awaiting it: a block would hold the
        // core (about 700 bytes) beside the future that owns it, in every client's slot. The
        // pool drops its exit (the observer has seen it).
        clients.spawn(core.run());
        Box::new(ImlabDevice {
            handle,
            client,
            protocol: self.clone(),
        })
    }
}

/// What a run holds per device besides its task: the body is sliced at each send, not kept.
struct ImlabDevice {
    handle: ClientHandle,
    client: u32,
    protocol: Arc<Imlab>,
}

impl Device for ImlabDevice {
    fn send(&self, message: Outgoing) -> Result<(), Full> {
        let to = match message.to {
            To::Peer(peer) => Target::Peer(self.protocol.user(peer)),
            To::Group(group) => Target::Group(self.protocol.group(group)),
        };
        self.handle
            .send_as(
                client_msg_id(&self.protocol.tag, message.id),
                to,
                self.protocol
                    .xs
                    .slice(..self.protocol.body_bytes_of(self.client)),
            )
            .map_err(|_| Full)
    }

    fn join_group(&self, group: u32, members: &[u32]) -> bool {
        // The first member (its first device) creates the group with the others in it; its
        // reply confirms.
        if members.first() != Some(&self.protocol.user_of(self.client))
            || !self.protocol.first_device_of_user(self.client)
        {
            return false;
        }
        let others = members[1..]
            .iter()
            .map(|m| self.protocol.user(*m))
            .collect();
        self.handle
            .create_group(&self.protocol.group(group), others)
            .is_ok()
    }

    fn shutdown(&self) {
        let _ = self.handle.shutdown();
    }

    fn set_app_state(&self, state: AppState) -> bool {
        let _ = self.handle.set_app_state(state);
        let _ = match state {
            AppState::Inactive => self.handle.go_offline(),
            AppState::Foreground | AppState::Background => self.handle.go_online(),
        };
        true
    }
}

/// The client core's events, into the ledger.
struct Observer {
    events: DeviceEvents,
    /// The run's settings (their tag reads message ids), shared rather than copied.
    protocol: Arc<Imlab>,
    /// Whether the connection is logged in now.
    connected: AtomicBool,
}

impl ClientObserver for Observer {
    fn on_event(&self, state: &ClientState, event: &ClientEvent<'_>) {
        let events = &self.events;
        let id = |text: &str| parse_client_msg_id(&self.protocol.tag, text);
        match event {
            ClientEvent::Connecting => events.connecting(),
            ClientEvent::Connected { max_seq, .. } => {
                self.connected.store(true, Ordering::Relaxed);
                events.connected(*max_seq, state.last_seq);
            }
            ClientEvent::Disconnected(cause) => {
                if self.connected.swap(false, Ordering::Relaxed) {
                    let text = format!("{cause:?}");
                    events.disconnected(text.split(['(', ' ']).next().unwrap_or(""));
                } else {
                    events.login_failed(causes::login_failure(cause), format!("{cause:?}"));
                }
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
    fn a_device_fits_a_32_byte_box() {
        // The core's handle (two pointers), the client's number and the run's settings, in
        // every client's box: jemalloc's 32-byte class. With the handle keeping its own
        // bound on queued sends it took 40, so 48.
        let size = std::mem::size_of::<ImlabDevice>();
        assert!(size <= 32, "a device takes {size} bytes");
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
