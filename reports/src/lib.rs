//! imlab-reports turns measured results into files a person reads: CSV next to every chart,
//! charts as PNG and SVG, and one self-contained HTML page. It knows the results format,
//! never the server or the simulator, and it never recomputes a measurement: it only sorts
//! and selects rows for display (a Pareto front is such a selection).
//!
//! Modules:
//! - `heartbeat`: the heartbeat-strategy report (`write_heartbeat_report`,
//!   `read_heartbeat_report` to regenerate it from its own directory) and its row types.
//! - `load`: the load-test report (`write_load_report`, `read_timeseries_csv`): latency
//!   percentile spectra, delivery latency and connections per second.
//! - `sim`: the page of one simulation run (`write_sim_report`, `read_sim_report` to
//!   regenerate it from the run's `results.json` and `storms.csv`): verdict, invariants,
//!   replay command, and the reconnection storms (logins and accepts per simulated second,
//!   one chart per server crash).
//! - `pareto`: `pareto_front`, the display selection of non-dominated points.
//! - `timeline`: one simulation run's lanes, spans and marks as a zoomable page
//!   (`write_timeline`), the invariant's culprit highlighted.
//! - `chart` (private): font registration, PNG+SVG rendering, axes, legends, and the grouped
//!   bar chart shared by reports.
//! - `html` (private): escaping, the shared style sheet and the figure block of a page.
//! - `format` (private): number and duration formatting shared by charts and pages.
//! - `error` (private): `ReportError`, re-exported here.

mod chart;
mod csv_out;
mod error;
mod format;
pub mod heartbeat;
mod html;
pub mod load;
pub mod pareto;
pub mod sim;
pub mod timeline;

pub use error::ReportError;
