//! imlab-loadgen: a real-socket load generator. Every virtual device speaks a protocol through
//! one seam ([`protocol`]): imlab's own (imlab-core's client core, the code the simulator
//! runs) or another server's; sends follow an open-loop
//! schedule planned in advance, and a ledger follows every message until it is acked and
//! delivered to every recipient device.
//!
//! Modules: [`config`] (what to run), [`ledger`] (messages, deliveries, connections),
//! [`run`] (ramp, schedule, drain), [`pacer`] (the schedule's wake-ups, on time to tens of µs), [`results`] (results.json, timeseries.csv, summary),
//! [`histograms`] (the HdrHistogram interval log), [`merge`] (results of several machines),
//! [`crossings`] (messages between the workers of one run, judged at the merge),
//! [`source`] (source addresses and the open-file limit), [`target`] (`--target` parsed and
//! resolved), [`protocol`] (the seam every protocol implements, and each protocol's adapter),
//! [`transport`] (TCP, TLS under any protocol), [`carrier`] (`--carrier`: the carrier model on
//! every connection, in process), [`population`] (`--scenario`: a scenario's devices, users,
//! chats and traffic), [`pool`] (the clients' futures polled in groups, a task a group),
//! [`causes`] (refusal cause words).

pub mod carrier;
pub mod causes;
pub mod config;
pub mod crossings;
pub mod histograms;
pub mod ledger;
pub mod merge;
pub mod pacer;
pub mod pool;
pub mod population;
pub mod protocol;
pub mod results;
pub mod run;
pub mod source;
pub mod target;
pub mod transport;
