use super::*;
use crate::decode::{decode, RunUpdate};
use crate::ids::Partition;
use label_value::AlterationCounts;
use serde_json::{json, Value};

const S: i64 = 1_000_000_000;
const TENANT: &str = "707d0855-80ab-4e1f-a156-f1c4546cbf52";
const WF_A: &str = "0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77";
const WF_B: &str = "3e9d1f70-8a2b-4c6d-9e0f-1a2b3c4d5e6f";
const ZERO: &str = "0001-01-01T00:00:00Z";

fn settings() -> AggregateSettings {
    AggregateSettings {
        duration_buckets_seconds: vec![0.1, 1.0, 10.0],
        queue_buckets_seconds: vec![1.0, 60.0],
        failure_ratio_windows: vec![("5m".into(), 300 * S), ("1h".into(), 3600 * S)],
        workflow_names: HashMap::new(),
        max_workflows: 1000,
        idle_expiry_nanos: 48 * 3600 * S,
        outcome_memory: OutcomeMemoryLimits {
            max_entries: 1000,
            max_age_nanos: 3600 * S,
        },
        // These tests run on a clock of their own (0, 1s, ...), far from their documents' dates.
        timestamps: TimestampLimits::UNLIMITED,
        ..crate::config::Config::default().aggregate_settings()
    }
}

/// A run document of workflow `wf`; `fields` override or add top-level keys.
fn doc(run: &str, wf: &str, status: &str, fields: Value) -> Value {
    let mut doc = json!({
        "metadata": {"id": run, "createdAt": "2026-08-22T14:00:00Z", "updatedAt": "2026-08-22T14:00:00Z"},
        "status": status, "tenantId": TENANT, "workflowId": wf, "displayName": "DAGWorkflow-1787407391482",
        "startedAt": ZERO, "finishedAt": ZERO, "createdAt": "2026-08-22T14:00:00Z", "duration": 0,
        "input": {}, "output": {}, "additionalMetadata": {}, "errorMessage": "",
    });
    for (k, v) in fields.as_object().unwrap() {
        doc[k] = v.clone();
    }
    doc
}

fn update(doc: &Value) -> RunUpdate<'static> {
    let bytes: &'static [u8] = Box::leak(serde_json::to_vec(doc).unwrap().into_boxed_slice());
    decode(Some(bytes), 1 << 20).unwrap()
}

fn finished(run: &str, wf: &str, status: &str, start: &str, end: &str) -> Value {
    doc(run, wf, status, json!({"startedAt": start, "finishedAt": end}))
}

fn stats<'a>(agg: &'a Aggregator, workflow: &str) -> &'a WorkflowStats {
    agg.series().find(|s| s.workflow == workflow).expect("series exists")
}

#[test]
fn redeliveries_count_once_and_replays_count_again() {
    let mut agg = Aggregator::new(settings(), Clock::Wall);
    let first = finished("r1", WF_A, "FAILED", "2026-08-22T14:00:01Z", "2026-08-22T14:00:03Z");
    let replayed = finished(
        "r1",
        WF_A,
        "COMPLETED",
        "2026-08-22T15:00:01Z",
        "2026-08-22T15:00:02.5Z",
    );
    assert!(matches!(
        agg.apply(&update(&first), Partition(0), 0),
        Applied::Outcome {
            status: V1TaskStatus::Failed,
            ..
        }
    ));
    assert_eq!(agg.apply(&update(&first), Partition(0), S), Applied::Duplicate);
    // The replay reopens the run, then finishes it again.
    assert_eq!(
        agg.apply(&update(&doc("r1", WF_A, "QUEUED", json!({}))), Partition(0), 2 * S),
        Applied::InProgress
    );
    assert_eq!(
        agg.apply(&update(&replayed), Partition(0), 3 * S),
        Applied::Outcome {
            status: V1TaskStatus::Completed,
            duration_seconds: Some(1.5)
        }
    );
    // A stale copy of the first finish, delivered late, is still the same outcome.
    assert_eq!(agg.apply(&update(&first), Partition(0), 4 * S), Applied::Duplicate);
    assert_eq!(agg.apply(&update(&replayed), Partition(0), 5 * S), Applied::Duplicate);
    let s = stats(&agg, "DAGWorkflow");
    assert_eq!(s.outcomes[0].runs, 1);
    assert_eq!(s.outcomes[1].runs, 1);
    assert_eq!(s.outcomes[2].runs, 0);
}

