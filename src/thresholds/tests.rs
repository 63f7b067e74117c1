//! Thresholds config: parsing, validation (refused configs at the right key), resolution (which
//! override wins, inheritance from the default, built-in defaults) and `explain`.

use super::*;
use crate::ids::Uuid128;
use crate::model::V1TaskStatus;
use crate::setting::ConfigError;
use std::time::Duration;

const EXAMPLE: &str = include_str!("../../config/thresholds.toml");
/// The tenant of the example's `batch-tenant` override.
const BATCH_TENANT: &str = "2a9c1f5e-7b3d-4e8a-9c6f-1d2e3f4a5b6c";
const OTHER_TENANT: &str = "0b7e4c1d-2f3a-4b5c-8d9e-0f1a2b3c4d5e";

const FIVE_MINUTES: i64 = 300_000_000_000;
const ONE_HOUR: i64 = 3_600_000_000_000;

fn tracked() -> TrackedWindows {
    TrackedWindows {
        failure_ratio_windows: vec![("5m".into(), FIVE_MINUTES), ("1h".into(), ONE_HOUR)],
        quantile_windows: vec![("5m".into(), FIVE_MINUTES), ("1h".into(), ONE_HOUR)],
        quantile_statuses: vec![V1TaskStatus::Completed],
        queue_wait_quantiles: false,
    }
}

fn tracked_with_queue_wait() -> TrackedWindows {
    TrackedWindows {
        queue_wait_quantiles: true,
        ..tracked()
    }
}

fn parse(text: &str) -> ThresholdsFile {
    toml::from_str::<ThresholdsFile>(text).unwrap_or_else(|e| panic!("does not parse: {e}\n{text}"))
}

fn load_with(text: &str, tracked: &TrackedWindows) -> Thresholds {
    Thresholds::from_file(&parse(text), "", tracked).unwrap_or_else(|e| panic!("refused at {}: {}", e.key, e.why))
}

fn load(text: &str) -> Thresholds {
    load_with(text, &tracked())
}

fn refused_with(text: &str, tracked: &TrackedWindows) -> (String, String) {
    match Thresholds::from_file(&parse(text), "", tracked) {
        Ok(thresholds) => panic!("accepted, as {thresholds:?}:\n{text}"),
        Err(error) => (error.key, error.why),
    }
}

/// Refused at exactly `key`, with `word` in the why.
fn assert_refused_with(text: &str, tracked: &TrackedWindows, key: &str, word: &str) {
    let (at, why) = refused_with(text, tracked);
    assert_eq!(at, key, "wrong key (why: {why}) for:\n{text}");
    assert!(why.contains(word), "{why:?} does not say {word:?}, for:\n{text}");
}

fn assert_refused(text: &str, key: &str, word: &str) {
    assert_refused_with(text, &tracked(), key, word);
}

/// Refused by the deserializer (before validation), with `word` in the message.
fn assert_unparsable(text: &str, word: &str) {
    let error = toml::from_str::<ThresholdsFile>(text).expect_err(text).to_string();
    assert!(error.contains(word), "{error:?} does not say {word:?}, for:\n{text}");
}

fn tenant(text: &str) -> Uuid128 {
    Uuid128::parse(text).unwrap()
}

/// The name of the rule that applies, if any.
fn winner(t: &Thresholds, kind: ThresholdKind, tenant: Option<Uuid128>, workflow: &str) -> Option<String> {
    t.resolve(kind, tenant, workflow)
        .winner
        .map(|i| t.rules[i].name.clone())
}

/// The names of the rules that lost, most specific first.
fn outranked(t: &Thresholds, kind: ThresholdKind, tenant: Option<Uuid128>, workflow: &str) -> Vec<String> {
    (t.resolve(kind, tenant, workflow).outranked.iter())
        .map(|&i| t.rules[i].name.clone())
        .collect()
}

/// The threshold in force: panics when none is.
fn active<'a>(t: &'a Thresholds, kind: ThresholdKind, tenant: Option<Uuid128>, workflow: &str) -> &'a Threshold {
    t.resolve(kind, tenant, workflow)
        .threshold
        .unwrap_or_else(|| panic!("no {kind} threshold for {workflow:?}"))
}

fn window(label: &str, nanos: i64) -> Option<Window> {
    Some(Window {
        label: label.into(),
        nanos,
    })
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------------------------
// 1. The example file
// ---------------------------------------------------------------------------------------------

#[test]
fn the_example_file_parses_and_validates() {
    let t = load(EXAMPLE);
    let names: Vec<&str> = t.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["default", "billing", "billing-reconcile", "batch-tenant"]);
    let keys: Vec<&str> = t.rules.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["default", "overrides[0]", "overrides[1]", "overrides[2]"]);
    assert!(t.rules[0].is_default());
    assert!(!t.is_empty());
    // As part of the main config, every key takes the prefix.
    let prefixed = Thresholds::from_file(&parse(EXAMPLE), "thresholds.", &tracked()).unwrap();
    let keys: Vec<&str> = prefixed.rules.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "thresholds.default",
            "thresholds.overrides[0]",
            "thresholds.overrides[1]",
            "thresholds.overrides[2]"
        ]
    );
    // The names do not take the prefix.
    assert_eq!(prefixed.rules[1].name, "billing");
}

#[test]
fn the_example_defaults_apply_to_a_workflow_no_override_matches() {
    let t = load(EXAMPLE);
    for tenant_id in [None, Some(tenant(BATCH_TENANT)), Some(tenant(OTHER_TENANT))] {
        let wf = "send-newsletter";
        for kind in [
            ThresholdKind::FailureRatio,
            ThresholdKind::DurationQuantile,
            ThresholdKind::OldestRunningAge,
            ThresholdKind::RunsInFlight,
        ] {
            assert_eq!(winner(&t, kind, tenant_id, wf).as_deref(), Some("default"), "{kind}");
            assert!(outranked(&t, kind, tenant_id, wf).is_empty(), "{kind}");
        }
        // Nothing sets queue-wait quantiles.
        let none = t.resolve(ThresholdKind::QueueWaitQuantile, tenant_id, wf);
        assert_eq!(none.winner, None);
        assert!(none.threshold.is_none());
        assert!(none.outranked.is_empty());

        let failure = active(&t, ThresholdKind::FailureRatio, tenant_id, wf);
        assert_eq!(
            *failure,
            Threshold {
                kind: ThresholdKind::FailureRatio,
                max: 0.05,
                window: window("5m", FIVE_MINUTES),
                quantile: None,
                status: None,
                min_outcomes: 20,
                hold: secs(300),
                severity: "warning".into(),
            }
        );
        let duration = active(&t, ThresholdKind::DurationQuantile, tenant_id, wf);
        assert_eq!(duration.max, 600.0);
        assert_eq!(duration.quantile, Some(0.95));
        assert_eq!(duration.window, window("5m", FIVE_MINUTES));
        assert_eq!(duration.status, Some(V1TaskStatus::Completed));
        assert_eq!(duration.min_outcomes, 20);
        assert_eq!(duration.hold, secs(600));
        assert_eq!(duration.severity, "warning");
        let oldest = active(&t, ThresholdKind::OldestRunningAge, tenant_id, wf);
        assert_eq!(oldest.max, 3600.0);
        assert_eq!(oldest.severity, "critical");
        assert_eq!(oldest.hold, Duration::ZERO);
        assert_eq!(oldest.window, None);
        let in_flight = active(&t, ThresholdKind::RunsInFlight, tenant_id, wf);
        assert_eq!(in_flight.max, 1000.0);
        assert_eq!(in_flight.hold, secs(900));
        assert_eq!(in_flight.severity, "warning");
        assert_eq!(in_flight.window, None);
    }
}

