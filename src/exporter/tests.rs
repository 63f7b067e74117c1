use super::*;
use crate::aggregate::outcome_memory::OutcomeMemoryLimits;
use crate::aggregate::{AggregateSettings, Aggregator, Clock};
use crate::decode::decode;
use crate::ids::{Partition, Uuid128};
use std::collections::HashMap;

const S: i64 = 1_000_000_000;

fn aggregator(names: &[(&str, &str)]) -> Aggregator {
    Aggregator::new(
        AggregateSettings {
            duration_buckets_seconds: vec![1.0, 10.0],
            queue_buckets_seconds: vec![1.0],
            failure_ratio_windows: vec![("5m".into(), 300 * S)],
            workflow_names: names
                .iter()
                .map(|(id, n)| (Uuid128::parse(id).unwrap(), n.to_string()))
                .collect::<HashMap<_, _>>(),
            max_workflows: 10_000,
            idle_expiry_nanos: 48 * 3_600_000_000_000,
            outcome_memory: OutcomeMemoryLimits {
                max_entries: 100,
                max_age_nanos: 3600 * S,
            },
            // Processed at time 0, far from the documents' dates.
            timestamps: crate::aggregate::TimestampLimits::UNLIMITED,
            ..crate::config::Config::default().aggregate_settings()
        },
        Clock::Replay,
    )
}

fn run(agg: &mut Aggregator, id: &str, status: &str, duration_ms: i64) {
    let text = format!(
        r#"{{"metadata":{{"id":"{id}","createdAt":"2026-08-22T14:00:00Z","updatedAt":"2026-08-22T14:00:00Z"}},
        "status":"{status}","tenantId":"707D0855-80AB-4E1F-A156-F1C4546CBF52",
        "workflowId":"0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77","displayName":"x-1",
        "finishedAt":"2026-08-22T14:00:10Z","duration":{duration_ms}}}"#
    );
    agg.apply(&decode(Some(text.as_bytes()), 1 << 20).unwrap(), Partition(0), 0);
}

fn render(agg: &Aggregator, end: WindowEnd) -> String {
    let mut out = String::new();
    Snapshot::take(agg, end).render(&mut TextWriter::new(&mut out, false));
    out
}

