//! imlab-sim: the deterministic simulator. imlab-core's server and client cores run unchanged
//! on turmoil hosts, behind carrier proxies that model mobile NATs and links; a run ends with
//! the invariant checker's verdicts, metrics, and a trace hash that replays exactly.
//!
//! Modules:
//! - [`scenario`]: scenario files; [`carrier`]: carrier profiles and presets; [`presets`]:
//!   the presets listed with their parameters and sources;
//! - [`world`]: users, devices and chat groups, and the state hosts share;
//! - [`proxy`]: the carrier proxy (NAT and link); [`push`]: the push service;
//! - [`device`]: one device's app; [`run`]: the driver, faults, heal and quiet;
//! - [`ledger`], [`invariants`], [`metrics`], [`trace`]: what a run records and concludes;
//! - [`results`]: results.json and metrics.csv; [`sweep`]: many seeds, their spread and
//!   sweep.csv;
//! - [`energy`]: the radio energy model (LTE, 3G, Wi-Fi);
//! - [`compare`]: the heartbeat strategy x carrier matrix (`imlab heartbeat compare`).

pub mod carrier;
pub mod compare;
pub mod device;
pub mod energy;
pub mod invariants;
pub mod ledger;
pub mod metrics;
pub mod presets;
pub mod proxy;
pub mod push;
pub mod results;
pub mod run;
pub mod scenario;
pub mod sweep;
pub mod trace;
pub mod world;

/// Deliberate bugs for proving the invariant checker. The first three live in imlab-core and
/// need the `planted-bugs` feature; `volatile_store` is the simulator's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planted {
    /// The server acks before the store has the message (write-behind).
    pub ack_before_store: bool,
    /// The store stores a retried send again.
    pub skip_dedupe: bool,
    /// The client processes pushes without checking their seq.
    pub push_skips_seq_check: bool,
    /// The durable store's disk is lost on a server crash (the in-memory store is lost
    /// anyway).
    pub volatile_store: bool,
    /// The durable store answers an append before its commit is durable.
    pub ack_before_commit: bool,
}

impl Planted {
    /// Panics when a bug is asked for that this build cannot plant.
    pub fn assert_supported(&self) {
        let needs_feature = self.ack_before_store
            || self.skip_dedupe
            || self.push_skips_seq_check
            || self.ack_before_commit;
        assert!(
            cfg!(feature = "planted-bugs") || !needs_feature,
            "planted bugs in imlab-core need the `planted-bugs` feature"
        );
    }
}