#[test]
fn the_same_instant_in_another_offset_is_the_same_outcome() {
    let mut agg = Aggregator::new(settings(), Clock::Wall);
    let utc = finished(
        "r1",
        WF_A,
        "COMPLETED",
        "2026-08-22T14:00:01Z",
        "2026-08-22T14:00:03.25Z",
    );
    let local = finished(
        "r1",
        WF_A,
        "COMPLETED",
        "2026-08-22T09:00:01-05:00",
        "2026-08-22T09:00:03.250-05:00",
    );
    assert!(matches!(
        agg.apply(&update(&utc), Partition(0), 0),
        Applied::Outcome { .. }
    ));
    assert_eq!(agg.apply(&update(&local), Partition(0), 0), Applied::Duplicate);
}

#[test]
fn terminal_without_finished_at_counts_once() {
    let mut agg = Aggregator::new(settings(), Clock::Wall);
    let cancelled = doc("r9", WF_A, "CANCELLED", json!({"duration": 9223372036854_i64}));
    assert_eq!(
        agg.apply(&update(&cancelled), Partition(0), 0),
        Applied::Outcome {
            status: V1TaskStatus::Cancelled,
            duration_seconds: None
        }
    );
    assert_eq!(agg.apply(&update(&cancelled), Partition(0), 0), Applied::Duplicate);
    let s = stats(&agg, "DAGWorkflow");
    assert_eq!(s.outcomes[2].runs, 1);
    assert_eq!(s.outcomes[2].duration.count, 0, "no duration, no observation");
}

#[test]
fn a_dag_with_finished_at_but_still_running_counts_nothing() {
    let mut agg = Aggregator::new(settings(), Clock::Wall);
    let running = finished("r2", WF_A, "RUNNING", "2026-08-22T14:00:01Z", "2026-08-22T14:00:02Z");
    assert_eq!(agg.apply(&update(&running), Partition(0), 0), Applied::InProgress);
    assert!(stats(&agg, "DAGWorkflow").outcomes.iter().all(|o| o.runs == 0));
    let done = finished("r2", WF_A, "COMPLETED", "2026-08-22T14:00:01Z", "2026-08-22T14:00:09Z");
    assert!(matches!(
        agg.apply(&update(&done), Partition(0), 0),
        Applied::Outcome { .. }
    ));
}

#[test]
fn durations_and_their_traps() {
    let run = |fields: Value| run_duration_seconds(&RunTimes::of(&update(&doc("r", WF_A, "COMPLETED", fields)).run));
    let both = json!({"startedAt": "2026-08-22T14:03:11.690241Z", "finishedAt": "2026-08-22T14:03:14.127006Z", "duration": 2436});
    assert!(
        (run(both).unwrap() - 2.436765).abs() < 1e-9,
        "full sub-millisecond precision"
    );
    let offsets = json!({"startedAt": "2026-08-22T09:00:00-05:00", "finishedAt": "2026-08-22T14:00:00.000000001Z"});
    assert!((run(offsets).unwrap() - 1e-9).abs() < 1e-12);
    assert_eq!(
        run(json!({"startedAt": "2026-08-22T14:00:05Z", "finishedAt": "2026-08-22T14:00:01Z", "duration": 5})),
        None
    );
    assert_eq!(
        run(json!({"finishedAt": "2026-08-22T14:00:05Z", "duration": 9223372036854_i64})),
        None
    );
    assert_eq!(
        run(json!({"startedAt": "2026-08-22T14:00:05Z", "duration": -9223372036854_i64})),
        None
    );
    assert_eq!(
        run(json!({"finishedAt": "2026-08-22T14:00:05Z", "duration": 2436})),
        Some(2.436)
    );
    assert_eq!(run(json!({"duration": 31_536_000_000_i64})), Some(31_536_000.0));
    assert_eq!(run(json!({"duration": 31_536_000_001_i64})), None);
    assert_eq!(run(json!({"duration": 0})), Some(0.0));
    assert_eq!(run(json!({"duration": null})), None);
}