#[test]
fn the_example_billing_glob_is_stricter_and_inherits_the_rest_from_the_default() {
    let t = load(EXAMPLE);
    for tenant_id in [None, Some(tenant(OTHER_TENANT))] {
        let r = t.resolve(ThresholdKind::FailureRatio, tenant_id, "billing-eu");
        assert_eq!(r.winner, Some(1));
        assert_eq!(t.rules[1].name, "billing");
        assert_eq!(r.outranked, [0]);
        assert_eq!(
            *r.threshold.unwrap(),
            Threshold {
                kind: ThresholdKind::FailureRatio,
                max: 0.01,
                // Inherited from [default.failure_ratio].
                window: window("5m", FIVE_MINUTES),
                quantile: None,
                status: None,
                min_outcomes: 20,
                hold: secs(300),
                // Its own.
                severity: "critical".into(),
            }
        );
        // The kinds "billing" does not set come from the default.
        for kind in [
            ThresholdKind::DurationQuantile,
            ThresholdKind::OldestRunningAge,
            ThresholdKind::RunsInFlight,
        ] {
            assert_eq!(winner(&t, kind, tenant_id, "billing-eu").as_deref(), Some("default"));
        }
    }
    // The glob needs its dash: "billing" alone is not "billing-*".
    assert_eq!(
        winner(&t, ThresholdKind::FailureRatio, None, "billing").as_deref(),
        Some("default")
    );
    assert_eq!(
        winner(&t, ThresholdKind::FailureRatio, None, "billing-").as_deref(),
        Some("billing")
    );
}

#[test]
fn the_example_exact_name_beats_the_billing_glob() {
    let t = load(EXAMPLE);
    let wf = "billing-reconcile";
    let r = t.resolve(ThresholdKind::FailureRatio, None, wf);
    assert_eq!(r.winner, Some(2));
    assert_eq!(
        outranked(&t, ThresholdKind::FailureRatio, None, wf),
        ["billing", "default"]
    );
    let failure = r.threshold.unwrap();
    assert_eq!(failure.max, 0.2);
    // Left-out fields come from the default, not from the glob it outranks: not "critical".
    assert_eq!(failure.severity, "warning");
    assert_eq!(failure.window, window("5m", FIVE_MINUTES));
    assert_eq!(failure.min_outcomes, 20);
    assert_eq!(failure.hold, secs(300));

    let duration = active(&t, ThresholdKind::DurationQuantile, None, wf);
    assert_eq!(
        winner(&t, ThresholdKind::DurationQuantile, None, wf).as_deref(),
        Some(wf)
    );
    assert_eq!(duration.max, 7200.0);
    assert_eq!(duration.quantile, Some(0.99));
    assert_eq!(duration.window, window("5m", FIVE_MINUTES));
    assert_eq!(duration.status, Some(V1TaskStatus::Completed));
    assert_eq!(duration.min_outcomes, 20);
    assert_eq!(duration.hold, secs(600));
    assert_eq!(duration.severity, "warning");

    let oldest = active(&t, ThresholdKind::OldestRunningAge, None, wf);
    assert_eq!(oldest.max, 10800.0);
    assert_eq!(oldest.severity, "critical");
    // Runs in flight: no override sets it.
    assert_eq!(
        winner(&t, ThresholdKind::RunsInFlight, None, wf).as_deref(),
        Some("default")
    );
}

#[test]
fn the_example_tenant_override_disables_runs_in_flight_for_that_tenant_only() {
    let t = load(EXAMPLE);
    let batch = Some(tenant(BATCH_TENANT));
    let r = t.resolve(ThresholdKind::RunsInFlight, batch, "import-x");
    assert_eq!(r.winner, Some(3));
    assert_eq!(t.rules[3].name, "batch-tenant");
    assert!(r.threshold.is_none(), "disabled: no threshold");
    assert_eq!(r.outranked, [0]);
    assert_eq!(
        t.rules[3].setting(ThresholdKind::RunsInFlight),
        Some(&Setting::Disabled)
    );
    // Its other kinds are untouched.
    assert_eq!(
        winner(&t, ThresholdKind::FailureRatio, batch, "import-x").as_deref(),
        Some("default")
    );
    // Another tenant, or no tenant given: the default.
    for other in [Some(tenant(OTHER_TENANT)), None] {
        assert_eq!(
            winner(&t, ThresholdKind::RunsInFlight, other, "import-x").as_deref(),
            Some("default")
        );
        assert_eq!(active(&t, ThresholdKind::RunsInFlight, other, "import-x").max, 1000.0);
    }
    // The same tenant, a workflow the glob does not match.
    assert_eq!(
        winner(&t, ThresholdKind::RunsInFlight, batch, "export-x").as_deref(),
        Some("default")
    );
    // The tenant id matches whatever case it was written in.
    let upper = Some(tenant(&BATCH_TENANT.to_uppercase()));
    assert!(t
        .resolve(ThresholdKind::RunsInFlight, upper, "import-x")
        .threshold
        .is_none());
}

