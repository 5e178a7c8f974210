//! A simulation run's storm charts: logins (devices) and accepts (server) per simulated second
//! over the whole run, and zoomed on each server crash with its restart and the moments 50%,
//! 90% and 99% of the devices were back.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{CrashStorm, SimReport};
use crate::chart::axis::TickedRange;
use crate::chart::legend::series_styles;
use crate::chart::{
    Axis, Chart, DrawResult, INK, MUTED, SeriesStyle, draw_line_mesh, text, title_area, with_legend,
};

pub(crate) const OVER_RUN_CAPTION: &str = "Devices logging in (the clients' count) and \
     connections the server accepted (its own counter), per simulated second; on a long run \
     each point is the busiest second of its bucket, so peaks keep their height. Grey lines \
     mark server crashes and the heal, when every device reconnects at once to converge \
     before the invariants are checked (the simulator's check, not part of the scenario). \
     Accepts above logins are connections that failed before their login completed.";

const WIDTH_PX: u32 = 1200;
/// At most this many points per series over the run: longer runs plot the busiest second of
/// each bucket.
const RUN_POINTS_MAX: u64 = 1_200;
/// A crash's chart spans at most this many seconds after the crash.
const WINDOW_AFTER_MAX_S: f64 = 900.0;
/// Windows up to this many seconds draw bars; longer ones lines.
const BARS_SECONDS_MAX: u64 = 240;

pub(crate) fn window_caption(crash: &CrashStorm) -> String {
    let after = |back: Option<f64>| back.map_or("never".to_string(), |s| format!("{s:.1} s"));
    let left = match crash.devices_left {
        0 => String::new(),
        n => format!(" ({n} stopped trying: their app was killed or went inactive first)"),
    };
    format!(
        "Around the crash at {:.0} s: logins and accepts in each simulated second, from 10 s \
         before the crash. {} of the {} devices logged in at the crash came back{left}; 50% \
         in {}, 90% in {}, 99% in {} after the restart (vertical lines). Peak {} logins/s, {} \
         accepts/s.",
        crash.crashed_at_s,
        crash.devices_back,
        crash.devices_connected,
        after(crash.back_50_s),
        after(crash.back_90_s),
        after(crash.back_99_s),
        crash.logins_per_s_peak,
        crash.accepts_per_s_peak,
    )
}

fn styles() -> Vec<SeriesStyle> {
    series_styles(&[
        "logins per second".to_string(),
        "accepts per second".to_string(),
    ])
}

type Plot<'a, DB> = ChartContext<'a, DB, Cartesian2d<TickedRange, TickedRange>>;

fn plot<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    x_axis: &Axis,
    y_axis: &Axis,
    x_desc: &str,
) -> Result<Plot<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(area)
        .margin_left(10)
        .margin_right(24)
        .margin_bottom(8)
        .x_label_area_size(52)
        .y_label_area_size(76)
        .build_cartesian_2d(x_axis.range(), y_axis.range())?;
    draw_line_mesh(&mut chart, x_axis, y_axis, x_desc, "per simulated second")?;
    Ok(chart)
}

/// A labelled vertical line at `x`, the label at the top of the plot.
fn marker_line<DB: DrawingBackend>(
    chart: &mut Plot<'_, DB>,
    x: f64,
    y_top: f64,
    label: &str,
    color: RGBColor,
) -> DrawResult<DB> {
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(x, 0.0), (x, y_top)],
        color.stroke_width(2),
    )))?;
    let style = text(14, color).pos(Pos::new(HPos::Left, VPos::Top));
    chart.draw_series(std::iter::once(Text::new(
        format!(" {label}"),
        (x, y_top),
        style,
    )))?;
    Ok(())
}

/// Logins and accepts per second over the whole run, bucketed to at most `RUN_POINTS_MAX`
/// points (the busiest second of each bucket).
pub(crate) struct StormsOverRun {
    bucket_s: u64,
    /// (bucket start s, most logins in a second, most accepts in a second).
    points: Vec<(f64, f64, f64)>,
    crashes: Vec<f64>,
    healed_at_s: Option<f64>,
    x_axis: Axis,
    y_axis: Axis,
}

impl StormsOverRun {
    /// None when no second had a login or an accept.
    pub(crate) fn new(report: &SimReport) -> Option<StormsOverRun> {
        let last = report.seconds.last()?.second;
        let end = (report.simulated_s.ceil() as u64).max(last + 1);
        let bucket_s = end.div_ceil(RUN_POINTS_MAX).max(1);
        let buckets = end.div_ceil(bucket_s) as usize;
        let mut peaks = vec![(0u32, 0u32); buckets];
        for s in &report.seconds {
            let peak = &mut peaks[(s.second / bucket_s) as usize];
            peak.0 = peak.0.max(s.logins);
            peak.1 = peak.1.max(s.accepts);
        }
        let points: Vec<(f64, f64, f64)> = peaks
            .iter()
            .enumerate()
            .map(|(b, (logins, accepts))| {
                (
                    (b as u64 * bucket_s) as f64,
                    f64::from(*logins),
                    f64::from(*accepts),
                )
            })
            .collect();
        let max = points.iter().map(|p| p.1.max(p.2)).fold(1.0, f64::max);
        Some(StormsOverRun {
            bucket_s,
            points,
            crashes: report
                .storms
                .crashes
                .iter()
                .map(|c| c.crashed_at_s)
                .collect(),
            healed_at_s: report.storms.healed_at_s.map(|at| at as f64),
            x_axis: Axis::linear_exact(0.0, end as f64),
            y_axis: Axis::linear(0.0, max * 1.1),
        })
    }
}

