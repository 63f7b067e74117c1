//! The Grafana dashboard (`deploy/grafana/hatchet-run-metrics.json`) against the real stack: every
//! panel's query runs on Debian's Prometheus scraping the service fed by the real broker, and
//! returns data without an error. A panel that can never show anything is a defect.

mod common;

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use common::prometheus::PrometheusServer;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TENANT: &str = "707d0855-80ab-4e1f-a156-f1c4546cbf52";
const ZERO: &str = "0001-01-01T00:00:00Z";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An update of run `i` of workflow `w`.
fn update(w: usize, i: usize, status: &str, at: DateTime<Utc>, seconds: f64) -> Outgoing {
    let id = format!("4d5e6f70-0000-4000-8000-{:06}{i:06}", w);
    let started = at - ChronoDuration::milliseconds((seconds * 1000.0) as i64);
    let finished = matches!(status, "COMPLETED" | "FAILED" | "CANCELLED");
    Outgoing::json(
        &id,
        &json!({
            "metadata": {"id": id, "createdAt": ts(started), "updatedAt": ts(at)},
            "status": status, "tenantId": TENANT,
            "workflowId": format!("8a9b0c1d-2e3f-4a5b-8c6d-{w:012}"), "displayName": format!("flow{w}-1787407391482"),
            "createdAt": ts(started - ChronoDuration::milliseconds(300)),
            "startedAt": if status == "QUEUED" { ZERO.to_string() } else { ts(started) },
            "finishedAt": if finished { ts(at) } else { ZERO.to_string() },
            "duration": 0, "input": {}, "output": {}, "additionalMetadata": {}, "errorMessage": "",
        }),
    )
}

/// Every query of every panel, with Grafana's variables given values a query can run with.
fn panel_queries() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/hatchet-run-metrics.json")).expect("the dashboard is JSON");
    assert_eq!(
        dashboard["schemaVersion"].as_u64(),
        Some(39),
        "Grafana 10's dashboard schema"
    );
    let variables: Vec<&str> = (dashboard["templating"]["list"]
        .as_array()
        .expect("template variables")
        .iter())
    .filter_map(|v| v["name"].as_str())
    .collect();
    assert_eq!(variables, ["datasource", "tenant", "workflow"]);
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$__rate_interval", "30s")
                .replace("$tenant", ".*")
                .replace("$workflow", ".*");
            queries.push((panel["title"].as_str().unwrap_or_default().to_string(), expr));
        }
    }
    queries
}

#[test]
fn every_panel_shows_data_from_the_real_stack() {
    let queries = panel_queries();
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let brokers = shared_brokers();
    let topic = unique_name("dashboard");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(create_topic(&brokers, &topic, 2));
    // Two workflows of their own, a third past the cap (overflow), a failure-ratio threshold.
    let service = Service::start(&format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{}\"\nstatistics_interval = \"1s\"\n\
         [metrics]\nmax_workflows = 2\n\
         [thresholds]\nevaluation_interval = \"1s\"\n[thresholds.default.failure_ratio]\nmax = 0.1\nmin_outcomes = 5\n",
        unique_name("group")
    ));
    let prometheus = PrometheusServer::start(&format!("127.0.0.1:{}", service.port), &[], Duration::from_secs(1));
    let producer = producer(&brokers);
    // Twelve seconds of traffic: outcomes of every status, runs left running, retries, replays,
    // bad messages.
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(12) {
        let now = Utc::now();
        let mut batch = Vec::new();
        for w in 0..3 {
            for _ in 0..5 {
                i += 1;
                let status = ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED", "CANCELLED"][i % 5];
                batch.push(update(w, i, "QUEUED", now, 2.0));
                batch.push(update(w, i, "RUNNING", now, 1.0 + (i % 7) as f64));
                match i % 10 {
                    // Left running.
                    0 => {}
                    // A retry: back to QUEUED, then it finishes.
                    1 => {
                        batch.push(update(w, i, "QUEUED", now, 1.0));
                        batch.push(update(w, i, "RUNNING", now, 0.5));
                        batch.push(update(w, i, status, now, 0.5 + (i % 3) as f64));
                    }
                    // A replay: finished, then running again.
                    2 => {
                        batch.push(update(w, i, status, now, 1.5));
                        batch.push(update(w, i, "RUNNING", now + ChronoDuration::seconds(1), 0.1));
                    }
                    _ => batch.push(update(w, i, status, now, 1.0 + (i % 7) as f64)),
                }
            }
        }
        batch.push(Outgoing::raw(b"{not json"));
        runtime.block_on(send_all(&producer, &topic, &batch));
        std::thread::sleep(Duration::from_millis(500));
    }
    service.wait_until("Prometheus has scraped the traffic", Duration::from_secs(30), || {
        (prometheus.query("sum(hatchet_workflow_runs_total)").first()).is_some_and(|(_, v)| *v > 100.0)
    });
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        // `query` fails the test on an error; an empty answer is collected.
        let result = prometheus.query(expr);
        if result.is_empty() {
            empty.push(format!("{title}: {expr}"));
        }
    }
    assert!(empty.is_empty(), "panels without data:\n{}", empty.join("\n"));
    // The variables' values exist.
    assert!(!prometheus
        .query("count by (tenant_id, workflow) (hatchet_workflow_runs_total)")
        .is_empty());
}
