//! State that survives a crash, through a real broker: a member killed with SIGKILL and started
//! again rebuilds its runs, outcome memory and windows from the topic, and then reports what a
//! member that never stopped reports, without counting anything again.

mod common;

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TENANT: &str = "707d0855-80ab-4e1f-a156-f1c4546cbf52";
const WF: &str = "0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77";
const ZERO: &str = "0001-01-01T00:00:00Z";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn run(
    id: &str,
    status: &str,
    created: DateTime<Utc>,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
) -> Value {
    json!({
        "metadata": {"id": id, "createdAt": ts(created), "updatedAt": ts(created)},
        "status": status, "tenantId": TENANT, "workflowId": WF, "displayName": "ingest-1787407391482",
        "workflowVersionId": "c4d1e8f2-93b0-4a6e-b1d7-2f5e8a0c9d13",
        "startedAt": started.map_or(ZERO.to_string(), ts), "finishedAt": finished.map_or(ZERO.to_string(), ts),
        "createdAt": ts(created), "duration": 0,
        "input": {}, "output": {}, "additionalMetadata": {}, "errorMessage": "",
    })
}

fn run_id(i: usize) -> String {
    format!("5f1c2a3b-0000-4000-8000-{i:012}")
}

fn config(brokers: &str, topic: &str, group: &str, instance: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{group}"
group_instance_id = "{instance}"
commit_interval = "1s"
statistics_interval = "1s"

[metrics]
duration_buckets_seconds = [1.0, 10.0, 60.0]
failure_ratio_windows = ["5m", "1h"]
queue_wait_quantiles = true

[thresholds]
evaluation_interval = "1s"

[thresholds.default.failure_ratio]
max = 0.2
window = "1h"
min_outcomes = 10
for = "8s"
"#
    )
}

/// A run's whole life: queued, running, and (unless `end` is none) finished after `seconds`.
fn life(i: usize, start: DateTime<Utc>, end: Option<(&str, f64)>) -> Vec<Outgoing> {
    let id = run_id(i);
    let created = start - ChronoDuration::seconds(2);
    let mut messages = vec![
        Outgoing::json(&id, &run(&id, "QUEUED", created, None, None)),
        Outgoing::json(&id, &run(&id, "RUNNING", created, Some(start), None)),
    ];
    if let Some((status, seconds)) = end {
        let finished = start + ChronoDuration::milliseconds((seconds * 1000.0) as i64);
        messages.push(Outgoing::json(
            &id,
            &run(&id, status, created, Some(start), Some(finished)),
        ));
    }
    messages
}

