//! Faults a proxy carries out, now or on a schedule: the words of imlab-carrier's fault
//! vocabulary that act on a carrier (`outage`, `partition`, `handover` and every
//! [`LinkFault`]). The control API's `POST /faults`, `imlab proxy --scenario` and
//! `imlab load --scenario` all go through [`Proxy::apply`], so a fault means the same
//! whether it is typed, replayed from a scenario or scheduled by a load run.

use std::sync::atomic::Ordering;
use std::time::Duration;

use imlab_carrier::fault::{self, FaultParams, LinkFault, LinkWindow, Scope};
use serde_json::{Value, json};

use crate::proxy::{FAULT_WINDOWS_MAX, FlowCommand, Proxy, Shared};

/// Fault occurrences one schedule may hold at most (a 24-hour scenario with a fault every
/// minute has 1,440); a longer schedule is refused when it is made.
pub const OCCURRENCES_MAX: usize = 100_000;

/// A fault a proxy can carry out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProxyFault {
    /// Radio down: nothing passes for the window.
    Outage,
    /// The path to the server is cut for the window.
    Partition,
    /// Every phone moves to another network at once: its connections die.
    Handover,
    /// A carrier fault of the model.
    Link(LinkFault),
}

impl ProxyFault {
    /// The fault `kind` names, with its parameters; an error naming the kind or key when the
    /// kind is not a carrier's or a parameter is wrong.
    pub fn parse(kind: &str, params: &FaultParams) -> Result<ProxyFault, String> {
        match fault::scope_of(kind) {
            Some(Scope::Carrier) => {}
            Some(_) => {
                return Err(format!(
                    "key `kind`: {kind:?} cannot be applied by a proxy; it applies the carrier \
                     faults: {}",
                    carrier_kinds().join(", ")
                ));
            }
            None => {
                return Err(format!(
                    "key `kind`: unknown fault {kind:?}; the kinds are {}",
                    fault::kind_names()
                ));
            }
        }
        if let Some(link) = params.link_fault(kind).map_err(|error| error.to_string())? {
            return Ok(ProxyFault::Link(link));
        }
        params.check_keys(kind).map_err(|error| error.to_string())?;
        Ok(match kind {
            "outage" => ProxyFault::Outage,
            "partition" => ProxyFault::Partition,
            _ => ProxyFault::Handover,
        })
    }

    /// Its name in the vocabulary.
    pub fn name(&self) -> &'static str {
        match self {
            ProxyFault::Outage => "outage",
            ProxyFault::Partition => "partition",
            ProxyFault::Handover => "handover",
            ProxyFault::Link(link) => link.name(),
        }
    }

    /// True when it happens at one instant and takes no duration.
    pub fn is_instant(&self) -> bool {
        fault::is_instant(self.name())
    }

    /// Checks a duration against the kind: instant kinds take none, the others need one.
    pub fn check_duration(&self, duration: Option<Duration>) -> Result<Duration, String> {
        let kind = self.name();
        match (self.is_instant(), duration) {
            (true, Some(_)) => Err(format!("a {kind} fault happens at once and takes no `for`")),
            (true, None) => Ok(Duration::ZERO),
            (false, None) => Err(format!("a {kind} fault needs `for`")),
            (false, Some(d)) if d.is_zero() => Err(format!("a {kind} fault needs `for` > 0")),
            (false, Some(d)) => Ok(d),
        }
    }
}

/// The carrier-scope kinds, by name.
pub fn carrier_kinds() -> Vec<&'static str> {
    fault::KINDS
        .iter()
        .filter(|(_, scope, _)| *scope == Scope::Carrier)
        .map(|(name, _, _)| *name)
        .collect()
}

/// A fault on the proxy's model-time axis (time since the proxy started): first at `at`,
/// then every `every` while before `until`, each lasting `duration` (zero for instant kinds).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledFault {
    /// What happens.
    pub fault: ProxyFault,
    /// First occurrence, model time.
    pub at: Duration,
    /// Repeat period, if any.
    pub every: Option<Duration>,
    /// How long each occurrence lasts.
    pub duration: Duration,
    /// No occurrence starts at or after this.
    pub until: Duration,
}

/// Every occurrence of `faults` in time order (faults at the same instant in the order
/// given); an error when there are more than [`OCCURRENCES_MAX`].
pub fn occurrences(faults: &[ScheduledFault]) -> Result<Vec<(Duration, usize)>, String> {
    let mut all = Vec::new();
    for (index, scheduled) in faults.iter().enumerate() {
        let mut at = scheduled.at;
        while at < scheduled.until {
            if all.len() >= OCCURRENCES_MAX {
                return Err(format!(
                    "the schedule has more than {OCCURRENCES_MAX} fault occurrences"
                ));
            }
            all.push((at, index));
            match scheduled.every {
                Some(every) if !every.is_zero() => at += every,
                _ => break,
            }
        }
    }
    all.sort_by_key(|(at, index)| (*at, *index));
    Ok(all)
}

impl Proxy {
    /// Applies `fault` now for `duration` of model time (zero for instant kinds); returns
    /// the line it logged.
    pub fn apply(&self, fault: ProxyFault, duration: Duration) -> Value {
        apply(&self.shared, fault, None, duration)
    }

    /// Carries `faults` out on the proxy's model-time axis, in a task that ends after the
    /// last occurrence; an error (and nothing scheduled) when the schedule is too long.
    pub fn schedule(
        &self,
        faults: Vec<ScheduledFault>,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        schedule(&self.shared, faults)
    }
}

