//! Resident memory, printed: `cargo bench --bench memory`.
//!
//! 1. The outcome memory at its default cap: 1,000,000 outcomes remembered (the default
//!    `outcomes.max_remembered`), then 1,000,000 more pushing the oldest out.
//! 2. 10,000 active workflows with the default windows and quantiles: every workflow gets 100
//!    outcomes over the last hour with durations from milliseconds to hours, through the whole
//!    aggregation (so the outcome memory and run tracking hold those 1,000,000 runs too, and are
//!    reported apart).
//!    Then the same with `metrics.queue_wait_quantiles = true` and queue waits from 1 ms to
//!    about 15 minutes, to show what the queue-wait windows add.
//! 3. Run tracking with 1,000,000 runs in flight, and the cost of its oldest-running scan.
//! 4. `sizing`: the estimate `check-config` prints, against a flood that fills every cap of a
//!    small config (100 workflows, each in a tenant of its own with an overflow series, names at
//!    the length cap, every quantile-window slot holding every octave of durations, the outcome
//!    memory and run tracking full, a threshold state per series, and the pages the HTTP layer
//!    may hold rendered at once); and the service's resident size at rest, from the release
//!    binary when it is built.

use hatchet_run_metrics::aggregate::lifecycle::{LifecycleLimits, RunLifecycle};
use hatchet_run_metrics::aggregate::outcome_memory::{OutcomeKey, OutcomeMemory, OutcomeMemoryLimits};
use hatchet_run_metrics::aggregate::{Aggregator, Clock};
use hatchet_run_metrics::config::Config;
use hatchet_run_metrics::decode::decode;
use hatchet_run_metrics::events::MessageOrigin;
use hatchet_run_metrics::exporter::{exposition, WindowEnd};
use hatchet_run_metrics::ids::{Partition, RunKey};
use hatchet_run_metrics::model::V1TaskStatus;
use hatchet_run_metrics::service::Service;
use hatchet_run_metrics::sizing;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --all-targets` runs benches as tests: nothing to check here.
    }
    // Each measurement in a fresh process of its own: memory one phase frees would be reused,
    // unseen, by the next.
    match std::env::var("HRM_MEMORY_PHASE").as_deref() {
        Ok("outcomes") => outcome_memory(),
        Ok("workflows") => active_workflows(false),
        Ok("workflows-queue") => active_workflows(true),
        Ok("runs") => runs_in_flight(),
        Ok("sizing") => flood_every_cap(),
        Ok("at-rest") => service_at_rest(),
        _ => {
            let exe = std::env::current_exe().expect("own executable");
            for phase in ["outcomes", "workflows", "workflows-queue", "runs", "sizing", "at-rest"] {
                let status = std::process::Command::new(&exe).env("HRM_MEMORY_PHASE", phase).status();
                assert!(status.is_ok_and(|s| s.success()), "phase {phase} failed");
            }
        }
    }
}

fn outcome_memory() {
    const N: u64 = 1_000_000;
    let before = rss_bytes();
    let mut memory = OutcomeMemory::new(OutcomeMemoryLimits {
        max_entries: N as usize,
        max_age_nanos: i64::MAX,
    });
    let mut remember_runs = |runs: std::ops::Range<u64>| {
        for i in runs {
            let key = OutcomeKey::new(RunKey(u128::from(i) * 0x9e37_79b9_7f4a_7c15), i as i64);
            memory.remember(key, Partition(0), i as i64);
        }
    };
    remember_runs(0..N);
    let full = rss_bytes();
    remember_runs(N..2 * N);
    let after = rss_bytes();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "outcome memory: {} remembered: +{:.1} MiB resident ({:.0} bytes each); after {} more at the cap: +{:.1} MiB, {} forgotten at the cap",
        memory.len(),
        mib(full - before),
        (full - before) as f64 / N as f64,
        N,
        mib(after - before),
        memory.forgotten_at_cap
    );
}

fn active_workflows(queue_wait_quantiles: bool) {
    const WORKFLOWS: u64 = 10_000;
    const PER_WORKFLOW: u64 = 100;
    let now = chrono::Utc::now();
    let before = rss_bytes();
    let mut config = Config::default();
    config.metrics.queue_wait_quantiles = queue_wait_quantiles;
    let mut agg = Aggregator::new(config.aggregate_settings(), Clock::Wall);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..WORKFLOWS * PER_WORKFLOW {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let w = i % WORKFLOWS;
        // Log-uniform durations from 1 ms to about 3 hours; finishes spread over the last hour.
        let duration_ms = (10f64.powf((seed % 10_000) as f64 / 10_000.0 * 7.0)) as i64;
        let finished = now - chrono::Duration::milliseconds((seed >> 20) as i64 % 3_600_000);
        let started = finished - chrono::Duration::milliseconds(duration_ms);
        let queued_ms = match queue_wait_quantiles {
            true => (10f64.powf((seed >> 40) as f64 % 10_000.0 / 10_000.0 * 6.0)) as i64,
            false => 0,
        };
        let created = started - chrono::Duration::milliseconds(queued_ms);
        let status = if seed % 10 == 0 { "FAILED" } else { "COMPLETED" };
        let doc = format!(
            r#"{{"metadata":{{"id":"5f0a9c6e-2a51-4b8e-9a57-{i:012x}","createdAt":"{c}","updatedAt":"{c}"}},"status":"{status}","tenantId":"707d0855-80ab-4e1f-a156-f1c4546cbf52","workflowId":"0b7e2d3c-4f1a-4c55-8d2e-{w:012x}","displayName":"workflow-{w}-1787407391482","startedAt":"{s}","finishedAt":"{f}","createdAt":"{c}"}}"#,
            c = created.to_rfc3339(),
            s = started.to_rfc3339(),
            f = finished.to_rfc3339(),
        );
        let update = decode(Some(doc.as_bytes()), 1 << 20).expect("valid document");
        agg.apply(&update, Partition(0), now.timestamp_nanos_opt().unwrap_or(0));
    }
    let total = rss_bytes() - before;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let windows: usize = agg
        .series()
        .map(|s| s.duration_windows.iter().map(|w| w.heap_bytes()).sum::<usize>())
        .sum();
    let queue_windows: usize = agg
        .series()
        .map(|s| s.queue_windows.iter().map(|w| w.heap_bytes()).sum::<usize>())
        .sum();
    println!(
        "{WORKFLOWS} active workflows, {} outcomes{}: +{:.0} MiB resident in all, of which quantile windows {:.0} MiB \
         ({:.1} KiB per workflow) and queue-wait windows {:.0} MiB ({:.1} KiB per workflow), with {} remembered \
         outcomes and {} tracked runs",
        WORKFLOWS * PER_WORKFLOW,
        if queue_wait_quantiles {
            ", queue_wait_quantiles on"
        } else {
            ""
        },
        mib(total),
        mib(windows as u64),
        windows as f64 / 1024.0 / WORKFLOWS as f64,
        mib(queue_windows as u64),
        queue_windows as f64 / 1024.0 / WORKFLOWS as f64,
        agg.outcome_memory().len(),
        agg.lifecycle().len(),
    );
}

fn runs_in_flight() {
    const N: u64 = 1_000_000;
    let before = rss_bytes();
    let mut lc = RunLifecycle::new(LifecycleLimits {
        max_runs: N as usize,
        max_age_nanos: i64::MAX,
    });
    let key = |i: u64| RunKey(u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
    let start = std::time::Instant::now();
    for i in 0..N {
        let (status, started) = if i % 2 == 0 {
            (V1TaskStatus::Running, Some(i as i64))
        } else {
            (V1TaskStatus::Queued, None)
        };
        lc.observe(
            key(i),
            (i % 10_000) as u32,
            Partition(0),
            status,
            started,
            None,
            i as i64,
        );
    }
    let observe = start.elapsed();
    let full = rss_bytes();
    let start = std::time::Instant::now();
    let oldest = lc.oldest_running();
    let scan = start.elapsed();
    let in_flight: u64 = lc.in_flight().iter().map(|c| c.queued + c.running).sum();
    assert_eq!((in_flight, oldest.len()), (N, 10_000));
    println!(
        "run tracking: {N} runs in flight: +{:.1} MiB resident ({:.0} bytes each); {:.0} ns per new run; oldest-running scan {:?}",
        (full - before) as f64 / (1024.0 * 1024.0),
        (full - before) as f64 / N as f64,
        observe.as_nanos() as f64 / N as f64,
        scan
    );
}

/// The flood's config: small caps, so that filling every one of them takes seconds.
const SIZING_CONFIG: &str = "[metrics]\nmax_workflows = 100\n[outcomes]\nmax_remembered = 200000\n\
[runs]\nmax_tracked = 200000\n[thresholds.default.runs_in_flight]\nmax = 100000\n";

fn uuid(prefix: u32, n: u64) -> String {
    format!("{prefix:08x}-0000-4000-8000-{n:012x}")
}

fn flood_every_cap() {
    let config = Config::parse(SIZING_CONFIG, "sizing").expect("valid config");
    let estimate = sizing::worst_case(&config, 1);
    let now = chrono::Utc::now();
    let now_nanos = now.timestamp_nanos_opt().unwrap_or(0);
    let before = rss_bytes();
    let service = Service::new(&config, Clock::Wall).expect("valid config");
    let pipeline = service.pipeline();
    let workflows = config.metrics.max_workflows as u64;
    let name = "n".repeat(config.metrics.max_label_value_bytes + 20);
    let origin = MessageOrigin::File { path: "flood", line: 0 };
    let mut sent = 0u64;
    // Series: each workflow in a tenant of its own; then a second workflow per tenant (its
    // tenant's overflow series) and one of an unknown tenant (the overflow tenant's).
    let series: Vec<(String, String)> = (0..workflows)
        .map(|w| (uuid(1, w), uuid(2, w)))
        .chain((0..workflows).map(|w| (uuid(1, w), uuid(3, w))))
        .chain([(uuid(4, 0), uuid(5, 0))])
        .collect();
    for (s, (tenant, workflow)) in series.iter().enumerate() {
        // Every slot of both windows (5m: 25 s slots, 1h: 300 s), every octave of durations from
        // 1 ns to a year, 16 times (so every chunk's counters are bytes, not nibbles).
        for slot_nanos in [25_000_000_000i64, 300_000_000_000] {
            for slot in 0..12i64 {
                let finished = now - chrono::Duration::nanoseconds(slot * slot_nanos + 1_000_000_000);
                for chunk in 0..49u32 {
                    let duration = match chunk {
                        0 => 100i64,
                        1 => 200,
                        c => 3i64 << (c + 5),
                    };
                    let started = finished - chrono::Duration::nanoseconds(duration);
                    for _ in 0..16 {
                        sent += 1;
                        let doc = format!(
                            r#"{{"metadata":{{"id":"{id}","createdAt":"{c}","updatedAt":"{c}"}},"status":"COMPLETED","tenantId":"{tenant}","workflowId":"{workflow}","displayName":"{name}{s}-1787407391482","startedAt":"{st}","finishedAt":"{f}"}}"#,
                            id = uuid(6, sent),
                            c = started.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                            st = started.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                            f = finished.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                        );
                        pipeline
                            .process(Some(doc.as_bytes()), &origin, Partition(0), now_nanos)
                            .expect("valid document");
                    }
                }
            }
        }
    }
    service.evaluate_thresholds(now_nanos, false);
    let flooded = rss_bytes();
    let pages: Vec<String> = (0..config.http.max_pages)
        .map(|_| {
            // Held as the HTTP layer holds a page: shrunk to its length.
            let mut page = exposition(&service, WindowEnd::At(now_nanos));
            page.shrink_to_fit();
            page
        })
        .collect();
    let rendered = rss_bytes();
    let (series_count, windows, tracked, remembered) = {
        let agg = pipeline.aggregator();
        let windows: usize = agg
            .series()
            .map(|s| s.duration_windows.iter().map(|w| w.heap_bytes()).sum::<usize>())
            .sum();
        (
            agg.series().count(),
            windows,
            agg.lifecycle().len(),
            agg.outcome_memory().len(),
        )
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let measured = rendered - before;
    let term = |what: &str| estimate.terms.iter().find(|t| t.what == what).map_or(0, |t| t.bytes);
    // What a flood inside this process can reach: everything but the process at rest, the Kafka
    // client's buffers and a message being decoded.
    let estimated =
        estimate.total_bytes() - term("process at rest") - term("Kafka client buffers") - term("message being decoded");
    println!(
        "sizing flood: {sent} outcomes into {series_count} series ({remembered} remembered, {tracked} tracked); \
         quantile windows {:.0} B each; pages {:.1} MiB each",
        windows as f64 / (series_count as f64 * 2.0),
        mib(pages.first().map_or(0, |p| p.len()) as u64),
    );
    println!(
        "sizing flood: resident +{:.1} MiB after the flood, +{:.1} MiB with {} pages held; estimate for the same \
         terms {:.1} MiB: measured/estimate = {:.2}",
        mib(flooded - before),
        mib(measured),
        pages.len(),
        mib(estimated),
        measured as f64 / estimated as f64
    );
    print!("{}", estimate.render());
}

/// The release binary's resident size at rest: running, its Kafka client trying a broker that
/// is not there, nothing consumed.
fn service_at_rest() {
    let binary = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/hatchet-run-metrics");
    if !binary.exists() {
        println!("at rest: build the release binary first (cargo build --release) to measure it");
        return;
    }
    let Ok(mut child) = std::process::Command::new(&binary)
        .arg("run")
        .env("HATCHET_RUN_METRICS_BROKERS", "127.0.0.1:1")
        .env("HATCHET_RUN_METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "off")
        .env_remove("HATCHET_RUN_METRICS_CONFIG")
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        println!("at rest: could not start {}", binary.display());
        return;
    };
    std::thread::sleep(std::time::Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "at rest: the service runs in {:.1} MiB resident (sizing::BASE_BYTES says {:.1} MiB)",
        rss_kb as f64 / 1024.0,
        sizing::BASE_BYTES as f64 / (1024.0 * 1024.0)
    );
}
