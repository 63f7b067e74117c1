//! Thresholds end to end: updates through a real Kafka broker, the sidecar's own breach gauge, and
//! the rules `hatchet-run-metrics rules` writes, loaded into a real Prometheus that scrapes it.

mod common;

use chrono::{Duration as ChronoDuration, SecondsFormat, Utc};
use common::prometheus::PrometheusServer;
use common::*;
use serde_json::json;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TENANT: &str = "707d0855-80ab-4e1f-a156-f1c4546cbf52";
const WORKFLOW_ID: &str = "0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77";

/// A finished run of workflow `payments`, finishing now.
fn outcome(id: u64, failed: bool) -> Outgoing {
    let now = Utc::now();
    let ts = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let doc = json!({
        "metadata": {"id": format!("run-{id}"), "createdAt": ts(now), "updatedAt": ts(now)},
        "status": if failed { "FAILED" } else { "COMPLETED" },
        "tenantId": TENANT, "workflowId": WORKFLOW_ID, "displayName": format!("payments-{id}"),
        "startedAt": ts(now - ChronoDuration::milliseconds(800)), "finishedAt": ts(now),
        "createdAt": ts(now - ChronoDuration::milliseconds(900)), "duration": 800,
        "input": {}, "output": {}, "additionalMetadata": {}, "errorMessage": "",
    });
    Outgoing::json(&format!("run-{id}"), &doc)
}

/// Sends ten outcomes a second until stopped; `failed_percent` of them FAILED.
struct Traffic {
    failed_percent: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(brokers: &str, topic: &str) -> Traffic {
        let failed_percent = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (brokers, topic) = (brokers.to_string(), topic.to_string());
        let (percent, halt) = (failed_percent.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let producer = producer(&brokers);
                let mut n: u64 = 0;
                while !halt.load(Ordering::Relaxed) {
                    let failed = (n % 10) < u64::from(percent.load(Ordering::Relaxed) / 10);
                    send_all(&producer, &topic, &[outcome(n, failed)]).await;
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        });
        Traffic {
            failed_percent,
            stop,
            thread: Some(thread),
        }
    }

