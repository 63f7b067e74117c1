//! Resident memory of the outcome memory at its default cap: `cargo bench --bench memory`.
//!
//! Prints the growth of the process's resident set while 1,000,000 outcomes are remembered (the
//! default `outcomes.max_remembered`), and after 1,000,000 more push the oldest out at the cap.

use hatchet_run_metrics::aggregate::outcome_memory::{OutcomeKey, OutcomeMemory, OutcomeMemoryLimits};
use hatchet_run_metrics::decode::RunKey;

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
