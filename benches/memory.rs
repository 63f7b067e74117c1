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

use hatchet_run_metrics::aggregate::lifecycle::{LifecycleLimits, RunLifecycle};
use hatchet_run_metrics::aggregate::outcome_memory::{OutcomeKey, OutcomeMemory, OutcomeMemoryLimits};
use hatchet_run_metrics::aggregate::{Aggregator, Clock};
use hatchet_run_metrics::config::Config;
use hatchet_run_metrics::decode::{decode, RunKey};
use hatchet_run_metrics::model::V1TaskStatus;

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
        _ => {
            let exe = std::env::current_exe().expect("own executable");
            for phase in ["outcomes", "workflows", "workflows-queue", "runs"] {
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
            memory.remember(key, i as i64);
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
        agg.apply(&update, now.timestamp_nanos_opt().unwrap_or(0));
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
        lc.observe(key(i), (i % 10_000) as u32, status, started, None, i as i64);
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