    fn fail(&self, percent: u32) {
        self.failed_percent.store(percent, Ordering::Relaxed);
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const BREACHED: &str = "hatchet_workflow_threshold_breached";

fn payments(threshold: &str) -> [(&str, &str); 3] {
    [
        ("tenant_id", TENANT),
        ("workflow", "payments"),
        ("threshold", threshold),
    ]
}

/// Writes the alerting rules for the service's config with the CLI.
fn generate_rules(service: &Service) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.yml", unique_name("hrm-rules")));
    let output = Command::new(env!("CARGO_BIN_EXE_hatchet-run-metrics"))
        .arg("--config")
        .arg(service.config_path())
        .args(["rules", "--output"])
        .arg(&path)
        .output()
        .expect("rules runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    path
}

/// Prometheus's state of the failure-ratio alert for `payments`: `None`, pending or firing.
fn alert_state(prometheus: &PrometheusServer) -> Option<String> {
    let alerts: Vec<_> = (prometheus.alerts().into_iter())
        .filter(|a| a.name == "HatchetWorkflowFailureRatioHigh")
        .collect();
    assert!(
        alerts.len() <= 1,
        "one alert per workflow, not one per rule or instance: {alerts:?}"
    );
    let alert = alerts.into_iter().next()?;
    assert_eq!(alert.labels.get("workflow").map(String::as_str), Some("payments"));
    assert_eq!(alert.labels.get("tenant_id").map(String::as_str), Some(TENANT));
    assert_eq!(alert.labels.get("severity").map(String::as_str), Some("critical"));
    assert_eq!(alert.labels.get("threshold").map(String::as_str), Some("failure_ratio"));
    assert_eq!(alert.labels.get("threshold_rule").map(String::as_str), Some("default"));
    Some(alert.state)
}

/// One second of the timeline: what Prometheus and the sidecar said.
#[derive(Debug)]
struct Moment {
    /// Seconds since the traffic started; read in the timeline printed on failure.
    #[allow(dead_code)]
    at: f64,
    prometheus: Option<String>,
    sidecar: Option<f64>,
    observed: Option<f64>,
}

#[test]
fn a_failing_workflow_fires_in_prometheus_and_the_breach_gauge_agrees() {
    let brokers = shared_brokers();
    let topic = unique_name("thresholds-e2e");
    let group = unique_name("group");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(create_topic(&brokers, &topic, 3));
    let service = Service::start(&format!(
        r#"
[kafka]
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{group}"
commit_interval = "1s"

[metrics]
duration_buckets_seconds = [1.0, 10.0]
failure_ratio_windows = ["20s"]

[thresholds]
evaluation_interval = "1s"

[thresholds.default.failure_ratio]
max = 0.3
window = "20s"
min_outcomes = 5
for = "5s"
severity = "critical"
"#
    ));
    let rules = generate_rules(&service);
    let prometheus = PrometheusServer::start(&format!("127.0.0.1:{}", service.port), &[rules], Duration::from_secs(1));
    let traffic = Traffic::start(&brokers, &topic);
    let started = Instant::now();
    let mut timeline: Vec<Moment> = Vec::new();
    let sample = |timeline: &mut Vec<Moment>| {
        let metrics = service.metrics();
        let moment = Moment {
            at: started.elapsed().as_secs_f64(),
            prometheus: alert_state(&prometheus),
            sidecar: metrics.get(BREACHED, &payments("failure_ratio")),
            observed: metrics.get("hatchet_workflow_threshold_observed", &payments("failure_ratio")),
        };
        timeline.push(moment);
        std::thread::sleep(Duration::from_millis(500));
    };
    let wait = |timeline: &mut Vec<Moment>, what: &str, limit: Duration, done: &dyn Fn(&Moment) -> bool| {
        let since = Instant::now();
        loop {
            sample(timeline);
            if timeline.last().is_some_and(done) {
                return;
            }
            assert!(
                since.elapsed() < limit,
                "timed out waiting until {what}; timeline: {timeline:#?}\nservice log:\n{}\nprometheus log:\n{}",
                service.log_text(),
                prometheus.log_text()
            );
        }
    };

    // Healthy: Prometheus scrapes the sidecar and the rule evaluates; nothing alerts, and the
    // sidecar evaluates the workflow (its gauge exists) without a breach.
    wait(
        &mut timeline,
        "Prometheus has scraped the sidecar",
        Duration::from_secs(60),
        &|_| prometheus.target_up(),
    );
    wait(
        &mut timeline,
        "Prometheus sees the workflow's outcomes",
        Duration::from_secs(60),
        &|_| {
            !prometheus
                .query("sum(hatchet_workflow_runs_total{workflow=\"payments\"}) > 20")
                .is_empty()
        },
    );
    for _ in 0..10 {
        sample(&mut timeline);
    }
    let healthy = &timeline[timeline.len() - 10..];
    assert!(
        healthy
            .iter()
            .all(|m| m.prometheus.is_none() && m.sidecar == Some(0.0) && m.observed == Some(0.0)),
        "healthy traffic must not alert: {timeline:#?}"
    );

    // Failing: 60% of the outcomes fail. Prometheus goes pending, then firing after `for`; the
    // sidecar's gauge goes to 1 with it.
    traffic.fail(60);
    let failing_from = timeline.len();
    wait(&mut timeline, "the alert fires", Duration::from_secs(90), &|m| {
        m.prometheus.as_deref() == Some("firing")
    });
    let pending = timeline[failing_from..]
        .iter()
        .position(|m| m.prometheus.as_deref() == Some("pending"));
    let firing = timeline.len() - 1 - failing_from;
    assert!(
        pending.is_some_and(|p| p < firing),
        "pending must come before firing: {timeline:#?}"
    );
    wait(
        &mut timeline,
        "the sidecar's gauge shows the breach",
        Duration::from_secs(10),
        &|m| m.sidecar == Some(1.0),
    );
    let observed = timeline.last().and_then(|m| m.observed).unwrap_or_default();
    assert!(observed > 0.3, "observed {observed}: {timeline:#?}");
    let limit = service
        .metrics()
        .get("hatchet_workflow_threshold_limit", &payments("failure_ratio"));
    assert_eq!(limit, Some(0.3));

    // Healthy again: the window empties of failures, the alert resolves, the gauge goes back to 0.
    traffic.fail(0);
    let resolving_from = timeline.len();
    wait(&mut timeline, "the alert resolves", Duration::from_secs(90), &|m| {
        m.prometheus.is_none()
    });
    wait(
        &mut timeline,
        "the sidecar's gauge clears",
        Duration::from_secs(10),
        &|m| m.sidecar == Some(0.0),
    );
    for _ in 0..6 {
        sample(&mut timeline);
    }
    let settled = &timeline[timeline.len() - 6..];
    assert!(
        settled.iter().all(|m| m.prometheus.is_none() && m.sidecar == Some(0.0)),
        "resolved must stay resolved: {timeline:#?}"
    );

    // Throughout, the two agree except while one of them is crossing over: Prometheus's rate over
    // scrapes and the sidecar's event-time window may cross a few seconds apart.
    let disagreements: Vec<&Moment> = (timeline.iter())
        .filter(|m| (m.prometheus.as_deref() == Some("firing")) != (m.sidecar == Some(1.0)))
        .collect();
    assert!(
        disagreements.len() <= 12,
        "Prometheus and the sidecar disagreed for {} half-second samples (at most 6 s): {timeline:#?}",
        disagreements.len()
    );
    assert!(timeline[resolving_from..]
        .iter()
        .any(|m| m.sidecar == Some(1.0) || m.prometheus.is_some()));

    // Each transition was logged once, with the numbers.
    let log = service.log_text();
    assert_eq!(log.matches("threshold breached").count(), 1, "{log}");
    assert_eq!(log.matches("threshold no longer breached").count(), 1, "{log}");
    let breach_line = log
        .lines()
        .find(|l| l.contains("threshold breached"))
        .unwrap_or_default();
    assert!(
        breach_line.contains("workflow=payments")
            && breach_line.contains("limit=0.3")
            && breach_line.contains("observed="),
        "{breach_line}"
    );
    let metrics = service.metrics();
    assert_eq!(
        metrics.get(
            "hatchet_run_metrics_threshold_transitions_total",
            &[("threshold", "failure_ratio"), ("to", "breached")]
        ),
        Some(1.0)
    );
    drop(traffic);
}

/// Rewrites the service's config with `thresholds` in place of the old `[thresholds]` section.
fn rewrite_thresholds(service: &Service, base: &str, thresholds: &str) {
    let text = std::fs::read_to_string(service.config_path()).unwrap();
    let http = text.find("\n[http]").map_or("", |at| &text[at..]);
    std::fs::write(service.config_path(), format!("{base}\n{thresholds}{http}\n")).unwrap();
}

#[test]
fn thresholds_reload_on_file_change_and_sighup_and_an_invalid_edit_is_refused() {
    let brokers = shared_brokers();
    let topic = unique_name("thresholds-reload");
    let group = unique_name("group");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(create_topic(&brokers, &topic, 1));
    let base = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\n[metrics]\nfailure_ratio_windows = [\"1h\"]\n"
    );
    let lenient = "[thresholds]\nevaluation_interval = \"500ms\"\n[thresholds.default.failure_ratio]\nmax = 0.9\nmin_outcomes = 1\n";
    let service = Service::start(&format!("{base}\n{lenient}"));
    // Half of ten outcomes fail: under 0.9, over 0.1.
    let messages: Vec<Outgoing> = (0..10).map(|i| outcome(i, i % 2 == 0)).collect();
    runtime.block_on(send_all(&producer(&brokers), &topic, &messages));
    service.wait_for_consumed(10.0);
    let gauge = |name: &str| service.metrics().get(name, &payments("failure_ratio"));
    service.wait_until("the workflow is evaluated", Duration::from_secs(20), || {
        gauge("hatchet_workflow_threshold_observed") == Some(0.5)
    });
    assert_eq!(gauge(BREACHED), Some(0.0));
    assert_eq!(gauge("hatchet_workflow_threshold_limit"), Some(0.9));
    let reloads = |result: &str| {
        (service.metrics())
            .get("hatchet_run_metrics_config_reloads_total", &[("result", result)])
            .unwrap_or_default()
    };
    let successful = || (service.metrics()).get("hatchet_run_metrics_config_last_reload_successful", &[]);
    assert_eq!(successful(), Some(1.0), "the start counts as a successful load");
    let loaded_at = (service.metrics()).get("hatchet_run_metrics_config_last_reload_success_timestamp_seconds", &[]);

    // An edit applies without a restart.
    std::thread::sleep(Duration::from_millis(1100)); // a later timestamp, in whole seconds or not
    rewrite_thresholds(
        &service,
        &base,
        "[thresholds]\nevaluation_interval = \"500ms\"\n[thresholds.default.failure_ratio]\nmax = 0.1\nmin_outcomes = 1\n",
    );
    service.wait_until("the edit applies", Duration::from_secs(15), || {
        gauge(BREACHED) == Some(1.0)
    });
    assert_eq!(gauge("hatchet_workflow_threshold_limit"), Some(0.1));
    assert_eq!(successful(), Some(1.0));
    assert_eq!(reloads("ok"), 1.0);
    let reloaded_at = (service.metrics()).get("hatchet_run_metrics_config_last_reload_success_timestamp_seconds", &[]);
    assert!(reloaded_at > loaded_at, "{reloaded_at:?} after {loaded_at:?}");

    // An invalid edit is refused: the thresholds in force stay, the error names file, key and why.
    rewrite_thresholds(
        &service,
        &base,
        "[thresholds]\n[thresholds.default.failure_ratio]\nmax = 1.5\n",
    );
    service.wait_until("the bad edit is refused", Duration::from_secs(15), || {
        successful() == Some(0.0)
    });
    assert_eq!(reloads("failed"), 1.0);
    assert_eq!(gauge("hatchet_workflow_threshold_limit"), Some(0.1));
    assert_eq!(gauge(BREACHED), Some(1.0));
    let log = service.log_text();
    let refusal = log
        .lines()
        .find(|l| l.contains("config reload refused"))
        .unwrap_or_default();
    let file_name = service.config_path().file_name().unwrap().to_string_lossy().to_string();
    assert!(
        refusal.contains(&file_name)
            && refusal.contains("thresholds.default.failure_ratio.max")
            && refusal.contains("between 0 and 1"),
        "{refusal}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        reloads("failed"),
        1.0,
        "a refused edit is reported once, not on every look"
    );

    // Fixed, and applied on SIGHUP too (a SIGHUP reloads even an unchanged file).
    rewrite_thresholds(&service, &base, lenient);
    service.wait_until("the fix applies", Duration::from_secs(15), || successful() == Some(1.0));
    service.wait_until("the breach ends", Duration::from_secs(15), || {
        gauge(BREACHED) == Some(0.0)
    });
    let before = reloads("ok");
    service.hangup();
    service.wait_until("SIGHUP reloads", Duration::from_secs(15), || {
        reloads("ok") == before + 1.0
    });
    let log = service.log_text();
    assert!(
        log.contains("trigger=\"SIGHUP\"") || log.contains("trigger=SIGHUP"),
        "{log}"
    );
    assert_eq!(log.matches("threshold breached").count(), 1, "{log}");
}
