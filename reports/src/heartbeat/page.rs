//! The report's `index.html`: one self-contained page (inline CSS and inline SVG charts, no
//! script, no external URL) with a reading guide, the notes, the charts, the full table, the
//! scenario and the command that reproduces it. All data text is HTML-escaped.

use std::fmt::Write as _;

use super::display::Display;
use super::{HeartbeatReport, HeartbeatRow};
use crate::format;
use crate::html::Figure;
use crate::html::{PAGE_STYLE, escape, write_figure};

/// Reading guide: (term, meaning), shown before the charts.
const GUIDE: [(&str, &str); 9] = [
    (
        "Battery % per day",
        "Radio energy the IM connection costs per day (heartbeats, reconnects, messages and \
         the radio tails they cause) as a percentage of an 11.5 Wh phone battery. \
         Energy J per day is the same figure in joules.",
    ),
    (
        "Heartbeats per day",
        "Keep-alive packets each device sends per day.",
    ),
    (
        "Silent disconnects per day",
        "NAT mappings that expired under a live connection: both ends think the connection \
         is open, but nothing gets through until the phone notices and reconnects.",
    ),
    (
        "Reconnects per day",
        "Logins after each device's first, per device per day.",
    ),
    (
        "Delay p50 / p99 / max",
        "Message delay from the sender's send to the recipient device's app log. Each \
         (strategy, profile) cell is a simulation of its own, so sender and recipient both \
         run the row's strategy, and a cell measures the same whatever else the matrix holds.",
    ),
    (
        "Reachable",
        "Fraction of the time a device was truly reachable: connected, with a live NAT mapping.",
    ),
    (
        "Settled interval",
        "The heartbeat interval the strategy ended up using: over the run's last quarter, the \
         one in force for most of the time (the median of its intervals weighted by their \
         length; a plain median of its Pings would favour the short active-app intervals, \
         which send more Pings).",
    ),
    (
        "Server heartbeats /s per million",
        "Heartbeats the server fleet receives per second for every million online users.",
    ),
    (
        "Pareto chart",
        "Battery per day against p99 delay: lower-left is better. Strategies on the Pareto \
         front (ringed, and marked in the table) are not beaten on both by any other strategy \
         on that profile.",
    ),
];

pub(crate) fn render(report: &HeartbeatReport, display: &Display, figures: &[Figure]) -> String {
    let mut page = String::new();
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    page.push_str("<title>imlab heartbeat report</title>\n<style>");
    page.push_str(PAGE_STYLE);
    page.push_str("</style>\n</head>\n<body>\n<main>\n");

    page.push_str("<h1>Heartbeat strategies: battery versus delay</h1>\n");
    let _ = writeln!(
        page,
        "<p class=\"meta\">{} strategies on {} carrier profiles &middot; {} devices per group \
         &middot; {} simulated &middot; seed {}</p>",
        display.strategies.len(),
        display.profiles.len(),
        report.devices_per_group,
        escape(&format::duration_s(report.duration_h * 3600.0)),
        report.seed,
    );

    page.push_str("<h2 id=\"findings\">Findings</h2>\n");
    if report.notes.is_empty() {
        page.push_str("<p>No findings were recorded for this run.</p>\n");
    } else {
        page.push_str("<ul class=\"notes\">\n");
        for note in &report.notes {
            let _ = writeln!(page, "<li>{}</li>", escape(note));
        }
        page.push_str("</ul>\n");
    }

    page.push_str("<h2 id=\"guide\">How to read this report</h2>\n<dl class=\"guide\">\n");
    for (term, meaning) in GUIDE {
        let _ = writeln!(
            page,
            "<dt>{}</dt><dd>{}</dd>",
            escape(term),
            escape(meaning)
        );
    }
    page.push_str("</dl>\n");

    for figure in figures {
        write_figure(&mut page, figure);
    }

    page.push_str("<h2 id=\"table\">All measurements</h2>\n");
    write_table(&mut page, report, display);

    page.push_str("<h2 id=\"scenario\">Scenario</h2>\n");
    let _ = writeln!(page, "<pre>{}</pre>", escape(&report.scenario_toml));
    page.push_str("<h2 id=\"reproduce\">Reproduce</h2>\n");
    let _ = writeln!(
        page,
        "<p>Seed <strong>{}</strong>. The same command and seed produce the same numbers:</p>\n\
         <pre><code>{}</code></pre>",
        report.seed,
        escape(&report.command)
    );
    page.push_str("</main>\n</body>\n</html>\n");
    page
}

const COLUMNS: [&str; 14] = [
    "Strategy",
    "Profile",
    "Heartbeats per day",
    "Energy J per day",
    "Battery % per day",
    "Silent disconnects per day",
    "Reconnects per day",
    "Delay p50",
    "Delay p99",
    "Delay max",
    "Reachable",
    "Settled interval",
    "Server heartbeats /s per million",
    "Pareto front",
];

fn write_table(page: &mut String, report: &HeartbeatReport, display: &Display) {
    if report.rows.is_empty() {
        page.push_str("<p class=\"skipped\">No rows in the report.</p>\n");
        return;
    }
    page.push_str("<div class=\"table-wrap\">\n<table>\n<thead><tr>");
    for column in COLUMNS {
        let _ = write!(page, "<th>{}</th>", escape(column));
    }
    page.push_str("</tr></thead>\n<tbody>\n");
    let mut previous_profile: Option<&str> = None;
    for index in display.table_order() {
        let row = &report.rows[index];
        let on_front = display.on_front[index];
        let mut classes = Vec::new();
        if previous_profile.is_some_and(|p| p != row.profile) {
            classes.push("profile-start");
        }
        if on_front {
            classes.push("front");
        }
        previous_profile = Some(&row.profile);
        let class = if classes.is_empty() {
            String::new()
        } else {
            format!(" class=\"{}\"", classes.join(" "))
        };
        let _ = write!(page, "<tr{class}>");
        for cell in cells(row) {
            let _ = write!(page, "<td>{}</td>", escape(&cell));
        }
        let mark = if on_front { "&#10003;" } else { "" };
        let _ = writeln!(page, "<td class=\"front\">{mark}</td></tr>");
    }
    page.push_str("</tbody>\n</table>\n</div>\n");
}

/// The table cells of one row, formatted for reading; the CSV keeps the raw numbers.
fn cells(row: &HeartbeatRow) -> [String; 13] {
    let delay = |ms: u64| format::duration_s(ms as f64 / 1000.0);
    [
        row.strategy.clone(),
        row.profile.clone(),
        format::number(row.heartbeats_per_day),
        format::number(row.energy_j_per_day),
        format::number(row.battery_pct_per_day),
        format::number(row.silent_disconnects_per_day),
        format::number(row.reconnects_per_day),
        delay(row.delay_ms_p50),
        delay(row.delay_ms_p99),
        delay(row.delay_ms_max),
        format!("{}%", format::number(row.reachable_fraction * 100.0)),
        format::duration_s(row.settled_interval_s),
        format::number(row.server_heartbeats_per_s_per_million),
    ]
}
