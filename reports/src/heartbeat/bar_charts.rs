//! The three grouped bar charts of the heartbeat report: battery % per day (log scale), silent
//! disconnects per day, and p99 message delay (log scale), each strategy a bar within each
//! carrier profile's group.

use super::display::Display;
use super::{HEARTBEAT_CSV, HeartbeatRow};
use crate::chart::bars::GroupedBars;

/// What `write_heartbeat_report` needs to render and caption one chart: basename, title,
/// caption, CSV holding its numbers, and the chart (None when there is nothing to draw).
pub(crate) type FigureSpec = (
    &'static str,
    &'static str,
    String,
    &'static str,
    Option<GroupedBars>,
);

const SIZE_PX: (u32, u32) = (1200, 700);

pub(crate) fn battery(display: &Display) -> FigureSpec {
    let title = "Battery drain per day";
    let chart = grouped(
        display,
        title,
        "% of an 11.5 Wh battery per day spent on the IM connection's radio; log scale; lower is better",
        "battery per day (%, log scale)",
        true,
        |row| row.battery_pct_per_day,
    );
    let caption = "Radio energy the IM connection costs per day (heartbeats, reconnects, \
                   messages and the radio tails they cause), as a percentage of an 11.5 Wh \
                   phone battery, on a log scale: each gridline step is the same ratio, so \
                   strategies costing 3% and 15% a day stay apart even next to one costing \
                   200%. Lower is better."
        .to_string();
    ("battery", title, caption, HEARTBEAT_CSV, chart)
}

pub(crate) fn silent_disconnects(display: &Display) -> FigureSpec {
    let title = "Silent disconnects per day";
    let chart = grouped(
        display,
        title,
        "NAT mappings that expired under a live connection; lower is better",
        "silent disconnects per day",
        false,
        |row| row.silent_disconnects_per_day,
    );
    let caption = "How often per day the carrier's NAT dropped the mapping of a connection \
                   both ends still believed open. Until the phone notices, messages to it \
                   wait. Lower is better; a flat bar on the axis is zero or close to it, no bar means no row."
        .to_string();
    ("silent_disconnects", title, caption, HEARTBEAT_CSV, chart)
}

pub(crate) fn delay_p99(display: &Display) -> FigureSpec {
    let title = "p99 message delay";
    let chart = grouped(
        display,
        title,
        "99th percentile from send to the recipient device's app log; log scale; lower is better",
        "p99 delay (s, log scale)",
        true,
        |row| row.delay_ms_p99 as f64 / 1000.0,
    );
    let caption = "99th percentile of message delay, from the sender's send to the \
                   recipient device's app log, in seconds on a log scale. Lower is better."
        .to_string();
    ("delay_p99", title, caption, HEARTBEAT_CSV, chart)
}

fn grouped(
    display: &Display,
    title: &str,
    subtitle: &str,
    y_desc: &str,
    log_scale: bool,
    value: impl Fn(&HeartbeatRow) -> f64,
) -> Option<GroupedBars> {
    if display.report.rows.is_empty() {
        return None;
    }
    let strategies: Vec<&String> = display
        .strategies
        .iter()
        .filter(|s| display.report.rows.iter().any(|r| &r.strategy == *s))
        .collect();
    let values = strategies
        .iter()
        .map(|strategy| {
            display
                .profiles
                .iter()
                .map(|profile| display.row(strategy, profile).map(&value))
                .collect()
        })
        .collect();
    Some(GroupedBars {
        title: title.to_string(),
        subtitle: Some(subtitle.to_string()),
        x_desc: "carrier profile".to_string(),
        y_desc: y_desc.to_string(),
        groups: display.profiles.clone(),
        series: strategies
            .iter()
            .map(|s| display.style(s).clone())
            .collect(),
        values,
        log_scale,
        size_px: SIZE_PX,
    })
}
