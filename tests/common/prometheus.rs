//! A real Prometheus server (the `prometheus` binary on PATH) run as a child process for tests:
//! it scrapes one target, evaluates rule files, and is queried over its HTTP API.

#![allow(dead_code)] // each test binary uses its own part of the harness

use super::{free_port, http_get, unique_name};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A Prometheus server started by [`PrometheusServer::start`]; killed and its data removed on drop.
pub struct PrometheusServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    target: String,
    log: Arc<Mutex<String>>,
}

/// One alert as `GET /api/v1/alerts` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `labels.alertname`.
    pub name: String,
    /// `"pending"` or `"firing"` (inactive alerts are not listed).
    pub state: String,
    /// All labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// The expression's value as Prometheus formats it (e.g. `"1e+00"`).
    pub value: String,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `target` ("127.0.0.1:PORT", path /metrics) every `interval`,
    /// evaluating `rule_files` (referenced in place; relative paths are taken from the current
    /// directory, the repository root under `cargo test`) every `interval` too, and waits until it
    /// is ready. Panics with Prometheus's log when it does not start (e.g. an invalid rule file).
    pub fn start(target: &str, rule_files: &[PathBuf], interval: Duration) -> PrometheusServer {
        PrometheusServer::start_with(&[target], rule_files, interval, &[])
    }

    /// [`PrometheusServer::start`] with several targets (one job) and `--enable-feature` flags
    /// (`native-histograms`, `exemplar-storage`).
    pub fn start_with(
        targets: &[&str],
        rule_files: &[PathBuf],
        interval: Duration,
        features: &[&str],
    ) -> PrometheusServer {
        let target = targets.first().copied().unwrap_or_default();
        let quote = |s: &str| serde_json::to_string(s).unwrap();
        let scrape = format!(
            "  - job_name: hatchet-run-metrics\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{}]\n",
            targets.iter().map(|t| quote(t)).collect::<Vec<_>>().join(", ")
        );
        PrometheusServer::start_scraping(target, &scrape, rule_files, interval, features)
    }

    /// Prometheus with `scrape_configs` as given (YAML list items, indented by two spaces), for
    /// targets that need more than a plain scrape (TLS, basic auth). `target` is what
    /// [`PrometheusServer::target_up`] looks at.
    pub fn start_scraping(
        target: &str,
        scrape_configs: &str,
        rule_files: &[PathBuf],
        interval: Duration,
        features: &[&str],
    ) -> PrometheusServer {
        let binary = find_on_path("prometheus")
            .expect("`prometheus` is not on PATH: run `scripts/test`, which installs it (Debian package prometheus)");
        let rule_files: Vec<PathBuf> = rule_files
            .iter()
            .map(|f| std::fs::canonicalize(f).unwrap_or_else(|e| panic!("rule file {}: {e}", f.display())))
            .collect();
        let dir = std::env::temp_dir().join(unique_name("hrm-prometheus"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let config = config_yaml(scrape_configs, &rule_files, interval);
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, &config).unwrap();

        let port = free_port();
        let mut child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=info")
            .arg("--storage.tsdb.retention.time=1h")
            .args(features.iter().map(|f| format!("--enable-feature={f}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prometheus starts");
        let log = super::collect_stderr(&mut child);
        // Built before waiting, so that a panic below still kills the child and removes the dir.
        let mut server = PrometheusServer {
            child,
            port,
            dir,
            target: target.to_string(),
            log,
        };
        let limit = Duration::from_secs(60);
        let start = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                // Let the reader thread take in the last lines.
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "prometheus exited during startup ({status}); config:\n{config}\nlog:\n{}",
                    server.log_text()
                );
            }
            if matches!(http_get(port, "/-/ready"), Ok((200, _))) {
                return server;
            }
            if start.elapsed() > limit {
                panic!(
                    "prometheus on port {port} not ready after {limit:?}; log:\n{}",
                    server.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port of its HTTP API (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Alerts from GET /api/v1/alerts: name (labels.alertname), state ("pending"/"firing"), all
    /// labels, value string.
    pub fn alerts(&self) -> Vec<Alert> {
        let data = self.api("/api/v1/alerts");
        let alerts = data["alerts"]
            .as_array()
            .unwrap_or_else(|| panic!("no data.alerts array in {data}"));
        alerts
            .iter()
            .map(|a| {
                let labels = string_map(&a["labels"]);
                Alert {
                    name: labels.get("alertname").cloned().unwrap_or_default(),
                    state: a["state"].as_str().unwrap_or_default().to_string(),
                    value: a["value"].as_str().unwrap_or_default().to_string(),
                    labels,
                }
            })
            .collect()
    }

    /// Instant query via GET /api/v1/query: each sample's labels and value as f64 (a scalar
    /// result is one sample without labels).
    pub fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)));
        let result = &data["result"];
        match data["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .unwrap_or_else(|| panic!("no result array in {data}"))
                .iter()
                .map(|s| (string_map(&s["metric"]), sample_value(&s["value"])))
                .collect(),
            Some("scalar") => vec![(BTreeMap::new(), sample_value(result))],
            _ => panic!("query {promql:?}: unexpected result {data}"),
        }
    }

    /// The exemplars' labels from GET /api/v1/query_exemplars over the last hour, for `promql`.
    pub fn exemplars(&self, promql: &str) -> Vec<BTreeMap<String, String>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let data = self.api(&format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            url_encode(promql),
            now.saturating_sub(3600),
            now + 60
        ));
        (data.as_array().into_iter().flatten())
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .map(|e| string_map(&e["labels"]))
            .collect()
    }

    /// True once GET /api/v1/targets shows the target with health "up".
    pub fn target_up(&self) -> bool {
        let data = self.api("/api/v1/targets?state=active");
        let url = format!("http://{}/metrics", self.target);
        data["activeTargets"].as_array().is_some_and(|targets| {
            targets
                .iter()
                .any(|t| t["scrapeUrl"].as_str() == Some(url.as_str()) && t["health"].as_str() == Some("up"))
        })
    }

    /// Prometheus's own log so far (stderr), for panic messages.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `data` of a successful API answer; panics with the body and the log otherwise.
    fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(self.port, path)
            .unwrap_or_else(|e| panic!("GET {path} on prometheus: {e}; log:\n{}", self.log_text()));
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        if status != 200 || doc["status"] != "success" {
            panic!(
                "GET {path} on prometheus: status {status}, body:\n{body}\nlog:\n{}",
                self.log_text()
            );
        }
        doc["data"].clone()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `1s`, `500ms`: Prometheus's duration syntax.
