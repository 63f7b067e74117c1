//! The Prometheus alerting rules: `deploy/prometheus/hatchet-run-metrics-rules.yml` is exactly what
//! `rules` writes from `config/thresholds.toml`, promtool accepts it, and its unit tests
//! (`deploy/prometheus/hatchet-run-metrics-rules.test.yml`) pass. Also `rules` without thresholds
//! and with a bad thresholds file.
//!
//! promtool is required, not optional: scripts/test installs it (Debian package prometheus).

mod common;

use common::binary;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const RULES: &str = "deploy/prometheus/hatchet-run-metrics-rules.yml";
const RULES_TESTS: &str = "deploy/prometheus/hatchet-run-metrics-rules.test.yml";
const THRESHOLDS: &str = "config/thresholds.toml";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

#[test]
fn config_text_cannot_break_the_rules_file() {
    let dir = temp_dir("hostile");
    // Template braces in names and severities, regex and YAML metacharacters and control
    // characters in globs: all must come out as literal text that Prometheus accepts.
    let thresholds = "[default.runs_in_flight]\nmax = 10\nseverity = \"{{ $value }}\"\n\
        [[overrides]]\nname = \"team {{ ops\"\nworkflow = \"a.b|c*\\\"d'e\"\nruns_in_flight = { max = 20 }\n\
        [[overrides]]\nname = \"x}}\\u007f\"\nworkflow = \"job-[!a-z]\\u0085?\"\nruns_in_flight = { max = 30, severity = \"p{{1\" }\n";
    let config = config_naming_thresholds(&dir, thresholds);
    let written = dir.join("rules.yml");
    let output = binary(&["--config", path_str(&config), "rules", "--output", path_str(&written)]);
    assert!(output.status.success(), "rules failed:\n{}", said(&output));
    let checked = promtool(&["check", "rules", path_str(&written)]);
    assert!(
        checked.status.success(),
        "promtool check rules on:\n{}\n{}",
        std::fs::read_to_string(&written).unwrap_or_default(),
        said(&checked)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_exempted_workflow_stays_exempt_while_its_counters_are_still_in_the_window() {
    // The default alerts above 5% over 10m at once; `flaky` is exempt. Its sidecar goes away at
    // 4m (a restart, the workflow going idle): every series of it goes stale, but `increase` still
    // sees its old samples until 14m. The exemption must hold all that time.
    let dir = temp_dir("stale");
    let config = config_naming_thresholds(
        &dir,
        "[default.failure_ratio]\nmax = 0.05\nwindow = \"10m\"\nmin_outcomes = 1\n\
         [[overrides]]\nworkflow = \"flaky\"\nfailure_ratio = { enabled = false }\n",
    );
    std::fs::write(
        &config,
        "[metrics]\nfailure_ratio_windows = [\"10m\"]\n[thresholds]\nfile = \"thresholds.toml\"\n",
    )
    .unwrap();
    let written = dir.join("rules.yml");
    let output = binary(&["--config", path_str(&config), "rules", "--output", path_str(&written)]);
    assert!(output.status.success(), "rules failed:\n{}", said(&output));
    let labels = "instance=\"a\",job=\"hatchet-run-metrics\",tenant_id=\"707d0855-80ab-4e1f-a156-f1c4546cbf52\"";
    let test = format!(
        r#"rule_files:
  - rules.yml
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'hatchet_workflow_runs_total{{{labels},workflow="flaky",status="COMPLETED"}}'
        values: '0+5x4 stale'
      - series: 'hatchet_workflow_runs_total{{{labels},workflow="flaky",status="FAILED"}}'
        values: '0+5x4 stale'
      - series: 'hatchet_workflow_runs_in_flight{{{labels},workflow="flaky",status="RUNNING"}}'
        values: '1x4 stale'
      - series: 'hatchet_workflow_runs_total{{{labels},workflow="orders",status="COMPLETED"}}'
        values: '0+5x15'
      - series: 'hatchet_workflow_runs_total{{{labels},workflow="orders",status="FAILED"}}'
        values: '0+5x15'
    alert_rule_test:
"#
    );
    let mut test = test;
    for minute in [2, 5, 8, 12] {
        test.push_str(&format!(
            "      - eval_time: {minute}m\n        alertname: HatchetWorkflowFailureRatioHigh\n        exp_alerts:\n          - exp_labels:\n              severity: warning\n              threshold: failure_ratio\n              threshold_rule: default\n              tenant_id: 707d0855-80ab-4e1f-a156-f1c4546cbf52\n              workflow: orders\n            exp_annotations:\n"
        ));
        let rules = std::fs::read_to_string(&written).unwrap();
        for key in ["summary", "description"] {
            // The annotations are checked elsewhere; here only which workflows alert matters,
            // so the expected text is the rendered template for `orders` at 50%.
            let line = rules
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{key}:")))
                .unwrap();
            let template: String = serde_json::from_str(line.trim_start()[key.len() + 1..].trim()).unwrap();
            let rendered = template
                .replace("{{ $labels.workflow }}", "orders")
                .replace("{{ $labels.tenant_id }}", "707d0855-80ab-4e1f-a156-f1c4546cbf52")
                .replace("{{ $value | humanizePercentage }}", "50%");
            test.push_str(&format!(
                "              {key}: {}\n",
                serde_json::to_string(&rendered).unwrap()
            ));
        }
    }
    let test_path = dir.join("rules.test.yml");
    std::fs::write(&test_path, &test).unwrap();
    let tested = promtool(&["test", "rules", path_str(&test_path)]);
    assert!(
        tested.status.success(),
        "rules:\n{}\ntest:\n{test}\n{}",
        std::fs::read_to_string(&written).unwrap_or_default(),
        said(&tested)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
