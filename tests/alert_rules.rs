//! The Prometheus alerting rules: `deploy/prometheus/hatchet-run-metrics-rules.yml` is exactly what
//! `rules` writes from `config/thresholds.toml`, promtool accepts it, and its unit tests
//! (`deploy/prometheus/hatchet-run-metrics-rules.test.yml`) pass. Also `rules` without thresholds
//! and with a bad thresholds file.
//!
//! promtool is required, not optional: scripts/test installs it (Debian package prometheus).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const RULES: &str = "deploy/prometheus/hatchet-run-metrics-rules.yml";
const RULES_TESTS: &str = "deploy/prometheus/hatchet-run-metrics-rules.test.yml";
const THRESHOLDS: &str = "config/thresholds.toml";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn binary(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hatchet-run-metrics"))
        .args(args)
        .env_remove("HATCHET_RUN_METRICS_CONFIG")
        .env_remove("HATCHET_RUN_METRICS_BROKERS")
        .output()
        .expect("binary runs")
}

/// `promtool ARGS` in the repository root. A missing promtool fails the test: it is part of the
/// test prerequisites, not an optional extra.
fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): it comes with the Debian package prometheus; run scripts/test, \
                 which installs it (or apt-get install prometheus)"
            )
        })
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A new empty directory of its own under the temp dir.
fn temp_dir(name: &str) -> PathBuf {
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hrm-alert-rules-{}-{}-{name}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A main config in `dir` naming `thresholds.toml` next to it, as the thresholds example says.
fn config_naming_thresholds(dir: &Path, thresholds: &str) -> PathBuf {
    std::fs::write(dir.join("thresholds.toml"), thresholds).unwrap();
    let config = dir.join("hatchet-run-metrics.toml");
    std::fs::write(&config, "[thresholds]\nfile = \"thresholds.toml\"\n").unwrap();
    config
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn the_committed_rules_are_what_rules_writes_from_the_example_thresholds() {
    let dir = temp_dir("current");
    let thresholds = std::fs::read_to_string(repo_root().join(THRESHOLDS)).unwrap();
    let config = config_naming_thresholds(&dir, &thresholds);
    let written = dir.join("rules.yml");
    let output = binary(&["--config", path_str(&config), "rules", "--output", path_str(&written)]);
    assert!(output.status.success(), "rules failed:\n{}", said(&output));
    let generated = std::fs::read_to_string(&written).unwrap();
    let committed = std::fs::read_to_string(repo_root().join(RULES)).unwrap_or_default();
    if generated != committed {
        let first_difference = (generated.lines().zip(committed.lines()))
            .position(|(g, c)| g != c)
            .unwrap_or_else(|| generated.lines().count().min(committed.lines().count()));
        panic!(
            "{RULES} is not what `hatchet-run-metrics rules` writes from {THRESHOLDS} (first difference at line {}: \
             generated {:?}, committed {:?}). Regenerate it, from the repository root:\n\
             \n    printf '[thresholds]\\nfile = \"%s/{THRESHOLDS}\"\\n' \"$PWD\" > /tmp/hrm-thresholds.toml\
             \n    cargo run -q -- --config /tmp/hrm-thresholds.toml rules --output {RULES}\n\
             \nthen check that {RULES_TESTS} still passes (promtool test rules {RULES_TESTS}).",
            first_difference + 1,
            generated.lines().nth(first_difference).unwrap_or("<end of file>"),
            committed.lines().nth(first_difference).unwrap_or("<end of file>"),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn promtool_checks_the_committed_rules() {
    let checked = promtool(&["check", "rules", RULES]);
    let text = said(&checked);
    assert!(checked.status.success(), "promtool check rules {RULES}:\n{text}");
    assert!(text.contains("SUCCESS") && !text.contains(" 0 rules found"), "{text}");
}

#[test]
fn the_rules_unit_tests_pass() {
    let tested = promtool(&["test", "rules", RULES_TESTS]);
    let text = said(&tested);
    assert!(tested.status.success(), "promtool test rules {RULES_TESTS}:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn without_thresholds_rules_writes_a_valid_empty_file() {
    let dir = temp_dir("none");
    let config = dir.join("hatchet-run-metrics.toml");
    std::fs::write(&config, "[metrics]\nmax_workflows = 100\n").unwrap();
    let written = dir.join("rules.yml");
    let output = binary(&["--config", path_str(&config), "rules", "--output", path_str(&written)]);
    assert!(output.status.success(), "rules failed:\n{}", said(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no thresholds are configured"), "{stderr}");
    let checked = promtool(&["check", "rules", path_str(&written)]);
    let text = said(&checked);
    assert!(checked.status.success(), "promtool check rules on:\n{}\n{text}", {
        std::fs::read_to_string(&written).unwrap_or_default()
    });
    assert!(text.contains("SUCCESS: 0 rules found"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_thresholds_file_is_refused_with_the_file_the_key_and_why() {
    let dir = temp_dir("bad");
    let thresholds = std::fs::read_to_string(repo_root().join(THRESHOLDS)).unwrap().replace(
        "[default.failure_ratio]\nmax = 0.05\n",
        "[default.failure_ratio]\nmax = 1.5\n",
    );
    assert!(
        thresholds.contains("max = 1.5"),
        "the example's default failure ratio moved"
    );
    let config = config_naming_thresholds(&dir, &thresholds);
    let written = dir.join("rules.yml");
    let output = binary(&["--config", path_str(&config), "rules", "--output", path_str(&written)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a ratio of 1.5 was accepted:\n{stderr}");
    let file = dir.join("thresholds.toml");
    for expected in [
        path_str(&file),
        "default.failure_ratio.max",
        "1.5 is not a ratio between 0 and 1",
    ] {
        assert!(stderr.contains(expected), "stderr lacks {expected:?}:\n{stderr}");
    }
    assert!(!written.exists(), "no rules file is written from bad thresholds");
    let _ = std::fs::remove_dir_all(&dir);
}
