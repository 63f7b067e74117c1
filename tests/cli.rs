//! The command line as a user runs it: `replay`, `check-config`, and `produce` + `run` agreeing
//! with `replay` on the same file.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(unique_name(name));
    std::fs::write(&path, text).unwrap();
    path
}

/// The five example documents, one per line, with blank lines, a redelivery and bad lines.
fn example_lines() -> String {
    let mut lines = Vec::new();
    for name in [
        "queued-dag-run",
        "running-dag-run",
        "completed-dag-run",
        "failed-task-run",
        "cancelled-while-queued-run",
    ] {
        let doc: serde_json::Value = serde_json::from_str(&read(format!("tests/data/examples/{name}.json"))).unwrap();
        lines.push(serde_json::to_string(&doc).unwrap());
        lines.push(String::new());
    }
    lines.push(lines[4].clone()); // the completed run, delivered again
    lines.push("{\"truncated\": ".into());
    lines.push("   ".into());
    lines.push("[\"not\", \"an object\"]".into());
    lines.push(lines[0].replace("\"QUEUED\"", "\"PAUSED\""));
    lines.join("\n") + "\n"
}

#[test]
fn replay_prints_the_exposition_and_survives_bad_lines() {
    let file = temp_file("replay.ndjson", &example_lines());
    let output = binary(&["replay", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let m = Metrics::parse(&String::from_utf8(output.stdout).unwrap());
    let tenant = ("tenant_id", "707d0855-80ab-4e1f-a156-f1c4546cbf52");
    let runs = |wf, status| {
        m.get(
            "hatchet_workflow_runs_total",
            &[tenant, ("workflow", wf), ("status", status)],
        )
    };
    assert_eq!(
        runs("DAGWorkflow", "COMPLETED"),
        Some(1.0),
        "counted once despite the redelivery"
    );
    assert_eq!(runs("send-welcome-email", "FAILED"), Some(1.0));
    assert_eq!(runs("nightly-report", "CANCELLED"), Some(1.0));
    assert_eq!(runs("nightly-report", "COMPLETED"), Some(0.0));
    let bucket = |wf, status, le| {
        m.get(
            "hatchet_workflow_run_duration_seconds_bucket",
            &[("workflow", wf), ("status", status), ("le", le)],
        )
    };
    // 14:03:14.127006 - 14:03:11.690241 = 2.436765 s
    assert_eq!(bucket("DAGWorkflow", "COMPLETED", "1"), Some(0.0));
    assert_eq!(bucket("DAGWorkflow", "COMPLETED", "2.5"), Some(1.0));
    assert_eq!(
        bucket("nightly-report", "CANCELLED", "+Inf"),
        Some(0.0),
        "the saturated duration is not observed"
    );
    // Windows end at the latest finishedAt (19:20:00.5Z, the cancelled run): only it is in 5m.
    assert_eq!(
        m.get(
            "hatchet_workflow_failure_ratio",
            &[("workflow", "nightly-report"), ("window", "5m")]
        ),
        Some(0.0)
    );
    assert_eq!(
        m.get(
            "hatchet_workflow_failure_ratio",
            &[("workflow", "send-welcome-email"), ("window", "5m")]
        ),
        None
    );
    assert_eq!(
        m.get(
            "hatchet_workflow_failure_ratio",
            &[("workflow", "send-welcome-email"), ("window", "1h")]
        ),
        None
    );
    for (reason, n) in [
        ("invalid_json", 1.0),
        ("not_an_object", 1.0),
        ("unknown_status", 1.0),
        ("missing_field", 0.0),
    ] {
        assert_eq!(
            m.get("hatchet_run_metrics_rejected_messages_total", &[("reason", reason)]),
            Some(n),
            "{reason}"
        );
    }
    assert_eq!(m.get("hatchet_run_metrics_duplicate_outcomes_total", &[]), Some(1.0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rejected message") && stderr.contains("line=12"),
        "{stderr}"
    );
}

#[test]
fn check_config_accepts_the_example_and_refuses_bad_files() {
    let good = binary(&[
        "check-config",
        "--config",
        repo_root().join("config/hatchet-run-metrics.toml").to_str().unwrap(),
    ]);
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    for (text, key, why) in [
        (
            "[metrics]\nfailure_ratio_windows = [\"5 parsecs\"]\n",
            "metrics.failure_ratio_windows[0]",
            "not a duration",
        ),
        ("[kafka]\ntopic = \"x\"\n", "kafka.topic", "unknown field"),
        (
            "[kafka.properties]\n\"group.id\" = \"g\"\n",
            "group.id",
            "kafka.group_id",
        ),
    ] {
        let file = temp_file("bad.toml", text);
        let output = binary(&["check-config", "--config", file.to_str().unwrap()]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(file.to_str().unwrap()) && stderr.contains(key) && stderr.contains(why),
            "{stderr}"
        );
    }
    let secret = temp_file("secret.toml", "[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n");
    let shown = binary(&["check-config", "--config", secret.to_str().unwrap()]);
    assert!(shown.status.success());
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        stdout.contains("sasl.password") && !stdout.contains("hunter2"),
        "{stdout}"
    );
    let missing = binary(&["check-config", "--config", "/nonexistent/hrm.toml"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_run_agrees_with_replay() {
    let brokers = shared_brokers();
    let topic = unique_name("cli-agree");
    create_topic(&brokers, &topic, 3).await;
    let text = example_lines();
    let file = temp_file("agree.ndjson", &text);
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();

    let produced = binary(&[
        "produce",
        file.to_str().unwrap(),
        "--brokers",
        &brokers,
        "--topic",
        &topic,
    ]);
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    assert!(String::from_utf8_lossy(&produced.stderr).contains(&format!("produced {lines} messages")));

    let group = unique_name("group");
    let service = Service::start(&format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n"
    ));
    let live = service.wait_for_consumed(lines as f64);
    let replayed = Metrics::parse(&String::from_utf8(binary(&["replay", file.to_str().unwrap()]).stdout).unwrap());
    let families = [
        "hatchet_workflow_runs_total",
        "hatchet_workflow_run_duration_seconds_bucket",
        "hatchet_workflow_run_duration_seconds_sum",
        "hatchet_workflow_run_duration_seconds_count",
        "hatchet_run_metrics_rejected_messages_total",
        "hatchet_run_metrics_duplicate_outcomes_total",
    ];
    let pick = |m: &Metrics| {
        let mut v: Vec<_> = m
            .samples
            .iter()
            .filter(|(n, _, _)| families.contains(&n.as_str()))
            .map(|(n, l, v)| format!("{n}{l:?} {v}"))
            .collect();
        v.sort();
        v
    };
    assert!(pick(&live).len() > 20);
    assert_eq!(pick(&live), pick(&replayed));
}

#[test]
fn the_exposition_passes_promtool() {
    let file = temp_file("promtool.ndjson", &example_lines());
    // With every optional family on, so that promtool sees them all.
    let config = temp_file(
        "promtool.toml",
        "[metrics]\nmetadata_labels = [\"customer_tier\", \"source\"]\n",
    );
    let output = binary(&["replay", file.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(text.contains("customer_tier=\"gold\",source=\"api\""), "{text}");
    assert!(output.status.success());
    promtool_check_metrics(&output.stdout);
}

#[test]
fn thresholds_explain_names_the_winning_rule_and_where_each_field_came_from() {
    let demo = repo_root().join("config/demo.toml");
    let checked = binary(&["check-config", "--config", demo.to_str().unwrap()]);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let explained = binary(&[
        "--config",
        demo.to_str().unwrap(),
        "thresholds",
        "explain",
        "nightly-report",
    ]);
    assert!(
        explained.status.success(),
        "{}",
        String::from_utf8_lossy(&explained.stderr)
    );
    let text = String::from_utf8_lossy(&explained.stdout);
    let section = |kind: &str| {
        let start = text
            .find(&format!("\n{kind}: "))
            .unwrap_or_else(|| panic!("{kind} missing:\n{text}"));
        let rest = &text[start + 1..];
        rest[..rest.find("\n\n").unwrap_or(rest.len())].to_string()
    };
    let failure = section("failure_ratio");
    assert!(
        failure.starts_with("failure_ratio: nightly (thresholds.overrides[0])"),
        "{failure}"
    );
    assert!(
        failure.contains("max           = 0.3          from thresholds.overrides[0]"),
        "{failure}"
    );
    assert!(
        failure.contains("window        = 5m           from thresholds.default (inherited)"),
        "{failure}"
    );
    assert!(failure.contains("outranked: default"), "{failure}");
    let in_flight = section("runs_in_flight");
    assert!(
        in_flight.starts_with("runs_in_flight: default (thresholds.default): no matching override"),
        "{in_flight}"
    );
    assert!(section("queue_wait_quantile").contains("not set"), "{text}");

    let other = binary(&[
        "--config",
        demo.to_str().unwrap(),
        "thresholds",
        "explain",
        "charge-card",
    ]);
    let text = String::from_utf8_lossy(&other.stdout);
    assert!(text.contains("matching overrides: none"), "{text}");
    assert!(text.contains("failure_ratio: default"), "{text}");

    let bad_tenant = binary(&[
        "--config",
        demo.to_str().unwrap(),
        "thresholds",
        "explain",
        "x",
        "--tenant",
        "acme",
    ]);
    assert!(!bad_tenant.status.success());
    assert!(String::from_utf8_lossy(&bad_tenant.stderr).contains("not a UUID"));
}

/// `hatchet-run-metrics ARGS` like [`binary`], killed if still running after `limit`.
fn binary_for_at_most(args: &[&str], limit: Duration) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hatchet-run-metrics"))
        .args(args)
        .env_remove("HATCHET_RUN_METRICS_CONFIG")
        .env_remove("HATCHET_RUN_METRICS_BROKERS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().expect("output")
}

fn all_output(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn secrets_never_appear_in_check_config_or_run_output() {
    // A typo of a secret's name is refused by both commands, naming the key, never the value.
    let typo = temp_file(
        "typo.toml",
        "[kafka.properties]\n\"sasl.pasword\" = \"hunter2-secret\"\n",
    );
    for command in ["check-config", "run"] {
        let output = binary_for_at_most(&[command, "--config", typo.to_str().unwrap()], Duration::from_secs(30));
        let said = all_output(&output);
        assert!(!output.status.success(), "{command}: {said}");
        assert!(said.contains("kafka.properties.\"sasl.pasword\""), "{command}: {said}");
        assert!(!said.contains("hunter2"), "{command}: {said}");
    }
    // Secrets that librdkafka takes are shown redacted, by name.
    let secrets = temp_file(
        "secrets.toml",
        "[kafka.properties]\n\"sasl.password\" = \"pw-hunter2\"\n\
         \"sasl.oauthbearer.config\" = \"principal=svc extension_x=oauth-hunter2\"\n\
         \"ssl.key.password\" = \"key-hunter2\"\n\"client.id\" = \"shown-in-clear\"\n",
    );
    let output = binary(&["check-config", "--config", secrets.to_str().unwrap()]);
    let said = all_output(&output);
    assert!(output.status.success(), "{said}");
    for name in [
        "sasl.password",
        "sasl.oauthbearer.config",
        "ssl.key.password",
        "shown-in-clear",
    ] {
        assert!(said.contains(name), "{name}: {said}");
    }
    assert!(!said.contains("hunter2"), "{said}");
}

/// Whatever `check-config` accepts, `run` starts with; whatever it refuses, `run` refuses with the
/// same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_and_run_agree() {
    let brokers = shared_brokers();
    let topic = unique_name("cli-inputs");
    create_topic(&brokers, &topic, 1).await;
    let config = |kafka: &str, rest: &str| {
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\n{kafka}\n{rest}\n",
            brokers = brokers,
            topic = topic
        )
    };
    let group = unique_name("group");
    let good = config(
        &format!("group_id = \"{group}\"\ncommit_interval = \"24h\"\nstatistics_interval = \"1s\""),
        "[kafka.properties]\n\"client.id\" = \"hrm-cli-test\"\n\"fetch.wait.max.ms\" = \"100\"\n[log]\nlevel = \"info\"",
    );
    let file = temp_file("good.toml", &good);
    let checked = binary(&["check-config", "--config", file.to_str().unwrap()]);
    assert!(checked.status.success(), "{}", all_output(&checked));
    let service = Service::start(&good);
    service.wait_until("it logs `consuming`", Duration::from_secs(30), || {
        service.log_text().contains("consuming")
    });
    service.wait_until(
        "it is ready (a partition assigned, a broker up)",
        Duration::from_secs(60),
        || service.get("/readyz").is_ok_and(|(status, _)| status == 200),
    );
    drop(service);

    for (kafka, rest, key) in [
        ("commit_interval = \"100000000h\"", "", "kafka.commit_interval"),
        ("statistics_interval = \"30d\"", "", "kafka.statistics_interval"),
        ("group_id = \"a\\u0000b\"", "", "kafka.group_id"),
        (
            "max_message_bytes = 99999999999999999999",
            "",
            "kafka.max_message_bytes",
        ),
        (
            "",
            "[kafka.properties]\n\"fetch.wait.max.mz\" = \"100\"",
            "kafka.properties.\"fetch.wait.max.mz\"",
        ),
        (
            "",
            "[kafka.properties]\n\"fetch.wait.max.ms\" = \"soon\"",
            "kafka.properties.\"fetch.wait.max.ms\"",
        ),
        ("", "[log]\nlevel = \"\"", "log.level"),
    ] {
        let file = temp_file("refused.toml", &config(kafka, rest));
        for command in ["check-config", "run"] {
            let output = binary_for_at_most(&[command, "--config", file.to_str().unwrap()], Duration::from_secs(30));
            let said = all_output(&output);
            assert!(!output.status.success(), "{command} accepted {kafka}{rest}: {said}");
            assert!(
                said.contains(&format!("key `{key}`")),
                "{command}, {kafka}{rest}: {said}"
            );
        }
    }
    // What librdkafka checks only as a client is created: check-config creates one, unconnected.
    let gssapi = config(
        "",
        "[kafka.properties]\n\"security.protocol\" = \"sasl_plaintext\"\n\"sasl.mechanisms\" = \"GSSAPI\"\n\
         \"sasl.password\" = \"gss-hunter2\"",
    );
    let file = temp_file("gssapi.toml", &gssapi);
    for command in ["check-config", "run"] {
        let output = binary_for_at_most(&[command, "--config", file.to_str().unwrap()], Duration::from_secs(30));
        let said = all_output(&output);
        assert!(!output.status.success(), "{command} accepted GSSAPI: {said}");
        assert!(
            said.contains("No provider for SASL mechanism GSSAPI"),
            "{command}: {said}"
        );
        assert!(!said.contains("hunter2"), "{command}: {said}");
    }
}
