//! Per-second charts of a load run, sharing one time axis: delivery latency p99 per second,
//! and connections (connected clients above, disconnects and reconnects per second below).

use plotters::coord::Shift;
use plotters::prelude::*;

use super::LoadSecond;
use crate::chart::axis::TickedRange;
use crate::chart::legend::series_styles;
use crate::chart::{
    Axis, Chart, DrawResult, INK, SeriesStyle, bold_text, draw_line_mesh, title_area, with_legend,
};

pub(crate) const LATENCY_CAPTION: &str = "The 99th percentile of message delivery latency \
     (send to recipient) among the messages delivered in each second; 0 means nothing was \
     delivered that second. A rising line means \
     the server or the network is falling behind; spikes often line up with reconnect bursts \
     in the chart below.";

pub(crate) const CONNECTIONS_CAPTION: &str = "Top: clients connected at the end of each \
     second. Bottom: disconnects and reconnects in each second. A healthy run ramps up, then \
     holds flat with few disconnects; a reconnect storm shows as a dip on top and tall bars \
     below.";

const WIDTH_PX: u32 = 1200;
/// Runs longer than this many seconds draw disconnects and reconnects as lines: bars would be
/// thinner than a pixel.
const BARS_SECONDS_MAX: usize = 240;

/// The time axis shared by both charts: every second gets a full unit of width, so bars
/// centred on the first and last second stay inside the plot.
fn seconds_axis(seconds: &[LoadSecond]) -> Axis {
    let first = seconds.iter().map(|s| s.second).min().unwrap_or(0) as f64;
    let last = seconds.iter().map(|s| s.second).max().unwrap_or(0) as f64;
    Axis::linear_exact(first - 0.5, last + 0.5)
}

/// A line plot's mesh, over time since the start.
fn draw_mesh<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<TickedRange, TickedRange>>,
    x_axis: &Axis,
    y_axis: &Axis,
    y_desc: &str,
) -> DrawResult<DB> {
    draw_line_mesh(chart, x_axis, y_axis, "time since start (s)", y_desc)
}

pub(crate) struct LatencyOverTime<'a> {
    seconds: &'a [LoadSecond],
    x_axis: Axis,
    y_axis: Axis,
}

impl<'a> LatencyOverTime<'a> {
    /// None when there are no seconds.
    pub(crate) fn new(seconds: &'a [LoadSecond]) -> Option<LatencyOverTime<'a>> {
        if seconds.is_empty() {
            return None;
        }
        let max = seconds
            .iter()
            .map(|s| s.deliver_ms_p99)
            .filter(|ms| ms.is_finite())
            .fold(0.0, f64::max);
        Some(LatencyOverTime {
            seconds,
            x_axis: seconds_axis(seconds),
            y_axis: Axis::linear(0.0, max),
        })
    }
}

impl Chart for LatencyOverTime<'_> {
    fn size_px(&self) -> (u32, u32) {
        (WIDTH_PX, 480)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = title_area(
            root,
            "Delivery latency p99 per second",
            Some(
                "99th percentile of send-to-recipient latency of the messages delivered in each second",
            ),
        )?;
        let legend = series_styles(&["deliver p99".to_string()]);
        let plot_area = with_legend(root, &body, &legend)?;
        let mut chart = ChartBuilder::on(&plot_area)
            .margin_left(10)
            .margin_right(24)
            .margin_bottom(8)
            .x_label_area_size(52)
            .y_label_area_size(76)
            .build_cartesian_2d(self.x_axis.range(), self.y_axis.range())?;
        draw_mesh(
            &mut chart,
            &self.x_axis,
            &self.y_axis,
            "deliver latency p99 (ms)",
        )?;
        let points = self
            .seconds
            .iter()
            .filter(|s| s.deliver_ms_p99.is_finite())
            .map(|s| (s.second as f64, s.deliver_ms_p99));
        chart.draw_series(LineSeries::new(points, legend[0].color.stroke_width(3)))?;
        Ok(())
    }
}

/// Picks one per-second count out of a row.
type Count = fn(&LoadSecond) -> u64;

