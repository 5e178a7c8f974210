//! Series styles (one colour and marker per strategy, the same in every chart) and the
//! legend that names them. Markers and legends draw in pixel space on the root area.

use plotters::coord::Shift;
use plotters::prelude::*;

use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{DrawResult, INK, fit_text, text};

/// Colour-blind-aware categorical colours (matplotlib's tab10, then two dark extras), dark
/// enough for lines and text on white.
const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(57, 59, 121),
    RGBColor(99, 121, 57),
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Marker {
    Circle,
    Square,
    Triangle,
    Diamond,
}

const MARKERS: [Marker; 4] = [
    Marker::Circle,
    Marker::Square,
    Marker::Triangle,
    Marker::Diamond,
];

/// How one named series (a strategy) looks in every chart.
#[derive(Debug, Clone)]
pub(crate) struct SeriesStyle {
    pub name: String,
    pub color: RGBColor,
    pub marker: Marker,
}

/// Styles for `names` in order; colours cycle after 12 and the marker shifts each cycle, so
/// the first 48 names all look different.
pub(crate) fn series_styles(names: &[String]) -> Vec<SeriesStyle> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| SeriesStyle {
            name: name.clone(),
            color: PALETTE[i % PALETTE.len()],
            marker: MARKERS[(i + i / PALETTE.len()) % MARKERS.len()],
        })
        .collect()
}

/// Draws `marker` centred on pixel `center` of `root` (relative to its top-left corner); `outline` adds a dark ring (used to
/// highlight Pareto-front points).
pub(crate) fn draw_marker<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    center: (i32, i32),
    marker: Marker,
    color: RGBColor,
    radius: i32,
    outline: bool,
) -> DrawResult<DB> {
    let fill = color.filled();
    let (x, y) = center;
    let r = radius;
    match marker {
        Marker::Circle => root.draw(&Circle::new(center, r, fill))?,
        Marker::Square => {
            let r = r * 85 / 100;
            root.draw(&Rectangle::new([(x - r, y - r), (x + r, y + r)], fill))?
        }
        Marker::Triangle => root.draw(&Polygon::new(
            vec![
                (x, y - r - 1),
                (x + r + 1, y + r * 3 / 4),
                (x - r - 1, y + r * 3 / 4),
            ],
            fill,
        ))?,
        Marker::Diamond => root.draw(&Polygon::new(
            vec![
                (x, y - r - 1),
                (x + r + 1, y),
                (x, y + r + 1),
                (x - r - 1, y),
            ],
            fill,
        ))?,
    }
    if outline {
        root.draw(&Circle::new(center, r + 5, INK.stroke_width(2)))?;
    }
    Ok(())
}

/// What the legend shows next to each name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Swatch {
    /// A filled square (bar charts).
    Box,
    /// The series' marker (scatter charts).
    Marker,
    /// A short thick line (line charts).
    Line,
}

const LEFT_CENTER: Pos = Pos {
    h_pos: HPos::Left,
    v_pos: VPos::Center,
};

/// Row height of a legend entry in pixels.
pub(crate) const LEGEND_ROW_PX: i32 = 26;

/// The width a legend column needs for `entries` (at most `max_px`; longer names are cut).
pub(crate) fn legend_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[SeriesStyle],
    max_px: u32,
) -> Result<u32, DrawingAreaErrorKind<DB::ErrorType>> {
    let style = text(16, INK);
    let mut widest = area
        .estimate_text_size("Strategy", &super::bold_text(16, INK))?
        .0;
    for entry in entries {
        widest = widest.max(area.estimate_text_size(&entry.name, &style)?.0);
    }
    Ok((widest + 64).clamp(160, max_px))
}

/// Draws a legend in `area`: an optional bold heading, then one row per entry.
pub(crate) fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    heading: Option<&str>,
    entries: &[SeriesStyle],
    swatch: Swatch,
) -> DrawResult<DB> {
    let (width, _) = area.dim_in_pixel();
    let label_style = text(16, INK);
    let mut y = 14;
    if let Some(heading) = heading {
        area.draw_text(heading, &super::bold_text(16, INK).pos(LEFT_CENTER), (8, y))?;
        y += LEGEND_ROW_PX;
    }
    for entry in entries {
        match swatch {
            Swatch::Box => area.draw(&Rectangle::new(
                [(10, y - 7), (24, y + 7)],
                entry.color.filled(),
            ))?,
            Swatch::Marker => draw_marker(area, (17, y), entry.marker, entry.color, 6, false)?,
            Swatch::Line => area.draw(&PathElement::new(
                vec![(6, y), (28, y)],
                entry.color.stroke_width(3),
            ))?,
        }
        let label = fit_text(area, &entry.name, &label_style, width.saturating_sub(44))?;
        area.draw_text(&label, &label_style.pos(LEFT_CENTER), (34, y))?;
        y += LEGEND_ROW_PX;
    }
    Ok(())
}
