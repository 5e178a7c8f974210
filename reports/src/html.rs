//! What every report page shares: the inline style sheet, HTML text escaping, and the
//! figure block (inline SVG plus links to its PNG, SVG and CSV). Every string that came from
//! data (strategy names, notes, the scenario TOML, the command) goes through `escape` before
//! it reaches a page.

use std::fmt::Write as _;

/// Escapes the five characters that matter in HTML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The style sheet inlined in every page: readable widths, tables with tabular numbers,
/// charts scaled to the page width.
pub(crate) const PAGE_STYLE: &str = "
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

/// One chart of a page: drawn (with its SVG markup for inlining) or skipped with a reason.
pub(crate) struct Figure {
    pub basename: &'static str,
    pub title: &'static str,
    pub caption: String,
    /// The CSV file holding the chart's numbers, linked under the chart.
    pub csv: &'static str,
    pub svg_markup: Result<String, String>,
}

pub(crate) fn write_figure(page: &mut String, figure: &Figure) {
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
pub(crate) fn responsive_svg(svg: &str) -> String {
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

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape(r#"<b a="x">Tom & 'Jerry'</b>"#),
            "&lt;b a=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
    }

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
