//! Partitions moving between members, through a real broker: two members, a third that joins
//! and later leaves. At every settled point the members' runs in flight add up exactly to what
//! was produced: a member that loses a partition drops its runs, and the one that gains it
//! rebuilds them from the topic.

mod common;

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TENANT: &str = "707d0855-80ab-4e1f-a156-f1c4546cbf52";
const WF: &str = "3c9a6f0e-1b2d-4e5f-8a7b-9c0d1e2f3a4b";
const ZERO: &str = "0001-01-01T00:00:00Z";
const PARTITIONS: i32 = 6;

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn update(i: usize, status: &str, at: DateTime<Utc>) -> Outgoing {
    let id = format!("9a1c2a3b-0000-4000-8000-{i:012}");
    let started = (status != "QUEUED").then(|| ts(at));
    let finished = matches!(status, "COMPLETED" | "FAILED").then(|| ts(at + ChronoDuration::seconds(2)));
    let doc: Value = json!({
        "metadata": {"id": id, "createdAt": ts(at), "updatedAt": ts(at)},
        "status": status, "tenantId": TENANT, "workflowId": WF, "displayName": "fanout",
        "workflowVersionId": "c4d1e8f2-93b0-4a6e-b1d7-2f5e8a0c9d13",
        "startedAt": started.unwrap_or_else(|| ZERO.to_string()),
        "finishedAt": finished.unwrap_or_else(|| ZERO.to_string()),
        "createdAt": ts(at), "duration": 0,
        "input": {}, "output": {}, "additionalMetadata": {}, "errorMessage": "",
    });
    Outgoing::json(&id, &doc)
}

/// Runs `range`: one in three left RUNNING, one QUEUED, one finished.
fn runs(range: std::ops::Range<usize>, at: DateTime<Utc>) -> Vec<Outgoing> {
    let mut messages = Vec::new();
    for i in range {
        messages.push(update(i, "QUEUED", at));
        match i % 3 {
            0 => messages.push(update(i, "RUNNING", at)),
            1 => {}
            _ => {
                messages.push(update(i, "RUNNING", at));
                messages.push(update(i, "COMPLETED", at));
            }
        }
    }
    messages
}

fn member(brokers: &str, topic: &str, group: &str) -> Service {
    Service::start(&format!(
        r#"
[kafka]
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{group}"
commit_interval = "1h"
statistics_interval = "1s"
"#
    ))
}

/// Waits until the members hold every partition between them, all are ready (no restore in
/// progress), and their runs in flight add up to `running` and `queued`; then checks that the
/// sums still hold a moment later.
fn settled(members: &[&Service], running: f64, queued: f64, what: &str) {
    let sums = || {
        let scrapes: Vec<Metrics> = members.iter().map(|m| m.metrics()).collect();
        let sum = |name: &str, labels: &[(&str, &str)]| scrapes.iter().map(|m| m.sum(name, labels)).sum::<f64>();
        let ready = members.iter().all(|m| m.get("/readyz").is_ok_and(|(s, _)| s == 200));
        (
            ready,
            sum("hatchet_run_metrics_assigned_partitions", &[]),
            sum("hatchet_workflow_runs_in_flight", &[("status", "RUNNING")]),
            sum("hatchet_workflow_runs_in_flight", &[("status", "QUEUED")]),
        )
    };
    let expected = (true, f64::from(PARTITIONS), running, queued);
    let start = Instant::now();
    let mut seen = sums();
    while seen != expected {
        if start.elapsed() > Duration::from_secs(90) {
            let logs: Vec<String> = members.iter().map(|m| m.log_text()).collect();
            panic!("{what}: (ready, partitions, running, queued) = {seen:?}, expected {expected:?}; logs:\n{logs:#?}");
        }
        std::thread::sleep(Duration::from_millis(250));
        seen = sums();
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sums(), expected, "{what}: the sums moved after settling");
}

#[test]
fn a_member_that_joins_then_leaves_never_makes_a_run_count_twice_or_vanish() {
    let brokers = shared_brokers();
    let topic = unique_name("rebalance");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(create_topic(&brokers, &topic, PARTITIONS));
    let producer = producer(&brokers);
    let group = unique_name("group");
    let now = Utc::now() - ChronoDuration::minutes(5);

    let a = member(&brokers, &topic, &group);
    let b = member(&brokers, &topic, &group);
    runtime.block_on(send_all(&producer, &topic, &runs(0..60, now)));
    settled(&[&a, &b], 20.0, 20.0, "two members");

    // A third joins: it takes partitions from both, and their runs with them.
    let c = member(&brokers, &topic, &group);
    c.wait_until("the third member holds partitions", Duration::from_secs(60), || {
        c.metrics().sum("hatchet_run_metrics_assigned_partitions", &[]) > 0.0
    });
    let mut messages = runs(100..130, now);
    // Five runs left RUNNING before it joined finish now, wherever their partition went.
    messages.extend((0..15).step_by(3).map(|i| update(i, "COMPLETED", now)));
    runtime.block_on(send_all(&producer, &topic, &messages));
    settled(&[&a, &b, &c], 25.0, 30.0, "three members");
    let restored: f64 = c.metrics().sum("hatchet_run_metrics_restored_messages_total", &[]);
    assert!(
        restored > 0.0,
        "the third member rebuilt its partitions' runs from the topic"
    );

    // It leaves (SIGTERM): the two others take its partitions back and rebuild their runs.
    assert!(c.stop().success());
    let mut messages = runs(200..230, now);
    // Five runs QUEUED before it left start running.
    messages.extend((1..15).step_by(3).map(|i| update(i, "RUNNING", now)));
    runtime.block_on(send_all(&producer, &topic, &messages));
    settled(&[&a, &b], 40.0, 35.0, "after the third left");
}