#[test]
fn histogram_buckets_are_upper_inclusive() {
    let mut agg = Aggregator::new(settings(), Clock::Wall);
    for (i, ms) in [50, 100, 101, 1000, 5000, 60_000].iter().enumerate() {
        let d = doc(&format!("r{i}"), WF_A, "COMPLETED", json!({"duration": ms}));
        agg.apply(&update(&d), Partition(0), 0);
    }
    let h = &stats(&agg, "DAGWorkflow").outcomes[0].duration;
    assert_eq!(&h.bucket_counts[..], &[2, 2, 1, 1]);
    assert_eq!(h.count, 6);
    assert!((h.sum - 66.251).abs() < 1e-9);
}

#[test]
fn each_duration_bucket_keeps_its_latest_run_as_an_exemplar() {
    let mut agg = Aggregator::new(
        AggregateSettings {
            exemplars: true,
            ..settings()
        },
        Clock::Wall,
    );
    let ids = [
        "11111111-0000-4000-8000-000000000001",
        "11111111-0000-4000-8000-000000000002",
        "11111111-0000-4000-8000-000000000003",
        "not-a-uuid",
    ];
    for (id, ms) in ids.iter().zip([50, 60, 5000, 70]) {
        let d = doc(id, WF_A, "COMPLETED", json!({"duration": ms}));
        agg.apply(&update(&d), Partition(0), 0);
    }
    let h = &stats(&agg, "DAGWorkflow").outcomes[0].duration;
    let exemplars = h.exemplars.as_deref().expect("exemplars");
    assert_eq!(
        exemplars[0].run.to_string(),
        ids[1],
        "the latest run of its bucket with a UUID"
    );
    assert_eq!(exemplars[0].value, 0.06);
    assert_eq!(exemplars[2].run.to_string(), ids[2]);
    assert_eq!(exemplars[1].run, Uuid128(0), "no run in that bucket");
}

#[test]
fn workflow_labels() {
    assert_eq!(
        workflow_name_from_display_name("DAGWorkflow-1787407391482"),
        Some("DAGWorkflow")
    );
    assert_eq!(
        workflow_name_from_display_name("send-welcome-email-1787407802117"),
        Some("send-welcome-email")
    );
    assert_eq!(workflow_name_from_display_name("no-suffix"), Some("no-suffix"));
    assert_eq!(workflow_name_from_display_name("trailing-"), Some("trailing-"));
    assert_eq!(workflow_name_from_display_name("-1787407802117"), None);
    assert_eq!(workflow_name_from_display_name(""), None);

    let mut settings = settings();
    settings
        .workflow_names
        .insert(Uuid128::parse(WF_B).unwrap(), "billing".into());
    let mut agg = Aggregator::new(settings, Clock::Wall);
    agg.apply(&update(&doc("r1", WF_B, "RUNNING", json!({}))), Partition(0), 0);
    let unnamed = "9d2e4f6a-1b3c-4d5e-9f70-8a9b0c1d2e3f";
    agg.apply(
        &update(&doc("r2", unnamed, "RUNNING", json!({"displayName": "-1787407802117"}))),
        Partition(0),
        0,
    );
    agg.apply(
        &update(&doc("r3", WF_A, "RUNNING", json!({"displayName": "first-1"}))),
        Partition(0),
        0,
    );
    agg.apply(
        &update(&doc("r4", WF_A, "RUNNING", json!({"displayName": "renamed-2"}))),
        Partition(0),
        0,
    );
    let mut names: Vec<_> = agg.series().map(|s| s.workflow.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["9d2e4f6a-1b3c-4d5e-9f70-8a9b0c1d2e3f", "billing", "first"],
        "fixed at first sight"
    );
}

