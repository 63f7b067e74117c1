//! The examples size their memory limits from what `check-config` prints for their own config.

mod common;

use common::*;

/// The `config.toml: |` block of the Kubernetes example's ConfigMap, unindented.
fn kubernetes_config(manifest: &str) -> String {
    let mut lines = manifest
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("config.toml: |"));
    let header = lines.next().expect("the ConfigMap has a config.toml");
    let indent = header.len() - header.trim_start().len() + 2;
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_example_limit_covers_its_worst_case() {
    let manifest = read("deploy/kubernetes/hatchet-run-metrics.yaml");
    let total = check_config_total_mib(&kubernetes_config(&manifest));
    let limit_line = manifest
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("limits:"))
        .find(|l| l.trim_start().starts_with("memory:"))
        .expect("a memory limit");
    let limit: f64 = limit_line
        .trim()
        .trim_start_matches("memory:")
        .trim()
        .trim_end_matches("Mi")
        .parse()
        .expect("the limit in Mi");
    assert!(
        limit >= total,
        "the example's memory limit ({limit} Mi) is below the worst case its config allows ({total} MiB)"
    );
    assert!(
        limit <= total * 1.25,
        "the example's memory limit ({limit} Mi) is far above its worst case ({total} MiB): lower it"
    );
}

#[test]
fn check_config_prints_every_term_of_the_estimate() {
    let output = binary(&["check-config"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for term in [
        "process at rest",
        "Kafka client buffers",
        "remembered outcomes",
        "workflow series",
        "/metrics pages",
    ] {
        assert!(stdout.contains(term), "{term} missing:\n{stdout}");
    }
}
