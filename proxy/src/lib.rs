//! imlab-proxy: the carrier model (imlab-carrier) on real tokio sockets. Every accepted
//! connection is one flow through the model: its bytes are delayed, lost and retransmitted,
//! its NAT mapping expires when idle (a RST to the phone, or silence), faults are applied
//! over an HTTP/JSON control API, and every decision can be logged as JSON Lines.
//!
//! Modules:
//! - [`proxy`]: `Proxy::new(config)` and `Proxy::run(listener, shutdown)`, the shared state;
//! - [`flow`]: one connection's relay, which only carries out the model's decisions;
//! - [`inline`]: the same flows for an in-process client (`imlab load --carrier`): an
//!   in-memory pipe on the phone's side instead of an accepted socket;
//! - [`pipe`]: that pipe, which the simulator's radio hop uses too;
//! - [`control`]: the control API (a small HTTP/1.1 server) and its client;
//! - [`schedule`]: the faults a proxy carries out, now or on a schedule (`--scenario`);
//! - [`trace`]: the JSON Lines decision log, behind a bounded queue.

pub mod control;
pub mod flow;
pub mod inline;
pub mod pipe;
pub mod proxy;
pub mod schedule;
pub mod trace;

pub use inline::InlineStream;
pub use proxy::{Decisions, FlowView, Proxy, ProxyConfig, ProxyError};
pub use schedule::{ProxyFault, ScheduledFault};