#[test]
fn two_workflow_ids_with_one_name_share_a_series() {
    let mut agg = Aggregator::new(settings(), Clock::Wall);
    agg.apply(
        &update(&doc("r1", WF_A, "COMPLETED", json!({"duration": 1}))),
        Partition(0),
        0,
    );
    agg.apply(
        &update(&doc("r2", WF_B, "COMPLETED", json!({"duration": 1}))),
        Partition(0),
        0,
    );
    assert_eq!(agg.series().count(), 1);
    assert_eq!(agg.series().next().unwrap().outcomes[0].runs, 2);
}

fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp() * S
}

#[test]
fn failure_ratio_by_finished_at_or_processing_time() {
    let mut agg = Aggregator::new(settings(), Clock::Wall);
    let base = at("2026-08-22T14:00:00Z");
    let wall = base + 10 * 60 * S;
    for i in 0..4 {
        let status = if i == 0 { "FAILED" } else { "COMPLETED" };
        let end = format!("2026-08-22T14:0{i}:00Z");
        agg.apply(
            &update(&finished(&format!("r{i}"), WF_A, status, "2026-08-22T13:59:00Z", &end)),
            Partition(0),
            wall,
        );
    }
    assert_eq!(
        stats(&agg, "DAGWorkflow").failure_windows[0].counts(base + 4 * 60 * S),
        (1, 4)
    );
    assert_eq!(agg.latest_finished_nanos(), Some(base + 3 * 60 * S));
    // No finishedAt: placed at the processing time; the replay end stays the latest finishedAt.
    agg.apply(
        &update(&doc("late", WF_A, "FAILED", json!({}))),
        Partition(0),
        base + 3600 * S,
    );
    assert_eq!(agg.latest_finished_nanos(), Some(base + 3 * 60 * S));
    let s = stats(&agg, "DAGWorkflow");
    assert_eq!(s.failure_windows[0].counts(base + 3600 * S), (1, 1));
    assert_eq!(
        s.failure_windows[1].counts(base + 3600 * S),
        (1, 4),
        "14:00 fell out of the 1h window"
    );
}

#[test]
fn a_finish_in_the_future_is_placed_at_the_wall_clock() {
    let mut agg = Aggregator::new(settings(), Clock::Wall);
    let now = at("2026-08-22T14:00:00Z");
    // Clock skew of a whole window: without the clamp it would take the slot of `now` for itself.
    let skewed = finished("skewed", WF_A, "FAILED", "2026-08-22T14:04:00Z", "2026-08-22T14:05:00Z");
    agg.apply(&update(&skewed), Partition(0), now);
    for i in 0..10 {
        agg.apply(
            &update(&finished(
                &format!("r{i}"),
                WF_A,
                "COMPLETED",
                "2026-08-22T13:59:00Z",
                "2026-08-22T14:00:00Z",
            )),
            Partition(0),
            now,
        );
    }
    let far = finished("far", WF_A, "COMPLETED", "2100-08-22T14:00:00Z", "2100-08-22T14:00:01Z");
    agg.apply(&update(&far), Partition(0), now);
    assert_eq!(stats(&agg, "DAGWorkflow").failure_windows[0].counts(now), (1, 12));
}

