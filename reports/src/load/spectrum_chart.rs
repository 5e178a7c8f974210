//! The classic HdrHistogram percentile spectrum: latency (log scale) against percentile on a
//! "nines" axis, where x = -log10(1 - p/100) puts 0%, 90%, 99%, 99.9%, ... one step apart, so
//! the tail gets as much room as the body. One line per spectrum.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::LatencySpectrum;
use crate::chart::axis::Scale;
use crate::chart::bars::LEGEND_WIDTH_MAX_PX;
use crate::chart::legend::{Swatch, legend_width, series_styles};
use crate::chart::{
    Axis, Chart, DrawResult, GRID, INK, MUTED, SeriesStyle, draw_legend, text, title_area,
};

pub(crate) const CAPTION: &str = "Latency at each percentile, one line per operation. The \
     percentile axis is stretched towards the tail: 90%, 99%, 99.9% and 99.99% are equally \
     spaced, so the worst requests are as visible as the typical ones. Read a point as \
     \"this fraction of operations took at most this long\".";

const SIZE_PX: (u32, u32) = (1200, 620);
/// The deepest tail the axis shows: 99.99999%. Percentiles beyond it are drawn at its edge.
const NINES_MAX: f64 = 7.0;

pub(crate) struct SpectrumChart {
    /// Per spectrum: its style and its points as (nines, latency ms).
    lines: Vec<(SeriesStyle, Vec<(f64, f64)>)>,
    x_axis: Axis,
    y_axis: Axis,
}

/// Where percentile `p` (in [0, 100)) sits on the nines axis.
pub(crate) fn nines(percentile: f64) -> f64 {
    (-(1.0 - percentile / 100.0).log10()).clamp(0.0, NINES_MAX)
}

/// The label of whole-nines position `k`: 0%, 90%, 99%, 99.9%, ...
pub(crate) fn nines_label(k: f64) -> String {
    match k.round() as u32 {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)).replace(".%", "%"),
    }
}

impl SpectrumChart {
    /// None when no spectrum has a usable point.
    pub(crate) fn new(spectra: &[LatencySpectrum]) -> Option<SpectrumChart> {
        let names: Vec<String> = spectra.iter().map(|s| s.name.clone()).collect();
        let lines: Vec<(SeriesStyle, Vec<(f64, f64)>)> = series_styles(&names)
            .into_iter()
            .zip(spectra)
            .map(|(style, one)| {
                let points = one
                    .points
                    .iter()
                    .filter(|(p, ms)| (0.0..100.0).contains(p) && ms.is_finite())
                    .map(|&(p, ms)| (nines(p), ms))
                    .collect();
                (style, points)
            })
            .collect();
        let all = || lines.iter().flat_map(|(_, points)| points.iter().copied());
        all().next()?;
        let x_max = all().map(|(x, _)| x).fold(0.0, f64::max);
        let y_max = all().map(|(_, ms)| ms).fold(0.0, f64::max);
        let y_min_positive = all()
            .map(|(_, ms)| ms)
            .filter(|&ms| ms > 0.0)
            .fold(f64::INFINITY, f64::min);
        // At least up to 99.9%, so a short spectrum still reads as a spectrum.
        let hi = x_max.ceil().clamp(3.0, NINES_MAX);
        let whole_nines = (0..=hi as u32).map(f64::from);
        let x_axis = Axis {
            scale: Scale::Linear,
            lo: 0.0,
            hi,
            ticks: whole_nines.clone().collect(),
            // Halfway in each step: 50%, 95%, 99.5%, ...
            light_ticks: whole_nines
                .filter(|&k| k < hi)
                .map(|k| k + 2f64.log10())
                .collect(),
        };
        Some(SpectrumChart {
            lines,
            x_axis,
            y_axis: Axis::log10(y_min_positive, y_max),
        })
    }
}

impl Chart for SpectrumChart {
    fn size_px(&self) -> (u32, u32) {
        SIZE_PX
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = title_area(
            root,
            "Latency by percentile",
            Some("Percentile axis in nines: each step to the right is ten times rarer"),
        )?;
        let (width, _) = body.dim_in_pixel();
        let legend: Vec<SeriesStyle> = self.lines.iter().map(|(s, _)| s.clone()).collect();
        let legend_px = legend_width(root, &legend, LEGEND_WIDTH_MAX_PX)?;
        let (plot_area, legend_area) = body.split_horizontally(width - legend_px);
        draw_legend(
            &legend_area.margin(10, 0, 10, 0),
            Some("Operation"),
            &legend,
            Swatch::Line,
        )?;

        let (x_axis, y_axis) = (&self.x_axis, &self.y_axis);
        let mut chart = ChartBuilder::on(&plot_area)
            .margin_left(10)
            // Room for the last tick label (99.99%), centred on the plot's right edge.
            .margin_right(44)
            .margin_bottom(8)
            .x_label_area_size(52)
            .y_label_area_size(76)
            .build_cartesian_2d(x_axis.range(), y_axis.range())?;
        let x_formatter = |x: &f64| nines_label(*x);
        let y_formatter = |y: &f64| y_axis.label(*y);
        chart
            .configure_mesh()
            .x_label_formatter(&x_formatter)
            .y_label_formatter(&y_formatter)
            .x_desc("percentile (log scale of 1 - p: 90%, 99%, 99.9%, ...)")
            .y_desc("latency (ms, log scale)")
            .label_style(text(15, INK))
            .axis_desc_style(text(17, INK))
            .bold_line_style(GRID)
            .light_line_style(GRID.mix(0.5))
            .axis_style(MUTED)
            .draw()?;
        for (style, points) in &self.lines {
            let plotted = points.iter().map(|&(x, ms)| (x, y_axis.to_plot(ms)));
            chart.draw_series(LineSeries::new(plotted, style.color.stroke_width(3)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{nines, nines_label};

    #[test]
    fn nines_axis() {
        let cases = [
            (0.0, 0.0, "0%"),
            (90.0, 1.0, "90%"),
            (99.0, 2.0, "99%"),
            (99.9, 3.0, "99.9%"),
            (99.99, 4.0, "99.99%"),
        ];
        for (percentile, x, label) in cases {
            assert!((nines(percentile) - x).abs() < 1e-9, "{percentile}");
            assert_eq!(nines_label(x), label);
        }
    }
}