#[test]
fn the_example_for_series_gives_every_kind_with_its_rule() {
    let t = load(EXAMPLE);
    let series = t.for_series(tenant(BATCH_TENANT), "import-x");
    assert_eq!(
        series[ThresholdKind::FailureRatio.index()].map(|(i, th)| (i, th.max)),
        Some((0, 0.05))
    );
    assert_eq!(
        series[ThresholdKind::DurationQuantile.index()].map(|(i, th)| (i, th.max)),
        Some((0, 600.0))
    );
    assert!(series[ThresholdKind::QueueWaitQuantile.index()].is_none());
    assert_eq!(
        series[ThresholdKind::OldestRunningAge.index()].map(|(i, th)| (i, th.max)),
        Some((0, 3600.0))
    );
    assert!(series[ThresholdKind::RunsInFlight.index()].is_none(), "disabled");

    let series = t.for_series(tenant(OTHER_TENANT), "billing-reconcile");
    assert_eq!(
        series[ThresholdKind::FailureRatio.index()].map(|(i, th)| (i, th.max)),
        Some((2, 0.2))
    );
    assert_eq!(
        series[ThresholdKind::RunsInFlight.index()].map(|(i, th)| (i, th.max)),
        Some((0, 1000.0))
    );
    for (kind, found) in ThresholdKind::ALL.into_iter().zip(series) {
        if let Some((_, threshold)) = found {
            assert_eq!(threshold.kind, kind);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Precedence
// ---------------------------------------------------------------------------------------------

fn in_flight_max(t: &Thresholds, tenant: Option<Uuid128>, workflow: &str) -> f64 {
    active(t, ThresholdKind::RunsInFlight, tenant, workflow).max
}

#[test]
fn an_exact_name_without_tenant_beats_a_tenant_glob() {
    let tenant_glob = format!(
        r#"
[[overrides]]
name = "tenant-glob"
tenant_id = "{BATCH_TENANT}"
workflow = "import-*"
runs_in_flight = {{ max = 1 }}
"#
    );
    let exact = r#"
[[overrides]]
name = "exact"
workflow = "import-x"
runs_in_flight = { max = 2 }
"#;
    let default = "[default.runs_in_flight]\nmax = 100\n";
    // Whichever comes first.
    for text in [
        format!("{default}{tenant_glob}{exact}"),
        format!("{default}{exact}{tenant_glob}"),
    ] {
        let t = load(&text);
        let batch = Some(tenant(BATCH_TENANT));
        assert_eq!(
            winner(&t, ThresholdKind::RunsInFlight, batch, "import-x").as_deref(),
            Some("exact")
        );
        assert_eq!(in_flight_max(&t, batch, "import-x"), 2.0);
        assert_eq!(
            outranked(&t, ThresholdKind::RunsInFlight, batch, "import-x"),
            ["tenant-glob", "default"]
        );
        // Where the exact name does not match, the tenant glob does.
        assert_eq!(in_flight_max(&t, batch, "import-y"), 1.0);
        // Where the tenant does not match, the exact name does.
        assert_eq!(in_flight_max(&t, Some(tenant(OTHER_TENANT)), "import-x"), 2.0);
        assert_eq!(in_flight_max(&t, Some(tenant(OTHER_TENANT)), "import-y"), 100.0);
        assert_eq!(in_flight_max(&t, None, "import-y"), 100.0);
    }
}

#[test]
fn an_exact_name_with_tenant_beats_the_same_name_without() {
    for (first, second) in [("tenant", "any"), ("any", "tenant")] {
        let entry = |which: &str| {
            match which {
            "tenant" => format!(
                "[[overrides]]\nname = \"tenant\"\ntenant_id = \"{BATCH_TENANT}\"\nworkflow = \"import-x\"\nruns_in_flight = {{ max = 1 }}\n"
            ),
            _ => "[[overrides]]\nname = \"any\"\nworkflow = \"import-x\"\nruns_in_flight = { max = 2 }\n".to_string(),
        }
        };
        let t = load(&format!("{}{}", entry(first), entry(second)));
        assert_eq!(in_flight_max(&t, Some(tenant(BATCH_TENANT)), "import-x"), 1.0);
        assert_eq!(
            outranked(&t, ThresholdKind::RunsInFlight, Some(tenant(BATCH_TENANT)), "import-x"),
            ["any"]
        );
        assert_eq!(in_flight_max(&t, Some(tenant(OTHER_TENANT)), "import-x"), 2.0);
        assert_eq!(in_flight_max(&t, None, "import-x"), 2.0);
    }
}

#[test]
fn a_tenant_beats_more_literal_characters() {
    let text = format!(
        r#"
[default.runs_in_flight]
max = 100

[[overrides]]
name = "long-glob"
workflow = "import-x-*"
runs_in_flight = {{ max = 3 }}

[[overrides]]
name = "tenant-short-glob"
tenant_id = "{BATCH_TENANT}"
workflow = "i*"
runs_in_flight = {{ max = 4 }}

[[overrides]]
name = "tenant-only"
tenant_id = "{OTHER_TENANT}"
runs_in_flight = {{ max = 5 }}
"#
    );
    let t = load(&text);
    let batch = Some(tenant(BATCH_TENANT));
    let other = Some(tenant(OTHER_TENANT));
    assert_eq!(in_flight_max(&t, batch, "import-x-1"), 4.0);
    assert_eq!(
        outranked(&t, ThresholdKind::RunsInFlight, batch, "import-x-1"),
        ["long-glob", "default"]
    );
    // A tenant-only override (every workflow of the tenant) also beats a glob without tenant.
    assert_eq!(in_flight_max(&t, other, "import-x-1"), 5.0);
    assert_eq!(
        outranked(&t, ThresholdKind::RunsInFlight, other, "import-x-1"),
        ["long-glob", "default"]
    );
    assert_eq!(in_flight_max(&t, other, "anything"), 5.0);
    // No tenant given: only the glob without tenant.
    assert_eq!(in_flight_max(&t, None, "import-x-1"), 3.0);
    assert_eq!(in_flight_max(&t, None, "anything"), 100.0);
}

#[test]
fn more_literal_characters_beat_fewer_whatever_the_order() {
    let short = "[[overrides]]\nname = \"short\"\nworkflow = \"imp*\"\nruns_in_flight = { max = 1 }\n";
    // `?` and sets pin nothing down: 7 literal characters.
    let long = "[[overrides]]\nname = \"long\"\nworkflow = \"import-?\"\nruns_in_flight = { max = 2 }\n";
    let set = "[[overrides]]\nname = \"set\"\nworkflow = \"[i]mpor*\"\nruns_in_flight = { max = 3 }\n";
    for text in [
        format!("{short}{long}{set}"),
        format!("{set}{long}{short}"),
        format!("{long}{set}{short}"),
    ] {
        let t = load(&text);
        assert_eq!(in_flight_max(&t, None, "import-x"), 2.0, "{text}");
        assert_eq!(
            outranked(&t, ThresholdKind::RunsInFlight, None, "import-x"),
            ["set", "short"],
            "{text}"
        );
        // Where the longer glob does not match.
        assert_eq!(in_flight_max(&t, None, "import-xy"), 3.0);
        assert_eq!(in_flight_max(&t, None, "imps"), 1.0);
    }
}

#[test]
fn at_equal_precedence_the_earlier_override_wins() {
    // 7 literal characters each, neither exact, neither with a tenant.
    let a = "[[overrides]]\nname = \"a\"\nworkflow = \"import-?\"\nruns_in_flight = { max = 1 }\n";
    let b = "[[overrides]]\nname = \"b\"\nworkflow = \"*mport-x\"\nruns_in_flight = { max = 2 }\n";
    let t = load(&format!("{a}{b}"));
    assert_eq!(
        t.rules[1].workflow.as_ref().unwrap().literal_chars(),
        t.rules[2].workflow.as_ref().unwrap().literal_chars()
    );
    assert_eq!(t.rules[1].precedence(), t.rules[2].precedence());
    assert_eq!(
        winner(&t, ThresholdKind::RunsInFlight, None, "import-x").as_deref(),
        Some("a")
    );
    assert_eq!(outranked(&t, ThresholdKind::RunsInFlight, None, "import-x"), ["b"]);
    let t = load(&format!("{b}{a}"));
    assert_eq!(
        winner(&t, ThresholdKind::RunsInFlight, None, "import-x").as_deref(),
        Some("b")
    );
    assert_eq!(outranked(&t, ThresholdKind::RunsInFlight, None, "import-x"), ["a"]);
}

#[test]
fn at_equal_precedence_with_a_tenant_the_earlier_override_wins() {
    // A tenant-only override and the same tenant with "*": both every workflow of the tenant.
    let text = format!(
        r#"
[[overrides]]
name = "first"
tenant_id = "{BATCH_TENANT}"
runs_in_flight = {{ max = 1 }}

[[overrides]]
name = "second"
tenant_id = "{BATCH_TENANT}"
workflow = "*"
runs_in_flight = {{ max = 2 }}
"#
    );
    let t = load(&text);
    assert_eq!(t.rules[1].precedence(), t.rules[2].precedence());
    assert_eq!(in_flight_max(&t, Some(tenant(BATCH_TENANT)), "x"), 1.0);
}

#[test]
fn only_overrides_that_set_the_kind_compete_for_it() {
    let text = r#"
[default.failure_ratio]
max = 0.05

[default.runs_in_flight]
max = 100

[[overrides]]
name = "exact"
workflow = "import-x"
failure_ratio = { max = 0.5 }

[[overrides]]
name = "glob"
workflow = "import-*"
runs_in_flight = { max = 7 }
"#;
    let t = load(text);
    assert_eq!(
        winner(&t, ThresholdKind::FailureRatio, None, "import-x").as_deref(),
        Some("exact")
    );
    assert_eq!(
        outranked(&t, ThresholdKind::FailureRatio, None, "import-x"),
        ["default"]
    );
    assert_eq!(
        winner(&t, ThresholdKind::RunsInFlight, None, "import-x").as_deref(),
        Some("glob")
    );
    assert_eq!(
        outranked(&t, ThresholdKind::RunsInFlight, None, "import-x"),
        ["default"]
    );
    // A kind nobody sets has no winner, even where overrides match.
    let r = t.resolve(ThresholdKind::OldestRunningAge, None, "import-x");
    assert_eq!(r.winner, None);
    assert!(r.outranked.is_empty());
}

#[test]
fn an_override_wins_even_without_a_default_for_its_kind() {
    let text = r#"
[[overrides]]
workflow = "import-*"
oldest_running_age = { max = "2h" }
"#;
    let t = load(text);
    assert_eq!(t.rules[1].name, "overrides[0]");
    assert_eq!(t.rules[1].key, "overrides[0]");
    let r = t.resolve(ThresholdKind::OldestRunningAge, None, "import-x");
    assert_eq!(r.winner, Some(1));
    assert!(r.outranked.is_empty());
    assert_eq!(r.threshold.unwrap().max, 7200.0);
    assert_eq!(t.resolve(ThresholdKind::OldestRunningAge, None, "export").winner, None);
}

#[test]
fn precedence_tuples_order_exact_then_tenant_then_literals() {
    let text = format!(
        r#"
[[overrides]]
workflow = "import-x"
runs_in_flight = {{ max = 1 }}

[[overrides]]
tenant_id = "{BATCH_TENANT}"
workflow = "i*"
runs_in_flight = {{ max = 1 }}

[[overrides]]
workflow = "import-*"
runs_in_flight = {{ max = 1 }}

[[overrides]]
workflow = "i*"
runs_in_flight = {{ max = 1 }}
"#
    );
    let t = load(&text);
    let p: Vec<(bool, bool, usize)> = t.rules[1..].iter().map(Rule::precedence).collect();
    assert_eq!(
        p,
        [(true, false, 8), (false, true, 1), (false, false, 7), (false, false, 1)]
    );
    assert!(p.windows(2).all(|w| w[0] > w[1]));
}

// ---------------------------------------------------------------------------------------------
// 3. Inheritance and built-in defaults
// ---------------------------------------------------------------------------------------------

#[test]
fn an_override_setting_only_for_inherits_max_and_the_rest_from_the_default() {
    let text = r#"
[default.failure_ratio]
max = 0.05
window = "1h"
min_outcomes = 30
severity = "page"
for = "1m"

[[overrides]]
workflow = "slow"
failure_ratio = { for = "2m" }
"#;
    let t = load(text);
    assert_eq!(
        *active(&t, ThresholdKind::FailureRatio, None, "slow"),
        Threshold {
            kind: ThresholdKind::FailureRatio,
            max: 0.05,
            window: window("1h", ONE_HOUR),
            quantile: None,
            status: None,
            min_outcomes: 30,
            hold: secs(120),
            severity: "page".into(),
        }
    );
    assert_eq!(
        winner(&t, ThresholdKind::FailureRatio, None, "slow").as_deref(),
        Some("overrides[0]")
    );
    assert_eq!(active(&t, ThresholdKind::FailureRatio, None, "other").hold, secs(60));
}

#[test]
fn an_override_inherits_each_quantile_field_from_the_default() {
    let text = r#"
[default.duration_quantile]
max = "10m"
quantile = 0.9
window = "1h"
min_outcomes = 5
severity = "page"

[[overrides]]
workflow = "slow"
duration_quantile = { max = 1800 }

[[overrides]]
workflow = "slower"
duration_quantile = { quantile = 0.5, window = "5m", min_outcomes = 50, for = "1m", severity = "info" }
"#;
    let t = load(text);
    let slow = active(&t, ThresholdKind::DurationQuantile, None, "slow");
    assert_eq!(slow.max, 1800.0);
    assert_eq!(slow.quantile, Some(0.9));
    assert_eq!(slow.window, window("1h", ONE_HOUR));
    assert_eq!(slow.status, Some(V1TaskStatus::Completed));
    assert_eq!(slow.min_outcomes, 5);
    assert_eq!(slow.hold, Duration::ZERO);
    assert_eq!(slow.severity, "page");
    let slower = active(&t, ThresholdKind::DurationQuantile, None, "slower");
    assert_eq!(slower.max, 600.0);
    assert_eq!(slower.quantile, Some(0.5));
    assert_eq!(slower.window, window("5m", FIVE_MINUTES));
    assert_eq!(slower.min_outcomes, 50);
    assert_eq!(slower.hold, secs(60));
    assert_eq!(slower.severity, "info");
}

#[test]
fn an_override_of_a_kind_the_default_lacks_must_set_max() {
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\nduration_quantile = { quantile = 0.99 }\n",
        "overrides[0].duration_quantile.max",
        "required",
    );
    let (_, why) = refused_with(
        "[default.failure_ratio]\nmax = 0.1\n[[overrides]]\nworkflow = \"b\"\noldest_running_age = { for = \"1m\" }\n",
        &tracked(),
    );
    assert!(why.contains("nor in default.oldest_running_age"), "{why}");
    // The key is that of the override's kind, whichever index it is at.
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\nruns_in_flight = { max = 1 }\n[[overrides]]\nworkflow = \"b\"\noldest_running_age = { for = \"1m\" }\n",
        "overrides[1].oldest_running_age.max",
        "nor in default.oldest_running_age",
    );
    // With the main config's prefix.
    let file = parse("[[overrides]]\nworkflow = \"a\"\nruns_in_flight = { severity = \"page\" }\n");
    let ConfigError { key, why, .. } = Thresholds::from_file(&file, "thresholds.", &tracked()).unwrap_err();
    assert_eq!(key, "thresholds.overrides[0].runs_in_flight.max");
    assert!(why.contains("nor in thresholds.default.runs_in_flight"), "{why}");
    // The default itself: max is required, and there is nothing to inherit from.
    let (key, why) = refused_with("[default.failure_ratio]\nwindow = \"5m\"\n", &tracked());
    assert_eq!(key, "default.failure_ratio.max");
    assert!(why.contains("required") && !why.contains("nor in"), "{why}");
}

#[test]
fn an_override_of_a_kind_the_default_lacks_takes_the_built_in_defaults() {
    let text = r#"
[[overrides]]
workflow = "a"
duration_quantile = { max = "1m" }
failure_ratio = { max = 0.3 }
"#;
    let t = load(text);
    let duration = active(&t, ThresholdKind::DurationQuantile, None, "a");
    assert_eq!(duration.max, 60.0);
    assert_eq!(duration.quantile, Some(0.95));
    assert_eq!(duration.window, window("5m", FIVE_MINUTES));
    assert_eq!(duration.status, Some(V1TaskStatus::Completed));
    assert_eq!(duration.min_outcomes, 10);
    assert_eq!(duration.hold, Duration::ZERO);
    assert_eq!(duration.severity, "warning");
    let failure = active(&t, ThresholdKind::FailureRatio, None, "a");
    assert_eq!(failure.min_outcomes, 10);
    assert_eq!(failure.window, window("5m", FIVE_MINUTES));
}

#[test]
fn built_in_defaults() {
    let text = r#"
[default.failure_ratio]
max = 0.1
[default.duration_quantile]
max = "10m"
[default.queue_wait_quantile]
max = 30
[default.oldest_running_age]
max = "1h 30m"
[default.runs_in_flight]
max = 0
"#;
    let t = load_with(text, &tracked_with_queue_wait());
    assert_eq!(
        *active(&t, ThresholdKind::FailureRatio, None, "w"),
        Threshold {
            kind: ThresholdKind::FailureRatio,
            max: 0.1,
            window: window("5m", FIVE_MINUTES),
            quantile: None,
            status: None,
            min_outcomes: 10,
            hold: Duration::ZERO,
            severity: "warning".into(),
        }
    );
    assert_eq!(
        *active(&t, ThresholdKind::DurationQuantile, None, "w"),
        Threshold {
            kind: ThresholdKind::DurationQuantile,
            max: 600.0,
            window: window("5m", FIVE_MINUTES),
            quantile: Some(0.95),
            status: Some(V1TaskStatus::Completed),
            min_outcomes: 10,
            hold: Duration::ZERO,
            severity: "warning".into(),
        }
    );
    let queue = active(&t, ThresholdKind::QueueWaitQuantile, None, "w");
    assert_eq!(queue.max, 30.0);
    assert_eq!(queue.quantile, Some(0.95));
    assert_eq!(queue.window, window("5m", FIVE_MINUTES));
    assert_eq!(queue.status, None);
    assert_eq!(queue.min_outcomes, 10);
    let oldest = active(&t, ThresholdKind::OldestRunningAge, None, "w");
    assert_eq!(oldest.max, 5400.0);
    assert_eq!(
        (oldest.window.as_ref(), oldest.quantile, oldest.status),
        (None, None, None)
    );
    assert_eq!(oldest.hold, Duration::ZERO);
    assert_eq!(oldest.severity, "warning");
    let in_flight = active(&t, ThresholdKind::RunsInFlight, None, "w");
    assert_eq!(in_flight.max, 0.0);
    assert_eq!(in_flight.severity, "warning");
}

#[test]
fn the_default_window_is_the_first_tracked_of_its_own_list() {
    let tracked = TrackedWindows {
        failure_ratio_windows: vec![("1h".into(), ONE_HOUR), ("5m".into(), FIVE_MINUTES)],
        quantile_windows: vec![("15m".into(), 900_000_000_000), ("1h".into(), ONE_HOUR)],
        quantile_statuses: vec![V1TaskStatus::Failed, V1TaskStatus::Completed],
        queue_wait_quantiles: true,
    };
    let t = load_with(
        "[default.failure_ratio]\nmax = 0.1\n[default.duration_quantile]\nmax = 60\n[default.queue_wait_quantile]\nmax = 60\n",
        &tracked,
    );
    assert_eq!(
        active(&t, ThresholdKind::FailureRatio, None, "w").window,
        window("1h", ONE_HOUR)
    );
    assert_eq!(
        active(&t, ThresholdKind::DurationQuantile, None, "w").window,
        window("15m", 900_000_000_000)
    );
    assert_eq!(
        active(&t, ThresholdKind::QueueWaitQuantile, None, "w").window,
        window("15m", 900_000_000_000)
    );
    // The status default is COMPLETED, not the first tracked status.
    assert_eq!(
        active(&t, ThresholdKind::DurationQuantile, None, "w").status,
        Some(V1TaskStatus::Completed)
    );
    // And another tracked status can be chosen.
    let t = load_with("[default.duration_quantile]\nmax = 60\nstatus = \"FAILED\"\n", &tracked);
    assert_eq!(
        active(&t, ThresholdKind::DurationQuantile, None, "w").status,
        Some(V1TaskStatus::Failed)
    );
}

#[test]
fn limits_in_each_unit() {
    let t = load(
        r#"
[default.failure_ratio]
max = 1
[default.duration_quantile]
max = 1.5
[default.oldest_running_age]
max = "250ms"
[default.runs_in_flight]
max = 1000000
"#,
    );
    assert_eq!(active(&t, ThresholdKind::FailureRatio, None, "w").max, 1.0);
    assert_eq!(active(&t, ThresholdKind::DurationQuantile, None, "w").max, 1.5);
    assert_eq!(active(&t, ThresholdKind::OldestRunningAge, None, "w").max, 0.25);
    assert_eq!(active(&t, ThresholdKind::RunsInFlight, None, "w").max, 1_000_000.0);
    // The bounds of a ratio and of a quantile are allowed.
    let t = load("[default.failure_ratio]\nmax = 0.0\n[default.duration_quantile]\nmax = 1\nquantile = 1.0\n");
    assert_eq!(active(&t, ThresholdKind::FailureRatio, None, "w").max, 0.0);
    assert_eq!(
        active(&t, ThresholdKind::DurationQuantile, None, "w").quantile,
        Some(1.0)
    );
    let t = load("[default.duration_quantile]\nmax = 1\nquantile = 0\n");
    assert_eq!(
        active(&t, ThresholdKind::DurationQuantile, None, "w").quantile,
        Some(0.0)
    );
}

#[test]
fn nothing_set_is_empty() {
    let t = load("");
    assert_eq!(t.rules.len(), 1);
    assert!(t.is_empty());
    for kind in ThresholdKind::ALL {
        let r = t.resolve(kind, None, "w");
        assert_eq!(r.winner, None);
        assert!(r.threshold.is_none() && r.outranked.is_empty());
    }
    assert!(t.for_series(tenant(OTHER_TENANT), "w").iter().all(Option::is_none));
    // No rules at all (not even the default) resolves to nothing too.
    let none = Thresholds::default();
    assert!(none.is_empty());
    assert_eq!(none.resolve(ThresholdKind::FailureRatio, None, "w").winner, None);
}

// ---------------------------------------------------------------------------------------------
// 4. Refused configs
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_kinds_and_fields_are_refused_when_parsed() {
    assert_unparsable("[default.failure_rate]\nmax = 0.1\n", "unknown field `failure_rate`");
    assert_unparsable(
        "[[overrides]]\nworkflow = \"a\"\nfailure_rate = { max = 0.1 }\n",
        "unknown field `failure_rate`",
    );
    assert_unparsable(
        "[default.failure_ratio]\nmax = 0.1\nmaximum = 0.2\n",
        "unknown field `maximum`",
    );
    assert_unparsable(
        "[[overrides]]\nworkflow = \"a\"\nruns_in_flight = { max = 1, hold = \"1m\" }\n",
        "unknown field `hold`",
    );
    assert_unparsable("[[overrides]]\nworkflows = \"a\"\n", "unknown field `workflows`");
    assert_unparsable("[defaults.failure_ratio]\nmax = 0.1\n", "unknown field `defaults`");
    // Wrong types.
    assert_unparsable("[default.failure_ratio]\nmax = true\n", "a number, or a duration");
    assert_unparsable(
        "[default.failure_ratio]\nmax = 0.1\nmin_outcomes = -1\n",
        "min_outcomes",
    );
    assert_unparsable("[default.failure_ratio]\nmax = 0.1\nenabled = \"no\"\n", "enabled");
}

#[test]
fn ratios_outside_0_to_1_are_refused() {
    assert_refused(
        "[default.failure_ratio]\nmax = 1.5\n",
        "default.failure_ratio.max",
        "between 0 and 1",
    );
    assert_refused(
        "[default.failure_ratio]\nmax = -0.1\n",
        "default.failure_ratio.max",
        "between 0 and 1",
    );
    assert_refused(
        "[default.failure_ratio]\nmax = 2\n",
        "default.failure_ratio.max",
        "between 0 and 1",
    );
    assert_refused(
        "[default.failure_ratio]\nmax = nan\n",
        "default.failure_ratio.max",
        "between 0 and 1",
    );
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\nfailure_ratio = { max = 1.01 }\n",
        "overrides[0].failure_ratio.max",
        "between 0 and 1",
    );
    assert_refused(
        "[default.failure_ratio]\nmax = \"5%\"\n",
        "default.failure_ratio.max",
        "ratio",
    );
}