#[test]
fn replay_runs_on_the_files_own_time() {
    let mut agg = Aggregator::new(settings(), Clock::Replay);
    let wall = at("2030-01-01T00:00:00Z");
    // Before any finishedAt: in no window, and the wall clock plays no part.
    agg.apply(&update(&doc("early", WF_A, "CANCELLED", json!({}))), Partition(0), wall);
    agg.apply(
        &update(&finished(
            "a",
            WF_A,
            "FAILED",
            "2026-08-22T13:59:00Z",
            "2026-08-22T14:00:00Z",
        )),
        Partition(0),
        wall,
    );
    agg.apply(
        &update(&finished(
            "b",
            WF_A,
            "COMPLETED",
            "2026-08-22T13:59:00Z",
            "2026-08-22T14:01:00Z",
        )),
        Partition(0),
        wall,
    );
    // Without finishedAt: placed at the latest finishedAt so far, which stays the windows' end.
    agg.apply(&update(&doc("c", WF_A, "CANCELLED", json!({}))), Partition(0), wall);
    let end = agg.latest_finished_nanos().unwrap();
    assert_eq!(end, at("2026-08-22T14:01:00Z"));
    assert_eq!(stats(&agg, "DAGWorkflow").failure_windows[0].counts(end), (1, 3));
    assert_eq!(
        stats(&agg, "DAGWorkflow").outcomes[2].runs,
        2,
        "both cancellations are counted"
    );
}

#[test]
fn queue_wait_from_created_at_to_started_at() {
    let wait = |fields: Value| queue_wait_seconds(&RunTimes::of(&update(&doc("r", WF_A, "COMPLETED", fields)).run));
    // doc(): createdAt and metadata.createdAt are 14:00:00.
    assert_eq!(wait(json!({"startedAt": "2026-08-22T14:00:01.5Z"})), Some(1.5));
    assert_eq!(
        wait(json!({"createdAt": "2026-08-22T13:59:59Z", "startedAt": "2026-08-22T14:00:01Z"})),
        Some(2.0)
    );
    assert_eq!(
        wait(json!({"createdAt": null, "startedAt": "2026-08-22T14:00:03Z"})),
        Some(3.0),
        "metadata.createdAt"
    );
    assert_eq!(wait(json!({"startedAt": ZERO})), None, "never started");
    assert_eq!(
        wait(json!({"startedAt": "2026-08-22T13:59:00Z"})),
        None,
        "started before it was created"
    );

    let mut agg = Aggregator::new(settings(), Clock::Wall);
    let started = finished("a", WF_A, "COMPLETED", "2026-08-22T14:00:30Z", "2026-08-22T14:00:31Z");
    agg.apply(&update(&started), Partition(0), 0);
    agg.apply(&update(&doc("b", WF_A, "CANCELLED", json!({}))), Partition(0), 0);
    let s = stats(&agg, "DAGWorkflow");
    assert_eq!(&s.outcomes[0].queue.bucket_counts[..], &[0, 1, 0], "30 s: le=60");
    assert_eq!(s.outcomes[2].queue.count, 0, "cancelled while queued: no wait observed");
}

fn workflow_id(i: u32) -> String {
    format!("{i:08x}-4f1a-4c55-8d2e-6a9f1c3b5d77")
}

#[test]
fn workflows_beyond_the_cap_fold_into_overflow_and_a_flood_stays_bounded() {
    let mut settings = settings();
    settings.max_workflows = 2;
    let mut agg = Aggregator::new(settings, Clock::Wall);
    let now = at("2026-08-22T14:00:00Z");
    for i in 0..100_000 {
        let d = doc(
            &format!("r{i}"),
            &workflow_id(i),
            "COMPLETED",
            json!({"displayName": format!("wf{i}-1")}),
        );
        agg.apply(&update(&d), Partition(0), now);
    }
    let mut names: Vec<_> = agg
        .series()
        .map(|s| (s.workflow.as_str(), s.outcomes[0].runs))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [("__overflow__", 99_998), ("wf0", 1), ("wf1", 1)],
        "counts merged, never lost"
    );
    assert_eq!(agg.tracked_workflows(), 2);
    assert_eq!(agg.folded_updates, 99_998);
    assert_eq!(agg.workflows.len(), 2, "folded workflow ids are not remembered");
    assert_eq!(agg.series_by_label.len(), 3);
    assert_eq!(agg.series.len(), 3);
}

