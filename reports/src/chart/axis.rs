//! Axes with hand-picked ticks. Every chart plots on plain f64 coordinates and an `Axis`
//! maps values to them: identity for linear axes, log10 for log axes (ticks at powers of ten,
//! light grid lines at 2x and 5x). One coordinate type for every chart keeps the drawing code
//! free of per-scale generics.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

use crate::format;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scale {
    Linear,
    Log10,
}

/// One axis: its plotted range and ticks, all in plot units (log10 of the value on a log axis).
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    pub scale: Scale,
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<f64>,
    pub light_ticks: Vec<f64>,
}

/// Roughly how many labelled ticks an axis gets.
const TICKS_TARGET: f64 = 6.0;

impl Axis {
    /// A linear axis from `min` to a round value a little above `max` (headroom for markers).
    pub(crate) fn linear(min: f64, max: f64) -> Axis {
        Axis::linear_with_headroom(min, max, 0.04)
    }

    /// A linear axis from `min` to the first round value at or above `max` (time axes).
    pub(crate) fn linear_tight(min: f64, max: f64) -> Axis {
        Axis::linear_with_headroom(min, max, 0.0)
    }

    /// A linear axis from exactly `lo` to `hi` (a time axis whose ends are the data's),
    /// with the round ticks that fall inside it.
    pub(crate) fn linear_exact(lo: f64, hi: f64) -> Axis {
        let round = Axis::linear_tight(lo, hi);
        Axis {
            ticks: round
                .ticks
                .into_iter()
                .filter(|t| (lo..=hi).contains(t))
                .collect(),
            lo,
            hi,
            ..round
        }
    }

    fn linear_with_headroom(min: f64, max: f64, headroom: f64) -> Axis {
        let (min, max) = finite_span(min, max);
        let step = nice_step((max - min) / TICKS_TARGET);
        let lo = (min / step).floor() * step;
        let hi = ((max + (max - min) * headroom) / step - 1e-9).ceil() * step;
        let ticks = (0..)
            .map(|k| lo + k as f64 * step)
            .take_while(|&t| t <= hi + step * 1e-9)
            .collect();
        Axis {
            scale: Scale::Linear,
            lo,
            hi,
            ticks,
            light_ticks: Vec::new(),
        }
    }

    /// A log10 axis covering `[min_positive, max]` in whole decades. Values at or below the
    /// bottom of the axis are drawn at the bottom.
    pub(crate) fn log10(min_positive: f64, max: f64) -> Axis {
        let min_positive = if min_positive.is_finite() && min_positive > 0.0 {
            min_positive
        } else {
            1.0
        };
        let max = if max.is_finite() && max > min_positive {
            max
        } else {
            min_positive
        };
        let lo = min_positive.log10().floor();
        let mut hi = max.log10().ceil();
        if hi <= lo {
            hi = lo + 1.0;
        }
        let decades = (lo as i32)..(hi as i32);
        let ticks = (lo as i32..=hi as i32).map(f64::from).collect();
        let light_ticks = decades
            .flat_map(|k| [2.0, 5.0].map(|m| f64::from(k) + f64::log10(m)))
            .collect();
        Axis {
            scale: Scale::Log10,
            lo,
            hi,
            ticks,
            light_ticks,
        }
    }

    /// Where `value` is plotted on this axis.
    pub(crate) fn to_plot(&self, value: f64) -> f64 {
        match self.scale {
            Scale::Linear => value,
            Scale::Log10 if value > 0.0 => value.log10().max(self.lo),
            Scale::Log10 => self.lo,
        }
    }

    /// The tick label for plot position `position`.
    pub(crate) fn label(&self, position: f64) -> String {
        match self.scale {
            Scale::Linear => format::number(position),
            Scale::Log10 => format::number(10f64.powf(position.round())),
        }
    }

    /// The plotters coordinate range with this axis's ticks bound to it.
    pub(crate) fn range(&self) -> TickedRange {
        TickedRange {
            lo: self.lo,
            hi: self.hi,
            ticks: self.ticks.clone(),
            light_ticks: self.light_ticks.clone(),
        }
    }
}

/// A linear f64 plotters coordinate whose grid lines are exactly the given ticks. (Plotters'
/// own `WithKeyPoints` on f64 ranges cannot take label formatters in 0.3.7.)
#[derive(Debug, Clone)]
pub(crate) struct TickedRange {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    light_ticks: Vec<f64>,
}

impl Ranged for TickedRange {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (value - self.lo) / (self.hi - self.lo);
        let fraction = if fraction.is_finite() {
            fraction.clamp(-1.0, 2.0)
        } else {
            0.0
        };
        limit.0 + (f64::from(limit.1 - limit.0) * fraction).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light_ticks.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// Guards against empty and degenerate data: returns a span of at least 1 unit.
fn finite_span(min: f64, max: f64) -> (f64, f64) {
    let min = if min.is_finite() { min } else { 0.0 };
    let max = if max.is_finite() { max } else { min };
    if max - min > 0.0 {
        (min, max)
    } else {
        (min, min + 1.0)
    }
}

/// The 1-2-2.5-5 step at or above `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let factor = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .find(|&f| f >= normalized - 1e-9)
        .unwrap_or(10.0);
    factor * magnitude
}

#[cfg(test)]
mod tests {
    use super::Axis;

    #[test]
    fn linear_ticks_are_round() {
        let axis = Axis::linear(0.0, 9.3);
        assert_eq!(axis.lo, 0.0);
        assert_eq!(axis.ticks, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let labels: Vec<String> = axis.ticks.iter().map(|&t| axis.label(t)).collect();
        assert_eq!(labels, ["0", "2", "4", "6", "8", "10"]);
    }

    #[test]
    fn tight_axis_ends_at_a_round_max() {
        let axis = Axis::linear_tight(0.0, 12.0);
        assert_eq!((axis.lo, axis.hi), (0.0, 12.0));
    }

    #[test]
    fn degenerate_linear_range_is_widened() {
        let axis = Axis::linear(0.0, 0.0);
        assert!(axis.hi > axis.lo);
    }

    #[test]
    fn log_axis_covers_whole_decades() {
        let axis = Axis::log10(0.05, 1200.0);
        assert_eq!((axis.lo, axis.hi), (-2.0, 4.0));
        assert_eq!(axis.label(-2.0), "0.01");
        assert_eq!(axis.label(3.0), "1000");
        assert_eq!(axis.to_plot(0.0), -2.0);
    }
}
