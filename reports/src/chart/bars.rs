//! Grouped bar chart: one group per category (a carrier profile), one bar per series (a
//! strategy) in each group, a shared legend on the right. Used for battery, silent
//! disconnects and delay, which differ only in values, axis label and scale.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::Scale;
use super::legend::{Swatch, legend_width};
use super::{
    Axis, Chart, DrawResult, GRID, INK, MUTED, SeriesStyle, draw_legend, fit_text, text, title_area,
};

/// Widest legend column on the right of bar and line charts; longer names are cut.
pub(crate) const LEGEND_WIDTH_MAX_PX: u32 = 340;

pub(crate) struct GroupedBars {
    pub title: String,
    pub subtitle: Option<String>,
    pub x_desc: String,
    pub y_desc: String,
    pub groups: Vec<String>,
    pub series: Vec<SeriesStyle>,
    /// `values[series][group]`; `None` where that series has no row for that group.
    pub values: Vec<Vec<Option<f64>>>,
    pub log_scale: bool,
    pub size_px: (u32, u32),
}

/// Fraction of a group's width the bars fill; the rest separates groups.
const GROUP_FILL: f64 = 0.84;
/// Height of the bar drawn for a zero (or tiny) value.
const BAR_MIN_PX: f64 = 2.0;

impl Chart for GroupedBars {
    fn size_px(&self) -> (u32, u32) {
        self.size_px
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = title_area(root, &self.title, self.subtitle.as_deref())?;
        let (width, _) = body.dim_in_pixel();
        let legend_px = legend_width(root, &self.series, LEGEND_WIDTH_MAX_PX)?;
        let (plot_area, legend_area) = body.split_horizontally(width - legend_px);
        draw_legend(
            &legend_area.margin(10, 0, 10, 0),
            Some("Strategy"),
            &self.series,
            Swatch::Box,
        )?;

        let finite: Vec<f64> = self
            .values
            .iter()
            .flatten()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let max = finite.iter().copied().fold(0.0, f64::max);
        let y_axis = if self.log_scale {
            let min_positive = finite
                .iter()
                .copied()
                .filter(|&v| v > 0.0)
                .fold(f64::INFINITY, f64::min);
            Axis::log10(min_positive, max)
        } else {
            Axis::linear(0.0, max)
        };

        let n_groups = self.groups.len().max(1);
        let label_style = text(15, INK);
        let slot_px = (plot_area.dim_in_pixel().0.saturating_sub(110)) / n_groups as u32;
        let group_labels = self
            .groups
            .iter()
            .map(|g| fit_text(root, g, &label_style, slot_px.saturating_sub(8)))
            .collect::<Result<Vec<_>, _>>()?;
        let centers: Vec<f64> = (0..n_groups).map(|i| i as f64 + 0.5).collect();
        let x_range = Axis {
            scale: Scale::Linear,
            lo: 0.0,
            hi: n_groups as f64,
            ticks: centers,
            light_ticks: Vec::new(),
        }
        .range();

        let mut chart = ChartBuilder::on(&plot_area)
            .margin_left(10)
            .margin_right(16)
            .margin_bottom(8)
            .x_label_area_size(52)
            .y_label_area_size(72)
            .build_cartesian_2d(x_range, y_axis.range())?;
        let x_formatter = |x: &f64| {
            let index = x.floor().max(0.0) as usize;
            group_labels.get(index).cloned().unwrap_or_default()
        };
        let y_formatter = |y: &f64| y_axis.label(*y);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&x_formatter)
            .y_label_formatter(&y_formatter)
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .label_style(label_style.clone())
            .axis_desc_style(text(17, INK))
            .bold_line_style(GRID)
            .light_line_style(GRID.mix(0.5))
            .axis_style(MUTED)
            .draw()?;

        for boundary in 1..n_groups {
            let x = boundary as f64;
            chart.draw_series(LineSeries::new(
                [(x, y_axis.lo), (x, y_axis.hi)],
                GRID.stroke_width(1),
            ))?;
        }

        // Every measured value gets at least a sliver of a bar, so zero reads differently
        // from "no row".
        let plot_height_px = f64::from(chart.plotting_area().dim_in_pixel().1.max(1));
        let min_bar = (y_axis.hi - y_axis.lo) * BAR_MIN_PX / plot_height_px;
        let bar_width = GROUP_FILL / self.series.len().max(1) as f64;
        let gap = bar_width * 0.08;
        for (series_index, style) in self.series.iter().enumerate() {
            let bars = self.values[series_index]
                .iter()
                .enumerate()
                .filter_map(|(group, value)| value.filter(|v| v.is_finite()).map(|v| (group, v)))
                .map(|(group, value)| {
                    let x0 =
                        group as f64 + (1.0 - GROUP_FILL) / 2.0 + series_index as f64 * bar_width;
                    Rectangle::new(
                        [
                            (x0 + gap, y_axis.lo),
                            (
                                x0 + bar_width - gap,
                                y_axis.to_plot(value).max(y_axis.lo + min_bar),
                            ),
                        ],
                        style.color.filled(),
                    )
                });
            chart.draw_series(bars)?;
        }
        Ok(())
    }
}
