//! imlab-sim: the deterministic simulator.
//!
//! Modules:
//! - [`energy`]: the radio energy model (LTE, 3G, Wi-Fi).

pub mod energy;
