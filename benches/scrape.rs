//! A `/metrics` scrape with 10,000 workflows: `cargo bench --bench scrape`.
//!
//! `snapshot` is the part that holds the aggregation's lock (consumption waits meanwhile);
//! `snapshot_and_render` is the whole exposition of the workflow metrics in the text format 0.0.4,
//! `render_openmetrics` and `render_protobuf` the same in the other formats (protobuf with native
//! and classic histogram buckets), and `*_gzip` each with the compression a gzip scrape adds. The
//! bytes each puts on the wire are printed first.
//!
//! `thresholds_*` is one evaluation of four kinds of threshold (and 20 glob overrides) over the same
//! workflows: `observe` holds the aggregation's lock, `update` moves the states after it; `cold`
//! resolves every workflow's rules first, as after a start or a reload.

use criterion::{criterion_group, criterion_main, Criterion};
use hatchet_run_metrics::aggregate::{Aggregator, Clock};
use hatchet_run_metrics::config::Config;
use hatchet_run_metrics::decode::decode;
use hatchet_run_metrics::exporter::format::Format;
use hatchet_run_metrics::exporter::gzip;
use hatchet_run_metrics::exporter::protobuf::ProtobufWriter;
use hatchet_run_metrics::exporter::text::TextWriter;
use hatchet_run_metrics::exporter::{Snapshot, WindowEnd};
use hatchet_run_metrics::ids::Partition;
use hatchet_run_metrics::thresholds::evaluate::ThresholdEvaluator;
use hatchet_run_metrics::thresholds::Thresholds;
use serde_json::json;
use std::hint::black_box;

const WORKFLOWS: usize = 10_000;

fn aggregator() -> Aggregator {
    let mut agg = Aggregator::new(Config::default().aggregate_settings(), Clock::Wall);
    let now = chrono::DateTime::parse_from_rfc3339("2026-08-22T15:00:00Z")
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap();
    for i in 0..WORKFLOWS * 5 {
        let w = i % WORKFLOWS;
        let status = ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED", "CANCELLED"][i / WORKFLOWS];
        let doc = json!({
            "metadata": {"id": format!("5f0a9c6e-2a51-4b8e-9a57-{i:012x}"), "createdAt": "2026-08-22T14:00:00Z", "updatedAt": "2026-08-22T14:00:00Z"},
            "status": status, "tenantId": "707d0855-80ab-4e1f-a156-f1c4546cbf52",
            "workflowId": format!("0b7e2d3c-4f1a-4c55-8d2e-{w:012x}"), "displayName": format!("workflow-{w}-1787407391482"),
            "createdAt": "2026-08-22T14:00:00Z", "startedAt": "2026-08-22T14:00:01Z",
            "finishedAt": format!("2026-08-22T14:{:02}:{:02}Z", 1 + i % 58, i % 60),
        });
        let bytes = serde_json::to_vec(&doc).unwrap();
        agg.apply(&decode(Some(&bytes), 1 << 20).unwrap(), Partition(0), now);
    }
    agg
}

fn bench(c: &mut Criterion) {
    let agg = aggregator();
    let end = WindowEnd::At(
        chrono::DateTime::parse_from_rfc3339("2026-08-22T15:00:00Z")
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap(),
    );
    let text = |open_metrics: bool| {
        let mut out = String::with_capacity(64 << 20);
        let mut writer = TextWriter::new(&mut out, open_metrics);
        let format = if open_metrics {
            Format::OpenMetrics
        } else {
            Format::Text
        };
        Snapshot::take_for(&agg, end, format).render(&mut writer);
        writer.finish();
        out.into_bytes()
    };
    let protobuf = || {
        let mut out = Vec::with_capacity(64 << 20);
        let mut writer = ProtobufWriter::new(&mut out, true);
        Snapshot::take(&agg, end).render(&mut writer);
        writer.finish();
        out
    };
    for (format, page) in [
        ("text 0.0.4", text(false)),
        ("OpenMetrics", text(true)),
        ("protobuf", protobuf()),
    ] {
        let zipped = gzip::shared_part(&page).0.len();
        println!(
            "exposition of {WORKFLOWS} workflows, {format}: {} bytes, {zipped} gzipped ({:.1}x fewer)",
            page.len(),
            page.len() as f64 / zipped as f64
        );
    }
    let mut group = c.benchmark_group(format!("scrape_{WORKFLOWS}_workflows"));
    group.sample_size(10);
    group.bench_function("snapshot", |b| {
        b.iter(|| black_box(Snapshot::take_for(&agg, end, Format::Text)))
    });
    group.bench_function("snapshot_and_render", |b| b.iter(|| black_box(text(false))));
    group.bench_function("snapshot_and_render_gzip", |b| {
        b.iter(|| black_box(gzip::shared_part(&text(false))))
    });
    group.bench_function("render_openmetrics", |b| b.iter(|| black_box(text(true))));
    group.bench_function("render_protobuf", |b| b.iter(|| black_box(protobuf())));
    group.bench_function("render_protobuf_gzip", |b| {
        b.iter(|| black_box(gzip::shared_part(&protobuf())))
    });
    group.finish();

    let thresholds = thresholds();
    let now = match end {
        WindowEnd::At(now) => now,
        WindowEnd::LatestFinished => unreachable!(),
    };
    let mut warm = ThresholdEvaluator::new(thresholds.clone(), std::time::Duration::from_secs(15));
    let observed = warm.observe(&agg, now);
    println!(
        "thresholds: {} observations, {} breached",
        observed.observations.len(),
        observed.observations.iter().filter(|o| o.passed).count()
    );
    warm.update(observed, now);
    let mut group = c.benchmark_group(format!("thresholds_{WORKFLOWS}_workflows"));
    group.sample_size(10);
    group.bench_function("observe", |b| b.iter(|| black_box(warm.observe(&agg, now))));
    group.bench_function("observe_and_update", |b| {
        b.iter(|| {
            let observed = warm.observe(&agg, now);
            black_box(warm.update(observed, now))
        })
    });
    group.bench_function("cold_observe", |b| {
        b.iter(|| {
            let mut cold = ThresholdEvaluator::new(thresholds.clone(), std::time::Duration::from_secs(15));
            black_box(cold.observe(&agg, now))
        })
    });
    group.finish();
}

/// The kinds the bench can observe, with 20 overrides of which a few match each workflow.
fn thresholds() -> Thresholds {
    let mut text = String::from(
        "[thresholds.default.failure_ratio]\nmax = 0.3\n[thresholds.default.duration_quantile]\nmax = \"1h\"\n\
         [thresholds.default.oldest_running_age]\nmax = \"1h\"\n[thresholds.default.runs_in_flight]\nmax = 100\n",
    );
    for i in 0..20 {
        text.push_str(&format!(
            "[[thresholds.overrides]]\nworkflow = \"workflow-{i}*\"\nfailure_ratio = {{ max = 0.1 }}\n"
        ));
    }
    Config::parse(&text, "bench").unwrap().load_thresholds().unwrap()
}

criterion_group!(benches, bench);
criterion_main!(benches);
