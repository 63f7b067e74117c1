//! A hostile producer, through the real broker: huge fields, control characters, absurd dates,
//! documents that are not runs. Nothing crashes, nothing stalls, every reject is counted by
//! reason, the exposition parses in `promtool` and in the Python `prometheus_client` parser, log
//! lines stay short, and the resident size stays under what `check-config` prints.

mod common;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const TENANT: &str = "707d0855-80ab-4e1f-a156-f1c4546cbf52";

/// The service's config: small caps, metadata labels on, so every hostile path is reached.
fn config(brokers: &str, topic: &str, group: &str) -> String {
    format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\nmax_message_bytes = 16777216\n\
         [kafka.properties]\n\"queued.max.messages.kbytes\" = \"32768\"\n\
         [metrics]\nmax_workflows = 200\nmetadata_labels = [\"customer\"]\nmetadata_label_max_values = 20\n\
         [outcomes]\nmax_remembered = 100000\n[runs]\nmax_tracked = 100000\n"
    )
}

fn now_text(offset_seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(offset_seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A valid finished run of workflow `workflow`, with `fields` replacing or adding top-level keys.
fn run(id: &str, workflow: &str, fields: Value) -> Value {
    let mut doc = json!({
        "metadata": {"id": id, "createdAt": now_text(-5), "updatedAt": now_text(-5)},
        "status": "COMPLETED", "tenantId": TENANT, "workflowId": workflow,
        "displayName": "hostile-1787407391482",
        "startedAt": now_text(-4), "finishedAt": now_text(-1), "createdAt": now_text(-5), "duration": 3000,
        "input": {}, "output": {}, "additionalMetadata": {"customer": "acme"}, "errorMessage": "",
    });
    for (k, v) in fields.as_object().expect("fields are an object") {
        doc[k] = v.clone();
    }
    doc
}

fn workflow_id(n: u32) -> String {
    format!("0b7e2d3c-4f1a-4c55-8d2e-{n:012x}")
}

/// Each message, and the reject reason it must be counted under (`None`: accepted).
fn hostile_stream() -> Vec<(Outgoing, Option<&'static str>)> {
    let big = |n: usize| "x".repeat(n);
    let raw = |text: String| Outgoing::raw(text.as_bytes());
    let mut stream: Vec<(Outgoing, Option<&'static str>)> = vec![
        // Accepted, but hostile in what they carry.
        (
            Outgoing::json(
                "a1",
                &run(
                    "a1",
                    &workflow_id(1),
                    json!({"displayName": format!("{}-1", big(1_000_000))}),
                ),
            ),
            None,
        ),
        (
            Outgoing::json(
                "a2",
                &run(
                    "a2",
                    &workflow_id(2),
                    json!({"displayName": "ctl\u{0}\r\n\u{2028}\u{85}name-1"}),
                ),
            ),
            None,
        ),
        (
            Outgoing::json(
                "a3",
                &run(
                    "a3",
                    &workflow_id(3),
                    json!({"additionalMetadata": {"customer": big(500_000)}}),
                ),
            ),
            None,
        ),
        (
            Outgoing::json(
                "a4",
                &run(
                    "a4",
                    &workflow_id(3),
                    json!({"additionalMetadata": {"customer": "evil\r\u{0}corp"}}),
                ),
            ),
            None,
        ),
        (
            Outgoing::json(
                "a5",
                &run("a5", &workflow_id(4), json!({"finishedAt": "9999-12-31T23:59:59Z"})),
            ),
            None,
        ),
        (
            Outgoing::json(
                "a6",
                &run("a6", &workflow_id(4), json!({"startedAt": "0000-01-01T00:00:00Z"})),
            ),
            None,
        ),
        (
            Outgoing::json(
                "a7",
                &run(
                    "a7",
                    &workflow_id(4),
                    json!({"startedAt": "1970-01-01T00:00:00Z", "status": "RUNNING"}),
                ),
            ),
            None,
        ),
        (
            Outgoing::json(
                "a8",
                &run("a8", &workflow_id(5), json!({"input": {"blob": big(2_000_000)}})),
            ),
            None,
        ),
        // Rejected, each for a reason, some of them huge.
        (
            Outgoing {
                key: Some("tomb".into()),
                payload: None,
            },
            Some("empty"),
        ),
        (raw(String::new()), Some("empty")),
        (raw(format!("{{\"pad\": \"{}\"}}", big(16_800_000))), Some("too_large")),
        (raw("not json at all".into()), Some("invalid_json")),
        (Outgoing::raw(b"{\"metadata\": \xff\xfe}"), Some("invalid_json")),
        (
            raw(format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000))),
            Some("invalid_json"),
        ),
        (raw("[1, 2, 3]".into()), Some("not_an_object")),
        (raw("\"a string\"".into()), Some("not_an_object")),
        (
            Outgoing::json("r1", &{
                let mut doc = run("r1", &workflow_id(6), json!({"input": {"blob": big(15_000_000)}}));
                doc.as_object_mut().expect("object").remove("status");
                doc
            }),
            Some("missing_field"),
        ),
        (
            Outgoing::json("r2", &run("r2", &workflow_id(6), json!({"tenantId": big(10_000_000)}))),
            Some("invalid_field"),
        ),
        (
            Outgoing::json("r3", &run("r3", &workflow_id(6), json!({"status": big(10_000_000)}))),
            Some("unknown_status"),
        ),
        (
            Outgoing::json("r4", &run("r4", &workflow_id(6), json!({"duration": 1e300}))),
            Some("invalid_field"),
        ),
        (
            Outgoing::json("r5", &run("r5", &workflow_id(6), json!({"startedAt": big(5_000_000)}))),
            Some("invalid_field"),
        ),
        (
            Outgoing::json("r6", &run("r6", &workflow_id(6), json!({"status": "PAUSED"}))),
            Some("unknown_status"),
        ),
    ];
    // A flood of workflow and tenant ids: beyond max_workflows they fold into overflow series.
    for i in 0..400u32 {
        let mut doc = run(
            &format!("f{i}"),
            &workflow_id(1000 + i),
            json!({"displayName": format!("flood-{i}-1")}),
        );
        if i % 2 == 0 {
            doc["tenantId"] = json!(format!("9d2e4f6a-1b3c-4d5e-9f70-{i:012x}"));
        }
        stream.push((Outgoing::json(&format!("f{i}"), &doc), None));
    }
    stream
}

