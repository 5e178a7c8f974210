//! Display order and styling shared by every chart and the page: profiles and strategies in
//! order of first appearance, one colour and marker per strategy, and which rows are on their
//! profile's Pareto front. A selection of the given rows; nothing is recomputed.

use super::{HeartbeatReport, HeartbeatRow};
use crate::chart::SeriesStyle;
use crate::chart::legend::series_styles;
use crate::pareto::pareto_front;

pub(crate) struct Display<'a> {
    pub report: &'a HeartbeatReport,
    /// Profiles in order of first appearance in `rows`.
    pub profiles: Vec<String>,
    /// Strategies in order of first appearance in `rows`, then in `series`.
    pub strategies: Vec<String>,
    /// One style per entry of `strategies`.
    pub styles: Vec<SeriesStyle>,
    /// Per row of `report.rows`: on the Pareto front of its profile (battery % per day
    /// against p99 delay, both minimised).
    pub on_front: Vec<bool>,
}

impl<'a> Display<'a> {
    pub(crate) fn new(report: &'a HeartbeatReport) -> Display<'a> {
        let mut profiles: Vec<String> = Vec::new();
        let mut strategies: Vec<String> = Vec::new();
        for row in &report.rows {
            push_new(&mut profiles, &row.profile);
            push_new(&mut strategies, &row.strategy);
        }
        for series in &report.series {
            push_new(&mut strategies, &series.strategy);
        }
        let styles = series_styles(&strategies);

        let mut on_front = vec![false; report.rows.len()];
        for profile in &profiles {
            let indices: Vec<usize> = (0..report.rows.len())
                .filter(|&i| &report.rows[i].profile == profile)
                .collect();
            let points: Vec<(f64, f64)> = indices
                .iter()
                .map(|&i| pareto_point(&report.rows[i]))
                .collect();
            for front_index in pareto_front(&points) {
                on_front[indices[front_index]] = true;
            }
        }

        Display {
            report,
            profiles,
            strategies,
            styles,
            on_front,
        }
    }

    /// The style of `strategy` (every strategy of the report has one).
    pub(crate) fn style(&self, strategy: &str) -> &SeriesStyle {
        let index = self
            .strategies
            .iter()
            .position(|s| s == strategy)
            .unwrap_or_else(|| panic!("strategy {strategy:?} missing from the display order"));
        &self.styles[index]
    }

    /// The first row for `strategy` on `profile`, if any.
    pub(crate) fn row(&self, strategy: &str, profile: &str) -> Option<&'a HeartbeatRow> {
        self.report
            .rows
            .iter()
            .find(|r| r.strategy == strategy && r.profile == profile)
    }

    /// Indices of the rows of `profile`, in report order.
    pub(crate) fn rows_of_profile(&self, profile: &str) -> Vec<usize> {
        (0..self.report.rows.len())
            .filter(|&i| self.report.rows[i].profile == profile)
            .collect()
    }

    /// Row indices grouped by profile, strategies in display order within each profile.
    pub(crate) fn table_order(&self) -> Vec<usize> {
        let rank = |list: &[String], name: &str| list.iter().position(|s| s == name);
        let mut order: Vec<usize> = (0..self.report.rows.len()).collect();
        order.sort_by_key(|&i| {
            let row = &self.report.rows[i];
            (
                rank(&self.profiles, &row.profile),
                rank(&self.strategies, &row.strategy),
                i,
            )
        });
        order
    }
}

/// The point a row takes on the Pareto chart: (p99 delay in ms, battery % per day).
pub(crate) fn pareto_point(row: &HeartbeatRow) -> (f64, f64) {
    (row.delay_ms_p99 as f64, row.battery_pct_per_day)
}

fn push_new(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|existing| existing == name) {
        list.push(name.to_string());
    }
}
