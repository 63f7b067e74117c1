//! End to end through a real Kafka broker: known updates in, exact metrics out.

mod common;

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const TENANT: &str = "707d0855-80ab-4e1f-a156-f1c4546cbf52";
const WF_A: &str = "0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77";
const WF_B: &str = "3e9d1f70-8a2b-4c6d-9e0f-1a2b3c4d5e6f";
const ZERO: &str = "0001-01-01T00:00:00Z";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn ts_minus5(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono::FixedOffset::west_opt(5 * 3600).unwrap())
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A run update as Hatchet sends it: `started`/`finished` as RFC 3339 text (or zero time).
fn run(id: &str, wf: &str, display: &str, status: &str, started: &str, finished: &str, duration: i64) -> Value {
    json!({
        "metadata": {"id": id, "createdAt": "2026-08-22T14:00:00Z", "updatedAt": "2026-08-22T14:00:00Z"},
        "status": status, "tenantId": TENANT, "workflowId": wf, "displayName": display,
        "workflowVersionId": "c4d1e8f2-93b0-4a6e-b1d7-2f5e8a0c9d13",
        "startedAt": started, "finishedAt": finished, "createdAt": "2026-08-22T14:00:00Z", "duration": duration,
        "input": {"n": 1}, "output": {}, "additionalMetadata": {}, "errorMessage": "",
    })
}