#[test]
fn idle_workflows_drop_out_and_come_back_from_zero() {
    let mut agg = Aggregator::new(settings(), Clock::Wall);
    let t0 = at("2026-08-22T14:00:00Z");
    let hour = 3600 * S;
    let a = |id: &str| doc(id, WF_A, "COMPLETED", json!({"displayName": "daily-1"}));
    let b = |id: &str| doc(id, WF_B, "COMPLETED", json!({"displayName": "busy-1"}));
    agg.apply(&update(&a("a1")), Partition(0), t0);
    agg.apply(&update(&b("b1")), Partition(0), t0);
    // A daily workflow, a day later: still there.
    agg.apply(&update(&b("b2")), Partition(0), t0 + 24 * hour);
    agg.apply(&update(&a("a2")), Partition(0), t0 + 25 * hour);
    assert_eq!(stats(&agg, "daily").outcomes[0].runs, 2);
    // Then 48 h without an update: dropped at the next sweep, memory freed.
    agg.apply(&update(&b("b3")), Partition(0), t0 + 74 * hour);
    assert!(agg.series().all(|s| s.workflow != "daily"));
    assert_eq!(agg.expired_series, 1);
    assert_eq!(agg.tracked_workflows(), 1);
    assert_eq!(agg.workflows.len(), 1);
    // It comes back: a new series from zero.
    agg.apply(&update(&a("a3")), Partition(0), t0 + 75 * hour);
    assert_eq!(stats(&agg, "daily").outcomes[0].runs, 1);
    assert_eq!(agg.tracked_workflows(), 2);
}

#[test]
fn lifecycle_counts_in_flight_retries_and_replays_per_workflow() {
    let mut agg = Aggregator::new(settings(), Clock::Wall);
    let now = at("2026-08-22T15:00:00Z");
    let running = |id: &str, started: &str| doc(id, WF_A, "RUNNING", json!({"startedAt": started}));
    agg.apply(&update(&doc("q", WF_A, "QUEUED", json!({}))), Partition(0), now);
    agg.apply(&update(&running("r", "2026-08-22T14:00:01Z")), Partition(0), now);
    // r is retried: back to QUEUED, then running again.
    agg.apply(&update(&doc("r", WF_A, "QUEUED", json!({}))), Partition(0), now);
    agg.apply(&update(&running("r", "2026-08-22T14:05:00Z")), Partition(0), now);
    // f finishes, then is replayed by hand.
    agg.apply(
        &update(&finished(
            "f",
            WF_A,
            "FAILED",
            "2026-08-22T14:00:00Z",
            "2026-08-22T14:01:00Z",
        )),
        Partition(0),
        now,
    );
    agg.apply(&update(&running("f", "2026-08-22T14:30:00Z")), Partition(0), now);
    let (at_a, stats_a) = agg
        .series_with_ids()
        .find(|(_, s)| s.workflow == "DAGWorkflow")
        .unwrap();
    let flight = agg.in_flight(at_a);
    assert_eq!((flight.queued, flight.running), (1, 2));
    assert_eq!((stats_a.retries, stats_a.replays), (1, 1));
    assert_eq!(
        agg.lifecycle().oldest_running()[at_a.index()],
        Some(at("2026-08-22T14:05:00Z"))
    );
}

#[test]
fn floods_of_ids_sharing_a_name_or_of_tenants_stay_bounded() {
    let mut settings = settings();
    settings.max_workflows = 2;
    let mut agg = Aggregator::new(settings, Clock::Wall);
    let now = at("2026-08-22T14:00:00Z");
    // 20,000 workflow ids with one name: only 2 are remembered, the rest fold.
    for i in 0..20_000 {
        let d = doc(
            &format!("r{i}"),
            &workflow_id(i),
            "COMPLETED",
            json!({"displayName": "same-1"}),
        );
        agg.apply(&update(&d), Partition(0), now);
    }
    assert_eq!(agg.workflows.len(), 2);
    assert_eq!(agg.series().count(), 2, "same, and the tenant's overflow");
    // 5,000 unknown tenants at the cap: one overflow series for all of them.
    for i in 0..5_000u32 {
        let mut d = doc(&format!("t{i}"), WF_A, "COMPLETED", json!({}));
        d["tenantId"] = json!(format!("{i:08x}-80ab-4e1f-a156-f1c4546cbf52"));
        agg.apply(&update(&d), Partition(0), now);
    }
    let mut series: Vec<_> = agg
        .series()
        .map(|s| (s.tenant == OVERFLOW_TENANT, s.workflow.clone(), s.outcomes[0].runs))
        .collect();
    series.sort();
    assert_eq!(
        series,
        [
            (false, "__overflow__".to_string(), 19_998),
            (false, "same".to_string(), 2),
            (true, "__overflow__".to_string(), 5_000)
        ]
    );
}

