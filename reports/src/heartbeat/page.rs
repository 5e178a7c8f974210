//! The report's `index.html`: one self-contained page (inline CSS and inline SVG charts, no
//! script, no external URL) with a reading guide, the notes, the charts, the full table, the
//! scenario and the command that reproduces it. All data text is HTML-escaped.

use std::fmt::Write as _;

use super::display::Display;
use super::{Figure, HeartbeatReport, HeartbeatRow};
use crate::format;
use crate::html::escape;

const STYLE: &str = "
body { font-family: 'DejaVu Sans', system-ui, -apple-system, 'Segoe UI', sans-serif;
  color: #212529; background: #fff; margin: 0; line-height: 1.5; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 20px 64px; }
h1 { font-size: 1.8rem; margin: 0 0 4px; }
h2 { font-size: 1.3rem; margin: 40px 0 8px; border-bottom: 1px solid #dee2e6; padding-bottom: 4px; }
.meta { color: #5a6068; margin: 0 0 16px; }
dl.guide { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dl.guide dt { font-weight: bold; }
dl.guide dd { margin: 0; }
ul.notes li { margin: 4px 0; }
figure { margin: 24px 0; }
figure svg { width: 100%; height: auto; display: block; border: 1px solid #e9ecef; }
figcaption { color: #495057; margin-top: 6px; }
figcaption a { color: #1f5fa8; }
p.skipped { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 5px; border-bottom: 1px solid #e9ecef; text-align: right; white-space: nowrap; }
td:nth-child(-n+2) { white-space: normal; overflow-wrap: break-word; max-width: 14em; }
th { background: #f1f3f5; vertical-align: bottom; white-space: normal; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
tr.profile-start td { border-top: 2px solid #adb5bd; }
tr.front td { background: #eef6ee; }
td.front { color: #2b7a2b; font-weight: bold; text-align: center; }
pre { background: #f8f9fa; border: 1px solid #e9ecef; padding: 12px; overflow-x: auto; }
";

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
        "Message delay from the sender's send to the recipient device's app log.",
    ),
    (
        "Reachable",
        "Fraction of the time a device was truly reachable: connected, with a live NAT mapping.",
    ),
    (
        "Settled interval",
        "The heartbeat interval the strategy ended up using.",
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
    page.push_str(STYLE);
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

fn write_figure(page: &mut String, figure: &Figure) {
    let _ = writeln!(
        page,
        "<h2 id=\"{}\">{}</h2>",
        figure.basename,
        escape(figure.title)
    );
    match &figure.svg_markup {
        Ok(svg) => {
            let _ = writeln!(
                page,
                "<figure>\n{}\n<figcaption>{} Files: <a href=\"{base}.png\">{base}.png</a>, \
                 <a href=\"{base}.svg\">{base}.svg</a>, numbers in <a href=\"{csv}\">{csv}</a>.\
                 </figcaption>\n</figure>",
                responsive_svg(svg),
                escape(&figure.caption),
                base = figure.basename,
                csv = figure.csv,
            );
        }
        Err(reason) => {
            let _ = writeln!(page, "<p class=\"skipped\">{}</p>", escape(reason));
        }
    }
}

/// Plotters writes fixed `width`/`height` next to the viewBox; dropping them lets CSS scale
/// the chart to the page width.
fn responsive_svg(svg: &str) -> String {
    let Some(start) = svg.find("<svg") else {
        return svg.to_string();
    };
    let Some(end) = svg[start..].find('>').map(|e| start + e) else {
        return svg.to_string();
    };
    let open_tag: String = svg[start..end]
        .split(' ')
        .filter(|attribute| !attribute.starts_with("width=") && !attribute.starts_with("height="))
        .collect::<Vec<_>>()
        .join(" ");
    format!("{}{} role=\"img\"{}", &svg[..start], open_tag, &svg[end..])
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

#[cfg(test)]
mod tests {
    #[test]
    fn responsive_svg_drops_fixed_size_only() {
        let svg = r#"<svg width="1200" height="700" viewBox="0 0 1200 700" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="10" height="10"/></svg>"#;
        let out = super::responsive_svg(svg);
        assert!(
            out.starts_with(
                r#"<svg viewBox="0 0 1200 700" xmlns="http://www.w3.org/2000/svg" role="img">"#
            ),
            "{out}"
        );
        assert!(out.contains(r#"<rect x="0" y="0" width="10" height="10"/>"#));
    }
}
