//! The timeline page of one simulation run (`imlab sim run --timeline`, and every shrunk
//! failure of `imlab sim fuzz`): one lane per involved device and one for the server, with
//! spans (connections, NAT mappings, faults) and marks (heartbeats, sends, acks, deliveries,
//! NAT expiries, app events) on a zoomable time axis, and the marks of the message that broke
//! an invariant highlighted.
//!
//! The page is self-contained: the data is inlined as JSON and drawn into an SVG by a short
//! script (wheel to zoom around the pointer, drag to pan, double-click to reset). The view
//! opens centred on the first highlighted mark. Whoever builds a [`Timeline`] decides what is
//! in it; this module only draws what it is given.

use std::path::Path;

use serde::Serialize;

use crate::ReportError;
use crate::html::escape;

/// A span of time in a lane (a connection, a NAT mapping, a fault window).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Span {
    /// Start, ms of simulated time.
    pub start_ms: u64,
    /// End, ms.
    pub end_ms: u64,
    /// What it is: `connected`, `nat`, `fault` (drawn in its own colour and row).
    pub kind: String,
    /// Shown on hover.
    pub label: String,
}

/// An instant in a lane.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mark {
    /// When, ms of simulated time.
    pub at_ms: u64,
    /// What it is: `heartbeat`, `send`, `ack`, `deliver`, `nat_expired`, `flow`, `app`,
    /// `wakeup`, `fault`.
    pub kind: String,
    /// Shown on hover (and searched for the highlight).
    pub label: String,
    /// True for the marks of what broke an invariant.
    pub highlight: bool,
}

/// One lane: a device or the server.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct Lane {
    /// Its name (`server`, `d14`).
    pub name: String,
    /// A note beside the name (its group, carrier).
    pub note: String,
    /// Spans, in any order.
    pub spans: Vec<Span>,
    /// Marks, in any order.
    pub marks: Vec<Mark>,
    /// True when the lane itself is named by a violation.
    pub highlight: bool,
}

/// A whole timeline.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct Timeline {
    /// Page title (the scenario).
    pub title: String,
    /// The run: seed, trace hash, the replay command.
    pub subtitle: String,
    /// The end of the time axis, ms.
    pub end_ms: u64,
    /// Lanes, top to bottom.
    pub lanes: Vec<Lane>,
    /// Each invariant and its violation, if any.
    pub verdicts: Vec<(String, Option<String>)>,
    /// What is highlighted, in words (empty when every invariant held).
    pub highlight: String,
    /// Things left out (marks beyond a lane's bound), in words.
    pub notes: Vec<String>,
}

