//! The exposition of a fixed replay, byte for byte: a refactor that changes no behaviour leaves it
//! as it is. `tests/data/golden/` holds the input (every kind of update, redeliveries, replays,
//! bad lines, control characters, a long name, an absurd date), the config (every optional family
//! on) and the expected page; only the wall-clock times (of the last message, of the config's
//! load) are masked.

mod common;

use common::*;

const WALL_CLOCK: [&str; 2] = [
    "hatchet_run_metrics_last_message_timestamp_seconds",
    "hatchet_run_metrics_config_last_reload_success_timestamp_seconds",
];

fn masked(page: &str) -> String {
    page.lines()
        .map(
            |line| match WALL_CLOCK.iter().find(|name| line.starts_with(&format!("{name} "))) {
                Some(name) => format!("{name} <wall clock>"),
                None => line.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn a_fixed_replay_renders_the_same_page() {
    // From the folder itself: the file's name is a label value (the consumed counter's topic).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hatchet-run-metrics"))
        .args(["--config", "config.toml", "replay", "input.ndjson"])
        .current_dir(repo_root().join("tests/data/golden"))
        .env_remove("HATCHET_RUN_METRICS_CONFIG")
        .env_remove("HATCHET_RUN_METRICS_BROKERS")
        .output()
        .expect("binary runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let page = masked(&String::from_utf8(output.stdout).expect("UTF-8"));
    let expected = read("tests/data/golden/replay.prom");
    if page != expected {
        let first = page
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| page.lines().count().min(expected.lines().count()));
        panic!(
            "the page differs from tests/data/golden/replay.prom from line {}:\n  now:      {:?}\n  expected: {:?}",
            first + 1,
            page.lines().nth(first),
            expected.lines().nth(first)
        );
    }
}
