//! `/metrics` in each format it negotiates, through a real broker, read back by each format's
//! own parser: Prometheus's `promtool` for the text format, the Python client's OpenMetrics
//! parser, and Debian's real Prometheus server scraping protobuf with native histograms on,
//! whose `histogram_quantile` over two replicas is checked against the exact quantile.

mod common;

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use common::prometheus::PrometheusServer;
use common::*;
use hatchet_run_metrics::exporter::protobuf::MetricFamily;
use prost::Message;
use serde_json::json;
use std::io::Read;
use std::time::Duration;

const TENANT: &str = "707d0855-80ab-4e1f-a156-f1c4546cbf52";
const WF: &str = "6d1f0e2a-3b4c-4d5e-8f60-718293a4b5c6";

const OPENMETRICS: &str = "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
const PROTOBUF: &str =
    "Accept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A finished run of `seconds` (to the millisecond).
fn finished(i: usize, seconds: f64, status: &str, at: DateTime<Utc>) -> Outgoing {
    let id = format!("7c2d3e4f-0000-4000-8000-{i:012}");
    let started = at - ChronoDuration::milliseconds((seconds * 1000.0).round() as i64);
    Outgoing::json(
        &id,
        &json!({
            "metadata": {"id": id, "createdAt": ts(started), "updatedAt": ts(at)},
            "status": status, "tenantId": TENANT, "workflowId": WF, "displayName": "render-\"quoted\"-1787407391482",
            "workflowVersionId": "c4d1e8f2-93b0-4a6e-b1d7-2f5e8a0c9d13",
            "createdAt": ts(started - ChronoDuration::milliseconds(250)), "startedAt": ts(started), "finishedAt": ts(at),
            "duration": 0, "input": {}, "output": {}, "additionalMetadata": {}, "errorMessage": "",
        }),
    )
}

fn config(brokers: &str, topic: &str, group: &str) -> String {
    format!("[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\nstatistics_interval = \"1s\"\n")
}

/// `(name, labels, value)` of every sample, as the Python client's OpenMetrics parser reads `page`.
fn openmetrics_samples(page: &[u8]) -> Vec<String> {
    let script = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
                  text = open(sys.argv[1], encoding='utf-8').read()\n\
                  for f in text_string_to_metric_families(text):\n    for s in f.samples:\n        print(s.name, sorted(s.labels.items()), s.value, 'exemplar', s.exemplar and dict(s.exemplar.labels))\n";
    (python_on_page(script, page, "the OpenMetrics parser").lines())
        .map(str::to_string)
        .collect()
}

