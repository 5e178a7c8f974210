//! The load report's `index.html`: one self-contained page (inline CSS and inline SVG, no
//! script, no external URL) with the summary table, a reading guide, the charts, links to the
//! run's own files and its results JSON. All data text is HTML-escaped.

use std::fmt::Write as _;

use super::{LoadReport, RESULTS_JSON, TIMESERIES_CSV};
use crate::html::{Figure, PAGE_STYLE, escape, write_figure};

/// Reading guide: (term, meaning), shown after the summary.
const GUIDE: [(&str, &str); 6] = [
    (
        "connect",
        "Time from opening the socket to the server accepting the login.",
    ),
    (
        "ack",
        "Time from sending a message to the server acknowledging that it stored it.",
    ),
    (
        "deliver",
        "Time from sending a message to the recipient client receiving it.",
    ),
    (
        "reconnect",
        "Time from losing a connection to being logged in again.",
    ),
    (
        "Percentile",
        "p99 = 25 ms means 99% of operations took at most 25 ms and 1% took longer. The \
         spectrum chart shows every percentile at once; the right end is the worst case seen.",
    ),
    (
        "Per second",
        "Counts are events within that second of the run; connected clients are counted at \
         its end.",
    ),
];

pub(crate) fn render(report: &LoadReport, figures: &[Figure]) -> String {
    let mut page = String::new();
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(page, "<title>{}</title>", escape(&report.title));
    page.push_str("<style>");
    page.push_str(PAGE_STYLE);
    page.push_str("</style>\n</head>\n<body>\n<main>\n");

    let _ = writeln!(page, "<h1>{}</h1>", escape(&report.title));
    let _ = writeln!(
        page,
        "<p class=\"meta\">{} seconds of data &middot; {} latency spectra</p>",
        report.seconds.len(),
        report.spectra.len(),
    );

    page.push_str("<h2 id=\"summary\">Summary</h2>\n");
    if report.summary.is_empty() {
        page.push_str("<p class=\"skipped\">No summary rows in the report.</p>\n");
    } else {
        page.push_str("<div class=\"table-wrap\">\n<table>\n<tbody>\n");
        for (key, value) in &report.summary {
            let _ = writeln!(
                page,
                "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                escape(key),
                escape(value)
            );
        }
        page.push_str("</tbody>\n</table>\n</div>\n");
    }

    page.push_str("<h2 id=\"reproduce\">Reproduce</h2>\n");
    if report.command.is_empty() {
        page.push_str("<p class=\"skipped\">These results do not record their command.</p>\n");
    } else {
        let _ = writeln!(
            page,
            "<p>Seed <strong>{}</strong> (the send schedule). Run against the same server \
             build and setup with:</p>\n<pre><code>{}</code></pre>",
            report.seed,
            escape(&report.command)
        );
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

    page.push_str("<h2 id=\"results\">Results</h2>\n");
    let _ = writeln!(
        page,
        "<p>The run's own files: per-second numbers in <a href=\"{TIMESERIES_CSV}\">\
         {TIMESERIES_CSV}</a>, every measurement in <a href=\"{RESULTS_JSON}\">{RESULTS_JSON}</a>:\
         </p>\n<pre>{}</pre>",
        escape(&report.results_json)
    );
    page.push_str("</main>\n</body>\n</html>\n");
    page
}
