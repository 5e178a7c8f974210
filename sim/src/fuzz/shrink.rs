//! Shrinking a failing case: greedy, one simplification at a time (drop a fault, a group;
//! halve the duration, a group, a fault's window; drop repeats, overrides, multi-device users,
//! app cycles, group chats, big bodies, expiring tokens), keeping a candidate when it still fails for the same
//! invariant on the same seed, until no candidate does. Candidates are tried in a fixed order
//! and, with several jobs, in batches whose first failing member wins, so the result is the
//! same whatever the number of jobs.

use super::spec::{FaultTarget, Spec};

/// Every one-step simplification of `spec`, most shrinking first.
pub fn candidates(spec: &Spec) -> Vec<Spec> {
    let mut out = Vec::new();
    let mut push = |candidate: Spec| {
        if &candidate != spec && valid(&candidate) {
            out.push(candidate);
        }
    };
    // End a minute after the last fault ends; start the faults earlier (half the time before
    // the first one); drop everything past the middle; then whole faults and groups.
    let last_end = spec
        .faults
        .iter()
        .map(|f| f.at_s + f.duration_s)
        .max()
        .unwrap_or(0);
    if last_end + 60 < spec.duration_s {
        let mut cut = spec.clone();
        cut.duration_s = (last_end + 60).max(60);
        cut.faults.retain(|f| f.at_s < cut.duration_s);
        push(cut);
    }
    if let Some(first_at) = spec.faults.iter().map(|f| f.at_s).min()
        && first_at >= 60
    {
        let shift = first_at / 2;
        let mut earlier = spec.clone();
        earlier.duration_s -= shift;
        for fault in &mut earlier.faults {
            fault.at_s -= shift;
        }
        push(earlier);
    }
    if spec.duration_s > 60 {
        let mut half = spec.clone();
        half.duration_s = (spec.duration_s / 2).max(60);
        half.faults.retain(|f| f.at_s < half.duration_s);
        push(half);
    }
    for i in 0..spec.faults.len() {
        let mut fewer = spec.clone();
        fewer.faults.remove(i);
        push(fewer);
    }
    for i in 0..spec.groups.len() {
        if spec.groups.len() > 1 {
            push(without_group(spec, i));
        }
    }
    for i in 0..spec.groups.len() {
        let group = &spec.groups[i];
        let mut smaller = spec.clone();
        smaller.groups[i].count = (group.count / 2).max(2);
        push(smaller);
        let mut simpler = spec.clone();
        let g = &mut simpler.groups[i];
        g.devices_per_user = 1;
        g.app_cycle_s = 0;
        push(simpler);
        let mut quieter = spec.clone();
        quieter.groups[i].group_per_hour = 0;
        push(quieter);
        let mut small_bodies = spec.clone();
        small_bodies.groups[i].body_bytes = small_bodies.groups[i].body_bytes.min(100);
        push(small_bodies);
        let mut fewer_sends = spec.clone();
        fewer_sends.groups[i].one_to_one_per_hour = group.one_to_one_per_hour / 2;
        push(fewer_sends);
        if group.count > 2 {
            let mut less = spec.clone();
            less.groups[i].count -= 1;
            push(less);
        }
    }
    for i in 0..spec.faults.len() {
        let fault = &spec.faults[i];
        let mut once = spec.clone();
        once.faults[i].every_s = None;
        push(once);
        if fault.duration_s > 1 {
            let mut shorter = spec.clone();
            shorter.faults[i].duration_s = fault.duration_s / 2;
            if let Some(every) = shorter.faults[i].every_s {
                shorter.faults[i].every_s = Some(every.max(shorter.faults[i].duration_s + 1));
            }
            push(shorter);
        }
        if let FaultTarget::Group { group, to, percent } = fault.target
            && percent < 100
        {
            let mut all = spec.clone();
            all.faults[i].target = FaultTarget::Group {
                group,
                to,
                percent: 100,
            };
            push(all);
        }
    }
    for (i, carrier) in spec.carriers.iter().enumerate() {
        if carrier.loss.is_some()
            || carrier.nat_timeout_s.is_some()
            || carrier.bandwidth_kbps.is_some()
        {
            let mut plain = spec.clone();
            plain.carriers[i].loss = None;
            plain.carriers[i].nat_timeout_s = None;
            plain.carriers[i].bandwidth_kbps = None;
            push(plain);
        }
    }
    if spec.outbox_len_max.is_some() || spec.fanout_queue_len_max.is_some() {
        let mut default_bounds = spec.clone();
        default_bounds.outbox_len_max = None;
        default_bounds.fanout_queue_len_max = None;
        push(default_bounds);
    }
    if spec.push_whole {
        let mut default_pushes = spec.clone();
        default_pushes.push_whole = false;
        push(default_pushes);
    }
    if spec.token_lifetime_s.is_some() {
        let mut dev_mode = spec.clone();
        dev_mode.token_lifetime_s = None;
        push(dev_mode);
    }
    if spec.durable && spec.commit_latency_ms > 2 {
        let mut fast = spec.clone();
        fast.commit_latency_ms = 2;
        push(fast);
    }
    out
}

/// `spec` without group `i`; faults on it go, later groups' indices move down.
fn without_group(spec: &Spec, i: usize) -> Spec {
    let mut out = spec.clone();
    out.groups.remove(i);
    out.faults
        .retain(|f| !matches!(f.target, FaultTarget::Group { group, .. } if group == i));
    for fault in &mut out.faults {
        if let FaultTarget::Group { group, .. } = &mut fault.target
            && *group > i
        {
            *group -= 1;
        }
    }
    out
}

/// Whether a candidate is still a scenario the loader takes (the rendering checks the rest).
fn valid(spec: &Spec) -> bool {
    !spec.groups.is_empty()
        && spec.faults.iter().all(|f| {
            f.at_s < spec.duration_s
                && f.every_s.is_none_or(|every| every > f.duration_s)
                && (f.kind != "clock_jump" || spec.token_lifetime_s.is_some())
        })
}
