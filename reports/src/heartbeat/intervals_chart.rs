//! Heartbeat interval over time: one panel per carrier profile in the report's series,
//! stacked so they share the time axis; each strategy a step line (an interval holds until the
//! strategy changes it) and the profile's NAT timeout a labelled dashed line. An interval
//! above the dashed line lets the NAT mapping expire between heartbeats.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::IntervalSeries;
use super::display::Display;
use crate::chart::bars::LEGEND_WIDTH_MAX_PX;
use crate::chart::legend::{Swatch, legend_width};
use crate::chart::{
    Axis, Chart, DrawResult, GRID, INK, MUTED, SeriesStyle, bold_text, draw_legend, draw_marker,
    text, title_area,
};
use crate::format;

pub(crate) const CAPTION: &str = "How adaptive strategies moved their heartbeat interval \
     during the run, one panel per carrier profile. The dashed line is the profile's NAT \
     timeout: while a strategy's interval is above it, idle connections lose their NAT \
     mapping between heartbeats.";

const WIDTH_PX: u32 = 1200;
const PANEL_HEIGHT_PX: u32 = 320;
const TITLE_PX: u32 = 72;
/// Series with at most this many points also get a marker on each point.
const MARKED_POINTS_MAX: usize = 20;

pub(crate) struct IntervalPanels<'a> {
    panels: Vec<Panel<'a>>,
    legend: Vec<SeriesStyle>,
    x_axis: Axis,
}

struct Panel<'a> {
    profile: String,
    lines: Vec<(&'a IntervalSeries, SeriesStyle)>,
    /// Distinct NAT timeouts of this profile's series (normally one).
    nat_timeouts_s: Vec<f64>,
}

impl<'a> IntervalPanels<'a> {
    /// None when there are no series.
    pub(crate) fn new(display: &Display<'a>) -> Option<IntervalPanels<'a>> {
        let series = &display.report.series;
        if series.is_empty() {
            return None;
        }
        let mut panels: Vec<Panel<'a>> = Vec::new();
        for one in series {
            let style = display.style(&one.strategy).clone();
            let index = match panels.iter().position(|p| p.profile == one.profile) {
                Some(index) => index,
                None => {
                    panels.push(Panel {
                        profile: one.profile.clone(),
                        lines: Vec::new(),
                        nat_timeouts_s: Vec::new(),
                    });
                    panels.len() - 1
                }
            };
            let panel = &mut panels[index];
            panel.lines.push((one, style));
            if one.nat_timeout_s.is_finite() && !panel.nat_timeouts_s.contains(&one.nat_timeout_s) {
                panel.nat_timeouts_s.push(one.nat_timeout_s);
            }
        }
        let legend = display
            .strategies
            .iter()
            .filter(|s| series.iter().any(|one| &one.strategy == *s))
            .map(|s| display.style(s).clone())
            .collect();
        let max_hours = series
            .iter()
            .flat_map(|one| one.points.iter().map(|p| p.0))
            .filter(|h| h.is_finite())
            .fold(0.0, f64::max);
        Some(IntervalPanels {
            panels,
            legend,
            x_axis: Axis::linear_tight(0.0, max_hours),
        })
    }
}

impl Chart for IntervalPanels<'_> {
    fn size_px(&self) -> (u32, u32) {
        (
            WIDTH_PX,
            TITLE_PX + PANEL_HEIGHT_PX * self.panels.len() as u32,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = title_area(
            root,
            "Heartbeat interval over time",
            Some(
                "Dashed line: the carrier's NAT timeout; an interval above it lets the mapping expire",
            ),
        )?;
        let (width, _) = body.dim_in_pixel();
        let legend_px = legend_width(root, &self.legend, LEGEND_WIDTH_MAX_PX)?;
        let (plots, legend_area) = body.split_horizontally(width - legend_px);
        draw_legend(
            &legend_area.margin(10, 0, 10, 0),
            Some("Strategy"),
            &self.legend,
            Swatch::Line,
        )?;
        let cells = plots.split_evenly((self.panels.len(), 1));
        for (panel, cell) in self.panels.iter().zip(&cells) {
            self.draw_panel(root, cell, panel)?;
        }
        Ok(())
    }
}

impl IntervalPanels<'_> {
    fn draw_panel<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        cell: &DrawingArea<DB, Shift>,
        panel: &Panel,
    ) -> DrawResult<DB> {
        let max_interval = panel
            .lines
            .iter()
            .flat_map(|(one, _)| one.points.iter().map(|p| p.1))
            .chain(panel.nat_timeouts_s.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let y_axis = Axis::linear(0.0, max_interval * 1.1);
        let x_axis = &self.x_axis;
        let caption = match panel.nat_timeouts_s.as_slice() {
            [nat] => format!(
                "{}: NAT timeout {}",
                panel.profile,
                format::duration_s(*nat)
            ),
            _ => panel.profile.clone(),
        };

        let mut chart = ChartBuilder::on(cell)
            .margin(10)
            .margin_right(24)
            .caption(caption, bold_text(18, INK))
            .x_label_area_size(48)
            .y_label_area_size(66)
            .build_cartesian_2d(x_axis.range(), y_axis.range())?;
        let x_formatter = |x: &f64| x_axis.label(*x);
        let y_formatter = |y: &f64| y_axis.label(*y);
        chart
            .configure_mesh()
            .x_label_formatter(&x_formatter)
            .y_label_formatter(&y_formatter)
            .x_desc("time since start (hours)")
            .y_desc("heartbeat interval (s)")
            .label_style(text(14, INK))
            .axis_desc_style(text(15, INK))
            .bold_line_style(GRID)
            .light_line_style(GRID.mix(0.5))
            .axis_style(MUTED)
            .draw()?;

        // Strategy lines first, then the NAT timeout on top so its dashes stay visible.
        for (one, style) in &panel.lines {
            let points: Vec<(f64, f64)> = one
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            // Step line: each interval holds until the next point.
            let steps: Vec<(f64, f64)> = points
                .windows(2)
                .flat_map(|pair| [pair[0], (pair[1].0, pair[0].1)])
                .chain(points.last().copied())
                .collect();
            chart.draw_series(LineSeries::new(steps, style.color.stroke_width(3)))?;
            if points.len() <= MARKED_POINTS_MAX {
                for point in &points {
                    draw_marker(
                        root,
                        chart.backend_coord(point),
                        style.marker,
                        style.color,
                        4,
                        false,
                    )?;
                }
            }
        }
        for &nat in &panel.nat_timeouts_s {
            chart.draw_series(DashedLineSeries::new(
                [(x_axis.lo, nat), (x_axis.hi, nat)],
                10,
                6,
                INK.stroke_width(2),
            ))?;
            let (right, y) = chart.backend_coord(&(x_axis.hi, nat));
            // Right-aligned just above the line, on a white patch so crossing lines don't hide it.
            let label = format!(
                "NAT timeout {} ({} s)",
                format::duration_s(nat),
                format::number(nat)
            );
            let style = bold_text(14, INK).pos(Pos::new(HPos::Right, VPos::Bottom));
            let (w, h) = root.estimate_text_size(&label, &style)?;
            let (x1, y1) = (right - 4, y - 3);
            root.draw(&Rectangle::new(
                [(x1 - w as i32 - 6, y1 - h as i32 - 4), (x1 + 2, y1)],
                WHITE.mix(0.85).filled(),
            ))?;
            root.draw_text(&label, &style, (x1 - 2, y1 - 1))?;
        }

        Ok(())
    }
}