#[test]
fn negative_durations_are_refused() {
    assert_refused(
        "[default.oldest_running_age]\nmax = \"-5m\"\n",
        "default.oldest_running_age.max",
        "negative",
    );
    assert_refused(
        "[default.oldest_running_age]\nmax = -3\n",
        "default.oldest_running_age.max",
        "negative",
    );
    assert_refused(
        "[default.duration_quantile]\nmax = -0.5\n",
        "default.duration_quantile.max",
        "negative",
    );
    assert_refused(
        "[default.runs_in_flight]\nmax = 10\nfor = \"-1s\"\n",
        "default.runs_in_flight.for",
        "negative",
    );
    assert_refused(
        "[default.runs_in_flight]\nmax = 10\nfor = \" -1s\"\n",
        "default.runs_in_flight.for",
        "negative",
    );
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\noldest_running_age = { max = \"1h\", for = \"-1m\" }\n",
        "overrides[0].oldest_running_age.for",
        "negative",
    );
    assert_refused(
        "[default.failure_ratio]\nmax = 0.1\nwindow = \"-5m\"\n",
        "default.failure_ratio.window",
        "negative",
    );
    // Not a duration at all.
    assert_refused(
        "[default.oldest_running_age]\nmax = \"soon\"\n",
        "default.oldest_running_age.max",
        "not a duration",
    );
    assert_refused(
        "[default.runs_in_flight]\nmax = 10\nfor = \"5 parsecs\"\n",
        "default.runs_in_flight.for",
        "not a duration",
    );
}