#[test]
fn each_format_is_negotiated_and_reads_back_in_its_own_parser() {
    let brokers = shared_brokers();
    let topic = unique_name("formats");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(create_topic(&brokers, &topic, 2));
    let service = Service::start(&config(&brokers, &topic, &unique_name("group")));
    let now = Utc::now();
    let messages: Vec<Outgoing> = (0..40)
        .map(|i| {
            finished(
                i,
                1.0 + i as f64 / 10.0,
                if i % 5 == 0 { "FAILED" } else { "COMPLETED" },
                now,
            )
        })
        .collect();
    runtime.block_on(send_all(&producer(&brokers), &topic, &messages));
    service.wait_for_consumed(40.0);
    let get = |path: &str, headers: &[&str]| {
        let (status, headers, body) = http_get_with(service.port, path, headers).expect("scrape");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        (headers, body)
    };

    // Nothing asked for: the text format 0.0.4, which promtool accepts.
    let (headers, text) = get("/metrics", &[]);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    promtool_check_metrics(&text);
    let text = Metrics::parse(&String::from_utf8_lossy(&text));
    assert_eq!(text.sum("hatchet_workflow_runs_total", &[]), 40.0);

    // OpenMetrics, read by the Python client's parser: the same counts, `# EOF` at the end.
    let (headers, page) = get("/metrics", &[OPENMETRICS]);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(page.ends_with(b"# EOF\n"));
    let samples = openmetrics_samples(&page);
    let completed = samples
        .iter()
        .find(|s| s.starts_with("hatchet_workflow_runs_total ") && s.contains("'COMPLETED'"))
        .unwrap_or_else(|| panic!("no COMPLETED counter in {samples:#?}"));
    assert!(
        completed.contains(" 32 exemplar ") || completed.contains(" 32.0 exemplar "),
        "{completed}"
    );
    // Duration buckets carry the run id of their latest observation.
    let exemplars: Vec<&String> = (samples.iter())
        .filter(|s| {
            s.starts_with("hatchet_workflow_run_duration_seconds_bucket ") && s.contains("'run_id': '7c2d3e4f-")
        })
        .collect();
    assert!(!exemplars.is_empty(), "no exemplar in {samples:#?}");
    // Counters and histograms say when they started from zero.
    assert!(
        samples.iter().any(|s| s.starts_with("hatchet_workflow_runs_created ")),
        "{samples:#?}"
    );
    assert!(samples
        .iter()
        .any(|s| s.starts_with("hatchet_workflow_run_duration_seconds_created ")));
    assert!(samples
        .iter()
        .any(|s| s.starts_with("hatchet_run_metrics_messages_consumed_total ")));

    // Protobuf: length-delimited families, the duration histogram with native buckets that hold
    // every observation, and its classic buckets beside them.
    let (headers, page) = get("/metrics", &[PROTOBUF]);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited")
    );
    let mut families = Vec::new();
    let mut rest = &page[..];
    while !rest.is_empty() {
        families.push(MetricFamily::decode_length_delimited(&mut rest).expect("a MetricFamily"));
    }
    let duration = (families.iter())
        .find(|f| f.name == "hatchet_workflow_run_duration_seconds")
        .expect("the duration histogram");
    let completed = (duration.metric.iter())
        .find(|m| m.label.iter().any(|l| l.value == "COMPLETED"))
        .and_then(|m| m.histogram.as_ref())
        .expect("the COMPLETED histogram");
    assert_eq!(completed.sample_count, 32);
    assert_eq!(completed.schema, 7);
    // Each delta is a bucket's count less the previous bucket's: the counts add up to all.
    let mut count = 0i64;
    let mut total = 0i64;
    for delta in &completed.positive_delta {
        count += delta;
        assert!(count > 0, "a bucket in a span holds something");
        total += count;
    }
    assert_eq!(total + completed.zero_count as i64, 32);
    assert_eq!(completed.bucket.len(), 22, "classic buckets beside the native ones");
    assert!(families
        .iter()
        .any(|f| f.name == "hatchet_run_metrics_messages_consumed_total"));

    // gzip: one member holding the whole answer, several times smaller.
    let (headers, zipped) = get("/metrics", &["Accept-Encoding: gzip"]);
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert!(
        zipped.len() * 4 < unzipped.len(),
        "{} of {}",
        zipped.len(),
        unzipped.len()
    );
    promtool_check_metrics(&unzipped);

    // Filtered: only the families asked for.
    let (_, page) = get(
        "/metrics?name[]=hatchet_workflow_runs_total&name%5B%5D=hatchet_run_metrics_build_info",
        &[],
    );
    let page = String::from_utf8_lossy(&page);
    let families: Vec<&str> = page.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
    assert_eq!(
        families,
        [
            "hatchet_workflow_runs_total counter",
            "hatchet_run_metrics_build_info gauge"
        ],
        "{page}"
    );
}

