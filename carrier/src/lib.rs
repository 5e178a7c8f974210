//! imlab-carrier: the carrier network model, pure and runtime-free. Time, bytes and direction
//! go in; deliver-at, drop, reset or break come out. The simulator's turmoil proxy
//! (`imlab-sim`), the real-socket proxy (`imlab-proxy`, `imlab proxy`) drive the same model,
//! so one profile means the same thing everywhere. No tokio, no turmoil, no clock, no global
//! RNG here: every flow owns a `ChaCha8Rng` seeded from the run's seed and a stable identity
//! (parked as its seed and position between transmissions: 16 bytes instead of 320 a flow).
//!
//! Modules:
//! - [`profile`]: carrier profiles and the built-in presets, with their sources;
//! - [`table`]: the TOML carrier table (a scenario's `[carriers.X]`, a proxy's profile file);
//! - [`fault`]: the fault vocabulary (names, scopes, parameters) shared by scenario files,
//!   `imlab proxy`'s control API and the load generator;
//! - [`blocked`]: a carrier's fault windows (outages, partitions, the other carrier faults);
//! - [`model`]: one flow's NAT mapping and link, the decisions a driver carries out.

pub mod blocked;
pub mod fault;
pub mod model;
pub mod profile;
pub mod table;

pub use blocked::{Blocked, Window};
pub use fault::{Direction, FaultParams, GilbertElliott, LinkFault, LinkWindow, ParamError, Scope};
pub use model::{
    Closed, Cut, FlowModel, Link, PhoneSend, SEGMENT_BYTES, ServerSend, draw_nat_timeout, flow_seed,
};
pub use profile::{
    CarrierProfile, OnExpiry, Outages, PRESET_NAMES, RTO_INITIAL, RadioKind, Refresh, preset,
};
pub use table::{CarrierTable, ProfileFileError, TableError};