#[test]
fn globs_that_cannot_match_are_refused() {
    for (glob, word) in [
        ("job-[z-a]", "empty"),
        ("job-[", "never closed"),
        ("job-[]", "empty set"),
        ("", "empty"),
        ("job\\\\", "backslash"),
        ("__overflow__", "overflow"),
        // Spelled with escapes, still exactly the overflow series.
        ("\\\\_\\\\_overflow__", "overflow"),
    ] {
        let text = format!("[[overrides]]\nworkflow = \"{glob}\"\nruns_in_flight = {{ max = 1 }}\n");
        assert_refused(&text, "overrides[0].workflow", word);
    }
    // At its own index.
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\nruns_in_flight = { max = 1 }\n[[overrides]]\nworkflow = \"b-[\"\nruns_in_flight = { max = 1 }\n",
        "overrides[1].workflow",
        "never closed",
    );
    // A glob that also matches the overflow series matches real workflows too: allowed.
    load("[[overrides]]\nworkflow = \"__*\"\nruns_in_flight = { max = 1 }\n");
}

#[test]
fn a_tenant_that_is_not_a_uuid_is_refused() {
    for text in [
        "tenant-a",
        "2a9c1f5e7b3d4e8a9c6f1d2e3f4a5b6c",
        "2a9c1f5e-7b3d-4e8a-9c6f-1d2e3f4a5b6g",
        "",
    ] {
        assert_refused(
            &format!("[[overrides]]\ntenant_id = \"{text}\"\nruns_in_flight = {{ max = 1 }}\n"),
            "overrides[0].tenant_id",
            "UUID",
        );
    }
}

#[test]
fn quantiles_outside_0_to_1_are_refused() {
    for q in ["1.5", "-0.1", "nan"] {
        assert_refused(
            &format!("[default.duration_quantile]\nmax = \"1m\"\nquantile = {q}\n"),
            "default.duration_quantile.quantile",
            "between 0 and 1",
        );
        assert_refused(
            &format!("[[overrides]]\nworkflow = \"a\"\nduration_quantile = {{ max = \"1m\", quantile = {q} }}\n"),
            "overrides[0].duration_quantile.quantile",
            "between 0 and 1",
        );
        assert_refused_with(
            &format!("[default.queue_wait_quantile]\nmax = \"1m\"\nquantile = {q}\n"),
            &tracked_with_queue_wait(),
            "default.queue_wait_quantile.quantile",
            "between 0 and 1",
        );
    }
}

