//! Pareto front selection for display: which points are not beaten on both axes by another
//! point. Both axes are minimised (lower-left is better), as in "battery per day" against
//! "p99 delay". This selects rows; it computes no new measurement.

/// Indices of the points on the Pareto front when both coordinates are minimised, in order
/// of increasing x (ties by increasing y, then by index).
///
/// A point is on the front when no other point is at least as good on both axes and strictly
/// better on one. Exact duplicates of a front point are all on the front (neither dominates
/// the other). Points with a NaN coordinate are never on the front.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| !points[i].0.is_nan() && !points[i].1.is_nan())
        .collect();
    order.sort_by(|&a, &b| {
        let (pa, pb) = (points[a], points[b]);
        pa.0.total_cmp(&pb.0)
            .then(pa.1.total_cmp(&pb.1))
            .then(a.cmp(&b))
    });

    // Sweep left to right: a point is on the front when its y beats every point to its left
    // (points with equal x and lower y come first, so they also count as "to its left").
    let mut front: Vec<usize> = Vec::new();
    let mut best_y = f64::INFINITY;
    for i in order {
        let point = points[i];
        let duplicates_last = front.last().is_some_and(|&last| points[last] == point);
        if point.1 < best_y || duplicates_last {
            front.push(i);
            best_y = best_y.min(point.1);
        }
    }
    front
}

#[cfg(test)]
mod tests {
    use super::pareto_front;

    #[test]
    fn front_of_empty_and_single() {
        assert_eq!(pareto_front(&[]), Vec::<usize>::new());
        assert_eq!(pareto_front(&[(3.0, 4.0)]), vec![0]);
    }

    #[test]
    fn ties_on_one_axis_are_dominated() {
        // Same x, higher y: dominated. Same y, higher x: dominated.
        assert_eq!(pareto_front(&[(1.0, 3.0), (1.0, 2.0), (2.0, 2.0)]), vec![1]);
    }

    #[test]
    fn duplicates_and_nan() {
        let points = [(1.0, 1.0), (f64::NAN, 0.0), (1.0, 1.0), (0.5, f64::NAN)];
        assert_eq!(pareto_front(&points), vec![0, 2]);
    }
}