fn prometheus_duration(d: Duration) -> String {
    let ms = d.as_millis();
    assert!(ms > 0, "interval {d:?} must be at least 1ms");
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn config_yaml(scrape_configs: &str, rule_files: &[PathBuf], interval: Duration) -> String {
    let interval = prometheus_duration(interval);
    // JSON strings are valid YAML double-quoted scalars, so they quote paths safely.
    let quote = |s: &str| serde_json::to_string(s).unwrap();
    let mut yaml = format!(
        "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  evaluation_interval: {interval}\n"
    );
    yaml.push_str("rule_files:");
    if rule_files.is_empty() {
        yaml.push_str(" []");
    }
    yaml.push('\n');
    for f in rule_files {
        yaml.push_str(&format!("  - {}\n", quote(&path_text(f))));
    }
    yaml.push_str("scrape_configs:\n");
    yaml.push_str(scrape_configs);
    yaml
}

fn path_text(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
        .to_string()
}

/// Percent-encodes every byte that is not unreserved (RFC 3986: `A-Z a-z 0-9 - . _ ~`).
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn string_map(value: &serde_json::Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `[timestamp, "value"]` -> value (`"NaN"`, `"+Inf"`, `"-Inf"` included).
fn sample_value(pair: &serde_json::Value) -> f64 {
    let text = pair[1]
        .as_str()
        .unwrap_or_else(|| panic!("sample without a string value: {pair}"));
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().unwrap_or_else(|_| panic!("sample value {v:?}")),
    }
}