fn with_default_timestamp_limits() -> AggregateSettings {
    AggregateSettings {
        timestamps: crate::config::Config::default().aggregate_settings().timestamps,
        ..settings()
    }
}

#[test]
fn timestamps_far_from_the_wall_clock_are_not_believed_and_are_counted() {
    let mut agg = Aggregator::new(with_default_timestamp_limits(), Clock::Wall);
    let now = at("2026-08-22T14:00:00Z");
    let far_future = finished("a", WF_A, "COMPLETED", "2026-08-22T13:59:00Z", "9999-12-31T23:59:59Z");
    let far_past = finished("b", WF_A, "COMPLETED", "0000-01-01T00:00:00Z", "2026-08-22T13:59:00Z");
    let unix_zero = finished("c", WF_A, "FAILED", "1970-01-01T00:00:00Z", "2026-08-22T13:59:00Z");
    for doc in [&far_future, &far_past, &unix_zero] {
        assert!(
            matches!(
                agg.apply(&update(doc), Partition(0), now),
                Applied::Outcome {
                    duration_seconds: None,
                    ..
                }
            ),
            "the outcome counts, without a duration: {doc}"
        );
    }
    let s = stats(&agg, "DAGWorkflow");
    assert_eq!(s.outcomes[0].runs + s.outcomes[1].runs, 3);
    assert_eq!(s.outcomes[0].duration.count, 0);
    assert_eq!(s.outcomes[0].duration.sum, 0.0, "no millennia in the _sum");
    assert!(s.duration_windows.iter().all(|w| w.summary(now, &[0.5]).is_none()));
    assert_eq!(
        agg.implausible,
        ImplausibleCounts {
            started_at: 2,
            finished_at: 1,
            created_at: 0,
            duration: 0
        }
    );
    // Within the limits: believed.
    let fine = finished("d", WF_A, "COMPLETED", "2026-08-22T13:59:00Z", "2026-08-22T14:05:00Z");
    assert!(matches!(
        agg.apply(&update(&fine), Partition(0), now),
        Applied::Outcome {
            duration_seconds: Some(360.0),
            ..
        }
    ));
    assert_eq!(agg.implausible.finished_at, 1);
}

#[test]
fn a_running_run_started_long_ago_does_not_pin_the_oldest_running_age() {
    let mut agg = Aggregator::new(with_default_timestamp_limits(), Clock::Wall);
    let now = at("2026-08-22T14:00:00Z");
    let ancient = doc("r", WF_A, "RUNNING", json!({"startedAt": "1970-01-01T00:00:00Z"}));
    agg.apply(&update(&ancient), Partition(0), now);
    assert_eq!(agg.lifecycle().oldest_running().iter().flatten().count(), 0);
    assert_eq!(agg.implausible.started_at, 1);
}