impl Chart for StormsOverRun {
    fn size_px(&self) -> (u32, u32) {
        (WIDTH_PX, 520)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let subtitle = if self.bucket_s == 1 {
            "Every simulated second with a login or an accept".to_string()
        } else {
            format!(
                "The busiest second of each {} s of simulated time",
                self.bucket_s
            )
        };
        let body = title_area(
            root,
            "Logins and accepts per second over the run",
            Some(&subtitle),
        )?;
        let legend = styles();
        let area = with_legend(root, &body, &legend)?;
        let mut chart = plot(&area, &self.x_axis, &self.y_axis, "simulated time (s)")?;
        for (n, at) in self.crashes.iter().enumerate() {
            marker_line(
                &mut chart,
                *at,
                self.y_axis.hi,
                &format!("crash {}", n + 1),
                MUTED,
            )?;
        }
        if let Some(at) = self.healed_at_s {
            marker_line(&mut chart, at, self.y_axis.hi * 0.93, "heal", INK)?;
        }
        for (index, style) in legend.iter().enumerate() {
            let points = self
                .points
                .iter()
                .map(|p| (p.0, if index == 0 { p.1 } else { p.2 }));
            // One pixel wide: a wider polyline's mitre at a one-second spike pokes through
            // the axis in the PNG.
            chart.draw_series(LineSeries::new(points, style.color.stroke_width(1)))?;
        }
        Ok(())
    }
}

/// The seconds around one crash, relative to it.
pub(crate) struct StormWindow {
    number: usize,
    crashed_at_s: f64,
    /// (seconds since the crash, logins, accepts), every second of the window.
    seconds: Vec<(i64, u32, u32)>,
    /// (seconds since the crash, label).
    lines: Vec<(f64, String)>,
    x_axis: Axis,
    y_axis: Axis,
}

impl StormWindow {
    pub(crate) fn new(report: &SimReport, number: usize, crash: &CrashStorm) -> StormWindow {
        let restart = crash.restarted_at_s.map(|at| at - crash.crashed_at_s);
        let mut lines = Vec::new();
        if let Some(restart) = restart {
            lines.push((restart, "restart".to_string()));
            for (share, back) in [
                ("50%", crash.back_50_s),
                ("90%", crash.back_90_s),
                ("99%", crash.back_99_s),
            ] {
                if let Some(back) = back {
                    lines.push((restart + back, format!("{share} back")));
                }
            }
        }
        let last_line = lines.iter().map(|l| l.0).fold(60.0, f64::max);
        let after = (last_line + 20.0).min(WINDOW_AFTER_MAX_S);
        lines.retain(|l| l.0 <= after);
        let crash_s = crash.crashed_at_s as i64;
        let first = -10i64;
        let last = after.ceil() as i64;
        let mut seconds: Vec<(i64, u32, u32)> = (first..=last).map(|t| (t, 0, 0)).collect();
        for s in report.seconds.iter().filter(|s| {
            let t = s.second as i64 - crash_s;
            (first..=last).contains(&t)
        }) {
            let slot = &mut seconds[(s.second as i64 - crash_s - first) as usize];
            slot.1 = s.logins;
            slot.2 = s.accepts;
        }
        let max = seconds
            .iter()
            .map(|s| f64::from(s.1.max(s.2)))
            .fold(1.0, f64::max);
        StormWindow {
            number,
            crashed_at_s: crash.crashed_at_s,
            seconds,
            lines,
            x_axis: Axis::linear_exact(first as f64 - 0.5, last as f64 + 0.5),
            y_axis: Axis::linear(0.0, (max * 1.15).max(4.0)),
        }
    }
}