fn big_message_producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "20000000")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("producer")
}

/// The page through the Python `prometheus_client` parser, read from a file as Python reads
/// text (universal newlines): the number of samples it found.
fn python_samples(page: &str) -> usize {
    let script = "import sys\nfrom prometheus_client.parser import text_fd_to_metric_families\n\
                  with open(sys.argv[1], encoding='utf-8') as f:\n    n = sum(len(m.samples) for m in text_fd_to_metric_families(f))\nprint(n)\n";
    let said = python_on_page(script, page.as_bytes(), "the Python parser");
    said.trim().parse().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_stream_is_counted_survived_and_bounded() {
    let brokers = shared_brokers();
    let topic = unique_name("hostile");
    let group = unique_name("group");
    create_topic_with(&brokers, &topic, 2, &[("max.message.bytes", "20000000")]).await;
    let config_text = config(&brokers, &topic, &group);
    let limit_mib = check_config_total_mib(&config_text);
    let service = Service::start(&config_text);

    let stream = hostile_stream();
    let mut expected: BTreeMap<&str, f64> = BTreeMap::new();
    for (_, reason) in &stream {
        if let Some(reason) = reason {
            *expected.entry(reason).or_default() += 1.0;
        }
    }
    let messages: Vec<Outgoing> = stream.into_iter().map(|(m, _)| m).collect();
    let total = messages.len() as f64;
    let producer = big_message_producer(&brokers);
    let mut peak = 0;
    for chunk in messages.chunks(8) {
        send_all(&producer, &topic, chunk).await;
        peak = peak.max(service.resident_bytes());
    }
    let m = service.wait_for_consumed(total);
    peak = peak.max(service.resident_bytes());

    // Nothing stalls: every message consumed, every offset committed.
    let ends = end_offsets(&brokers, &topic, 2);
    service.wait_until("every offset is committed", Duration::from_secs(30), || {
        committed_offsets(&brokers, &group, &topic, 2)
            .iter()
            .all(|(p, c)| ends[p] == 0 || *c == Some(ends[p]))
    });
    // Every reject counted by reason.
    for (reason, n) in &expected {
        assert_eq!(
            m.get("hatchet_run_metrics_rejected_messages_total", &[("reason", reason)]),
            Some(*n),
            "{reason}"
        );
    }
    assert_eq!(
        m.sum("hatchet_run_metrics_rejected_messages_total", &[]),
        expected.values().sum::<f64>()
    );
    // Absurd dates: counted, kept out of the durations.
    assert_eq!(
        m.get(
            "hatchet_run_metrics_implausible_values_total",
            &[("field", "finishedAt")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "hatchet_run_metrics_implausible_values_total",
            &[("field", "startedAt")]
        ),
        Some(2.0)
    );
    let sum = m.sum("hatchet_workflow_run_duration_seconds_sum", &[]);
    assert!(sum < 3600.0, "no millennia in the duration sums: {sum}");
    // Label values: cut and cleaned, counted.
    assert_eq!(
        m.get(
            "hatchet_run_metrics_label_values_altered_total",
            &[("label", "workflow"), ("why", "too_long")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "hatchet_run_metrics_label_values_altered_total",
            &[("label", "workflow"), ("why", "control_characters")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "hatchet_run_metrics_label_values_altered_total",
            &[("label", "customer"), ("why", "too_long")]
        ),
        Some(1.0)
    );
    assert!(m.sum("hatchet_run_metrics_overflow_updates_total", &[]) > 0.0);

    // The exposition parses everywhere, and no label value is long.
    let (status, page) = service.get("/metrics").expect("scrape");
    assert_eq!(status, 200);
    assert!(page.lines().all(|l| l.len() < 2_000), "a line of the page is too long");
    promtool_check_metrics(page.as_bytes());
    let samples = page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(
        python_samples(&page),
        samples,
        "Python parsed a different number of samples"
    );

    // The service lived through it, its logs are short, and it stayed within its estimate.
    let log = service.log_text();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 4_096,
        "a log line of {longest} bytes: input is quoted without a cap"
    );
    assert!(
        log.contains("rejected message") && log.contains(&format!("topic={topic}")),
        "{log}"
    );
    let peak_mib = peak as f64 / (1024.0 * 1024.0);
    println!("resident at most {peak_mib:.0} MiB during the stream; check-config printed {limit_mib:.0} MiB");
    assert!(
        peak_mib < limit_mib,
        "resident {peak_mib:.0} MiB is above the {limit_mib:.0} MiB check-config printed"
    );
    let mut service = service;
    assert!(service.is_running());
    assert!(service.stop().success());
}
