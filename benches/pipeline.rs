//! Decode + aggregate per message, against plain `serde_json` parsing of the same bytes.
//!
//! `cargo bench --bench pipeline` prints time per message and messages per second (criterion's
//! "thrpt") for ~600-byte and ~4 KB uniform updates, and for a varied stream: the synthetic
//! generator's output (every run new, each of its timestamp styles and offsets, retries, replays
//! and redeliveries), which is what a real topic looks like to the caches. The baseline
//! `serde_json_ignored_any` parses the same bytes into `IgnoredAny`: the floor any JSON consumer
//! pays.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hatchet_run_metrics::aggregate::outcome_memory::OutcomeMemoryLimits;
use hatchet_run_metrics::aggregate::{AggregateSettings, Aggregator, Clock};
use hatchet_run_metrics::config::DEFAULT_DURATION_BUCKETS;
use hatchet_run_metrics::decode::decode;
use hatchet_run_metrics::events::{MessageOrigin, Telemetry};
use hatchet_run_metrics::ids::Partition;
use hatchet_run_metrics::pipeline::{Input, Pipeline};
use hatchet_run_metrics::traffic::synthetic::{SyntheticTraffic, TrafficProfile};
use serde_json::json;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

const STATUSES: [&str; 5] = ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "COMPLETED"];

/// `n` distinct updates of 50 workflows; `input_bytes` of opaque input each.
fn messages(n: usize, input_bytes: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let status = STATUSES[i % STATUSES.len()];
            let workflow = format!("0b7e2d3c-4f1a-4c55-8d2e-{:012x}", i % 50);
            let run = format!("5f0a9c6e-2a51-4b8e-9a57-{:012x}", i);
            let (started, finished, duration) = match status {
                "QUEUED" => ("0001-01-01T00:00:00Z".to_string(), "0001-01-01T00:00:00Z".to_string(), 0),
                "RUNNING" => ("2026-08-22T14:03:11.690241Z".into(), "0001-01-01T00:00:00Z".into(), -9223372036854_i64),
                _ => ("2026-08-22T14:03:11.690241Z".into(), format!("2026-08-22T14:{:02}:14.127006Z", 3 + i % 50), 2436),
            };
            let input = if input_bytes == 0 {
                json!({})
            } else {
                let items: Vec<_> = (0..input_bytes / 64)
                    .map(|k| json!({"id": k, "name": format!("item-{k:05}"), "tags": ["a", "b"], "ok": k % 2 == 0}))
                    .collect();
                json!({"user_id": 42, "items": items})
            };
            serde_json::to_vec(&json!({
                "metadata": {"id": run, "createdAt": "2026-08-22T14:03:11.482913Z", "updatedAt": "2026-08-22T14:03:11.482913Z"},
                "status": status, "tenantId": "707d0855-80ab-4e1f-a156-f1c4546cbf52", "workflowId": workflow,
                "displayName": format!("workflow-{}-1787407391482", i % 50), "startedAt": started, "finishedAt": finished,
                "createdAt": "2026-08-22T14:03:11.501377Z", "duration": duration, "input": input, "output": {},
                "additionalMetadata": {}, "errorMessage": "",
                "workflowVersionId": "c4d1e8f2-93b0-4a6e-b1d7-2f5e8a0c9d13",
            }))
            .unwrap()
        })
        .collect()
}

fn aggregator() -> Aggregator {
    Aggregator::new(
        AggregateSettings {
            duration_buckets_seconds: DEFAULT_DURATION_BUCKETS.to_vec(),
            queue_buckets_seconds: DEFAULT_DURATION_BUCKETS.to_vec(),
            failure_ratio_windows: vec![("5m".into(), 300_000_000_000), ("1h".into(), 3_600_000_000_000)],
            workflow_names: HashMap::new(),
            max_workflows: 10_000,
            idle_expiry_nanos: 48 * 3_600_000_000_000,
            outcome_memory: OutcomeMemoryLimits {
                max_entries: 1_000_000,
                max_age_nanos: 6 * 3_600_000_000_000,
            },
            ..hatchet_run_metrics::config::Config::default().aggregate_settings()
        },
        Clock::Wall,
    )
}

/// The first `n` messages of the synthetic stream (10 workflows, 2 tenants, one of them writing
/// `-05:00` offsets), as `produce --synthetic` sends them.
fn varied(n: usize) -> Vec<Vec<u8>> {
    let profile = TrafficProfile {
        workflows: 10,
        runs_per_second: 200.0,
        ..TrafficProfile::default()
    };
    let start = chrono::DateTime::from_timestamp(1_787_407_391, 0).expect("a valid time");
    SyntheticTraffic::new(&profile, start)
        .take(n)
        .map(|m| m.payload)
        .collect()
}