impl Chart for StormWindow {
    fn size_px(&self) -> (u32, u32) {
        (WIDTH_PX, 520)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = title_area(
            root,
            &format!(
                "Crash {} at {:.0} s: the storm after it",
                self.number, self.crashed_at_s
            ),
            Some("Logins and accepts in each simulated second"),
        )?;
        let legend = styles();
        let area = with_legend(root, &body, &legend)?;
        let mut chart = plot(&area, &self.x_axis, &self.y_axis, "seconds since the crash")?;
        let value =
            |s: &(i64, u32, u32), index: usize| f64::from(if index == 0 { s.1 } else { s.2 });
        if self.seconds.len() as u64 <= BARS_SECONDS_MAX {
            // Two bars per second: logins on the left half, accepts on the right.
            for (index, style) in legend.iter().enumerate() {
                let offset = index as f64 * 0.4 - 0.4;
                let bars = self
                    .seconds
                    .iter()
                    .filter(|s| value(s, index) > 0.0)
                    .map(|s| {
                        let x0 = s.0 as f64 + offset;
                        Rectangle::new(
                            [(x0 + 0.02, 0.0), (x0 + 0.38, value(s, index))],
                            style.color.filled(),
                        )
                    });
                chart.draw_series(bars)?;
            }
        } else {
            for (index, style) in legend.iter().enumerate() {
                let points = self.seconds.iter().map(|s| (s.0 as f64, value(s, index)));
                chart.draw_series(LineSeries::new(points, style.color.stroke_width(1)))?;
            }
        }
        marker_line(&mut chart, 0.0, self.y_axis.hi, "crash", MUTED)?;
        // Labels step down so lines close together stay readable.
        for (n, (at, label)) in self.lines.iter().enumerate() {
            let top = self.y_axis.hi * (1.0 - 0.07 * (n + 1) as f64);
            marker_line(&mut chart, *at, top, label, INK)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{StormSecond, Storms};

    fn report(seconds: Vec<StormSecond>, simulated_s: f64, crashes: Vec<CrashStorm>) -> SimReport {
        SimReport {
            scenario: "s".into(),
            seed: 1,
            ok: true,
            summary: Vec::new(),
            invariants: Vec::new(),
            replay: String::new(),
            simulated_s,
            storms: Storms {
                healed_at_s: None,
                logins_per_s_peak: 0,
                logins_peak_at_s: 0,
                accepts_per_s_peak: 0,
                accepts_peak_at_s: 0,
                outbox_high_water: 0,
                fanout_queue_high_water: 0,
                crashes,
            },
            seconds,
            results_json: String::new(),
        }
    }

    fn second(second: u64, logins: u32, accepts: u32) -> StormSecond {
        StormSecond {
            second,
            logins,
            accepts,
        }
    }

    #[test]
    fn a_long_run_keeps_the_busiest_second_of_each_bucket() {
        // 24 h: buckets of 72 s; the peak second must keep its height, not be averaged away.
        let r = report(
            vec![
                second(10, 3, 4),
                second(50, 900, 950),
                second(71, 2, 2),
                second(72, 7, 1),
            ],
            86_400.0,
            Vec::new(),
        );
        let chart = StormsOverRun::new(&r).unwrap();
        assert_eq!(chart.bucket_s, 72);
        assert_eq!(chart.points[0], (0.0, 900.0, 950.0));
        assert_eq!(chart.points[1], (72.0, 7.0, 1.0));
        assert_eq!(chart.points.len(), 1_200);
    }

    /// A crash at 1,000 s, back 30 s later, with all 10 devices back within 8 s.
    fn crash() -> CrashStorm {
        CrashStorm {
            crashed_at_s: 1000.0,
            restarted_at_s: Some(1030.0),
            devices_connected: 10,
            devices_back: 10,
            devices_left: 0,
            back_50_s: Some(2.0),
            back_90_s: Some(5.0),
            back_99_s: Some(8.0),
            logins_per_s_peak: 6,
            accepts_per_s_peak: 7,
        }
    }

    #[test]
    fn a_crash_window_places_every_second_relative_to_the_crash() {
        let crash = crash();
        let r = report(
            vec![
                second(985, 1, 1),
                second(995, 2, 2),
                second(1032, 6, 7),
                second(1200, 9, 9),
            ],
            2000.0,
            vec![crash.clone()],
        );
        let window = StormWindow::new(&r, 1, &crash);
        // From 10 s before the crash to 20 s past the last line (99% back at 30 + 8 s), but
        // at least 60 s + 20 s.
        assert_eq!(window.seconds.first().unwrap().0, -10);
        assert_eq!(window.seconds.last().unwrap().0, 80);
        assert!(window.seconds.contains(&(-5, 2, 2)));
        assert!(window.seconds.contains(&(32, 6, 7)));
        assert!(!window.seconds.iter().any(|s| s.1 == 1 || s.1 == 9));
        let lines: Vec<&str> = window.lines.iter().map(|l| l.1.as_str()).collect();
        assert_eq!(lines, ["restart", "50% back", "90% back", "99% back"]);
        assert_eq!(window.lines[3].0, 38.0);
    }

    #[test]
    fn a_caption_names_the_devices_that_stopped_trying() {
        let mut crash = CrashStorm {
            devices_connected: 40,
            devices_back: 40,
            ..crash()
        };
        let all_back = window_caption(&crash);
        assert!(all_back.contains("40 of the 40 devices logged in at the crash came back;"));
        assert!(!all_back.contains("stopped trying"));
        (crash.devices_back, crash.devices_left) = (34, 6);
        let caption = window_caption(&crash);
        assert!(
            caption.contains(
                "34 of the 40 devices logged in at the crash came back (6 stopped trying: their \
                 app was killed or went inactive first); 50% in 2.0 s"
            ),
            "{caption}"
        );
    }
}