#[test]
fn replay_believes_old_timestamps_but_not_durations_over_a_year() {
    let mut agg = Aggregator::new(with_default_timestamp_limits(), Clock::Replay);
    let now = at("2026-08-22T14:00:00Z");
    let old = finished("a", WF_A, "COMPLETED", "2001-01-01T00:00:00Z", "2001-01-01T00:00:02Z");
    assert!(matches!(
        agg.apply(&update(&old), Partition(0), now),
        Applied::Outcome {
            duration_seconds: Some(2.0),
            ..
        }
    ));
    let long = finished("b", WF_A, "COMPLETED", "0000-01-01T00:00:00Z", "2001-01-01T00:00:02Z");
    assert!(matches!(
        agg.apply(&update(&long), Partition(0), now),
        Applied::Outcome {
            duration_seconds: None,
            ..
        }
    ));
    assert_eq!(agg.implausible.duration + agg.implausible.started_at, 1);
    let ahead = finished("c", WF_A, "COMPLETED", "2001-01-01T00:00:00Z", "9999-01-01T00:00:00Z");
    agg.apply(&update(&ahead), Partition(0), now);
    assert_eq!(
        agg.implausible.finished_at, 1,
        "nothing in a file lies ahead of the wall clock"
    );
    assert_eq!(agg.latest_finished_nanos(), Some(at("2001-01-01T00:00:02Z")));
}

#[test]
fn workflow_names_from_messages_become_safe_bounded_label_values() {
    let mut agg = Aggregator::new(settings(), Clock::Wall);
    let huge = format!("{}-1787407391482", "n".repeat(1 << 16));
    let other = format!("{}m-1787407391482", "n".repeat((1 << 16) - 1));
    agg.apply(
        &update(&doc("r1", WF_A, "QUEUED", json!({"displayName": huge.clone()}))),
        Partition(0),
        0,
    );
    agg.apply(
        &update(&doc("r2", WF_B, "QUEUED", json!({"displayName": other}))),
        Partition(0),
        0,
    );
    let wf_c = "5c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
    let wf_d = "6d1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
    // Another workflow id with the same long name: the same series, not counted again.
    agg.apply(
        &update(&doc("r4", wf_d, "QUEUED", json!({"displayName": huge.clone()}))),
        Partition(0),
        0,
    );
    agg.apply(
        &update(&doc(
            "r3",
            wf_c,
            "QUEUED",
            json!({"displayName": "bad\r\nname\u{2028}-1"}),
        )),
        Partition(0),
        0,
    );
    let mut names: Vec<_> = agg.series().map(|s| s.workflow.clone()).collect();
    names.sort();
    assert_eq!(names.len(), 3, "long names that differ stay two series: {names:?}");
    assert!(names.iter().all(|n| n.len() <= 128));
    assert!(names.contains(&"bad\u{FFFD}\u{FFFD}name\u{FFFD}".to_string()));
    assert_eq!(agg.workflow_names_altered, AlterationCounts { cut: 2, replaced: 1 });
}

#[test]
fn whether_a_finish_is_believed_never_changes_which_outcome_it_is() {
    let mut agg = Aggregator::new(with_default_timestamp_limits(), Clock::Wall);
    let now = at("2026-08-22T14:00:00Z");
    // A producer clock 15 minutes fast: not believed now, believed when redelivered later.
    let fast = finished("a", WF_A, "COMPLETED", "2026-08-22T14:10:00Z", "2026-08-22T14:15:00Z");
    assert!(matches!(
        agg.apply(&update(&fast), Partition(0), now),
        Applied::Outcome { .. }
    ));
    assert_eq!(
        agg.apply(&update(&fast), Partition(0), now + 600 * S),
        Applied::Duplicate
    );
    // A replayed run whose two finishes are both absurd: two outcomes, not one.
    let first = finished("b", WF_A, "FAILED", "2026-08-22T13:00:00Z", "9999-01-01T00:00:00Z");
    let again = finished("b", WF_A, "COMPLETED", "2026-08-22T13:00:00Z", "9999-02-01T00:00:00Z");
    assert!(matches!(
        agg.apply(&update(&first), Partition(0), now),
        Applied::Outcome { .. }
    ));
    assert!(matches!(
        agg.apply(&update(&again), Partition(0), now),
        Applied::Outcome { .. }
    ));
    assert_eq!(agg.apply(&update(&again), Partition(0), now), Applied::Duplicate);
}
