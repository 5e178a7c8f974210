//! Bad scenario files fail with errors naming the file, the key and the value.

use std::path::Path;

use imlab_sim::scenario::Scenario;

const GOOD: &str = r#"
duration = "1h"
[carriers.cmcc]
preset = "cmcc-3g"
[[devices]]
name = "phones"
count = 2
carrier = "cmcc"
"#;

/// Parses `GOOD` with `edit` applied and returns the error text.
fn check(edit: impl Fn(&str) -> String, expected: &[&str]) {
    let text = edit(GOOD);
    let error = Scenario::parse(&text, Path::new("scenarios/bad.toml"))
        .expect_err("the scenario should be refused")
        .to_string();
    assert!(error.starts_with("scenarios/bad.toml"), "{error}");
    for fragment in expected {
        assert!(error.contains(fragment), "{error:?} lacks {fragment:?}");
    }
}

#[test]
fn the_good_scenario_loads() {
    let scenario = Scenario::parse(GOOD, Path::new("good.toml")).unwrap();
    assert_eq!((scenario.n_devices(), scenario.carriers.len()), (2, 1));
}

#[test]
fn a_run_of_exactly_48_days_loads() {
    let text = GOOD.replace(
        "duration = \"1h\"",
        "duration = \"47days 23h\"\nquiet = \"1h\"",
    );
    let scenario = Scenario::parse(&text, Path::new("long.toml")).unwrap();
    assert_eq!(
        scenario.duration + scenario.quiet,
        imlab_sim::scenario::RUN_LENGTH_MAX
    );
}

#[test]
fn unknown_keys_are_named() {
    check(
        |s| s.replace("count = 2", "count = 2\ncolour = \"red\""),
        &["colour", "unknown field"],
    );
    check(|s| format!("speed = 3\n{s}"), &["speed"]);
    check(
        |s| {
            s.replace(
                "preset = \"cmcc-3g\"",
                "preset = \"cmcc-3g\"\nnat_timout = \"5m\"",
            )
        },
        &["nat_timout"],
    );
}

#[test]
fn impossible_values_are_named_with_the_value() {
    check(
        |s| s.replace("count = 2", "count = 0"),
        &["devices[0].count", "got 0"],
    );
    check(
        |s| s.replace("duration = \"1h\"", "duration = \"soon\""),
        &["duration", "soon"],
    );
    // The ledger keeps u32 milliseconds: 48 days of run at most, quiet period included.
    check(
        |s| {
            s.replace(
                "duration = \"1h\"",
                "duration = \"47days 23h\"\nquiet = \"61m\"",
            )
        },
        &[
            "key `duration`",
            "of 47.958 days",
            "of 0.042 days make 48.001 days",
            "48 days",
        ],
    );
    check(
        |s| format!("{s}[server]\npush_when_behind = \"data\"\n"),
        &[
            "server.push_when_behind",
            "\"data\"",
            "\"notify\", \"message\"",
        ],
    );
    check(
        |s| s.replace("\"cmcc-3g\"", "\"cmcc-9g\""),
        &["carriers.cmcc.preset", "cmcc-9g", "cmcc-3g"],
    );
    check(
        |s| {
            s.replace(
                "carrier = \"cmcc\"",
                "carrier = \"cmcc\"\nheartbeat = \"sometimes\"",
            )
        },
        &["devices[0].heartbeat", "sometimes"],
    );
    check(
        |s| s.replace("preset = \"cmcc-3g\"", "preset = \"cmcc-3g\"\nloss = 0.9"),
        &["carriers.cmcc.loss", "0.9"],
    );
    check(
        |s| {
            s.replace(
                "preset = \"cmcc-3g\"",
                "preset = \"cmcc-3g\"\nnat_timeout_range = [\"9m\", \"2m\"]",
            )
        },
        &["carriers.cmcc.nat_timeout_range", "above"],
    );
    check(
        |s| format!("{s}\n[[faults]]\nkind = \"meteor\"\nat = \"5m\"\nduration = \"1m\"\n"),
        &["faults[0].kind", "meteor", "server_crash"],
    );
    check(
        |s| {
            format!(
                "{s}\n[[faults]]\nkind = \"outage\"\ntarget = \"mars\"\nat = \"5m\"\nduration = \"1m\"\n"
            )
        },
        &["faults[0].target", "mars"],
    );
    check(
        |s| {
            format!("{s}\n[[faults]]\nkind = \"server_crash\"\nevery = \"5m\"\nduration = \"6m\"\n")
        },
        &["faults[0].duration", "shorter"],
    );
    check(
        |s| {
            s.replace(
                "count = 2",
                "count = 2\napp_states = [{ state = \"asleep\", for = \"1m\" }]",
            )
        },
        &["devices[0].app_states[0].state", "asleep"],
    );
}

