//! Shared harness for end-to-end tests: a real Kafka broker started by `scripts/kafka`, the
//! service binary run as a child process, and `/metrics` scraped over HTTP.

#![allow(dead_code)] // each test binary uses its own part of the harness

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod prometheus;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/kafka ARGS` for the broker on `port`; panics with its output on failure.
pub fn kafka_script(port: u16, args: &[&str], extra_env: &[(&str, &str)]) {
    let output = Command::new(repo_root().join("scripts/kafka"))
        .args(args)
        .env("KAFKA_PORT", port.to_string())
        .envs(extra_env.iter().copied())
        .output()
        .expect("scripts/kafka runs");
    assert!(
        output.status.success(),
        "scripts/kafka {args:?} on port {port} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The shared broker: `HRM_TEST_BROKERS` when set (the test command starts one), else the one
/// `scripts/kafka start` runs on 9092 (started here if needed; left running for later tests).
pub fn shared_brokers() -> String {
    static BROKERS: OnceLock<String> = OnceLock::new();
    BROKERS
        .get_or_init(|| match std::env::var("HRM_TEST_BROKERS") {
            Ok(brokers) => brokers,
            Err(_) => {
                kafka_script(9092, &["start"], &[]);
                "127.0.0.1:9092".to_string()
            }
        })
        .clone()
}

/// A topic name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    create_topic_with(brokers, topic, partitions, &[]).await
}

/// A topic with topic-level settings (`max.message.bytes`, say).
pub async fn create_topic_with(brokers: &str, topic: &str, partitions: i32, settings: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in settings {
        new_topic = new_topic.set(key, value);
    }
    let results = admin
        .create_topics(
            &[new_topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create_topics request");
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("producer")
}

/// A message to send: key, and payload (`None`: a tombstone).
pub struct Outgoing {
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
}

impl Outgoing {
    pub fn json(key: &str, doc: &serde_json::Value) -> Outgoing {
        Outgoing {
            key: Some(key.into()),
            payload: Some(serde_json::to_vec(doc).unwrap()),
        }
    }

    pub fn raw(payload: &[u8]) -> Outgoing {
        Outgoing {
            key: None,
            payload: Some(payload.to_vec()),
        }
    }
}

/// Sends in order and waits for every delivery.
pub async fn send_all(producer: &FutureProducer, topic: &str, messages: &[Outgoing]) {
    for m in messages {
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic);
        if let Some(key) = &m.key {
            record = record.key(key);
        }
        if let Some(payload) = &m.payload {
            record = record.payload(payload);
        }
        producer
            .send(record, Duration::from_secs(60))
            .await
            .unwrap_or_else(|(e, _)| panic!("delivery: {e}"));
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Committed offsets of `group` on `topic`, by partition (`None`: nothing committed).
pub fn committed_offsets(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(20))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                if let Offset::Offset(o) = e.offset() {
                    Some(o)
                } else {
                    None
                },
            )
        })
        .collect()
}

/// High watermarks of `topic`, by partition.
pub fn end_offsets(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            (
                p,
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(20))
                    .expect("watermarks")
                    .1,
            )
        })
        .collect()
}

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The service binary running as a child process, its log collected; SIGTERM on drop.
pub struct Service {
    child: Child,
    pub port: u16,
    pub log: Arc<Mutex<String>>,
    _config: tempfile_path::TempPath,
}

mod tempfile_path {
    use std::path::PathBuf;
    pub struct TempPath(pub PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Service {
    /// Starts `hatchet-run-metrics run` with `config_toml` plus a `[http]` section of its own, and
    /// waits until `/healthz` answers.
    pub fn start(config_toml: &str) -> Service {
        Service::start_with_http(config_toml, "")
    }

    /// [`Service::start`], with `http_keys` (lines like `max_connections = 8`) in its `[http]` section.
    pub fn start_with_http(config_toml: &str, http_keys: &str) -> Service {
        let service = Service::spawn(config_toml, http_keys);
        service.wait_until("healthz answers", Duration::from_secs(30), || {
            service.get("/healthz").map(|(s, _)| s == 200).unwrap_or(false)
        });
        service
    }

    /// [`Service::start_with_http`] for a service that speaks TLS: waits only until its port
    /// takes connections.
    pub fn start_tls(config_toml: &str, http_keys: &str) -> Service {
        let service = Service::spawn(config_toml, http_keys);
        service.wait_until("its port takes connections", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", service.port)).is_ok()
        });
        service
    }

    fn spawn(config_toml: &str, http_keys: &str) -> Service {
        let port = free_port();
        let path = std::env::temp_dir().join(format!("{}.toml", unique_name("hrm-test-config")));
        let text = format!("{config_toml}\n[http]\nlisten = \"127.0.0.1:{port}\"\n{http_keys}\n");
        std::fs::write(&path, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hatchet-run-metrics"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info,librdkafka=warn")
            .env_remove("HATCHET_RUN_METRICS_BROKERS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("service starts");
        let log = collect_stderr(&mut child);
        Service {
            child,
            port,
            log,
            _config: tempfile_path::TempPath(path),
        }
    }

    /// The config file it runs with (a test may edit it to exercise reloads).
    pub fn config_path(&self) -> &Path {
        &self._config.0
    }

    /// The process id of the running service.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident size (`VmRSS`), in bytes.
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/PID/status");
        let kib: u64 = (status.lines())
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"));
        kib * 1024
    }

    /// Sends SIGHUP (reload the config).
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// `(status, body)` of a GET.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.port, path)
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").expect("scrape");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    pub fn wait_until(&self, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting until {what}; service log:\n{}",
                    self.log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the service has processed `n` messages in total, and returns a scrape whose
    /// workflow metrics show them all: the shared page may be up to `http.page_max_age` (1 s)
    /// older than the service's own counters beside it, so the scrape is taken once that has
    /// passed.
    pub fn wait_for_consumed(&self, n: f64) -> Metrics {
        self.wait_until(&format!("{n} messages are consumed"), Duration::from_secs(90), || {
            self.metrics().sum("hatchet_run_metrics_messages_consumed_total", &[]) >= n
        });
        std::thread::sleep(Duration::from_millis(1100));
        self.metrics()
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no commit, no goodbye to the group.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// The child's stderr, gathered line by line as it comes (for logs in panic messages).
pub fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr is piped");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

/// `hatchet-run-metrics ARGS`, with no config or brokers from the environment.
pub fn binary(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hatchet-run-metrics"))
        .args(args)
        .env_remove("HATCHET_RUN_METRICS_CONFIG")
        .env_remove("HATCHET_RUN_METRICS_BROKERS")
        .output()
        .expect("binary runs")
}

/// A plain HTTP/1.1 GET on 127.0.0.1.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A parsed exposition: every sample as (name, labels) -> value.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name.to_string(), parse_labels(rest.trim_end_matches('}'))),
                None => (series.to_string(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Metrics { samples }
    }

    /// The sum of the samples of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|(_, _, v)| v).sum()
    }

    /// The one sample of `name` with these labels; `None` when absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<_> = self.matching(name, labels).collect();
        assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
        found.first().map(|(_, _, v)| *v)
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a (String, BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => break,
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// Reads a file of the repository.
pub fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap()
}

/// The worst-case resident size `check-config` prints for `config` (TOML text), in MiB.
pub fn check_config_total_mib(config: &str) -> f64 {
    let path = std::env::temp_dir().join(unique_name("check-config.toml"));
    std::fs::write(&path, config).unwrap();
    let output = binary(&["check-config", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().find(|l| l.contains("in all")).expect("a total line");
    line.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number of MiB in {line:?}"))
}

/// `promtool check metrics` on an exposition: it must pass without a word.
/// A response's headers: `(name in lower case, value)`.
pub type Headers = Vec<(String, String)>;

/// A GET with extra request headers (`name: value` lines): the status, the response's headers
/// (names in lower case) and its body as bytes. Responses here carry a Content-Length.
pub fn http_get_with(port: u16, path: &str, headers: &[&str]) -> std::io::Result<(u16, Headers, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = (response.windows(4).position(|w| w == b"\r\n\r\n")).unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let body = response.get(split + 4..).unwrap_or_default().to_vec();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = (head.lines().skip(1))
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Ok((status, headers, body))
}

/// The value of header `name` (lower case) in `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Runs the Python `script` (which reads the file named by `sys.argv[1]`) on `page` with Debian's
/// python3, the one `prometheus_client` is installed into (scripts/test installs it), whatever
/// python3 comes first on PATH; its standard output. Panics with `what` when it fails.
pub fn python_on_page(script: &str, page: &[u8], what: &str) -> String {
    let path = std::env::temp_dir().join(unique_name("page.txt"));
    std::fs::write(&path, page).unwrap();
    let python = match Path::new("/usr/bin/python3").exists() {
        true => "/usr/bin/python3",
        false => "python3",
    };
    let output = Command::new(python)
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .expect("python3 with prometheus_client (scripts/test installs it)");
    let _ = std::fs::remove_file(&path);
    assert!(
        output.status.success(),
        "{what} refused the page: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn promtool_check_metrics(page: &[u8]) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    promtool.stdin.as_mut().expect("stdin").write_all(page).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );
}
