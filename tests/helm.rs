//! The Helm chart (`deploy/helm/hatchet-run-metrics`), linted and rendered by the real `helm`
//! (scripts/prerequisites installs it with `go install`) in every mode, with assertions on what
//! it renders: the config the pod gets passes `check-config`, and the PrometheusRule's rules pass
//! `promtool check rules` and are exactly what `rules` writes for that config.

mod common;

use common::*;
use serde_yaml::Value;
use std::path::PathBuf;
use std::process::Command;

const CHART: &str = "deploy/helm/hatchet-run-metrics";

fn helm() -> PathBuf {
    let home_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join("go/bin/helm"));
    let gopath_bin = std::env::var_os("GOPATH").map(|g| PathBuf::from(g).join("bin/helm"));
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("helm"))
            .find(|p| p.is_file())
    });
    (on_path.into_iter().chain(gopath_bin).chain(home_bin))
        .find(|p| p.is_file())
        .expect("helm (scripts/test installs it: go install helm.sh/helm/v3/cmd/helm@v3.22.0)")
}

fn run(command: &mut Command) -> String {
    let output = command.current_dir(repo_root()).output().expect("runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?}:\n{said}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The objects `helm template` renders with `--set` values `sets`.
fn render(sets: &[&str]) -> Vec<Value> {
    let mut command = Command::new(helm());
    command.args(["template", "demo", CHART]);
    for set in sets {
        command.args(["--set", set]);
    }
    let text = run(&mut command);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn kinds(objects: &[Value]) -> Vec<&str> {
    let mut kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    kinds.sort();
    kinds
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    (objects.iter())
        .find(|o| o["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in {objects:?}"))
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(unique_name(name));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_chart_lints_and_renders_in_every_mode() {
    for sets in [
        &[][..],
        &["mode=sidecar"],
        &["prometheusRule.enabled=true,serviceMonitor.enabled=true"],
    ] {
        let mut command = Command::new(helm());
        command.args(["lint", "--strict", CHART]);
        for set in sets {
            command.args(["--set", set]);
        }
        run(&mut command);
    }

    // The default: its own Deployment and a Service, non-root, read-only, probed.
    let objects = render(&[]);
    assert_eq!(kinds(&objects), ["ConfigMap", "Deployment", "Service"]);
    let deployment = of_kind(&objects, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"].as_str(), Some("hatchet-run-metrics:0.1.0"));
    assert_eq!(container["securityContext"]["runAsUser"].as_u64(), Some(65532));
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(container["startupProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    assert_eq!(container["resources"]["limits"]["memory"].as_str(), Some("576Mi"));

    // The config the pod gets passes check-config, and its worst case fits the memory limit.
    let config = of_kind(&objects, "ConfigMap")["data"]["config.toml"]
        .as_str()
        .expect("config.toml")
        .to_string();
    let total = check_config_total_mib(&config);
    assert!(
        total <= 576.0,
        "the chart's config allows {total} MiB, above its 576Mi limit"
    );

    // Sidecar: no workload of its own; the container spec to paste is in NOTES.txt, the very one
    // the Deployment runs (helm renders NOTES only against a cluster, so this reads the template).
    let objects = render(&["mode=sidecar"]);
    assert_eq!(kinds(&objects), ["ConfigMap"]);
    let notes = read(format!("{CHART}/templates/NOTES.txt"));
    let deployment = read(format!("{CHART}/templates/deployment.yaml"));
    for template in [&notes, &deployment] {
        assert!(template.contains("include \"hrm.container\"") && template.contains("include \"hrm.volumes\""));
    }

    // The Prometheus Operator objects.
    let objects = render(&[
        "serviceMonitor.enabled=true",
        "podMonitor.enabled=true",
        "prometheusRule.enabled=true",
    ]);
    assert_eq!(
        kinds(&objects),
        [
            "ConfigMap",
            "Deployment",
            "PodMonitor",
            "PrometheusRule",
            "Service",
            "ServiceMonitor"
        ]
    );

    // The config and Kafka's TLS files from existing Secrets.
    let objects = render(&["configSecret=hrm-config", "kafka.tlsSecret=kafka-ca"]);
    assert_eq!(kinds(&objects), ["Deployment", "Service"]);
    let pod = &of_kind(&objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["secret"]["secretName"].as_str(), Some("hrm-config"));
    assert_eq!(pod["volumes"][1]["secret"]["secretName"].as_str(), Some("kafka-ca"));
    assert_eq!(
        pod["containers"][0]["volumeMounts"][1]["mountPath"].as_str(),
        Some("/etc/kafka-tls")
    );

    // A mode that does not exist is refused by the schema.
    let refused = Command::new(helm())
        .args(["template", "demo", CHART, "--set", "mode=daemonset"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
fn the_prometheus_rule_is_what_rules_writes_for_the_charts_thresholds() {
    let objects = render(&["prometheusRule.enabled=true"]);
    let config = of_kind(&objects, "ConfigMap")["data"]["config.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let config_path = temp_file("chart-config.toml", &config);
    let written = temp_file("rules.yml", "");
    run(Command::new(env!("CARGO_BIN_EXE_hatchet-run-metrics")).args([
        "--config",
        config_path.to_str().unwrap(),
        "rules",
        "--output",
        written.to_str().unwrap(),
    ]));
    let expected: Value = serde_yaml::from_str(&std::fs::read_to_string(&written).unwrap()).unwrap();
    let rule = of_kind(&objects, "PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"], expected["groups"],
        "regenerate files/rules.yml with `rules`"
    );

    // And they are rules Prometheus takes.
    let groups = serde_yaml::to_string(&serde_yaml::Mapping::from_iter([(
        Value::from("groups"),
        rule["spec"]["groups"].clone(),
    )]))
    .unwrap();
    let checked = temp_file("chart-rules.yml", &groups);
    let said = run(Command::new("promtool").args(["check", "rules", checked.to_str().unwrap()]));
    assert!(said.contains("SUCCESS"), "{said}");
    for path in [config_path, written, checked] {
        let _ = std::fs::remove_file(path);
    }
}

/// The plain manifests for `kubectl apply` are the chart's output, not a second copy to keep in
/// step by hand.
#[test]
fn the_kubernetes_example_is_what_the_chart_renders() {
    const EXAMPLE: &str = "deploy/kubernetes/hatchet-run-metrics.yaml";
    let committed = read(EXAMPLE);
    let body = committed
        .find("\n---\n")
        .map(|at| &committed[at + 1..])
        .expect("a header, then the rendered objects");
    let rendered = run(Command::new(helm()).args([
        "template",
        "hatchet-run-metrics",
        CHART,
        "-f",
        "deploy/kubernetes/values.yaml",
    ]));
    assert!(
        body == rendered,
        "{EXAMPLE} is not what the chart renders: regenerate its body with \
         `helm template hatchet-run-metrics {CHART} -f deploy/kubernetes/values.yaml`"
    );
}