#[test]
fn a_missing_file_is_named() {
    let error = Scenario::load(Path::new("no/such/file.toml"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("no/such/file.toml"), "{error}");
}

#[test]
fn a_carrier_is_defined_completely_without_a_preset() {
    let text = GOOD.replace(
        "preset = \"cmcc-3g\"",
        "nat_timeout = \"90s\"\nrtt_median = \"2s\"\nrtt_p99 = \"9s\"\nbandwidth_kbps = 9\n\
         loss = 0.25\non_expiry = \"drop\"",
    );
    let scenario = Scenario::parse(&text, Path::new("custom.toml")).unwrap();
    let carrier = &scenario.carriers[0];
    assert_eq!(carrier.name, "cmcc");
    assert_eq!(carrier.nat_timeout_max, std::time::Duration::from_secs(90));
    assert_eq!(carrier.bandwidth_kbps, 9);
    assert_eq!(carrier.loss, 0.25);
    assert_eq!(carrier.on_expiry, imlab_sim::carrier::OnExpiry::Drop);
    // Without a preset, every NAT and link key it lacks is named.
    check(
        |s| s.replace("preset = \"cmcc-3g\"", "rtt_median = \"2s\""),
        &["carriers.cmcc", "nat_timeout", "bandwidth_kbps", "loss"],
    );
}

#[test]
fn a_fault_after_the_end_is_named_with_both_times() {
    check(
        |s| format!("{s}\n[[faults]]\nkind = \"server_crash\"\nat = \"3h\"\nduration = \"1m\"\n"),
        &[
            "key `faults[0].at`",
            "3h is not before the scenario's duration 1h",
        ],
    );
    // The last moment before the end is still a fault.
    let text =
        format!("{GOOD}\n[[faults]]\nkind = \"server_crash\"\nat = \"59m\"\nduration = \"1m\"\n");
    let scenario = Scenario::parse(&text, Path::new("good.toml")).unwrap();
    assert_eq!(scenario.faults.len(), 1);
}

#[test]
fn a_clock_jump_is_signed_needs_expiring_tokens_and_names_its_key() {
    let jump = |by: &'static str| {
        move |s: &str| {
            format!(
                "{}\n[[faults]]\nkind = \"clock_jump\"\ntarget = \"phones\"\nat = \"1m\"\n{by}\n",
                s.replace(
                    "duration = \"1h\"",
                    "duration = \"1h\"\n[server]\ntoken_lifetime = \"1h\""
                )
            )
        }
    };
    check(
        jump("by = \"2h\""),
        &["faults[0].by", "\"2h\" needs a sign"],
    );
    check(jump("by = \"-soon\""), &["faults[0].by", "\"-soon\""]);
    check(jump("by = \"+0s\""), &["faults[0].by", "must not be zero"]);
    check(
        jump("by = \"-20000d\""),
        &["faults[0].by", "more than ten years"],
    );
    check(jump(""), &["faults[0].by", "is required for clock_jump"]);
    check(
        jump("by = \"-2h\"\nage = \"1m\""),
        &["faults[0].age", "clock_jump"],
    );
    // Without tokens that expire, a device's clock changes nothing: refused, naming the key.
    check(
        |s| {
            format!(
                "{s}\n[[faults]]\nkind = \"clock_jump\"\ntarget = \"phones\"\nat = \"1m\"\nby = \"-2h\"\n"
            )
        },
        &["faults[0].kind", "server.token_lifetime"],
    );
    check(
        |s| {
            s.replace(
                "duration = \"1h\"",
                "duration = \"1h\"\n[server]\ntoken_lifetime = \"10s\"",
            )
        },
        &["server.token_lifetime", "10s"],
    );
    let text = jump("by = \"-2h\"\nduration = \"10m\"\nfraction = 0.5")(GOOD);
    let scenario = Scenario::parse(&text, Path::new("good.toml")).unwrap();
    assert_eq!(
        scenario.faults[0].kind,
        imlab_sim::scenario::FaultKind::ClockJump {
            group: 0,
            fraction: 0.5,
            by_ms: -7_200_000
        }
    );
    assert_eq!(
        scenario.faults[0].duration,
        std::time::Duration::from_secs(600)
    );
    assert_eq!(
        scenario.server.token_lifetime,
        Some(std::time::Duration::from_secs(3_600))
    );
}