fn bench(c: &mut Criterion) {
    for (name, batch) in [
        ("small", messages(10_000, 0)),
        ("large", messages(10_000, 3400)),
        ("varied", varied(10_000)),
    ] {
        let mean = batch.iter().map(Vec::len).sum::<usize>() / batch.len();
        let mut group = c.benchmark_group(format!("{name}_{mean}B"));
        group.throughput(Throughput::Elements(batch.len() as u64));
        group.bench_function("serde_json_ignored_any", |b| {
            b.iter(|| {
                for m in &batch {
                    black_box(serde_json::from_slice::<serde::de::IgnoredAny>(m).unwrap());
                }
            })
        });
        group.bench_function("decode", |b| {
            b.iter(|| {
                for m in &batch {
                    black_box(decode(Some(m), 1 << 24).unwrap());
                }
            })
        });
        // A fresh aggregator per batch, so every terminal update is a new outcome as in steady state.
        group.bench_function("decode_and_aggregate", |b| {
            b.iter_batched(
                aggregator,
                |mut agg| {
                    for (i, m) in batch.iter().enumerate() {
                        let update = decode(Some(m), 1 << 24).unwrap();
                        black_box(agg.apply(&update, Partition(0), 1_787_407_391_000_000_000 + i as i64));
                    }
                    agg
                },
                BatchSize::LargeInput,
            )
        });
        // As the Kafka source runs it: batches of 256 through the pipeline (decode, the lock,
        // aggregate, positions, self-metrics).
        let inputs: Vec<Input> = (batch.iter().enumerate())
            .map(|(i, m)| Input {
                payload: Some(m),
                origin: MessageOrigin::Kafka {
                    topic: "bench",
                    partition: 0,
                    offset: i as i64,
                },
                partition: Partition(0),
            })
            .collect();
        // As the Kafka source runs it with `kafka.decode_threads = 2` (batches of up to 1,024
        // messages per decoding thread): what a second core does when the broker is elsewhere.
        for (name, threads, size) in [("pipeline_batches", 1, 256), ("pipeline_batches_2_threads", 2, 2048)] {
            group.bench_function(name, |b| {
                let mut results = Vec::new();
                b.iter_batched(
                    || Pipeline::new(aggregator(), Arc::new(Telemetry::new(0)), 1 << 24).with_decode_threads(threads),
                    |pipeline| {
                        for (k, chunk) in inputs.chunks(size).enumerate() {
                            pipeline.process_batch(chunk, 1_787_407_391_000_000_000 + k as i64, &mut results);
                        }
                        pipeline
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        group.finish();
    }
}

/// Steady state at the outcome memory's cap: one aggregator, already holding 1,000,000 remembered
/// outcomes, so every new outcome also forgets the oldest. Each pass rewrites the run ids (in
/// place, outside the timing) so that its outcomes are new.
fn bench_at_cap(c: &mut Criterion) {
    let mut batch = messages(10_000, 0);
    let mean = batch.iter().map(Vec::len).sum::<usize>() / batch.len();
    let marker = b"5f0a9c6e-2a51-4b8e-9a57-";
    let id_at: Vec<usize> = batch
        .iter()
        .map(|m| {
            m.windows(marker.len())
                .position(|w| w == marker)
                .expect("run id in the message")
        })
        .collect();
    let mut pass: u32 = 0;
    let mut relabel = |batch: &mut Vec<Vec<u8>>| {
        pass += 1;
        let prefix = format!("{pass:08x}");
        for (m, at) in batch.iter_mut().zip(&id_at) {
            m[*at..*at + 8].copy_from_slice(prefix.as_bytes());
        }
    };
    let mut agg = aggregator();
    let mut clock = 1_787_407_391_000_000_000_i64;
    while agg.outcome_memory().len() < 1_000_000 {
        relabel(&mut batch);
        for m in &batch {
            clock += 1;
            agg.apply(&decode(Some(m), 1 << 24).unwrap(), Partition(0), clock);
        }
    }
    let mut group = c.benchmark_group(format!("at_cap_small_{mean}B"));
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("decode_and_aggregate", |b| {
        b.iter_custom(|iters| {
            let mut spent = std::time::Duration::ZERO;
            for _ in 0..iters {
                relabel(&mut batch);
                let start = std::time::Instant::now();
                for m in &batch {
                    clock += 1;
                    black_box(agg.apply(&decode(Some(m), 1 << 24).unwrap(), Partition(0), clock));
                }
                spent += start.elapsed();
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_at_cap);
criterion_main!(benches);