/// See [`Proxy::schedule`].
pub(crate) fn schedule(
    shared: &std::sync::Arc<Shared>,
    faults: Vec<ScheduledFault>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let occurrences = occurrences(&faults)?;
    let shared = shared.clone();
    let generation = shared.generation.load(Ordering::SeqCst);
    Ok(tokio::spawn(async move {
        for (at, index) in occurrences {
            tokio::time::sleep_until(shared.instant_of(at)).await;
            // A reset forgets every fault, the scheduled ones included.
            if shared.generation.load(Ordering::SeqCst) != generation {
                return;
            }
            let scheduled = &faults[index];
            apply(&shared, scheduled.fault, Some(at), scheduled.duration);
        }
    }))
}

/// See [`Proxy::apply`]; a scheduled fault's window starts at its model time `at` (the
/// timer wakes a little after it), so a replayed schedule has exactly the file's windows.
pub(crate) fn apply(
    shared: &Shared,
    fault: ProxyFault,
    at: Option<Duration>,
    duration: Duration,
) -> Value {
    let now = shared.now();
    let now = at.map_or(now, |at| at.min(now));
    let mut state = shared.lock();
    match fault {
        ProxyFault::Link(link) => {
            let blocked = &mut state.blocked;
            blocked.forget_before(now);
            let kind = link.name();
            let same_kind = blocked
                .link
                .iter()
                .filter(|w| w.fault.name() == kind)
                .count();
            if same_kind >= FAULT_WINDOWS_MAX
                && let Some(oldest) = blocked.link.iter().position(|w| w.fault.name() == kind)
            {
                blocked.link.remove(oldest);
            }
            blocked.link.push(LinkWindow {
                start: now,
                end: now + duration,
                fault: link,
            });
            // Flows recompute their timers (a reset, a rebind or an age limit may be due).
            for entry in state.flows.values() {
                entry.poke.notify_one();
            }
        }
        ProxyFault::Outage | ProxyFault::Partition => {
            let window = (now, now + duration);
            let blocked = &mut state.blocked;
            blocked.forget_before(now);
            let windows = if fault == ProxyFault::Outage {
                &mut blocked.outages
            } else {
                &mut blocked.partitions
            };
            if windows.len() >= FAULT_WINDOWS_MAX {
                windows.remove(0);
            }
            windows.push(window);
        }
        ProxyFault::Handover => {
            for entry in state.flows.values_mut() {
                entry.command = Some(FlowCommand::Handover);
                entry.poke.notify_one();
            }
        }
    }
    drop(state);
    let line = json!({
        "t_ms": now.as_millis() as u64, "event": "fault", "kind": fault.name(),
        "for_ms": (!fault.is_instant()).then_some(duration.as_millis() as u64),
    });
    shared.log(line.clone());
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(kind: &str, params: FaultParams) -> ProxyFault {
        ProxyFault::parse(kind, &params).unwrap()
    }

    #[test]
    fn kinds_parse_with_their_parameters_or_say_why_not() {
        assert_eq!(link("outage", FaultParams::default()), ProxyFault::Outage);
        assert_eq!(link("handover", FaultParams::default()).name(), "handover");
        let spike = FaultParams {
            added: Some(Duration::from_millis(300)),
            ..FaultParams::default()
        };
        assert_eq!(link("latency_spike", spike.clone()).name(), "latency_spike");
        let error = ProxyFault::parse("server_crash", &FaultParams::default()).unwrap_err();
        assert!(error.contains("cannot be applied by a proxy"), "{error}");
        // A device's clock is not the carrier's to move.
        let jump = FaultParams {
            by: Some("-2h".into()),
            ..FaultParams::default()
        };
        let error = ProxyFault::parse("clock_jump", &jump).unwrap_err();
        assert!(
            error.contains("\"clock_jump\" cannot be applied by a proxy"),
            "{error}"
        );
        let error = ProxyFault::parse("meteor", &FaultParams::default()).unwrap_err();
        assert!(error.contains("unknown fault \"meteor\""), "{error}");
        // A key the kind does not take is named.
        let error = ProxyFault::parse("outage", &spike).unwrap_err();
        assert!(error.contains("`added`"), "{error}");
        assert!(
            ProxyFault::Handover
                .check_duration(Some(Duration::from_secs(1)))
                .is_err()
        );
        assert!(ProxyFault::Outage.check_duration(None).is_err());
        assert_eq!(
            ProxyFault::Outage.check_duration(Some(Duration::from_secs(3))),
            Ok(Duration::from_secs(3))
        );
    }

    #[test]
    fn occurrences_repeat_until_the_end_in_time_order() {
        let s = Duration::from_secs;
        let faults = [
            ScheduledFault {
                fault: ProxyFault::Outage,
                at: s(10),
                every: Some(s(20)),
                duration: s(5),
                until: s(55),
            },
            ScheduledFault {
                fault: ProxyFault::Handover,
                at: s(30),
                every: None,
                duration: Duration::ZERO,
                until: s(55),
            },
        ];
        assert_eq!(
            occurrences(&faults).unwrap(),
            vec![(s(10), 0), (s(30), 0), (s(30), 1), (s(50), 0)]
        );
        let endless = [ScheduledFault {
            every: Some(Duration::from_millis(1)),
            until: s(3600),
            ..faults[0].clone()
        }];
        assert!(occurrences(&endless).unwrap_err().contains("more than"));
    }
}