const TIMELINE_STYLE: &str = "
body { font-family: 'DejaVu Sans', system-ui, sans-serif; color: #212529; margin: 0; }
main { padding: 16px 20px 40px; }
h1 { font-size: 1.5rem; margin: 0 0 4px; }
.meta { color: #5a6068; margin: 0 0 8px; }
p.highlight { background: #fff3cd; border-left: 4px solid #e8590c; padding: 6px 10px; }
ul.verdicts { margin: 4px 0 12px; padding-left: 20px; }
li.violated { color: #c92a2a; font-weight: bold; }
#chart { border: 1px solid #dee2e6; cursor: grab; user-select: none; width: 100%; }
.legend span { display: inline-block; margin-right: 14px; font-size: 0.85rem; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
#hover { min-height: 1.4em; font-family: monospace; font-size: 0.85rem; color: #343a40; }
";

/// Colours per kind, shared by the legend and the script.
const COLOURS: &[(&str, &str)] = &[
    ("connected", "#b2f2bb"),
    ("nat", "#a5d8ff"),
    ("fault", "#ffc9c9"),
    ("heartbeat", "#868e96"),
    ("send", "#1971c2"),
    ("ack", "#2f9e44"),
    ("deliver", "#7048e8"),
    ("nat_expired", "#e03131"),
    ("flow", "#f08c00"),
    ("app", "#495057"),
    ("wakeup", "#0c8599"),
];

const SCRIPT: &str = r#"
const data = JSON.parse(document.getElementById('timeline-data').textContent);
const colours = JSON.parse(document.getElementById('timeline-colours').textContent);
const svg = document.getElementById('chart');
const NS = 'http://www.w3.org/2000/svg';
const LANE_H = 46, LEFT = 120, TOP = 24;
const width = () => svg.clientWidth || 1200;
let view = [0, Math.max(1, data.end_ms)];
const first = (() => {
  for (const lane of data.lanes) for (const m of lane.marks) if (m.highlight) return m.at_ms;
  return null;
})();
if (first !== null) {
  const half = Math.max(30000, data.end_ms / 40);
  view = [Math.max(0, first - half), Math.min(data.end_ms, first + half)];
  if (view[1] - view[0] < 2 * half) view = [Math.max(0, view[1] - 2 * half), view[1]];
}
const x = (ms) => LEFT + (ms - view[0]) / (view[1] - view[0]) * (width() - LEFT - 10);
function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  parent.appendChild(e);
  return e;
}
function fmt(ms) {
  const s = ms / 1000;
  return s >= 120 ? (s / 60).toFixed(s >= 600 ? 0 : 1) + ' min' : s.toFixed(s >= 10 ? 0 : 1) + ' s';
}
function draw() {
  svg.innerHTML = '';
  const h = TOP + data.lanes.length * LANE_H + 10;
  svg.setAttribute('height', h);
  svg.setAttribute('viewBox', `0 0 ${width()} ${h}`);
  const span = view[1] - view[0];
  const step = [1e3, 5e3, 1e4, 3e4, 6e4, 3e5, 6e5, 18e5, 36e5].find((s) => span / s <= 12) || 72e5;
  for (let t = Math.ceil(view[0] / step) * step; t <= view[1]; t += step) {
    el('line', { x1: x(t), x2: x(t), y1: TOP - 6, y2: h, stroke: '#f1f3f5' }, svg);
    el('text', { x: x(t) + 2, y: 14, 'font-size': 11, fill: '#868e96' }, svg).textContent = fmt(t);
  }
  data.lanes.forEach((lane, i) => {
    const y = TOP + i * LANE_H;
    el('rect', { x: 0, y, width: width(), height: LANE_H - 2, fill: lane.highlight ? '#fff9db' : (i % 2 ? '#fff' : '#f8f9fa') }, svg);
    const name = el('text', { x: 6, y: y + 18, 'font-size': 13, 'font-weight': 'bold' }, svg);
    name.textContent = lane.name;
    el('text', { x: 6, y: y + 34, 'font-size': 10, fill: '#868e96' }, svg).textContent = lane.note;
    const rows = { connected: 4, nat: 14, fault: 4 };
    for (const s of lane.spans) {
      if (s.end_ms < view[0] || s.start_ms > view[1]) continue;
      const x0 = Math.max(LEFT, x(s.start_ms)), x1 = Math.min(width() - 10, x(s.end_ms));
      const r = el('rect', { x: x0, y: y + (rows[s.kind] ?? 4), width: Math.max(1, x1 - x0), height: s.kind === 'fault' ? LANE_H - 10 : 8, fill: colours[s.kind] || '#dee2e6', opacity: s.kind === 'fault' ? 0.6 : 1, class: 'span ' + s.kind }, svg);
      r.dataset.label = `${s.label} (${fmt(s.start_ms)} to ${fmt(s.end_ms)})`;
    }
    for (const m of lane.marks) {
      if (m.at_ms < view[0] || m.at_ms > view[1]) continue;
      const mx = x(m.at_ms), my = y + 32;
      const c = el('circle', { cx: mx, cy: my, r: m.highlight ? 6 : 3, fill: colours[m.kind] || '#000', class: 'mark ' + m.kind + (m.highlight ? ' highlight' : '') }, svg);
      if (m.highlight) c.setAttribute('stroke', '#e8590c'), c.setAttribute('stroke-width', 3);
      c.dataset.label = `${fmt(m.at_ms)} ${m.kind}: ${m.label}`;
    }
  });
  const shown = svg.querySelectorAll('.mark.highlight').length;
  document.getElementById('view').textContent = `showing ${fmt(view[0])} to ${fmt(view[1])}; ${shown} highlighted mark(s) in view`;
}
svg.addEventListener('mousemove', (e) => {
  const label = e.target.dataset && e.target.dataset.label;
  document.getElementById('hover').textContent = label || '';
});
svg.addEventListener('wheel', (e) => {
  e.preventDefault();
  const rect = svg.getBoundingClientRect();
  const at = view[0] + (e.clientX - rect.left - LEFT) / (rect.width - LEFT - 10) * (view[1] - view[0]);
  const k = e.deltaY < 0 ? 0.8 : 1.25;
  view = [at - (at - view[0]) * k, at + (view[1] - at) * k];
  if (view[1] - view[0] < 100) view = [at - 50, at + 50];
  draw();
}, { passive: false });
let drag = null;
svg.addEventListener('mousedown', (e) => { drag = { x: e.clientX, view: view.slice() }; });
window.addEventListener('mouseup', () => { drag = null; });
window.addEventListener('mousemove', (e) => {
  if (!drag) return;
  const ms = (e.clientX - drag.x) / (svg.clientWidth - LEFT - 10) * (drag.view[1] - drag.view[0]);
  view = [drag.view[0] - ms, drag.view[1] - ms];
  draw();
});
svg.addEventListener('dblclick', () => { view = [0, Math.max(1, data.end_ms)]; draw(); });
window.addEventListener('resize', draw);
draw();
"#;

/// Writes `timeline` as a self-contained HTML page at `path`.
pub fn write_timeline(path: &Path, timeline: &Timeline) -> Result<(), ReportError> {
    let html = render(timeline).map_err(|source| ReportError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, html).map_err(|source| ReportError::io("writing", path, source))
}

/// JSON safe inside a `<script>` element.
fn script_json(value: &impl Serialize) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_string(value)?
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026"))
}

fn render(timeline: &Timeline) -> Result<String, serde_json::Error> {
    let data = script_json(timeline)?;
    let colours: std::collections::BTreeMap<&str, &str> = COLOURS.iter().copied().collect();
    let colours_json = script_json(&colours)?;
    let mut verdicts = String::new();
    for (name, violation) in &timeline.verdicts {
        match violation {
            None => verdicts += &format!("<li>{}: ok</li>", escape(name)),
            Some(detail) => {
                verdicts += &format!(
                    "<li class=\"violated\">{}: VIOLATED ({})</li>",
                    escape(name),
                    escape(detail)
                );
            }
        }
    }
    let highlight = if timeline.highlight.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"highlight\" id=\"highlighted\">Highlighted: {}</p>",
            escape(&timeline.highlight)
        )
    };
    let legend: String = COLOURS
        .iter()
        .map(|(kind, colour)| format!("<span><i style=\"background:{colour}\"></i>{kind}</span>"))
        .collect();
    let notes: String = timeline
        .notes
        .iter()
        .map(|note| format!("<p class=\"meta\">{}</p>", escape(note)))
        .collect();
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}: timeline</title><style>{TIMELINE_STYLE}</style></head><body><main>\
         <h1>{title}</h1><p class=\"meta\">{subtitle}</p>{highlight}\
         <ul class=\"verdicts\">{verdicts}</ul>\
         <p class=\"legend\">{legend}</p>\
         <p class=\"meta\">Wheel: zoom around the pointer; drag: pan; double-click: the whole \
         run. <span id=\"view\"></span></p>\
         <svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\"></svg>\
         <p id=\"hover\"></p>{notes}\
         <script type=\"application/json\" id=\"timeline-data\">{data}</script>\
         <script type=\"application/json\" id=\"timeline-colours\">{colours_json}</script>\
         <script>{SCRIPT}</script></main></body></html>\n",
        title = escape(&timeline.title),
        subtitle = escape(&timeline.subtitle),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_cannot_close_the_script_element() {
        let timeline = Timeline {
            title: "</script><b>".into(),
            lanes: vec![Lane {
                name: "d1".into(),
                marks: vec![Mark {
                    at_ms: 1,
                    kind: "send".into(),
                    label: "</script>".into(),
                    highlight: true,
                }],
                ..Lane::default()
            }],
            ..Timeline::default()
        };
        let html = render(&timeline).unwrap();
        assert_eq!(html.matches("</script>").count(), 3, "{html}");
        assert!(html.contains("&lt;/script&gt;&lt;b&gt;"));
    }
}
