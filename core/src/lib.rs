//! imlab-core: the wire protocol, the IM server core, its stores, and the client core.
//!
//! The same server and client code runs in `imlab serve`, in the simulator (over turmoil
//! sockets) and in the load generator (over tokio sockets). Nothing here reads the system
//! clock or a global RNG: wall-clock time comes in as a [`clock::Clock`], randomness as a
//! seeded RNG, sockets through [`net::Listener`] and [`net::Connector`].
//!
//! Modules:
//! - [`proto`]: the generated wire messages;
//! - [`codec`]: pure frame decoding and encoding; [`framed`]: the same over async streams;
//! - [`auth`]: HMAC-signed login tokens;
//! - [`clock`], [`net`]: the injected time and sockets; [`tls`]: TLS over tokio's sockets;
//!   [`ws`]: imlab frames over WebSocket, one binary message per frame;
//! - [`store`]: the store trait and the in-memory store;
//! - [`server`]: sessions, sends, delivery, sync, groups, offline pushes;
//! - [`client`]: the device-side connection manager;
//! - [`heartbeat`]: heartbeat strategies;
//! - `fuzzing` (feature `fuzzing`): the fuzz targets' harnesses, also run by a stable test;
//! - `planted` (feature `planted-bugs`, tests only): deliberate bugs for the simulator's checker.

pub mod auth;
pub mod client;
pub mod clock;
pub mod codec;
pub mod framed;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod heartbeat;
pub mod net;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod proto;
pub mod server;
pub mod shards;
pub mod store;
pub mod tls;
pub mod ws;
