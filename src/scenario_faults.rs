//! A scenario's `[[faults]]` on real sockets: the carrier faults become schedules for
//! imlab-proxy's flows (one per carrier), the rest are named so the caller can refuse them.
//! Used by `imlab proxy --scenario` and `imlab load --scenario`; the simulator reads the same
//! file through the same loader.

use std::time::Duration;

use imlab_proxy::{ProxyFault, ScheduledFault};
use imlab_sim::scenario::{FaultKind, Scenario};

/// A scenario's faults as real sockets can carry them out.
#[derive(Debug, Default)]
pub struct SocketFaults {
    /// Carrier k's schedule, by the scenario's carrier index.
    pub by_carrier: Vec<Vec<ScheduledFault>>,
    /// Faults of the server, devices or push service, as `faults[i] kind`: a proxy or a
    /// load generator cannot cause them on a server it does not run.
    pub machine: Vec<String>,
    /// Handovers, as `faults[i]`: on real sockets a handover moves every connection of the
    /// group's carrier, not only the group's fraction.
    pub handovers: Vec<String>,
}

/// Splits `scenario`'s faults; occurrences start before `until` (model time).
pub fn socket_faults(scenario: &Scenario, until: Duration) -> SocketFaults {
    let mut faults = SocketFaults {
        by_carrier: vec![Vec::new(); scenario.carriers.len()],
        ..SocketFaults::default()
    };
    for (i, fault) in scenario.faults.iter().enumerate() {
        let (carrier, what) = match &fault.kind {
            FaultKind::Outage { carrier } => (*carrier, ProxyFault::Outage),
            FaultKind::Partition { carrier } => (*carrier, ProxyFault::Partition),
            FaultKind::Link { carrier, fault } => (*carrier, ProxyFault::Link(*fault)),
            FaultKind::Handover { group, .. } => {
                faults.handovers.push(format!("faults[{i}]"));
                (scenario.groups[*group].carrier, ProxyFault::Handover)
            }
            FaultKind::ServerCrash
            | FaultKind::ServerStall
            | FaultKind::DiskStall
            | FaultKind::DiskFailure
            | FaultKind::AppKill { .. }
            | FaultKind::ClockJump { .. }
            | FaultKind::PushOutage => {
                faults.machine.push(format!("faults[{i}] {}", fault.name));
                continue;
            }
        };
        faults.by_carrier[carrier].push(ScheduledFault {
            fault: what,
            at: fault.at,
            every: fault.every,
            duration: if what.is_instant() {
                Duration::ZERO
            } else {
                fault.duration
            },
            until,
        });
    }
    faults
}

/// The error for faults real sockets cannot cause, naming each.
pub fn machine_faults_error(file: &std::path::Path, machine: &[String], who: &str) -> String {
    format!(
        "--scenario {}: {who} cannot cause {} on a server it does not run; replay only the \
         carrier faults with --carrier-faults-only, or remove them from a copy of the file",
        file.display(),
        machine.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn carrier_faults_are_scheduled_by_carrier_and_machine_faults_named() {
        let scenario = Scenario::parse(
            r#"
duration = "10m"
[carriers.a]
preset = "cmcc-3g"
[carriers.b]
preset = "us-lte"
[[devices]]
name = "phones"
count = 2
carrier = "b"
[[faults]]
kind = "outage"
target = "a"
at = "1m"
every = "4m"
duration = "30s"
[[faults]]
kind = "server_crash"
at = "2m"
duration = "5s"
[[faults]]
kind = "handover"
target = "phones"
to = "a"
at = "3m"
[[faults]]
kind = "latency_spike"
target = "b"
at = "4m"
duration = "1m"
added = "2s"
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        let faults = socket_faults(&scenario, scenario.duration);
        assert_eq!(faults.machine, vec!["faults[1] server_crash"]);
        assert_eq!(faults.handovers, vec!["faults[2]"]);
        // Carriers in name order: a, b.
        let a = &faults.by_carrier[0];
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].fault, ProxyFault::Outage);
        assert_eq!(a[0].every, Some(Duration::from_secs(240)));
        assert_eq!(a[0].duration, Duration::from_secs(30));
        let b: Vec<&str> = faults.by_carrier[1]
            .iter()
            .map(|f| f.fault.name())
            .collect();
        // The handover moves the phones' carrier (b), at once.
        assert_eq!(b, vec!["handover", "latency_spike"]);
        assert_eq!(faults.by_carrier[1][0].duration, Duration::ZERO);
        let error = machine_faults_error(Path::new("t.toml"), &faults.machine, "a proxy");
        assert!(error.contains("faults[1] server_crash"), "{error}");
    }
}