/// The samples of the state a restart must not lose, as `name{labels} value` lines.
fn state_lines(m: &Metrics) -> Vec<String> {
    let mut lines: Vec<String> = (m.samples.iter())
        .filter(|(name, ..)| {
            [
                "hatchet_workflow_runs_in_flight",
                "hatchet_workflow_failure_ratio",
                "hatchet_workflow_run_duration_window_seconds",
                "hatchet_workflow_run_duration_window_seconds_count",
                "hatchet_workflow_run_duration_window_seconds_sum",
                "hatchet_workflow_run_queue_window_seconds",
                "hatchet_workflow_run_queue_window_seconds_count",
            ]
            .contains(&name.as_str())
        })
        .map(|(name, labels, value)| format!("{name}{labels:?} {value}"))
        .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_and_restarted_reports_what_one_that_never_stopped_reports() {
    let brokers = shared_brokers();
    let topic = unique_name("restore");
    create_topic(&brokers, &topic, 2).await;
    let producer = producer(&brokers);
    let (group, reference_group) = (unique_name("group"), unique_name("reference"));
    let member = config(&brokers, &topic, &group, "member-0");
    let killed = Service::start(&member);
    let reference = Service::start(&config(&brokers, &topic, &reference_group, "reference-0"));

    // Before the crash: 40 finished runs (one in four failed), 5 left RUNNING (the oldest for 24
    // minutes, never heard of again), 3 QUEUED.
    let now = Utc::now();
    let mut before = Vec::new();
    for i in 0..40 {
        let status = if i % 4 == 0 { "FAILED" } else { "COMPLETED" };
        before.extend(life(
            i,
            now - ChronoDuration::seconds(600 - i as i64 * 10),
            Some((status, 1.0 + i as f64)),
        ));
    }
    for i in 40..45 {
        before.extend(life(i, now - ChronoDuration::minutes(20 + (i as i64 - 40)), None));
    }
    for i in 45..48 {
        let id = run_id(i);
        before.push(Outgoing::json(&id, &run(&id, "QUEUED", now, None, None)));
    }
    send_all(&producer, &topic, &before).await;
    let n_before = before.len() as f64;
    killed.wait_for_consumed(n_before);
    reference.wait_for_consumed(n_before);
    let ends = end_offsets(&brokers, &topic, 2);
    killed.wait_until("its offsets are committed", Duration::from_secs(30), || {
        let committed = committed_offsets(&brokers, &group, &topic, 2);
        ends.iter()
            .all(|(p, end)| committed.get(p).copied().flatten() == Some(*end))
    });
    let before_crash = killed.metrics();
    assert_eq!(before_crash.sum("hatchet_workflow_runs_in_flight", &[]), 8.0);
    // One outcome in four failed: the failure-ratio threshold (0.2, held for 8 s) is breached.
    let breached = |m: &Metrics| m.sum("hatchet_workflow_threshold_breached", &[("threshold", "failure_ratio")]);
    killed.wait_until("the threshold is breached", Duration::from_secs(30), || {
        breached(&killed.metrics()) == 1.0
    });

    killed.kill();
    let killed_at = Instant::now();
    let restarted = Service::start(&member);
    restarted.wait_until("it is ready again", Duration::from_secs(30), || {
        restarted.get("/readyz").map(|(s, _)| s == 200).unwrap_or(false)
    });
    let ready_after = killed_at.elapsed();
    // The breach holds right after the restore, without waiting out its 8 s hold again.
    restarted.wait_until("the breach is back", Duration::from_secs(30), || {
        breached(&restarted.metrics()) == 1.0
    });
    let breach_gap = killed_at.elapsed();
    assert!(
        breach_gap < ready_after + Duration::from_secs(2),
        "breached again {breach_gap:?} after the kill, ready after {ready_after:?}"
    );
    assert!(
        ready_after < Duration::from_secs(10),
        "ready {ready_after:?} after the kill; log:\n{}",
        restarted.log_text()
    );

    // After the restart: 10 new outcomes, one of the running runs finishes, and 5 outcomes from
    // before the crash are delivered again (the restored memory must know them).
    let later = Utc::now();
    let mut after = Vec::new();
    for i in 100..110 {
        after.extend(life(i, later - ChronoDuration::seconds(30), Some(("COMPLETED", 3.0))));
    }
    let id = run_id(44);
    let start = now - ChronoDuration::minutes(24);
    after.push(Outgoing::json(
        &id,
        &run(&id, "FAILED", start, Some(start), Some(later)),
    ));
    for i in 1..6 {
        after.push(
            life(
                i,
                now - ChronoDuration::seconds(600 - i as i64 * 10),
                Some(("COMPLETED", 1.0 + i as f64)),
            )
            .remove(2),
        );
    }
    send_all(&producer, &topic, &after).await;
    let n_after = after.len() as f64;
    let restarted_metrics = restarted.wait_for_consumed(n_after);
    reference.wait_for_consumed(n_before + n_after);
    assert_eq!(
        restarted_metrics.sum("hatchet_run_metrics_messages_consumed_total", &[]),
        n_after,
        "resumed at the committed offsets"
    );

    // Its state is the uninterrupted member's: runs in flight, the stuck run's age, every window.
    let (a, b) = (restarted.metrics(), reference.metrics());
    assert_eq!(state_lines(&a), state_lines(&b));
    assert_eq!(a.sum("hatchet_workflow_runs_in_flight", &[("status", "RUNNING")]), 4.0);
    let age = |m: &Metrics| m.sum("hatchet_workflow_oldest_running_run_age_seconds", &[]);
    assert!((age(&a) - age(&b)).abs() < 2.0, "{} vs {}", age(&a), age(&b));
    assert!(
        age(&a) > 23.0 * 60.0,
        "the run left RUNNING before the crash is still the oldest"
    );

    // And nothing was counted again: the restarted member counts only the 11 new outcomes.
    assert_eq!(a.sum("hatchet_workflow_runs_total", &[]), 11.0);
    assert_eq!(b.sum("hatchet_workflow_runs_total", &[]), 51.0);
    let restored = a.sum("hatchet_run_metrics_restored_messages_total", &[("result", "applied")]);
    assert_eq!(restored, n_before);
}

/// Prometheus sees only what scrapes return: after a crash, an outcome whose effect a scrape of
/// the dead process returned must not count again, and one it never returned must count once.
/// A member is killed mid-stream, a quarter of a second after a scrape; the counter as Prometheus
/// reads it (the last scrape before the kill, plus everything the restarted process counts) must
/// equal the outcomes produced.
#[test]
fn a_member_killed_mid_stream_counts_each_outcome_once_as_scrapes_saw_it() {
    let brokers = shared_brokers();
    let topic = unique_name("restore-doubles");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(create_topic(&brokers, &topic, 2));
    let group = unique_name("group");
    // Commits follow scrapes only: the fallback never comes in this test.
    let member =
        config(&brokers, &topic, &group, "member-0").replace("commit_interval = \"1s\"", "commit_interval = \"1h\"");
    let killed = Service::start(&member);
    killed.wait_until("it holds both partitions", Duration::from_secs(30), || {
        killed.metrics().sum("hatchet_run_metrics_assigned_partitions", &[]) == 2.0
    });

    // 20 batches of 50 runs (queued, running, finished), one batch every 150 ms.
    let (runs, batch) = (1000, 50);
    let streaming = {
        let (brokers, topic) = (brokers.clone(), topic.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let producer = producer(&brokers);
                let now = Utc::now();
                for first in (0..runs).step_by(batch) {
                    let messages: Vec<Outgoing> = (first..first + batch)
                        .flat_map(|i| life(i, now - ChronoDuration::seconds(60), Some(("COMPLETED", 1.5))))
                        .collect();
                    send_all(&producer, &topic, &messages).await;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            })
        })
    };
    let outcomes = |m: &Metrics| m.sum("hatchet_workflow_runs_total", &[]);
    let mut last_scrape = killed.metrics();
    while outcomes(&last_scrape) < 300.0 {
        std::thread::sleep(Duration::from_millis(200));
        last_scrape = killed.metrics();
    }
    std::thread::sleep(Duration::from_millis(250));
    killed.kill();
    let seen_before = outcomes(&last_scrape);
    assert!(seen_before < runs as f64, "the kill came before the stream ended");

    let restarted = Service::start(&member);
    streaming.join().unwrap();
    let ends = end_offsets(&brokers, &topic, 2);
    let mut final_scrape = restarted.metrics();
    restarted.wait_until(
        "everything produced is processed and committed",
        Duration::from_secs(60),
        || {
            // Each scrape delivered commits what it showed.
            final_scrape = restarted.metrics();
            let committed = committed_offsets(&brokers, &group, &topic, 2);
            ends.iter()
                .all(|(p, end)| committed.get(p).copied().flatten() == Some(*end))
        },
    );
    let final_scrape = restarted.metrics();
    let as_prometheus_sees_it = seen_before + outcomes(&final_scrape);
    assert_eq!(
        as_prometheus_sees_it,
        runs as f64,
        "{seen_before} outcomes scraped before the kill, {} after the restart; log:\n{}",
        outcomes(&final_scrape),
        restarted.log_text()
    );
}