#[test]
fn prometheus_stores_native_histograms_whose_quantiles_sum_exactly_across_replicas() {
    let brokers = shared_brokers();
    let topic = unique_name("native");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(create_topic(&brokers, &topic, 4));
    let group = unique_name("group");
    let (a, b) = (
        Service::start(&config(&brokers, &topic, &group)),
        Service::start(&config(&brokers, &topic, &group)),
    );
    for member in [&a, &b] {
        member.wait_until("it holds partitions", Duration::from_secs(60), || {
            member.metrics().sum("hatchet_run_metrics_assigned_partitions", &[]) > 0.0
        });
    }
    // 3,000 durations spread over two and a half octaves, keyed by run: both replicas count some.
    let now = Utc::now();
    let durations: Vec<f64> = (0..3000)
        .map(|i| 1.5 * (1.0 + (i * 7919 % 3000) as f64 / 600.0))
        .collect();
    let messages: Vec<Outgoing> = (durations.iter().enumerate())
        .map(|(i, d)| finished(i, *d, "COMPLETED", now))
        .collect();
    runtime.block_on(send_all(&producer(&brokers), &topic, &messages));
    a.wait_until("both replicas counted everything", Duration::from_secs(60), || {
        let counted = |m: &Service| m.metrics().sum("hatchet_workflow_runs_total", &[]);
        counted(&a) + counted(&b) == 3000.0
    });
    assert!(a.metrics().sum("hatchet_workflow_runs_total", &[]) > 0.0);
    assert!(b.metrics().sum("hatchet_workflow_runs_total", &[]) > 0.0);

    let targets = [format!("127.0.0.1:{}", a.port), format!("127.0.0.1:{}", b.port)];
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let prometheus = PrometheusServer::start_with(&targets, &[], Duration::from_secs(1), &["native-histograms"]);
    let selector = "hatchet_workflow_run_duration_seconds{status=\"COMPLETED\"}";
    a.wait_until(
        "Prometheus holds both replicas' native histograms",
        Duration::from_secs(60),
        || {
            let count = prometheus.query(&format!("histogram_count(sum({selector}))"));
            count.first().is_some_and(|(_, v)| *v == 3000.0)
        },
    );
    assert!(
        prometheus
            .query("hatchet_workflow_run_duration_seconds_bucket")
            .is_empty(),
        "stored as native histograms, not as classic bucket series"
    );
    let mut sorted: Vec<f64> = durations.iter().map(|d| (d * 1000.0).round() / 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    for q in [0.5, 0.9, 0.99] {
        let exact = sorted[((q * sorted.len() as f64).ceil() as usize).saturating_sub(1)];
        let got = prometheus.query(&format!("histogram_quantile({q}, sum({selector}))"));
        let got = got.first().map(|(_, v)| *v).expect("a quantile");
        let error = (got - exact).abs() / exact;
        assert!(
            error < 0.01,
            "q{q}: Prometheus says {got}, exactly {exact} ({:.3}% off)",
            error * 100.0
        );
    }
}

#[test]
fn prometheus_with_exemplar_storage_returns_the_run_ids() {
    let brokers = shared_brokers();
    let topic = unique_name("exemplars");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(create_topic(&brokers, &topic, 1));
    let service = Service::start(&config(&brokers, &topic, &unique_name("group")));
    let now = Utc::now();
    let messages: Vec<Outgoing> = (0..20)
        .map(|i| finished(i, 0.5 * (i + 1) as f64, "COMPLETED", now))
        .collect();
    runtime.block_on(send_all(&producer(&brokers), &topic, &messages));
    service.wait_for_consumed(20.0);
    let prometheus = PrometheusServer::start_with(
        &[&format!("127.0.0.1:{}", service.port)],
        &[],
        Duration::from_secs(1),
        &["exemplar-storage"],
    );
    let mut exemplars = Vec::new();
    service.wait_until("Prometheus returns exemplars", Duration::from_secs(60), || {
        exemplars = prometheus.exemplars("hatchet_workflow_run_duration_seconds_bucket");
        !exemplars.is_empty()
    });
    let produced: Vec<String> = (0..20).map(|i| format!("7c2d3e4f-0000-4000-8000-{i:012}")).collect();
    for labels in &exemplars {
        let run = labels
            .get("run_id")
            .unwrap_or_else(|| panic!("no run_id in {labels:?}"));
        assert!(produced.contains(run), "{run} was not produced");
    }
}