#[test]
fn counters_cumulative_buckets_and_ratio() {
    let mut agg = aggregator(&[]);
    run(&mut agg, "a", "COMPLETED", 500);
    run(&mut agg, "b", "COMPLETED", 5000);
    run(&mut agg, "c", "FAILED", 50_000);
    run(&mut agg, "d", "FAILED", 9223372036854);
    let text = render(&agg, WindowEnd::LatestFinished);
    let l = "tenant_id=\"707d0855-80ab-4e1f-a156-f1c4546cbf52\",workflow=\"x\"";
    for line in [
        format!("hatchet_workflow_runs_total{{{l},status=\"COMPLETED\"}} 2"),
        format!("hatchet_workflow_runs_total{{{l},status=\"FAILED\"}} 2"),
        format!("hatchet_workflow_runs_total{{{l},status=\"CANCELLED\"}} 0"),
        format!("hatchet_workflow_run_duration_seconds_bucket{{{l},status=\"COMPLETED\",le=\"1\"}} 1"),
        format!("hatchet_workflow_run_duration_seconds_bucket{{{l},status=\"COMPLETED\",le=\"10\"}} 2"),
        format!("hatchet_workflow_run_duration_seconds_bucket{{{l},status=\"COMPLETED\",le=\"+Inf\"}} 2"),
        format!("hatchet_workflow_run_duration_seconds_sum{{{l},status=\"COMPLETED\"}} 5.5"),
        format!("hatchet_workflow_run_duration_seconds_count{{{l},status=\"FAILED\"}} 1"),
        format!("hatchet_workflow_run_duration_seconds_bucket{{{l},status=\"FAILED\",le=\"+Inf\"}} 1"),
        format!("hatchet_workflow_failure_ratio{{{l},window=\"5m\"}} 0.5"),
        "hatchet_run_metrics_outcomes_remembered 4".to_string(),
    ] {
        assert!(text.lines().any(|x| x == line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn an_empty_window_has_no_ratio_sample() {
    let mut agg = aggregator(&[]);
    run(&mut agg, "a", "FAILED", 1);
    let later = chrono::DateTime::parse_from_rfc3339("2026-08-22T15:00:00Z")
        .unwrap()
        .timestamp()
        * S;
    let text = render(&agg, WindowEnd::At(later));
    assert!(text.contains("# TYPE hatchet_workflow_failure_ratio gauge"));
    assert!(!text.contains("hatchet_workflow_failure_ratio{"), "{text}");
    assert!(render(&agg, WindowEnd::LatestFinished).contains("window=\"5m\"} 1\n"));
}

#[test]
fn label_values_are_escaped() {
    let mut agg = aggregator(&[("0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77", "say \"hi\"\\\nnaïve ☃")]);
    run(&mut agg, "a", "COMPLETED", 1);
    let text = render(&agg, WindowEnd::LatestFinished);
    assert!(text.contains(r#"workflow="say \"hi\"\\\nnaïve ☃""#), "{text}");
    assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

#[test]
fn uuid_labels_are_canonical() {
    assert_eq!(
        tenant_label(Uuid128::parse("707D0855-80AB-4E1F-A156-F1C4546CBF52").unwrap()),
        "707d0855-80ab-4e1f-a156-f1c4546cbf52"
    );
    assert_eq!(tenant_label(Uuid128(1)), "00000000-0000-0000-0000-000000000001");
    assert_eq!(tenant_label(crate::aggregate::OVERFLOW_TENANT), "__overflow__");
}

#[test]
fn metadata_labels_on_outcomes_and_durations_only() {
    let mut agg = Aggregator::new(
        AggregateSettings {
            duration_buckets_seconds: vec![1.0],
            metadata_labels: vec!["customer_tier".into()],
            metadata_label_max_values: 2,
            // Processed at time 0, far from the documents' dates.
            timestamps: crate::aggregate::TimestampLimits::UNLIMITED,
            ..crate::config::Config::default().aggregate_settings()
        },
        Clock::Replay,
    );
    for (id, tier) in [
        ("a", "\"gold\""),
        ("b", "\"gold\""),
        ("c", "\"silver\""),
        ("d", "\"bronze\""),
        ("e", "null"),
    ] {
        let text = format!(
            r#"{{"metadata":{{"id":"{id}","createdAt":"2026-08-22T14:00:00Z","updatedAt":"2026-08-22T14:00:00Z"}},
            "status":"COMPLETED","tenantId":"707d0855-80ab-4e1f-a156-f1c4546cbf52",
            "workflowId":"0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77","displayName":"x-1","duration":500,
            "startedAt":"2026-08-22T14:00:01Z","additionalMetadata":{{"customer_tier":{tier}}}}}"#
        );
        agg.apply(&decode(Some(text.as_bytes()), 1 << 20).unwrap(), Partition(0), 0);
    }
    let text = render(&agg, WindowEnd::LatestFinished);
    let l = "tenant_id=\"707d0855-80ab-4e1f-a156-f1c4546cbf52\",workflow=\"x\",status=\"COMPLETED\"";
    for line in [
        format!("hatchet_workflow_runs_total{{{l},customer_tier=\"gold\"}} 2"),
        format!("hatchet_workflow_runs_total{{{l},customer_tier=\"silver\"}} 1"),
        format!("hatchet_workflow_runs_total{{{l},customer_tier=\"__overflow__\"}} 1"),
        format!("hatchet_workflow_runs_total{{{l},customer_tier=\"\"}} 1"),
        format!("hatchet_workflow_run_duration_seconds_bucket{{{l},customer_tier=\"gold\",le=\"1\"}} 2"),
        format!("hatchet_workflow_run_queue_seconds_count{{{l}}} 5"),
    ] {
        assert!(text.lines().any(|x| x == line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("hatchet_workflow_runs_total{tenant_id=\"707d0855-80ab-4e1f-a156-f1c4546cbf52\",workflow=\"x\",status=\"COMPLETED\"} "), "no unlabelled duplicate");
}

#[test]
fn windowed_duration_quantiles_as_a_summary() {
    let mut agg = aggregator(&[]);
    for (i, ms) in [500, 5000, 4000, 120_000].iter().enumerate() {
        run(&mut agg, &format!("r{i}"), "COMPLETED", *ms);
    }
    run(&mut agg, "f", "FAILED", 100);
    let text = render(&agg, WindowEnd::LatestFinished);
    let l = "tenant_id=\"707d0855-80ab-4e1f-a156-f1c4546cbf52\",workflow=\"x\",status=\"COMPLETED\",window=\"5m\"";
    let value = |q: &str| {
        let prefix = format!("hatchet_workflow_run_duration_window_seconds{{{l},quantile=\"{q}\"}} ");
        let line = text
            .lines()
            .find(|x| x.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        line[prefix.len()..].parse::<f64>().unwrap()
    };
    // Nearest rank over [0.5, 4, 5, 120]: p50 -> 4, p90/p95/p99 -> 120.
    assert!((value("0.5") - 4.0).abs() <= 0.04, "{}", value("0.5"));
    assert!((value("0.99") - 120.0).abs() <= 1.2, "{}", value("0.99"));
    assert!(
        text.contains(&format!(
            "hatchet_workflow_run_duration_window_seconds_count{{{l}}} 4\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "hatchet_workflow_run_duration_window_seconds_sum{{{l}}} 129.5\n"
        )),
        "{text}"
    );
    assert!(text.contains("# TYPE hatchet_workflow_run_duration_window_seconds summary"));
    assert!(
        !text.contains("status=\"FAILED\",window=\"5m\",quantile"),
        "only quantile_statuses"
    );
}