#[test]
fn windows_not_tracked_are_refused() {
    assert_refused(
        "[default.failure_ratio]\nmax = 0.1\nwindow = \"10m\"\n",
        "default.failure_ratio.window",
        "metrics.failure_ratio_windows",
    );
    assert_refused(
        "[default.duration_quantile]\nmax = 60\nwindow = \"10m\"\n",
        "default.duration_quantile.window",
        "metrics.quantile_windows",
    );
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\nfailure_ratio = { max = 0.1, window = \"10m\" }\n",
        "overrides[0].failure_ratio.window",
        "not one of",
    );
    assert_refused(
        "[default.failure_ratio]\nmax = 0.1\nwindow = \"five minutes\"\n",
        "default.failure_ratio.window",
        "not a duration",
    );
    // A window tracked for one kind only.
    let tracked = TrackedWindows {
        quantile_windows: vec![("1h".into(), ONE_HOUR)],
        ..tracked()
    };
    assert_refused_with(
        "[default.duration_quantile]\nmax = 60\nwindow = \"5m\"\n",
        &tracked,
        "default.duration_quantile.window",
        "metrics.quantile_windows",
    );
    load_with("[default.failure_ratio]\nmax = 0.1\nwindow = \"5m\"\n", &tracked);
}

#[test]
fn equivalent_windows_resolve_to_the_tracked_label() {
    let text = r#"
[default.failure_ratio]
max = 0.1
window = "300s"

[default.duration_quantile]
max = 60
window = "3600s"

[[overrides]]
workflow = "a"
failure_ratio = { window = "60m" }
duration_quantile = { window = "5min" }
"#;
    let t = load(text);
    assert_eq!(
        active(&t, ThresholdKind::FailureRatio, None, "w").window,
        window("5m", FIVE_MINUTES)
    );
    assert_eq!(
        active(&t, ThresholdKind::DurationQuantile, None, "w").window,
        window("1h", ONE_HOUR)
    );
    assert_eq!(
        active(&t, ThresholdKind::FailureRatio, None, "a").window,
        window("1h", ONE_HOUR)
    );
    assert_eq!(
        active(&t, ThresholdKind::DurationQuantile, None, "a").window,
        window("5m", FIVE_MINUTES)
    );
}

#[test]
fn statuses_not_tracked_are_refused() {
    assert_refused(
        "[default.duration_quantile]\nmax = 60\nstatus = \"FAILED\"\n",
        "default.duration_quantile.status",
        "metrics.quantile_statuses",
    );
    assert_refused(
        "[default.duration_quantile]\nmax = 60\nstatus = \"completed\"\n",
        "default.duration_quantile.status",
        "quantile_statuses",
    );
    assert_refused(
        "[default.duration_quantile]\nmax = 60\nstatus = \"RUNNING\"\n",
        "default.duration_quantile.status",
        "quantile_statuses",
    );
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\nduration_quantile = { max = 60, status = \"CANCELLED\" }\n",
        "overrides[0].duration_quantile.status",
        "quantile_statuses",
    );
    // The built-in COMPLETED when COMPLETED is not tracked.
    let tracked = TrackedWindows {
        quantile_statuses: vec![V1TaskStatus::Failed],
        ..tracked()
    };
    assert_refused_with(
        "[default.duration_quantile]\nmax = 60\n",
        &tracked,
        "default.duration_quantile.status",
        "COMPLETED",
    );
}

#[test]
fn fields_a_kind_does_not_have_are_refused_where_written() {
    for (text, key) in [
        (
            "[default.runs_in_flight]\nmax = 1\nwindow = \"5m\"\n",
            "default.runs_in_flight.window",
        ),
        (
            "[default.runs_in_flight]\nmax = 1\nmin_outcomes = 3\n",
            "default.runs_in_flight.min_outcomes",
        ),
        (
            "[default.oldest_running_age]\nmax = 1\nwindow = \"5m\"\n",
            "default.oldest_running_age.window",
        ),
        (
            "[default.oldest_running_age]\nmax = 1\nquantile = 0.5\n",
            "default.oldest_running_age.quantile",
        ),
        (
            "[default.failure_ratio]\nmax = 0.1\nquantile = 0.5\n",
            "default.failure_ratio.quantile",
        ),
        (
            "[default.failure_ratio]\nmax = 0.1\nstatus = \"COMPLETED\"\n",
            "default.failure_ratio.status",
        ),
        (
            "[[overrides]]\nworkflow = \"a\"\nruns_in_flight = { max = 1, window = \"5m\" }\n",
            "overrides[0].runs_in_flight.window",
        ),
        // Even where the kind is turned off.
        (
            "[[overrides]]\nworkflow = \"a\"\nruns_in_flight = { enabled = false, window = \"5m\" }\n",
            "overrides[0].runs_in_flight.window",
        ),
    ] {
        let field = key.rsplit('.').next().unwrap();
        assert_refused(text, key, &format!("has no `{field}`"));
    }
    assert_refused_with(
        "[default.queue_wait_quantile]\nmax = 1\nstatus = \"COMPLETED\"\n",
        &tracked_with_queue_wait(),
        "default.queue_wait_quantile.status",
        "has no `status`",
    );
}

#[test]
fn queue_wait_thresholds_need_queue_wait_quantiles() {
    assert_refused(
        "[default.queue_wait_quantile]\nmax = \"1m\"\n",
        "default.queue_wait_quantile",
        "metrics.queue_wait_quantiles",
    );
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\nqueue_wait_quantile = { max = \"1m\" }\n",
        "overrides[0].queue_wait_quantile",
        "not tracked",
    );
    // Turning it off needs nothing tracked.
    let t = load("[[overrides]]\nworkflow = \"a\"\nqueue_wait_quantile = { enabled = false }\n");
    assert_eq!(
        t.rules[1].setting(ThresholdKind::QueueWaitQuantile),
        Some(&Setting::Disabled)
    );
    load("[default.queue_wait_quantile]\nenabled = false\nmax = \"1m\"\n");
    load_with(
        "[default.queue_wait_quantile]\nmax = \"1m\"\n",
        &tracked_with_queue_wait(),
    );
}

#[test]
fn runs_in_flight_must_be_a_whole_number() {
    assert_refused(
        "[default.runs_in_flight]\nmax = 2.5\n",
        "default.runs_in_flight.max",
        "whole number",
    );
    assert_refused(
        "[default.runs_in_flight]\nmax = -1\n",
        "default.runs_in_flight.max",
        "whole number",
    );
    assert_refused(
        "[default.runs_in_flight]\nmax = inf\n",
        "default.runs_in_flight.max",
        "whole number",
    );
    assert_refused(
        "[default.runs_in_flight]\nmax = \"100\"\n",
        "default.runs_in_flight.max",
        "number of runs",
    );
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\nruns_in_flight = { max = 0.5 }\n",
        "overrides[0].runs_in_flight.max",
        "whole number",
    );
    load("[default.runs_in_flight]\nmax = 3.0\n");
}

#[test]
fn overrides_need_a_match_and_a_kind() {
    assert_refused(
        "[[overrides]]\nruns_in_flight = { max = 1 }\n",
        "overrides[0]",
        "`workflow` or `tenant_id`",
    );
    assert_refused(
        "[[overrides]]\nname = \"x\"\nruns_in_flight = { max = 1 }\n",
        "overrides[0]",
        "`workflow` or `tenant_id`",
    );
    assert_refused("[[overrides]]\nworkflow = \"a\"\n", "overrides[0]", "sets no threshold");
    assert_refused(
        &format!("[[overrides]]\ntenant_id = \"{BATCH_TENANT}\"\nname = \"t\"\n"),
        "overrides[0]",
        "sets no threshold",
    );
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\nruns_in_flight = { max = 1 }\n[[overrides]]\nworkflow = \"b\"\n",
        "overrides[1]",
        "sets no threshold",
    );
}