pub(crate) struct ConnectionsOverTime<'a> {
    seconds: &'a [LoadSecond],
    x_axis: Axis,
    /// Connected clients, disconnects per second, reconnects per second.
    styles: Vec<SeriesStyle>,
}

impl<'a> ConnectionsOverTime<'a> {
    /// None when there are no seconds.
    pub(crate) fn new(seconds: &'a [LoadSecond]) -> Option<ConnectionsOverTime<'a>> {
        if seconds.is_empty() {
            return None;
        }
        let names = [
            "connected clients",
            "disconnects per second",
            "reconnects per second",
        ];
        Some(ConnectionsOverTime {
            seconds,
            x_axis: seconds_axis(seconds),
            styles: series_styles(&names.map(String::from)),
        })
    }
}

impl Chart for ConnectionsOverTime<'_> {
    fn size_px(&self) -> (u32, u32) {
        (WIDTH_PX, 760)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = title_area(
            root,
            "Connections over time",
            Some("Top: clients connected; bottom: disconnects and reconnects in each second"),
        )?;
        let plot_area = with_legend(root, &body, &self.styles)?;
        let (_, height) = plot_area.dim_in_pixel();
        let (top, bottom) = plot_area.split_vertically(height * 11 / 20);
        self.draw_connected(&top)?;
        self.draw_churn(&bottom)
    }
}

impl ConnectionsOverTime<'_> {
    fn draw_connected<DB: DrawingBackend>(&self, cell: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let max = self.seconds.iter().map(|s| s.connected).max().unwrap_or(0) as f64;
        let y_axis = Axis::linear(0.0, max);
        let mut chart = ChartBuilder::on(cell)
            .margin_left(10)
            .margin_right(24)
            .margin_bottom(8)
            .caption("Connected clients", bold_text(18, INK))
            .x_label_area_size(52)
            .y_label_area_size(76)
            .build_cartesian_2d(self.x_axis.range(), y_axis.range())?;
        draw_mesh(&mut chart, &self.x_axis, &y_axis, "clients")?;
        let points = self
            .seconds
            .iter()
            .map(|s| (s.second as f64, s.connected as f64));
        chart.draw_series(LineSeries::new(
            points,
            self.styles[0].color.stroke_width(3),
        ))?;
        Ok(())
    }

    fn draw_churn<DB: DrawingBackend>(&self, cell: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let max = self
            .seconds
            .iter()
            .map(|s| s.disconnects.max(s.reconnects))
            .max()
            .unwrap_or(0) as f64;
        // Whole-number ticks: these are counts.
        let y_axis = Axis::linear(0.0, max.max(4.0));
        let mut chart = ChartBuilder::on(cell)
            .margin_left(10)
            .margin_right(24)
            .margin_bottom(8)
            .caption("Disconnects and reconnects", bold_text(18, INK))
            .x_label_area_size(52)
            .y_label_area_size(76)
            .build_cartesian_2d(self.x_axis.range(), y_axis.range())?;
        draw_mesh(&mut chart, &self.x_axis, &y_axis, "per second")?;
        let series: [(&SeriesStyle, Count); 2] = [
            (&self.styles[1], |s| s.disconnects),
            (&self.styles[2], |s| s.reconnects),
        ];
        if self.seconds.len() <= BARS_SECONDS_MAX {
            // Two bars per second: disconnects on the left half, reconnects on the right.
            for (index, (style, value)) in series.iter().enumerate() {
                let offset = index as f64 * 0.4 - 0.4;
                let bars = self.seconds.iter().filter(|s| value(s) > 0).map(|s| {
                    let x0 = s.second as f64 + offset;
                    Rectangle::new(
                        [(x0 + 0.02, 0.0), (x0 + 0.38, value(s) as f64)],
                        style.color.filled(),
                    )
                });
                chart.draw_series(bars)?;
            }
        } else {
            for (style, value) in series {
                let points = self
                    .seconds
                    .iter()
                    .map(|s| (s.second as f64, value(s) as f64));
                chart.draw_series(LineSeries::new(points, style.color.stroke_width(2)))?;
            }
        }
        Ok(())
    }
}