fn config(brokers: &str, topic: &str, group: &str, commit_interval: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{group}"
commit_interval = "{commit_interval}"
statistics_interval = "1s"
max_message_bytes = 4096

[metrics]
duration_buckets_seconds = [1.0, 10.0, 60.0]
failure_ratio_windows = ["5m", "1h"]

[workflow_names]
"{WF_B}" = "billing"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_outcomes_exactly_through_a_real_broker() {
    let brokers = shared_brokers();
    let topic = unique_name("e2e-counts");
    let group = unique_name("group");
    create_topic(&brokers, &topic, 3).await;
    let service = Service::start(&config(&brokers, &topic, &group, "1s"));

    let now = Utc::now();
    let at = |s: f64| ts(now - ChronoDuration::milliseconds((s * 1000.0) as i64));
    let a = |id: &str, status: &str, started: &str, finished: &str| {
        run(id, WF_A, "ingest-1787407391482", status, started, finished, 0)
    };
    let b = |id: &str, status: &str, started: &str, finished: &str| {
        run(id, WF_B, "charge-1787407391999", status, started, finished, 0)
    };
    let r1_done = a("r1", "COMPLETED", &at(20.0), &at(19.5));
    let r3_failed = a("r3", "FAILED", &at(30.0), &at(15.0));
    let b2_at = now - ChronoDuration::milliseconds(2500);
    let b2_start = now - ChronoDuration::milliseconds(5000);
    let mut big = a("big", "COMPLETED", &at(2.0), &at(1.0));
    big["input"] = json!({"blob": "x".repeat(5000)});
    let mut no_status = a("ns", "COMPLETED", &at(2.0), &at(1.0));
    no_status.as_object_mut().unwrap().remove("status");
    let mut bad_duration = a("bd", "COMPLETED", &at(2.0), &at(1.0));
    bad_duration["duration"] = json!("2436");

    let messages = vec![
        Outgoing::json("r1", &a("r1", "QUEUED", ZERO, ZERO)),
        Outgoing::json("r1", &a("r1", "RUNNING", &at(20.0), ZERO)),
        Outgoing::json("r1", &r1_done),
        Outgoing::json("r1", &r1_done), // Kafka redelivery
        Outgoing::json("r2", &a("r2", "COMPLETED", &at(30.0), &at(25.0))),
        Outgoing::json("r3", &r3_failed),
        // A DAG whose first task finished: finishedAt set, still RUNNING.
        Outgoing::json("r4", &a("r4", "RUNNING", &at(9.0), &at(8.0))),
        // Cancelled while queued: no startedAt, Hatchet's saturated duration.
        Outgoing::json(
            "r5",
            &run(
                "r5",
                WF_A,
                "ingest-1787407391482",
                "CANCELLED",
                ZERO,
                &at(10.0),
                9223372036854,
            ),
        ),
        // r3 replayed by hand: reopened, finished again later.
        Outgoing::json("r3", &a("r3", "QUEUED", ZERO, ZERO)),
        Outgoing::json("r3", &a("r3", "RUNNING", &at(5.0), ZERO)),
        Outgoing::json("r3", &a("r3", "COMPLETED", &at(5.0), &at(1.0))),
        Outgoing::json("r3", &r3_failed), // a stale copy of the first finish
        Outgoing::json("b1", &{
            let mut b1 = b("b1", "FAILED", &at(3.0), &at(2.0));
            b1["createdAt"] = json!(at(4.5));
            b1
        }),
        Outgoing::json("b2", &b("b2", "FAILED", &ts_minus5(b2_start), &ts_minus5(b2_at))),
        Outgoing::json("b2", &b("b2", "FAILED", &ts(b2_start), &ts(b2_at))), // same instant, other offset
        Outgoing::raw(b"{\"metadata\": "),
        Outgoing::raw(b"[1, 2]"),
        Outgoing::json("ns", &no_status),
        Outgoing::json("bd", &bad_duration),
        Outgoing::json("up", &a("up", "PAUSED", ZERO, ZERO)),
        Outgoing {
            key: Some("tomb".into()),
            payload: None,
        },
        Outgoing::json("big", &big),
    ];
    send_all(&producer(&brokers), &topic, &messages).await;

    let m = service.wait_for_consumed(messages.len() as f64);
    let wa = [("tenant_id", TENANT), ("workflow", "ingest")];
    let wb = [("tenant_id", TENANT), ("workflow", "billing")];
    let with = |base: &[(&'static str, &'static str)], extra: &[(&'static str, &'static str)]| {
        base.iter().chain(extra).copied().collect::<Vec<_>>()
    };
    let runs = |w: &[(&'static str, &'static str)], status| {
        m.get("hatchet_workflow_runs_total", &with(w, &[("status", status)]))
    };
    assert_eq!(runs(&wa, "COMPLETED"), Some(3.0));
    assert_eq!(runs(&wa, "FAILED"), Some(1.0));
    assert_eq!(runs(&wa, "CANCELLED"), Some(1.0));
    assert_eq!(runs(&wb, "FAILED"), Some(2.0));
    assert_eq!(runs(&wb, "COMPLETED"), Some(0.0));

    let bucket = |w: &[(&'static str, &'static str)], status, le| {
        m.get(
            "hatchet_workflow_run_duration_seconds_bucket",
            &with(w, &[("status", status), ("le", le)]),
        )
    };
    assert_eq!(bucket(&wa, "COMPLETED", "1"), Some(1.0), "0.5 s");
    assert_eq!(bucket(&wa, "COMPLETED", "10"), Some(3.0), "+ 5 s and 4 s");
    assert_eq!(bucket(&wa, "COMPLETED", "+Inf"), Some(3.0));
    assert_eq!(bucket(&wa, "FAILED", "10"), Some(0.0));
    assert_eq!(bucket(&wa, "FAILED", "60"), Some(1.0), "30 s");
    assert_eq!(bucket(&wa, "CANCELLED", "+Inf"), Some(0.0), "no trustworthy duration");
    assert_eq!(bucket(&wb, "FAILED", "1"), Some(1.0), "exactly 1 s is in le=1");
    assert_eq!(bucket(&wb, "FAILED", "10"), Some(2.0));
    let sum = m
        .get(
            "hatchet_workflow_run_duration_seconds_sum",
            &with(&wa, &[("status", "COMPLETED")]),
        )
        .unwrap();
    assert!((sum - 9.5).abs() < 0.01, "{sum}");

    // Windowed quantiles of COMPLETED durations [0.5, 4, 5]: nearest-rank p50 is 4 s, p99 5 s.
    let quantile = |q| {
        m.get(
            "hatchet_workflow_run_duration_window_seconds",
            &with(&wa, &[("status", "COMPLETED"), ("window", "5m"), ("quantile", q)]),
        )
        .unwrap()
    };
    assert!((quantile("0.5") - 4.0).abs() <= 0.04, "{}", quantile("0.5"));
    assert!((quantile("0.99") - 5.0).abs() <= 0.05, "{}", quantile("0.99"));
    let count = m.get(
        "hatchet_workflow_run_duration_window_seconds_count",
        &with(&wa, &[("status", "COMPLETED"), ("window", "1h")]),
    );
    assert_eq!(count, Some(3.0));

    // In flight: only r4, the DAG still RUNNING (started 9 s ago); r3 was replayed once.
    let flight = |w: &[(&'static str, &'static str)], status| {
        m.get("hatchet_workflow_runs_in_flight", &with(w, &[("status", status)]))
    };
    assert_eq!(flight(&wa, "RUNNING"), Some(1.0));
    assert_eq!(flight(&wa, "QUEUED"), Some(0.0));
    assert_eq!(flight(&wb, "RUNNING"), Some(0.0));
    let age = m.get("hatchet_workflow_oldest_running_run_age_seconds", &wa).unwrap();
    assert!((9.0..120.0).contains(&age), "{age}");
    assert_eq!(m.get("hatchet_workflow_oldest_running_run_age_seconds", &wb), None);
    assert_eq!(m.get("hatchet_workflow_run_replays_total", &wa), Some(1.0));
    assert_eq!(m.get("hatchet_workflow_run_retries_total", &wa), Some(0.0));

    // Queue wait: createdAt (2026-08-22) to startedAt (now) for r1, r2, r3's replay and r3; 1.5 s for b1.
    let queue = |w: &[(&'static str, &'static str)], status, le| {
        m.get(
            "hatchet_workflow_run_queue_seconds_bucket",
            &with(w, &[("status", status), ("le", le)]),
        )
    };
    assert_eq!(queue(&wa, "COMPLETED", "86400"), Some(0.0));
    assert_eq!(queue(&wa, "COMPLETED", "+Inf"), Some(3.0));
    assert_eq!(queue(&wa, "FAILED", "+Inf"), Some(1.0));
    assert_eq!(queue(&wa, "CANCELLED", "+Inf"), Some(0.0), "never started");
    assert_eq!(queue(&wb, "FAILED", "1"), Some(0.0));
    assert_eq!(queue(&wb, "FAILED", "2.5"), Some(1.0));

    assert_eq!(
        m.get("hatchet_workflow_failure_ratio", &with(&wa, &[("window", "5m")])),
        Some(0.2)
    );
    assert_eq!(
        m.get("hatchet_workflow_failure_ratio", &with(&wa, &[("window", "1h")])),
        Some(0.2)
    );
    assert_eq!(
        m.get("hatchet_workflow_failure_ratio", &with(&wb, &[("window", "5m")])),
        Some(1.0)
    );

    assert_eq!(m.sum("hatchet_run_metrics_duplicate_outcomes_total", &[]), 3.0);
    for reason in [
        "invalid_json",
        "not_an_object",
        "missing_field",
        "invalid_field",
        "unknown_status",
        "empty",
        "too_large",
    ] {
        assert_eq!(
            m.get("hatchet_run_metrics_rejected_messages_total", &[("reason", reason)]),
            Some(1.0),
            "{reason}"
        );
    }
    assert_eq!(
        m.sum("hatchet_run_metrics_messages_consumed_total", &[("topic", &topic)]),
        messages.len() as f64
    );
    assert_eq!(m.get("hatchet_run_metrics_build_info", &[]), Some(1.0));
    assert!(
        m.get("hatchet_run_metrics_last_message_timestamp_seconds", &[])
            .unwrap()
            > now.timestamp() as f64 - 60.0
    );

    // Every message's offset is committed: bad ones included, so nothing stalls.
    let ends = end_offsets(&brokers, &topic, 3);
    service.wait_until("all offsets are committed", Duration::from_secs(30), || {
        committed_offsets(&brokers, &group, &topic, 3)
            .iter()
            .all(|(p, c)| ends[p] == 0 || *c == Some(ends[p]))
    });
    service.wait_until("ready", Duration::from_secs(20), || {
        service.get("/readyz").map(|(s, _)| s == 200).unwrap_or(false)
    });
    service.wait_until("lag is reported", Duration::from_secs(20), || {
        service
            .metrics()
            .sum("hatchet_run_metrics_consumer_lag_messages", &[("topic", &topic)])
            == 0.0
            && service
                .metrics()
                .get(
                    "hatchet_run_metrics_consumer_lag_messages",
                    &[("topic", &topic), ("partition", "0")],
                )
                .is_some()
    });

    let log = service.log_text();
    assert!(log.contains("rejected message"), "{log}");
    assert!(
        log.contains(&format!("topic={topic} partition=")) && log.contains("offset="),
        "{log}"
    );
    assert!(
        log.contains("reason=\"unknown_status\"") || log.contains("reason=unknown_status"),
        "{log}"
    );
}

/// `n` distinct runs of `wf`, each one COMPLETED update, keyed by run id.
fn completed_runs(prefix: &str, n: usize) -> Vec<Outgoing> {
    let end = Utc::now();
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let doc = run(
                &id,
                WF_A,
                "ingest-1787407391482",
                "COMPLETED",
                &ts(end - ChronoDuration::seconds(2)),
                &ts(end),
                2000,
            );
            Outgoing::json(&id, &doc)
        })
        .collect()
}

