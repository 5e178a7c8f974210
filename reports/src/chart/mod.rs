//! Chart plumbing shared by reports: registers the bundled DejaVu font, renders one chart
//! description to both PNG and SVG, and provides axes with hand-picked ticks, a palette that
//! gives each strategy the same colour and marker in every chart, and a legend.
//!
//! A chart is a value implementing `Chart`; `render` draws it twice, once per backend, so the
//! PNG and the SVG always show the same thing.

pub(crate) mod axis;
pub(crate) mod bars;
pub(crate) mod legend;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::ReportError;

pub(crate) use axis::Axis;
pub(crate) use legend::{SeriesStyle, draw_legend, draw_marker};

/// The font family every chart uses; registered once from the `dejavu` crate so rendering
/// needs no system fonts.
pub(crate) const FONT: &str = "sans-serif";

pub(crate) type DrawResult<DB> =
    Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A chart that can draw itself on any plotters backend.
pub(crate) trait Chart {
    /// Width and height in pixels (also the SVG's viewBox).
    fn size_px(&self) -> (u32, u32);
    /// Draws the whole chart on `root`, whose pixel origin is the image's top-left corner.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// The files `render` wrote, and the SVG markup for inlining in a page.
pub(crate) struct Rendered {
    pub png: PathBuf,
    pub svg: PathBuf,
    pub svg_markup: String,
}

/// Draws `chart` to `dir/basename.png` and `dir/basename.svg`.
pub(crate) fn render(
    chart: &impl Chart,
    dir: &Path,
    basename: &str,
) -> Result<Rendered, ReportError> {
    let png = dir.join(format!("{basename}.png"));
    let svg = dir.join(format!("{basename}.svg"));
    register_fonts().map_err(|message| ReportError::Chart {
        path: png.clone(),
        message,
    })?;
    let size = chart.size_px();
    let chart_error = |path: &Path, message: String| ReportError::Chart {
        path: path.to_path_buf(),
        message,
    };

    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| chart_error(&png, e.to_string()))?;
        chart
            .draw(&root)
            .map_err(|e| chart_error(&png, e.to_string()))?;
        root.present()
            .map_err(|e| chart_error(&png, e.to_string()))?;
    }

    let mut svg_markup = String::new();
    {
        let root = SVGBackend::with_string(&mut svg_markup, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| chart_error(&svg, e.to_string()))?;
        chart
            .draw(&root)
            .map_err(|e| chart_error(&svg, e.to_string()))?;
        root.present()
            .map_err(|e| chart_error(&svg, e.to_string()))?;
    }
    std::fs::write(&svg, &svg_markup).map_err(|e| ReportError::io("writing", &svg, e))?;

    Ok(Rendered {
        png,
        svg,
        svg_markup,
    })
}

/// Renders `chart` to `dir/basename.{png,svg}`, adds both files to `written` and returns its
/// SVG markup; or returns `skipped` as the reason when there is no chart to draw.
pub(crate) fn render_or_skip(
    dir: &Path,
    basename: &str,
    chart: Option<&impl Chart>,
    skipped: &str,
    written: &mut Vec<PathBuf>,
) -> Result<Result<String, String>, ReportError> {
    let Some(chart) = chart else {
        return Ok(Err(skipped.to_string()));
    };
    let rendered = render(chart, dir, basename)?;
    written.extend([rendered.png, rendered.svg]);
    Ok(Ok(rendered.svg_markup))
}

/// Registers DejaVu Sans (regular and bold) under `FONT`, once per process. Without it every
/// drawing call, SVG included, fails with `FontUnavailable`.
fn register_fonts() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the bundled DejaVu Sans font did not parse".to_string())?;
            register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
                .map_err(|_| "the bundled DejaVu Sans Bold font did not parse".to_string())
        })
        .clone()
}

/// Text style in the chart font, `size_px` high, in `color`.
pub(crate) fn text(size_px: u32, color: RGBColor) -> TextStyle<'static> {
    (FONT, size_px).into_font().color(&color)
}

/// Bold text style in the chart font. (The style must be given when the font is created:
/// `FontDesc::style` relabels the already-loaded regular face.)
pub(crate) fn bold_text(size_px: u32, color: RGBColor) -> TextStyle<'static> {
    (FONT, f64::from(size_px), FontStyle::Bold)
        .into_font()
        .color(&color)
}

pub(crate) const INK: RGBColor = RGBColor(33, 37, 41);
pub(crate) const MUTED: RGBColor = RGBColor(90, 96, 104);
pub(crate) const GRID: RGBColor = RGBColor(225, 228, 232);

/// Draws a chart title centred at the top of `area` and returns the area below it.
pub(crate) fn title_area<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: Option<&str>,
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    let (width, _) = area.dim_in_pixel();
    let center = (width / 2) as i32;
    let title_style = bold_text(24, INK).pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Center,
        plotters::style::text_anchor::VPos::Top,
    ));
    area.draw_text(title, &title_style, (center, 12))?;
    let mut used = 48;
    if let Some(subtitle) = subtitle {
        let style = text(16, MUTED).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ));
        area.draw_text(subtitle, &style, (center, 44))?;
        used = 72;
    }
    Ok(area.split_vertically(used).1)
}

/// The mesh of a line plot in the report style: axis labels from the axes, the
/// two descriptions, light grid.
pub(crate) fn draw_line_mesh<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<axis::TickedRange, axis::TickedRange>>,
    x_axis: &Axis,
    y_axis: &Axis,
    x_desc: &str,
    y_desc: &str,
) -> DrawResult<DB> {
    let x_formatter = |x: &f64| x_axis.label(*x);
    let y_formatter = |y: &f64| y_axis.label(*y);
    chart
        .configure_mesh()
        .x_label_formatter(&x_formatter)
        .y_label_formatter(&y_formatter)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(text(15, INK))
        .axis_desc_style(text(17, INK))
        .bold_line_style(GRID)
        .light_line_style(GRID.mix(0.5))
        .axis_style(MUTED)
        .draw()
}

/// Splits `body` into a plot area and a legend column on the right, draws the legend of
/// line series there and returns the plot area.
pub(crate) fn with_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    body: &DrawingArea<DB, Shift>,
    legend: &[SeriesStyle],
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    let (width, _) = body.dim_in_pixel();
    let legend_px = legend::legend_width(root, legend, bars::LEGEND_WIDTH_MAX_PX)?;
    let (plot_area, legend_area) = body.split_horizontally(width - legend_px);
    draw_legend(
        &legend_area.margin(10, 0, 10, 0),
        Some("Series"),
        legend,
        legend::Swatch::Line,
    )?;
    Ok(plot_area)
}

/// `text` cut with an ellipsis so it is at most `max_width_px` wide in `style`.
pub(crate) fn fit_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
    max_width_px: u32,
) -> Result<String, DrawingAreaErrorKind<DB::ErrorType>> {
    if area.estimate_text_size(text, style)?.0 <= max_width_px {
        return Ok(text.to_string());
    }
    let chars: Vec<char> = text.chars().collect();
    for keep in (1..chars.len()).rev() {
        let candidate: String = chars[..keep].iter().collect::<String>() + "…";
        if area.estimate_text_size(&candidate, style)?.0 <= max_width_px {
            return Ok(candidate);
        }
    }
    Ok("…".to_string())
}
