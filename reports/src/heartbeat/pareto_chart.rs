//! Battery versus p99 delay, one small panel per carrier profile. Each strategy is a marker
//! labelled with its name; the Pareto front (strategies no other beats on both axes) is
//! drawn as a step line through ringed markers. Lower-left is better.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::display::{Display, pareto_point};
use crate::chart::legend::Swatch;
use crate::chart::{
    Axis, Chart, DrawResult, GRID, INK, MUTED, SeriesStyle, bold_text, draw_legend, draw_marker,
    fit_text, text, title_area,
};
use crate::pareto::pareto_front;

pub(crate) const CAPTION: &str = "Each panel is one carrier profile: battery drain per day \
     against p99 message delay, both on log scales so a few costly outliers do not squash the \
     strategies worth choosing against an axis. Lower-left is better. Ringed points joined by the \
     black step line are the Pareto front: no other strategy is better on both axes there.";

const PANEL_PX: (u32, u32) = (360, 380);
const MIN_WIDTH_PX: u32 = 1100;
const MARKER_RADIUS_PX: i32 = 6;
/// The ring around front markers (see `draw_marker`).
const RING_RADIUS_PX: i32 = MARKER_RADIUS_PX + 5;
/// Longer strategy names are cut with an ellipsis in point labels (the legend has them whole).
const LABEL_WIDTH_MAX_PX: u32 = 130;
/// Clear space kept around every label.
const LABEL_PADDING_PX: i32 = 2;

pub(crate) struct ParetoPanels {
    panels: Vec<Panel>,
    legend: Vec<SeriesStyle>,
    columns: usize,
    rows: usize,
    panel_px: (u32, u32),
}

struct Panel {
    profile: String,
    points: Vec<PanelPoint>,
    /// Indices into `points` along the front, by increasing delay.
    front: Vec<usize>,
}

struct PanelPoint {
    style: SeriesStyle,
    delay_s: f64,
    battery_pct: f64,
}

impl ParetoPanels {
    /// None when there are no rows.
    pub(crate) fn new(display: &Display) -> Option<ParetoPanels> {
        if display.report.rows.is_empty() {
            return None;
        }
        let panels: Vec<Panel> = display
            .profiles
            .iter()
            .map(|profile| {
                let rows: Vec<_> = display
                    .rows_of_profile(profile)
                    .into_iter()
                    .map(|i| &display.report.rows[i])
                    .collect();
                let front_input: Vec<(f64, f64)> = rows.iter().map(|r| pareto_point(r)).collect();
                let points = rows
                    .iter()
                    .map(|row| PanelPoint {
                        style: display.style(&row.strategy).clone(),
                        delay_s: row.delay_ms_p99 as f64 / 1000.0,
                        battery_pct: row.battery_pct_per_day,
                    })
                    .collect();
                Panel {
                    profile: profile.clone(),
                    points,
                    front: pareto_front(&front_input),
                }
            })
            .collect();
        let legend = display
            .strategies
            .iter()
            .filter(|s| display.report.rows.iter().any(|r| &r.strategy == *s))
            .map(|s| display.style(s).clone())
            .collect();

        // One cell more than panels for the legend; wider than tall reads best on screens.
        let cells = panels.len() + 1;
        let columns = ((cells as f64 * 1.5).sqrt().ceil() as usize).clamp(2, 4);
        let rows = cells.div_ceil(columns);
        let panel_width = PANEL_PX.0.max(MIN_WIDTH_PX / columns as u32);
        Some(ParetoPanels {
            panels,
            legend,
            columns,
            rows,
            panel_px: (panel_width, PANEL_PX.1),
        })
    }
}

const TITLE_PX: u32 = 72;

