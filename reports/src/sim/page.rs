//! The simulation run's `index.html`: self-contained (inline CSS and SVG, no script, no
//! external URL), every data string HTML-escaped.

use std::fmt::Write as _;

use super::{RESULTS_JSON, STORMS_CSV, SimReport};
use crate::html::{Figure, PAGE_STYLE, escape, write_figure};

fn seconds(value: Option<f64>) -> String {
    value.map_or("never".to_string(), |s| format!("{s:.1}"))
}

/// A table; `header` empty for one without a header row.
fn table(page: &mut String, header: &[&str], rows: &[Vec<String>]) {
    page.push_str("<div class=\"table-wrap\">\n<table>\n");
    if !header.is_empty() {
        page.push_str("<thead><tr>");
        for cell in header {
            let _ = write!(page, "<th>{}</th>", escape(cell));
        }
        page.push_str("</tr></thead>\n");
    }
    page.push_str("<tbody>\n");
    for row in rows {
        page.push_str("<tr>");
        for cell in row {
            let _ = write!(page, "<td>{}</td>", escape(cell));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody>\n</table>\n</div>\n");
}

pub(crate) fn render(report: &SimReport, figures: &[Figure]) -> String {
    let title = format!("imlab sim run: {} (seed {})", report.scenario, report.seed);
    let mut page = String::new();
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(page, "<title>{}</title>", escape(&title));
    page.push_str("<style>");
    page.push_str(PAGE_STYLE);
    page.push_str("</style>\n</head>\n<body>\n<main>\n");
    let _ = writeln!(page, "<h1>{}</h1>", escape(&title));
    let _ = writeln!(
        page,
        "<p class=\"meta\">{} &middot; {} server crashes</p>",
        if report.ok { "passed" } else { "FAILED" },
        report.storms.crashes.len()
    );

    page.push_str("<h2 id=\"summary\">Summary</h2>\n");
    let rows: Vec<Vec<String>> = report
        .summary
        .iter()
        .map(|(k, v)| vec![k.clone(), v.clone()])
        .collect();
    table(&mut page, &[], &rows);

    page.push_str("<h2 id=\"invariants\">Invariants</h2>\n");
    let rows: Vec<Vec<String>> = report
        .invariants
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.violation
                    .clone()
                    .map_or("held".to_string(), |v| format!("BROKEN: {v}")),
            ]
        })
        .collect();
    table(&mut page, &["invariant", "verdict"], &rows);

    page.push_str("<h2 id=\"reproduce\">Reproduce</h2>\n");
    let _ = writeln!(
        page,
        "<p>The same seed gives the same run, event for event (the same trace hash):</p>\n\
         <pre><code>{}</code></pre>",
        escape(&report.replay)
    );

    let s = &report.storms;
    page.push_str("<h2 id=\"storms\">Reconnection storms</h2>\n");
    if let Some(healed_at_s) = s.healed_at_s {
        let _ = writeln!(
            page,
            "<p>The busiest seconds are those of the scenario, before the heal at {healed_at_s} s: \
             every device then reconnects at once to converge before the invariants are \
             checked (that second is in {STORMS_CSV} and the chart).</p>"
        );
    }
    table(
        &mut page,
        &["over the run", "", "at (s)"],
        &[
            vec![
                "most logins in one second (devices)".into(),
                s.logins_per_s_peak.to_string(),
                s.logins_peak_at_s.to_string(),
            ],
            vec![
                "most accepts in one second (server)".into(),
                s.accepts_per_s_peak.to_string(),
                s.accepts_peak_at_s.to_string(),
            ],
            vec![
                "most frames one connection's outbox held".into(),
                s.outbox_high_water.to_string(),
                String::new(),
            ],
            vec![
                "most jobs one group fan-out queue held".into(),
                s.fanout_queue_high_water.to_string(),
                String::new(),
            ],
        ],
    );
    if s.crashes.is_empty() {
        page.push_str("<p>The server did not crash in this run.</p>\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .crashes
            .iter()
            .enumerate()
            .map(|(n, c)| {
                vec![
                    (n + 1).to_string(),
                    format!("{:.0}", c.crashed_at_s),
                    c.restarted_at_s
                        .map_or("never".to_string(), |at| format!("{at:.0}")),
                    match c.devices_left {
                        0 => format!("{} of {}", c.devices_back, c.devices_connected),
                        left => format!(
                            "{} of {} ({left} stopped trying)",
                            c.devices_back, c.devices_connected
                        ),
                    },
                    seconds(c.back_50_s),
                    seconds(c.back_90_s),
                    seconds(c.back_99_s),
                    c.logins_per_s_peak.to_string(),
                    c.accepts_per_s_peak.to_string(),
                ]
            })
            .collect();
        table(
            &mut page,
            &[
                "crash",
                "at (s)",
                "restarted (s)",
                "devices back",
                "50% back (s after restart)",
                "90% back",
                "99% back",
                "peak logins/s",
                "peak accepts/s",
            ],
            &rows,
        );
    }
    for figure in figures {
        write_figure(&mut page, figure);
    }

    page.push_str("<h2 id=\"results\">Results</h2>\n");
    let _ = writeln!(
        page,
        "<p>The run's own files: logins and accepts per simulated second in \
         <a href=\"{STORMS_CSV}\">{STORMS_CSV}</a>, per device group in \
         <a href=\"metrics.csv\">metrics.csv</a>, everything in \
         <a href=\"{RESULTS_JSON}\">{RESULTS_JSON}</a>:</p>\n<pre>{}</pre>",
        escape(&report.results_json)
    );
    page.push_str("</main>\n</body>\n</html>\n");
    page
}