#[test]
fn two_overrides_with_the_same_match_are_refused() {
    assert_refused(
        "[[overrides]]\nworkflow = \"a-*\"\nruns_in_flight = { max = 1 }\n[[overrides]]\nworkflow = \"a-*\"\nfailure_ratio = { max = 0.1 }\n",
        "overrides[1]",
        "matches exactly what overrides[0] matches",
    );
    // The same tenant written in another case is the same tenant.
    let upper = BATCH_TENANT.to_uppercase();
    assert_refused(
        &format!(
            "[[overrides]]\ntenant_id = \"{BATCH_TENANT}\"\nworkflow = \"a\"\nruns_in_flight = {{ max = 1 }}\n[[overrides]]\nworkflow = \"b\"\nruns_in_flight = {{ max = 1 }}\n[[overrides]]\ntenant_id = \"{upper}\"\nworkflow = \"a\"\nruns_in_flight = {{ max = 2 }}\n"
        ),
        "overrides[2]",
        "overrides[0]",
    );
    assert_refused(
        &format!(
            "[[overrides]]\ntenant_id = \"{BATCH_TENANT}\"\nruns_in_flight = {{ max = 1 }}\n[[overrides]]\ntenant_id = \"{BATCH_TENANT}\"\nfailure_ratio = {{ max = 0.1 }}\n"
        ),
        "overrides[1]",
        "merge",
    );
    // The same workflow for different tenants, or with and without a tenant: different matches.
    load(&format!(
        "[[overrides]]\nworkflow = \"a\"\nruns_in_flight = {{ max = 1 }}\n[[overrides]]\ntenant_id = \"{BATCH_TENANT}\"\nworkflow = \"a\"\nruns_in_flight = {{ max = 2 }}\n[[overrides]]\ntenant_id = \"{OTHER_TENANT}\"\nworkflow = \"a\"\nruns_in_flight = {{ max = 3 }}\n"
    ));
}

#[test]
fn duplicate_and_empty_names_are_refused() {
    assert_refused(
        "[[overrides]]\nname = \"x\"\nworkflow = \"a\"\nruns_in_flight = { max = 1 }\n[[overrides]]\nname = \"x\"\nworkflow = \"b\"\nruns_in_flight = { max = 1 }\n",
        "overrides[1].name",
        "already the name of overrides[0]",
    );
    // A name that is another override's default name.
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\nruns_in_flight = { max = 1 }\n[[overrides]]\nname = \"overrides[0]\"\nworkflow = \"b\"\nruns_in_flight = { max = 1 }\n",
        "overrides[1].name",
        "already the name",
    );
    assert_refused(
        "[[overrides]]\nname = \"\"\nworkflow = \"a\"\nruns_in_flight = { max = 1 }\n",
        "overrides[0].name",
        "empty",
    );
    assert_refused(
        "[[overrides]]\nname = \"  \"\nworkflow = \"a\"\nruns_in_flight = { max = 1 }\n",
        "overrides[0].name",
        "empty",
    );
}

#[test]
fn an_empty_severity_is_refused() {
    assert_refused(
        "[default.runs_in_flight]\nmax = 1\nseverity = \"\"\n",
        "default.runs_in_flight.severity",
        "empty",
    );
    assert_refused(
        "[[overrides]]\nworkflow = \"a\"\nruns_in_flight = { max = 1, severity = \" \" }\n",
        "overrides[0].runs_in_flight.severity",
        "empty",
    );
}

#[test]
fn errors_carry_the_main_config_prefix() {
    let file = parse("[default.failure_ratio]\nmax = 3\n");
    let ConfigError { key, .. } = Thresholds::from_file(&file, "thresholds.", &tracked()).unwrap_err();
    assert_eq!(key, "thresholds.default.failure_ratio.max");
    let file = parse("[[overrides]]\nworkflow = \"job-[\"\nruns_in_flight = { max = 1 }\n");
    let ConfigError { key, .. } = Thresholds::from_file(&file, "thresholds.", &tracked()).unwrap_err();
    assert_eq!(key, "thresholds.overrides[0].workflow");
    let file = parse("[[overrides]]\nworkflow = \"a\"\n");
    let ConfigError { key, .. } = Thresholds::from_file(&file, "thresholds.", &tracked()).unwrap_err();
    assert_eq!(key, "thresholds.overrides[0]");
}

// ---------------------------------------------------------------------------------------------
// 5. enabled = false
// ---------------------------------------------------------------------------------------------

#[test]
fn enabled_false_in_an_override_turns_the_kind_off_where_it_matches() {
    let text = r#"
[default.failure_ratio]
max = 0.05

[default.runs_in_flight]
max = 100

[[overrides]]
name = "noisy"
workflow = "noisy-*"
failure_ratio = { enabled = false }
runs_in_flight = { max = 5 }

[[overrides]]
name = "very-noisy"
workflow = "noisy-1"
runs_in_flight = { enabled = false, max = 7 }
"#;
    let t = load(text);
    let r = t.resolve(ThresholdKind::FailureRatio, None, "noisy-1");
    assert_eq!(r.winner, Some(1));
    assert!(r.threshold.is_none());
    assert_eq!(
        t.rules[1].setting(ThresholdKind::FailureRatio),
        Some(&Setting::Disabled)
    );
    // Another kind of the same override stays on.
    assert_eq!(in_flight_max(&t, None, "noisy-2"), 5.0);
    // An exact override can turn off what a glob set.
    let r = t.resolve(ThresholdKind::RunsInFlight, None, "noisy-1");
    assert_eq!(r.winner, Some(2));
    assert!(r.threshold.is_none());
    assert_eq!(r.outranked, [1, 0]);
    let series = t.for_series(tenant(OTHER_TENANT), "noisy-1");
    assert!(series[ThresholdKind::FailureRatio.index()].is_none());
    assert!(series[ThresholdKind::RunsInFlight.index()].is_none());
    // Elsewhere the default is on.
    assert_eq!(active(&t, ThresholdKind::FailureRatio, None, "quiet").max, 0.05);
    assert!(t.for_series(tenant(OTHER_TENANT), "quiet")[ThresholdKind::FailureRatio.index()].is_some());
}

#[test]
fn enabled_false_in_the_default_is_inherited_until_an_override_switches_it_on() {
    let text = r#"
[default.runs_in_flight]
enabled = false

[default.failure_ratio]
enabled = false
max = 0.2
min_outcomes = 40

[[overrides]]
workflow = "important"
runs_in_flight = { max = 5, enabled = true }
failure_ratio = { for = "1m", enabled = true }

[[overrides]]
workflow = "quiet"
failure_ratio = { min_outcomes = 50 }
"#;
    let t = load(text);
    assert_eq!(
        t.rules[0].setting(ThresholdKind::RunsInFlight),
        Some(&Setting::Disabled)
    );
    assert_eq!(
        t.rules[0].setting(ThresholdKind::FailureRatio),
        Some(&Setting::Disabled)
    );
    for kind in [ThresholdKind::RunsInFlight, ThresholdKind::FailureRatio] {
        let r = t.resolve(kind, None, "other");
        assert_eq!(r.winner, Some(0), "{kind}");
        assert!(r.threshold.is_none(), "{kind}");
    }
    // Switched on, inheriting the default's other fields.
    assert_eq!(in_flight_max(&t, None, "important"), 5.0);
    let failure = active(&t, ThresholdKind::FailureRatio, None, "important");
    assert_eq!((failure.max, failure.min_outcomes, failure.hold), (0.2, 40, secs(60)));
    // Not switched on: `enabled = false` is inherited like any field.
    let quiet = t.resolve(ThresholdKind::FailureRatio, None, "quiet");
    assert_eq!(quiet.winner, Some(2));
    assert!(quiet.threshold.is_none());
    assert!(!t.is_empty());
}

#[test]
fn enabled_false_needs_no_max_and_an_explicit_true_changes_nothing() {
    let t = load("[[overrides]]\nworkflow = \"a\"\noldest_running_age = { enabled = false }\n");
    let r = t.resolve(ThresholdKind::OldestRunningAge, None, "a");
    assert_eq!(r.winner, Some(1));
    assert!(r.threshold.is_none());
    let t = load("[default.runs_in_flight]\nmax = 4\nenabled = true\n");
    assert_eq!(in_flight_max(&t, None, "a"), 4.0);
    assert_refused(
        "[default.runs_in_flight]\nenabled = true\n",
        "default.runs_in_flight.max",
        "required",
    );
}

