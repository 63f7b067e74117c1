//! The broker is down when the service starts, then restarts under it mid-stream: nothing is
//! lost, nothing crashes, readiness follows the broker.

mod common;

use chrono::{Duration as ChronoDuration, SecondsFormat, Utc};
use common::*;
use serde_json::json;
use std::time::Duration;

/// A broker of this test's own, so that stopping it disturbs no other test.
const PORT: u16 = 19092;

struct OwnBroker;

impl Drop for OwnBroker {
    fn drop(&mut self) {
        kafka_script(PORT, &["stop"], &[]);
    }
}

fn batch(prefix: &str, n: usize) -> Vec<Outgoing> {
    let end = Utc::now();
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let doc = json!({
                "metadata": {"id": id, "createdAt": "2026-08-22T14:00:00Z", "updatedAt": "2026-08-22T14:00:00Z"},
                "status": if i % 4 == 0 { "FAILED" } else { "COMPLETED" },
                "tenantId": "707d0855-80ab-4e1f-a156-f1c4546cbf52",
                "workflowId": "0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77", "displayName": "restartable-1787407391482",
                "startedAt": (end - ChronoDuration::seconds(1)).to_rfc3339_opts(SecondsFormat::AutoSi, true),
                "finishedAt": end.to_rfc3339_opts(SecondsFormat::AutoSi, true), "duration": 1000,
            });
            Outgoing::json(&id, &doc)
        })
        .collect()
}

fn ready(service: &Service) -> bool {
    service.get("/readyz").map(|(s, _)| s == 200).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_and_restarted_mid_stream_loses_nothing() {
    let brokers = format!("127.0.0.1:{PORT}");
    kafka_script(PORT, &["stop"], &[]);
    let topic = unique_name("restart");
    let group = unique_name("group");
    let config = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\ncommit_interval = \"1s\"\nstatistics_interval = \"1s\"\n"
    );

    // The service starts before its broker exists: alive, not ready.
    let mut service = Service::start(&config);
    std::thread::sleep(Duration::from_secs(2));
    assert!(service.is_running());
    let (status, body) = service.get("/readyz").unwrap();
    assert_eq!(status, 503, "{body}");

    kafka_script(PORT, &["start"], &[]);
    let _broker = OwnBroker;
    create_topic(&brokers, &topic, 2).await;
    send_all(&producer(&brokers), &topic, &batch("before", 60)).await;
    let m = service.wait_for_consumed(60.0);
    assert_eq!(m.sum("hatchet_workflow_runs_total", &[]), 60.0);
    service.wait_until("ready", Duration::from_secs(30), || ready(&service));

    // Restart the broker under the running service while updates keep coming: some are consumed
    // but not yet committed when it stops, some wait in the producer until it is back.
    let paced = {
        let (producer, topic) = (producer(&brokers), topic.clone());
        tokio::spawn(async move {
            for message in batch("during", 150) {
                send_all(&producer, &topic, &[message]).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    kafka_script(PORT, &["stop"], &[]);
    service.wait_until("not ready while the broker is down", Duration::from_secs(60), || {
        !ready(&service)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(service.is_running(), "survives the broker going away");
    kafka_script(PORT, &["start"], &[("KAFKA_KEEP_DATA", "1")]);
    paced.await.expect("paced producer");

    send_all(&producer(&brokers), &topic, &batch("after", 40)).await;
    let m = service.wait_for_consumed(250.0);
    std::thread::sleep(Duration::from_secs(2));
    let m2 = service.metrics();
    assert_eq!(
        m2.sum("hatchet_run_metrics_messages_consumed_total", &[]),
        250.0,
        "{m:?}"
    );
    // batch(): every fourth run FAILED; 60 + 150 + 40 runs.
    assert_eq!(
        m2.sum("hatchet_workflow_runs_total", &[("status", "FAILED")]),
        15.0 + 38.0 + 10.0
    );
    assert_eq!(
        m2.sum("hatchet_workflow_runs_total", &[("status", "COMPLETED")]),
        45.0 + 112.0 + 30.0
    );
    assert_eq!(m2.sum("hatchet_run_metrics_duplicate_outcomes_total", &[]), 0.0);
    service.wait_until("ready again", Duration::from_secs(60), || ready(&service));
    assert!(
        m2.sum("hatchet_run_metrics_kafka_errors_total", &[]) >= 1.0,
        "the outage was counted"
    );

    // Everything processed is committed once the broker is back.
    let ends = end_offsets(&brokers, &topic, 2);
    service.wait_until("all offsets are committed", Duration::from_secs(30), || {
        committed_offsets(&brokers, &group, &topic, 2)
            .iter()
            .all(|(p, c)| ends[p] == 0 || *c == Some(ends[p]))
    });
    assert!(service.stop().success());
}