#[test]
fn a_scenario_built_in_code_past_the_longest_run_is_refused_before_it_runs() {
    let mut scenario = Scenario::parse(GOOD, Path::new("good.toml")).unwrap();
    scenario.duration = imlab_sim::scenario::RUN_LENGTH_MAX;
    let error = refused_before_the_first_step(&scenario);
    assert!(
        error.starts_with("scenario good: a duration of 48.000 days"),
        "{error}"
    );
}

/// Runs `scenario`, which must be refused before its first step; the refusal's text.
fn refused_before_the_first_step(scenario: &Scenario) -> String {
    let mut progressed = false;
    let error = imlab_sim::run::run(
        scenario,
        &imlab_sim::run::RunOptions::default(),
        &mut |_| progressed = true,
    )
    .expect_err("the run should be refused");
    assert!(!progressed, "refused before the first step: {error}");
    error.to_string()
}

/// Every fault window is listed before a run starts: a fault every millisecond over a day (86
/// million of them) is refused by name instead of filling memory, and 100,000 still load.
#[test]
fn faults_that_start_too_often_are_named_with_their_count() {
    fn fault(every: &'static str) -> impl Fn(&str) -> String {
        move |s: &str| {
            s.replace("duration = \"1h\"", "duration = \"24h\"")
                + &format!(
                    "\n[[faults]]\nkind = \"nat_rebind\"\ntarget = \"cmcc\"\nat = \"0s\"\nevery = \"{every}\"\n"
                )
        }
    }
    check(
        fault("1ms"),
        &[
            "faults[0].every",
            "nat_rebind fault starts 86400000 times in 1day (every 1ms)",
            "more than the 100000",
        ],
    );
    // 86,400 s / 864 ms = 100,000 exactly: the bound itself is allowed.
    let text = fault("864ms")(GOOD);
    let scenario = Scenario::parse(&text, Path::new("often.toml")).unwrap();
    assert_eq!(
        imlab_sim::world::occurrences(
            scenario.faults[0].at,
            scenario.faults[0].every,
            scenario.duration
        )
        .len(),
        100_000
    );
    // Two faults share the bound: the second is the one named.
    check(
        |s| {
            fault("1s")(s)
                + "\n[[faults]]\nkind = \"reset\"\ntarget = \"cmcc\"\nat = \"0s\"\nevery = \"500ms\"\n"
        },
        &["faults[1].every", "and the faults up to it 259200"],
    );
}

/// A `--duration` longer than the file's can make the faults too many: the run is refused
/// before its first step.
#[test]
fn a_longer_run_whose_faults_start_too_often_is_refused_before_it_runs() {
    let text = GOOD.to_string()
        + "\n[[faults]]\nkind = \"nat_rebind\"\ntarget = \"cmcc\"\nevery = \"50ms\"\n";
    let mut scenario = Scenario::parse(&text, Path::new("often.toml")).unwrap();
    scenario.duration *= 2;
    let error = refused_before_the_first_step(&scenario);
    assert!(
        error.starts_with("scenario often: faults[0]: nat_rebind fault starts 143999 times"),
        "{error}"
    );
}