// ---------------------------------------------------------------------------------------------
// 6. explain
// ---------------------------------------------------------------------------------------------

/// The lines about one kind (from `kind:` to the next blank line).
fn section(explained: &str, kind: ThresholdKind) -> &str {
    explained
        .split("\n\n")
        .find(|s| s.starts_with(&format!("{kind}:")))
        .unwrap_or_else(|| panic!("no {kind} section in:\n{explained}"))
}

/// The line of one field in a section.
fn field_line<'a>(section: &'a str, field: &str) -> &'a str {
    section
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{field} ")))
        .unwrap_or_else(|| panic!("no {field} line in:\n{section}"))
}

#[test]
fn explain_names_the_winner_the_inherited_fields_and_the_outranked() {
    let t = load(EXAMPLE);
    let out = t.explain("billing-reconcile", None);
    assert!(
        out.starts_with("workflow \"billing-reconcile\" (no --tenant given"),
        "{out}"
    );
    assert!(out.contains("matching overrides:\n"), "{out}");
    assert!(
        out.contains("  billing (overrides[0]): workflow glob \"billing-*\" of every tenant\n"),
        "{out}"
    );
    assert!(
        out.contains("  billing-reconcile (overrides[1]): workflow \"billing-reconcile\" of every tenant\n"),
        "{out}"
    );
    assert!(!out.contains("batch-tenant"), "{out}");

    let failure = section(&out, ThresholdKind::FailureRatio);
    assert!(
        failure.starts_with(
            "failure_ratio: billing-reconcile (overrides[1]): the most specific matching override that sets it\n"
        ),
        "{failure}"
    );
    assert!(
        failure.contains("breached when FAILED / all outcomes over 5m > 0.2, with at least 20 outcomes for 5m"),
        "{failure}"
    );
    assert!(field_line(failure, "max").contains("= 0.2 "), "{failure}");
    assert!(field_line(failure, "max").ends_with("from overrides[1]"), "{failure}");
    for field in ["window", "min_outcomes", "for", "severity"] {
        let line = field_line(failure, field);
        assert!(line.ends_with("from default (inherited)"), "{field}: {line}");
    }
    assert!(field_line(failure, "severity").contains("= warning"), "{failure}");
    assert!(
        failure.contains("  outranked: billing (overrides[0]): workflow glob \"billing-*\" of every tenant"),
        "{failure}"
    );
    assert!(
        failure.contains("  outranked: default (default): every workflow of every tenant"),
        "{failure}"
    );
    // Most specific first.
    assert!(failure.find("outranked: billing ").unwrap() < failure.find("outranked: default").unwrap());

    let duration = section(&out, ThresholdKind::DurationQuantile);
    assert!(
        duration.starts_with(
            "duration_quantile: billing-reconcile (overrides[1]): the only matching override that sets it"
        ),
        "{duration}"
    );
    assert!(field_line(duration, "max").contains("= 2h"), "{duration}");
    assert!(field_line(duration, "max").ends_with("from overrides[1]"), "{duration}");
    assert!(
        field_line(duration, "quantile").ends_with("from overrides[1]"),
        "{duration}"
    );
    assert!(
        field_line(duration, "status").ends_with("from default (inherited)"),
        "{duration}"
    );
    // Neither the override nor the default sets the severity.
    assert!(
        field_line(duration, "severity").ends_with("from built-in default"),
        "{duration}"
    );

    let queue = section(&out, ThresholdKind::QueueWaitQuantile);
    assert!(queue.starts_with("queue_wait_quantile: not set"), "{queue}");

    let in_flight = section(&out, ThresholdKind::RunsInFlight);
    assert!(
        in_flight.starts_with("runs_in_flight: default (default): no matching override sets it"),
        "{in_flight}"
    );
    assert!(field_line(in_flight, "max").ends_with("from default"), "{in_flight}");
    assert!(!in_flight.contains("(inherited)"), "{in_flight}");
    assert!(
        field_line(in_flight, "severity").ends_with("from built-in default"),
        "{in_flight}"
    );
    assert!(!in_flight.contains("outranked"), "{in_flight}");
}

#[test]
fn explain_the_only_matching_override() {
    let t = load(EXAMPLE);
    let out = t.explain("billing-eu", None);
    let failure = section(&out, ThresholdKind::FailureRatio);
    assert!(
        failure.starts_with("failure_ratio: billing (overrides[0]): the only matching override that sets it"),
        "{failure}"
    );
    assert!(field_line(failure, "max").ends_with("from overrides[0]"), "{failure}");
    assert!(field_line(failure, "severity").contains("= critical"), "{failure}");
    assert!(
        field_line(failure, "severity").ends_with("from overrides[0]"),
        "{failure}"
    );
    assert!(
        field_line(failure, "window").ends_with("from default (inherited)"),
        "{failure}"
    );
    assert!(failure.contains("  outranked: default (default)"), "{failure}");
}

#[test]
fn explain_a_disabled_kind_and_a_tenant() {
    let t = load(EXAMPLE);
    let out = t.explain("import-x", Some(tenant(&BATCH_TENANT.to_uppercase())));
    assert!(
        out.starts_with(&format!("workflow \"import-x\" of tenant {BATCH_TENANT}\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  batch-tenant (overrides[2]): workflow glob \"import-*\" of tenant {BATCH_TENANT}\n"
        )),
        "{out}"
    );
    let in_flight = section(&out, ThresholdKind::RunsInFlight);
    assert!(
        in_flight.starts_with("runs_in_flight: disabled by batch-tenant (overrides[2])"),
        "{in_flight}"
    );
    assert!(!in_flight.contains("breached when"), "{in_flight}");
    assert!(in_flight.contains("  outranked: default (default)"), "{in_flight}");
    // Without the tenant, the override is not considered.
    let out = t.explain("import-x", None);
    assert!(out.contains("matching overrides: none"), "{out}");
    assert!(
        section(&out, ThresholdKind::RunsInFlight).starts_with("runs_in_flight: default (default)"),
        "{out}"
    );
}

#[test]
fn explain_a_workflow_nothing_matches_and_the_overflow_series() {
    let t = load(EXAMPLE);
    let out = t.explain("send-newsletter", Some(tenant(OTHER_TENANT)));
    assert!(out.contains("matching overrides: none\n"), "{out}");
    assert!(!out.contains("outranked"), "{out}");
    assert!(!out.contains("(inherited)"), "{out}");
    assert!(!out.contains("overflow"), "{out}");
    for kind in [
        ThresholdKind::FailureRatio,
        ThresholdKind::DurationQuantile,
        ThresholdKind::OldestRunningAge,
        ThresholdKind::RunsInFlight,
    ] {
        assert!(
            section(&out, kind).starts_with(&format!("{kind}: default (default): no matching override sets it")),
            "{out}"
        );
    }
    let out = t.explain("__overflow__", None);
    assert!(out.contains("note: the overflow series is never evaluated"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Bugs found by these tests, fixed
// ---------------------------------------------------------------------------------------------

#[test]
fn an_override_named_default_is_refused() {
    assert_refused(
        "[[overrides]]\nname = \"default\"\nworkflow = \"a\"\nruns_in_flight = { max = 1 }\n",
        "overrides[0].name",
        "already the name",
    );
}

#[test]
fn equivalent_matches_spelled_differently_are_refused() {
    // `a\-b` is the exact name `a-b`; `a**` is `a*`.
    for (first, second) in [("a-b", "a\\\\-b"), ("a*", "a**")] {
        assert_refused(
            &format!(
                "[[overrides]]\nworkflow = \"{first}\"\nruns_in_flight = {{ max = 1 }}\n[[overrides]]\nworkflow = \"{second}\"\nruns_in_flight = {{ max = 2 }}\n"
            ),
            "overrides[1]",
            "matches exactly what overrides[0] matches",
        );
    }
}

#[test]
fn a_nan_duration_is_not_called_negative() {
    for value in ["nan", "inf"] {
        let (key, why) = refused_with(&format!("[default.oldest_running_age]\nmax = {value}\n"), &tracked());
        assert_eq!(key, "default.oldest_running_age.max");
        assert!(!why.contains("negative"), "{why}");
    }
}