fn completed(m: &Metrics) -> f64 {
    m.sum(
        "hatchet_workflow_runs_total",
        &[("workflow", "ingest"), ("status", "COMPLETED")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_and_a_restart_resumes_where_it_stopped() {
    let brokers = shared_brokers();
    let topic = unique_name("e2e-resume");
    let group = unique_name("group");
    create_topic(&brokers, &topic, 2).await;
    // An interval far longer than the test: only the shutdown commit can commit.
    let config = config(&brokers, &topic, &group, "1h");
    let producer = producer(&brokers);

    let first = Service::start(&config);
    send_all(&producer, &topic, &completed_runs("first", 30)).await;
    let m = first.wait_for_consumed(30.0);
    assert_eq!(completed(&m), 30.0);
    let status = first.stop();
    assert!(status.success(), "{status:?}");
    let ends = end_offsets(&brokers, &topic, 2);
    let committed = committed_offsets(&brokers, &group, &topic, 2);
    for (p, end) in &ends {
        assert!(
            *end == 0 || committed[p] == Some(*end),
            "partition {p}: committed {:?}, end {end}",
            committed[p]
        );
    }

    let second = Service::start(&config);
    send_all(&producer, &topic, &completed_runs("second", 10)).await;
    let m = second.wait_for_consumed(10.0);
    std::thread::sleep(Duration::from_secs(2));
    let m2 = second.metrics();
    assert_eq!(
        completed(&m2),
        10.0,
        "the first 30 were committed, not read again: {m:?}"
    );
    assert_eq!(m2.sum("hatchet_run_metrics_messages_consumed_total", &[]), 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_of_a_group_share_the_partitions_without_double_counting() {
    let brokers = shared_brokers();
    let topic = unique_name("e2e-rebalance");
    let group = unique_name("group");
    create_topic(&brokers, &topic, 4).await;
    let config = config(&brokers, &topic, &group, "1h");
    let producer = producer(&brokers);

    let a = Service::start(&config);
    send_all(&producer, &topic, &completed_runs("before", 40)).await;
    a.wait_for_consumed(40.0);
    let b = Service::start(&config);
    b.wait_until("the second member gets partitions", Duration::from_secs(60), || {
        b.metrics()
            .get("hatchet_run_metrics_assigned_partitions", &[])
            .unwrap_or(0.0)
            > 0.0
            && a.metrics()
                .get("hatchet_run_metrics_assigned_partitions", &[])
                .unwrap_or(0.0)
                > 0.0
    });
    send_all(&producer, &topic, &completed_runs("after", 40)).await;
    b.wait_until("80 messages are consumed by the two", Duration::from_secs(60), || {
        let total = |s: &Service| s.metrics().sum("hatchet_run_metrics_messages_consumed_total", &[]);
        total(&a) + total(&b) >= 80.0
    });
    std::thread::sleep(Duration::from_secs(2));
    let (ma, mb) = (a.metrics(), b.metrics());
    assert_eq!(
        completed(&ma) + completed(&mb),
        80.0,
        "revoked partitions were committed before the handover"
    );
    assert!(completed(&mb) > 0.0, "the second member took part");
    assert_eq!(
        ma.get("hatchet_run_metrics_assigned_partitions", &[]).unwrap()
            + mb.get("hatchet_run_metrics_assigned_partitions", &[]).unwrap(),
        4.0
    );
    assert!(ma.sum("hatchet_run_metrics_rebalances_total", &[("kind", "revoke")]) >= 1.0);
}