impl Chart for ParetoPanels {
    fn size_px(&self) -> (u32, u32) {
        (
            self.panel_px.0 * self.columns as u32,
            TITLE_PX + self.panel_px.1 * self.rows as u32,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = title_area(
            root,
            "Battery versus p99 delay, per carrier profile",
            Some("Lower-left is better; ringed points on the black step line are the Pareto front"),
        )?;
        let cells = body.split_evenly((self.rows, self.columns));
        for (panel, cell) in self.panels.iter().zip(&cells) {
            draw_panel(root, cell, panel)?;
        }
        if let Some(cell) = cells.get(self.panels.len()) {
            draw_legend(
                &cell.margin(20, 0, 30, 0),
                Some("Strategy"),
                &self.legend,
                Swatch::Marker,
            )?;
            let (_, height) = cell.dim_in_pixel();
            let hint_y = (height as i32 - 60).max(40);
            cell.draw(&Circle::new(
                (50, hint_y),
                MARKER_RADIUS_PX + 5,
                INK.stroke_width(2),
            ))?;
            cell.draw_text("= on the Pareto front", &text(15, INK), (66, hint_y - 9))?;
        }
        Ok(())
    }
}

fn draw_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    cell: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> DrawResult<DB> {
    let delays: Vec<f64> = panel
        .points
        .iter()
        .map(|p| p.delay_s)
        .filter(|d| d.is_finite())
        .collect();
    let min_delay = delays
        .iter()
        .copied()
        .filter(|&d| d > 0.0)
        .fold(f64::INFINITY, f64::min);
    let max_delay = delays.iter().copied().fold(0.0, f64::max);
    let x_axis = Axis::log10(min_delay, max_delay);
    // Log battery axis: drains from 1% to 200% a day share a panel, and the 3-15% that
    // matter are spread over most of its height instead of sitting on its floor.
    let batteries: Vec<f64> = panel
        .points
        .iter()
        .map(|p| p.battery_pct)
        .filter(|b| b.is_finite() && *b > 0.0)
        .collect();
    let min_battery = batteries.iter().copied().fold(f64::INFINITY, f64::min);
    let max_battery = batteries.iter().copied().fold(0.0, f64::max);
    let y_axis = Axis::log10(min_battery, max_battery);

    let mut chart = ChartBuilder::on(cell)
        .margin(10)
        .margin_right(18)
        .caption(&panel.profile, bold_text(18, INK))
        .x_label_area_size(50)
        .y_label_area_size(56)
        .build_cartesian_2d(x_axis.range(), y_axis.range())?;
    let x_formatter = |x: &f64| x_axis.label(*x);
    let y_formatter = |y: &f64| y_axis.label(*y);
    chart
        .configure_mesh()
        .x_label_formatter(&x_formatter)
        .y_label_formatter(&y_formatter)
        .x_desc("p99 delay (s, log scale)")
        .y_desc("battery per day (%, log scale)")
        .label_style(text(13, INK))
        .axis_desc_style(text(14, INK))
        .bold_line_style(GRID)
        .light_line_style(GRID.mix(0.5))
        .axis_style(MUTED)
        .draw()?;

    let plot = |p: &PanelPoint| (x_axis.to_plot(p.delay_s), y_axis.to_plot(p.battery_pct));
    // The front as the boundary of the region it dominates: right, then down, point to point.
    let front_path: Vec<(f64, f64)> = panel
        .front
        .windows(2)
        .flat_map(|pair| {
            let (a, b) = (plot(&panel.points[pair[0]]), plot(&panel.points[pair[1]]));
            [a, (b.0, a.1), b]
        })
        .collect();
    if front_path.len() >= 2 {
        chart.draw_series(LineSeries::new(front_path.clone(), INK.stroke_width(2)))?;
    }

    let pixel = |p: &PanelPoint| chart.backend_coord(&plot(p));
    let is_front = |i: usize| panel.front.contains(&i);
    let markers: Vec<(i32, i32)> = panel.points.iter().map(pixel).collect();
    let (x_range, y_range) = chart.plotting_area().get_pixel_range();
    // Labels keep off the markers and the front line.
    let mut obstacles: Vec<PixelBox> = panel
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let radius = if is_front(i) {
                RING_RADIUS_PX + 1
            } else {
                MARKER_RADIUS_PX + 2
            };
            PixelBox::around(pixel(p), radius)
        })
        .collect();
    obstacles.extend(front_path.windows(2).map(|segment| {
        let (a, b) = (
            chart.backend_coord(&segment[0]),
            chart.backend_coord(&segment[1]),
        );
        PixelBox {
            x0: a.0.min(b.0) - 2,
            y0: a.1.min(b.1) - 2,
            x1: a.0.max(b.0) + 2,
            y1: a.1.max(b.1) + 2,
        }
    }));
    // Markers: others first, then the front on top with rings.
    for i in (0..panel.points.len())
        .filter(|&i| !is_front(i))
        .chain(panel.front.iter().copied())
    {
        let p = &panel.points[i];
        draw_marker(
            root,
            pixel(p),
            p.style.marker,
            p.style.color,
            MARKER_RADIUS_PX,
            is_front(i),
        )?;
    }
    // Labels: front points claim space first; a label that fits nowhere is left out (the
    // legend still names the marker).
    let label_order = panel
        .front
        .iter()
        .copied()
        .chain((0..panel.points.len()).filter(|&i| !is_front(i)));
    for i in label_order {
        let p = &panel.points[i];
        let style = if is_front(i) {
            bold_text(13, INK)
        } else {
            text(13, MUTED)
        };
        let label = fit_text(root, &p.style.name, &style, LABEL_WIDTH_MAX_PX)?;
        let (w, h) = root.estimate_text_size(&label, &style)?;
        let center = pixel(p);
        // A label must also sit nearer its own marker than any other, or it names the wrong one.
        let others: Vec<(i32, i32)> = markers.iter().copied().filter(|&m| m != center).collect();
        let placed = candidates(center, w as i32, h as i32)
            .into_iter()
            .find(|(b, _)| {
                let own = b.distance_to(center);
                b.inside(&x_range, &y_range)
                    && obstacles
                        .iter()
                        .all(|o| !o.overlaps(&b.grown(LABEL_PADDING_PX)))
                    && others.iter().all(|&m| b.distance_to(m) > own + 2.0)
            });
        if let Some((label_box, with_leader)) = placed {
            if let Some(line) = with_leader
                .then(|| leader_line(center, &label_box))
                .flatten()
            {
                root.draw(&PathElement::new(line, MUTED.stroke_width(1)))?;
            }
            root.draw_text(&label, &style, (label_box.x0, label_box.y0))?;
            obstacles.push(label_box);
        }
    }
    Ok(())
}

/// A pixel rectangle, for keeping labels off markers and each other.
#[derive(Debug, Clone, Copy)]
struct PixelBox {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
}

impl PixelBox {
    fn around((x, y): (i32, i32), radius: i32) -> PixelBox {
        PixelBox {
            x0: x - radius,
            y0: y - radius,
            x1: x + radius,
            y1: y + radius,
        }
    }

    fn overlaps(&self, other: &PixelBox) -> bool {
        self.x0 < other.x1 && other.x0 < self.x1 && self.y0 < other.y1 && other.y0 < self.y1
    }

    fn grown(&self, by: i32) -> PixelBox {
        PixelBox {
            x0: self.x0 - by,
            y0: self.y0 - by,
            x1: self.x1 + by,
            y1: self.y1 + by,
        }
    }

    /// Distance in pixels from the box to `point` (0 inside).
    fn distance_to(&self, (x, y): (i32, i32)) -> f64 {
        let dx = (self.x0 - x).max(x - self.x1).max(0);
        let dy = (self.y0 - y).max(y - self.y1).max(0);
        f64::from(dx).hypot(f64::from(dy))
    }

    fn inside(&self, x: &std::ops::Range<i32>, y: &std::ops::Range<i32>) -> bool {
        self.x0 >= x.start && self.x1 <= x.end && self.y0 >= y.start && self.y1 <= y.end
    }
}

/// Label positions around a marker at `(x, y)`, best first: right, left, above, below and the
/// diagonals, close by and then farther out. Far positions get a leader line to the marker.
fn candidates((x, y): (i32, i32), w: i32, h: i32) -> Vec<(PixelBox, bool)> {
    let at = |x0: i32, y0: i32| PixelBox {
        x0,
        y0,
        x1: x0 + w,
        y1: y0 + h,
    };
    [
        RING_RADIUS_PX + 4,
        RING_RADIUS_PX + 16,
        RING_RADIUS_PX + 36,
        RING_RADIUS_PX + 64,
    ]
    .into_iter()
    .enumerate()
    .flat_map(|(level, gap)| {
        let diagonal = gap * 3 / 4;
        [
            at(x + gap, y - h / 2),
            at(x - gap - w, y - h / 2),
            at(x - w / 2, y - gap - h),
            at(x - w / 2, y + gap),
            at(x + diagonal, y - diagonal - h),
            at(x + diagonal, y + diagonal),
            at(x - diagonal - w, y - diagonal - h),
            at(x - diagonal - w, y + diagonal),
        ]
        .map(|label_box| (label_box, level >= 2))
    })
    .collect()
}

/// A thin line from just outside the marker at `center` to the nearest edge of `label_box`.
fn leader_line(center: (i32, i32), label_box: &PixelBox) -> Option<[(i32, i32); 2]> {
    let end = (
        center.0.clamp(label_box.x0, label_box.x1),
        center.1.clamp(label_box.y0, label_box.y1),
    );
    let (dx, dy) = (f64::from(end.0 - center.0), f64::from(end.1 - center.1));
    let length = dx.hypot(dy);
    if length <= f64::from(RING_RADIUS_PX + 2) {
        return None;
    }
    let start_at = f64::from(RING_RADIUS_PX + 1) / length;
    let start = (
        center.0 + (dx * start_at).round() as i32,
        center.1 + (dy * start_at).round() as i32,
    );
    Some([start, end])
}
